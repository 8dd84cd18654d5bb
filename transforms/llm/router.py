"""The router: one job spread over several endpoints (``--endpoints FILE``).

An :class:`Endpoint` is one deployment as the flow control sees it: its
:class:`~transforms.llm.flow.FlowControl` (caller, limiter or shared quota, breaker, concurrency
window, trial) and its role. The :class:`Router` answers a ticket on the endpoint that can take
it soonest *now* — the primary whose limiter would admit it first given the tickets already
queued on it, its window not full, its breaker closed — so tickets spread over the primaries in
proportion to their capacity (not round-robin). A ticket whose endpoint answers 429 or 5xx, or
whose breaker opens, goes to another endpoint at once instead of waiting; fallbacks are used only
while every primary is out (breaker open, paused by a 429, or convicted by its trial). When every
endpoint is out, the ticket waits for the first to come back (at most ``max_outage_secs``).

With one endpoint, :meth:`Router.answer` is that endpoint's ``FlowControl.answer``: the job runs
exactly as without a router.

Example::

    router = Router([Endpoint(flow_a), Endpoint(flow_b, role="fallback")], config)
    answer = await router.answer(request, trace)   # trace.endpoint: who answered
"""

from __future__ import annotations

import math
import random
import time
from typing import Callable, List, Optional, Sequence

from transforms import errors
from transforms.limits.breaker import CLOSED, OUTAGE_KINDS
from transforms.llm.caller import Answer, Request
from transforms.llm.config import LlmConfig
from transforms.llm.flow import EndpointOut, FlowControl
from transforms.llm.trace import CallTrace

PRIMARY, FALLBACK = "primary", "fallback"
# Without a rate limit an endpoint's capacity is its window: a full window of requests takes
# about this long to clear (a guess at a request's latency; only compared between endpoints).
_WINDOW_SECS = 1.0
# Longest wait in one go while every endpoint is out (a stop or a return is noticed sooner).
_POLL_SECS = 1.0


class Endpoint:
    """One deployment: its flow control, its role, and the tickets routed to it now.

    Args:
      flow: The endpoint's flow control (its config names it: ``endpoint_name``).
      role: ``primary`` or ``fallback``.
    """

    def __init__(self, flow: FlowControl, role: Optional[str] = None):
        self.flow = flow
        self.config: LlmConfig = flow.config
        self.name = self.config.endpoint_name or (self.config.base_url or "default")
        self.role = role or self.config.endpoint_role or PRIMARY
        self.pending = 0  # tickets routed here and not finished (waiting or in flight)

    def out_for(self, now: float) -> float:
        """Seconds until this endpoint may take a request again (0: it can now; inf: never)."""
        if self.flow.misconfigured is not None:
            return math.inf
        limiter = self.flow.limiter
        local = getattr(limiter, "fallback", None) or limiter  # the shared quota's local share
        paused = max(0.0, getattr(local, "paused_until", 0.0) - now)
        return max(paused, self.flow.breaker.ready_in())

    def window(self) -> int:
        """Its in-flight limit now: the fixed number, or what ``auto`` chose."""
        adaptive = getattr(self.flow, "concurrency", None)
        return adaptive.limit if adaptive is not None else self.config.max_concurrency

    def wait_secs(self, tokens: float) -> float:
        """About how long a new ticket would wait here, with what is already routed here."""
        c = self.config
        factor = getattr(self.flow.limiter, "factor", 1.0)
        queued = self.pending + 1
        # Until its first answer an endpoint takes only a few requests (its trial): one that
        # has answered is preferred meanwhile (a dead one is not waited for in a queue).
        wait = _WINDOW_SECS if self.flow.trial.full() else 0.0
        if c.worker_requests_per_sec <= 0 and c.worker_tokens_per_sec <= 0:
            return wait + queued / self.window() * _WINDOW_SECS  # no rate limit: the window
        rate_wait = 0.0
        if c.worker_requests_per_sec > 0:
            rate_wait = queued / (c.worker_requests_per_sec * factor)
        if c.worker_tokens_per_sec > 0:
            rate_wait = max(rate_wait, queued * tokens / (c.worker_tokens_per_sec * factor))
        return wait + rate_wait


class Router:
    """Spreads tickets over endpoints by the capacity each has now; moves a failed one.

    Args:
      endpoints: The endpoints, primaries and fallbacks.
      clock: Monotonic clock.
      sleep: Awaitable sleep cut short by a stop (default: the first endpoint's ``flow.sleep``).
      rng: Backoff jitter (seeded by the first endpoint's ``seed``).
    """

    def __init__(self, endpoints: Sequence[Endpoint], *,
                 clock: Callable[[], float] = time.monotonic, sleep=None,
                 rng: Optional[random.Random] = None):
        if not endpoints:
            raise ValueError("a router needs at least one endpoint")
        self.endpoints: List[Endpoint] = list(endpoints)
        self.primaries = [e for e in self.endpoints if e.role == PRIMARY]
        self.fallbacks = [e for e in self.endpoints if e.role != PRIMARY]
        self.config = self.endpoints[0].config
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random(self.config.seed)

    @property
    def misconfigured(self) -> Optional[str]:
        """The first endpoint convicted by its trial, named (the job fails on it)."""
        for e in self.endpoints:
            if e.flow.misconfigured is not None:
                prefix = f"endpoint {e.name}: " if len(self.endpoints) > 1 else ""
                return prefix + e.flow.misconfigured
        return None

    def pick(self, tokens: float, avoid=()) -> Optional[Endpoint]:
        """The endpoint for a ticket now, or None when it must wait.

        The primaries that are up compete on :meth:`Endpoint.wait_secs`; the fallbacks only
        when no primary can take the ticket: every one is out, or just failed this ticket
        (``avoid``: it answered a 429 or 5xx, or did not answer).
        """
        now = self._clock()
        for group in (self.primaries, self.fallbacks):
            choices = [e for e in group if e not in avoid and e.out_for(now) <= 0]
            if choices:
                return min(choices, key=lambda e: (e.wait_secs(tokens), -e.window()))
        return None

    def outage_secs(self) -> float:
        """How long every endpoint has been down (breaker open; 0 while one is not)."""
        return min(math.inf if e.flow.misconfigured is not None else
                   e.flow.breaker.outage_secs() for e in self.endpoints)

    def out_for(self) -> float:
        """Seconds until some endpoint may take a request (0: one can now)."""
        now = self._clock()
        return min(e.out_for(now) for e in self.endpoints)

    async def answer(self, request: Request, trace: CallTrace) -> Answer:
        """One logical request, on whichever endpoint can take it.

        Raises:
          errors.ProviderError: a permanent error at once; the last retryable one when the
            retries or the ticket's deadline ran out; ProviderUnavailable when every endpoint
            was out for more than ``max_outage_secs``.
        """
        if len(self.endpoints) == 1:
            answer = await self.endpoints[0].flow.answer(request, trace)
            return answer
        c = self.config
        tokens = request.max_tokens + request.schema_tokens + sum(
            len(m.get("content") or "") for m in request.messages) / 4.0
        trace.call_attempts = 0
        avoid: set = set()
        failures = 0
        last: Optional[errors.ProviderError] = None
        while True:
            outage = self.outage_secs()
            if outage >= c.max_outage_secs:
                raise errors.ProviderUnavailable(
                    f"every endpoint was out for {outage:.0f} s (more than --max_outage_secs="
                    f"{c.max_outage_secs:g}); replay it")
            endpoint = self.pick(tokens, avoid)
            if endpoint is None:
                await self._wait(trace, failures, last, avoid)
                continue
            endpoint.pending += 1
            try:
                completion = await endpoint.flow.try_once(request, trace)
            except EndpointOut:
                avoid.add(endpoint)  # another ticket took its probe
                continue
            except errors.ProviderError as err:
                if not err.retryable:
                    raise
                if err.reason in OUTAGE_KINDS and endpoint.flow.breaker.state != CLOSED:
                    trace.call_attempts -= 1  # the endpoint is down: not the ticket's fault
                if trace.call_attempts > c.retry.max_retries:
                    raise
                last = err
                failures += 1
                trace.retries += 1
                avoid.add(endpoint)
                continue
            finally:
                endpoint.pending -= 1
            trace.endpoint, trace.model = endpoint.name, endpoint.config.model
            return Answer(completion)

    async def _wait(self, trace: CallTrace, failures: int,
                    last: Optional[errors.ProviderError], avoid: set) -> None:
        """Waits while no endpoint can take the ticket: a backoff when the ones that are up all
        just failed it, else until the first comes back (not the ticket's time: its deadline
        moves on by as much).

        Raises:
          errors.ProviderError: the deadline passed (the last error, or a timeout).
        """
        now = self._clock()
        down = self.out_for()
        if down <= 0:
            # Some are up but failed this ticket: back off as the retry policy says, then
            # try them again.
            secs = self.config.retry.backoff(max(1, failures), self._rng,
                                             getattr(last, "retry_after", None))
            avoid.clear()
        else:
            left = self.config.max_outage_secs - self.outage_secs()
            secs = min(down, _POLL_SECS, max(left, 0.0) + 1e-3)
            trace.deadline += secs
            trace.throttled += secs
        if now + secs > trace.deadline:
            if last is not None:
                raise last
            raise errors.RequestTimeout("per-ticket deadline reached before the request")
        await self._sleep_for(secs)

    async def _sleep_for(self, secs: float) -> None:
        sleep = self._sleep or self.endpoints[0].flow.sleep
        await sleep(secs)
