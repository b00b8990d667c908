-- Registers, refreshes or reads the active marker of one run.
-- KEYS[1]: the stream's run key (a hash with fields token, node, cancel).
-- ARGV[1]: the run's token. ARGV[2]: its node ID. ARGV[3]: lease in ms.
-- ARGV[4]: mode. "register" creates the marker when it is missing,
-- "extend" resets the lease when the marker is this run's, "read" only
-- reads.
-- Returns {state, canceled, node}: state 2 when this call created the
-- marker, 1 when the marker is this run's, 0 when it is missing, -1 when
-- the marker contains another run's token. canceled is 1 when a cancel of this run is
-- recorded. node is the node of the run that holds the stream.
local cur = redis.call('HMGET', KEYS[1], 'token', 'cancel', 'node')
local token, cancel, node = cur[1], cur[2], cur[3] or ''

if not token then
  if ARGV[4] ~= 'register' then
    return {0, 0, ''}
  end
  redis.call('HSET', KEYS[1], 'token', ARGV[1], 'node', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {2, 0, ARGV[2]}
end

if token ~= ARGV[1] then
  return {-1, 0, node}
end

if ARGV[4] ~= 'read' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if cancel == ARGV[1] then
  return {1, 1, node}
end
return {1, 0, node}
