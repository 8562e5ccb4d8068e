-- redis.lua: a Redis-compatible (RESP2) in-memory store.
--   moonring examples/redis.lua        then: redis-cli -p 7000
--
-- PING ECHO SET (EX PX NX XX) GET DEL EXISTS INCR DECR INCRBY MGET MSET
-- EXPIRE TTL KEYS DBSIZE FLUSHALL, plus what redis-cli and
-- redis-benchmark send when they start (COMMAND, CONFIG GET, CLIENT,
-- SELECT, INFO), QUIT, and inline commands ("PING\r\n" from telnet).
-- The data lives in moonring.keep, so it survives hot reloads. Errors are
-- RESP errors; a protocol error also closes the connection.
local mr = require "moonring"

local MAX_BULK = 64 * 1024 * 1024   -- bytes in one argument
local MAX_ARGS = 1024 * 1024        -- arguments in one command
local MAX_INLINE = 64 * 1024        -- bytes in an inline command

local find, sub, byte, upper, format, concat =
  string.find, string.sub, string.byte, string.upper, string.format, table.concat
local floor, huge = math.floor, math.huge

local state = mr.keep("redis", { db = {}, exp = {}, size = 0 })

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

if state.sweeper then state.sweeper:cancel() end   -- the old version's, on reload
state.sweeper = mr.every(0.1, function()
  local now, n = mr.now(), 0
  for key in pairs(state.exp) do
    expired(key, now)
    n = n + 1
    if n >= 100 then break end
  end
end)

local function get(key)
  if state.exp[key] then expired(key) end
  return state.db[key]
end

local function set(key, value)
  if state.db[key] == nil then state.size = state.size + 1 end
  state.db[key] = value
  state.exp[key] = nil
end

local function del(key)
  if get(key) == nil then return 0 end
  state.db[key] = nil
  state.exp[key] = nil
  state.size = state.size - 1
  return 1
end

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

local function to_int(s)
  if type(s) ~= "string" or not find(s, "^%-?%d+$") or #s > 17 then return nil end
  return tonumber(s)
end

local function incr(key, by)
  local v = get(key)
  local n = v == nil and 0 or to_int(v)
  if not n or not by then return NOT_INT end
  n = n + by
  if n >= 2 ^ 53 or n <= -2 ^ 53 then return NOT_INT end
  local ttl = state.exp[key]
  set(key, format("%d", n))
  state.exp[key] = ttl
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
  local key, value, ttl, nx, xx = a[2], a[3], nil, false, false
  local i = 4
  while i <= #a do
    local opt = upper(a[i])
    if (opt == "EX" or opt == "PX") and not ttl and i < #a then
      local n = to_int(a[i + 1])
      if not n or n <= 0 then return err("ERR invalid expire time in 'set' command") end
      ttl = opt == "EX" and n or n / 1000
      i = i + 2
    elseif opt == "NX" and not xx then nx = true; i = i + 1
    elseif opt == "XX" and not nx then xx = true; i = i + 1
    else return SYNTAX end
  end
  local exists = get(key) ~= nil
  if (nx and exists) or (xx and not exists) then return NIL end
  set(key, value)
  if ttl then state.exp[key] = mr.now() + ttl end
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
  for i = 2, #a, 2 do set(a[i], a[i + 1]) end
  return OK
end

commands.EXPIRE = function(a)
  if #a ~= 3 then return arity("expire") end
  local s = to_int(a[3])
  if not s then return NOT_INT end
  if get(a[2]) == nil then return int(0) end
  if s <= 0 then del(a[2]) else state.exp[a[2]] = mr.now() + s end
  return int(1)
end

commands.TTL = function(a)
  if #a ~= 2 then return arity("ttl") end
  if get(a[2]) == nil then return int(-2) end
  local t = state.exp[a[2]]
  if not t then return int(-1) end
  return int(floor(t - mr.now() + 0.5))
end

commands.KEYS = function(a)
  if #a ~= 2 then return arity("keys") end
  local pat, out, now = a[2], {}, mr.now()
  for key in pairs(state.db) do
    if not expired(key, now) and glob_match(pat, key) then out[#out + 1] = key end
  end
  return array(out)
end

commands.DBSIZE = function(a) return #a == 1 and int(state.size) or arity("dbsize") end

commands.FLUSHALL = function()
  state.db, state.exp, state.size = {}, {}, 0
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
  return bulk("# Server\r\nredis_version:7.0.0\r\nmoonring:1\r\n# Keyspace\r\ndb0:keys=" .. state.size .. "\r\n")
end

-- Parse one command from buf at pos. Returns the arguments and the next
-- position; nil and the last position the command needs (at least) when
-- more bytes are needed; false and a message on a protocol error.
local function parse(buf, pos)
  if byte(buf, pos) == 42 then -- '*'
    local e = find(buf, "\r\n", pos, true)
    if not e then
      if #buf - pos > 20 then return false, "invalid multibulk length" end
      return nil, #buf + 1
    end
    local n = tonumber(sub(buf, pos + 1, e - 1))
    if not n or n > MAX_ARGS or n ~= floor(n) then return false, "invalid multibulk length" end
    local args, p = {}, e + 2
    for i = 1, n do
      if p > #buf then return nil, p end
      if byte(buf, p) ~= 36 then
        return false, "expected '$', got '" .. sub(buf, p, p) .. "'"
      end
      local e2 = find(buf, "\r\n", p, true)
      if not e2 then
        if #buf - p > 20 then return false, "invalid bulk length" end
        return nil, #buf + 1
      end
      local len = tonumber(sub(buf, p + 1, e2 - 1))
      if not len or len < 0 or len > MAX_BULK or len ~= floor(len) then
        return false, "invalid bulk length"
      end
      local s = e2 + 2
      if #buf < s + len + 1 then return nil, s + len + 1 end  -- with its CRLF
      if sub(buf, s + len, s + len + 1) ~= "\r\n" then return false, "invalid bulk format" end
      args[i] = sub(buf, s, s + len - 1)
      p = s + len + 2
    end
    return args, p
  end
  local e = find(buf, "\n", pos, true)
  if not e then
    if #buf - pos + 1 > MAX_INLINE then return false, "too big inline request" end
    return nil, #buf + 1
  end
  local last = byte(buf, e - 1) == 13 and e - 2 or e - 1   -- without a CR
  local line = sub(buf, pos, last)
  if line ~= "" and not find(line, " ", 1, true) and not find(line, "\t", 1, true)
    and not find(line, "\r", 1, true) and not find(line, "\v", 1, true)
    and not find(line, "\f", 1, true) then
    return { line }, e + 1   -- one word, as from "PING\r\n"
  end
  local args = {}
  for word in line:gmatch("[^%s]+") do args[#args + 1] = word end
  return args, e + 1
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

-- Bytes arrive in pieces; they are joined only once a whole command can
-- be there, so a large value does not cost a copy per piece. The usual
-- case, one command in one piece, allocates no table: one reply is sent
-- as it is, several (pipelining) are joined into one send.
local function on_data(conn, data)
  local nchunks = conn.nchunks + 1
  local chunks = conn.chunks
  chunks[nchunks] = data
  conn.have = conn.have + #data
  if conn.have < conn.need then conn.nchunks = nchunks; return end
  local buf = data
  if nchunks > 1 then
    buf = concat(chunks, "", 1, nchunks)
    conn.chunks = {}   -- let go of the pieces
  end
  local pos, first, out, nout = 1, nil, nil, 0
  while pos <= #buf do
    local args, nxt = parse(buf, pos)
    if args == false then
      conn:send(first or "", out and concat(out, "", 2) or "",
        err("ERR Protocol error: " .. nxt))
      conn:close()
      return
    elseif args == nil then
      conn.need = nxt - pos + 1   -- bytes from this command's start
      break
    end
    pos = nxt
    if #args > 0 then
      local name = upper(args[1])
      local reply = name == "QUIT" and OK or run(name, args)
      nout = nout + 1
      if nout == 1 then first = reply
      elseif nout == 2 then out = { first, reply }
      else out[nout] = reply end
      if name == "QUIT" then
        conn:send(nout == 1 and first or concat(out))
        conn:close()
        return
      end
    end
  end
  if pos > #buf then
    conn.need, conn.have, conn.nchunks = 0, 0, 0
  else
    local rest = sub(buf, pos)
    conn.chunks[1], conn.have, conn.nchunks = rest, #rest, 1
  end
  if nout == 1 then conn:send(first) elseif nout > 1 then conn:send(concat(out)) end
end

return {
  on_open = function(conn)
    conn.chunks, conn.nchunks, conn.have, conn.need = {}, 0, 0, 0
  end,
  on_data = on_data,
}
