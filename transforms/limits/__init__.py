"""Everything that decides WHEN a request may go, provider-agnostic.

* :mod:`transforms.limits.limiter` — this worker's limiter: exact pacing against one-second
  slices, learning a lower limit from 429s;
* :mod:`transforms.limits.windows` — its arithmetic: token bucket, rolling slice window,
  admissions;
* :mod:`transforms.limits.quota` — ``--shared_quota``: one quota in Redis for every worker and
  job (GCRA, :mod:`transforms.limits.quota_scripts`), falling back to the static share;
  :mod:`transforms.limits.priorities` — ``--quota_priority`` on it: higher priorities first;
* :mod:`transforms.limits.budget` — ``--max_cost_usd`` of one worker process;
  :mod:`transforms.limits.shared_budget` — one budget for the job in the shared quota's Redis;
* :mod:`transforms.limits.breaker` — the circuit breaker that waits out a provider outage;
* :mod:`transforms.limits.concurrency` — ``--max_concurrency auto``: the in-flight limit chosen
  from latency against a no-load baseline and from drops (503, overload, timeouts);
* :mod:`transforms.limits.trial` — the endpoint's trial: a few requests until one succeeds, and
  none once they show a wrong base URL, model or key.

The LLM call's flow control (:mod:`transforms.llm.flow`) composes them; nothing here knows of
tickets, prompts or a provider's wire format.
"""
