"""Rolling-window rate limits in the manner of OpenAI's requests- and tokens-per-minute limits.

Each limit is a budget over a rolling one-minute window. With ``burst_secs`` B < 60 the same limit
is also enforced over any rolling B-second window, with budget ``limit * B / 60``, the way OpenAI
enforces a per-minute limit over shorter periods. Rejected requests consume nothing. Time comes
from an injected ``clock`` so tests can drive the limiter without sleeping:

    now = [0.0]
    limiter = RateLimiter(rpm=2, tpm=0, clock=lambda: now[0])
    limiter.acquire(tokens=10).allowed     # True
    limiter.acquire(tokens=10).allowed     # True
    limiter.acquire(tokens=10).retry_after # 60.0: the first request leaves the window at t=60
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable

#: Sent as limit and remaining when a limit is 0 (unlimited), so clients never see a 0 budget.
UNLIMITED = 1_000_000_000

_MINUTE = 60.0


def format_duration(seconds: float) -> str:
    """Formats a duration the way OpenAI's ``x-ratelimit-reset-*`` headers do.

    Args:
        seconds: A non-negative duration.

    Returns:
        "120ms" below one second (rounded up), else e.g. "1s", "1m30.5s", "6m0s", "1h0m0s".
    """
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        millis = math.ceil(seconds * 1000)
        return "1s" if millis >= 1000 else f"{millis}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if text == "60":  # 59.9996 rounded up; carry rather than print "60s"
        minutes, text = minutes + 1, "0"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}s"
    if minutes:
        return f"{int(minutes)}m{text}s"
    return f"{text}s"


class RollingWindow:
    """A budget over a rolling window of ``seconds``: the sum of costs admitted in the last window.

    Args:
        seconds: The window length.
        budget: The most cost the window may hold.
        allow_oversize_when_empty: Admit a request whose cost alone exceeds the budget if the
            window is empty (used for short burst windows whose budget can be below one request).
    """

    __slots__ = ("_entries", "_used", "allow_oversize_when_empty", "budget", "seconds")

    def __init__(self, seconds: float, budget: float, allow_oversize_when_empty: bool = False):
        self.seconds = seconds
        self.budget = budget
        self.allow_oversize_when_empty = allow_oversize_when_empty
        self._entries: collections.deque[tuple[float, int]] = collections.deque()
        self._used = 0

    def used(self, now: float) -> int:
        """Returns the cost admitted within the window ending at ``now``."""
        entries = self._entries
        horizon = now - self.seconds
        while entries and entries[0][0] <= horizon:
            self._used -= entries.popleft()[1]
        return self._used

    def _fits(self, used: int, cost: int) -> bool:
        return used + cost <= self.budget or (self.allow_oversize_when_empty and used == 0)

    def wait(self, now: float, cost: int) -> float:
        """Returns seconds until ``cost`` would fit (0 if it fits now, inf if it never can)."""
        used = self.used(now)
        if self._fits(used, cost):
            return 0.0
        for stamp, entry_cost in self._entries:
            used -= entry_cost
            if self._fits(used, cost):
                return stamp + self.seconds - now
        return math.inf

    def add(self, now: float, cost: int) -> None:
        """Records ``cost`` as admitted at ``now``."""
        self._entries.append((now, cost))
        self._used += cost

    def reset_in(self, now: float) -> float:
        """Returns seconds until the window is empty again (its budget fully restored)."""
        self.used(now)
        return self._entries[-1][0] + self.seconds - now if self._entries else 0.0

    def clear(self) -> None:
        """Forgets everything admitted."""
        self._entries.clear()
        self._used = 0


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of ``RateLimiter.acquire``.

    Attributes:
        allowed: Whether the request was admitted (and its cost consumed).
        kind: On rejection, "requests" or "tokens": which limit was hit.
        window_secs: On rejection, the length of the window that was full.
        limit: On rejection, that window's budget.
        used: On rejection, the cost already in that window.
        requested: On rejection, the cost of the rejected request.
        retry_after: On rejection, seconds until the request would fit (inf if it never can).
    """

    allowed: bool
    kind: str = ""
    window_secs: float = 0.0
    limit: int = 0
    used: int = 0
    requested: int = 0
    retry_after: float = 0.0


_ALLOWED = Decision(allowed=True)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits, each over rolling windows.

    Args:
        rpm: Requests per minute; 0 = unlimited.
        tpm: Tokens per minute; 0 = unlimited.
        burst_secs: If below 60, each limit is also enforced over a rolling window this long with a
            proportional budget. A request is always admitted into an empty burst window (if the
            minute window has room), so budgets below one request still let traffic through.
        clock: Returns the current time in seconds; ``time.monotonic`` by default.
    """

    def __init__(self, rpm: int = 0, tpm: int = 0, burst_secs: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.rpm = rpm
        self.tpm = tpm
        self.burst_secs = burst_secs
        self._clock = clock
        self._windows: dict[str, list[RollingWindow]] = {}
        for kind, limit in (("requests", rpm), ("tokens", tpm)):
            if limit <= 0:
                continue
            windows = [RollingWindow(_MINUTE, limit)]
            if burst_secs < _MINUTE:
                windows.append(RollingWindow(burst_secs, limit * burst_secs / _MINUTE,
                                             allow_oversize_when_empty=True))
            self._windows[kind] = windows

    @property
    def unlimited(self) -> bool:
        """True when neither limit is set (then ``acquire`` always admits)."""
        return not self._windows

    def acquire(self, tokens: int) -> Decision:
        """Admits one request costing ``tokens`` if every window has room, else rejects it.

        Args:
            tokens: The request's token cost (prompt tokens + max output tokens).

        Returns:
            The decision; only an admitted request consumes budget.
        """
        if not self._windows:
            return _ALLOWED
        now = self._clock()
        costs = {"requests": 1, "tokens": tokens}
        worst: tuple[float, str, RollingWindow] | None = None
        for kind, windows in self._windows.items():
            for window in windows:
                wait = window.wait(now, costs[kind])
                if wait > 0 and (worst is None or wait > worst[0]):
                    worst = (wait, kind, window)
        if worst is None:
            for kind, windows in self._windows.items():
                for window in windows:
                    window.add(now, costs[kind])
            return _ALLOWED
        wait, kind, window = worst
        return Decision(allowed=False, kind=kind, window_secs=window.seconds,
                        limit=int(window.budget), used=window.used(now), requested=costs[kind],
                        retry_after=wait)

    def headers(self) -> dict[str, str]:
        """Returns OpenAI's six ``x-ratelimit-*`` headers for the one-minute windows.

        Returns:
            limit, remaining and reset for requests and tokens. An unlimited dimension reports
            ``UNLIMITED`` as limit and remaining and "0s" as reset.
        """
        now = self._clock() if self._windows else 0.0
        headers = {}
        for kind in ("requests", "tokens"):
            windows = self._windows.get(kind)
            if windows is None:
                headers[f"x-ratelimit-limit-{kind}"] = _UNLIMITED_TEXT
                headers[f"x-ratelimit-remaining-{kind}"] = _UNLIMITED_TEXT
                headers[f"x-ratelimit-reset-{kind}"] = "0s"
                continue
            minute = windows[0]
            headers[f"x-ratelimit-limit-{kind}"] = str(int(minute.budget))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(minute.budget)
                                                               - minute.used(now)))
            headers[f"x-ratelimit-reset-{kind}"] = format_duration(minute.reset_in(now))
        return headers

    def reset(self) -> None:
        """Empties every window."""
        for windows in self._windows.values():
            for window in windows:
                window.clear()


_UNLIMITED_TEXT = str(UNLIMITED)
