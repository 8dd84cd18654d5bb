"""Client-side rate limiting: exact pacing for requests and tokens, adapted by the provider.

One :class:`AdaptiveRateLimiter` per worker process holds that worker's share of the provider's
requests- and tokens-per-minute, and of its input- and output-tokens-per-minute where it counts
those apart (Anthropic): each limit is its own bucket and window, and the one that binds wins.
A request waits until every limit can pay for it: a token bucket spaces
requests (at most one of burst), and a :class:`SliceWindow` keeps what we sent in any rolling
second (plus a margin for arrival jitter) within a second's share, because providers enforce
per-minute limits over one-second slices too: pacing at the rate lets a 21st request into a
20-per-second slice. Waiters queue in arrival order, but when a second's room is too small for
the first, a later request that fits goes first (at most twice past the same first): served
strictly in order, a second of ~390-token requests was left ~160 tokens short on average.

It learns from the provider. A few 429s with a short ``retry-after`` at the configured rate are
slice edges: pause briefly, widen the margin, keep the rate. More of them, a long
``retry-after`` or none at all mean a lower limit (a shared quota, a gateway's own limit): all
pause (growing pauses without ``retry-after``) and the rate is set just under what the provider
admitted lately (:class:`AdmissionLog`), or halved while too little is known; successes probe
back up, fast to just under the last refusal, slowly above. A budget the provider announces used
up (``x-ratelimit-remaining-*: 0``, read by the provider module into :class:`AnnouncedLimit`)
pauses until one request's share of it is back. The arithmetic
(:mod:`transforms.limits.windows`, :meth:`~AdaptiveRateLimiter.reserve_next`) is synchronous and
clock-injected, tested without sleeping; :meth:`~AdaptiveRateLimiter.acquire` is the async
wrapper.

Example::

    limiter = AdaptiveRateLimiter(requests_per_sec=10, tokens_per_sec=5000)
    waited = await limiter.acquire(tokens=estimate)  # seconds spent throttled
    sent_at = clock()
    ...  # the call; then limiter.on_success(sent_at) or limiter.on_rate_limited(ra, sent_at)
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from typing import Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from transforms.limits.policy import (BURST_SECS, KINDS, AnnouncedLimit, Cost, LimitPolicy,
                                      cost_vector)
from transforms.limits.windows import AdmissionLog, SliceWindow, TokenBucket

__all__ = ["AdaptiveRateLimiter", "AdmissionLog", "AnnouncedLimit", "BURST_SECS", "KINDS",
           "LimitPolicy", "SliceWindow", "TokenBucket", "cost_vector"]


class AdaptiveRateLimiter:
    """Requests and tokens limiter for one worker process, adapted by the provider's answers.

    Each of :data:`~transforms.limits.policy.KINDS` with a rate has its own bucket and window; a
    request waits until every one of them can pay for it (the limit that binds wins).

    Args:
      requests_per_sec: This worker's share of the request rate (0: unlimited).
      tokens_per_sec: This worker's share of the token rate (0: unlimited).
      input_tokens_per_sec: Its share of the input-token rate (0: unlimited).
      output_tokens_per_sec: Its share of the output-token rate (0: unlimited).
      clock: Monotonic clock, injected in tests.
      sleep: Awaitable sleep, injected in tests.
      policy: Pacing and adaptation settings.

    Attributes:
      factor: The current rate as a fraction of the configured one.
      paused_until: Clock time before which nothing is sent.
      slice_edges, limit_signals, stale_429s: How the 429s seen so far were read.
    """

    def __init__(self, requests_per_sec: float, tokens_per_sec: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 policy: LimitPolicy = LimitPolicy(), *, input_tokens_per_sec: float = 0.0,
                 output_tokens_per_sec: float = 0.0):
        now = clock()
        self._clock, self._sleep, self.policy = clock, sleep, policy
        rates = (requests_per_sec, tokens_per_sec, input_tokens_per_sec, output_tokens_per_sec)
        self._base: Dict[str, float] = {k: float(r) for k, r in zip(KINDS, rates)}
        self._base_rps, self._base_tps = self._base["requests"], self._base["tokens"]
        self.buckets = {k: TokenBucket(r, r * BURST_SECS, now) for k, r in zip(KINDS, rates)}
        self.margin = policy.slice_margin_secs
        self.slices = {k: SliceWindow(policy.slice_secs + self.margin, 0.0) for k in KINDS}
        self.requests, self.tokens = self.buckets["requests"], self.buckets["tokens"]
        self.request_slice, self.token_slice = self.slices["requests"], self.slices["tokens"]
        # The mean cost of a request, per kind (None until one was taken), and the one applied.
        self._mean_cost: Dict[str, Optional[float]] = {k: None for k in KINDS}
        self._mean_cost["requests"] = 1.0
        self._applied_cost: Dict[str, Optional[float]] = dict(self._mean_cost)
        self._admissions = AdmissionLog(policy.learn_window_secs, policy.min_learn_secs)
        self.factor = 1.0
        self.paused_until, self._pause_started = now, now - 1.0
        self._ceiling = math.inf  # factor the provider last refused (probe fast below it)
        self._streak = 0  # 429s without retry-after since the last success: the pause doubles
        self._recent_short: collections.deque = collections.deque()
        self.slice_edges = self.limit_signals = self.stale_429s = 0
        self._queue: List[Tuple[float, asyncio.Future]] = []  # waiters, in arrival order
        self._pacer: Optional[asyncio.Future] = None
        self._waiting = 0
        self._overtaken = 0  # times the first waiter was passed over
        self._idle_since: Optional[float] = None
        self._apply(now)

    @property
    def requests_per_sec(self) -> float:
        """The request rate now allowed: the configured one times ``factor``."""
        return self._base_rps * self.factor

    @property
    def tokens_per_sec(self) -> float:
        return self._base_tps * self.factor

    def reserve(self, tokens: Cost) -> float:
        """Takes a slot now if possible; otherwise returns the seconds to wait before trying again.

        Args:
          tokens: The combined tokens, or (tokens, input tokens, output tokens).

        Returns:
          0.0 when the request and its tokens were taken, else a positive wait.
        """
        return self.reserve_next([tokens])[1]

    def reserve_next(self, costs: Sequence[Cost]) -> Tuple[Optional[int], float]:
        """Takes a slot for the first of the waiting ``costs`` (arrival order), or a later one.

        The largest of the first ``policy.overtake_lookahead`` that fits now goes first (a later
        one only if larger than the first, or if the first does not fit yet), so the window is
        not left part empty for want of a request that fits; the first is passed over at most
        ``policy.max_overtakes`` times, so it is never starved.

        Returns:
          (index of the waiter that was given its slot, 0.0), or (None, seconds to wait).
        """
        now = self._clock()
        vectors = [cost_vector(cost) for cost in costs[:self.policy.overtake_lookahead]]
        sizes = [sum(vector[1:]) for vector in vectors]
        wait = self._wait(vectors[0], now)
        best = 0 if wait <= 0 else None
        if (self._overtaken < self.policy.max_overtakes and now >= self.paused_until
                and any(self.slices[k].budget > 0 for k in KINDS[1:])):
            # (Without a token limit, costs do not matter.) The largest that fits leaves the
            # least room unused. (One no smaller than the first cannot fit before the first
            # does; a smaller one may, and the wait is the soonest.)
            for index in range(1, len(vectors)):
                cost = sizes[index]
                if cost >= sizes[0] if best is None else cost <= sizes[best]:
                    continue
                ready = self._wait(vectors[index], now)
                if ready <= 0:
                    best = index
                elif best is None:
                    wait = min(wait, ready)
        if best is None:
            return None, wait
        self._take(vectors[best], now)
        self._overtaken = 0 if best == 0 else self._overtaken + 1
        return best, 0.0

    def _wait(self, vector: Sequence[float], now: float) -> float:
        if now < self.paused_until:
            return self.paused_until - now
        return max(max(self.buckets[k].wait_for(c, now), self.slices[k].wait_for(c, now))
                   for k, c in zip(KINDS, vector))

    def _take(self, vector: Sequence[float], now: float) -> None:
        for kind, cost in zip(KINDS, vector):
            if cost > 0 and kind != "requests":
                self._learn_cost(kind, cost, now)
            self.buckets[kind].take(cost)
            self.slices[kind].add(now, cost)
        self._admissions.grant(now, *vector[1:])

    async def acquire(self, tokens: Cost, input_tokens: float = 0.0,
                      output_tokens: float = 0.0) -> float:
        """Waits until one request costing ``tokens`` may be sent.

        Args:
          tokens: Its combined token estimate (input + ``max_tokens``).
          input_tokens: Its input estimate (charged to the input-token limit).
          output_tokens: Its ``max_tokens`` (reserved on the output-token limit).

        Waiters queue in arrival order; one pacing task hands out the slots
        (:meth:`reserve_next`: a later, larger request that fits may go first, a bounded number
        of times).

        Returns:
          Seconds spent waiting (throttled).
        """
        start = self._clock()
        if self._waiting == 0 and self._idle_since is not None:
            self._admissions.idle(self._idle_since, start)  # nobody asked: not the limit
        self._waiting += 1
        cost = cost_vector(tokens, input_tokens, output_tokens)[1:]
        try:
            if self._queue or self.reserve(cost) > 0:
                waiter = (cost, asyncio.get_running_loop().create_future())
                self._queue.append(waiter)
                if self._pacer is None or self._pacer.done():
                    self._pacer = asyncio.ensure_future(self._pace())
                try:
                    await waiter[1]
                finally:
                    if not waiter[1].done() or waiter[1].cancelled():  # leave the queue
                        waiter[1].cancel()
                        if waiter in self._queue:
                            self._queue.remove(waiter)
        finally:
            self._waiting -= 1
            if self._waiting == 0:
                self._idle_since = self._clock()
        return self._clock() - start

    async def _pace(self) -> None:
        """Gives the queued waiters their slots, sleeping while none fits; ends when none waits."""
        queue, lookahead = self._queue, self.policy.overtake_lookahead
        try:
            while queue:
                if any(future.done() for _, future in queue[:lookahead]):  # cancelled
                    queue[:] = [waiter for waiter in queue if not waiter[1].done()]
                    continue
                index, wait = self.reserve_next([cost for cost, _ in queue[:lookahead]])
                if index is None:
                    await self._sleep(wait)
                    continue
                _, future = queue.pop(index)
                future.set_result(None)
        except BaseException as error:  # nobody may wait forever on a pacer that is gone
            failure = error if isinstance(error, Exception) else RuntimeError("limiter stopped")
            for _, future in queue:
                if not future.done():
                    future.set_exception(failure)
            queue.clear()
            if failure is not error:
                raise

    def correct(self, delta_tokens: float, sent_at: Optional[float] = None,
                kind: str = "tokens") -> None:
        """Adjusts a token budget by the difference between estimated and reported usage.

        Args:
          delta_tokens: estimated minus actual (positive: we over-charged, tokens come back).
          sent_at: When that request was sent (the clock after :meth:`acquire`); with it the
            one-second window is corrected too, else only the long-run budget.
          kind: ``tokens``, ``input_tokens`` or ``output_tokens``.
        """
        bucket = self.buckets[kind]
        bucket.give_back(delta_tokens, ceiling=bucket.capacity + (self._mean_cost[kind] or 0.0))
        if sent_at is not None:
            window = self.slices[kind]
            window.used(self._clock())
            window.adjust(sent_at, -delta_tokens)

    def on_rate_limited(self, retry_after: Optional[float], sent_at: Optional[float] = None
                        ) -> None:
        """A 429 came back: a slice edge (pause briefly) or a lower limit (pause, learn the rate).

        Args:
          retry_after: Seconds the provider asked for (None: it did not say).
          sent_at: When the refused request was sent. A 429 of a request sent before the last
            reaction teaches nothing new; without ``sent_at``, one arriving during a pause is
            taken as such.
        """
        p = self.policy
        now = self._clock()
        self._admissions.refuse(now)
        if sent_at < self._pause_started if sent_at is not None else now < self.paused_until:
            self.stale_429s += 1
            return
        if retry_after is not None:
            retry_after = min(max(0.0, retry_after), p.max_pause_secs)
        short = retry_after is None or retry_after <= p.short_retry_after_secs
        while self._recent_short and self._recent_short[0] <= now - p.learn_window_secs:
            self._recent_short.popleft()
        if short:
            self._recent_short.append(now)
        pause = retry_after
        if retry_after is None:
            pause = min(p.max_pause_secs, p.bare_pause_secs * 2 ** self._streak)
            self._streak += 1
        isolated = len(self._recent_short) <= max(
            p.isolated_429s, p.isolated_fraction * self._admissions.grants(now))
        if self.factor >= 1.0 and short and isolated:
            # A slice edge at the configured rate: the rate is right, but a request arrived late
            # enough to share a second with one too many; retry-after says by how much. (A stall
            # longer than any margin we would keep is no reason to keep a wide one.)
            self.slice_edges += 1
            wider = self.margin + (retry_after or 0.0)
            if retry_after is not None:
                self.margin = min(p.max_slice_margin_secs, max(
                    self.margin * p.margin_growth,
                    wider if wider < p.max_slice_margin_secs else self.margin))
                self._apply(now)
        else:
            self.limit_signals += 1
            self._cut(now)
        self._pause(now, pause)

    def on_success(self, sent_at: Optional[float] = None) -> None:
        """A request succeeded: probe the rate back up towards the configured limit.

        Args:
          sent_at: When it was sent; only requests sent after the last pause count (without
            ``sent_at``, those answered after it).
        """
        now = self._clock()
        if (sent_at if sent_at is not None else now) < self.paused_until:
            return  # sent before the pause: no news
        self._streak = 0
        p = self.policy
        if self.margin > p.slice_margin_secs:
            self.margin -= (self.margin - p.slice_margin_secs) * p.margin_decay
            self._apply(now)
        if self.factor < 1.0:
            step = p.fast_probe if self.factor < p.headroom * self._ceiling else p.slow_probe
            self.factor = min(1.0, self.factor * (1.0 + step))
            if self.factor >= 1.0:
                self._ceiling = math.inf
            self._apply(now)

    def observe_limits(self, announced: Mapping[str, AnnouncedLimit]) -> None:
        """Pauses when the provider says a budget is used up, until one request's share is back.

        Args:
          announced: What the provider's answer said of its limits, by kind (``requests``,
            ``tokens``, ``input_tokens``, ``output_tokens``; read from its headers by the
            provider module, e.g. :func:`transforms.llm.providers.openai.limit_headers`).

        ``reset_secs`` is when the WHOLE budget is back (OpenAI: "resets to its initial
        state"): one request's share is back after ``reset x cost / limit``. No pause while our
        own window is full too: then it says nothing new (and pausing idled a job at the limit).
        """
        if not announced:
            return
        now = self._clock()
        for kind, window in self.slices.items():
            state = announced.get(kind)
            if state is None:
                continue
            remaining, reset = state.remaining, state.reset_secs
            cost = self._mean_cost[kind] or math.inf
            if (remaining is None or remaining > 0 or not reset
                    or window.wait_for(cost, now) > 0):
                continue  # room left, or our own window is full too: we wait for it already
            if state.limit is not None and state.limit > 0:
                reset *= min(1.0, cost / state.limit)
            self.paused_until = max(self.paused_until, now + reset)

    def _pause(self, now: float, secs: float) -> None:
        if secs > 0:
            self._pause_started, self.paused_until = now, max(self.paused_until, now + secs)
            self._admissions.pause(now, self.paused_until)

    def _cut(self, now: float) -> None:
        """Sets the rate just under what the provider admitted, or halves it while unknown."""
        p = self.policy
        admitted = self._admissions.admitted(now)
        estimate = None
        if admitted is not None:
            shares = [rate / self._base[kind] for rate, kind in zip(admitted, KINDS)
                      if self._base[kind] > 0]
            estimate = max(shares) if shares else None
        if estimate is not None and p.headroom * estimate < self.factor:
            factor = p.headroom * estimate
            self._ceiling = estimate
        else:
            # Refused at this rate though it seemed admitted, or too little known: back off.
            self._ceiling = self.factor
            factor = self.factor * (p.headroom if estimate is not None else p.decrease)
        self.factor = max(p.min_factor, factor)
        self._apply(now)

    def _learn_cost(self, kind: str, tokens: float, now: float) -> None:
        before = self._mean_cost[kind]
        mean = self._mean_cost[kind] = tokens if before is None else 0.95 * before + 0.05 * tokens
        applied = self._applied_cost[kind]
        if applied is None or abs(mean - applied) > 0.05 * mean:
            self._applied_cost[kind] = mean
            self._apply(now)

    def _apply(self, now: float) -> None:
        """Sets the buckets' rates and the windows' budgets from the factor."""
        p = self.policy
        for kind in KINDS:
            bucket, window, base = self.buckets[kind], self.slices[kind], self._base[kind]
            cost = self._applied_cost[kind]
            if base <= 0:
                continue
            rate = base * self.factor
            bucket.refill(now, cap=2 * bucket.capacity)  # keeps a late waiter's owed refill
            # The bucket spaces requests at the rate; the window, a little slower, is the exact
            # limit: with costs that vary, a bucket alone must stay a whole request under it.
            bucket.rate = rate
            if cost is not None:
                slice_secs = slice_length(rate / cost, p)
                window.seconds = slice_secs + self.margin
                window.budget = rate * slice_secs


def slice_length(per_sec: float, p: LimitPolicy) -> float:
    """The window a rate of ``per_sec`` requests (or requests' worth of tokens) is kept over.

    The provider's own slice, when it holds whole requests: 5 a second at 300/min. A share
    whose slice would lose more than ``1 - slice_whole_fraction`` of it to rounding down (2.5 a
    second admits 2) gets a window holding ``slice_min_requests`` instead. A longer window
    than the provider's slice lets more than a slice's share into one slice: at 300/min a 2 s
    window drew 429s and the cuts they cause, 0.76 of the limit instead of 0.98.
    """
    per_slice = per_sec * p.slice_secs
    if per_slice >= p.slice_min_requests or \
            math.floor(per_slice + 1e-9) >= p.slice_whole_fraction * per_slice:
        return p.slice_secs
    return max(p.slice_secs, p.slice_min_requests / per_sec)
