-- One admission: claim the signature nonce, then check the sliding log. One round trip.
--
-- KEYS[1]  the (account, API) admission log: a list of admission times in
--          microseconds, newest at the head (index 0).
-- KEYS[2]  optional: the nonce key (same {account} hash slot as KEYS[1]).
-- ARGV[1]  limit N (admissions allowed in any window)
-- ARGV[2]  window in microseconds (1000000)
-- ARGV[3]  expiry of the log key in milliseconds after an admission
-- ARGV[4]  explicit time in microseconds, or '' for Redis's own clock (TIME)
-- ARGV[5]  with KEYS[2]: the nonce's expiry, epoch milliseconds
--
-- Returns "status count reset_at retry_at now" as one string (one bulk reply parses
-- faster than an array of five): status 1 admitted, 0 throttled, 2 nonce reused;
-- count = admissions in (now - window, now] after the decision; reset_at = when the
-- oldest of them leaves the window; retry_at (throttled) = when a slot frees.
-- Times in integer microseconds.

if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5

local function reply(status, count, reset_at, retry_at, now)
  return string.format('%d %d %.0f %.0f %.0f', status, count, reset_at, retry_at, now)
end

local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The nonce first: replay protection must not depend on spare capacity. The value is
-- the expiry, so the check is exact on this script's clock (explicit test time too);
-- the key's own expiry only cleans up.
if KEYS[2] then
  local expires = tonumber(ARGV[5])
  local now_ms = math.floor(now / 1000)
  local held = redis.call('GET', KEYS[2])
  if held and tonumber(held) > now_ms then
    return reply(2, 0, 0, 0, now)
  end
  if expires > now_ms then
    redis.call('SET', KEYS[2], string.format('%.0f', expires), 'PX', expires - now_ms)
  end
end

local key = KEYS[1]
local log = redis.call('LRANGE', key, 0, -1)
local n = #log
if n > 0 then
  local newest = tonumber(log[1])
  if newest > now then now = newest end  -- a clock stepped back must not reorder the log
end
local cutoff = now - window
-- Entries are newest first: keep the leading ones still inside the window.
local kept = 0
while kept < n and tonumber(log[kept + 1]) > cutoff do kept = kept + 1 end
if kept < n then
  if kept == 0 then redis.call('DEL', key) else redis.call('LTRIM', key, 0, kept - 1) end
end

if kept < limit then
  redis.call('LPUSH', key, string.format('%.0f', now))
  redis.call('PEXPIRE', key, tonumber(ARGV[3]))
  local oldest = now
  if kept > 0 then oldest = tonumber(log[kept]) end
  return reply(1, kept + 1, oldest + window, 0, now)
end
-- Throttled: kept - limit + 1 admissions must leave; the newest of them is log[limit].
return reply(0, kept, tonumber(log[kept]) + window, tonumber(log[limit]) + window, now)
