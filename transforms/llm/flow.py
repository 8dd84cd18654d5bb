"""Flow control: the one place that decides when a request may go, and what happens after.

:class:`FlowControl` wraps a caller and answers one logical request (with its retries) for one
ticket. In order, around each attempt: the concurrency window (``max_concurrency`` per worker
process), the endpoint's trial (until one request has succeeded only a few go, and if they all
fail the way a wrong base URL, model or key fails, nothing more is sent:
:mod:`transforms.limits.trial`, :attr:`FlowControl.misconfigured`), the budget reservation, the
rate limiter, the per-ticket deadline; after it, the limiter's feedback (429 and its
retry-after, ``x-ratelimit-*`` headers, real usage), the spend, and the chars-per-token learning.
Retries are tenacity's, with our policy (:mod:`transforms.retry`); waits are cut short by a stop
(:mod:`transforms.llm.stop`).

What one ticket's attempts took is kept in a :class:`CallTrace` (mutable, owned by the ticket's
task) and frozen into a :class:`~transforms.records.CallStats` for its record.

Example::

    flow = FlowControl(config, caller, stop)
    await flow.start()                          # on the engine's loop
    trace = CallTrace(deadline=clock() + 600)
    answer = await flow.answer(request, trace)  # or raises a typed error
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Awaitable, Callable, List, Optional

from transforms import errors
from transforms import metrics as metrics_lib
from transforms.limits.breaker import CLOSED, OUTAGE_KINDS, CircuitBreaker, OutageTooLong
from transforms.limits import concurrency as adaptive
from transforms.limits.trial import REFUSE, SEND, EndpointTrial
from transforms.llm.caller import Answer, Caller, Completion, Request
from transforms.llm.config import LlmConfig, misconfigured_message
from transforms.llm.limits import Limits, local_limits
from transforms.llm.providers import limited_input_tokens
from transforms.llm.stop import ABORT, StopSignal
from transforms.llm.tokens import ChargedShare, TokenEstimator
from transforms.logs import event
from transforms.llm.trace import CallTrace

_LOG = logging.getLogger(__name__)

class EndpointOut(Exception):
    """The endpoint cannot take a request now (its breaker is open): a router moves on."""


# An admitted attempt that ended before an answer (cancelled): frees its place in the trial.
_NOT_SENT = errors.Interrupted("not sent")


class FlowControl:
    """Concurrency, budget, rate limit, deadline and retries around a caller.

    One per engine (worker process and endpoint): every ticket of the process shares its window,
    its limiter and its budget.

    Args:
      config: The rates, budget, concurrency, retry policy and price (this worker's share).
      caller: The innermost layer.
      stop: The run's stop signal.
      clock: Monotonic clock (deadlines, limiter, latency).
      wall: Wall clock (attempt timestamps).
      sleep: Awaitable sleep for the limiter and the backoffs (tests pass one that moves a fake
        clock); default: a wait on the loop that a stop cuts short.
      secrets: Strings to redact from logged messages.
    """

    def __init__(self, config: LlmConfig, caller: Caller, stop: StopSignal, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Optional[Callable[[float], Awaitable[None]]] = None, secrets=(),
                 limits: Optional[Callable[..., Limits]] = None):
        self.config = config
        self._make_limits = limits or local_limits
        self._sleep = sleep
        self._caller = caller
        self._stop = stop
        self._clock = clock
        self._wall = wall
        self._secrets = list(secrets)
        self._rng = random.Random(config.seed)
        self._tokens = TokenEstimator()
        # What the input- and output-token limits are charged, as shares of the prompt (cache
        # reads are free on some providers) and of max_tokens.
        self._input_share, self._output_share = ChargedShare(), ChargedShare()
        # Anthropic's input-token limit does not count cache reads: the last answer's reads,
        # left out of what the combined token limit is charged for the next request (corrected
        # after it).
        self._cache_read_hint = 0
        # Wall-clock time with at least one request waiting for the limiter (the summary's
        # "held back"), as opposed to the per-ticket sum of waits (``trace.throttled``).
        self._held = 0.0
        self._held_since = 0.0
        self._limiter_waiters = 0
        self._seen_errors: set = set()
        self._in_flight: set = set()
        self._unsubscribe: Callable[[], None] = lambda: None
        self.trial = EndpointTrial()
        #: Once the trial convicted the configuration: the one line naming what to fix.
        self.misconfigured: Optional[str] = None

    async def start(self) -> None:
        """Makes the loop-bound parts; call once, on the loop that will run the requests."""
        c = self.config
        loop = asyncio.get_running_loop()
        #: ``--max_concurrency auto``: this endpoint's controller (None: a fixed window).
        self.concurrency: Optional[adaptive.AdaptiveConcurrency] = None
        if c.adaptive_concurrency is not None:
            self.concurrency = adaptive.AdaptiveConcurrency(c.adaptive_concurrency,
                                                            clock=self._clock)
            adaptive.register(c.figure_key(), self.concurrency)
            self._semaphore = adaptive.ConcurrencyGate(self.concurrency)
        else:
            self._semaphore = asyncio.Semaphore(c.max_concurrency)
        self._stopped = asyncio.Event()
        self.limits = self._make_limits(c, clock=self._clock, sleep=self.sleep)
        self.limiter, self.budget = self.limits.limiter, self.limits.budget
        self.breaker = CircuitBreaker(clock=self._clock, sleep=self.sleep)

        def on_signal(kind: str) -> None:  # the driver's thread
            loop.call_soon_threadsafe(self._cancel_in_flight if kind == ABORT
                                      else self._on_stop)
        self._unsubscribe = self._stop.subscribe(on_signal)

    def close(self) -> None:
        self._unsubscribe()

    async def aclose(self) -> None:
        """Releases what the limits hold (the shared quota's Redis connection)."""
        await self.limits.aclose()

    def stopping(self) -> bool:
        return self._stopped.is_set() or self._stop.stopping()

    def _on_stop(self) -> None:
        self._stopped.set()
        self.trial.wake()  # tickets waiting for the trial give up their place too

    def _cancel_in_flight(self) -> None:
        self._on_stop()
        for task in list(self._in_flight):
            task.cancel()

    async def sleep(self, secs: float) -> None:
        """Sleeps (for the limiter or a retry's backoff) unless the run stops meanwhile.

        Raises:
          errors.Interrupted: when a stop is requested before or during the wait.
        """
        if not self.stopping() and secs > 0:
            if self._sleep is not None:
                await self._sleep(secs)
            else:
                try:
                    await asyncio.wait_for(self._stopped.wait(), secs)
                except asyncio.TimeoutError:
                    return
        if self.stopping():
            raise errors.Interrupted("the run was stopped while this ticket waited for the rate "
                                     "limiter or a retry; replay it")

    async def answer(self, request: Request, trace: CallTrace) -> Answer:
        """One logical request with its retries.

        Raises:
          errors.ProviderError: the last error, when the retries or the deadline ran out, or at
            once for a permanent one.
        """
        def before_sleep(state) -> None:
            trace.retries += 1
            exc = state.outcome.exception()
            if isinstance(exc, errors.RateLimited):
                trace.throttled += state.upcoming_sleep or 0.0
            event(_LOG, logging.DEBUG, "retry", ticket=trace.ticket_id,
                  attempt=state.attempt_number,
                  reason=getattr(exc, "reason", type(exc).__name__),
                  status=getattr(exc, "status", None), wait_secs=state.upcoming_sleep or 0.0)

        trace.call_attempts = 0
        retrying = self.config.retry.retrying(deadline=trace.deadline, clock=self._clock,
                                              rng=self._rng, sleep=self.sleep,
                                              before_sleep=before_sleep)
        async for attempt in retrying:
            with attempt:
                completion = await self._attempt(request, trace)
        return Answer(completion)

    async def _attempt(self, request: Request, trace: CallTrace) -> Completion:
        """One attempt, as the retry loop counts them.

        While the provider is down (the circuit breaker is open) the ticket waits for it, and a
        request that fails the way an outage fails is not the ticket's fault: it is not counted
        as an attempt, so tickets keep their retries through an outage shorter than
        ``max_outage_secs`` (and the wait does not eat their deadline either).
        """
        while True:
            await self._wait_for_provider(trace)
            try:
                return await self._attempt_once(request, trace)
            except errors.ProviderError as err:
                if err.reason in OUTAGE_KINDS and self.breaker.state != CLOSED:
                    trace.call_attempts -= 1
                    continue
                raise

    async def try_once(self, request: Request, trace: CallTrace) -> Completion:
        """One attempt now, without waiting for the breaker and without retrying: the
        :class:`~transforms.llm.router.Router`'s call, which moves a failed ticket elsewhere.

        Raises:
          EndpointOut: the breaker is open (or another ticket is its probe).
          errors.ProviderError: the attempt's error.
        """
        if self.breaker.before_send() > 0:
            raise EndpointOut(self.config.endpoint_name)
        return await self._attempt_once(request, trace)

    async def _wait_for_provider(self, trace: CallTrace) -> None:
        """Waits while the circuit breaker is open (one probe goes through at a time)."""
        try:
            waited = await self.breaker.wait(max_outage_secs=self.config.max_outage_secs)
        except OutageTooLong as exc:
            raise errors.ProviderUnavailable(
                f"the provider was unreachable for {exc.outage_secs:.0f} s (more than "
                f"--max_outage_secs={self.config.max_outage_secs:g}); replay it") from None
        if waited:
            # Held back by the provider, not by the ticket: signalled as throttling, and the
            # ticket's deadline moves on by as much.
            trace.throttled += waited
            trace.deadline += waited

    async def _attempt_once(self, request: Request, trace: CallTrace) -> Completion:
        c = self.config
        async with self._semaphore:
            if self.stopping():
                raise errors.Interrupted("the run was stopped before this ticket was sent; "
                                         "replay it")
            await self._admit()
            outcome: Optional[errors.ProviderError] = _NOT_SENT
            try:
                prompt_estimate = (self._tokens.estimate(request.messages)
                                   + request.schema_tokens)
                # At most the whole prompt is a cache write (dearer than input at Anthropic).
                reserved = c.price.cost(prompt_estimate, request.max_tokens,
                                        cache_write_tokens=prompt_estimate if c.prompt_cache
                                        else 0, ttl=c.cache_ttl)
                if not await self.budget.reserve(reserved):
                    raise errors.BudgetExhausted(
                        f"--max_cost_usd budget reached (${self.budget.spent_usd:.6f} spent"
                        + (", one budget for the whole job)" if c.shared_quota else
                           f" of this worker's ${c.worker_budget_usd:.6f})"))
                spent = [0.0]
                try:
                    completion = await self._send(request, trace, prompt_estimate, spent)
                finally:
                    await self.budget.settle(reserved, spent[0])
                outcome = None
                return completion
            except errors.ProviderError as err:
                outcome = err
                raise
            finally:
                self._judged(outcome)

    async def _admit(self) -> None:
        """Waits for a place while the endpoint is on trial.

        Raises:
          errors.JobMisconfigured: the trial convicted the configuration: nothing is sent.
          errors.Interrupted: a stop came while waiting.
        """
        while True:
            decision = self.trial.admit()
            if decision == SEND:
                return
            if decision == REFUSE:
                raise errors.JobMisconfigured(self.misconfigured)
            if self.stopping():
                raise errors.Interrupted("the run was stopped before this ticket was sent; "
                                         "replay it")
            await self.trial.wait()

    def _judged(self, outcome: Optional[errors.ProviderError]) -> None:
        """Tells the trial how an admitted attempt ended (None: it succeeded)."""
        if outcome is None:
            self.trial.on_success()
        elif self.trial.on_failure(outcome.reason):
            self.misconfigured = misconfigured_message(
                self.config, outcome, f"the first {self.trial.failed} requests, none succeeded",
                self._secrets)

    def limiter_held_secs(self) -> float:
        """Wall-clock seconds during which some request of this process waited for the limiter."""
        open_interval = self._clock() - self._held_since if self._limiter_waiters else 0.0
        return self._held + open_interval

    async def _acquire(self, tokens: float, input_tokens: float, output_tokens: float) -> float:
        if self._limiter_waiters == 0:
            self._held_since = self._clock()
        self._limiter_waiters += 1
        try:
            return await self.limiter.acquire(tokens, input_tokens, output_tokens)
        finally:
            self._limiter_waiters -= 1
            if self._limiter_waiters == 0:
                self._held += self._clock() - self._held_since

    async def _send(self, request: Request, trace: CallTrace, prompt_estimate: int,
                    spent: List[float]) -> Completion:
        daily = self.limits.daily
        if daily.exhausted():
            raise self._daily_limit()
        limited = prompt_estimate - min(self._cache_read_hint, prompt_estimate)
        estimates = (prompt_estimate, self._input_share.of(prompt_estimate),
                     self._output_share.of(request.max_tokens), limited)
        trace.throttled += await self._acquire(limited + request.max_tokens, *estimates[1:3])
        if self.stopping():
            raise errors.Interrupted("the run was stopped before this ticket was sent; replay it")
        if not await daily.take():
            raise self._daily_limit()
        timeout = min(self.config.request_timeout_secs, trace.deadline - self._clock())
        if timeout <= 0:
            raise errors.RequestTimeout("per-ticket deadline reached before the request")
        trace.attempts += 1
        trace.call_attempts += 1
        trace.note_endpoint(self.config.endpoint_name)
        params = request.params
        if params.get("model") != self.config.model:  # --endpoints: this endpoint's own model
            params = {**params, "model": self.config.model}
        now = self._wall()
        trace.first_at = trace.first_at or now
        trace.last_at = now
        sent = self._clock()
        controller = self.concurrency
        stamp = controller.on_sent() if controller is not None else None
        signal = adaptive.IGNORE  # what the controller learns from this request
        # A task of its own, so that an abort (after --drain_secs) cancels just the request.
        call = asyncio.ensure_future(self._caller.call(params, timeout))
        self._in_flight.add(call)
        metrics_lib.live_in_flight(1)
        try:
            completion, headers = await call
            signal = adaptive.OK
        except asyncio.CancelledError:
            if call.cancelled() and self._stop.aborting():
                raise errors.Interrupted(
                    "the run was stopped and --drain_secs ran out while this request was in "
                    "flight; replay it") from None
            raise
        except errors.ProviderError as err:
            if isinstance(err, (errors.ServerError, errors.RequestTimeout)):
                signal = adaptive.DROP  # 5xx / overloaded / timeout: past the knee
            self._note_first(err)
            trace.count_error(err)
            trace.note_endpoint(self.config.endpoint_name, err)
            self.breaker.on_failure(err.reason, sent)
            if isinstance(err, errors.RateLimited):
                self.limiter.on_rate_limited(err.retry_after, sent_at=sent)
            raise
        finally:
            self._in_flight.discard(call)
            metrics_lib.live_in_flight(-1)
            if controller is not None:
                controller.on_done(stamp, self._clock() - sent,
                                   completion.completion_tokens if signal == adaptive.OK
                                   and completion.usage_known else 0, signal)
        trace.latency_ms = (self._clock() - sent) * 1000.0
        self.breaker.on_success(sent)
        self.limiter.observe_limits(self._caller.limits(headers))
        self.limiter.on_success(sent_at=sent)
        spent[0] = self._account(request, trace, completion, estimates, sent)
        return completion

    def _daily_limit(self) -> errors.DailyLimitReached:
        daily = self.limits.daily
        whose = ("one cap for every worker" if self.limits.shared
                 else f"this worker's share: {daily.per_day:g}")
        return errors.DailyLimitReached(
            f"--requests_per_day={self.config.job_requests_per_day:g} is used up for today "
            f"({whose}); it resets in {daily.resets_in() / 3600:.1f} h, at midnight Pacific "
            "time: replay these tickets (--replay) then")

    def _account(self, request: Request, trace: CallTrace, completion: Completion,
                 estimates: tuple, sent: float) -> float:
        """Tokens and cost of an answer; the limiter's and the estimator's corrections.

        Returns:
          The answer's cost.
        """
        if not completion.usage_known:
            return 0.0
        trace.prompt_tokens += completion.prompt_tokens
        trace.completion_tokens += completion.completion_tokens
        c = self.config
        cost = c.price.cost(completion.prompt_tokens, completion.completion_tokens,
                            completion.cached_tokens, completion.cache_write_tokens,
                            ttl=c.cache_ttl)
        trace.cost += cost
        trace.cache_read_tokens += completion.cached_tokens
        trace.cache_write_tokens += completion.cache_write_tokens
        trace.cache_saved += c.price.cache_saving(completion.cached_tokens,
                                                  completion.cache_write_tokens, c.cache_ttl)
        prompt_estimate, input_estimate, output_estimate, limited = estimates
        if completion.prompt_tokens:
            # The provider charges prompt + max_tokens at admission: correct only the prompt.
            # Where cache reads are free (Anthropic) the limiter was charged ``limited`` (the
            # estimate less the last answer's reads), corrected here.
            charged = limited_input_tokens(c.provider, completion.prompt_tokens,
                                           completion.cached_tokens)
            self._cache_read_hint = completion.prompt_tokens - charged
            self.limiter.correct(limited - charged, sent_at=sent)
            self._tokens.learn(request.messages, completion.prompt_tokens)
            self.limiter.correct(input_estimate - charged, sent_at=sent, kind="input_tokens")
            self._input_share.learn(charged, completion.prompt_tokens)
        # The output-token limit is charged what was produced (Anthropic settles its max_tokens
        # reservation so).
        self.limiter.correct(output_estimate - completion.completion_tokens, sent_at=sent,
                             kind="output_tokens")
        self._output_share.learn(completion.completion_tokens, request.max_tokens)
        return cost

    def _note_first(self, err: errors.ProviderError) -> None:
        """Logs the first occurrence of each error class at WARNING (later ones: DEBUG only)."""
        key = (type(err).__name__, err.status)
        if key in self._seen_errors:
            return
        self._seen_errors.add(key)
        event(_LOG, logging.WARNING, "first_error", error_class=type(err).__name__,
              reason=err.reason, http_status=err.status, retryable=err.retryable,
              message=errors.redact(err.message, self._secrets)[:300])
