-- Deletes a run's marker only if it still belongs to that run. So a late
-- release never removes the marker of a newer run of the same stream, and
-- never a value of another type that someone else stored at the key.
-- KEYS[1]: the stream's run key. ARGV[1]: the run's token.
-- Returns 1 when the marker was deleted, else 0.
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  return 0
end
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
