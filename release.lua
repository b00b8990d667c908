-- Deletes a run's marker only if it still belongs to that run. So a late
-- release never removes the marker of a newer run of the same stream, and
-- never a value of another type that someone else stored at the key.
-- KEYS[1]: the stream's run key. KEYS[2]: its wait key. KEYS[3]: its
-- ended key. KEYS[4]: its takeover key.
-- ARGV[1]: the run's token. ARGV[2]: "end" when the run has ended,
-- "detach" when only its marker goes. ARGV[3]: how long the run took to
-- stop after its cancel, in microseconds. ARGV[4]: the channel prefix.
-- ARGV[5]: the minimum lease in ms of the ended record. The record lasts
-- as long as the wait record if that is longer, so that a waiter whose
-- push is lost finds it at any poll before its wait ends.
-- When nodes wait for the run's end, the script also stores an ended
-- record and pushes the end to each of them. A node records its wait in
-- the same script as its cancel, so a run that ends after that cancel
-- always finds the wait.
-- Returns 1 when the marker was deleted, else 0.
local token = ARGV[1]
local deleted = 0
if redis.call('TYPE', KEYS[1]).ok == 'hash' and redis.call('HGET', KEYS[1], 'token') == token then
  deleted = redis.call('DEL', KEYS[1])
end
if ARGV[2] ~= 'end' then
  return deleted
end
redis.call('HDEL', KEYS[4], token)

local endedTTL = math.max(tonumber(ARGV[5]), redis.call('PTTL', KEYS[2]))
local waiters, mark = {}, token .. ':'
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(field, 1, #mark) == mark then
    table.insert(waiters, string.sub(field, #mark + 1))
    redis.call('HDEL', KEYS[2], field)
  end
end
if #waiters == 0 then
  return deleted
end

redis.call('HSET', KEYS[3], token, ARGV[3])
if redis.call('PTTL', KEYS[3]) < endedTTL then
  redis.call('PEXPIRE', KEYS[3], endedTTL)
end
for _, node in ipairs(waiters) do
  push(ARGV[4], node, 'ended ' .. token .. ' ' .. ARGV[3])
end
return deleted
