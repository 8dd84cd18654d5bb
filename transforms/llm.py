"""The LLM call: a DoFn that keeps up to ``max_concurrency`` requests in flight, continuously.

``CallModel`` takes batches of :class:`~transforms.records.Ticket` and emits one
:class:`~transforms.records.Result` per ticket on the main output and one
:class:`~transforms.records.DeadLetter` per failed ticket on the ``dead_letter`` tagged output.

Why a background event loop: on the local runners the DoFn gets ONE thread, and a batch-at-a-time
``asyncio.gather`` would make every batch wait for its slowest request. Instead each worker process
owns one :class:`LlmEngine` (shared by all DoFn instances and threads of the process, kept
across DoFn teardown/setup cycles so the limiter's state survives): an asyncio loop in a thread, the ``openai`` async client, the
rate limiter and a concurrency semaphore. ``process`` submits tickets to it and yields whatever
has finished; it blocks only while its own window of ``max_concurrency`` tickets is full; the
bundle's remaining tickets are drained in ``finish_bundle``. So a slow request holds back nothing
but itself.

Graceful stop (:mod:`transforms.interrupt`): once the driver asks to stop, a ticket not yet sent,
waiting for the limiter or for a retry becomes a dead letter ``interrupted`` at once; requests in
flight finish, unless the driver also aborts (after ``--drain_secs``), which cancels them.
The engine logs the first occurrence of each error class at WARNING, retries at DEBUG.

Example::

    outputs = batches | "CallModel" >> CallModel(llm_config)
    outputs["results"], outputs["dead_letter"]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import logging
import math
import os
import random
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import openai
from apache_beam.utils.windowed_value import WindowedValue

from transforms import errors, interrupt, progress
from transforms.logs import event
from transforms.metrics import TicketflowMetrics
from transforms.pricing import Price
from transforms.prompts import PromptRenderer, TemplateRenderError
from transforms.ratelimit import AdaptiveRateLimiter
from transforms.records import STAGE_LLM, DeadLetter, Result, Ticket
from transforms.retry import RetryPolicy
from transforms.store import ResponseStore, request_key
from transforms.structured import (OutputValidator, StructuredOutput, repair_messages,
                                   schema_overhead_tokens)

_LOG = logging.getLogger(__name__)

DEAD_LETTER_TAG = "dead_letter"

DISPATCH_CONTINUOUS = "continuous"
DISPATCH_BARRIER = "barrier"

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, concise customer-support agent. Read the ticket and write the reply the "
    "support team should send: acknowledge the problem, give concrete next steps, stay polite.")


@dataclasses.dataclass(frozen=True)
class LlmConfig:
    """Everything the LLM step needs; built once by the driver, pickled to workers.

    The API key is NOT here: workers read it in ``setup()`` from Secret Manager
    (``api_key_secret``) or from the environment variable named by ``api_key_env`` (or use
    ``public_api_key``, for the simulator only, which is no secret).
    """
    base_url: Optional[str]
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    public_api_key: Optional[str] = None
    api_key_secret: Optional[str] = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    temperature: Optional[float] = None
    max_tokens: int = 256
    request_timeout_secs: float = 60.0
    max_concurrency: int = 32
    max_ticket_secs: float = 600.0
    requests_per_sec: float = 0.0
    tokens_per_sec: float = 0.0
    retry: RetryPolicy = RetryPolicy()
    dispatch: str = DISPATCH_CONTINUOUS
    seed: Optional[int] = None
    response_store: Optional[str] = None
    price: Price = Price()
    max_cost_usd: Optional[float] = None
    # --prompt_template's text (None: the built-in prompt); compiled once per worker process.
    prompt_template: Optional[str] = None
    # --response_schema, when answers must be JSON valid against it.
    structured: Optional[StructuredOutput] = None

    def fingerprint(self) -> str:
        """Identifies engines that may be shared: same config → same engine in a process."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


def render_messages(ticket: Ticket, system_prompt: str) -> List[Dict[str, str]]:
    """The chat messages for one ticket: the system prompt and a user message with id, subject, body."""
    lines = [f"Ticket ID: {ticket.id}"]
    if ticket.subject:
        lines.append(f"Subject: {ticket.subject}")
    user = "\n".join(lines) + "\n\n" + ticket.body
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user})
    return messages


def estimate_prompt_tokens(messages: List[Dict[str, str]], chars_per_token: float = 4.0) -> int:
    """Prompt tokens before the call: characters / chars_per_token, plus per-message overhead.

    tiktoken cannot download its encodings here, so we estimate and correct with ``usage``.
    """
    chars = sum(len(m["content"]) for m in messages)
    return int(math.ceil(chars / chars_per_token)) + 3 * len(messages) + 3


def resolve_api_key(config: LlmConfig) -> str:
    """The key the client uses; read on the worker, never logged or pickled.

    Raises:
      errors.AuthFailed: when the environment variable is unset and no public key is configured.
    """
    if config.public_api_key:
        return config.public_api_key
    if config.api_key_secret:
        from transforms import secrets  # pylint: disable=import-outside-toplevel
        try:
            return secrets.resolve_secret(config.api_key_secret)
        except secrets.SecretError as exc:
            raise errors.AuthFailed(str(exc)) from None
    key = os.environ.get(config.api_key_env, "")
    if not key:
        raise errors.AuthFailed(
            f"environment variable {config.api_key_env} is not set on this worker")
    return key


class _TicketTrace:
    """Mutable per-ticket bookkeeping while its attempts run (event-loop thread only)."""
    __slots__ = ("attempts", "call_attempts", "first_at", "last_at", "rate_limited",
                 "server_errors", "timeouts", "throttled", "latency_ms", "retries",
                 "prompt_tokens", "completion_tokens", "cost")

    def __init__(self):
        self.attempts = 0
        self.call_attempts = 0  # attempts of the current call (the original or the repair)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0
        self.first_at: Optional[float] = None
        self.last_at: Optional[float] = None
        self.rate_limited = 0
        self.server_errors = 0
        self.timeouts = 0
        self.throttled = 0.0
        self.latency_ms = 0.0
        self.retries = 0


class LlmEngine:
    """One per worker process: event loop thread, async client, limiter, concurrency semaphore.

    Args:
      config: The LLM configuration.
      api_key: The resolved key (kept in memory only).
      clock: Monotonic clock for deadlines and the limiter.
      wall: Wall clock for record timestamps.
    """

    def __init__(self, config: LlmConfig, api_key: str, clock=time.monotonic, wall=time.time):
        self.config = config
        self._secrets = [api_key]
        self._api_key = api_key
        self._clock = clock
        self._wall = wall
        self._rng = random.Random(config.seed)
        self._chars_per_token = 4.0
        # Compiled once per process, not per ticket (the driver already checked both compile).
        self._prompts = PromptRenderer(config.prompt_template, config.system_prompt)
        self._validator = None
        self._response_format = None
        self._schema_tokens = 0
        if config.structured is not None:
            self._validator = OutputValidator(config.structured.schema)
            self._response_format = config.structured.response_format()
            self._schema_tokens = schema_overhead_tokens(config.structured.schema)
        self.users = 0
        self.closed = False
        self._idle_handle = None
        self._store = ResponseStore(config.response_store) if config.response_store else None
        self._inflight: Dict[str, "asyncio.Future"] = {}
        self._spent = 0.0
        self._reserved = 0.0
        self._seen_errors: set = set()
        self._requests_in_flight: set = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ticketflow-llm",
                                        daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._init(), self._loop).result()
        self._unsubscribe = interrupt.subscribe(self._on_interrupt)

    async def _init(self) -> None:
        c = self.config
        limits = openai.DEFAULT_CONNECTION_LIMITS.__class__(
            max_connections=c.max_concurrency + 8, max_keepalive_connections=c.max_concurrency + 8)
        self._client = openai.AsyncOpenAI(
            api_key=self._api_key, base_url=c.base_url, max_retries=0,
            timeout=c.request_timeout_secs,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=c.request_timeout_secs))
        self._semaphore = asyncio.Semaphore(c.max_concurrency)
        self._stop_event = asyncio.Event()
        self._limiter = AdaptiveRateLimiter(c.requests_per_sec, c.tokens_per_sec, clock=self._clock,
                                            sleep=self._sleep)

    def _on_interrupt(self, kind: str) -> None:
        """Called from the driver's thread on a stop or an abort (:mod:`transforms.interrupt`)."""
        if self.closed:
            return
        if kind == interrupt.STOP:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        else:
            self._loop.call_soon_threadsafe(self._cancel_in_flight)

    def _cancel_in_flight(self) -> None:
        for task in list(self._requests_in_flight):
            task.cancel()

    async def _sleep(self, secs: float) -> None:
        """Sleeps (for the limiter or a retry's backoff) unless the run stops meanwhile.

        Raises:
          errors.Interrupted: when a stop is requested before or during the wait.
        """
        if not self._stop_event.is_set() and secs > 0:
            try:
                await asyncio.wait_for(self._stop_event.wait(), secs)
            except asyncio.TimeoutError:
                return
        if self._stop_event.is_set() or interrupt.stopping():
            raise errors.Interrupted("the run was stopped while this ticket waited for the rate "
                                     "limiter or a retry; replay it")

    def schedule_idle_close(self, delay: float, callback) -> None:
        """Calls ``callback(self)`` after ``delay`` seconds unless cancelled (engine's loop)."""
        def arm():
            self._idle_handle = self._loop.call_later(
                delay, lambda: threading.Thread(target=callback, args=(self,), daemon=True).start())
        if not self.closed:
            self._loop.call_soon_threadsafe(arm)

    def cancel_idle_close(self) -> None:
        def cancel():
            if self._idle_handle is not None:
                self._idle_handle.cancel()
                self._idle_handle = None
        if not self.closed:
            self._loop.call_soon_threadsafe(cancel)

    def close(self) -> None:
        """Closes the client and stops the loop; the engine cannot be used afterwards."""
        if self.closed:
            return
        self.closed = True
        self._unsubscribe()
        try:
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(timeout=5)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def submit(self, ticket: Ticket) -> concurrent.futures.Future:
        """Schedules one ticket; the future resolves to a Result or a DeadLetter, never raises."""
        return asyncio.run_coroutine_threadsafe(self._handle(ticket), self._loop)

    def _request(self, messages) -> Dict[str, Any]:
        """The request's parameters (without transport settings such as the timeout)."""
        c = self.config
        request: Dict[str, Any] = {"model": c.model, "messages": messages,
                                   "max_tokens": c.max_tokens}
        if c.temperature is not None:
            request["temperature"] = c.temperature
        if self._response_format is not None:
            request["response_format"] = self._response_format
        return request

    def interrupted(self, ticket: Ticket) -> DeadLetter:
        """The dead letter of a ticket never sent because the run is stopping."""
        return self._dead_letter(ticket, _TicketTrace(), errors.Interrupted(
            "the run was stopped before this ticket was sent; replay it"))

    async def _handle(self, ticket: Ticket):
        try:
            messages = self._prompts.render(ticket)
        except TemplateRenderError as exc:
            return self._dead_letter(ticket, _TicketTrace(), errors.TemplateFailed(str(exc)))
        request = self._request(messages)
        if self._store is None:
            return await self._answer(ticket, request)
        key = request_key(request)
        stored = await asyncio.to_thread(self._store.get, key)
        if stored is not None:
            return self._from_store(ticket, stored)
        waiting = self._inflight.get(key)
        if waiting is not None:
            # An identical request is in flight: share its answer rather than pay twice.
            shared = await asyncio.shield(waiting)
            if shared is not None:
                return self._from_store(ticket, shared)
            return await self._answer(ticket, request)
        future = self._loop.create_future()
        self._inflight[key] = future
        stored = None
        try:
            record = await self._answer(ticket, request)
            if isinstance(record, Result):
                stored = {"content": record.response, "model": record.model,
                          "finish_reason": record.finish_reason,
                          "prompt_tokens": record.prompt_tokens,
                          "completion_tokens": record.completion_tokens,
                          "cost_usd": record.cost_usd, "request_id": record.request_id,
                          "output": record.output, "stored_at": self._wall()}
                try:
                    await asyncio.to_thread(self._store.put, key, stored)
                except Exception as exc:  # noqa: BLE001 - the answer is still returned and written
                    _LOG.warning("response store: could not store a response (%s: %s)",
                                 type(exc).__name__, errors.redact(str(exc), self._secrets))
            return record
        finally:
            del self._inflight[key]
            future.set_result(stored)

    def _from_store(self, ticket: Ticket, stored: Dict[str, Any]) -> Result:
        """A result answered from the store: no request, no cost."""
        now = self._wall()
        return Result(
            id=ticket.id, response=stored.get("content") or "",
            model=stored.get("model") or self.config.model,
            finish_reason=stored.get("finish_reason"),
            prompt_tokens=int(stored.get("prompt_tokens") or 0),
            completion_tokens=int(stored.get("completion_tokens") or 0),
            latency_ms=0.0, attempts=0, started_at=now, finished_at=now, ticket=ticket.fields,
            request_id=stored.get("request_id"), cost_usd=0.0, cached=True,
            output=stored.get("output"))

    async def _answer(self, ticket: Ticket, request: Dict[str, Any]):
        """Calls (with retries, and one repair for an invalid structured answer).

        Returns:
          A Result, or a DeadLetter; never raises.
        """
        c = self.config
        if self._stop_event.is_set():
            return self.interrupted(ticket)
        trace = _TicketTrace()
        started = self._wall()
        deadline = self._clock() + c.max_ticket_secs
        output = None
        try:
            completion, request_id = await self._call(ticket, request, trace, deadline)
            if self._validator is not None:
                completion, request_id, output = await self._structured(
                    ticket, request, completion, request_id, trace, deadline)
        except errors.ProviderError as exc:
            return self._dead_letter(ticket, trace, exc)
        except Exception as exc:  # noqa: BLE001 - a bad item never raises out of the DoFn
            wrapped = errors.ProviderError(
                errors.redact(f"internal error: {type(exc).__name__}: {exc}", self._secrets))
            wrapped.reason = "internal_error"
            return self._dead_letter(ticket, trace, wrapped)
        choice = completion.choices[0]
        return Result(
            id=ticket.id, response=choice.message.content or "", model=completion.model or c.model,
            finish_reason=choice.finish_reason,
            prompt_tokens=trace.prompt_tokens, completion_tokens=trace.completion_tokens,
            latency_ms=trace.latency_ms, attempts=trace.attempts, started_at=started,
            finished_at=self._wall(), ticket=ticket.fields, request_id=request_id, output=output,
            cost_usd=trace.cost, retries=trace.retries, rate_limited=trace.rate_limited,
            server_errors=trace.server_errors, timeouts=trace.timeouts,
            throttled_secs=trace.throttled)

    async def _call(self, ticket: Ticket, request: Dict[str, Any], trace: _TicketTrace,
                    deadline: float):
        """One logical request with its retries; returns (completion, request id) or raises."""
        c = self.config

        def before_sleep(state) -> None:
            trace.retries += 1
            exc = state.outcome.exception()
            if isinstance(exc, errors.RateLimited):
                trace.throttled += state.upcoming_sleep or 0.0
            event(_LOG, logging.DEBUG, "retry", ticket=ticket.id, attempt=state.attempt_number,
                  reason=getattr(exc, "reason", type(exc).__name__),
                  status=getattr(exc, "status", None), wait_secs=state.upcoming_sleep or 0.0)

        trace.call_attempts = 0
        retrying = c.retry.retrying(deadline=deadline, clock=self._clock, rng=self._rng,
                                    sleep=self._sleep, before_sleep=before_sleep)
        async for attempt in retrying:
            with attempt:
                completion, request_id = await self._attempt(request, trace, deadline)
        return completion, request_id

    async def _structured(self, ticket: Ticket, request: Dict[str, Any], completion, request_id,
                          trace: _TicketTrace, deadline: float):
        """Validates the answer; an invalid one is sent back ONCE with the error to be fixed.

        Returns:
          (completion, request id, output) of the valid answer.

        Raises:
          errors.InvalidOutput: when the repaired answer is invalid too (it holds the text).
        """
        answer = completion.choices[0].message.content or ""
        output, problem = self._validator.check(answer)
        if problem is None:
            return completion, request_id, output
        _LOG.debug("ticket %s: invalid output (%s), asking for a correction", ticket.id, problem)
        repair = {**request, "messages": repair_messages(request["messages"], answer, problem)}
        completion, request_id = await self._call(ticket, repair, trace, deadline)
        answer = completion.choices[0].message.content or ""
        output, problem = self._validator.check(answer)
        if problem is None:
            return completion, request_id, output
        exc = errors.InvalidOutput(f"invalid output after one repair: {problem}",
                                   request_id=request_id)
        exc.raw_output = answer
        raise exc

    def _reserve_budget(self, cost: float) -> None:
        """Reserves the most a request may cost, or refuses it when the budget would be passed.

        Reserving the upper bound (prompt estimate + max_tokens) before sending means the spend
        never passes --max_cost_usd, however many requests are in flight.
        """
        budget = self.config.max_cost_usd
        if budget is None:
            return
        if self._spent + self._reserved + cost > budget:
            raise errors.BudgetExhausted(
                f"--max_cost_usd budget of this worker (${budget:.6f}) reached: "
                f"${self._spent:.6f} spent, ${self._reserved:.6f} in flight")
        self._reserved += cost

    async def _attempt(self, request: Dict[str, Any], trace: _TicketTrace, deadline: float):
        c = self.config
        async with self._semaphore:
            if self._stop_event.is_set():
                raise errors.Interrupted("the run was stopped before this ticket was sent; "
                                         "replay it")
            # The schema travels with every request and providers count it as prompt.
            prompt_estimate = (estimate_prompt_tokens(request["messages"], self._chars_per_token)
                               + self._schema_tokens)
            reserved = c.price.cost(prompt_estimate, c.max_tokens)
            self._reserve_budget(reserved)
            try:
                return await self._send(request, trace, deadline, prompt_estimate)
            finally:
                if c.max_cost_usd is not None:
                    self._reserved -= reserved

    async def _send(self, request, trace: _TicketTrace, deadline: float, prompt_estimate: int):
        c = self.config
        messages = request["messages"]
        trace.throttled += await self._limiter.acquire(prompt_estimate + c.max_tokens)
        if self._stop_event.is_set():
            raise errors.Interrupted("the run was stopped before this ticket was sent; replay it")
        timeout = min(c.request_timeout_secs, deadline - self._clock())
        if timeout <= 0:
            raise errors.RequestTimeout("per-ticket deadline reached before the request")
        trace.attempts += 1
        trace.call_attempts += 1
        now = self._wall()
        trace.first_at = trace.first_at or now
        trace.last_at = now
        sent = self._clock()
        # A task of its own, so that an abort (after --drain_secs) cancels just the request.
        call = asyncio.ensure_future(
            self._client.chat.completions.with_raw_response.create(**request, timeout=timeout))
        self._requests_in_flight.add(call)
        progress.STATS.in_flight(1)
        try:
            raw = await call
            completion = raw.parse()
            if not completion.choices or completion.choices[0].message is None:
                raise ValueError("response has no choices")
        except asyncio.CancelledError:
            if call.cancelled() and interrupt.aborting():
                raise errors.Interrupted(
                    "the run was stopped and --drain_secs ran out while this request was in "
                    "flight; replay it") from None
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to our typed errors right here
            err = errors.from_openai(exc, self._secrets)
            self._note_first(err)
            if isinstance(err, errors.RateLimited):
                trace.rate_limited += 1
                self._limiter.on_rate_limited(err.retry_after)
            elif isinstance(err, errors.ServerError):
                trace.server_errors += 1
            elif isinstance(err, errors.RequestTimeout):
                trace.timeouts += 1
            raise err from None
        finally:
            self._requests_in_flight.discard(call)
            progress.STATS.in_flight(-1)
        trace.latency_ms = (self._clock() - sent) * 1000.0
        self._limiter.observe_headers(raw.headers)
        self._limiter.on_success()
        usage = completion.usage
        if usage is not None:
            trace.prompt_tokens += usage.prompt_tokens or 0
            trace.completion_tokens += usage.completion_tokens or 0
            details = getattr(usage, "prompt_tokens_details", None)
            cached = getattr(details, "cached_tokens", 0) or 0
            cost = c.price.cost(usage.prompt_tokens or 0, usage.completion_tokens or 0, cached)
            trace.cost += cost
            self._spent += cost
        if usage is not None and usage.prompt_tokens:
            # The provider charges prompt + max_tokens at admission; correct only the prompt
            # part of our estimate, and learn the chars-per-token ratio for the next ones.
            # The schema's share is left in: a provider that counts it makes the learnt ratio
            # lower, so estimates err on the high (safe) side.
            self._limiter.correct(prompt_estimate - usage.prompt_tokens)
            chars = sum(len(m["content"]) for m in messages)
            ratio = chars / max(1, usage.prompt_tokens - 3 * len(messages) - 3)
            self._chars_per_token = 0.9 * self._chars_per_token + 0.1 * max(1.0, ratio)
        return completion, raw.headers.get("x-request-id")

    def _note_first(self, err: errors.ProviderError) -> None:
        """Logs the first occurrence of each error class at WARNING (later ones: DEBUG only)."""
        key = (type(err).__name__, err.status)
        if key in self._seen_errors:
            return
        self._seen_errors.add(key)
        event(_LOG, logging.WARNING, "first_error", error_class=type(err).__name__,
              reason=err.reason, http_status=err.status, retryable=err.retryable,
              message=errors.redact(err.message, self._secrets)[:300])

    def _dead_letter(self, ticket: Ticket, trace: _TicketTrace, exc: errors.ProviderError):
        c = self.config
        reason = exc.reason
        if exc.retryable:
            reason = ("retries_exhausted" if trace.call_attempts > c.retry.max_retries
                      else "deadline_exceeded")
        return DeadLetter(
            id=ticket.id, stage=STAGE_LLM, reason=reason, error_class=type(exc).__name__,
            message=errors.redact(exc.message, self._secrets), http_status=exc.status,
            attempts=trace.attempts, first_attempt_at=trace.first_at,
            last_attempt_at=trace.last_at, ticket=ticket.fields, source=ticket.source,
            line=ticket.line, retries=trace.retries, rate_limited=trace.rate_limited,
            server_errors=trace.server_errors, timeouts=trace.timeouts,
            throttled_secs=trace.throttled, raw_output=getattr(exc, "raw_output", None),
            prompt_tokens=trace.prompt_tokens, completion_tokens=trace.completion_tokens,
            cost_usd=trace.cost)


# Engines of this process, by config fingerprint. Kept across DoFn teardown/setup cycles (runners
# may tear a DoFn down between bundles) so the limiter's state and the connections survive; an
# engine nobody uses for _IDLE_CLOSE_SECS is closed.
_ENGINES: Dict[str, LlmEngine] = {}
_ENGINES_LOCK = threading.Lock()
_IDLE_CLOSE_SECS = 30.0


def acquire_engine(config: LlmConfig, api_key: str) -> LlmEngine:
    """The process's engine for ``config``, created on first use; pair with :func:`release_engine`."""
    key = config.fingerprint()
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None or engine.closed:
            engine = LlmEngine(config, api_key)
            _ENGINES[key] = engine
        engine.users += 1
        engine.cancel_idle_close()
        return engine


def release_engine(engine: LlmEngine) -> None:
    """Drops one user; an engine left unused is closed after a grace period."""
    with _ENGINES_LOCK:
        engine.users -= 1
        if engine.users <= 0:
            engine.schedule_idle_close(_IDLE_CLOSE_SECS, _close_if_idle)


def _close_if_idle(engine: LlmEngine) -> None:
    with _ENGINES_LOCK:
        if engine.users > 0:
            return
        if _ENGINES.get(engine.config.fingerprint()) is engine:
            del _ENGINES[engine.config.fingerprint()]
    engine.close()


class _CallModelFn(beam.DoFn):
    """Submits each ticket of each batch to the process's engine and emits what finishes."""

    def __init__(self, config: LlmConfig):
        self._config = config

    def setup(self):
        config = self._config
        try:
            api_key = resolve_api_key(config)
        except errors.AuthFailed as exc:
            # Every ticket would fail the same way: fail loudly rather than dead-letter millions.
            raise RuntimeError(str(exc)) from None
        self._engine = acquire_engine(config, api_key)
        self._metrics = TicketflowMetrics()
        self._window = max(1, config.max_concurrency)
        self._pending: List[Tuple[concurrent.futures.Future, Any, Any]] = []

    def start_bundle(self):
        self._pending = []

    def process(self, element, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        _, tickets = element
        barrier = self._config.dispatch == DISPATCH_BARRIER
        for ticket in tickets:
            if interrupt.stopping():
                # Stopping: what is still arriving flows through at once, so the ledger balances.
                done: concurrent.futures.Future = concurrent.futures.Future()
                done.set_result(self._engine.interrupted(ticket))
                self._pending.append((done, window, timestamp))
                continue
            while len(self._pending) >= self._window:
                yield from self._drain(block=True)
            self._pending.append((self._engine.submit(ticket), window, timestamp))
        if barrier:
            yield from self._drain(block=True, everything=True)
        else:
            yield from self._drain(block=False)

    def finish_bundle(self):
        yield from self._drain(block=True, everything=True)

    def teardown(self):
        engine = getattr(self, "_engine", None)
        if engine is not None:
            release_engine(engine)
            self._engine = None

    def _drain(self, block: bool, everything: bool = False) -> Iterable:
        if not self._pending:
            return
        if everything:
            concurrent.futures.wait([f for f, _, _ in self._pending])
        elif block:
            concurrent.futures.wait([f for f, _, _ in self._pending],
                                    return_when=concurrent.futures.FIRST_COMPLETED)
        still = []
        for future, window, timestamp in self._pending:
            if not future.done():
                still.append((future, window, timestamp))
                continue
            record = future.result()
            if isinstance(record, Result):
                self._metrics.record_result(record)
                yield WindowedValue(record, timestamp, (window,))
            else:
                self._metrics.record_dead_letter(record)
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG,
                                               WindowedValue(record, timestamp, (window,)))
        self._pending = still


class CallModel(beam.PTransform):
    """Calls the model for every ticket of every batch.

    Input: ``(key, Iterable[Ticket])`` batches. Output: a dict of PCollections, ``results``
    (Result) and ``dead_letter`` (DeadLetter).

    Args:
      config: The LLM configuration (base URL, model, limits, retry policy, concurrency).
    """

    def __init__(self, config: LlmConfig):
        super().__init__()
        self._config = config

    def expand(self, batches):
        outputs = batches | "CallModelWithRetries" >> beam.ParDo(
            _CallModelFn(self._config)).with_outputs(DEAD_LETTER_TAG, main="results")
        return {"results": outputs.results, DEAD_LETTER_TAG: outputs[DEAD_LETTER_TAG]}
