-- Records a cancel of the active run of a stream, then pushes it to the
-- node that runs it. Both steps run atomically, so a subscriber that gets
-- the push finds the record already stored.
-- KEYS[1]: the stream's run key. KEYS[2]: its pending key. KEYS[3]: its
-- wait key. KEYS[4]: its calls key.
-- ARGV[1]: the channel prefix. ARGV[2]: the reason, may be empty.
-- ARGV[3]: the token of the run to cancel; empty cancels whatever run is
-- active. ARGV[4]: the node that waits for the run's end; empty when none
-- waits. ARGV[5]: the lease in ms of the wait record. ARGV[6]: the lease in
-- ms of a pending cancel; 0 stores none. ARGV[7]: the ID of this cancel
-- call. ARGV[8]: the lease in ms of the call's result.
-- Returns {0, pending} when no matching run is active, where pending is 1
-- when a pending cancel was stored, else {1, node, receivers, token}.

-- go-redis sends a call again when its connection broke before the reply.
-- The first send may have stopped the run, whose marker is gone by the
-- second, so the second returns the stored result of the first.
local first = redis.call('HGET', KEYS[4], ARGV[7])
if first == 'pending' then
  return {0, 1}
end
if first then
  local receivers, len, rest = string.match(first, '^(%d+) (%d+) (.*)$')
  len = tonumber(len)
  return {1, string.sub(rest, len + 1), tonumber(receivers), string.sub(rest, 1, len)}
end

local function remember(result)
  redis.call('HSET', KEYS[4], ARGV[7], result)
  if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[8]) then
    redis.call('PEXPIRE', KEYS[4], ARGV[8])
  end
end

local cur = redis.call('HMGET', KEYS[1], 'token', 'node', 'cancel')
local token, node, canceled = cur[1], cur[2] or '', cur[3]
if not token or (ARGV[3] ~= '' and token ~= ARGV[3]) then
  local pendingTTL = tonumber(ARGV[6])
  if token or ARGV[3] ~= '' or pendingTTL <= 0 then
    return {0, 0}
  end
  redis.call('SET', KEYS[2], ARGV[2], 'PX', pendingTTL)
  remember('pending')
  return {0, 1}
end

-- The first cancel's reason stays; later cancels of the run push it again.
local reason = ARGV[2]
if canceled ~= token then
  redis.call('HSET', KEYS[1], 'cancel', token, 'reason', reason)
else
  reason = redis.call('HGET', KEYS[1], 'reason') or ''
end

if ARGV[4] ~= '' then
  local waitTTL = tonumber(ARGV[5])
  redis.call('HSET', KEYS[3], token .. ':' .. ARGV[4], 1)
  if redis.call('PTTL', KEYS[3]) < waitTTL then
    redis.call('PEXPIRE', KEYS[3], waitTTL)
  end
end

local receivers = push(ARGV[1], node, 'cancel ' .. token .. ' ' .. reason)
remember(receivers .. ' ' .. #token .. ' ' .. token .. node)
return {1, node, receivers, token}
