"""Where a worker's rate limits and budget live: in this process, or shared through Redis.

:func:`local_limits` — this worker process's static share (``--worker_share`` of the job's
limits and budget), in an :class:`~transforms.limits.limiter.AdaptiveRateLimiter` and a
:class:`~transforms.limits.budget.LocalBudget`.

:func:`shared_limits` — with ``--shared_quota``: ONE quota for every worker of every job that
names it (:class:`~transforms.limits.quota.SharedRateLimiter`, GCRA in Redis) and one budget for
the job (:class:`~transforms.limits.shared_budget.SharedBudget`); each falls back to the static
share while Redis is unreachable and returns when it is back.

Both return :class:`Limits`; the flow-control layer builds them on the engine's loop.

Example::

    limits = shared_limits(config, quota_name, clock=clock, sleep=flow.sleep)
    await limits.limiter.acquire(tokens); ...; await limits.aclose()
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Awaitable, Callable, Optional

from transforms.limits.budget import LocalBudget
from transforms.limits.daily import DailyCap
from transforms.llm.config import LlmConfig
from transforms.limits.limiter import AdaptiveRateLimiter, LimitPolicy

Sleep = Callable[[float], Awaitable[None]]

# The shared quota paces strictly (GCRA without slack) a little under the limit: requests reach
# the provider with some jitter after Redis admitted them (the event loop, the network, another
# host's clock), and providers enforce per-minute limits over one-second slices, so N requests
# admitted exactly 1/N s apart can put an (N+1)th into some second. 3 % is 30 ms per second.
SHARED_PACE = 0.97
# A waiter that wakes late keeps its place for this fraction of a request interval (less than
# that is lost rate; more lets two requests through closer than the pace).
SHARED_SLACK = 0.1


@dataclasses.dataclass
class Limits:
    """A limiter, a budget, a daily cap, and how to release what they hold.

    Attributes:
      shared: Whether they are the shared quota's (``--shared_quota``).
      daily: The ``--requests_per_day`` cap (:mod:`transforms.limits.daily`).
    """
    limiter: Any
    budget: Any
    shared: bool = False
    client: Any = None
    daily: Any = dataclasses.field(default_factory=lambda: DailyCap(0))

    def fallback(self) -> dict:
        """How often, and for how long, the shared quota fell back to the static share."""
        if not self.shared:
            return {"events": 0, "secs": 0.0, "now": False}
        parts = (self.limiter, self.budget, self.daily)
        return {"events": sum(getattr(p, "fallback_events", 0) for p in parts),
                "secs": max(getattr(p, "fallback_secs", 0.0) for p in parts),
                "now": any(getattr(p, "using_fallback", False) for p in parts)}

    async def aclose(self) -> None:
        if self.client is not None:
            flush = getattr(self.limiter, "flush", None)
            if flush is not None:
                try:
                    await flush()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            await self.client.aclose()
            self.client = None


def local_limits(config: LlmConfig, clock: Callable[[], float] = time.monotonic,
                 sleep: Optional[Sleep] = None) -> Limits:
    """This worker's static share of the job's limits, daily cap and budget."""
    limiter = AdaptiveRateLimiter(config.worker_requests_per_sec, config.worker_tokens_per_sec,
                                  clock=clock,
                                  policy=LimitPolicy(slice_secs=config.rate_slice_secs),
                                  input_tokens_per_sec=config.worker_input_tokens_per_sec,
                                  output_tokens_per_sec=config.worker_output_tokens_per_sec,
                                  **({"sleep": sleep} if sleep else {}))
    return Limits(limiter, LocalBudget(config.worker_budget_usd),
                  daily=DailyCap(config.worker_requests_per_day))


def shared_limits(config: LlmConfig, quota_name: str,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Optional[Sleep] = None) -> Limits:
    """The shared quota and budget in ``config.shared_quota``'s Redis (build on the loop)."""
    # pylint: disable=import-outside-toplevel
    from transforms.limits import daily, quota, shared_budget

    local = local_limits(config, clock, sleep)
    client = quota.connect(config.shared_quota)
    limiter = quota.SharedRateLimiter(
        client, quota_name, config.job_requests_per_sec * SHARED_PACE,
        config.job_tokens_per_sec * SHARED_PACE, local.limiter, slack=SHARED_SLACK,
        priority=config.quota_priority, job=config.budget_key or None, clock=clock,
        input_tokens_per_sec=config.job_input_tokens_per_sec * SHARED_PACE,
        output_tokens_per_sec=config.job_output_tokens_per_sec * SHARED_PACE,
        **({"sleep": sleep} if sleep else {}))
    budget = local.budget
    if config.job_budget_usd is not None:
        budget = shared_budget.SharedBudget(client, f"{quota_name}|{config.budget_key}",
                                    config.job_budget_usd, config.worker_budget_usd or 0.0,
                                    clock=clock)
    cap = local.daily
    if config.job_requests_per_day > 0:
        cap = daily.SharedDailyCap(client, quota_name, config.job_requests_per_day, local.daily,
                                   clock=clock)
    return Limits(limiter, budget, shared=True, client=client, daily=cap)
