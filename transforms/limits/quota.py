"""One quota for every worker of every job: a rate limiter and a budget shared through Redis.

With ``--shared_quota redis://HOST:PORT[/DB]`` every worker process of every job that names the
same quota paces its requests against ONE quota kept in Redis (Memorystore on GCP), instead of
against a static per-worker share. :class:`SharedRateLimiter` has the interface of
:class:`transforms.limits.limiter.AdaptiveRateLimiter`;
:class:`~transforms.limits.shared_budget.SharedBudget` is the job-wide ``--max_cost_usd``. Both go
on with a local stand-in at the static per-worker share when Redis is unreachable (one WARNING,
counted in ``fallback_events`` / ``fallback_secs``) and come back to the shared quota when it
answers again (probed every ``probe_secs``, not on every request).

One atomic Lua script charges a request against requests/s, tokens/s, input tokens/s and output
tokens/s together (each set limit is one more TAT) with GCRA on Redis's clock
(:mod:`transforms.limits.quota_scripts` states the contract). Keys are
``ticketflow:quota:{NAME}:...`` (the braces keep a quota's keys in one Redis Cluster slot) and
expire once idle. :func:`quota_key` names a quota from base URL + model + a fingerprint of the
API key, never the key. With ``--quota_priority`` a higher priority is admitted first and a lower
one takes what is left (:mod:`transforms.limits.priorities`); a job that declares a lower limit
than the quota's keeps to its own.

Why redis-py (``redis.asyncio``) and a short script of our own rather than ``throttled-py``:
throttled-py's GCRA limits ONE key per call, so requests and tokens would be two calls (a request
could be charged on one limit and refused by the other); it has no way to credit tokens back after
the provider reports real usage, no shared pause, and no budget. The script here is ~30 lines;
redis-py is Redis's own maintained client, which throttled-py itself builds on.

Example::

    client = connect("redis://10.0.0.3:6379/0")
    local = AdaptiveRateLimiter(rps / workers, tps / workers)
    limiter = SharedRateLimiter(client, quota_key(base_url, model, api_key), rps, tps, local)
    waited = await limiter.acquire(prompt_estimate + max_tokens)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
import uuid
from typing import Awaitable, Callable, Optional, Tuple
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from transforms.limits import priorities, quota_scripts
from transforms.limits.limiter import BURST_SECS, KINDS, AdaptiveRateLimiter, Cost, cost_vector
from transforms.limits.priorities import ADMITTED, LANE_PAID, REFUSED

_LOG = logging.getLogger(__name__)
PREFIX = "ticketflow"
# Anything Redis may answer when it is down, restarting, failing over or out of memory.
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
# Public and fixed: it makes our fingerprints useless against tables built for other systems.
_KEY_SALT = b"ticketflow-quota-key-v1"
_KEY_ROUNDS = 20_000
_MIN_WAIT = 1e-4
# How far ahead a worker may reserve its place in the shared quota (one place at a time).
RESERVE_HORIZON_SECS = 30.0


def connect(url: str, timeout_secs: float = 0.5) -> aioredis.Redis:
    """A Redis client that fails fast (short timeouts, no retries: the limiter falls back to its
    local share instead of waiting). Build it on the event loop that will use it."""
    return aioredis.Redis.from_url(url, socket_timeout=timeout_secs,
                                   socket_connect_timeout=timeout_secs,
                                   retry=Retry(NoBackoff(), 0))


def quota_key(base_url: Optional[str], model: str, api_key: Optional[str]) -> str:
    """The default quota name: provider endpoint + model + a fingerprint of the API key.

    The fingerprint is PBKDF2-HMAC-SHA256 of the key with a fixed salt, cut to 64 bits. It cannot
    be turned back into a realistic key: a provider key carries well over 128 random bits, so the
    only way back is trying keys blindly (20,000 hash rounds each), and even then some 2^64 keys
    of 128 bits share each fingerprint. (Only a short, guessable key could be guessed.)

    Args:
      base_url: The API's base URL (None: the provider's default endpoint).
      model: The model name.
      api_key: The API key, or None.

    Returns:
      A name safe for a Redis key, e.g. ``api.example.com/v1|gpt-x|3f2a9c0d1e2b4a5f``.
    """
    parts = urlsplit(base_url or "")
    # hostname drops any user:password@ that a URL may carry.
    endpoint = ((parts.hostname or "") + (f":{parts.port}" if parts.port else "")
                + parts.path.rstrip("/")) or "default"
    fingerprint = "nokey"
    if api_key:
        digest = hashlib.pbkdf2_hmac("sha256", api_key.encode(), _KEY_SALT, _KEY_ROUNDS)
        fingerprint = digest[:8].hex()
    safe = [re.sub(r"[^A-Za-z0-9._/:@-]", "_", part) for part in (endpoint, model)]
    return "|".join(safe + [fingerprint])


class FallbackState:
    """Whether a component runs on its local stand-in, since when, and how often it went there.

    Args:
      what: What falls back, for the log line.
      probe_secs: How long to stay local before trying Redis again.
      clock: Monotonic clock.
    """

    def __init__(self, what: str, probe_secs: float, clock: Callable[[], float]):
        self.what = what
        self.probe_secs = probe_secs
        self._clock = clock
        self.using = False
        self.events = 0
        self._secs = 0.0
        self._since = 0.0
        self.next_probe = 0.0

    @property
    def secs(self) -> float:
        """Seconds spent on the local stand-in so far (the current stretch included)."""
        return self._secs + (self._clock() - self._since if self.using else 0.0)

    def probe_due(self) -> bool:
        return self._clock() >= self.next_probe

    def enter(self, exc: BaseException) -> None:
        """Redis failed: go local (one WARNING per outage, not per request), probe later."""
        now = self._clock()
        self.next_probe = now + self.probe_secs
        if not self.using:
            self.using = True
            self.events += 1
            self._since = now
            _LOG.warning("shared quota: Redis unreachable (%s: %s); %s goes on with its local "
                         "per-worker share and retries Redis every %.0f s", type(exc).__name__,
                         str(exc)[:200], self.what, self.probe_secs)

    def failed_probe(self) -> None:
        self.next_probe = self._clock() + self.probe_secs

    def leave(self) -> None:
        if self.using:
            self.using = False
            self._secs += self._clock() - self._since
            _LOG.info("shared quota: Redis answers again; %s is back on the shared quota "
                      "after %.1f s", self.what, self._clock() - self._since)


class SharedRateLimiter:
    """Requests/s and tokens/s limits shared by every worker through Redis (GCRA).

    Same interface as :class:`AdaptiveRateLimiter`. ``correct``, ``on_rate_limited`` and
    ``observe_limits`` update the local state at once and send the shared part to Redis in a
    task on the running loop (:meth:`flush` awaits those; :meth:`acorrect` is ``correct``
    awaited).

    Args:
      client: A ``redis.asyncio`` client (see :func:`connect`), or None to run locally only.
      name: The quota's name (:func:`quota_key`, or ``--quota_key``).
      requests_per_sec: The WHOLE quota's request rate (0: unlimited).
      tokens_per_sec: The WHOLE quota's token rate (0: unlimited).
      fallback: This worker's limiter at its static share; used while Redis is unreachable, for
        a while after it comes back, and for its 429 backoff factor.
      tau_secs: GCRA burst tolerance; default one request interval: no burst from idle.
      slack: How late a waiter may wake and keep its place, as a fraction of its interval
        (0.5: ~100% of the rate, and at most one request over the limit in any rolling second);
        0 paces strictly (never over, but wake-up lateness is lost: 87-97% of the rate).
      probe_secs: While local, how often Redis is tried again.
      priority: ``--quota_priority``: who is admitted first when the quota's jobs together want
        more than its limit (:mod:`transforms.limits.priorities`).
      job: Names this job's own lane, the same for all its workers (the run id); default: one
        of this limiter's own.
      lanes: How priorities meter and pace.
      clock: Monotonic clock. sleep: Awaitable sleep.
      input_tokens_per_sec, output_tokens_per_sec: The WHOLE quota's input- and output-token
        rates (0: unlimited), each one more TAT charged in the same atomic script.
    """

    def __init__(self, client: Optional[aioredis.Redis], name: str, requests_per_sec: float,
                 tokens_per_sec: float, fallback: AdaptiveRateLimiter, *,
                 tau_secs: Optional[float] = None, slack: float = 0.5, probe_secs: float = 3.0,
                 priority: str = priorities.DEFAULT_PRIORITY, job: Optional[str] = None,
                 lanes: priorities.LanePolicy = priorities.LanePolicy(),
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 input_tokens_per_sec: float = 0.0, output_tokens_per_sec: float = 0.0):
        self.client = client
        self.name = name
        self.fallback = fallback
        self.request_us = 1e6 / requests_per_sec if requests_per_sec > 0 else 0.0
        self.token_us = 1e6 / tokens_per_sec if tokens_per_sec > 0 else 0.0
        self.input_us = 1e6 / input_tokens_per_sec if input_tokens_per_sec > 0 else 0.0
        self.output_us = 1e6 / output_tokens_per_sec if output_tokens_per_sec > 0 else 0.0
        if tau_secs is None:
            tau_secs = 1.0 / requests_per_sec if requests_per_sec > 0 else BURST_SECS
        self.tau_us = tau_secs * 1e6
        self.slack = slack
        # A TAT key outlives its TAT by more than the slack, then expires (an abandoned quota).
        self._spare_ms = 1000 + math.ceil(slack * max(self.tau_us, self.request_us) / 1000)
        base = f"{PREFIX}:quota:{{{name}}}"
        self.keys = {kind: f"{base}:{limit}" for kind, limit in zip(KINDS, priorities.LIMITS)}
        self.keys["pause"] = f"{base}:pause"
        self._us = {"tokens": self.token_us, "input_tokens": self.input_us,
                    "output_tokens": self.output_us}
        self.priority = priority
        priorities.admission_keys(base, priority, "")  # an unknown priority fails here, early
        self._clock = clock
        self._sleep = sleep
        self._fb = FallbackState(f"rate limiter of quota {name!r}", probe_secs, clock)
        # After Redis comes back, the other workers may still be local for up to a probe
        # interval: pay the local share too until they must all be back, so the sum of
        # shared + local sends never passes the limit.
        self._grace_secs = 2 * probe_secs
        self._grace_until = 0.0
        self._lock: Optional[asyncio.Lock] = None
        self._tasks: set = set()
        self.shared_admissions = self.local_admissions = 0
        self.last_admitted_at = 0.0  # Redis's clock (epoch secs): when the latest may go
        if client is None:
            self._fb.using, self._fb.next_probe = True, math.inf
        else:
            self._admit = priorities.Admission(
                client, base, priority, job or uuid.uuid4().hex[:12], request_us=self.request_us,
                token_us=self.token_us, tau_us=self.tau_us, spare_ms=self._spare_ms, slack=slack,
                policy=lanes, input_us=self.input_us, output_us=self.output_us)
            self._correct_script = client.register_script(quota_scripts.CORRECT)
            self._pause_script = client.register_script(quota_scripts.PAUSE)

    # Metrics the flow layer turns into counters / gauges.
    using_fallback = property(lambda self: self._fb.using)
    fallback_events = property(lambda self: self._fb.events)
    fallback_secs = property(lambda self: self._fb.secs)

    async def try_acquire(self, tokens: Cost) -> float:
        """One attempt: takes a slot now, or returns the seconds to wait before trying again."""
        status, wait = await self._step(tokens, horizon_us=0)
        return 0.0 if status == ADMITTED else wait

    async def _step(self, tokens: Cost, horizon_us: float, lane_paid: bool = False
                    ) -> Tuple[int, float]:
        """One attempt: ``(ADMITTED, delay)``: a slot is ours, to use after ``delay`` seconds;
        ``(REFUSED, wait)``: nothing taken, try again after ``wait``; ``(LANE_PAID, wait)``: our
        place in our lanes is taken, ask again with ``lane_paid`` after ``wait``."""
        local = self.fallback
        vector = cost_vector(tokens)
        now = self._clock()
        if now < local.paused_until:
            return REFUSED, local.paused_until - now
        if self._fb.using and not (self._fb.probe_due() and await self._probe()):
            return self._local_step(tokens)
        grace = now < self._grace_until
        if grace:
            wait = max(local.buckets[k].wait_for(c, now) for k, c in zip(KINDS, vector))
            if wait > 0:
                return REFUSED, wait
        try:
            # A 429 cut this worker's rate (factor < 1): its requests weigh more on the shared
            # TATs.
            status, wait_us, now_us = await self._admit(
                vector[1], horizon_us, weight=1.0 / max(local.factor, 1e-3), lane_paid=lane_paid,
                input_tokens=vector[2], output_tokens=vector[3])
        except REDIS_ERRORS as exc:
            self._fb.enter(exc)
            return self._local_step(tokens)
        if status != ADMITTED:
            return status, max(wait_us / 1e6, _MIN_WAIT)
        if grace:
            for kind, cost in zip(KINDS, vector):
                local.buckets[kind].take(cost)
        self.shared_admissions += 1
        self.last_admitted_at = (now_us + wait_us) / 1e6  # when it may go, on Redis's clock
        return ADMITTED, wait_us / 1e6

    def _local_step(self, tokens: Cost) -> Tuple[int, float]:
        wait = self._local(tokens)
        return (ADMITTED if wait <= 0 else REFUSED), max(wait, 0.0)

    async def acquire(self, tokens: Cost, input_tokens: float = 0.0,
                      output_tokens: float = 0.0) -> float:
        """Waits until one request costing ``tokens`` may be sent (FIFO within this process).

        ``input_tokens`` and ``output_tokens`` are charged to the input- and output-token limits
        (as :meth:`AdaptiveRateLimiter.acquire`).

        Returns:
          Seconds spent waiting (throttled).
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        start = self._clock()
        tokens = cost_vector(tokens, input_tokens, output_tokens)[1:]
        async with self._lock:
            lane_paid = False
            while True:
                # A place in the shared queue is reserved in Redis (first come, first served
                # among every worker), then waited for: no herd of workers polling Redis.
                # One reservation per process at a time (its lock), so a pause after a 429
                # holds back at most one reserved request of each process. With lanes (a
                # priority above ours asks, or our job's own limit is lower than the quota's),
                # the place reserved first is in the lanes, then the common limit is asked.
                status, wait = await self._step(tokens, RESERVE_HORIZON_SECS * 1e6, lane_paid)
                lane_paid = lane_paid or status == LANE_PAID
                if wait > 0:
                    await self._sleep(wait)
                if status == ADMITTED:
                    break
        return self._clock() - start

    def correct(self, delta_tokens: float, sent_at: Optional[float] = None,
                kind: str = "tokens") -> None:
        """Credits (positive) or charges (negative) tokens after the provider reported usage.

        ``kind``: ``tokens``, ``input_tokens`` or ``output_tokens`` (which limit).
        """
        if self._fb.using or self._clock() < self._grace_until:
            self.fallback.correct(delta_tokens, sent_at=sent_at, kind=kind)
        if not self._fb.using and delta_tokens and self._us[kind] > 0:
            self._spawn(self._correct_shared(delta_tokens, kind))

    async def acorrect(self, delta_tokens: float, kind: str = "tokens") -> None:
        """:meth:`correct`, awaited."""
        self.correct(delta_tokens, kind=kind)
        await self.flush()

    def on_rate_limited(self, retry_after: Optional[float],
                        sent_at: Optional[float] = None) -> None:
        """A 429: this worker's rate is cut, and EVERY worker pauses for ``retry_after``."""
        self.fallback.on_rate_limited(retry_after, sent_at=sent_at)
        if retry_after:
            self._spawn(self._pause_shared(retry_after))

    def on_success(self, sent_at: Optional[float] = None) -> None:
        """A success: this worker's rate grows back towards the limit."""
        self.fallback.on_success(sent_at=sent_at)

    def observe_limits(self, announced) -> None:
        """A budget announced used up pauses every worker until one request's share is back."""
        before = self.fallback.paused_until
        self.fallback.observe_limits(announced)
        if self.fallback.paused_until > before:
            self._spawn(self._pause_shared(self.fallback.paused_until - self._clock()))

    async def flush(self) -> None:
        """Waits for the updates sent to Redis in the background."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    def _local(self, tokens: float) -> float:
        wait = self.fallback.reserve(tokens)
        self.local_admissions += wait <= 0
        return wait

    async def _probe(self) -> bool:
        try:
            await self.client.ping()
        except REDIS_ERRORS:
            self._fb.failed_probe()
            return False
        self._fb.leave()
        self._grace_until = self._clock() + self._grace_secs
        return True

    async def _correct_shared(self, delta_tokens: float, kind: str = "tokens") -> None:
        try:
            await self._correct_script(keys=[self.keys[kind]],
                                       args=[delta_tokens * self._us[kind], self._spare_ms])
        except REDIS_ERRORS as exc:
            self._fb.enter(exc)

    async def _pause_shared(self, secs: float) -> None:
        if self.client is None or self._fb.using or secs <= 0:
            return
        try:
            await self._pause_script(keys=[self.keys["pause"]], args=[math.ceil(secs * 1000)])
        except REDIS_ERRORS as exc:
            self._fb.enter(exc)

    def _spawn(self, coro) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a synchronous caller): the local state was updated
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
