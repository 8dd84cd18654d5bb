"""Client-side rate limiting: exact pacing for requests and tokens, adapted by the provider.

One :class:`AdaptiveRateLimiter` per worker process holds that worker's share of the provider's
requests- and tokens-per-minute. A request waits until both can pay for it: a token bucket spaces
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
import dataclasses
import math
import time
from typing import Awaitable, Callable, List, Mapping, Optional, Sequence, Tuple

from transforms.limits.windows import AdmissionLog, SliceWindow, TokenBucket

__all__ = ["AdaptiveRateLimiter", "AdmissionLog", "AnnouncedLimit", "LimitPolicy", "SliceWindow",
           "TokenBucket"]

@dataclasses.dataclass(frozen=True)
class AnnouncedLimit:
    """What a provider's answer announced of one of its limits (any field may be unknown).

    Attributes:
      limit: The whole budget of the limit's window (requests or tokens).
      remaining: What is left of it.
      reset_secs: Seconds until the whole budget is back.
    """
    limit: Optional[float] = None
    remaining: Optional[float] = None
    reset_secs: Optional[float] = None


# The bucket holds this many seconds of its rate at most (about one request): spacing, not bursts.
BURST_SECS = 0.05


@dataclasses.dataclass(frozen=True)
class LimitPolicy:
    """How the limiter paces and adapts (defaults measured with benchmarks/pacing.py).

    Attributes:
      slice_secs: The shortest window a provider enforces its limit over.
      slice_margin_secs: Our window is this much longer, for arrival jitter. A slice edge widens
        it by its ``retry-after`` (how early we were), at least x ``margin_growth``, up to
        ``max_slice_margin_secs``; each success takes ``margin_decay`` of the excess back.
      slice_min_requests: A window holds at least this many mean requests (a small share of the
        limit gets a longer window rather than being rounded down to whole requests).
      short_retry_after_secs: A 429 asking for at most this (or nothing) may be a slice edge...
      isolated_429s: ...if at most this many (or ``isolated_fraction`` of the requests sent)
        came in ``learn_window_secs``, at the configured rate. Else: a lower limit.
      learn_window_secs, min_learn_secs: The admitted rate is estimated over this window, once
        there was this much active sending.
      headroom: The rate is set to this fraction of the admitted rate.
      decrease: The rate's factor while nothing is known.
      min_factor: The rate never drops below this fraction of the configured one.
      fast_probe, slow_probe: Growth per success below ``headroom`` x the rate last refused,
        and above it.
      bare_pause_secs: The pause after a 429 without ``retry-after``; doubles until a success.
      max_pause_secs: Cap on any pause (a longer ``retry-after`` is cut to it).
      max_overtakes: How often the first waiter may be passed over by a later, larger request
        that fits the window (or a smaller one that fits while the first does not yet).
      overtake_lookahead: How many waiters are looked at for that.
    """
    slice_secs: float = 1.0
    slice_margin_secs: float = 0.015
    max_slice_margin_secs: float = 0.06
    margin_growth: float = 1.5
    margin_decay: float = 0.004
    slice_min_requests: float = 10.0
    short_retry_after_secs: float = 2.0
    isolated_429s: int = 2
    isolated_fraction: float = 0.03
    learn_window_secs: float = 10.0
    min_learn_secs: float = 2.0
    headroom: float = 0.95
    decrease: float = 0.5
    min_factor: float = 0.02
    fast_probe: float = 0.01
    slow_probe: float = 0.0005
    bare_pause_secs: float = 0.5
    max_pause_secs: float = 60.0
    max_overtakes: int = 2
    overtake_lookahead: int = 64


class AdaptiveRateLimiter:
    """Requests and tokens limiter for one worker process, adapted by the provider's answers.

    Args:
      requests_per_sec: This worker's share of the request rate (0: unlimited).
      tokens_per_sec: This worker's share of the token rate (0: unlimited).
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
                 policy: LimitPolicy = LimitPolicy()):
        now = clock()
        self._clock, self._sleep, self.policy = clock, sleep, policy
        self._base_rps, self._base_tps = float(requests_per_sec), float(tokens_per_sec)
        self.requests = TokenBucket(requests_per_sec, requests_per_sec * BURST_SECS, now)
        self.tokens = TokenBucket(tokens_per_sec, tokens_per_sec * BURST_SECS, now)
        self.margin = policy.slice_margin_secs
        self.request_slice = SliceWindow(policy.slice_secs + self.margin, 0.0)
        self.token_slice = SliceWindow(policy.slice_secs + self.margin, 0.0)
        self._mean_cost: Optional[float] = None  # of a request's tokens
        self._applied_cost: Optional[float] = None
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

    def reserve(self, tokens: float) -> float:
        """Takes a slot now if possible; otherwise returns the seconds to wait before trying again.

        Returns:
          0.0 when the request and its tokens were taken, else a positive wait.
        """
        return self.reserve_next([tokens])[1]

    def reserve_next(self, costs: Sequence[float]) -> Tuple[Optional[int], float]:
        """Takes a slot for the first of the waiting ``costs`` (arrival order), or a later one.

        The largest of the first ``policy.overtake_lookahead`` that fits now goes first (a later
        one only if larger than the first, or if the first does not fit yet), so the window is
        not left part empty for want of a request that fits; the first is passed over at most
        ``policy.max_overtakes`` times, so it is never starved.

        Returns:
          (index of the waiter that was given its slot, 0.0), or (None, seconds to wait).
        """
        now = self._clock()
        wait = self._wait(costs[0], now)
        best = 0 if wait <= 0 else None
        if (self._overtaken < self.policy.max_overtakes and now >= self.paused_until
                and self.token_slice.budget > 0):  # without a token limit, costs do not matter
            # The largest that fits leaves the least room unused. (One no smaller than the first
            # cannot fit before the first does; a smaller one may, and the wait is the soonest.)
            for index in range(1, min(len(costs), self.policy.overtake_lookahead)):
                cost = costs[index]
                if cost >= costs[0] if best is None else cost <= costs[best]:
                    continue
                ready = self._wait(cost, now)
                if ready <= 0:
                    best = index
                elif best is None:
                    wait = min(wait, ready)
        if best is None:
            return None, wait
        self._take(costs[best], now)
        self._overtaken = 0 if best == 0 else self._overtaken + 1
        return best, 0.0

    def _wait(self, tokens: float, now: float) -> float:
        if now < self.paused_until:
            return self.paused_until - now
        return max(self.requests.wait_for(1.0, now), self.tokens.wait_for(tokens, now),
                   self.request_slice.wait_for(1.0, now), self.token_slice.wait_for(tokens, now))

    def _take(self, tokens: float, now: float) -> None:
        if tokens > 0:
            self._learn_cost(tokens, now)
        self.requests.take(1.0)
        self.tokens.take(tokens)
        self.request_slice.add(now, 1.0)
        self.token_slice.add(now, tokens)
        self._admissions.grant(now, tokens)

    async def acquire(self, tokens: float) -> float:
        """Waits until one request costing ``tokens`` may be sent.

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
        try:
            if self._queue or self.reserve(tokens) > 0:
                waiter = (tokens, asyncio.get_running_loop().create_future())
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

    def correct(self, delta_tokens: float, sent_at: Optional[float] = None) -> None:
        """Adjusts the token budget by the difference between estimated and reported usage.

        Args:
          delta_tokens: estimated minus actual (positive: we over-charged, tokens come back).
          sent_at: When that request was sent (the clock after :meth:`acquire`); with it the
            one-second window is corrected too, else only the long-run budget.
        """
        self.tokens.give_back(delta_tokens)
        if sent_at is not None:
            self.token_slice.used(self._clock())
            self.token_slice.adjust(sent_at, -delta_tokens)

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
          announced: What the provider's answer said of its ``requests`` and ``tokens`` limits
            (read from its headers by the provider module, e.g.
            :func:`transforms.llm.providers.openai.limit_headers`).

        ``reset_secs`` is when the WHOLE budget is back (OpenAI: "resets to its initial
        state"): one request's share is back after ``reset x cost / limit``. No pause while our
        own window is full too: then it says nothing new (and pausing idled a job at the limit).
        """
        if not announced:
            return
        now = self._clock()
        for kind, window in (("requests", self.request_slice), ("tokens", self.token_slice)):
            state = announced.get(kind)
            if state is None:
                continue
            remaining, reset = state.remaining, state.reset_secs
            cost = 1.0 if kind == "requests" else (self._mean_cost or math.inf)
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
            shares = [rate / base for rate, base in zip(admitted, (self._base_rps, self._base_tps))
                      if base > 0]
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

    def _learn_cost(self, tokens: float, now: float) -> None:
        mean = self._mean_cost = (tokens if self._mean_cost is None
                                  else 0.95 * self._mean_cost + 0.05 * tokens)
        if self._applied_cost is None or abs(mean - self._applied_cost) > 0.05 * mean:
            self._applied_cost = mean
            self._apply(now)

    def _apply(self, now: float) -> None:
        """Sets the buckets' rates and the windows' budgets from the factor."""
        p = self.policy
        for bucket, window, base, cost in (
                (self.requests, self.request_slice, self._base_rps, 1.0),
                (self.tokens, self.token_slice, self._base_tps, self._applied_cost)):
            if base <= 0:
                continue
            rate = base * self.factor
            bucket.refill(now, cap=2 * bucket.capacity)  # keeps a late waiter's owed refill
            # The bucket spaces requests at the rate; the window, a little slower, is the exact
            # limit: with costs that vary, a bucket alone must stay a whole request under it.
            bucket.rate = rate
            if cost is not None:
                # A share too small for a slice to hold slice_min_requests gets a longer window.
                slice_secs = max(p.slice_secs, p.slice_min_requests * cost / rate)
                window.seconds = slice_secs + self.margin
                window.budget = rate * slice_secs
