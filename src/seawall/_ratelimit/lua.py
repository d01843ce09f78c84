"""The Redis scripts: every limit of a request, and its header numbers, in one round trip.

Each script takes one key per quota and ``ARGV = [cost, amount1, window1_us,
amount2, window2_us, ..., consume]``. It first checks every quota, then consumes
*cost* from all of them only if all admit it (all or nothing: a refused
request never uses up a longer window's quota) and *consume* is not ``0``
(absent means consume; ``0`` only tests, for ``count_when`` rules), and answers
``{allowed, remaining1, reset1_us, retry1_us, ...}``. A key after the quotas'
is a ban key: while it exists the answer is ``{-1, its PTTL in ms}``.

Time is the Redis server's ``TIME``, in microseconds, so workers on hosts
with skewed clocks still share one exact window. Keys carry a ``{client}``
hash tag, so every key of one request lives on one Redis Cluster slot.

These scripts run through the client that limits' storage built (and so
share its connection pool, URI parsing, TLS, Sentinel and Cluster support);
limits' own scripts keep one limit per call, which would cost one round trip
per limit plus one per header number.
"""

from __future__ import annotations

from seawall._ratelimit.quota import FIXED, GCRA, MOVING, SLIDING

__all__ = ["SCRIPTS", "STRIKE"]

# The quota count comes from ARGV, so a ban key may follow the quotas' keys:
# while it lives the answer is {-1, its PTTL} and nothing is consumed.
_HEAD = """
local cost = tonumber(ARGV[1])
local n = math.floor((#ARGV - 1) / 2)
if #KEYS > n then
  local ban = redis.call('PTTL', KEYS[n + 1])
  if ban > 0 then return {-1, ban} end
end
local consume = ARGV[2 * n + 2] ~= '0'
"""

_PRELUDE = (
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""
    + _HEAD
    + """
local allowed = 1
local out = {0}
"""
)

# Fixed windows need no clock (the key's TTL is the window). One limit and a
# positive cost, the common case, takes 2 commands instead of 4: count first,
# and give the units back if that went over (the script is atomic, so no
# other request ever sees the overshoot).
_FIXED = (
    _HEAD
    + """
if n == 1 and cost > 0 and consume then
  local amount = tonumber(ARGV[2])
  local window_ms = math.ceil(tonumber(ARGV[3]) / 1000)
  local c = redis.call('INCRBY', KEYS[1], cost)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], window_ms)
    ttl = window_ms
  end
  if c <= amount then
    return {1, amount - c, ttl * 1000, 0}
  end
  c = redis.call('DECRBY', KEYS[1], cost)
  local rem = amount - c
  if rem < 0 then rem = 0 end
  return {0, rem, ttl * 1000, ttl * 1000}
end
local allowed = 1
local out = {0}
local counts, ttls = {}, {}
for i = 1, n do
  local amount = tonumber(ARGV[2 * i])
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  local ttl = -1
  if c > 0 then ttl = redis.call('PTTL', KEYS[i]) end
  counts[i] = c
  ttls[i] = ttl
  if c + cost > amount then allowed = 0 end
end
for i = 1, n do
  local amount = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local c = counts[i]
  local reset = window
  if ttls[i] >= 0 then reset = ttls[i] * 1000 end
  local retry = 0
  if allowed == 1 and cost > 0 and consume then
    c = redis.call('INCRBY', KEYS[i], cost)
    if ttls[i] < 0 then
      redis.call('PEXPIRE', KEYS[i], math.ceil(window / 1000))
    end
  elseif c + cost > amount then
    retry = reset
  end
  local rem = amount - c
  if rem < 0 then rem = 0 end
  out[#out + 1] = rem
  out[#out + 1] = math.ceil(reset)
  out[#out + 1] = math.ceil(retry)
end
out[1] = allowed
return out
"""
)

_MOVING = (
    _PRELUDE
    + """
local counts = {}
for i = 1, n do
  local amount = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local c = redis.call('ZCARD', KEYS[i])
  counts[i] = c
  if c + cost > amount then allowed = 0 end
end
local stamp = t[1] .. string.format('%06d', tonumber(t[2]))
for i = 1, n do
  local amount = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local c = counts[i]
  local retry = 0
  if allowed == 1 and cost > 0 and consume then
    local args = {}
    for j = 1, cost do
      args[#args + 1] = now
      args[#args + 1] = stamp .. ':' .. (c + j)
    end
    redis.call('ZADD', KEYS[i], unpack(args))
    redis.call('PEXPIRE', KEYS[i], math.ceil(window / 1000))
    c = c + cost
  elseif c + cost > amount then
    if cost > amount then
      retry = window
    else
      local e = redis.call('ZRANGE', KEYS[i], c + cost - amount - 1, c + cost - amount - 1,
                           'WITHSCORES')
      retry = tonumber(e[2]) + window - now
    end
  end
  local reset = window
  if c > 0 then
    local o = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    reset = tonumber(o[2]) + window - now
  end
  local rem = amount - c
  if rem < 0 then rem = 0 end
  out[#out + 1] = rem
  out[#out + 1] = math.ceil(reset)
  out[#out + 1] = math.ceil(retry)
end
out[1] = allowed
return out
"""
)

_SLIDING = (
    _PRELUDE
    + """
local curs, prevs, weights = {}, {}, {}
for i = 1, n do
  local amount = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local idx = math.floor(now / window)
  local v = redis.call('HMGET', KEYS[i], 'i', 'c', 'p')
  local si = tonumber(v[1])
  local cur = tonumber(v[2]) or 0
  local prev = tonumber(v[3]) or 0
  if si ~= idx then
    if si == idx - 1 then prev = cur else prev = 0 end
    cur = 0
  end
  local weight = 1 - (now - idx * window) / window
  curs[i] = cur
  prevs[i] = prev
  weights[i] = weight
  if math.floor(prev * weight + cur + 1e-9) + cost > amount then allowed = 0 end
end
for i = 1, n do
  local amount = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local idx = math.floor(now / window)
  local cur, prev, weight = curs[i], prevs[i], weights[i]
  if allowed == 1 and cost > 0 and consume then
    cur = cur + cost
    redis.call('HSET', KEYS[i], 'i', idx, 'c', cur, 'p', prev)
    redis.call('PEXPIRE', KEYS[i], math.ceil(((idx + 2) * window - now) / 1000))
  end
  local used = math.floor(prev * weight + cur + 1e-9)
  local retry = 0
  if allowed == 0 and used + cost > amount then
    local elapsed = (1 - weight) * window
    local room = amount - cost - cur
    if cost > amount then
      retry = window
    elseif room >= 0 and prev > 0 then
      retry = window * (1 - (room + 1) / prev) - elapsed
      if retry < 0 then retry = 0 end
      retry = retry + 1000
    else
      retry = window - elapsed
      if cur > 0 then
        local extra = window * (1 - (amount - cost + 1) / cur)
        if extra > 0 then retry = retry + extra end
      end
      retry = retry + 1000
    end
  end
  local rem = amount - used
  if rem < 0 then rem = 0 end
  out[#out + 1] = rem
  out[#out + 1] = math.ceil((idx + 1) * window - now)
  out[#out + 1] = math.ceil(retry)
end
out[1] = allowed
return out
"""
)

_GCRA = (
    _PRELUDE
    + """
local tats = {}
for i = 1, n do
  local amount = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local interval = window / amount
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat
  if tat + cost * interval - window > now then allowed = 0 end
end
for i = 1, n do
  local amount = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local interval = window / amount
  local tat = tats[i]
  local retry = 0
  if allowed == 1 and cost > 0 and consume then
    tat = tat + cost * interval
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX',
               math.max(1, math.ceil((tat - now) / 1000)))
  else
    retry = tat + cost * interval - window - now
    if retry < 0 then retry = 0 end
  end
  local rem = math.floor((window - (tat - now)) / interval + 1e-9)
  if rem < 0 then rem = 0 end
  out[#out + 1] = rem
  out[#out + 1] = math.ceil(tat - now)
  out[#out + 1] = math.ceil(retry)
end
out[1] = allowed
return out
"""
)

#: Count one refusal of a key; the after-th within the window bans it.
#: KEYS = {strikes, ban}; ARGV = {after, within_ms, duration_ms}; answers 1
#: when this strike started a ban (and the strikes start over), else 0.
_STRIKE = """
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if c < tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
redis.call('DEL', KEYS[1])
return 1
"""

#: The strike script's code in :data:`SCRIPTS` (beside the strategies').
STRIKE = 10

#: Strategy code (and :data:`STRIKE`) -> Lua source.
SCRIPTS: dict[int, str] = {
    FIXED: _FIXED,
    MOVING: _MOVING,
    SLIDING: _SLIDING,
    GCRA: _GCRA,
    STRIKE: _STRIKE,
}
