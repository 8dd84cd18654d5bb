"""A streaming source that polls until it is told to stop: the base of the local sources.

:class:`PollUntilStopped` is a splittable DoFn over an endless offset range: each claim calls a
:class:`Poller` once and emits what it returns, timestamped now, then checkpoints itself for
``interval_secs`` (at once when the poll found something). When the stop flag is raised it
claims the rest of its range and returns, so the source is done: its watermark moves to the end
of time, every window and every ``GroupIntoBatches`` buffer downstream flushes, and the pipeline
finishes by itself with nothing in flight. That is the local drain of a streaming job
(``pipeline/stream.py``); on Dataflow a drain truncates the range the same way
(:meth:`_Forever.truncate`).

Why a stop *file*: the local streaming runner (Prism) runs the DoFns in an SDK worker process of
its own, so the driver's SIGINT handler cannot reach them through memory. The driver creates
the file; each poll checks it (one ``stat``).

Example::

    ticks = p | beam.Impulse() | "Poll" >> beam.ParDo(
        PollUntilStopped(lambda: MyPoller(...), interval_secs=1.0, stop_file="/tmp/stop-run1"))
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, List, Optional, Protocol

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

_END = sys.maxsize


class Poller(Protocol):
    """What a polling source does at each tick (made on the worker, in ``setup``)."""

    def open(self) -> None:
        """Connects (clients are made here, not in ``__init__``)."""

    def poll(self) -> List[Any]:
        """The elements that arrived since the last poll (an empty list when none did)."""

    def close(self) -> None:
        """Releases the clients."""


def stop_requested(stop_file: Optional[str]) -> bool:
    """Whether the driver asked the sources to stop (``stop_file`` exists)."""
    return bool(stop_file) and os.path.exists(stop_file)


class _Forever(RestrictionProvider):
    """One endless offset range; each poll claims one offset."""

    def initial_restriction(self, element):
        return OffsetRange(0, _END)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def split(self, element, restriction):
        yield restriction  # one poller per source: a split would poll twice

    def truncate(self, element, restriction):
        return None  # a drain ends the polling; what was emitted is processed


class _Watermarks(WatermarkEstimatorProvider):
    def initial_estimator_state(self, element, restriction):
        return None

    def create_watermark_estimator(self, estimator_state):
        return ManualWatermarkEstimator(estimator_state)


class PollUntilStopped(beam.DoFn):
    """Calls a :class:`Poller` every ``interval_secs`` until ``stop_file`` appears.

    Args:
      make_poller: Builds the poller on the worker (picklable: a class or a function).
      interval_secs: Pause after a poll that found nothing.
      stop_file: A local path whose existence stops the polling; None: never (Dataflow).
      clock: Wall-clock seconds (tests inject one).
    """

    def __init__(self, make_poller: Callable[[], Poller], interval_secs: float,
                 stop_file: Optional[str] = None, clock: Callable[[], float] = time.time):
        self._make_poller = make_poller
        self._interval = interval_secs
        self._stop_file = stop_file
        self._clock = clock
        self._poller: Optional[Poller] = None

    def setup(self):
        self._poller = self._make_poller()
        self._poller.open()

    def teardown(self):
        if self._poller is not None:
            self._poller.close()
            self._poller = None

    def process(self, element, tracker=beam.DoFn.RestrictionParam(_Forever()),
                watermark=beam.DoFn.WatermarkEstimatorParam(_Watermarks())):
        del element
        restriction = tracker.current_restriction()
        if stop_requested(self._stop_file):
            tracker.try_claim(restriction.stop - 1)  # the rest: the source is done
            return
        if not tracker.try_claim(restriction.start):
            return
        now = self._clock()
        found = self._poller.poll()
        for value in found:
            yield TimestampedValue(value, now)
        watermark.set_watermark(Timestamp.of(now))
        tracker.defer_remainder(Duration.of(0 if found else self._interval))
