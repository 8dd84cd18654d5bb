"""The Lua scripts of the shared quota (:mod:`transforms.limits.quota`) and their Python mirror.

Every script reads Redis's own clock (``TIME``), never a worker's, so workers on different
machines agree on time; each runs atomically (Redis runs one script at a time), and is called by
EVALSHA (redis-py's ``Script`` loads it again after a restart answers NOSCRIPT). Times are integer
microseconds; money is integer micro-dollars (INCRBY), so nothing drifts.

GCRA (generic cell rate algorithm) keeps one *theoretical arrival time* (TAT) per limit. A request
costing ``inc`` microseconds of a limit (1 request x the request interval; n tokens x the token
interval) is admitted when ``T + inc - now <= max(tau, inc)``, and the TAT moves to ``T + inc``;
``T`` is the TAT, or ``now`` if the TAT is more than ``slack x max(tau, inc)`` behind (the limit
was idle). ``tau`` is the burst tolerance: with ``tau`` = one request interval and no slack,
requests are strictly paced and any rolling second sees at most ``rate`` of them. But waiters wake
late (timer slack, a busy loop, the round trip), and strict pacing loses that lateness on every
request (3 to 14% of the rate, measured); ``slack`` 0.5 lets a waiter up to half an interval late
keep its place, at the cost of at most one extra request in a rolling second (the trade
:mod:`transforms.limits.limiter` makes too). A cost larger than ``tau`` (a big prompt) waits until
the limit has caught up (``T <= now``), then runs it ahead: debt, as the local token buckets
allow.
:func:`gcra_step` is the same decision in Python, for unit tests with an injected clock.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

# Redis < 5 replicates scripts verbatim, which TIME would make non-deterministic; later versions
# replicate the effects (and ignore this call).
_PREAMBLE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

ACQUIRE = _PREAMBLE + """
-- KEYS: [1] requests TAT, [2] tokens TAT, [3] pause flag.
-- ARGV: [1] us per request (0: unlimited), [2] us per token (0: unlimited), [3] tokens,
--       [4] tau us, [5] ms a TAT key outlives its TAT, [6] slack (a fraction of max(tau, inc)),
--       [7] reservation horizon us (0: none).
-- Returns {1, 0, now} when BOTH limits were charged, or {0, wait_us, now}, charging neither.
-- With a horizon, a request that would wait at most that long is charged at once and told when
-- to go: {1, wait_us, now} (its place is reserved, first come, first served).
local pause = redis.call('PTTL', KEYS[3])
if pause > 0 then return {0, pause * 1000, now} end
local tau = tonumber(ARGV[4])
local slack = tonumber(ARGV[6])
local incs = {tonumber(ARGV[1]), tonumber(ARGV[2]) * tonumber(ARGV[3])}
local new = {}
local wait = 0
for i = 1, 2 do
  if incs[i] > 0 then
    local tat = tonumber(redis.call('GET', KEYS[i]) or now)
    if tat < now - slack * math.max(tau, incs[i]) then tat = now end
    new[i] = tat + incs[i]
    local w = new[i] - now - math.max(tau, incs[i])
    if w > wait then wait = w end
  end
end
-- Less than a microsecond is float rounding (TATs are ~1.8e15 us), not a reason to refuse.
if wait < 1 then wait = 0 end
local horizon = tonumber(ARGV[7] or '0')
if wait > 0 and (horizon <= 0 or wait > horizon) then return {0, math.ceil(wait), now} end
for i = 1, 2 do
  if new[i] then
    redis.call('SET', KEYS[i], string.format('%.0f', new[i]),
               'PX', math.ceil((new[i] - now) / 1000) + tonumber(ARGV[5]))
  end
end
return {1, math.ceil(wait), now}
"""

CORRECT = _PREAMBLE + """
-- KEYS: [1] a TAT. ARGV: [1] us to credit (negative: to charge), [2] ms the key outlives its TAT.
-- Returns the us the TAT is ahead of now afterwards (0: caught up).
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new = tat - tonumber(ARGV[1])
if new <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%.0f', new),
           'PX', math.ceil((new - now) / 1000) + tonumber(ARGV[2]))
return math.ceil(new - now)
"""

PAUSE = """
-- KEYS: [1] pause flag. ARGV: [1] ms. Lengthens the pause, never shortens it. Returns 1 if set.
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
  return 1
end
return 0
"""

BUDGET = _PREAMBLE + """
-- KEYS: [1] spent, [2] reserved (hash worker -> micro$), [3] leases (zset worker -> expiry us),
--       [4] generation of the ledger.
-- ARGV: [1] worker id, [2] generation the worker last saw, [3] the worker's whole spend,
--       [4] its spend not yet in this ledger, [5] micro$ to reserve (0: none),
--       [6] micro$ of its reservations to release, [7] budget, [8] lease us, [9] keys' TTL ms,
--       [10] a new generation id, used if the ledger is new.
-- Returns {admitted (1 also when nothing was asked), generation, spent, reserved}.
local gen = redis.call('GET', KEYS[4])
if not gen then
  gen = ARGV[10]
  redis.call('SET', KEYS[4], gen)
end
-- A ledger the worker has not seen (first use, or Redis restarted empty) is rebuilt from every
-- worker's whole spend; a known one only gets what the worker spent while it was unreachable.
local add = tonumber(ARGV[4])
if gen ~= ARGV[2] then add = tonumber(ARGV[3]) end
if add > 0 then redis.call('INCRBY', KEYS[1], string.format('%.0f', add)) end
-- A worker that died leaves reservations behind; they lapse with its lease.
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('HDEL', KEYS[2], w)
  redis.call('ZREM', KEYS[3], w)
end
local me = ARGV[1]
local release = tonumber(ARGV[6])
if release > 0 then
  local left = tonumber(redis.call('HGET', KEYS[2], me) or 0) - release
  if left > 0 then
    redis.call('HSET', KEYS[2], me, string.format('%.0f', left))
  else
    redis.call('HDEL', KEYS[2], me)
  end
end
local spent = tonumber(redis.call('GET', KEYS[1]) or 0)
local reserved = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do reserved = reserved + tonumber(v) end
local cost = tonumber(ARGV[5])
local ok = 1
if cost > 0 then
  if spent + reserved + cost > tonumber(ARGV[7]) then
    ok = 0
  else
    redis.call('HINCRBY', KEYS[2], me, string.format('%.0f', cost))
    reserved = reserved + cost
  end
end
redis.call('ZADD', KEYS[3], string.format('%.0f', now + tonumber(ARGV[8])), me)
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[9]) end
return {ok, gen, string.format('%.0f', spent), string.format('%.0f', reserved)}
"""


def gcra_step(tats: Sequence[Optional[float]], incs: Sequence[float], tau: float, now: float,
              slack: float = 0.0) -> Tuple[float, List[Optional[float]]]:
    """One admission decision over several limits at once, as :data:`ACQUIRE` makes it.

    Args:
      tats: Each limit's theoretical arrival time (None: no state yet, i.e. caught up).
      incs: What this request costs each limit, in time units (0 or less: that limit is off).
      tau: Burst tolerance, in the same units.
      now: The current time.
      slack: How far behind ``now`` a TAT may be and still count, as a fraction of
        ``max(tau, inc)`` (a waiter that woke late keeps its place); further behind, the limit
        was idle and restarts from ``now``.

    Returns:
      ``(0.0, new_tats)`` when every limit admits the request (charge them all), else
      ``(wait, tats)`` with the time to wait and the state unchanged.
    """
    new: List[Optional[float]] = list(tats)
    wait = 0.0
    for i, inc in enumerate(incs):
        if inc <= 0:
            continue
        idle = tats[i] is None or tats[i] < now - slack * max(tau, inc)
        tat = now if idle else tats[i]
        new[i] = tat + inc
        wait = max(wait, new[i] - now - max(tau, inc))
    # The script counts whole microseconds; here a float rounding must not refuse a request.
    if wait > 1e-9:
        return wait, list(tats)
    return 0.0, new
