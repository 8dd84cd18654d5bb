"""``CallModel``: the typed public transform, and the private DoFn that feeds the engine.

The DoFn submits each ticket of each batch to the process's engine and emits whatever has
finished; it blocks only while its own window of ``max_concurrency`` tickets is full, and drains
the bundle's remaining tickets in ``finish_bundle``. So a slow request holds back nothing but
itself. Tickets go to the engine's loop in batches (one thread-safe call for as many as the
window has room for) and come back, as each finishes, on one queue the DoFn reads in its own
thread. Results leave on the main output, dead letters on the ``dead_letter`` tagged output.

A bad ticket never raises; a wrong job does. When the engine's first requests show that the base
URL, the model or the key is wrong (:mod:`transforms.limits.trial`), the DoFn raises
:class:`~transforms.errors.JobMisconfigured`: the job fails, on any runner, instead of spending a
request and writing a dead letter per ticket, and the driver prints the error's one line.

Example::

    outputs = batches | "CallModel" >> CallModel(llm_config, stop_signal=process_stop_signal)
    outputs["results"], outputs["dead_letter"]
"""

from __future__ import annotations

import queue
from typing import Any, Callable, Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from transforms import errors
from transforms.llm.providers import provider_caller
from transforms.llm.config import DISPATCH_BARRIER, LlmConfig, resolve_api_key
from transforms.llm.engine import CallerFactory, Engine, shared_handle
from transforms.llm.stop import StopSignal
from transforms.metrics import TicketflowMetrics
from transforms.records import DEAD_LETTER_TAG, Result

StopSource = Callable[[], StopSignal]


class _CallModelFn(beam.DoFn):
    """Submits tickets to the process's engine and emits what finishes."""

    def __init__(self, config: LlmConfig, handle, stop_signal: Optional[StopSource],
                 caller_factory: CallerFactory):
        self._config = config
        self._handle = handle
        self._stop_signal = stop_signal
        self._caller_factory = caller_factory

    def setup(self):
        config = self._config
        stop = self._stop_signal() if self._stop_signal is not None else StopSignal()

        def make_engine() -> Engine:
            try:
                api_key = (resolve_api_key(config) if not config.endpoints else
                           {e.endpoint_name: resolve_api_key(e) for e in config.endpoints})
            except errors.AuthFailed as exc:
                # Every ticket would fail the same way: fail loudly, not dead-letter millions.
                raise RuntimeError(str(exc)) from None
            return Engine(config, api_key, stop, self._caller_factory)

        self._engine: Engine = self._handle.acquire(make_engine)
        self._stop = self._engine.stop
        self._answerer = self._engine.answerer(config)
        self._metrics = TicketflowMetrics()
        # With --endpoints, the window holds every endpoint's.
        self._window = max(1, sum(e.max_concurrency for e in config.endpoints)
                           or config.max_concurrency)
        self._barrier = config.dispatch == DISPATCH_BARRIER
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._in_flight = 0

    def start_bundle(self):
        if self._in_flight:
            # A failed bundle left tickets in flight: their records must not leak into this one.
            self._results = queue.SimpleQueue()
            self._in_flight = 0

    def process(self, element, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        self._fail_if_misconfigured()
        _, tickets = element
        tag = (timestamp, (window,))  # what each record is emitted with
        batch: List[Tuple[Any, Tuple]] = []
        for ticket in tickets:
            if self._stop.stopping():
                # Stopping: what is still arriving flows through at once, so the ledger balances.
                yield self._output(self._answerer.interrupted(ticket), tag)
                continue
            if self._in_flight + len(batch) >= self._window:
                self._send(batch)
                batch = []
                yield from self._collect(block=True)
            batch.append((ticket, tag))
        self._send(batch)
        yield from self._collect(block=self._barrier, everything=self._barrier)

    def finish_bundle(self):
        yield from self._collect(block=True, everything=True)
        self._metrics.record_process(**self._engine.process_stats())

    def teardown(self):
        # The engine is shared: dropping the reference lets Beam's Shared decide its lifetime.
        self._engine = None
        self._answerer = None

    def _send(self, batch: List[Tuple[Any, Tuple]]) -> None:
        """Starts a batch of tickets on the engine's loop (one thread-safe call for all)."""
        if batch:
            self._in_flight += len(batch)
            self._engine.start_many(self._answerer.handle, batch, self._results)

    def _collect(self, block: bool, everything: bool = False) -> Iterable:
        """Emits finished records: all there are; with ``block`` at least one (while any is in
        flight); with ``everything`` until none is in flight."""
        results = self._results
        while self._in_flight:
            if everything or block:
                record, tag = results.get()
                block = False
            else:
                try:
                    record, tag = results.get_nowait()
                except queue.Empty:
                    return
            self._in_flight -= 1
            yield self._output(record, tag)

    def _output(self, record, tag):
        """The record as an output (the main one or dead letters), its metrics recorded here, in
        the DoFn's thread: Beam's metrics belong to the thread of the bundle."""
        if isinstance(record, BaseException):
            raise record  # the engine's coroutine failed; handle() itself never raises
        self._fail_if_misconfigured()
        stats = record.stats
        if stats.batch_answers:
            # --api batch: the summary's answered_by_batch and online_cost_usd.
            self._metrics.inc("answered_by_batch", stats.batch_answers)
            self._metrics.inc("batch_discount_nano_usd",
                              int(round(stats.batch_discount_usd * 1e9)))
        timestamp, windows = tag
        if isinstance(record, Result):
            self._metrics.record_result(record)
            return WindowedValue(record, timestamp, windows)
        self._metrics.record_dead_letter(record)
        return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, WindowedValue(record, timestamp, windows))


    def _fail_if_misconfigured(self) -> None:
        misconfigured = self._engine.flow.misconfigured
        if misconfigured is not None:
            # Every ticket would fail the same way: fail the job, not dead-letter millions.
            raise errors.JobMisconfigured(misconfigured)


class CallModel(beam.PTransform):
    """Calls the model for every ticket of every batch.

    Input: ``(key, Iterable[Ticket])`` batches. Output: a dict of PCollections, ``results``
    (:class:`~transforms.records.Result`) and ``dead_letter``
    (:class:`~transforms.records.DeadLetter`).

    Args:
      config: The LLM configuration (endpoint, model, limits, retry policy, concurrency).
      stop_signal: A picklable function returning the process's stop signal (the driver's, for
        a graceful stop); None: the run is never stopped from outside.
      caller_factory: A picklable ``factory(config, api_key) -> Caller`` (tests pass a fake).
    """

    def __init__(self, config: LlmConfig, stop_signal: Optional[StopSource] = None,
                 caller_factory: CallerFactory = provider_caller):
        super().__init__()
        self._config = config
        self._stop_signal = stop_signal
        self._caller_factory = caller_factory

    def expand(self, batches):
        fn = _CallModelFn(self._config, shared_handle(self._config.engine_key()),
                          self._stop_signal, self._caller_factory)
        outputs = batches | "CallModelWithRetries" >> beam.ParDo(fn).with_outputs(
            DEAD_LETTER_TAG, main="results")
        return {"results": outputs.results, DEAD_LETTER_TAG: outputs[DEAD_LETTER_TAG]}
