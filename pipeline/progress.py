"""Live counters of this process, for the driver's progress bar and the run report.

Beam metrics of the local runners can only be read once the pipeline is done, so the driver
registers :data:`STATS` as a listener of :mod:`transforms.metrics`
(:func:`transforms.metrics.listen`): every increment is mirrored here, in a plain thread-safe
object a driver thread may read at any time. It sees the DoFns' work only when they run in the
driver's process (the FnApiRunner's default ``in_memory`` mode, or ``multi_threading``); with
``multi_processing`` workers or a remote runner it stays at zero and the driver says so (see
``pipeline/watch.py``).

It also keeps, per wall-clock second, how many tickets finished (the report's throughput plot)
and what counted against the provider's quota (:class:`QuotaSeconds`: requests, tokens, 429s and
time held back by the rate limiter; the report's quota plots). The counter increments arrive
when a ticket finishes, so the quota seconds are taken from each finished record's attempt
times instead, which are when its requests were sent.

Example::

    snap = STATS.snapshot()
    snap["succeeded"] + snap["dead_lettered"], snap["tickets_read"]
    STATS.quota_seconds()[1795990473]  # [requests, prompt, completion, 429s, throttled secs]
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Callable, Dict, List, Optional

from transforms.records import DeadLetter, Result

#: The quota series kept per second, in this order.
QUOTA_SERIES = ("requests", "prompt_tokens", "completion_tokens", "rate_limited",
                "throttled_secs")
_REQUESTS, _PROMPT, _COMPLETION, _RATE_LIMITED, _THROTTLED = range(len(QUOTA_SERIES))


class QuotaSeconds:
    """Per-wall-clock-second sums of requests, tokens, 429s and limiter waits (not thread-safe).

    A record keeps only the times of its first and last attempt, so one ticket is spread over
    the seconds it spans (see :meth:`ticket`). Values are floats: a wait that straddles two
    seconds is split between them.
    """

    def __init__(self):
        #: epoch second → one value per :data:`QUOTA_SERIES`
        self.seconds: Dict[int, List[float]] = {}

    def _add(self, index: int, amount: float, at: float) -> None:
        second = math.floor(at)
        slot = self.seconds.get(second)
        if slot is None:
            slot = self.seconds[second] = [0.0] * len(QUOTA_SERIES)
        slot[index] += amount

    def spread(self, index: int, amount: float, start: float, end: float) -> None:
        """Adds ``amount`` of series ``index`` evenly over ``[start, end]`` (POSIX seconds);
        all of it in ``end``'s second when the span is empty."""
        if not amount:
            return
        if end <= start:
            self._add(index, amount, end)
            return
        second = math.floor(start)
        while second < end:
            overlap = min(end, second + 1) - max(start, second)
            if overlap > 0:
                self._add(index, amount * overlap / (end - start), second)
            second += 1

    def ticket(self, attempts: int, rate_limited: int, prompt_tokens: int,
               completion_tokens: int, throttled_secs: float, first_at: float,
               last_at: float) -> None:
        """One ticket's requests, 429s, tokens and waits.

        The attempts are placed evenly from ``first_at`` to ``last_at`` (one attempt: at
        ``last_at``); the 429s on the earliest of them (a 429 is followed by another attempt);
        the tokens on the last (the answer kept is the last one; a provider counts tokens when
        it admits the request); the waits spread over ``[first_at - throttled_secs, last_at]``
        (the limiter's wait before the first attempt ends at ``first_at``; the retry waits lie
        between the attempts).

        Args:
          attempts: Requests sent.
          rate_limited: How many of them were answered 429.
          prompt_tokens: Prompt tokens of the answers.
          completion_tokens: Completion tokens of the answers.
          throttled_secs: Time held back by the rate limiter or a 429's retry-after.
          first_at: POSIX time of the first request.
          last_at: POSIX time of the last request.
        """
        first_at = min(first_at, last_at)
        for i in range(attempts):
            at = last_at if attempts == 1 else first_at + (last_at - first_at) * i / (attempts - 1)
            self._add(_REQUESTS, 1, at)
            if i < rate_limited:
                self._add(_RATE_LIMITED, 1, at)
        if prompt_tokens:
            self._add(_PROMPT, prompt_tokens, last_at)
        if completion_tokens:
            self._add(_COMPLETION, completion_tokens, last_at)
        if throttled_secs > 0:
            self.spread(_THROTTLED, throttled_secs, first_at - throttled_secs, last_at)

    def record(self, record, fallback_at: float) -> None:
        """What one finished Result or DeadLetter sent to the provider.

        Answers from the response store and from the Batch API are left out: neither counts
        against the online limits. ``fallback_at`` stands for a missing attempt time.
        """
        stats = record.stats
        if stats.batch_answers or (isinstance(record, Result) and record.cached):
            return
        if not stats.attempts and not stats.throttled_secs:
            return
        last_at = stats.last_attempt_at or fallback_at
        self.ticket(stats.attempts, stats.rate_limited, stats.prompt_tokens,
                    stats.completion_tokens, stats.throttled_secs,
                    stats.first_attempt_at or last_at, last_at)


class ProgressStats:
    """Thread-safe counters, dead letters by reason, completions and quota use per second.

    Args:
      wall: Wall clock (POSIX seconds), injected in tests; it times a record that carries no
        time of its own.
    """

    def __init__(self, wall: Callable[[], float] = time.time):
        self._wall = wall
        self._lock = threading.Lock()
        self._counts: Dict[str, int] = collections.Counter()
        self._reasons: Dict[str, int] = collections.Counter()
        # second → [succeeded, dead lettered]
        self._per_second: Dict[int, list] = {}
        self._quota = QuotaSeconds()
        self._in_flight = 0

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._reasons.clear()
            self._per_second.clear()
            self._quota = QuotaSeconds()
            self._in_flight = 0

    def add(self, name: str, n: int = 1) -> None:
        """Adds ``n`` to the counter ``name`` (the same names as the Beam counters)."""
        with self._lock:
            self._counts[name] += n

    def finished(self, record, at: Optional[float] = None) -> None:
        """Notes one ticket leaving the pipeline as a Result or a DeadLetter (at wall ``at``)."""
        ok = isinstance(record, Result)
        now = self._wall() if at is None else at
        if at is None:
            at = record.finished_at if ok else (record.stats.last_attempt_at or now)
        with self._lock:
            slot = self._per_second.setdefault(int(at), [0, 0])
            slot[0 if ok else 1] += 1
            if isinstance(record, DeadLetter):
                self._reasons[record.reason] += 1
            self._quota.record(record, fallback_at=now)

    def in_flight(self, delta: int) -> None:
        """Requests currently sent and not yet answered (+1 when sent, -1 when answered)."""
        with self._lock:
            self._in_flight += delta

    def snapshot(self) -> dict:
        """A consistent copy: counters, ``dead_letter_reasons``, ``in_flight``, ``per_second``."""
        with self._lock:
            out = dict(self._counts)
            out["dead_letter_reasons"] = dict(self._reasons)
            out["in_flight"] = self._in_flight
            out["per_second"] = {k: tuple(v) for k, v in sorted(self._per_second.items())}
        return out

    def quota_seconds(self) -> Dict[int, List[float]]:
        """A copy of the quota use per second: epoch second → one value per
        :data:`QUOTA_SERIES` (apart from :meth:`snapshot`, which the progress display calls
        often, because a long run has many seconds)."""
        with self._lock:
            return {k: list(v) for k, v in sorted(self._quota.seconds.items())}


#: The process's live counters (see module docstring).
STATS = ProgressStats()
