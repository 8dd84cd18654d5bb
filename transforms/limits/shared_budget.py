"""The job-wide budget (``--max_cost_usd`` with ``--shared_quota``) in the shared quota's Redis.

Every worker of the job reserves a request's most expensive outcome in ONE ledger before sending
it and settles with the real cost after; the spend never passes the budget however many workers
send at once. Money is integer micro-dollars (INCRBY): nothing drifts. While Redis is unreachable
a worker falls back to its static share (:class:`transforms.limits.quota.FallbackState`), and comes
back when it answers.

Example::

    budget = SharedBudget(connect("redis://10.0.0.3:6379/0"), "job-20261129", 25.0, 25.0 / 16)
    if await budget.reserve(0.002):
        ...; await budget.settle(0.002, actual_usd=0.0013)
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Callable, Optional

import redis.asyncio as aioredis

from transforms.limits import quota_scripts
from transforms.limits.quota import PREFIX, REDIS_ERRORS, FallbackState


def _micros(usd: float) -> int:
    """Micro-dollars, rounded up: the ledger never under-counts a spend."""
    return max(0, math.ceil(round(usd * 1e6, 3)))


class SharedBudget:
    """The job-wide ``--max_cost_usd`` in Redis: reserve an upper bound, settle the real cost.

    Reservations are per worker and leased: a worker that dies stops holding budget after
    ``lease_secs``. If Redis restarts empty, every worker adds its whole spend back to the new
    ledger on its next call, so the spend is not forgotten. While Redis is unreachable the worker
    spends at most ``local_share_usd / budget_usd`` of what was left when it last saw the ledger.

    Args:
      client: A ``redis.asyncio`` client, or None to run locally only.
      name: The budget's name (the job's run id, or the quota's name for a shared budget).
      budget_usd: The whole budget.
      local_share_usd: This worker's static share, the fallback when Redis is unreachable.
      lease_secs: Longer than any request may take. ttl_secs: Idle ledgers expire after this.
    """

    def __init__(self, client: Optional[aioredis.Redis], name: str, budget_usd: float,
                 local_share_usd: float, *, lease_secs: float = 900.0,
                 ttl_secs: float = 7 * 86400.0, probe_secs: float = 3.0,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.name = name
        self.budget_usd = budget_usd
        self._fraction = min(1.0, local_share_usd / budget_usd) if budget_usd > 0 else 0.0
        base = f"{PREFIX}:budget:{{{name}}}"
        self.keys = [f"{base}:spent", f"{base}:reserved", f"{base}:leases", f"{base}:gen"]
        self._worker = uuid.uuid4().hex
        self._lease_us = int(lease_secs * 1e6)
        self._ttl_ms = int(ttl_secs * 1000)
        self._fb = FallbackState(f"budget {name!r}", probe_secs, clock)
        self._gen = ""
        # Micro-dollars: this worker's whole spend; what the ledger has not heard of yet; its
        # shared reservations to release; held in Redis; held locally; spent since going local.
        self._total = self._unsynced = self._release = 0
        self._shared_held = self._local_held = self._local_spent = 0
        self.seen_spent_usd = self.seen_reserved_usd = 0.0  # the ledger, as last seen
        self._lock: Optional[asyncio.Lock] = None
        if client is None:
            self._fb.using, self._fb.next_probe = True, math.inf
        else:
            self._script = client.register_script(quota_scripts.BUDGET)

    using_fallback = property(lambda self: self._fb.using)
    fallback_events = property(lambda self: self._fb.events)
    fallback_secs = property(lambda self: self._fb.secs)
    spent_usd = property(lambda self: self._total / 1e6)

    async def reserve(self, upper_bound_usd: float) -> bool:
        """Reserves the most a request may cost; False when the budget would be passed."""
        cost = _micros(upper_bound_usd)
        if not self._fb.using or self._fb.probe_due():
            if await self._call(reserve=cost):
                self._shared_held += cost
                return True
            if not self._fb.using:
                return False
        allowance = self._fraction * max(
            0.0, self.budget_usd * 1e6 - (self.seen_spent_usd + self.seen_reserved_usd) * 1e6)
        if self._local_spent + self._local_held + cost > allowance:
            return False
        self._local_held += cost
        return True

    async def settle(self, reserved_usd: float, actual_usd: float) -> None:
        """Releases a reservation and records what the request really cost."""
        held, actual = _micros(reserved_usd), _micros(actual_usd)
        if self._shared_held >= held:
            self._shared_held -= held
            self._release += held
        else:
            self._local_held = max(0, self._local_held - held)
        self._total += actual
        self._unsynced += actual
        if self._fb.using:
            self._local_spent += actual
        else:
            await self._call(reserve=0)

    async def _call(self, reserve: int) -> bool:
        """Runs the budget script; on a Redis failure goes local. Returns whether admitted."""
        if self.client is None:
            return False
        if self._lock is None:
            self._lock = asyncio.Lock()
        # One call at a time per worker: each hands the ledger what it has not heard yet, once.
        async with self._lock:
            if self._fb.using and not self._fb.probe_due():
                return False
            unsynced, release = self._unsynced, self._release
            self._unsynced = self._release = 0
            try:
                ok, gen, spent, reserved = await self._script(keys=self.keys, args=[
                    self._worker, self._gen, self._total, unsynced, reserve, release,
                    _micros(self.budget_usd), self._lease_us, self._ttl_ms, uuid.uuid4().hex])
            except REDIS_ERRORS as exc:
                self._unsynced += unsynced
                self._release += release
                if self._fb.using:
                    self._fb.failed_probe()
                else:
                    self._fb.enter(exc)
                return False
        self._gen = gen.decode() if isinstance(gen, bytes) else str(gen)
        self.seen_spent_usd, self.seen_reserved_usd = int(spent) / 1e6, int(reserved) / 1e6
        if self._fb.using:
            self._fb.leave()
            self._local_spent = 0
        return bool(ok)
