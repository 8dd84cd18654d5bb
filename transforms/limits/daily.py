"""A daily request cap (``--requests_per_day``, Gemini's RPD): this worker's share, or the job's.

Gemini publishes requests per day beside its per-minute limits, reset at midnight Pacific time.
A batch job that reaches the cap gets nothing more that day, so waiting for the reset (hours) is
never what a batch job wants: once the cap is used up, every ticket not yet sent becomes a
``daily_limit`` dead letter at once (replayable with ``--replay`` after the reset; the response
store keeps what was paid, so nothing is paid twice).

:class:`DailyCap` counts this worker process's share (the job's cap x ``--worker_share``);
:class:`SharedDailyCap` keeps ONE count for every worker of every job on the quota, in the shared
quota's Redis (an atomic INCR on a key named by the day, which expires after it), and falls back
to the local share while Redis is unreachable.

A request is counted when it is sent (after the rate limiter let it go): each attempt counts, as
the provider counts it. :meth:`DailyCap.exhausted` lets a ticket give up before it waits for the
rate limiter at all.

Example::

    cap = DailyCap(per_day=1500)
    if cap.exhausted() or not await cap.take():
        raise errors.DailyLimitReached(...)
"""

from __future__ import annotations

import datetime
import time
from typing import Callable, Optional

#: Where the provider's day starts and ends (Gemini: midnight Pacific time).
DAY_ZONE = "America/Los_Angeles"

TAKE = """
-- KEYS: [1] the day's count. ARGV: [1] the cap, [2] ms the key lives (past the day's end).
-- Returns 1 if a request was counted, 0 if the cap is used up (nothing counted).
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
"""


def _zone():
    try:
        from zoneinfo import ZoneInfo  # pylint: disable=import-outside-toplevel
        return ZoneInfo(DAY_ZONE)
    except Exception:  # noqa: BLE001 - no tz database: Pacific standard time
        return datetime.timezone(datetime.timedelta(hours=-8))


def day_of(wall: float) -> tuple:
    """The provider's day at epoch time ``wall``: (its name, seconds until it ends)."""
    local = datetime.datetime.fromtimestamp(wall, tz=_zone())
    end = datetime.datetime.combine(local.date() + datetime.timedelta(days=1),
                                    datetime.time(0), tzinfo=local.tzinfo)
    return local.date().isoformat(), max(0.0, end.timestamp() - wall)


class DailyCap:
    """A daily request cap kept in this process.

    Args:
      per_day: Requests allowed per day (0: no cap).
      wall: Wall clock (epoch seconds), injected in tests.
    """

    def __init__(self, per_day: float, wall: Callable[[], float] = time.time):
        self.per_day = float(per_day)
        self._wall = wall
        self._day: Optional[str] = None
        self.sent = 0
        self._full = False

    @property
    def unlimited(self) -> bool:
        return self.per_day <= 0

    def _roll(self) -> None:
        day, _ = day_of(self._wall())
        if day != self._day:
            self._day, self.sent, self._full = day, 0, False

    def exhausted(self) -> bool:
        """Whether today's cap is known to be used up (no request need wait for the limiter)."""
        if self.unlimited:
            return False
        self._roll()
        return self._full or self.sent >= self.per_day

    def take_local(self) -> bool:
        """Counts one request if today's cap has room."""
        if self.exhausted():
            return False
        if not self.unlimited:
            self.sent += 1
        return True

    async def take(self) -> bool:
        """Counts one request if today's cap has room (False: it is used up)."""
        return self.take_local()

    def mark_full(self) -> None:
        """The shared count said the day's cap is used up."""
        self._roll()
        self._full = True

    def resets_in(self) -> float:
        """Seconds until the provider's day ends."""
        return day_of(self._wall())[1]


class SharedDailyCap(DailyCap):
    """ONE daily cap for every worker, counted in the shared quota's Redis.

    Args:
      client: A ``redis.asyncio`` client.
      name: The quota's name (:func:`transforms.limits.quota.quota_key`, or ``--quota_key``).
      per_day: The WHOLE cap.
      fallback: This worker's share, counted locally while Redis is unreachable.
      probe_secs: While local, how often Redis is tried again.
      clock: Monotonic clock (the fallback's probes). wall: Wall clock (the day).
    """

    def __init__(self, client, name: str, per_day: float, fallback: DailyCap, *,
                 probe_secs: float = 3.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        # pylint: disable=import-outside-toplevel
        from transforms.limits.quota import PREFIX, FallbackState
        super().__init__(per_day, wall)
        self.client, self.fallback = client, fallback
        self._base = f"{PREFIX}:quota:{{{name}}}:day"
        self._script = client.register_script(TAKE)
        self._fb = FallbackState(f"daily cap of quota {name!r}", probe_secs, clock)

    using_fallback = property(lambda self: self._fb.using)
    fallback_events = property(lambda self: self._fb.events)
    fallback_secs = property(lambda self: self._fb.secs)

    async def take(self) -> bool:
        # pylint: disable=import-outside-toplevel
        from transforms.limits.quota import REDIS_ERRORS
        if self.exhausted():
            return False
        if self._fb.using and not self._fb.probe_due():
            return self.fallback.take_local()
        day, left = day_of(self._wall())
        try:
            taken = await self._script(keys=[f"{self._base}:{day}"],
                                       args=[int(self.per_day), int(left * 1000) + 3_600_000])
        except REDIS_ERRORS as exc:
            if self._fb.using:
                self._fb.failed_probe()
            else:
                self._fb.enter(exc)
            return self.fallback.take_local()
        self._fb.leave()
        if not int(taken):
            self.mark_full()
            return False
        self.sent += 1
        return True
