-- Registers, refreshes or reads the active marker of one run.
-- KEYS[1]: the stream's run key (a hash with fields token, node, cancel,
-- reason). KEYS[2]: its pending key. KEYS[3]: its takeover key, a hash
-- from the tokens of replaced runs to the node that replaced them.
-- ARGV[1]: the run's token. ARGV[2]: its node ID. ARGV[3]: lease in ms.
-- ARGV[4]: mode. "register" creates the marker when it is missing,
-- "takeover" creates it and replaces another run's marker, "extend"
-- resets the lease when the marker is this run's, "read" only reads.
-- ARGV[5]: the channel prefix.
-- Returns {state, canceled, node, reason}: state 2 when this call created
-- the marker, 1 when the marker is this run's, 0 when it is missing, -1
-- when it contains another run's token, -2 when another run took over
-- this one. canceled is 1 when a cancel of this run is recorded, and
-- reason is its reason. node is the node of the run that holds the
-- stream, or of the run that took over.
local token, node, ttl, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local cur = redis.call('HMGET', KEYS[1], 'token', 'cancel', 'node', 'reason')
local holder = cur[1]

-- A replaced run never holds the marker again, so only a run that does
-- not hold it needs to look for its takeover record.
if holder ~= token then
  local by = redis.call('HGET', KEYS[3], token)
  if by then
    return {-2, 1, by, ''}
  end
end

if holder and holder ~= token then
  if mode ~= 'takeover' then
    return {-1, 0, cur[3] or '', ''}
  end
  redis.call('HSET', KEYS[3], holder, node)
  redis.call('PEXPIRE', KEYS[3], ttl)
  push(ARGV[5], cur[3] or '', 'takeover ' .. holder .. ' ' .. node)
  redis.call('DEL', KEYS[1])
  holder = nil
end

if not holder then
  if mode ~= 'register' and mode ~= 'takeover' then
    return {0, 0, '', ''}
  end
  redis.call('HSET', KEYS[1], 'token', token, 'node', node)
  redis.call('PEXPIRE', KEYS[1], ttl)

  -- A cancel stored while no run was active applies to this run.
  local pending = redis.call('GET', KEYS[2])
  if pending then
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'cancel', token, 'reason', pending)
    return {2, 1, node, pending}
  end
  return {2, 0, node, ''}
end

if mode ~= 'read' then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if cur[2] == token then
  return {1, 1, cur[3] or '', cur[4] or ''}
end
return {1, 0, cur[3] or '', ''}
