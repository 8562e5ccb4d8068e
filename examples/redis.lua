-- redis.lua: a Redis-compatible (RESP2) in-memory store.
--   moonring examples/redis.lua        then: redis-cli -p 7000
--
-- PING ECHO SET (EX PX EXAT PXAT NX XX) GET DEL EXISTS INCR DECR INCRBY
-- DECRBY MGET MSET EXPIRE PEXPIREAT TTL KEYS DBSIZE FLUSHALL, plus what redis-cli and
-- redis-benchmark send when they start (COMMAND, CONFIG GET, CLIENT,
-- SELECT, INFO), QUIT, and inline commands ("PING\r\n" from telnet).
-- The data lives in moonring.keep, so it survives hot reloads; or, given
-- a shared dictionary named redis (moonring -w 2 --shared redis:64m
-- examples/redis.lua), in that, so that every worker sees every key,
-- INCR is exact whichever worker runs it, and the data outlives a worker
-- that dies. There the dictionary's least recently used keys make room
-- when it is full, as Redis's allkeys-lru would. Errors are RESP errors;
-- a protocol error also closes the connection, as in Redis.
--
-- The protocol is read strictly: the lengths in "*N" and "$N" are plain
-- decimal numbers ("0", or digits without a leading zero; no sign, space,
-- "0x", "4.0" or "1e3"), and the only negative one is "*-1", the null
-- array, which like "*0" is no command at all. Anything else, or a
-- length past a limit below, gets "-ERR Protocol error: ..." and a close.
-- A command is parsed as it comes, however it is cut into reads: what
-- has been read of it is kept (the arguments so far, and the bytes of an
-- unfinished one in pieces, joined once it is all there), so a command
-- costs time linear in its size. Parsing it again from its start on every
-- read would make a long command of short arguments quadratic: one of a
-- million one-byte arguments took 27 s of CPU that way, and 0.1 s now.
--
-- Persistence, off by default: an append-only file, as Redis's AOF.
--   moonring examples/redis.lua --aof FILE [--appendfsync everysec|always|no]
-- Every command that changed the data (SET, DEL, INCR/DECR/INCRBY/DECRBY,
-- MSET, EXPIRE, PEXPIREAT, FLUSHALL/FLUSHDB) is appended to FILE in RESP
-- once it has run, with its times to live as absolute wall-clock times
-- (SET key value PXAT ms, PEXPIREAT key ms; an INCR as INCRBY, which
-- keeps the TTL; a SET NX/XX that was done as a plain SET), so that a
-- replay neither extends nor loses them. At start the file is replayed,
-- 1 MiB at a time, with the parser below, before any command is answered:
-- what clients send meanwhile waits and runs after it. A last command cut
-- short (a kill -9 during a write) is dropped with a warning and cut off
-- the file; any other bad record stops the server with its byte offset.
-- The writes go through mr.fs from one coroutine, one write per turn of
-- the loop with what that turn's commands recorded. What a crash loses:
--   everysec (default): fsync once a second. After kill -9 nothing that
--     was written is lost (it is in the page cache), that is every reply
--     but those of the last turn or so; after a power loss or a kernel
--     crash, up to about the last second of acknowledged writes.
--   always: fsync after each write, and every reply waits for the fsync
--     of the records before it, so an acknowledged write is on disk (the
--     price: a round trip to the disk per batch). A failing fsync exits.
--   no: no fsync; the kernel writes back when it likes (about 30 s).
-- It needs one worker (-w 1, the default): under -w 2 each worker would
-- write its records in its own order, so the script does not load with
-- more than one (mr.workers()) and the start stops. With --shared redis:SIZE (and one worker)
-- the replay fills the dictionary.
local mr = require "moonring"

-- Limits. Redis allows 1024 * 1024 arguments too (before 7.0) and
-- 512 MB in one argument (proto-max-bulk-len); here everything lives in
-- one Lua heap (1 GiB by default, --lua-memory), so an argument, and a
-- whole command, which is held in memory before it runs, get less.
local MAX_ARGS = 1024 * 1024          -- arguments in one command
local MAX_BULK = 64 * 1024 * 1024     -- bytes in one argument
local MAX_COMMAND = 128 * 1024 * 1024 -- bytes in all of one command's arguments
local MAX_INLINE = 64 * 1024          -- bytes in an inline command (as Redis)
local MAX_LENGTH = 16                 -- bytes in a "*N" or "$N" line, CRLF aside

local find, sub, byte, upper, format, concat =
  string.find, string.sub, string.byte, string.upper, string.format, table.concat
local floor, huge = math.floor, math.huge

local state = mr.keep("redis", { db = {}, exp = {}, size = 0 })
local shared = mr.shared.redis

-- Arguments: --aof FILE [--appendfsync everysec|always|no]
local AOF_PATH, FSYNC = nil, "everysec"
do
  local i = 1
  while arg[i] do
    local a, v = arg[i], arg[i + 1]
    if a == "--aof" and v then AOF_PATH = v
    elseif a == "--appendfsync" and (v == "everysec" or v == "always" or v == "no") then FSYNC = v
    else
      error("redis.lua: bad argument '" .. a .. "' (usage: redis.lua [--aof FILE "
        .. "[--appendfsync everysec|always|no]])", 0)
    end
    i = i + 2
  end
end
-- The append-only file's state, kept across reloads: pending (the
-- encoded records not yet written: n pieces), replies (with always: nr/3
-- replies waiting for the next fsync), the writer coroutine (co) and
-- whether it is parked (waiting for work, resumable by the command path),
-- loaded (the replay is done), dirty (written since the last fsync),
-- sync_due (the timer asks for an fsync), held (connections whose input
-- waits for the replay).
local aof = AOF_PATH and mr.keep("redis_aof", { pending = {}, n = 0, replies = {}, nr = 0,
  loaded = false, parked = false, dirty = false, sync_due = false, held = {} })

-- Keys with a time to live: remove them when touched after their time,
-- and sample a few every 100 ms so that unread ones go too.
local function expired(key, now)
  local t = state.exp[key]
  if t and t <= (now or mr.now()) then
    state.exp[key] = nil
    if state.db[key] ~= nil then state.db[key] = nil; state.size = state.size - 1 end
    return true
  end
  return false
end

if state.sweeper then state.sweeper:cancel(); state.sweeper = nil end   -- the old version's, on reload
if not shared then
  state.sweeper = mr.every(0.1, function()
    local now, n = mr.now(), 0
    for key in pairs(state.exp) do
      expired(key, now)
      n = n + 1
      if n >= 100 then break end
    end
  end)
end

-- The store: get, set (ttl: seconds, nil for none; nx/xx: only if the
-- key is absent/present, returning false when not done), del (1 if
-- there was a key), incr (the new number, or nil), expire, ttl (seconds
-- left, false for none, nil for no key), keys, size, flush.
local store = {}

function store.get(key)
  if state.exp[key] then expired(key) end
  return state.db[key]
end

function store.set(key, value, ttl, nx, xx)
  local exists = store.get(key) ~= nil
  if (nx and exists) or (xx and not exists) then return false end
  if not exists then state.size = state.size + 1 end
  state.db[key] = value
  state.exp[key] = ttl and mr.now() + ttl or nil
  return true
end

function store.del(key)
  if store.get(key) == nil then return 0 end
  state.db[key] = nil
  state.exp[key] = nil
  state.size = state.size - 1
  return 1
end

local function to_int(s)
  if type(s) ~= "string" or not find(s, "^%-?%d+$") or #s > 17 then return nil end
  return tonumber(s)
end

function store.incr(key, by)
  local v = store.get(key)
  local n = v == nil and 0 or to_int(v)
  if not n then return nil end
  n = n + by
  if n >= 2 ^ 53 or n <= -2 ^ 53 then return nil end
  state.db[key] = format("%d", n)
  if v == nil then state.size = state.size + 1 end
  return n
end

function store.expire(key, s)
  if store.get(key) == nil then return false end
  if s <= 0 then store.del(key) else state.exp[key] = mr.now() + s end
  return true
end

function store.ttl(key)
  if store.get(key) == nil then return nil end
  local t = state.exp[key]
  return t and t - mr.now() or false
end

function store.keys(now)
  local out = {}
  for key in pairs(state.db) do
    if not expired(key, now) then out[#out + 1] = key end
  end
  return out
end

function store.size() return state.size end

function store.flush() state.db, state.exp, state.size = {}, {}, 0 end

-- The same on the shared dictionary. An integer in canonical form ("42",
-- not "042" or "+4") is kept as a number, so that INCR is one atomic
-- incr of the dictionary; GET turns it back into the same string.
if shared then
  local d = shared
  local function stored(v)
    local n = to_int(v)
    if n and format("%d", n) == v then return n end
    return v
  end
  function store.get(key)
    local v = d:get(key)
    if type(v) == "number" then return format("%d", v) end
    return v
  end
  function store.set(key, value, ttl, nx, xx)
    local f = nx and d.add or xx and d.replace or d.set
    local ok, e = f(d, key, stored(value), ttl or 0)
    if ok then return true end
    if e == "exists" or e == "not found" then return false end
    return nil, e
  end
  function store.del(key) return d:delete(key) and 1 or 0 end
  function store.incr(key, by)
    local n, e = d:incr(key, by, 0)
    if not n then
      if e ~= "not a number" then return nil end
      -- a string such as "007": INCR as Redis would, not atomically
      local v = to_int(d:get(key))
      if not v then return nil end
      n = v + by
      d:set(key, n, d:ttl(key) or 0)
    end
    if n >= 2 ^ 53 or n <= -2 ^ 53 then d:incr(key, -by); return nil end
    return n
  end
  function store.expire(key, s)
    if s <= 0 then return d:delete(key) end
    return d:expire(key, s) ~= nil
  end
  function store.ttl(key)
    local t = d:ttl(key)
    if t == nil then return nil end
    return t > 0 and t or false
  end
  function store.keys() return d:keys(0) end
  function store.size() return #d:keys(0) end
  function store.flush() d:flush_all() end
end

local get, del = store.get, store.del

-- RESP replies
local OK, NIL, PONG = "+OK\r\n", "$-1\r\n", "+PONG\r\n"
local function bulk(s) return "$" .. #s .. "\r\n" .. s .. "\r\n" end
local function int(n) return ":" .. format("%d", n) .. "\r\n" end
local function err(msg) return "-" .. msg .. "\r\n" end
local function array(items)
  local out = { "*" .. #items .. "\r\n" }
  for i = 1, #items do out[i + 1] = items[i] == nil and NIL or bulk(items[i]) end
  return concat(out)
end
local function arity(name) return err("ERR wrong number of arguments for '" .. name .. "' command") end
local NOT_INT = err("ERR value is not an integer or out of range")
local SYNTAX = err("ERR syntax error")

-- The append-only file: record(args) adds a command's RESP encoding to
-- the pieces waiting for the writer (see below), once the file has been
-- replayed (aof.loaded; never while it is).
local LEN, ARGC = {}, {}   -- "$N\r\n" and "*N\r\n" of the small numbers, made once
for i = 0, 64 do LEN[i], ARGC[i] = "$" .. i .. "\r\n", "*" .. i .. "\r\n" end
local function record(a)
  local p, n = aof.pending, aof.n
  n = n + 1
  p[n] = ARGC[#a] or "*" .. #a .. "\r\n"
  for i = 1, #a do
    local s = a[i]
    p[n + 1], p[n + 2], p[n + 3] = LEN[#s] or "$" .. #s .. "\r\n", s, "\r\n"
    n = n + 3
  end
  aof.n = n
end

local function incr(key, by)
  if not by then return NOT_INT end
  local n = store.incr(key, by)
  if not n then return NOT_INT end
  if aof and aof.loaded then record({ "INCRBY", key, format("%d", by) }) end   -- keeps the key's TTL
  return int(n)
end

-- KEYS pattern: glob matching (* ? [abc] [^a-z] \x) in O(pattern x key)
-- time, going back only to the last "*" on a mismatch: a Lua pattern
-- would backtrack over every "*" and a hostile pattern could hang us.
local function class_at(p, i, c)
  -- the class starting at p[i] == "[": does it hold c? returns ok, next i
  local j, negate, ok = i + 1, false, false
  if sub(p, j, j) == "^" then negate, j = true, j + 1 end
  while j <= #p and sub(p, j, j) ~= "]" do
    local lo = sub(p, j, j)
    if lo == "\\" and j < #p then j = j + 1; lo = sub(p, j, j) end
    if sub(p, j + 1, j + 1) == "-" and j + 2 <= #p and sub(p, j + 2, j + 2) ~= "]" then
      local hi = sub(p, j + 2, j + 2)
      if c >= lo and c <= hi then ok = true end
      j = j + 3
    else
      if c == lo then ok = true end
      j = j + 1
    end
  end
  return ok ~= negate, j + 1
end

local function glob_match(p, s)
  local pi, si, star_p, star_s = 1, 1, nil, nil
  while si <= #s do
    local pc, sc = sub(p, pi, pi), sub(s, si, si)
    local matched, next_pi = false, pi + 1
    if pc == "*" then
      star_p, star_s, pi = pi, si, pi + 1
      goto continue
    elseif pc == "?" then matched = pi <= #p
    elseif pc == "[" then matched, next_pi = class_at(p, pi, sc)
    elseif pc == "\\" and pi < #p then matched, next_pi = sub(p, pi + 1, pi + 1) == sc, pi + 2
    else matched = pi <= #p and pc == sc end
    if matched then
      pi, si = next_pi, si + 1
    elseif star_p then
      star_s = star_s + 1
      pi, si = star_p + 1, star_s
    else
      return false
    end
    ::continue::
  end
  while sub(p, pi, pi) == "*" do pi = pi + 1 end
  return pi > #p
end

local commands = {}

commands.PING = function(a)
  if #a == 1 then return PONG end
  if #a == 2 then return bulk(a[2]) end
  return arity("ping")
end

commands.ECHO = function(a) return #a == 2 and bulk(a[2]) or arity("echo") end

commands.SET = function(a)
  if #a < 3 then return arity("set") end
  local key, value, at, nx, xx = a[2], a[3], nil, false, false
  local i = 4
  while i <= #a do
    local opt = upper(a[i])
    if (opt == "EX" or opt == "PX" or opt == "EXAT" or opt == "PXAT") and not at and i < #a then
      local n = to_int(a[i + 1])
      if not n or n <= 0 then return err("ERR invalid expire time in 'set' command") end
      if opt == "PX" or opt == "PXAT" then n = n / 1000 end
      at = (opt == "EX" or opt == "PX") and mr.now() + n or n   -- when, in wall-clock seconds
      i = i + 2
    elseif opt == "NX" and not xx then nx = true; i = i + 1
    elseif opt == "XX" and not nx then xx = true; i = i + 1
    else return SYNTAX end
  end
  local ttl = at and at - mr.now()
  local ok, e = store.set(key, value, ttl and (ttl > 0 and ttl or 1), nx, xx)
  if ok == false then return NIL end
  if not ok then return err("OOM " .. e) end
  if ttl and ttl <= 0 then store.del(key) end   -- an EXAT/PXAT in the past
  if aof and aof.loaded then
    -- NX/XX did their work: what is left to replay is a plain SET, with
    -- the time to live as an absolute time, so that a replay keeps it
    if at then record({ "SET", key, value, "PXAT", format("%d", floor(at * 1000 + 0.5)) })
    elseif #a == 3 then record(a)
    else record({ "SET", key, value }) end
  end
  return OK
end

commands.GET = function(a)
  if #a ~= 2 then return arity("get") end
  local v = get(a[2])
  return v == nil and NIL or bulk(v)
end

commands.DEL = function(a)
  if #a < 2 then return arity("del") end
  local n = 0
  for i = 2, #a do n = n + del(a[i]) end
  if aof and aof.loaded and n > 0 then record(a) end
  return int(n)
end

commands.EXISTS = function(a)
  if #a < 2 then return arity("exists") end
  local n = 0
  for i = 2, #a do if get(a[i]) ~= nil then n = n + 1 end end
  return int(n)
end

commands.INCR = function(a) return #a == 2 and incr(a[2], 1) or arity("incr") end
commands.DECR = function(a) return #a == 2 and incr(a[2], -1) or arity("decr") end
commands.INCRBY = function(a) return #a == 3 and incr(a[2], to_int(a[3])) or arity("incrby") end
commands.DECRBY = function(a)
  local by = to_int(a[3])
  return #a == 3 and incr(a[2], by and -by) or arity("decrby")
end

commands.MGET = function(a)
  if #a < 2 then return arity("mget") end
  local out = { "*" .. (#a - 1) .. "\r\n" }
  for i = 2, #a do
    local v = get(a[i])
    out[i] = v == nil and NIL or bulk(v)
  end
  return concat(out)
end

commands.MSET = function(a)
  if #a < 3 or #a % 2 == 0 then return arity("mset") end
  for i = 2, #a, 2 do
    local ok, e = store.set(a[i], a[i + 1])
    if not ok then
      if aof and aof.loaded and i > 2 then record({ "MSET", unpack(a, 2, i - 1) }) end   -- those set
      return err("OOM " .. e)
    end
  end
  if aof and aof.loaded then record(a) end
  return OK
end

-- Expire key at wall-clock time at (seconds); written as PEXPIREAT, or
-- as DEL when that time has passed already.
local function expire_at(key, at)
  local now = mr.now()
  if not store.expire(key, at - now) then return int(0) end
  if aof and aof.loaded then
    if at <= now then record({ "DEL", key })
    else record({ "PEXPIREAT", key, format("%d", floor(at * 1000 + 0.5)) }) end
  end
  return int(1)
end

commands.EXPIRE = function(a)
  if #a ~= 3 then return arity("expire") end
  local s = to_int(a[3])
  if not s then return NOT_INT end
  return expire_at(a[2], mr.now() + s)
end

commands.PEXPIREAT = function(a)
  if #a ~= 3 then return arity("pexpireat") end
  local ms = to_int(a[3])
  if not ms then return NOT_INT end
  return expire_at(a[2], ms / 1000)
end

commands.TTL = function(a)
  if #a ~= 2 then return arity("ttl") end
  local t = store.ttl(a[2])
  if t == nil then return int(-2) end
  if not t then return int(-1) end
  return int(floor(t + 0.5))
end

commands.KEYS = function(a)
  if #a ~= 2 then return arity("keys") end
  local pat, out = a[2], {}
  for _, key in ipairs(store.keys(mr.now())) do
    if glob_match(pat, key) then out[#out + 1] = key end
  end
  return array(out)
end

commands.DBSIZE = function(a) return #a == 1 and int(store.size()) or arity("dbsize") end

commands.FLUSHALL = function()
  store.flush()
  if aof and aof.loaded then record({ "FLUSHALL" }) end
  return OK
end
commands.FLUSHDB = commands.FLUSHALL

-- What clients send when they start.
commands.COMMAND = function() return "*0\r\n" end
commands.CONFIG = function(a)
  if a[2] and upper(a[2]) == "GET" and a[3] then
    local v = ({ save = "", appendonly = "no", databases = "1" })[a[3]]
    return v and array({ a[3], v }) or "*0\r\n"
  end
  return err("ERR CONFIG subcommand not supported")
end
commands.CLIENT = function() return OK end
commands.SELECT = function(a)
  return a[2] == "0" and OK or err("ERR DB index is out of range")
end
commands.INFO = function()
  return bulk("# Server\r\nredis_version:7.0.0\r\nmoonring:1\r\n# Keyspace\r\ndb0:keys=" .. store.size()
    .. "\r\n# Moonring\r\nmoonring_worker:" .. mr.worker() .. "\r\n")
end

-- A strict RESP length: buf[i, j] is "0", or decimal digits without a
-- leading zero, after a "-" for a negative one. Returns it, or nil.
local function length(buf, i, j)
  local negative = byte(buf, i) == 45   -- '-'
  if negative then i = i + 1 end
  if i > j then return nil end
  local n = byte(buf, i) - 48
  if n == 0 and i == j and not negative then return 0 end
  if n < 1 or n > 9 then return nil end
  for k = i + 1, j do
    local d = byte(buf, k) - 48
    if d < 0 or d > 9 then return nil end
    n = n * 10 + d
  end
  return negative and -n or n
end

-- The length on the "*N\r\n" or "$N\r\n" line whose marker is at pos:
-- returns it and the position after the line; nil when the line has not
-- all come; false when it is not a length (or too long to be one).
local function length_line(buf, pos)
  local e = find(buf, "\r\n", pos + 1, true)
  if not e then
    if #buf - pos > MAX_LENGTH then return false end
    return nil
  end
  if e - pos - 1 > MAX_LENGTH then return false end
  return length(buf, pos + 1, e - 1) or false, e + 2
end

local NOTHING = {}   -- "*0", "*-1", an empty inline line: nothing to run

-- An inline command: words separated by spaces, up to a "\n".
local function inline(buf, pos)
  local e = find(buf, "\n", pos, true)
  if not e then
    if #buf - pos + 1 > MAX_INLINE then return false, "too big inline request" end
    return nil, pos, MAX_INLINE + 1, true
  end
  if e - pos > MAX_INLINE then return false, "too big inline request" end
  local last = byte(buf, e - 1) == 13 and e - 2 or e - 1   -- without a CR
  local line = sub(buf, pos, last)
  if line ~= "" and not find(line, " ", 1, true) and not find(line, "\t", 1, true)
    and not find(line, "\r", 1, true) and not find(line, "\v", 1, true)
    and not find(line, "\f", 1, true) then
    return { line }, e + 1   -- one word, as from "PING\r\n"
  end
  local args = {}
  for word in line:gmatch("[^%s]+") do args[#args + 1] = word end
  return #args > 0 and args or NOTHING, e + 1
end

-- Parse the next command from buf at pos, going on with the one st holds
-- partly read (st.args, the arguments so far: st.nargs of st.argc; st.bulk,
-- the length of the next one when its "$N" line has been read, else -1).
-- Returns
--   args, pos               a whole command, and the position after it
--   nil, pos, need, line    buf from pos on is part of a command that has
--                           not all come: parse again from there once need
--                           bytes are there, or (line) once a "\n" comes
--   false, message          a protocol error
local function parse(st, buf, pos)
  local len, args = #buf, st.args
  if not args then
    if byte(buf, pos) ~= 42 then return inline(buf, pos) end   -- '*'
    local argc, nxt = length_line(buf, pos)
    if argc == nil then return nil, pos, MAX_LENGTH + 3, true end
    if not argc or argc < -1 or argc > MAX_ARGS then return false, "invalid multibulk length" end
    if argc <= 0 then return NOTHING, nxt end
    args, pos = {}, nxt
    st.args, st.argc, st.nargs, st.bulk, st.size = args, argc, 0, -1, 0
  end
  local argc, nargs, bulk = st.argc, st.nargs, st.bulk
  while nargs < argc do
    if bulk < 0 then   -- the "$N" line
      if pos > len then
        st.nargs, st.bulk = nargs, -1
        return nil, pos, MAX_LENGTH + 3, true
      end
      if byte(buf, pos) ~= 36 then   -- '$'
        return false, "expected '$', got '" .. sub(buf, pos, pos) .. "'"
      end
      local nxt
      bulk, nxt = length_line(buf, pos)
      if bulk == nil then
        st.nargs, st.bulk = nargs, -1
        return nil, pos, MAX_LENGTH + 3, true
      end
      if not bulk or bulk < 0 or bulk > MAX_BULK then return false, "invalid bulk length" end
      st.size = st.size + bulk
      if st.size > MAX_COMMAND then return false, "too big command" end
      pos = nxt
    end
    if len - pos + 1 < bulk + 2 then   -- the argument and its CRLF
      st.nargs, st.bulk = nargs, bulk
      return nil, pos, bulk + 2, false
    end
    if byte(buf, pos + bulk) ~= 13 or byte(buf, pos + bulk + 1) ~= 10 then
      return false, "invalid bulk format"
    end
    nargs = nargs + 1
    args[nargs] = sub(buf, pos, pos + bulk - 1)
    pos, bulk = pos + bulk + 2, -1
  end
  st.args = nil
  return args, pos
end

local function run(name, args)
  local cmd = commands[name]
  if not cmd then
    local preview = {}
    for i = 2, math.min(#args, 4) do preview[#preview + 1] = "'" .. sub(args[i], 1, 64) .. "'" end
    return err("ERR unknown command '" .. sub(args[1], 1, 64) .. "', with args beginning with: "
      .. concat(preview, " "))
  end
  return cmd(args)
end

-- Bytes arrive in pieces. Those of a command that has not all come are
-- kept in st.parts (st.n pieces, st.have bytes), and joined only when
-- parse can go on: once st.need bytes are there, or when it waits for the
-- end of a line (st.line) and a piece holds a "\n". So a large argument
-- is not copied once per piece, and a command is never parsed again from
-- its start. The usual case, whole commands in one piece, allocates no
-- table: one reply is sent as it is, several (pipelining) are joined
-- into one send.
local function new_state()
  return { parts = {}, n = 0, have = 0, need = 0, line = false,
           args = nil, argc = 0, nargs = 0, bulk = -1, size = 0 }
end

local hold, wake   -- the append-only file's (below)
-- With --appendfsync always, replies wait for the fsync of the records
-- before them: answer queues one (and a close after it) for the writer.
local ALWAYS = aof and FSYNC == "always"
local function answer(conn, data, close)
  local r, n = aof.replies, aof.nr
  r[n + 1], r[n + 2], r[n + 3] = conn, data, close or false
  aof.nr = n + 3
end

local function on_data(conn, data)
  if aof and not aof.loaded then return hold(conn, data) end
  local st = conn.st
  if not st then   -- a connection opened before a reload to this version
    st = new_state()
    conn.st = st
  end
  local n, have = st.n, st.have + #data
  if have < st.need and not (st.line and find(data, "\n", 1, true)) then
    n = n + 1
    st.parts[n], st.n, st.have = data, n, have
    return
  end
  local buf = data
  if n > 0 then
    st.parts[n + 1] = data
    buf = concat(st.parts, "", 1, n + 1)
    st.parts = {}   -- let go of the pieces
  end
  local len, pos, first, out, nout = #buf, 1, nil, nil, 0
  st.need, st.line = 0, false
  while pos <= len or st.args do
    local args, nxt, need, line = parse(st, buf, pos)
    if args == false then
      local last = concat({ first or "", out and concat(out, "", 2) or "",
        err("ERR Protocol error: " .. nxt) })
      if ALWAYS then answer(conn, last, true) else conn:send(last); conn:close() end
      if aof then wake() end
      return
    end
    pos = nxt
    if args == nil then
      st.need, st.line = need, line
      break
    end
    if args ~= NOTHING then
      local name = upper(args[1])
      local reply = name == "QUIT" and OK or run(name, args)
      nout = nout + 1
      if nout == 1 then first = reply
      elseif nout == 2 then out = { first, reply }
      else out[nout] = reply end
      if name == "QUIT" then
        local last = nout == 1 and first or concat(out)
        if ALWAYS then answer(conn, last, true) else conn:send(last); conn:close() end
        if aof then wake() end
        return
      end
    end
  end
  if pos > len then
    st.n, st.have = 0, 0
  else
    local rest = pos == 1 and buf or sub(buf, pos)
    st.parts[1], st.n, st.have = rest, 1, #rest
  end
  if ALWAYS then
    if nout > 0 then answer(conn, nout == 1 and first or concat(out)) end
  elseif nout == 1 then conn:send(first) elseif nout > 1 then conn:send(concat(out)) end
  if aof then wake() end   -- after the replies: they go out in the same submission
end

-- The append-only file (--aof FILE). Every command that changed the data
-- is recorded (record, above) once it has run, in RESP as Redis's AOF,
-- TTLs as absolute times (SET ... PXAT ms, PEXPIREAT key ms). The writer
-- coroutine first replays the file, then writes what the commands left
-- in aof.pending: all of it in one write, joined once. When it has nothing
-- to do it parks (a plain coroutine.yield, which the loop takes as a
-- wait for nothing), and the end of on_data, after its replies have been
-- queued, resumes it if something was recorded: so the records of one
-- turn of the loop go out in the same submission as its replies, at no
-- cost when idle, and while a write is in flight the next ones gather
-- for the write after it. fsync is once a second (everysec) by a timer
-- that asks the writer for it, or never (no).
local CHUNK = 1024 * 1024   -- bytes read at a time when replaying

function wake()
  if aof.parked and (aof.n > 0 or aof.nr > 0 or aof.sync_due) then
    aof.parked = false
    local ok, e = coroutine.resume(aof.co)
    if not ok then mr.log("error", "redis.lua: the AOF writer failed: " .. tostring(e)) end
  end
end

-- Before the replay is done, what clients send waits, in order, in
-- conn.held (up to MAX_HELD bytes a connection), for hold's release.
local MAX_HELD = 16 * 1024 * 1024
function hold(conn, data)
  local h = conn.held
  if not h then
    h = { bytes = 0 }
    conn.held = h
    aof.held[#aof.held + 1] = conn
  end
  h.bytes = h.bytes + #data
  if h.bytes > MAX_HELD then
    conn:send(err("LOADING Redis is loading the dataset in memory"))
    conn:close()
    return
  end
  h[#h + 1] = data
end

local function release()
  local conns = aof.held
  aof.held = {}
  for _, conn in ipairs(conns) do
    local h = conn.held
    conn.held = nil
    for i = 1, #h do on_data(conn, h[i]) end
  end
end

-- The commands a file may hold, as this example writes them and as Redis
-- may (SELECT 0 aside, which it writes first).
local REPLAY = { SET = true, DEL = true, INCR = true, DECR = true, INCRBY = true,
  DECRBY = true, MSET = true, EXPIRE = true, PEXPIREAT = true, FLUSHALL = true,
  FLUSHDB = true, SELECT = true }

-- Copy the first len bytes of path to a new file and rename it over
-- path: how a truncated last record is cut off (mr.fs has no ftruncate),
-- so that the next records do not follow a broken one.
local function cut(path, len)
  local tmp = path .. ".cut-" .. mr.worker()
  local src = assert(mr.fs.open(path, "r"))
  local dst = assert(mr.fs.open(tmp, "w"))
  local off = 0
  while off < len do
    local d = assert(src:read(math.min(CHUNK, len - off), off))
    if d == "" then break end
    assert(dst:write(d))
    off = off + #d
  end
  assert(dst:sync())
  dst:close(); src:close()
  assert(mr.fs.rename(tmp, path))
end

-- Replay path: read it CHUNK bytes at a time and run its commands. A
-- command cut off at the end (a write that a kill -9 interrupted) is
-- dropped with a log line, as Redis's aof-load-truncated; anything else
-- that is not a command stops the worker with the offset of the record.
-- Pieces are kept and joined as on_data does, so it is linear in the
-- file's size however the records fall across the chunks.
local function replay(path)
  local f, e = mr.fs.open(path, "r")
  if not f then
    if e == "No such file or directory" then return 0 end
    error("redis.lua: cannot open the AOF " .. path .. ": " .. e, 0)
  end
  local st, parts, np, have, need, line = new_state(), {}, 0, 0, 0, false
  local off, base, good, count = 0, 0, 0, 0   -- base: the offset of parts[1]
  local function corrupt(why)
    error(format("redis.lua: bad record in the AOF %s at byte %d (%s): fix or remove the "
      .. "file (redis-check-aof --fix %s)", path, good, why, path), 0)
  end
  while true do
    local data, re = f:read(CHUNK)
    if not data then error("redis.lua: reading the AOF " .. path .. ": " .. re, 0) end
    if data == "" then break end
    if np == 0 then base = off end
    off = off + #data
    have = have + #data
    np = np + 1
    parts[np] = data
    if have >= need or (line and find(data, "\n", 1, true)) then
      local buf = np == 1 and data or concat(parts, "", 1, np)
      parts, np, have = {}, 0, 0
      local len, pos = #buf, 1
      need, line = 0, false
      while pos <= len or st.args do
        if not st.args and byte(buf, pos) ~= 42 then corrupt("not a '*' array") end
        local args, nxt, nd, ln = parse(st, buf, pos)
        if args == false then corrupt(nxt) end
        pos = nxt
        if args == nil then need, line = nd, ln; break end
        if args ~= NOTHING then
          local name = upper(args[1])
          if not REPLAY[name] then corrupt("not a write command: " .. sub(args[1], 1, 64)) end
          local reply = commands[name](args)
          if byte(reply) == 45 then corrupt(name .. " failed: " .. sub(reply, 2, -3)) end
          count = count + 1
        end
        good = base + pos - 1
      end
      if pos <= len then
        local rest = pos == 1 and buf or sub(buf, pos)
        parts[1], np, have, base = rest, 1, #rest, base + pos - 1
      end
    end
  end
  f:close()
  if good < off then
    mr.log("warn", format("redis.lua: the AOF %s ends with a truncated command (%d bytes "
      .. "from byte %d), dropped and cut off the file", path, off - good, good))
    cut(path, good)
  end
  return count, off
end

local function writer()
  local t0 = mr.now()
  local count, size = replay(AOF_PATH)
  mr.log("info", format("redis.lua: replayed %d commands (%d bytes) from %s in %.3f s",
    count, size or 0, AOF_PATH, mr.now() - t0))
  local f = assert(mr.fs.open(AOF_PATH, "a"))
  aof.file, aof.loaded = f, true
  release()
  while true do
    if aof.sync_due then   -- first: under a steady load there is always a write to do
      aof.sync_due = false
      local ok, e = f:sync()
      if not ok then mr.log("error", "redis.lua: fsync of the AOF " .. AOF_PATH .. ": " .. e) end
    elseif aof.n > 0 or aof.nr > 0 then
      local replies, nr = aof.replies, aof.nr   -- always: what waits for this batch
      aof.replies, aof.nr = {}, 0
      if aof.n > 0 then
        -- the table is used again (not grown afresh each time); pieces
        -- past n are stale and are overwritten by the next records
        local buf = concat(aof.pending, "", 1, aof.n)
        aof.n = 0
        local ok, e = f:write(buf)
        while not ok do   -- a full disk: keep the records and try again
          mr.log("error", "redis.lua: writing the AOF " .. AOF_PATH .. ": " .. e .. "; retrying in 1 s")
          mr.sleep(1)
          ok, e = f:write(buf)
        end
        aof.dirty = true
        if ALWAYS then
          ok, e = f:sync()
          if not ok then   -- as Redis: what was promised cannot be kept
            mr.log("error", "redis.lua: fsync of the AOF " .. AOF_PATH .. " failed under "
              .. "--appendfsync always (" .. e .. "): exiting")
            os.exit(1)
          end
        end
      end
      for i = 1, nr, 3 do
        local conn = replies[i]
        conn:send(replies[i + 1])
        if replies[i + 2] then conn:close() end
      end
    else
      aof.parked = true
      coroutine.yield()   -- until wake()
    end
  end
end

if aof then
  if mr.workers() > 1 then
    -- Each worker would write its own records in its own order, and the
    -- file would not replay to what clients saw: refuse (see the README).
    error("redis.lua: --aof works with one worker only: run moonring with -w 1 ("
      .. mr.workers() .. " workers asked for)", 0)
  elseif not aof.co then   -- (on a reload, the writer runs already, with the old code)
    aof.co = mr.spawn(function()
      aof.co = coroutine.running()
      local _, e = pcall(writer)   -- returns only by an error
      -- a file that cannot be replayed, or a writer that broke: stop,
      -- rather than serve without the data or without keeping it
      mr.log("error", tostring(e))
      os.exit(1)
    end)
  end
  if aof then
    if aof.syncer then aof.syncer:cancel(); aof.syncer = nil end
    if FSYNC == "everysec" then
      aof.syncer = mr.every(1, function()
        if aof.dirty then
          aof.dirty, aof.sync_due = false, true
          wake()
        end
      end)
    end
  end
end

return {
  on_open = function(conn) conn.st = new_state() end,
  on_data = on_data,
}
