-- Adds, removes or lists the runs of a group. Each member is a run's token
-- and stream ID; its score is the time in ms, on the Redis clock, when it
-- expires unless refreshed. Expired members are removed first.
-- KEYS[1]: the group key.
-- ARGV[1]: mode: "join", "leave" or "list". ARGV[2]: the member, for join
-- and leave. ARGV[3]: the lease in ms, for join.
-- Returns 1 for join and leave, and the members for list.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)

local mode = ARGV[1]
if mode == 'join' then
  local ttl = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  return 1
end
if mode == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 1
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
