-- One admission: claim the signature nonce, then check the sliding log, and the API's
-- upstream budget when it has one. One round trip.
--
-- KEYS[1]  the (account, API) admission log: a list of admission times in
--          microseconds, newest at the head (index 0).
-- KEYS[2]  with a budget (ARGV[5] not ''): the API's budget log, shared by every
--          account, the same kind of list.
-- KEYS[n]  optional, last (KEYS[2] or KEYS[3]): the nonce key (same {account} hash
--          slot as KEYS[1]).
-- ARGV[1]  limit N (admissions allowed in any window)
-- ARGV[2]  window in microseconds (1000000)
-- ARGV[3]  expiry of the log keys in milliseconds after an admission
-- ARGV[4]  explicit time in microseconds, or '' for Redis's own clock (TIME)
-- ARGV[5]  the API's upstream budget B (admissions of all accounts in any window), or ''
-- ARGV[6]  with a nonce key: the nonce's expiry, epoch milliseconds
-- ARGV[7]  with a nonce key: this admission's claim token, unique per admit() call
--
-- A call is admitted iff the account's log holds fewer than N admissions in the
-- window and the budget log fewer than B; then both take it, otherwise neither (the
-- script is atomic). The account's own limit is checked first: a call over it is
-- throttled (status 0) whatever the budget says; one within it but over the budget is
-- status 3, and leaves no entry in the account's log.
--
-- The client runs the script again once after a broken connection, and the first run
-- may have happened (the reply was lost, not the command). The token makes that second
-- run exactly-once: the nonce's value is "<expiry ms>:<token>:<admitted at us>", so a
-- run that finds its own token knows it is the retry of one admission: it does not
-- refuse its own nonce as reused, and does not log the admission twice. A value of just
-- "<expiry ms>", or any other token, is someone else's claim.
--
-- Returns "status count reset_at retry_at now" as one string (one bulk reply parses
-- faster than an array of five): status 1 admitted, 0 throttled, 2 nonce reused,
-- 3 over the upstream budget; count = the account's admissions in (now - window, now]
-- after the decision; reset_at = when the oldest of them leaves the window; retry_at
-- (refused) = when a slot frees (for status 3: a slot of the budget).
-- Times in integer microseconds.

if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5

local function reply(status, count, reset_at, retry_at, now)
  return string.format('%d %d %.0f %.0f %.0f', status, count, reset_at, retry_at, now)
end

local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local budget = tonumber(ARGV[5])  -- nil: the API has no budget
local budget_key = nil
local nonce_key = KEYS[2]
if budget then
  budget_key = KEYS[2]
  nonce_key = KEYS[3]
end
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
if nonce_key then
  local expires = tonumber(ARGV[6])
  local now_ms = math.floor(now / 1000)
  local held = redis.call('GET', nonce_key)
  local mine = false
  if held then
    local held_expires, token, at = string.match(held, '^(%d+):?([^:]*):?(%d*)$')
    mine = ARGV[7] ~= nil and ARGV[7] ~= '' and token == ARGV[7]
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
  local expires = tonumber(ARGV[6])
  local px = expires - math.floor(now / 1000)  -- now as decided (a stepped-back clock: later)
  if px > 0 then
    redis.call('SET', nonce_key, string.format('%.0f:%s:%s', expires, ARGV[7] or '', admitted_at),
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
-- The budget log, the same way: one "now" for both logs, never before either's newest.
if budget then
  local newest = redis.call('LINDEX', budget_key, 0)
  if newest then
    newest = tonumber(newest)
    if newest > now + window then
      redis.call('DEL', budget_key)
    elseif newest > now then
      now = newest
    end
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
if kept >= limit then
  -- Throttled: kept - limit + 1 admissions must leave; the newest of them is log[limit].
  hold_nonce('')
  return reply(0, kept, tonumber(log[kept]) + window, tonumber(log[limit]) + window, now)
end
local oldest = now
if kept > 0 then oldest = tonumber(log[kept]) end
if budget then
  -- Up to ~1000 entries shared by every account: trim from the old end (RPOP what
  -- left the window, O(1) amortised per admission) instead of reading the whole list.
  while true do
    local last = redis.call('LINDEX', budget_key, -1)
    if not last or tonumber(last) > cutoff then break end
    redis.call('RPOP', budget_key)
  end
  local used = redis.call('LLEN', budget_key)
  if used >= budget then
    -- used - budget + 1 admissions must leave; the newest of them is at index budget - 1.
    hold_nonce('')
    local frees = tonumber(redis.call('LINDEX', budget_key, budget - 1)) + window
    local reset_at = now  -- the account's own log: nothing to leave when it is empty
    if kept > 0 then reset_at = oldest + window end
    return reply(3, kept, reset_at, frees, now)
  end
end
local at = string.format('%.0f', now)
redis.call('LPUSH', key, at)
redis.call('PEXPIRE', key, tonumber(ARGV[3]))
if budget then
  redis.call('LPUSH', budget_key, at)
  redis.call('PEXPIRE', budget_key, tonumber(ARGV[3]))
end
hold_nonce(at)
return reply(1, kept + 1, oldest + window, 0, now)
