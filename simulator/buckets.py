"""Token-bucket rate limits in the manner of Anthropic's RPM, ITPM and OTPM limits.

Anthropic limits requests, input tokens and output tokens per minute as three separate buckets
whose capacity is the per-minute limit and which refill continuously at limit/60 per second (not
a window that resets each minute). A request needs room in every bucket: one request, its input
tokens (uncached input plus cache writes; cache reads are free) and its ``max_tokens`` (output is
estimated at ``max_tokens`` on admission, then settled to the tokens actually produced). Time
comes from an injected ``clock``, so tests drive the buckets without sleeping:

    now = [0.0]
    limits = MessagesLimiter(rpm=60, itpm=0, otpm=600, clock=lambda: now[0])
    limits.acquire(input_tokens=100, output_tokens=500).allowed   # True
    limits.acquire(input_tokens=100, output_tokens=500).kind      # "output_tokens"
    limits.settle_output(reserved=500, used=120)                  # 380 come back at once
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable

from simulator.limits import UNLIMITED, Decision

_MINUTE = 60.0
# A request that waited exactly the announced time must fit, whatever the float noise.
_EPSILON = 1e-6
#: The bucket names, in the order the headers and the rejection checks use them.
KINDS = ("requests", "input_tokens", "output_tokens")


def rfc3339(epoch_seconds: float) -> str:
    """Formats a time the way Anthropic's ``anthropic-ratelimit-*-reset`` headers do.

    Args:
        epoch_seconds: A wall-clock time; it is rounded up to the whole second, so a client that
            waits until then never comes back early.

    Returns:
        e.g. "2025-01-01T00:00:30Z" (UTC).
    """
    moment = datetime.datetime.fromtimestamp(math.ceil(epoch_seconds - 1e-9),
                                             tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenBucket:
    """A bucket of ``per_minute`` capacity refilled continuously at ``per_minute / 60`` per second.

    Args:
        per_minute: The capacity and the refill per minute (> 0).
        now: The clock's current reading; the bucket starts full.
    """

    __slots__ = ("_level", "_stamp", "capacity", "rate")

    def __init__(self, per_minute: int, now: float):
        self.capacity = float(per_minute)
        self.rate = per_minute / _MINUTE
        self._level = self.capacity
        self._stamp = now

    def level(self, now: float) -> float:
        """Returns the tokens in the bucket at ``now`` (refilling it up to that moment)."""
        if now > self._stamp:
            self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._level

    def wait(self, now: float, cost: float) -> float:
        """Returns seconds until ``cost`` fits (0 if it fits now, inf if it never can)."""
        if cost > self.capacity + _EPSILON:
            return math.inf
        deficit = cost - self.level(now)
        return 0.0 if deficit <= _EPSILON else deficit / self.rate

    def take(self, now: float, cost: float) -> None:
        """Removes ``cost`` (the caller checked ``wait`` first)."""
        self._level = self.level(now) - cost

    def give(self, now: float, amount: float) -> None:
        """Puts ``amount`` back (what an estimate over-charged), never above the capacity."""
        self._level = min(self.capacity, self.level(now) + amount)

    def full_in(self, now: float) -> float:
        """Returns seconds until the bucket is full again."""
        return max(0.0, self.capacity - self.level(now)) / self.rate

    def fill(self, now: float) -> None:
        """Makes the bucket full."""
        self._level, self._stamp = self.capacity, now


class MessagesLimiter:
    """Anthropic's three limits: requests, input tokens and output tokens per minute.

    Args:
        rpm: Requests per minute; 0 = unlimited.
        itpm: Input tokens per minute (uncached input + cache writes); 0 = unlimited.
        otpm: Output tokens per minute (``max_tokens`` on admission, settled after); 0 = unlimited.
        clock: Monotonic seconds; ``time.monotonic`` by default.
    """

    def __init__(self, rpm: int = 0, itpm: int = 0, otpm: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        now = clock()
        self._buckets = {kind: TokenBucket(limit, now)
                         for kind, limit in zip(KINDS, (rpm, itpm, otpm)) if limit > 0}

    def acquire(self, input_tokens: int, output_tokens: int) -> Decision:
        """Admits one request if every bucket has room, else rejects it and takes nothing.

        Args:
            input_tokens: What the request charges to the input bucket (cache reads excluded).
            output_tokens: Its output estimate: ``max_tokens``.

        Returns:
            The decision. On rejection ``kind`` names the bucket that keeps it waiting longest
            ("requests", "input_tokens" or "output_tokens"), ``retry_after`` is that wait (inf
            if the cost exceeds the bucket's capacity), ``used`` the capacity not available now.
        """
        if not self._buckets:
            return _ALLOWED
        now = self._clock()
        costs = dict(zip(KINDS, (1, input_tokens, output_tokens)))
        worst: tuple[float, str] | None = None
        for kind, bucket in self._buckets.items():
            wait = bucket.wait(now, costs[kind])
            if wait > 0 and (worst is None or wait > worst[0]):
                worst = (wait, kind)
        if worst is None:
            for kind, bucket in self._buckets.items():
                bucket.take(now, costs[kind])
            return _ALLOWED
        wait, kind = worst
        bucket = self._buckets[kind]
        return Decision(allowed=False, kind=kind, window_secs=_MINUTE, limit=int(bucket.capacity),
                        used=math.ceil(bucket.capacity - bucket.level(now)),
                        requested=costs[kind], retry_after=wait)

    def settle_output(self, reserved: int, used: int) -> None:
        """Gives back the output tokens an admitted request reserved but did not produce.

        Args:
            reserved: What ``acquire`` charged (the request's ``max_tokens``).
            used: The output tokens it actually returned (0 for a failed request).
        """
        bucket = self._buckets.get("output_tokens")
        if bucket is not None and reserved > used:
            bucket.give(self._clock(), reserved - used)

    def headers(self, wall_now: float) -> dict[str, str]:
        """Returns Anthropic's ``anthropic-ratelimit-*`` headers.

        Args:
            wall_now: Epoch seconds, to turn "full again in N s" into an RFC 3339 reset time.

        Returns:
            limit, remaining and reset for requests, input-tokens and output-tokens, and for
            tokens: the input or output bucket with the fewer tokens remaining (the most
            restrictive, as Anthropic describes it). An unlimited bucket reports ``UNLIMITED`` as
            limit and remaining and now as reset.
        """
        now = self._clock()
        headers = {}
        rows = {}
        for kind in KINDS:
            bucket = self._buckets.get(kind)
            if bucket is None:
                row = (UNLIMITED, UNLIMITED, 0.0)
            else:
                row = (int(bucket.capacity), max(0, math.floor(bucket.level(now) + _EPSILON)),
                       bucket.full_in(now))
            rows[kind] = row
            name = kind.replace("_", "-")
            headers[f"anthropic-ratelimit-{name}-limit"] = str(row[0])
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(row[1])
            headers[f"anthropic-ratelimit-{name}-reset"] = rfc3339(wall_now + row[2])
        tokens = min(rows["input_tokens"], rows["output_tokens"], key=lambda r: r[1])
        headers["anthropic-ratelimit-tokens-limit"] = str(tokens[0])
        headers["anthropic-ratelimit-tokens-remaining"] = str(tokens[1])
        headers["anthropic-ratelimit-tokens-reset"] = rfc3339(wall_now + tokens[2])
        return headers

    def reset(self) -> None:
        """Fills every bucket."""
        now = self._clock()
        for bucket in self._buckets.values():
            bucket.fill(now)


_ALLOWED = Decision(allowed=True)
