"""Live counters of this process, for the driver's progress bar and the run report.

Beam metrics of the local runners can only be read once the pipeline is done, so the driver
registers :data:`STATS` as a listener of :mod:`transforms.metrics`
(:func:`transforms.metrics.listen`): every increment is mirrored here, in a plain thread-safe
object a driver thread may read at any time. It sees the DoFns' work only when they run in the
driver's process (the FnApiRunner's default ``in_memory`` mode, or ``multi_threading``); with
``multi_processing`` workers or a remote runner it stays at zero and the driver says so (see
``pipeline/watch.py``).

It also keeps how many tickets finished in each wall-clock second (the report's throughput plot).

Example::

    snap = STATS.snapshot()
    snap["succeeded"] + snap["dead_lettered"], snap["tickets_read"]
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Dict, Optional

from transforms.records import DeadLetter, Result


class ProgressStats:
    """Thread-safe counters, dead letters by reason, and completions per wall-clock second.

    Args:
      wall: Wall clock (POSIX seconds), injected in tests.
    """

    def __init__(self, wall: Callable[[], float] = time.time):
        self._wall = wall
        self._lock = threading.Lock()
        self._counts: Dict[str, int] = collections.Counter()
        self._reasons: Dict[str, int] = collections.Counter()
        # second → [succeeded, dead lettered]
        self._per_second: Dict[int, list] = {}
        self._in_flight = 0

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._reasons.clear()
            self._per_second.clear()
            self._in_flight = 0

    def add(self, name: str, n: int = 1) -> None:
        """Adds ``n`` to the counter ``name`` (the same names as the Beam counters)."""
        with self._lock:
            self._counts[name] += n

    def finished(self, record, at: Optional[float] = None) -> None:
        """Notes one ticket leaving the pipeline as a Result or a DeadLetter (at wall ``at``)."""
        ok = isinstance(record, Result)
        if at is None:
            at = record.finished_at if ok else (record.stats.last_attempt_at or self._wall())
        with self._lock:
            slot = self._per_second.setdefault(int(at), [0, 0])
            slot[0 if ok else 1] += 1
            if isinstance(record, DeadLetter):
                self._reasons[record.reason] += 1

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


#: The process's live counters (see module docstring).
STATS = ProgressStats()
