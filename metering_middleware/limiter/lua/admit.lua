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
-- ARGV[6]  with KEYS[2]: this admission's claim token, unique per admit() call
--
-- The client runs the script again once after a broken connection, and the first run
-- may have happened (the reply was lost, not the command). The token makes that second
-- run exactly-once: the nonce's value is "<expiry ms>:<token>:<admitted at us>", so a
-- run that finds its own token knows it is the retry of one admission: it does not
-- refuse its own nonce as reused, and does not log the admission twice. A value of just
-- "<expiry ms>", or any other token, is someone else's claim.
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

-- The nonce first: replay protection must not depend on spare capacity. The value
-- starts with the expiry, so the check is exact on this script's clock (explicit test
-- time too); the key's own expiry only cleans up. The claim is stored at the end, with
-- the admission time when the call is admitted.
local claim = false          -- this run claims the nonce
local admitted_before = nil  -- this admission's first run admitted it
if KEYS[2] then
  local expires = tonumber(ARGV[5])
  local now_ms = math.floor(now / 1000)
  local held = redis.call('GET', KEYS[2])
  local mine = false
  if held then
    local held_expires, token, at = string.match(held, '^(%d+):?([^:]*):?(%d*)$')
    mine = ARGV[6] ~= nil and ARGV[6] ~= '' and token == ARGV[6]
    if mine then
      if at ~= '' then admitted_before = tonumber(at) end  -- else it throttled: decide again
    elseif tonumber(held_expires or '0') > now_ms then
      return reply(2, 0, 0, 0, now)
    end
  end
  claim = expires > now_ms and admitted_before == nil
end

local function hold_nonce(admitted_at)
  if not claim then return end
  local expires = tonumber(ARGV[5])
  local px = expires - math.floor(now / 1000)  -- now as decided (a stepped-back clock: later)
  if px > 0 then
    redis.call('SET', KEYS[2], string.format('%.0f:%s:%s', expires, ARGV[6] or '', admitted_at),
      'PX', px)
  end
end

local key = KEYS[1]
local log = redis.call('LRANGE', key, 0, -1)
local n = #log
if n > 0 then
  local newest = tonumber(log[1])
  if newest > now + window then
    -- Redis's clock stepped back more than a window (its host's NTP, an operator): the
    -- log cannot be placed on this clock, and keeping it would refuse the account until
    -- the clock catches up (an hour for an hour). Start afresh: at most N admissions
    -- more, once, as when a clock steps forward and the window empties early.
    redis.call('DEL', key)
    log = {}
    n = 0
  elseif newest > now then
    now = newest  -- a small step back must not reorder the log: no time passed
  end
end
local cutoff = now - window
-- Entries are newest first: keep the leading ones still inside the window.
local kept = 0
while kept < n and tonumber(log[kept + 1]) > cutoff do kept = kept + 1 end
if kept < n then
  if kept == 0 then redis.call('DEL', key) else redis.call('LTRIM', key, 0, kept - 1) end
end

if admitted_before then
  -- The retry of an admitted call: its entry is in the log already (or has left it).
  local oldest = now
  if kept > 0 then oldest = tonumber(log[kept]) end
  return reply(1, kept, oldest + window, 0, now)
end
if kept < limit then
  local at = string.format('%.0f', now)
  redis.call('LPUSH', key, at)
  redis.call('PEXPIRE', key, tonumber(ARGV[3]))
  hold_nonce(at)
  local oldest = now
  if kept > 0 then oldest = tonumber(log[kept]) end
  return reply(1, kept + 1, oldest + window, 0, now)
end
-- Throttled: kept - limit + 1 admissions must leave; the newest of them is log[limit].
hold_nonce('')
return reply(0, kept, tonumber(log[kept]) + window, tonumber(log[limit]) + window, now)
