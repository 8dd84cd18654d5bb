"""Seconds from a process's start to the first chat request the simulator sees.

The simulator counts a request as in flight when it arrives and as answered when it replies
(``GET /stats``: ``in_flight``, ``requests``); a thread polls that every ``interval`` seconds, so
the figure needs no change to the measured process nor to the simulator::

    with FirstRequestWatch(sim) as first:   # sim: anything with stats() and reset()
        run_child(["python", "-m", "pipeline", ...], timeout=600)
    first.seconds  # None when no request came
"""

from __future__ import annotations

import threading
import time
from typing import Self


class FirstRequestWatch:
    """Polls the simulator's ``/stats`` from a thread until its first chat request arrives.

    Started just before the measured process, it gives the seconds from that start to the
    first request the simulator saw (in flight or answered), within ``interval``.

    Args:
        sim: The simulator handle (``benchmarks.run.Simulator``): ``stats()`` and ``reset()``.
        interval: Seconds between two polls.
    """

    def __init__(self, sim, interval: float = 0.02):
        self._sim = sim
        self._interval = interval
        self._done = threading.Event()
        self.seconds: float | None = None
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Self:
        self._sim.reset()
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._done.is_set():
            try:
                stats = self._sim.stats()
            except OSError:
                stats = {}
            if stats.get("requests", 0) + stats.get("in_flight", 0) > 0:
                self.seconds = time.perf_counter() - self._started
                return
            self._done.wait(self._interval)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(5)
