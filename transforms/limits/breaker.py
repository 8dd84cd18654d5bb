"""A circuit breaker for provider outages: stop sending while the provider is down, probe it.

When most of the recent requests failed the way an outage fails (connection refused or reset,
5xx, timeouts), the breaker OPENS: nothing is sent, except ONE probe request at growing
intervals (1, 2, 4 ... seconds, capped). The breaker CLOSES when a probe gets an answer. Other
failures (429, 400, invalid output) are answers: the provider is up.

Pure and clock-injected like :mod:`transforms.limits.limiter`: :meth:`CircuitBreaker.before_send`
decides, :meth:`CircuitBreaker.wait` is the thin async wrapper with an injected sleep. Waiting
for the breaker is no attempt of the ticket (the caller keeps its retries), ``wait`` returns the
seconds waited (to count as throttling), and ``outage_started_at`` / :meth:`outage_secs` let the
caller give up after a maximum outage (``wait(max_outage_secs=...)`` raises
:class:`OutageTooLong`).

Example::

    breaker = CircuitBreaker(clock=clock, sleep=sleep)
    throttled = await breaker.wait(max_outage_secs=900)   # 0 at once while closed
    sent_at = clock()
    try:
        answer = await call()
    except errors.ProviderError as exc:
        breaker.on_failure(exc.reason, sent_at)
        raise
    breaker.on_success(sent_at)
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from typing import Awaitable, Callable, Optional

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"  # open, with the one probe in flight

#: Failure kinds (``errors.ProviderError.reason``) that look like an outage.
OUTAGE_KINDS = frozenset({"connection_error", "server_error", "timeout"})


class OutageTooLong(Exception):
    """The provider has been unavailable for longer than the caller is willing to wait.

    Attributes:
      outage_secs: How long the current outage has lasted.
    """

    def __init__(self, outage_secs: float):
        super().__init__(f"the provider has been unavailable for {outage_secs:.0f} s "
                         "(circuit breaker open)")
        self.outage_secs = outage_secs

    def __reduce__(self):
        return (OutageTooLong, (self.outage_secs,))


@dataclasses.dataclass(frozen=True)
class BreakerPolicy:
    """When the breaker opens and how it probes.

    Attributes:
      window: The last this many outcomes are considered.
      window_secs: ... and only those of the last this many seconds.
      min_outcomes: Never open on fewer outcomes than this.
      failure_ratio: Open when at least this fraction of the window failed like an outage.
      first_probe_secs: Wait before the first probe.
      max_probe_secs: Cap of the doubling wait between probes.
      probe_timeout_secs: A probe not reported after this long counts as failed (its caller may
        have been cancelled); keep it above the request timeout.
      poll_secs: Longest wait handed out while a probe is in flight, so waiters notice soon
        that it closed the breaker.
    """
    window: int = 20
    window_secs: float = 60.0
    min_outcomes: int = 10
    failure_ratio: float = 0.8
    first_probe_secs: float = 1.0
    max_probe_secs: float = 30.0
    probe_timeout_secs: float = 120.0
    poll_secs: float = 0.5

    def __post_init__(self):
        if not 0 < self.failure_ratio <= 1:
            raise ValueError(f"failure_ratio must be in (0, 1], got {self.failure_ratio}")
        if self.min_outcomes < 1 or self.window < self.min_outcomes:
            raise ValueError("need 1 <= min_outcomes <= window")


class CircuitBreaker:
    """Closed, open or half-open, from a window of recent outcomes.

    Args:
      policy: Thresholds and probe intervals.
      clock: Monotonic clock, injected in tests.
      sleep: Awaitable sleep used by :meth:`wait`, injected in tests.
      on_transition: Called as ``(old_state, new_state, now)`` on each change (e.g. to log).

    Attributes:
      state: ``CLOSED``, ``OPEN`` or ``HALF_OPEN``.
      outage_started_at: Clock time the current outage began (None while closed).
      opens: Outages so far; probes: probe requests let through so far.
    """

    def __init__(self, policy: BreakerPolicy = BreakerPolicy(),
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_transition: Optional[Callable[[str, str, float], None]] = None):
        self.policy = policy
        self._clock = clock
        self._sleep = sleep
        self._on_transition = on_transition
        self._outcomes: collections.deque = collections.deque()  # (time, failed)
        self.state = CLOSED
        self.outage_started_at: Optional[float] = None
        self._interval = policy.first_probe_secs
        self._next_probe_at = 0.0
        self._probe_sent_at: Optional[float] = None
        self._closed_at: Optional[float] = None  # outcomes of requests sent before: stragglers
        self._past_outage_secs = 0.0
        self.opens = 0
        self.probes = 0

    # ---- deciding ------------------------------------------------------------------------------

    def before_send(self) -> float:
        """0 when a request may go now (while open: the one probe), else seconds to wait."""
        if self.state == CLOSED:
            return 0.0
        now = self._clock()
        if self.state == HALF_OPEN:
            if now - self._probe_sent_at < self.policy.probe_timeout_secs:
                return min(self.policy.poll_secs,
                           self._probe_sent_at + self.policy.probe_timeout_secs - now)
            self._probe_failed(now)  # never reported: its caller went away
        if now >= self._next_probe_at:
            self.probes += 1
            self._probe_sent_at = now
            self._set_state(HALF_OPEN, now)
            return 0.0
        return self._next_probe_at - now

    def ready_in(self) -> float:
        """Seconds until a request could go (0: now), without taking the probe: a router's
        look at an endpoint before it chooses one (then :meth:`before_send` decides)."""
        if self.state == CLOSED:
            return 0.0
        now = self._clock()
        if self.state == HALF_OPEN:
            return max(0.0, self._probe_sent_at + self.policy.probe_timeout_secs - now)
        return max(0.0, self._next_probe_at - now)

    async def wait(self, max_outage_secs: Optional[float] = None) -> float:
        """Waits until a request may be sent (at once while closed).

        Args:
          max_outage_secs: Give up when the outage has lasted this long.

        Returns:
          Seconds waited.

        Raises:
          OutageTooLong: when ``max_outage_secs`` has passed in the current outage.
        """
        start = self._clock()
        while True:
            if max_outage_secs is not None and self.outage_secs() >= max_outage_secs:
                raise OutageTooLong(self.outage_secs())
            delay = self.before_send()
            if delay <= 0:
                return self._clock() - start
            if max_outage_secs is not None:
                # Wake up in time to give up when the outage passes the maximum.
                delay = min(delay, max(0.0, max_outage_secs - self.outage_secs()) + 1e-3)
            await self._sleep(delay)

    # ---- outcomes ------------------------------------------------------------------------------

    def on_success(self, sent_at: Optional[float] = None) -> None:
        """A request got an answer: a probe's closes the breaker.

        Args:
          sent_at: When the request was sent. Outcomes of requests sent before the breaker
            opened, or during an outage that is over, are ignored; without ``sent_at`` an
            outcome during a probe is taken as the probe's.
        """
        self._outcome(False, sent_at)

    def on_failure(self, kind: str, sent_at: Optional[float] = None) -> None:
        """A request failed; ``kind`` is the error's reason code (see :data:`OUTAGE_KINDS`).

        Failures of other kinds are answers of a provider that is up: they count as successes.
        """
        self._outcome(kind in OUTAGE_KINDS, sent_at)

    # ---- accounting ---------------------------------------------------------------------------

    def outage_secs(self) -> float:
        """How long the current outage has lasted (0 while closed)."""
        if self.outage_started_at is None:
            return 0.0
        return max(0.0, self._clock() - self.outage_started_at)

    @property
    def open_secs(self) -> float:
        """Seconds spent open (all outages so far, the current one included)."""
        return self._past_outage_secs + self.outage_secs()

    # ---- internals -----------------------------------------------------------------------------

    def _outcome(self, failed: bool, sent_at: Optional[float]) -> None:
        now = self._clock()
        if self.state != CLOSED:
            is_probe = (self.state == HALF_OPEN and
                        (sent_at is None or sent_at >= self._probe_sent_at))
            if not is_probe:
                return  # a straggler sent before the breaker opened
            if failed:
                self._probe_failed(now)
            else:
                self._close(now)
            return
        if sent_at is not None and self._closed_at is not None and sent_at < self._closed_at:
            return  # sent during the last outage (e.g. a timeout that took a minute to show)
        p = self.policy
        self._outcomes.append((now, failed))
        while self._outcomes and (len(self._outcomes) > p.window
                                  or self._outcomes[0][0] <= now - p.window_secs):
            self._outcomes.popleft()
        failures = sum(1 for _, f in self._outcomes if f)
        if (failed and len(self._outcomes) >= p.min_outcomes
                and failures >= p.failure_ratio * len(self._outcomes)):
            self._open(now)

    def _open(self, now: float) -> None:
        self.opens += 1
        self.outage_started_at = now
        self._interval = self.policy.first_probe_secs
        self._next_probe_at = now + self._interval
        self._set_state(OPEN, now)

    def _probe_failed(self, now: float) -> None:
        self._interval = min(self.policy.max_probe_secs, self._interval * 2)
        self._next_probe_at = now + self._interval
        self._probe_sent_at = None
        self._set_state(OPEN, now)

    def _close(self, now: float) -> None:
        self._past_outage_secs += now - self.outage_started_at
        self.outage_started_at = None
        self._closed_at = now
        self._probe_sent_at = None
        self._outcomes.clear()
        self._set_state(CLOSED, now)

    def _set_state(self, state: str, now: float) -> None:
        old, self.state = self.state, state
        if old != state and self._on_transition is not None:
            self._on_transition(old, state, now)
