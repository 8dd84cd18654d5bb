"""Rate arithmetic for the limiter: a token bucket, a window of what was sent, what was admitted.

Pure functions of the clock times passed in; :mod:`transforms.limits.limiter` combines them.

* :class:`TokenBucket` spaces requests: a rate, at most one request of burst.
* :class:`SliceWindow` mirrors a provider's rolling window: what we sent in the last
  ``seconds`` never passes ``budget`` (the exact limit a bucket alone cannot give: with costs
  that vary, a bucket must stay a whole request under it).
* :class:`AdmissionLog` estimates the rate a provider really admits: (grants - refusals) per
  second of active sending.

Example::

    window = SliceWindow(seconds=1.015, budget=20)   # 20 requests in any second, 15 ms margin
    if window.wait_for(1, now) == 0:
        window.add(now, 1)
"""

from __future__ import annotations

import collections
from typing import Optional

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
        self.rate, self.capacity = float(rate), max(float(capacity), 1.0)
        self.level, self.updated = min(1.0, self.capacity), now

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def refill(self, now: float, cap: Optional[float] = None) -> None:
        if now > self.updated:
            ceiling = self.capacity if cap is None else cap
            self.level = min(max(ceiling, self.level),
                             self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` can be paid (0 if now)."""
        if self.unlimited:
            return 0.0
        # A waiter that wakes late keeps the refill it was owed (up to one cost beyond the
        # burst), or the achieved rate falls a few per cent short. The slice window bounds it.
        self.refill(now, cap=self.capacity + min(cost, self.capacity))
        need = min(cost, self.capacity)
        if self.level + _EPSILON >= need:
            return 0.0
        # Never a wait too small to move a float clock forward.
        return max((need - self.level) / self.rate, _MIN_WAIT)

    def take(self, cost: float) -> None:
        if not self.unlimited:
            self.level -= cost

    def give_back(self, amount: float, ceiling: Optional[float] = None) -> None:
        """Credits (or, negative, debits) tokens, e.g. after the provider reported real usage.

        Args:
          amount: What comes back (negative: what is charged more).
          ceiling: The level a credit may not pass (default: the capacity). A bucket that
            paces requests much larger than its capacity needs room for a whole request's
            credit, or a reservation settled lower loses what exceeds the capacity.
        """
        if not self.unlimited:
            # A late waiter's owed refill is not clipped either.
            top = self.capacity if ceiling is None else max(self.capacity, ceiling)
            self.level = min(max(top, self.level), self.level + amount)


class SliceWindow:
    """What we sent during the last ``seconds`` of our clock: the provider's slice, mirrored.

    A cost is admitted while the window's total stays within ``budget``; a cost above the whole
    budget is admitted into an empty window (as providers do), so nothing is starved.

    Args:
      seconds: The window's length: the provider's slice plus a margin for arrival jitter.
      budget: Most cost the window may hold (0 or less: unlimited).
    """

    def __init__(self, seconds: float, budget: float):
        self.seconds, self.budget = seconds, budget
        self._entries: collections.deque = collections.deque()  # [sent_at, cost]
        self._used = 0.0

    def used(self, now: float) -> float:
        """The cost sent within the window ending at ``now``."""
        horizon = now - self.seconds
        while self._entries and self._entries[0][0] <= horizon:
            self._used -= self._entries.popleft()[1]
        if not self._entries:
            self._used = 0.0  # no float drift survives an empty window
        return self._used

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` fits (0 if now)."""
        if self.budget <= 0:
            return 0.0
        used = self.used(now)
        if not self._entries or used + cost <= self.budget + _EPSILON:
            return 0.0
        for stamp, entry_cost in self._entries:
            used -= entry_cost
            if used + cost <= self.budget + _EPSILON or used <= _EPSILON:
                return max(stamp + self.seconds - now + _EPSILON, _MIN_WAIT)
        return _MIN_WAIT  # unreachable: the last expiry empties the window

    def add(self, now: float, cost: float) -> None:
        if self.budget > 0:
            self._entries.append([now, cost])
            self._used += cost

    def adjust(self, sent_at: float, delta: float) -> None:
        """Changes the cost recorded for the request sent at ``sent_at``, if still in the window."""
        for entry in reversed(self._entries):
            if entry[0] <= sent_at + _EPSILON:
                change = max(-entry[1], delta)
                entry[1] += change
                self._used += change
                return


class AdmissionLog:
    """What the provider admitted lately: (grants - refusals) per second of active sending.

    Our pauses are not active sending, nor (when enough is left) times nobody waited for the
    limiter: the estimate is what the provider let through while we offered more.

    Args:
      seconds: How far back the estimate looks.
      min_active_secs: Less active sending than this in the window: no estimate yet.
    """

    def __init__(self, seconds: float, min_active_secs: float):
        self.seconds, self.min_active_secs = seconds, min_active_secs
        self._grants: collections.deque = collections.deque()  # (time, tokens)
        self._refusals: collections.deque = collections.deque()  # time
        self._pauses: collections.deque = collections.deque()  # (start, end)
        self._idle: collections.deque = collections.deque()  # (start, end)
        self._first: Optional[float] = None

    def grant(self, now: float, tokens: float, *more: float) -> None:
        """One request sent at ``now``: its tokens (and any more token kinds it was charged)."""
        if self._first is None:
            self._first = now
        self._grants.append((now, (tokens,) + more))
        self._forget(now)

    def refuse(self, now: float) -> None:
        self._refusals.append(now)
        self._forget(now)

    def pause(self, start: float, end: float) -> None:
        _add_interval(self._pauses, start, end)

    def idle(self, start: float, end: float) -> None:
        _add_interval(self._idle, start, end)
        self._forget(end)

    def grants(self, now: float) -> int:
        """How many requests we sent within the window."""
        self._forget(now)
        return len(self._grants)

    def _forget(self, now: float) -> None:
        """Drops what left the window: the logs stay as long as the window, however long the run
        (pruned on every write, not only when read, as most runs never see a 429)."""
        horizon = now - self.seconds
        for log, at in ((self._grants, 0), (self._refusals, None), (self._pauses, 1),
                        (self._idle, 1)):
            while log and (log[0] if at is None else log[0][at]) <= horizon:
                log.popleft()

    def admitted(self, now: float) -> Optional[tuple]:
        """(requests/s, tokens/s, ...) admitted while sending (one rate per token kind the
        grants carried), or None while too little is known."""
        if self._first is None or not self.grants(now):
            return None
        start = max(now - self.seconds, self._first)
        active = now - start - _overlap(self._pauses, start, now)
        if active - _overlap(self._idle, start, now) >= self.min_active_secs:
            active -= _overlap(self._idle, start, now)
        if active < self.min_active_secs:
            return None
        admitted = max(0, len(self._grants) - len(self._refusals))
        kinds = len(self._grants[-1][1])
        scale = admitted / len(self._grants) / active
        return (admitted / active,) + tuple(
            sum(costs[i] for _, costs in self._grants if i < len(costs)) * scale
            for i in range(kinds))


def _add_interval(intervals: collections.deque, start: float, end: float) -> None:
    if intervals and start <= intervals[-1][1]:
        begin, finish = intervals.pop()
        start, end = min(start, begin), max(end, finish)
    intervals.append((start, end))


def _overlap(intervals, start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)
