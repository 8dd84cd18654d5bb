"""Streaming: sources (Pub/Sub, a watched folder), sinks (windowed files, topics), first response.

A streaming job is the batch path with other ends: :mod:`transforms.stream.sources` makes the
same raw records, validation, batching and ``CallModel`` are unchanged, and
:mod:`transforms.stream.sinks` writes what comes out. :class:`RecordFirstResponse` measures the
support team's figure: from a ticket's arrival to its emitted result (``first_response_ms``).

Example::

    results = called["results"] | "FirstResponse" >> RecordFirstResponse()
"""

from __future__ import annotations

import time
from typing import Callable

import apache_beam as beam

from transforms.metrics import TicketflowMetrics
from transforms.records import Result


class _FirstResponseFn(beam.DoFn):
    def __init__(self, clock: Callable[[], float]):
        self._clock = clock

    def setup(self):
        self._metrics = TicketflowMetrics()

    def process(self, result: Result):
        received = (result.origin or {}).get("received_at")
        if received:
            self._metrics.record_first_response(max(0.0, (self._clock() - received) * 1000.0))
        yield result


class RecordFirstResponse(beam.PTransform):
    """Passes results through, recording each one's first response time.

    Args:
      clock: Wall-clock seconds (tests inject one).
    """

    def __init__(self, clock: Callable[[], float] = time.time):
        super().__init__()
        self._clock = clock

    def expand(self, results):
        return results | "Record" >> beam.ParDo(_FirstResponseFn(self._clock))
