-- Records a cancel of the active run of a stream, then pushes it to the
-- node that runs it. Both steps run atomically, so a subscriber that gets
-- the push finds the record already stored.
-- KEYS[1]: the stream's run key. ARGV[1]: the channel prefix; the run's
-- node ID completes the channel name.
-- Returns {0} when no run is active, else {1, node, receivers, token}.
local cur = redis.call('HMGET', KEYS[1], 'token', 'node')
local token, node = cur[1], cur[2] or ''
if not token then
  return {0}
end

redis.call('HSET', KEYS[1], 'cancel', token)
local receivers = redis.call('PUBLISH', ARGV[1] .. node, token)
return {1, node, receivers, token}
