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

Priorities (``--quota_priority``, :mod:`transforms.limits.priorities` says why this way): the
TATs above are the *common* limits, charged by every request of every priority, so the limit stays
exact. A request may also have *lanes*, GCRA TATs it must pass first: its priority's lane while a
higher priority asks (paced at what the higher ones leave, measured by a meter per priority), and
its job's own lane when the job declares a lower limit than the quota's. With no lane (every job
``normal``, one limit declared) the script decides exactly as :func:`gcra_step` does.
:func:`gcra_step` is that decision in Python, for unit tests with an injected clock.
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
-- The limits, in order: requests, tokens, input tokens, output tokens (N = 4).
-- KEYS: [1..4] each limit's TAT (the common limits), [5] pause flag, [6..9] each limit's
--       interval the quota's jobs declared (the smallest lately), [10] this priority's meter,
--       [11] when a request of this priority waits for a free slot until, [12..15] this
--       priority's lane (one TAT per limit), [16..19] this job's own lane, [20...] the meter and
--       the wait of each higher priority, in pairs.
-- ARGV: [1] us per request at this job's limit (0: unlimited), [2] us per token (0: unlimited),
--       [3] tokens, [4] tau us, [5] ms a TAT key outlives its TAT, [6] slack (a fraction of
--       max(tau, inc)), [7] reservation horizon us (0: none), [8] weight (> 1: a 429 cut this
--       worker's rate), [9] 1: this request's lanes are paid, [10] meter time constant us,
--       [11] meter lifetime us, [12] lane tolerance us, [13] least room a lane keeps (a
--       fraction), [14] ms a declared interval lives, [15] now us (0: Redis's clock; tests),
--       [16] how far ahead, in intervals, a priority below one that asks takes a free slot,
--       [17] us per input token (0: unlimited), [18] input tokens, [19] us per output token
--       (0: unlimited), [20] output tokens (max_tokens).
-- Returns {status, wait_us, now}. 1: every limit it needs is charged, go after wait_us (its place
-- is reserved, first come, first served); 0: nothing charged, ask again after wait_us; 2: its
-- lanes are charged (its place in them is reserved), ask again with ARGV[9] = 1 after wait_us.
local given = tonumber(ARGV[15] or '0')
if given > 0 then now = given end
local pause = redis.call('PTTL', KEYS[5])
if pause > 0 then return {0, pause * 1000, now} end
local tau, slack, horizon = tonumber(ARGV[4]), tonumber(ARGV[6]), tonumber(ARGV[7])
local weight, meter_us, meter_life = tonumber(ARGV[8]), tonumber(ARGV[10]), tonumber(ARGV[11])
local paid = ARGV[9] == '1'
local N = 4
local own = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[17] or '0'),
             tonumber(ARGV[19] or '0')}
local cost = {1, tonumber(ARGV[3]), tonumber(ARGV[18] or '0'), tonumber(ARGV[20] or '0')}
local FIELDS = {'r', 't', 'i', 'o'}
-- The quota's limit is the highest any of its jobs declares (the interval is published while
-- that job asks); a job that declares less also keeps to its own, in a lane of its own.
local incs, lanes, common_tau = {0, 0, 0, 0}, {}, tau
for i = 1, N do
  if own[i] > 0 then
    local declared = tonumber(redis.call('GET', KEYS[5 + i]) or '0')
    if declared > 0 and declared < own[i] * (1 - 1e-9) then
      incs[i] = declared * weight * cost[i]
      if incs[i] > 0 then
        lanes[#lanes + 1] = {KEYS[15 + i], own[i] * weight * cost[i], tau, 1}
      end
      if i == 1 then common_tau = tau * declared / own[1] end
    else
      incs[i] = own[i] * weight * cost[i]
      redis.call('SET', KEYS[5 + i], string.format('%.6f', own[i]), 'PX', ARGV[14])
    end
  end
end
local common = {}
for i = 1, N do
  if incs[i] > 0 then common[#common + 1] = {KEYS[i], incs[i], common_tau, slack} end
end
-- A meter: the share of each limit its priority asked for lately (decayed to now; nil once
-- silent for meter_life).
local function meter(key)
  local m = redis.call('HMGET', key, 'at', unpack(FIELDS))
  if not m[1] then return nil end
  local age = now - tonumber(m[1])
  if age > meter_life then return nil end
  local k = math.exp(-math.max(age, 0) / meter_us)
  local out = {}
  for i = 1, N do out[i] = tonumber(m[i + 1] or '0') * k end
  return out
end
local above, busy, yield_until = {0, 0, 0, 0}, false, 0
for k = 20, #KEYS, 2 do
  local m = meter(KEYS[k])
  if m then
    for i = 1, N do above[i] = above[i] + m[i] end
    busy = true
  end
  yield_until = math.max(yield_until, tonumber(redis.call('GET', KEYS[k + 1]) or '0'))
end
if busy then  -- below a priority that asks: this priority's lane paces it at what is left
  for i = 1, N do
    if incs[i] > 0 then
      local room = math.max(1 - above[i], tonumber(ARGV[13]))
      lanes[#lanes + 1] = {KEYS[11 + i], incs[i] / room, tonumber(ARGV[12]), 1}
    end
  end
end
local function plan(limits)
  local wait, new = 0, {}
  for j, l in ipairs(limits) do
    local tat = tonumber(redis.call('GET', l[1]) or now)
    if tat < now - l[4] * math.max(l[3], l[2]) then tat = now end
    new[j] = tat + l[2]
    local w = new[j] - now - math.max(l[3], l[2])
    if w > wait then wait = w end
  end
  -- Less than a microsecond is float rounding (TATs are ~1.8e15 us), not a reason to refuse.
  if wait < 1 then wait = 0 end
  return wait, new
end
local function charge(limits, new)
  for j, l in ipairs(limits) do
    redis.call('SET', l[1], string.format('%.0f', new[j]), 'PX',
               math.max(0, math.ceil((new[j] - now) / 1000)) + tonumber(ARGV[5]))
  end
end
-- A request is metered once, when it first takes a place (in the common limits or its lanes).
local function metered()
  if paid then return end
  local m = meter(KEYS[10]) or {0, 0, 0, 0}
  local fields = {'at', string.format('%.0f', now)}
  for i = 1, N do
    fields[#fields + 1] = FIELDS[i]
    fields[#fields + 1] = string.format('%.9g', m[i] + incs[i] / meter_us)
  end
  redis.call('HSET', KEYS[10], unpack(fields))
  redis.call('PEXPIRE', KEYS[10], math.ceil(meter_life / 1000))
end
-- Below a priority that asks, the common limits are taken only when (nearly) free: reserved at
-- most `lead` of an interval ahead (so that a late wake-up loses no slot), and not while a
-- request of a higher such priority waits for a free slot. A refusal says when to come back:
-- `lead` before the slot frees.
local interval = math.max(common_tau, incs[1], incs[2], incs[3], incs[4])
local common_horizon, lead = horizon, 0
if busy then
  lead = tonumber(ARGV[16]) * interval
  common_horizon = math.min(horizon, lead)
end
local function common_plan()
  local wait, new = plan(common)
  if busy then wait = math.max(wait, yield_until - now) end
  return wait, new
end
local function back(wait) return math.ceil(math.max(wait - lead, 1)) end
local function waits_for_free(wait)
  if busy and wait > 0 then
    local until_us = now + wait + interval
    local before = tonumber(redis.call('GET', KEYS[11]) or '0')
    if until_us > before then
      redis.call('SET', KEYS[11], string.format('%.0f', until_us), 'PX',
                 math.ceil((until_us - now) / 1000) + 1000)
    end
  end
end
local function fits(wait, within) return wait <= 0 or (within > 0 and wait <= within) end
if #lanes == 0 or paid then
  local wait, new = common_plan()
  if not fits(wait, common_horizon) then
    if paid then waits_for_free(wait) end
    return {0, back(wait), now}
  end
  charge(common, new)
  metered()
  return {1, math.ceil(wait), now}
end
local lane_wait, lane_new = plan(lanes)
if not fits(lane_wait, horizon) then return {0, math.ceil(lane_wait), now} end
local wait, new = common_plan()
if lane_wait <= 0 and fits(wait, common_horizon) then
  charge(lanes, lane_new)
  charge(common, new)
  metered()
  return {1, math.ceil(wait), now}
end
if horizon <= 0 then return {0, math.ceil(math.max(lane_wait, wait)), now} end
charge(lanes, lane_new)
metered()
if lane_wait <= 0 then waits_for_free(wait) end
return {2, math.max(math.ceil(lane_wait), back(wait)), now}
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
              slack: float = 0.0, horizon: float = 0.0) -> Tuple[float, List[Optional[float]]]:
    """One admission decision over several limits at once, as :data:`ACQUIRE` makes it.

    Args:
      tats: Each limit's theoretical arrival time (None: no state yet, i.e. caught up).
      incs: What this request costs each limit, in time units (0 or less: that limit is off).
      tau: Burst tolerance, in the same units.
      now: The current time.
      slack: How far behind ``now`` a TAT may be and still count, as a fraction of
        ``max(tau, inc)`` (a waiter that woke late keeps its place); further behind, the limit
        was idle and restarts from ``now``.
      horizon: A request that would wait at most this long is charged now and told when to go.

    Returns:
      ``(0.0, new_tats)`` when every limit admits the request (charge them all);
      ``(wait, new_tats)`` when it is charged and reserved ``wait`` ahead (``horizon``); else
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
    if wait <= 1e-9:
        return 0.0, new
    return wait, new if wait <= horizon else list(tats)
