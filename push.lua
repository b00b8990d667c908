-- Shared by every script that notifies a node: push sends msg to the
-- subscribers of the node's channel, which is the channel prefix followed
-- by the node ID, and returns how many received it. Every push of the
-- library goes through this function.
local function push(prefix, node, msg)
  return redis.call('PUBLISH', prefix .. node, msg)
end

