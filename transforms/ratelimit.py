"""Client-side rate limiting: token buckets for requests and tokens, adapted by the provider.

One :class:`AdaptiveRateLimiter` per worker process holds that worker's share of the provider's
requests-per-minute and tokens-per-minute. A request waits until both buckets can pay for it.
The limiter learns from the provider: a 429 pauses everyone for its ``retry-after`` and cuts the
rate (multiplicative decrease); successes grow it back (additive increase) up to the configured
limit; ``x-ratelimit-remaining-*`` at zero pauses until the reset it announces.

The arithmetic lives in the synchronous :meth:`AdaptiveRateLimiter.reserve` (a pure function of the
injected clock) so it is unit-tested without sleeping; :meth:`acquire` is the asyncio wrapper.

Example::

    limiter = AdaptiveRateLimiter(requests_per_sec=10, tokens_per_sec=5000)
    waited = await limiter.acquire(tokens=estimate)  # seconds spent throttled
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Awaitable, Callable, Optional

# A bucket holds this many seconds of its rate at most: small, so that what we send in any window
# of the provider's (a minute, or a second for providers that enforce per-second slices) never
# exceeds the limit by more than a sliver.
BURST_SECS = 0.05
_EPSILON = 1e-6
_MIN_WAIT = 1e-4


class TokenBucket:
    """A token bucket that may go into debt for a cost larger than its capacity.

    Args:
      rate: Tokens added per second (0 or less: unlimited).
      capacity: Most tokens held; a cost above it is allowed once the bucket is full.
      now: The current clock time.
    """

    def __init__(self, rate: float, capacity: float, now: float):
        self.rate = float(rate)
        self.capacity = max(float(capacity), 1.0)
        self.level = min(1.0, self.capacity)
        self.updated = now

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def refill(self, now: float, cap: Optional[float] = None) -> None:
        if now > self.updated:
            ceiling = self.capacity if cap is None else cap
            self.level = min(max(ceiling, self.level), self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` can be paid (0 if now)."""
        if self.unlimited:
            return 0.0
        # A waiter that wakes late from its sleep keeps the refill it was owed (up to one cost
        # beyond the burst), instead of losing it to a full bucket: otherwise the achieved rate
        # falls a few per cent under the limit (benchmarks/RESULTS.md).
        self.refill(now, cap=self.capacity + min(cost, self.capacity))
        need = min(cost, self.capacity)
        if self.level + _EPSILON >= need:
            return 0.0
        # Never a wait too small to move a float clock forward.
        return max((need - self.level) / self.rate, _MIN_WAIT)

    def take(self, cost: float) -> None:
        if not self.unlimited:
            self.level -= cost

    def give_back(self, amount: float) -> None:
        """Credits (or, negative, debits) tokens, e.g. after the provider reported real usage."""
        if not self.unlimited:
            self.level = min(self.capacity, self.level + amount)


class AdaptiveRateLimiter:
    """Requests and tokens limiter for one worker process, adapted by the provider's answers.

    Args:
      requests_per_sec: This worker's share of the request rate (0: unlimited).
      tokens_per_sec: This worker's share of the token rate (0: unlimited).
      clock: Monotonic clock, injected in tests.
      sleep: Awaitable sleep, injected in tests.
      decrease: Factor the rate is multiplied by on a 429.
      increase: Fraction of the configured rate added back per successful request.
      min_factor: The rate never drops below this fraction of the configured one.
    """

    def __init__(self, requests_per_sec: float, tokens_per_sec: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 decrease: float = 0.7, increase: float = 0.01, min_factor: float = 0.1):
        now = clock()
        self._clock = clock
        self._sleep = sleep
        self._base_rps = float(requests_per_sec)
        self._base_tps = float(tokens_per_sec)
        self.requests = TokenBucket(requests_per_sec, requests_per_sec * BURST_SECS, now)
        self.tokens = TokenBucket(tokens_per_sec, tokens_per_sec * BURST_SECS, now)
        self.factor = 1.0
        self.paused_until = now
        self._decrease = decrease
        self._increase = increase
        self._min_factor = min_factor
        self._lock: Optional[asyncio.Lock] = None

    def reserve(self, tokens: float) -> float:
        """Takes a slot now if possible; otherwise returns the seconds to wait before trying again.

        Returns:
          0.0 when the request and its tokens were taken, else a positive wait.
        """
        now = self._clock()
        if now < self.paused_until:
            return self.paused_until - now
        wait = max(self.requests.wait_for(1.0, now), self.tokens.wait_for(tokens, now))
        if wait > 0:
            return wait
        self.requests.take(1.0)
        self.tokens.take(tokens)
        return 0.0

    async def acquire(self, tokens: float) -> float:
        """Waits until one request costing ``tokens`` may be sent.

        Waiters are served first come, first served, so a large request is not starved.

        Returns:
          Seconds spent waiting (throttled).
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        start = self._clock()
        async with self._lock:
            while True:
                wait = self.reserve(tokens)
                if wait <= 0:
                    break
                await self._sleep(wait)
        return self._clock() - start

    def correct(self, delta_tokens: float) -> None:
        """Adjusts the token bucket by the difference between estimated and reported usage.

        Args:
          delta_tokens: estimated minus actual (positive: we over-charged, tokens come back).
        """
        self.tokens.give_back(delta_tokens)

    def on_rate_limited(self, retry_after: Optional[float]) -> None:
        """A 429 came back: pause everyone for ``retry_after`` and cut the rate."""
        now = self._clock()
        if retry_after:
            self.paused_until = max(self.paused_until, now + retry_after)
        self._set_factor(max(self._min_factor, self.factor * self._decrease))

    def on_success(self) -> None:
        """A request succeeded: grow the rate back towards the configured limit."""
        if self.factor < 1.0:
            self._set_factor(min(1.0, self.factor + self._increase))

    def observe_headers(self, headers) -> None:
        """Pauses until the announced reset when the provider says a budget is used up."""
        if headers is None:
            return
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            if remaining is None:
                continue
            try:
                if float(remaining) > 0:
                    continue
            except ValueError:
                continue
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
            if reset:
                self.paused_until = max(self.paused_until, self._clock() + reset)

    def _set_factor(self, factor: float) -> None:
        self.factor = factor
        now = self._clock()
        for bucket, base in ((self.requests, self._base_rps), (self.tokens, self._base_tps)):
            if base > 0:
                bucket.refill(now)
                bucket.rate = base * factor


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> Optional[float]:
    """Parses OpenAI's reset durations (``"1s"``, ``"6m0s"``, ``"120ms"``, ``"1h2m3.5s"``).

    Returns:
      Seconds, or None when the text is empty or not a duration.
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        value, unit = float(match.group(1)), match.group(2)
        total += value * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None
