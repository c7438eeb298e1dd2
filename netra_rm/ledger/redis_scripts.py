"""The Lua scripts of the Redis ledger: every change to it is one of these, so it is atomic.

The keys of a ledger named NAME all begin with ``netra-rm:{NAME}:`` (one hash slot):

=====================  ============================================================
``meta``               hash: ``schema`` (2), ``id``, ``origin``, ``counter`` (fencing),
                       ``seq`` (the journal's last number), ``version`` (one more at
                       every change: a transaction's commit checks it did not move)
``alloc``              hash: allocation id -> its record (JSON)
``arec``               hash: allocation id -> its journal record (checkpoints are
                       built from these without parsing anything)
``exp``                sorted set: allocation id by when it is due (its expiry or its
                       lease, whichever is first): reclaiming reads only what is due
``host:HOST``          set: the ids of the allocations owned on HOST
``usage``              hash: pool key -> "MEMORY CPU INSTANCES DEDICATED", kept current
                       with every grant and release
``slots:KEY``          set: the instance indices held in pool KEY (``free:KEY`` and
                       ``slothw``: the lowest free one, found without a scan)
``pools``, ``plim``    hashes: pool key -> its registered record (JSON), and its limits in
                       short (``INSTANCES|MEMORY|CPU|NAMES|DRAINED``) for the fast grant
``waiters``            hash: waiter id -> its queue entry (JSON)
``journal``,           lists: the journal, and the one before it (each starts with a
``journal.1``          checkpoint when it was started or rotated)
``req:ID``             a request id's outcome, kept an hour: a client whose reply was
                       lost asks it whether its change happened
``lock``, ``holder``,  the slow path's lock (see :mod:`netra_rm.ledger.redis`)
``hand:CLIENT``
``wake:WAITER``        a waiter's wake-up list (it blocks on it with BLPOP)
``ledger``, ``released``  a schema-1 ledger (one document), upgraded on first use
=====================  ============================================================

Numbers Lua works with stay below 2^53 (fencing tokens are about 2^51 today), so they are
exact; times and amounts go out as text formatted here, never through Lua's own
number-to-text. A script checks everything before its first write: Redis does not undo
the writes of a script that fails halfway.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

_PRELUDE = r"""
local P = ARGV[1]
local function K(name) return P .. name end
local function now_of(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function ms(x) return math.floor(x * 1000 + 0.5) / 1000 end
local function num(x) return string.format('%.3f', x) end
local function int(x) return string.format('%d', x) end
local function parse_usage(text)
  if not text then return {0, 0, 0, 0} end
  local a, b, c, d = string.match(text, '^(%d+) (%d+) (%d+) (%d+)$')
  if not a then return nil end
  return {tonumber(a), tonumber(b), tonumber(c), tonumber(d)}
end
local function write_usage(key, u)
  if u[1] == 0 and u[2] == 0 and u[3] == 0 and u[4] == 0 then
    redis.call('HDEL', K('usage'), key)
  else
    redis.call('HSET', K('usage'), key, string.format('%d %d %d %d', u[1], u[2], u[3], u[4]))
  end
end
local function push_all(key, items)
  local i = 1
  while i <= #items do
    local j = math.min(i + 999, #items)
    redis.call('RPUSH', key, unpack(items, i, j))
    i = j + 1
  end
end
-- Before any change: start the journal (a new ledger) or rotate it (past max lines). The
-- new list opens with a checkpoint of the allocations committed so far. ``seq`` and
-- ``counter`` are the ledger's as committed.
local function journal_start(seq, counter, now, maxlines)
  local len = redis.call('LLEN', K('journal'))
  local reason = false
  if seq == 0 then
    if len > 0 then reason = 'new ledger' else reason = 'start' end
  elseif len >= maxlines then
    reason = 'rotate'
  end
  local first = {}
  if reason then
    if len > 0 then redis.call('RENAME', K('journal'), K('journal.1')) end
    first[1] = '{"event":"checkpoint","after":' .. int(seq) .. ',"time":' .. num(ms(now)) .. ',"reason":"'
      .. reason .. '","fencing_counter":' .. int(counter) .. ',"allocations":['
      .. table.concat(redis.call('HVALS', K('arec')), ',') .. ']}'
  end
  return {seq, first}
end
local function journal_open(now, maxlines)
  local meta = redis.call('HMGET', K('meta'), 'seq', 'counter')
  return journal_start(tonumber(meta[1] or '0'), tonumber(meta[2] or '0'), now, maxlines)
end
-- Number the events after the journal's last line and append them (after the checkpoint);
-- the last number.
-- Append lines already numbered (after the journal's last line), after the checkpoint
-- if one opened it.
local function journal_push(opened, lines)
  local out = opened[2]
  for _, line in ipairs(lines) do out[#out + 1] = line end
  push_all(K('journal'), out)
end
-- Number the events after the journal's last line and append them; the last number.
local function journal_lines(opened, events)
  local seq, out = opened[1], {}
  for _, e in ipairs(events) do
    seq = seq + 1
    out[#out + 1] = '{"seq":' .. int(seq) .. ',' .. string.sub(e, 2)
  end
  journal_push(opened, out)
  return seq
end
local function journal_write(opened, events)
  redis.call('HSET', K('meta'), 'seq', int(journal_lines(opened, events)))
end
local function add_allocation(id, json, rec, score, host)
  redis.call('HSET', K('alloc'), id, json)
  redis.call('HSET', K('arec'), id, rec)
  redis.call('ZADD', K('exp'), score, id)
  redis.call('SADD', K('host:') .. host, id)
end
local function drop_allocation(id, host)
  redis.call('HDEL', K('alloc'), id)
  redis.call('HDEL', K('arec'), id)
  redis.call('ZREM', K('exp'), id)
  redis.call('SREM', K('host:') .. host, id)
end
-- Instances: ``slots:KEY`` holds the indices taken; every index below the high-water mark
-- (``slothw`` KEY) that is not taken is in the sorted set ``free:KEY``, and every index
-- from the mark up is free: the lowest free index is the lower of the set's first and the
-- mark, found without a scan.
local function slot_take(key, index)
  local i = tonumber(index)
  redis.call('SADD', K('slots:') .. key, i)
  local hw = tonumber(redis.call('HGET', K('slothw'), key) or '0')
  if i >= hw then
    for j = hw, i - 1 do redis.call('ZADD', K('free:') .. key, j, j) end
    redis.call('HSET', K('slothw'), key, i + 1)
  else
    redis.call('ZREM', K('free:') .. key, i)
  end
end
local function slot_free(key, index)
  local i = tonumber(index)
  redis.call('SREM', K('slots:') .. key, i)
  redis.call('ZADD', K('free:') .. key, i, i)
end
local function hand_on(ttl)
  redis.call('SET', K('holder'), 'handoff', 'PX', ttl)
  if redis.call('LLEN', K('lock')) == 0 then redis.call('RPUSH', K('lock'), 't') end
end
local function wake(ids, ttl, payloads)
  for n, id in ipairs(ids) do
    local key = K('wake:') .. id
    local payload = payloads and payloads[n]
    if payload and payload ~= id then
      redis.call('DEL', key)
      redis.call('RPUSH', key, payload)  -- the allocation handed to this waiter
    elseif redis.call('LLEN', key) == 0 then
      redis.call('RPUSH', key, '!')
    end
    redis.call('PEXPIRE', key, ttl)
  end
end
-- Is the ledger there (``meta``: its schema, id and counter), the one this host knows, and
-- its counter not below what this host saw?
local function recognised(meta, expected_id, floor)
  if meta[1] ~= '2' then return false end
  if expected_id ~= '' and meta[2] ~= expected_id then return false end
  if tonumber(meta[3] or '0') < tonumber(floor) then return false end
  return true
end
-- A fast path runs only while no transaction holds the ledger and nobody waits: why not
-- ('lock', 'waiters'), or false.
local function busy()
  local h = redis.call('GET', K('holder'))
  if h and h ~= 'handoff' then return 'lock' end
  if redis.call('EXISTS', K('waiters')) == 1 then return 'waiters' end
  return false
end
"""

# Take the lock (mode "lock") or not ("read", "journal"), and read what a transaction over
# the scope needs, by the server's clock.
# ARGV: 1 prefix, 2 mode, 3 holder, 4 lock ttl (ms), 5 hand list, 6 now ('' = TIME),
#       7 "1": everything, 8 sweep host or '', 9 most due allocations to read,
#       10 n, then n pool keys, then m, then m allocation ids, then "1": widen (also the
#       keys of those allocations and of the waiters sharing one)
# Returns {0} when the lock is held by another, else {1, meta{schema, id, origin, counter,
# seq, version}, schema-1 version or false, now, keys, usage, instances taken (a list, or
# the lowest free index), pools, waiters, due ids, host ids or false, allocation ids, their
# records, [journal.1, journal]}.
_BEGIN = r"""
local mode = ARGV[2]
if mode == 'lock' then
  local h = redis.call('GET', K('holder'))
  if h ~= ARGV[3] then
    local tok = redis.call('LPOP', ARGV[5])
    if not tok then tok = redis.call('LPOP', K('lock')) end
    if not tok and h then return {0} end
  end
  redis.call('SET', K('holder'), ARGV[3], 'PX', ARGV[4])
end
local meta = redis.call('HMGET', K('meta'), 'schema', 'id', 'origin', 'counter', 'seq', 'version')
local old = false
if not meta[1] then old = redis.call('HGET', K('ledger'), 'version') or false end
local now = now_of(ARGV[6])
local everything = ARGV[7] == '1'
local keys, seen = {}, {}
local function note(key)
  if not seen[key] then seen[key] = true; keys[#keys + 1] = key end
end
local i = 10
local n = tonumber(ARGV[i])
for j = 1, n do note(ARGV[i + j]) end
i = i + n + 1
local ids, wanted = {}, {}
local function want(id)
  if not wanted[id] then wanted[id] = true; ids[#ids + 1] = id end
end
local m = tonumber(ARGV[i])
for j = 1, m do want(ARGV[i + j]) end
local all_waiters = redis.call('HVALS', K('waiters'))
-- widen: also the keys of the named allocations and of every waiter sharing one (a
-- release that may hand its room on), found here rather than by a read before
if ARGV[i + m + 1] == '1' and #ids > 0 then
  local named, mine = redis.call('HMGET', K('alloc'), unpack(ids)), {}
  local function charges_of(raw)
    local ok, rec = pcall(cjson.decode, raw)
    if ok and type(rec) == 'table' and type(rec.charges) == 'table' then return rec.charges end
    return {}  -- a bad record: the caller finds it in what is returned and refuses it
  end
  for j = 1, #ids do
    if named[j] then
      for _, key in ipairs(charges_of(named[j])) do
        if type(key) == 'string' then note(key); mine[key] = true end
      end
    end
  end
  for _, raw in ipairs(all_waiters) do
    local charges, shares = charges_of(raw), false
    for _, key in ipairs(charges) do if mine[key] then shares = true end end
    if shares then
      for _, key in ipairs(charges) do if type(key) == 'string' then note(key) end end
    end
  end
end
if everything then
  for _, key in ipairs(redis.call('HKEYS', K('usage'))) do note(key) end
  for _, key in ipairs(redis.call('HKEYS', K('pools'))) do note(key) end
end
-- the instances taken: every one (everything), else the lowest free one, below which all
-- are taken (which are taken above it does not change a decision: it takes the lowest)
local usage, slots, pools = {}, {}, {}
for j, key in ipairs(keys) do
  usage[j] = redis.call('HGET', K('usage'), key) or ''
  if everything then
    slots[j] = redis.call('SMEMBERS', K('slots:') .. key)
  else
    local mark = tonumber(redis.call('HGET', K('slothw'), key) or '0')
    local low = redis.call('ZRANGE', K('free:') .. key, 0, 0)
    if low[1] and tonumber(low[1]) < mark then mark = tonumber(low[1]) end
    slots[j] = mark
  end
  pools[j] = redis.call('HGET', K('pools'), key) or ''
end
local due = redis.call('ZRANGEBYSCORE', K('exp'), '-inf', string.format('%.6f', now), 'LIMIT', 0, tonumber(ARGV[9]))
local host = false
if ARGV[8] ~= '' then host = redis.call('SMEMBERS', K('host:') .. ARGV[8]) end
local records
if everything then
  local all = redis.call('HGETALL', K('alloc'))
  ids, records = {}, {}
  for j = 1, #all, 2 do ids[#ids + 1] = all[j]; records[#records + 1] = all[j + 1] end
else
  for _, id in ipairs(due) do want(id) end
  if host then for _, id in ipairs(host) do want(id) end end
  if #ids > 0 then records = redis.call('HMGET', K('alloc'), unpack(ids)) else records = {} end
end
local out = {1, meta, old, string.format('%.6f', now), keys, usage, slots, pools, all_waiters,
             due, host, ids, records}
if mode == 'journal' then
  out[14] = redis.call('LRANGE', K('journal.1'), 0, -1)
  out[15] = redis.call('LRANGE', K('journal'), 0, -1)
end
return out
"""

# Apply a transaction's changes, if the ledger did not change since it was read and the
# lock is still ours (or nobody's), and hand the lock on.
# ARGV: 1 prefix, 2 holder, 3 version read, 4 request id, 5 outcome, 6 request ttl (ms),
#       7 journal max lines, 8 now, 9 ledger id, 10 origin, 11 counter or '', 12 journal seq
#       to start from or '' (an upgrade), 13 "1": reset (start from nothing), 14 the
#       schema-1 version upgraded or '', 15 lock ttl (ms), 16 wake ttl (ms), then sections,
#       each a count and its items: grants (id, record, journal record, due, host), removals
#       (id, host), updates (id, record, journal record, due), usage deltas (key, memory,
#       cpu, instances, dedicated), slots taken (key, index), slots freed (key, index),
#       pools (key, record, limits), waiters put (id, record), waiters gone (id), journal
#       events (JSON without its seq), waiters to wake (id)
# Returns {1, version} or {0, the version found}.
_COMMIT = r"""
local holder = ARGV[2]
local h = redis.call('GET', K('holder'))
local v = redis.call('HGET', K('meta'), 'version') or '0'
if (h and h ~= holder) or v ~= ARGV[3] then return {0, v} end
local upgrading = ARGV[14] ~= ''
if upgrading then
  local old = redis.call('HGET', K('ledger'), 'version') or '0'
  if redis.call('EXISTS', K('meta')) == 1 or old ~= ARGV[14] then return {0, v} end
end
local i = 17
local function take() local x = ARGV[i]; i = i + 1; return x end
local function section(width)
  local items = {}
  for n = 1, tonumber(take()) do
    local item = {}
    for w = 1, width do item[w] = take() end
    items[n] = item
  end
  return items
end
local grants, removals, updates = section(5), section(2), section(4)
local deltas, taken, freed = section(5), section(2), section(2)
local pools, put, gone, events, woken = section(3), section(2), section(1), section(1), section(2)
local reset = ARGV[13] == '1'
-- usage after the deltas, checked before anything is written
local usage = {}
for n, d in ipairs(deltas) do
  local u = {0, 0, 0, 0}
  if not reset then u = parse_usage(redis.call('HGET', K('usage'), d[1])) end
  if not u then return redis.error_reply('CORRUPT the usage of ' .. d[1] .. ' is not four whole numbers') end
  for w = 1, 4 do
    u[w] = u[w] + tonumber(d[w + 1])
    if u[w] < 0 then return redis.error_reply('CORRUPT the usage of ' .. d[1] .. ' would go below zero') end
  end
  usage[n] = u
end
local now = tonumber(ARGV[8])
local opened = false
if #events > 0 then opened = journal_open(now, tonumber(ARGV[7])) end
if reset then
  local pattern = string.gsub(P, '[%*%?%[%]\\]', '\\%0')
  for _, kind in ipairs({'slots:', 'free:', 'host:'}) do
    local cursor = '0'
    repeat
      local page = redis.call('SCAN', cursor, 'MATCH', pattern .. kind .. '*', 'COUNT', 1000)
      cursor = page[1]
      for _, key in ipairs(page[2]) do redis.call('DEL', key) end
    until cursor == '0'
  end
  redis.call('DEL', K('alloc'), K('arec'), K('exp'), K('usage'), K('slothw'))
end
for _, r in ipairs(removals) do drop_allocation(r[1], r[2]) end
for _, g in ipairs(grants) do add_allocation(g[1], g[2], g[3], g[4], g[5]) end
for _, u in ipairs(updates) do
  redis.call('HSET', K('alloc'), u[1], u[2])
  redis.call('HSET', K('arec'), u[1], u[3])
  redis.call('ZADD', K('exp'), u[4], u[1])
end
for n, d in ipairs(deltas) do write_usage(d[1], usage[n]) end
for _, s in ipairs(freed) do slot_free(s[1], s[2]) end
for _, s in ipairs(taken) do slot_take(s[1], s[2]) end
for _, p in ipairs(pools) do
  redis.call('HSET', K('pools'), p[1], p[2])
  redis.call('HSET', K('plim'), p[1], p[3])
end
for _, w in ipairs(put) do redis.call('HSET', K('waiters'), w[1], w[2]) end
for _, w in ipairs(gone) do redis.call('HDEL', K('waiters'), w[1]) end
redis.call('HSET', K('meta'), 'schema', '2', 'id', ARGV[9], 'origin', ARGV[10])
if ARGV[11] ~= '' then redis.call('HSET', K('meta'), 'counter', ARGV[11]) end
if ARGV[12] ~= '' then redis.call('HSET', K('meta'), 'seq', ARGV[12]) end
if opened then
  local lines = {}
  for n, e in ipairs(events) do lines[n] = e[1] end
  journal_write(opened, lines)
end
if upgrading then
  redis.call('RENAME', K('ledger'), K('ledger.schema1'))
  redis.call('DEL', K('released'))
end
local version = redis.call('HINCRBY', K('meta'), 'version', 1)
if ARGV[4] ~= '' then redis.call('SET', K('req:') .. ARGV[4], ARGV[5], 'PX', ARGV[6]) end
hand_on(ARGV[15])
local ids, payloads = {}, {}
for n, w in ipairs(woken) do ids[n], payloads[n] = w[1], w[2] end
wake(ids, ARGV[16], payloads)
return {1, version}
"""

# Give the lock back without changing anything.  ARGV: 1 prefix, 2 holder, 3 lock ttl (ms)
_UNLOCK = r"""
local h = redis.call('GET', K('holder'))
if h and h ~= ARGV[2] then return 0 end
hand_on(ARGV[3])
return 1
"""

# Grant in one step (see RedisLedger.fast_grant): the same arithmetic as
# netra_rm.core.admission.admit over the usage and instances held per pool key.
# ARGV, first what changes from one call to the next: 1 prefix, 2 request id, 3 now or '',
#       4 ledger id this host knows or '', 5 the counter it saw, 6 machine free MB or '',
#       7 allocation id, 8 the client's hand list when the call follows a wait for the
#       lock's token (given back) or ''; to join the queue when there is no room (even if
#       others wait): 9 the waiter's id or '', 10 its record's fixed fields (JSON, no
#       braces), 11 its lease (s) or '', 12 the host whose allocations are to be looked at
#       first (if it holds any, the transaction does it) or '';
#       then what a client sends again and again for the same request (packed once):
#       13 journal max lines, 14 duration (s), 15 lease (s) or '', 16 memory MB, 17 CPU
#       units, 18 "1": dedicated, 19 owner host, 20-22 its record's fixed fields (JSON, no
#       braces) before the allocation id, between it and the request id, and after, 23-24
#       its journal record's fixed fields before and after the id, 25 limits (JSON), 26 n
#       charges, then eleven arguments per charge: key, key as JSON,
#       kind (layer, caps, pool), instances, memory MB or '', CPU units or '', "1": honours
#       dedicated, "1": hands out instances, its limits (the registry's, if it holds the
#       pool, must be these), instance names as JSON strings joined by newlines, "1":
#       central (the registry must hold it)
# Returns {1, record, "TOKEN CREATED EXPIRES LEASE-or--" newline "KEY<tab>INDEX<tab>..."
# newline "KEY<tab>NAME-as-JSON<tab>..."}, {2, the waiter's record} (it joined) or {0, why}. The
# allocation's id and the waiter's are the request's record: a client that lost the reply
# looks for them.
_FAST_GRANT = r"""
local meta = redis.call('HMGET', K('meta'), 'schema', 'id', 'counter', 'seq', 'version')
if not recognised(meta, ARGV[4], ARGV[5]) then return {0, 'ledger'} end
local joining = ARGV[9] ~= ''
if ARGV[8] ~= '' then
  -- sent after waiting for the lock's token (BLMOVE into this client's hand): this call
  -- does not take the lock, so the token goes back for the next in line
  local tok = redis.call('LPOP', ARGV[8])
  if tok and redis.call('LLEN', K('lock')) == 0 then redis.call('RPUSH', K('lock'), tok) end
end
local why = busy()
if why == 'lock' or (why and not joining) then return {0, why} end
local mem, cpu, dedicated = tonumber(ARGV[16]), tonumber(ARGV[17]), ARGV[18] == '1'
local nc = tonumber(ARGV[26])
local charges, keys, caps = {}, {}, false
for n = 1, nc do
  local b = 26 + (n - 1) * 11
  charges[n] = {key = ARGV[b + 1], json = ARGV[b + 2], kind = ARGV[b + 3], instances = tonumber(ARGV[b + 4]),
                mem = tonumber(ARGV[b + 5]), cpu = tonumber(ARGV[b + 6]), dedicated = ARGV[b + 7] == '1',
                slots = ARGV[b + 8] == '1', expect = ARGV[b + 9], names = ARGV[b + 10], central = ARGV[b + 11] == '1'}
  keys[n] = ARGV[b + 1]
end
local limits = redis.call('HMGET', K('plim'), unpack(keys))
local usages = redis.call('HMGET', K('usage'), unpack(keys))
local marks = redis.call('HMGET', K('slothw'), unpack(keys))
-- admit's arithmetic: nil when it fits, else why not ('full': no room; 'pool', 'usage':
-- the transaction must look)
local function refusal()
  for n, c in ipairs(charges) do
    if limits[n] then
      if limits[n] ~= c.expect then return 'pool' end
    elseif c.central then
      return 'pool'
    end
    c.usage = parse_usage(usages[n])
    if not c.usage then return 'usage' end
    if c.kind == 'caps' then caps = c end
  end
  for n, c in ipairs(charges) do
    local u = c.usage
    if c.mem and u[1] + mem > c.mem then return 'full' end
    if c.cpu and u[2] + cpu > c.cpu then return 'full' end
    if u[3] + 1 > c.instances then return 'full' end
    if c.kind == 'layer' and c.dedicated then
      if dedicated and u[3] > 0 then return 'full' end
      if u[4] > 0 then return 'full' end
    end
    if c.slots then
      c.mark = tonumber(marks[n] or '0')
      local low = redis.call('ZRANGE', K('free:') .. c.key, 0, 0)
      if low[1] and tonumber(low[1]) < c.mark then c.slot, c.reused = tonumber(low[1]), true else c.slot = c.mark end
      if c.slot >= c.instances then return 'full' end
    end
  end
  if ARGV[6] ~= '' then
    local used = 0
    if caps then used = caps.usage[1] end
    if mem > tonumber(ARGV[6]) - used then return 'full' end
  end
  return nil
end
local refused = refusal()
if joining and refused == 'full' then
  -- no room whatever the queue says: join it, unless something due (reclaimed by the
  -- transaction) might make room
  local now = now_of(ARGV[3])
  if #redis.call('ZRANGEBYSCORE', K('exp'), '-inf', string.format('%.6f', now), 'LIMIT', 0, 1) > 0 then
    return {0, 'due'}
  end
  if ARGV[12] ~= '' and redis.call('SCARD', K('host:') .. ARGV[12]) > 0 then
    return {0, 'sweep'}  -- this host's holders are to be looked at first (are they alive?)
  end
  local record = '{' .. ARGV[10] .. ',"since":' .. num(ms(now)) .. ',"fence":' .. int(tonumber(meta[3] or '0'))
  if ARGV[11] ~= '' then record = record .. ',"lease_expires_at":' .. num(ms(now + tonumber(ARGV[11]))) end
  record = record .. '}'
  redis.call('HSET', K('waiters'), ARGV[9], record)
  redis.call('HSET', K('meta'), 'version', int(tonumber(meta[5] or '0') + 1))
  return {2, record}
end
if refused then return {0, refused} end
if why then return {0, why} end  -- it fits, but others wait: the queue's rule decides
-- it fits: grant
local now = now_of(ARGV[3])
local created = ms(now)
local expires = ms(now + tonumber(ARGV[14]))
local due = expires
local lease = false
if ARGV[15] ~= '' then
  lease = ms(now + tonumber(ARGV[15]))
  if lease < due then due = lease end
end
local counter = tonumber(meta[3] or '0')
local opened = journal_start(tonumber(meta[4] or '0'), counter, now, tonumber(ARGV[13]))
local token = counter + 1
local written, slots, instances, taken, named = {}, {}, {}, {}, {}
local first = false
for _, c in ipairs(charges) do
  local u = c.usage
  u[1] = u[1] + mem
  u[2] = u[2] + cpu
  u[3] = u[3] + 1
  if dedicated then u[4] = u[4] + 1 end
  written[#written + 1] = c.key
  written[#written + 1] = string.format('%d %d %d %d', u[1], u[2], u[3], u[4])
  if c.slot then
    redis.call('SADD', K('slots:') .. c.key, c.slot)
    if c.reused then
      redis.call('ZREM', K('free:') .. c.key, c.slot)
    else
      redis.call('HSET', K('slothw'), c.key, c.slot + 1)
    end
    slots[#slots + 1] = c.json .. ':' .. int(c.slot)
    taken[#taken + 1] = c.key
    taken[#taken + 1] = int(c.slot)
    if first == false then first = c.slot end
    if c.names ~= '' then
      local n = 0
      for name in string.gmatch(c.names, '[^\n]+') do
        if n == c.slot then
          instances[#instances + 1] = c.json .. ':' .. name
          named[#named + 1] = c.key
          named[#named + 1] = name
          break
        end
        n = n + 1
      end
    end
  end
end
redis.call('HSET', K('usage'), unpack(written))
local token_text, stamp, expires_text = int(token), num(created), num(expires)
local lease_text = lease and num(lease)
local dynamic = ',"slot":' .. int(first or 0) .. ',"fencing_token":' .. token_text .. ',"slots":{'
  .. table.concat(slots, ',') .. '}'
if #instances > 0 then dynamic = dynamic .. ',"instances":{' .. table.concat(instances, ',') .. '}' end
local id = ARGV[7]
local record = '{' .. ARGV[20] .. id .. ARGV[21] .. ARGV[2] .. ARGV[22] .. ',"created_at":' .. stamp
  .. ',"expires_at":' .. expires_text .. dynamic
if lease then record = record .. ',"lease_expires_at":' .. lease_text end
record = record .. '}'
add_allocation(id, record, '{' .. ARGV[23] .. id .. ARGV[24] .. dynamic .. '}', due == expires and expires_text
  or lease_text, ARGV[19])
local seq = int(opened[1] + 1)
journal_push(opened, {'{"seq":' .. seq .. ',"time":' .. stamp .. ',"event":"grant",' .. ARGV[23] .. id
  .. ARGV[24] .. dynamic .. ',"limits":' .. ARGV[25] .. '}'})
redis.call('HSET', K('meta'), 'counter', token_text, 'seq', seq, 'version', int(tonumber(meta[5] or '0') + 1))
return {1, record, token_text .. ' ' .. stamp .. ' ' .. expires_text .. ' ' .. (lease_text or '-') .. '\n'
  .. table.concat(taken, '\t') .. '\n' .. table.concat(named, '\t')}
"""

# Release in one step when nobody waits (see RedisLedger.fast_release).
# ARGV: 1 prefix, 2 request id, 3 now or '', 4 ledger id this host knows or '', 5 the
#       counter it saw, 6 request ttl (ms), 7 journal max lines, 8 n, then n allocation
#       ids (each once), then n extra journal fields (JSON without braces, or '')
# Returns {1, record or false per id} or {0, why}.
_FAST_RELEASE = r"""
local meta = redis.call('HMGET', K('meta'), 'schema', 'id', 'counter', 'seq', 'version')
if not recognised(meta, ARGV[4], ARGV[5]) then return {0, 'ledger'} end
local why = busy()
if why then return {0, why} end
local n = tonumber(ARGV[8])
local ids = {}
for j = 1, n do ids[j] = ARGV[8 + j] end
local records = redis.call('HMGET', K('alloc'), unpack(ids))
local out, found, keys, seen, held = {1}, {}, {}, {}, {}
for j = 1, n do
  local record = records[j]
  out[j + 1] = record
  if record then
    local ok, a = pcall(cjson.decode, record)
    if not ok or type(a) ~= 'table' or type(a.charges) ~= 'table' or type(a.owner) ~= 'table'
        or type(a.owner.host) ~= 'string' or type(a.slots) ~= 'table' or type(a.memory_mb) ~= 'number'
        or type(a.cpu_percent) ~= 'number' then
      return {0, 'record'}
    end
    found[#found + 1] = j
    held[j] = {a = a, use = {a.memory_mb, math.floor(a.cpu_percent * 1000 + 0.5), 1, a.dedicated and 1 or 0}}
    for _, key in ipairs(a.charges) do
      if not seen[key] then seen[key] = true; keys[#keys + 1] = key end
    end
  end
end
if #found == 0 then return out end
local usage = {}
if #keys > 0 then
  local texts = redis.call('HMGET', K('usage'), unpack(keys))
  for k, key in ipairs(keys) do
    usage[key] = parse_usage(texts[k])
    if not usage[key] then return {0, 'usage'} end
  end
end
for _, j in ipairs(found) do
  for _, key in ipairs(held[j].a.charges) do
    for w = 1, 4 do
      usage[key][w] = usage[key][w] - held[j].use[w]
      if usage[key][w] < 0 then return {0, 'usage'} end
    end
  end
end
local recs = redis.call('HMGET', K('arec'), unpack(ids))
local now = now_of(ARGV[3])
local opened = journal_start(tonumber(meta[4] or '0'), tonumber(meta[3] or '0'), now, tonumber(ARGV[7]))
local seq, stamp, lines, gone = opened[1], num(ms(now)), {}, {}
for _, j in ipairs(found) do
  seq = seq + 1
  local head, rec = '{"seq":' .. int(seq) .. ',"time":' .. stamp .. ',"event":"release",', recs[j] or '{}'
  if ARGV[8 + n + j] ~= '' then
    lines[#lines + 1] = head .. string.sub(rec, 2, -2) .. ',' .. ARGV[8 + n + j] .. '}'
  else
    lines[#lines + 1] = head .. string.sub(rec, 2)
  end
  gone[#gone + 1] = ids[j]
  redis.call('SREM', K('host:') .. held[j].a.owner.host, ids[j])
  for key, index in pairs(held[j].a.slots) do
    redis.call('SREM', K('slots:') .. key, index)
    redis.call('ZADD', K('free:') .. key, index, index)
  end
end
redis.call('HDEL', K('alloc'), unpack(gone))
redis.call('HDEL', K('arec'), unpack(gone))
redis.call('ZREM', K('exp'), unpack(gone))
for _, key in ipairs(keys) do write_usage(key, usage[key]) end
journal_push(opened, lines)
redis.call('HSET', K('meta'), 'seq', int(seq), 'version', int(tonumber(meta[5] or '0') + 1))
local kept = {}
for j = 2, #out do kept[#kept + 1] = out[j] or '' end
redis.call('SET', K('req:') .. ARGV[2], table.concat(kept, '\n'), 'PX', ARGV[6])
return out
"""

# The journal's last lines, read from the end.  ARGV: 1 prefix, 2 how many
# Returns {seq or false, "1" when a schema-1 ledger waits to be upgraded, lines of
# journal.1 (only when journal holds fewer), lines of journal}.
_TAIL = r"""
local want = tonumber(ARGV[2])
local seq = redis.call('HGET', K('meta'), 'seq') or false
local old = '0'
if not seq then old = tostring(redis.call('EXISTS', K('ledger'))) end
local lines = redis.call('LRANGE', K('journal'), -want, -1)
local before = {}
if #lines < want then before = redis.call('LRANGE', K('journal.1'), -(want - #lines), -1) end
return {seq, old, before, lines}
"""

# Wake these waiters: one element in each one's list, at most.  ARGV: 1 prefix, 2 ttl (ms), 3... ids
_NOTIFY = r"""
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
wake(ids, ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Script:
    """A script's name, its body (with the shared functions first) and its SHA-1."""

    name: str
    body: bytes
    sha: str


def _script(name: str, body: str) -> Script:
    raw = (_needed(body) + body).encode()
    return Script(name, raw, hashlib.sha1(raw).hexdigest())


def _prelude_chunks() -> list[tuple[str | None, str, frozenset[str]]]:
    """The prelude in pieces: (the function a piece defines, or None for one every script
    keeps; its text, comments before it included; the shared functions it calls)."""
    chunks: list[list[Any]] = []
    pending = ""
    for line in _PRELUDE.splitlines(keepends=True):
        match = re.match(r"local function (\w+)\(", line)
        if match:
            chunks.append([match.group(1), pending + line])
        elif line.startswith("--"):
            pending += line
            continue
        elif chunks and chunks[-1][0] is not None and not line.startswith("local "):
            chunks[-1][1] += pending + line  # the body of the function above
        else:
            chunks.append([None, pending + line])
        pending = ""
    names = [n for n, _ in chunks if n is not None]
    return [(n, text, _calls(text, names) - {n}) for n, text in chunks]


def _calls(text: str, names: list[str]) -> frozenset[str]:
    return frozenset(re.findall(r"\b(\w+)\(", text)).intersection(names)


_CHUNKS = _prelude_chunks()


def _needed(body: str) -> str:
    """The shared functions ``body`` calls, and those they call, in the prelude's order
    (every call defines each one afresh: a script carries only what it uses)."""
    uses = {n: calls for n, _, calls in _CHUNKS if n is not None}
    wanted: set[str] = set()
    todo = set(_calls(body, list(uses)))
    while todo:
        name = todo.pop()
        wanted.add(name)
        todo |= uses[name] - wanted
    return "".join(text for n, text, _ in _CHUNKS if n is None or n in wanted)


BEGIN = _script("begin", _BEGIN)
COMMIT = _script("commit", _COMMIT)
UNLOCK = _script("unlock", _UNLOCK)
FAST_GRANT = _script("fast_grant", _FAST_GRANT)
FAST_RELEASE = _script("fast_release", _FAST_RELEASE)
TAIL = _script("tail", _TAIL)
NOTIFY = _script("notify", _NOTIFY)
ALL = (BEGIN, COMMIT, UNLOCK, FAST_GRANT, FAST_RELEASE, TAIL, NOTIFY)
