"""Priorities on the shared quota (``--quota_priority high|normal|low``): who is admitted first.

When the jobs on one quota together want more than its limit, a higher priority is admitted
first and a lower one takes what is left: a live job (``high``, a fifth of the limit, latency
matters) beside a nightly backfill (``normal``, as much as it gets) waits about as it does alone
while the backfill runs on the rest. Every job ``normal`` (the default) decides exactly as before.

How, in the one Lua script of the shared quota (:data:`transforms.limits.quota_scripts.ACQUIRE`,
atomic, on Redis's clock):

* **One common limit for everyone.** Every admitted request of every priority is charged to the
  quota's GCRA TATs (:mod:`transforms.limits.quota`), as before: the limit stays exact in every
  slice whatever the mix, so a job that appears or leaves causes no 429s.
* **A meter per priority.** A request adds what it costs the limit to its priority's meter when it
  first takes a place: an exponentially decaying rate (time constant ``meter_secs``, 0.5 s), the
  share of the limit that priority asked for lately. A priority silent for ``meter_life_secs``
  no longer counts at all; one that stops fades with the time constant (a share of 0.2 is 0.03 a
  second later).
* **Below a priority that asks, a lane.** While a higher priority's meter is alive, a request
  first takes its place in its own priority's lane: a GCRA TAT paced at the part of the limit the
  higher priorities leave (``1 - their share``, at least ``min_room``), shared first come, first
  served by every worker of that priority, so they queue without polling Redis. When its place
  comes, it takes the common limit only when a slot is free (at most ``lead`` of an interval
  ahead, which absorbs a late wake-up), and not while a request of a higher such priority waits
  for one (each waiting priority leaves a mark in Redis until its next try). A higher priority
  reserves ahead as before, so its request waits at most for the lower one just let through
  (about half an interval on average, one at most, plus ``lead``), however many lower workers
  wait; the lower ones take every slot it leaves. The lane only paces the lower priority (and
  saves it polling): a meter that lags costs a few refused tries, never the limit, and never the
  higher priority's place.
* **A job's own limit.** The quota's limit is the highest ``--requests_per_minute`` /
  ``--tokens_per_minute`` any of its jobs declares (published while that job asks, for
  ``declared_life_secs``); a job that declares less keeps to its own rate in a lane of its own
  (across all its workers), and is charged to the common limit at the quota's rate. So a live job
  told a fifth of the limit takes a fifth, and the backfill the rest.

Why not the alternatives: strict reservation order by priority cannot be had with GCRA's single
TAT (places already given out cannot be taken back, and with one reservation per worker process a
backfill of N processes holds N places ahead of a live request); splitting the limit into fixed
shares per priority wastes what a share does not use; letting lower priorities only poll (no lane)
makes every worker of the backfill call Redis at every free slot; and a higher priority's wait
cannot be cut below half an interval without keeping part of the limit idle (the slot in progress
is always someone's when the quota is full). Measured demand, a lane and a common exact limit
keep first come, first served within a priority and cost one more Redis call per lower request
only while a higher priority asks.

Without Redis (the local limiter, the fallback while Redis is unreachable) there is no priority:
``--quota_priority`` needs ``--shared_quota`` (:mod:`pipeline.config`).

Example::

    admit = Admission(client, "ticketflow:quota:{openai-prod}", "high", job="run-1",
                      request_us=50_000, token_us=0, tau_us=50_000, spare_ms=1005, slack=0.1)
    status, wait_us, now_us = await admit(tokens=300, horizon_us=30e6)
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

from transforms.limits import quota_scripts

PRIORITIES = ("high", "normal", "low")
DEFAULT_PRIORITY = "normal"
# What the script answers (:data:`quota_scripts.ACQUIRE`).
REFUSED, ADMITTED, LANE_PAID = 0, 1, 2
#: The common limits' key suffixes, in the script's order: requests, tokens, input tokens,
#: output tokens.
LIMITS = ("rpm", "tpm", "itpm", "otpm")


@dataclasses.dataclass(frozen=True)
class LanePolicy:
    """How priorities meter and pace (defaults measured with ``benchmarks/quota.py``).

    Attributes:
      meter_secs: Time constant of a priority's meter: a priority that stops sending still
        counts e^-1 of its share this much later.
      meter_life_secs: A priority silent this long no longer counts (its lower ones leave their
        lanes and reserve ahead again).
      lane_tolerance_secs: How far behind its pace a lane may fall and catch up (a lower request
        that waited for a free slot keeps its place in its lane).
      min_room: The least share of the limit a lane is paced at, however busy the priorities
        above it: it still takes any slot they leave, and its places are never reserved far
        ahead (a place taken while they were busy is at most ``1 / min_room`` intervals on).
      declared_life_secs: How long the highest declared limit outlives the last request of the
        job that declared it.
      lead: How far ahead, in intervals of the limit, a priority below one that asks may take a
        free slot of the common limit. 0 costs the higher one nothing, but each late wake-up
        of a lower worker loses that much of the limit (measured: 2-5 % on a loaded box);
        a lead absorbs that, and the higher one waits ``lead`` longer only if it asks just then.
    """
    meter_secs: float = 0.5
    meter_life_secs: float = 3.0
    lane_tolerance_secs: float = 0.5
    min_room: float = 0.1
    declared_life_secs: float = 10.0
    lead: float = 0.1


def admission_keys(base: str, priority: str, job: str) -> List[str]:
    """The Redis keys one admission touches (all in the quota's ``{NAME}`` cluster slot).

    Args:
      base: The quota's key prefix, ``ticketflow:quota:{NAME}``.
      priority: One of :data:`PRIORITIES`.
      job: Names this job's own lane (the run id: every worker of the job shares it).

    Returns:
      KEYS in the order :data:`quota_scripts.ACQUIRE` reads them.

    Raises:
      ValueError: for an unknown priority.
    """
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    higher = PRIORITIES[:PRIORITIES.index(priority)]
    return [*(f"{base}:{limit}" for limit in LIMITS), f"{base}:pause",
            *(f"{base}:declared:{limit}" for limit in LIMITS),
            f"{base}:meter:{priority}", f"{base}:waiting:{priority}",
            *(f"{base}:lane:{priority}:{limit}" for limit in LIMITS),
            *(f"{base}:job:{job}:{limit}" for limit in LIMITS),
            *(f"{base}:{kind}:{name}" for name in higher for kind in ("meter", "waiting"))]


class Admission:
    """One worker's call of the admission script, with its keys and fixed arguments.

    Args:
      client: A ``redis.asyncio`` client.
      base: The quota's key prefix (:func:`admission_keys`).
      priority: This job's priority.
      job: This job's name for its own lane.
      request_us: Microseconds per request at this job's declared limit (0: none).
      token_us: Microseconds per token at this job's declared limit (0: none).
      input_us, output_us: Microseconds per input / output token at this job's limits (0:
        none).
      tau_us: GCRA burst tolerance at this job's limit.
      spare_ms: How long a TAT key outlives its TAT.
      slack: How late a waiter may wake and keep its place in the common limit.
      policy: Meters and lanes.
    """

    def __init__(self, client, base: str, priority: str, job: str, *, request_us: float,
                 token_us: float, tau_us: float, spare_ms: int, slack: float,
                 policy: LanePolicy = LanePolicy(), input_us: float = 0.0,
                 output_us: float = 0.0):
        self.keys = admission_keys(base, priority, job)
        self.priority = priority
        self._script = client.register_script(quota_scripts.ACQUIRE)
        self._fixed = (request_us, token_us, tau_us, spare_ms, slack)
        self._split = (input_us, output_us)
        self._policy = (policy.meter_secs * 1e6, policy.meter_life_secs * 1e6,
                        policy.lane_tolerance_secs * 1e6, policy.min_room,
                        round(policy.declared_life_secs * 1000), policy.lead)

    async def __call__(self, tokens: float, horizon_us: float, weight: float = 1.0,
                       lane_paid: bool = False, now_us: Optional[float] = None,
                       input_tokens: float = 0.0, output_tokens: float = 0.0
                       ) -> Tuple[int, float, float]:
        """Asks once.

        Args:
          tokens: The request's estimated tokens.
          horizon_us: How far ahead a place may be reserved (0: now or not at all).
          weight: What a request weighs on the limits (> 1 after a 429 cut this worker's rate).
          lane_paid: The last answer was :data:`LANE_PAID` for this same request.
          now_us: The time on Redis's clock to decide at (tests); None: Redis's own.
          input_tokens, output_tokens: Its input estimate and ``max_tokens`` (for the input-
            and output-token limits).

        Returns:
          ``(status, wait_us, now_us)``: :data:`ADMITTED` (go after ``wait_us``),
          :data:`REFUSED` (nothing charged; ask again after ``wait_us``) or :data:`LANE_PAID`
          (ask again with ``lane_paid`` after ``wait_us``); ``now_us`` is Redis's clock.

        Raises:
          redis.exceptions.RedisError, OSError, asyncio.TimeoutError: Redis failed.
        """
        request_us, token_us, tau_us, spare_ms, slack = self._fixed
        meter_us, meter_life_us, lane_tau_us, min_room, declared_ms, lead = self._policy
        status, wait_us, now = await self._script(keys=self.keys, args=[
            request_us, token_us, max(0.0, tokens), tau_us, spare_ms, slack, horizon_us,
            weight, int(lane_paid), meter_us, meter_life_us, lane_tau_us, min_room,
            declared_ms, 0 if now_us is None else round(now_us), lead,
            self._split[0], max(0.0, input_tokens), self._split[1], max(0.0, output_tokens)])
        return int(status), float(wait_us), float(now)
