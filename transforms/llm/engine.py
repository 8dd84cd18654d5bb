"""The engine: one event loop per worker process and endpoint, shared by every DoFn there.

With ``--endpoints`` one engine holds a caller and a flow control per endpoint, behind one
:class:`~transforms.llm.router.Router` (``engine.flow``); with one endpoint, the router is that
endpoint's flow control.

Why a background loop: on the local runners a DoFn gets ONE thread, and a batch-at-a-time
``asyncio.gather`` would make every batch wait for its slowest request. An :class:`Engine` runs
an asyncio loop in a thread, with the caller (the HTTP client) and the flow control (window,
limiter, budget) on it; DoFns submit tickets to it and collect what has finished.

Sharing: every ``CallModel`` step on the same endpoint and flow settings
(:meth:`~transforms.llm.config.LlmConfig.engine_key`) gets the same engine in a process, through
Beam's :class:`~apache_beam.utils.shared.Shared` (the handle is chosen per engine key when the
pipeline is built and pickled into each DoFn), so two steps with different prompts share the
worker's quota instead of each taking all of it. The engine lives while a DoFn holds it (and
Beam keeps the most recent one alive across DoFn teardown/setup); when it is collected, its
loop, client and stop subscription are closed.

Handing tickets over: :meth:`Engine.start_many` starts a whole list of tickets with ONE
thread-safe call to the loop, and each finished record comes back on a thread-safe queue that
the DoFn reads in its own thread (where Beam's metrics must be recorded). One
``run_coroutine_threadsafe`` per ticket and a ``concurrent.futures.wait`` over the whole window
cost more than the rest of our per-ticket work (benchmarks/PROFILE.md).

Example::

    engine = Engine(config, api_key, stop)
    answerer = engine.answerer(config)
    future = engine.submit(answerer.handle(ticket))   # a concurrent.futures.Future
    results = queue.SimpleQueue()
    engine.start_many(answerer.handle, [(ticket, tag), ...], results)
    record, tag = results.get()                       # as each finishes
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import queue
import threading
import time
import weakref
from typing import (Any, Awaitable, Callable, Coroutine, Dict, List, Mapping, Sequence, Set,
                    Tuple, Union)

from apache_beam.utils.shared import Shared

from transforms.llm.answer import TicketAnswerer
from transforms.llm.caller import Caller
from transforms.llm.providers import provider_caller
from transforms.llm.config import LlmConfig
from transforms.llm.flow import FlowControl
from transforms.llm.limits import Limits, local_limits, shared_limits
from transforms.llm.router import Endpoint, Router
from transforms.llm.stop import StopSignal

CallerFactory = Callable[[LlmConfig, str], Caller]

_CLOSE_TIMEOUT_SECS = 5.0


class Engine:
    """Event-loop thread, caller and flow control of one endpoint in one process.

    Args:
      config: The configuration of the first step that made it (its endpoint and flow settings
        are every sharer's).
      api_key: The resolved key (kept in memory only); with ``config.endpoints``, a mapping of
        endpoint name to its key.
      stop: The run's stop signal.
      caller_factory: Builds the innermost layer (``factory(config, api_key)``).
      clock: Monotonic clock.
      wall: Wall clock.
    """

    def __init__(self, config: LlmConfig, api_key: Union[str, Mapping[str, str]],
                 stop: StopSignal,
                 caller_factory: CallerFactory = provider_caller,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.config = config
        self.stop = stop
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._answerers: Dict[str, TicketAnswerer] = {}
        self._fallbacks_reported = 0
        # Strong references to the tasks of start_many (the loop keeps only weak ones).
        self._tasks: Set[asyncio.Task] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ticketflow-llm",
                                        daemon=True)
        self._thread.start()
        keys = api_key if isinstance(api_key, Mapping) else {None: api_key}
        self._secrets = [k for k in keys.values() if k]
        self.callers: List[Caller] = []
        self.flows: List[FlowControl] = []
        for ep_config in config.endpoints or (config,):
            key = keys.get(ep_config.endpoint_name, keys.get(None, ""))
            caller = caller_factory(ep_config, key)
            limits = _limits_for(ep_config, key)
            if self.flows:  # one budget for the job, whichever endpoint spends it
                limits = functools.partial(_with_budget, limits, self.flows[0])
            self.callers.append(caller)
            self.flows.append(FlowControl(ep_config, caller, stop, clock=clock, wall=wall,
                                          secrets=self._secrets, limits=limits))
        self.flow = Router([Endpoint(flow) for flow in self.flows], clock=clock)
        self._run(self._start())
        # Nothing on the loop refers to the engine, so it can be collected; then close it all.
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._thread,
                                           self.callers, self.flows)

    async def _start(self) -> None:
        for caller, flow in zip(self.callers, self.flows):
            await caller.open()
            await flow.start()

    def _run(self, coro: Coroutine):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def answerer(self, config: LlmConfig) -> TicketAnswerer:
        """The process's answerer of a step (made on first use; its store's in-flight sharing and
        its compiled template serve every DoFn instance of the step)."""
        key = config.fingerprint()
        with self._lock:
            answerer = self._answerers.get(key)
            if answerer is None:
                answerer = TicketAnswerer(config, self.flow, clock=self._clock, wall=self._wall,
                                          secrets=self._secrets)
                self._answerers[key] = answerer
            return answerer

    def process_stats(self) -> Dict[str, int]:
        """This process's cumulative waits, and the shared-quota fallbacks not yet reported
        (each is reported once, whichever DoFn instance asks)."""
        fallbacks = [flow.limits.fallback() for flow in self.flows]
        events = sum(f["events"] for f in fallbacks)
        with self._lock:
            new = events - self._fallbacks_reported
            self._fallbacks_reported = events
        return {"held_ms": int(max(f.limiter_held_secs() for f in self.flows) * 1000),
                # With several endpoints, the job is out only while every one is.
                "outage_ms": int(min(f.breaker.open_secs for f in self.flows) * 1000),
                "fallback_ms": int(max(f["secs"] for f in fallbacks) * 1000),
                "new_fallbacks": max(0, new)}

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        """Schedules a coroutine on the engine's loop."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def start_many(self, handle: Callable[[Any], Awaitable[Any]],
                   items: Sequence[Tuple[Any, Any]], results: queue.SimpleQueue) -> None:
        """Starts ``handle(item)`` for every ``(item, tag)`` with one call into the loop.

        Each outcome is put on ``results`` as ``(record, tag)`` when it finishes, in the order
        they finish; a coroutine that raised (or was cancelled) puts ``(exception, tag)``.

        Args:
          handle: The coroutine function to run per item (``TicketAnswerer.handle``).
          items: ``(item, tag)`` pairs; the tag comes back with the record, untouched.
          results: Where outcomes go; read it from any thread.
        """
        self._loop.call_soon_threadsafe(self._start_all, handle, items, results.put)

    def _start_all(self, handle, items, put) -> None:
        create_task, tasks = self._loop.create_task, self._tasks
        for item, tag in items:
            task = create_task(_deliver(handle(item), tag, put))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def close(self) -> None:
        """Closes the client and stops the loop now (otherwise done when collected)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive


def _limits_for(config: LlmConfig, api_key: str):
    """The flow's limits: this worker's share, or the shared quota (named without the key)."""
    if not config.shared_quota:
        return local_limits
    from transforms.limits.quota import quota_key  # pylint: disable=import-outside-toplevel
    name = config.quota_key or quota_key(config.base_url, config.model, api_key)
    return functools.partial(shared_limits, quota_name=name)


def _with_budget(make_limits, first: FlowControl, *args, **kwargs) -> Limits:
    """An endpoint's limits, with the first endpoint's budget (one budget for the job)."""
    limits = make_limits(*args, **kwargs)
    limits.budget = first.budget
    return limits


async def _close(callers: List[Caller], flows: List[FlowControl]) -> None:
    for caller, flow in zip(callers, flows):
        try:
            await flow.aclose()
        finally:
            await caller.close()

async def _deliver(coro: Awaitable[Any], tag: Any, put: Callable[[Any], None]) -> None:
    try:
        record = await coro
    except BaseException as exc:  # noqa: BLE001 - handed to the reader, who raises it
        put((exc, tag))
        return
    put((record, tag))


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread, callers: List[Caller],
              flows: List[FlowControl]) -> None:
    for flow in flows:
        flow.close()
    if loop.is_closed() or not thread.is_alive():
        return
    try:
        asyncio.run_coroutine_threadsafe(_close(callers, flows), loop).result(_CLOSE_TIMEOUT_SECS)
    except Exception:  # noqa: BLE001 - closing is best effort
        pass
    loop.call_soon_threadsafe(loop.stop)
    if threading.current_thread() is not thread:
        thread.join(_CLOSE_TIMEOUT_SECS)


_HANDLES: Dict[str, Shared] = {}
_HANDLES_LOCK = threading.Lock()


def shared_handle(engine_key: str) -> Shared:
    """The ``Shared`` handle of an engine key, the same for every step built in this process.

    Built at pipeline construction and pickled into each DoFn, so that all steps with one engine
    key find one engine per worker process.
    """
    with _HANDLES_LOCK:
        handle = _HANDLES.get(engine_key)
        if handle is None:
            handle = _HANDLES[engine_key] = Shared()
        return handle
