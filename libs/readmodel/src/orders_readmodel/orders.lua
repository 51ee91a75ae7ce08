#!lua name=orders
--[[
The read model's atomic writes, as one Redis Functions library (Redis 7.0).

OrderStore.load_functions loads it with FUNCTION LOAD REPLACE; the store's batcher calls
its functions with FCALL (and loads it again when Redis answers that a function is not
found). Every key a function touches comes in `keys`, never built from a prefix in
`args`, so that each call names all its keys as Redis Cluster requires.

Shared below: k, an order's keys {hash, history list, update stream, all-orders index,
its user's index, its first status's index, its abandoned event ids}; index, status
name -> that status's index. create and transition return {code, status, version}; start
adds whether it created the order.
]]

-- A hash as a JSON object of its fields (text values): '{}' when there is no such hash.
local function hash_json(key)
  local fields = redis.call('HGETALL', key)
  local object = {}
  for i = 1, #fields, 2 do object[fields[i]] = fields[i + 1] end
  return cjson.encode(object)
end

-- An update stream entry's field/value pairs: a transition, with the order as its hash holds it
-- now. trace: the W3C traceparent of the span that made the transition ('' or nil: none), kept in
-- the entry's `trace` field for the live send to link to.
local function stream_entry(hash, order_id, user_id, status, version, at, trace)
  local entry = {'orderId', order_id, 'userId', user_id, 'status', status, 'version', version,
                 'at', at, 'order', hash_json(hash)}
  if trace and trace ~= '' then
    entry[#entry + 1] = 'trace'
    entry[#entry + 1] = trace
  end
  return entry
end

-- A history entry: a transition and its position in the update stream.
local function history_entry(status, at, version, position)
  return cjson.encode({status = status, at = at, version = version, position = position})
end

-- Appends a transition to the update stream, with the order as it is now, and to the
-- history, with the stream entry's id.
local function record(k, maxlen, order_id, user_id, status, version, at, trace)
  local entry = stream_entry(k[1], order_id, user_id, status, version, at, trace)
  local position = redis.call('XADD', k[3], 'MAXLEN', '~', maxlen, '*', unpack(entry))
  redis.call('RPUSH', k[2], history_entry(status, at, version, position))
end

-- Creates an order unless it exists (code 0, its current status) or the event announcing
-- it was abandoned (code -2); fields: the hash's field/value pairs.
local function create(k, maxlen, order_id, user_id, status, at, event_id, trace, fields)
  if redis.call('EXISTS', k[1]) == 1 then
    local cur = redis.call('HMGET', k[1], 'status', 'version')
    return {0, cur[1], tonumber(cur[2])}
  end
  if event_id ~= '' and redis.call('SISMEMBER', k[7], event_id) == 1 then
    return {-2, false, 0}
  end
  redis.call('HSET', k[1], unpack(fields))
  redis.call('ZADD', k[4], 0, order_id)
  redis.call('ZADD', k[5], 0, order_id)
  redis.call('ZADD', k[6], 0, order_id)
  record(k, maxlen, order_id, user_id, status, 1, at, trace)
  return {1, status, 1}
end

-- Moves an order to target if the lifecycle allows it from its current status (sources,
-- space separated): code 1 applied, 0 not allowed (or already applied), -1 unknown order.
-- time_field: the hash field that records when.
local function transition(k, index, maxlen, order_id, target, at, time_field, sources, trace)
  local cur = redis.call('HMGET', k[1], 'status', 'version', 'userId')
  local status, version = cur[1], tonumber(cur[2])
  if not status then return {-1, false, 0} end
  if not string.find(' ' .. sources .. ' ', ' ' .. status .. ' ', 1, true) then
    return {0, status, version}
  end
  version = version + 1
  redis.call('HSET', k[1], 'status', target, 'version', version, time_field, at)
  redis.call('ZREM', index[status], order_id)
  redis.call('ZADD', index[target], 0, order_id)
  record(k, maxlen, order_id, cur[3], target, version, at, trace)
  return {1, target, version}
end

-- The status indexes: keys from `first` on, named in the same order by args from `names` on.
local function indexes(keys, first, args, names, count)
  local index = {}
  for i = 0, count - 1 do index[args[names + i]] = keys[first + i] end
  return index
end

-- orders_create: records a newly placed order; a replay changes nothing.
-- KEYS[1..7] the order's keys (k above)
-- ARGV[1] stream cap, ARGV[2] orderId, ARGV[3] userId, ARGV[4] status, ARGV[5] time,
-- ARGV[6] the id of the event announcing the order ('' when none), ARGV[7] traceparent ('' when
-- none), ARGV[8..] field/value pairs
redis.register_function('orders_create', function(keys, args)
  return create(keys, args[1], args[2], args[3], args[4], args[5], args[6], args[7], {unpack(args, 8)})
end)

-- orders_transition: moves an order to a target status if the lifecycle allows it.
-- KEYS[1] order hash, KEYS[2] history list, KEYS[3] update stream, KEYS[4..] status indexes
-- ARGV[1] stream cap, ARGV[2] orderId, ARGV[3] target status, ARGV[4] time,
-- ARGV[5] the hash field that records the time, ARGV[6] allowed sources, space separated,
-- ARGV[7..] the statuses the indexes are of, in the order of KEYS[4..], then optionally the
-- traceparent of the span making the transition
redis.register_function('orders_transition', function(keys, args)
  local count = #keys - 3
  local index = indexes(keys, 4, args, 7, count)
  return transition(keys, index, args[1], args[2], args[3], args[4], args[5], args[6], args[7 + count])
end)

-- orders_start: the processor's first step on an order, one round trip: create it unless it
-- is there (normally it is: the api writes it through), then start it (PLACED -> PROCESSING).
-- KEYS[1..7] the order's keys, KEYS[8..] status indexes
-- ARGV[1..7] as orders_create's, ARGV[8] target status, ARGV[9] time, ARGV[10] time field,
-- ARGV[11] allowed sources, ARGV[12..] the statuses the indexes are of, then field/value pairs
-- Returns {-2, false, 0} for an abandoned event, else what the transition returns and a 4th
-- element: 1 when this call created the order (the api had not written it through), else 0,
-- so that the processor counts the PLACED transitions it applied itself.
redis.register_function('orders_start', function(keys, args)
  local count = #keys - 7
  local created = create(keys, args[1], args[2], args[3], args[4], args[5], args[6], args[7],
                         {unpack(args, 12 + count)})
  if created[1] == -2 then return created end
  local result = transition(keys, indexes(keys, 8, args, 12, count), args[1], args[2], args[8],
                            args[9], args[10], args[11], args[7])
  result[4] = created[1]
  return result
end)

-- orders_abandon: the api gave up waiting for Kafka to acknowledge events: unless one of their
-- orders already exists (then Kafka held them after all), make sure none of them is ever
-- applied. All or nothing, for the events of one batch (a Kafka transaction) as for one.
-- KEYS: per order, its hash and its abandoned-event set; ARGV[1] ttl, ARGV[2..] event ids
-- Returns 1 when an order exists, 0 when every event is now abandoned.
-- allow-oom: Redis runs it, and its writes, even when full (maxmemory reached, noeviction),
-- where it refuses every other write: the api's 503 then stays true. Its writes are tiny (a
-- set member with a TTL per event), so going a little over maxmemory for them is harmless.
redis.register_function{
  function_name = 'orders_abandon',
  callback = function(keys, args)
    for i = 1, #keys, 2 do
      if redis.call('EXISTS', keys[i]) == 1 then return 1 end
    end
    for i = 1, #keys, 2 do
      redis.call('SADD', keys[i + 1], args[(i + 1) / 2 + 1])
      redis.call('EXPIRE', keys[i + 1], args[1])
    end
    return 0
  end,
  flags = {'allow-oom'},
}

-- orders_hashes_json: the page read's second step (OrderStore.page): the orders of a page of
-- ids, in one reply. Read-only (no-writes), so callable with FCALL_RO, on a replica too.
-- KEYS: the order hashes; returns for each, in order, its hash as JSON text ('{}' if none).
redis.register_function{
  function_name = 'orders_hashes_json',
  callback = function(keys)
    local rows = {}
    for i, key in ipairs(keys) do rows[i] = hash_json(key) end
    return rows
  end,
  flags = {'no-writes'},
}

-- orders_claim: ties an Idempotency-Key to the first request's record (SET NX GET, as one step).
-- KEYS[1] the Idempotency-Key's record; ARGV[1] this request's record, ARGV[2] ttl
-- Returns the record already there, or nil once this one is stored.
redis.register_function('orders_claim', function(keys, args)
  local previous = redis.call('GET', keys[1])
  if previous then return previous end
  redis.call('SET', keys[1], args[1], 'EX', args[2])
  return false
end)

-- orders_stats: the dashboard's numbers (OrderStore.stats) in one read-only call, so one request
-- is one round trip and a bounded amount of work: the store sends at most 301 bounds.
-- KEYS[1] update stream, KEYS[2] all-orders index, KEYS[3..] status indexes
-- ARGV: lex bounds in increasing order; second i counts the ids from ARGV[i] (included) to
-- ARGV[i + 1] (excluded), as ids are UUIDv7 that sort by creation time.
-- Returns {the stream's newest position (false when empty), {orders per status index, in
-- KEYS order}, {orders per second}}.
redis.register_function{
  function_name = 'orders_stats',
  callback = function(keys, args)
    local newest = redis.call('XREVRANGE', keys[1], '+', '-', 'COUNT', 1)
    local counts = {}
    for i = 3, #keys do counts[i - 2] = redis.call('ZCARD', keys[i]) end
    local per_second = {}
    for i = 1, #args - 1 do
      per_second[i] = redis.call('ZLEXCOUNT', keys[2], '[' .. args[i], '(' .. args[i + 1])
    end
    return {newest[1] and newest[1][1] or false, counts, per_second}
  end,
  flags = {'no-writes'},
}

-- orders_restore: the rebuild's write of one status event (`make rebuild`): the order's hash as
-- the event carries it, its indexes, and its history entry under the event's original stream
-- position. A version not above the order's (a repeat) changes nothing.
-- KEYS[1] order hash, KEYS[2] history list, KEYS[3] all-orders index, KEYS[4] its user's index,
-- KEYS[5..] status indexes
-- ARGV[1] orderId, ARGV[2] status, ARGV[3] version, ARGV[4] time, ARGV[5] stream position,
-- ARGV[6..] the statuses the indexes are of, in the order of KEYS[5..], then field/value pairs
-- Returns {1 applied or 0 a repeat, the order's version before (0: none)}.
redis.register_function('orders_restore', function(keys, args)
  local count = #keys - 4
  local index = indexes(keys, 5, args, 6, count)
  local order_id, status, version = args[1], args[2], tonumber(args[3])
  local cur = redis.call('HMGET', keys[1], 'status', 'version')
  local before = tonumber(cur[2]) or 0
  if version <= before then return {0, before} end
  redis.call('DEL', keys[1])
  redis.call('HSET', keys[1], unpack(args, 6 + count))
  redis.call('ZADD', keys[3], 0, order_id)
  redis.call('ZADD', keys[4], 0, order_id)
  if cur[1] and cur[1] ~= status then redis.call('ZREM', index[cur[1]], order_id) end
  redis.call('ZADD', index[status], 0, order_id)
  redis.call('RPUSH', keys[2], history_entry(status, args[4], version, args[5]))
  return {1, before}
end)

-- orders_restore_stream: the rebuild's last step: the update stream begun with the newest event
-- rebuilt, under its original position, as `record` writes an entry (from the order's hash),
-- so that the status relay goes on after it.
-- KEYS[1] the order's hash, KEYS[2] update stream; ARGV[1] orderId, ARGV[2] position, ARGV[3] time
-- Returns the position.
redis.register_function('orders_restore_stream', function(keys, args)
  local cur = redis.call('HMGET', keys[1], 'userId', 'status', 'version')
  local entry = stream_entry(keys[1], args[1], cur[1], cur[2], tonumber(cur[3]), args[3])
  return redis.call('XADD', keys[2], args[2], unpack(entry))
end)
