"""Every Beam metric of the ``ticketflow`` namespace, in one collector.

Counters and distributions are declared here once, with stable snake_case names (README, "Metrics").
DoFns record through :class:`TicketflowMetrics`; the driver turns a finished run's metrics into a
summary with :func:`summarize`.

Counters: ``tickets_read``, ``parse_errors``, ``duplicates``, ``requests``, ``succeeded``,
``dead_lettered``, ``retries``, ``rate_limited``, ``server_errors``, ``timeouts``, ``prompt_tokens``,
``completion_tokens``, ``throttled_ms``, ``cache_hits``, ``cost_nano_usd``, ``already_done``,
``replay_skipped`` and Dataflow's ``cumulativeThrottlingSeconds``.
Distributions: ``latency_ms`` and ``attempts``.
"""

from __future__ import annotations

from typing import Dict

from apache_beam.io.components.adaptive_throttler import ThrottlingSignaler
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from transforms.records import DeadLetter, Result

NAMESPACE = "ticketflow"

COUNTERS = (
    "tickets_read", "parse_errors", "duplicates", "requests", "succeeded", "dead_lettered",
    "retries", "rate_limited", "server_errors", "timeouts", "prompt_tokens", "completion_tokens",
    "throttled_ms", "cache_hits", "cost_nano_usd", "already_done", "replay_skipped",
)
DISTRIBUTIONS = ("latency_ms", "attempts")
THROTTLING_COUNTER = "cumulativeThrottlingSeconds"


class TicketflowMetrics:
    """The namespace's counters; create one per DoFn instance (in ``setup`` or ``__init__``).

    Beam metrics are bound to the bundle's thread, so record only from ``process`` or
    ``finish_bundle``, never from a background thread.
    """

    def __init__(self):
        self.counters = {name: Metrics.counter(NAMESPACE, name) for name in COUNTERS}
        self.distributions = {name: Metrics.distribution(NAMESPACE, name) for name in DISTRIBUTIONS}
        self._throttling = ThrottlingSignaler(NAMESPACE)
        self._throttled_carry = 0.0

    def inc(self, name: str, n: int = 1) -> None:
        if n:
            self.counters[name].inc(n)

    def _calls(self, record) -> None:
        self.inc("requests", record.attempts)
        self.inc("retries", record.retries)
        self.inc("rate_limited", record.rate_limited)
        self.inc("server_errors", record.server_errors)
        self.inc("timeouts", record.timeouts)
        if record.throttled_secs:
            self.inc("throttled_ms", int(record.throttled_secs * 1000))
            # Dataflow's counter is whole seconds; carry the fraction so none is lost.
            self._throttled_carry += record.throttled_secs
            whole = int(self._throttled_carry)
            if whole:
                self._throttling.signal_throttled(whole)
                self._throttled_carry -= whole

    def record_result(self, result: Result) -> None:
        self._calls(result)
        self.inc("succeeded")
        if result.cached:
            self.inc("cache_hits")
        self.inc("cost_nano_usd", int(round(result.cost_usd * 1e9)))
        self.inc("prompt_tokens", result.prompt_tokens)
        self.inc("completion_tokens", result.completion_tokens)
        self.distributions["latency_ms"].update(int(result.latency_ms))
        self.distributions["attempts"].update(result.attempts)

    def record_dead_letter(self, dead: DeadLetter) -> None:
        self._calls(dead)
        self.inc("dead_lettered")
        self.inc("prompt_tokens", dead.prompt_tokens)
        self.inc("completion_tokens", dead.completion_tokens)
        if dead.attempts:
            self.distributions["attempts"].update(dead.attempts)


def summarize(metric_results) -> Dict[str, float]:
    """Reads the namespace's committed metrics from a finished ``PipelineResult.metrics()``.

    Returns:
      Counter name → value (0 when never incremented), plus ``latency_ms_mean``/``max`` and
      ``attempts_mean``/``max`` from the distributions.
    """
    query = metric_results.query(MetricsFilter().with_namespace(NAMESPACE))
    out: Dict[str, float] = {name: 0 for name in COUNTERS}
    out[THROTTLING_COUNTER] = 0
    for counter in query.get("counters", []):
        name = counter.key.metric.name
        out[name] = out.get(name, 0) + (counter.committed or 0)
    for dist in query.get("distributions", []):
        name = dist.key.metric.name
        value = dist.committed
        if value is None or not value.count:
            continue
        out[f"{name}_mean"] = round(value.sum / value.count, 3)
        out[f"{name}_max"] = value.max
        out[f"{name}_count"] = value.count
    return out
