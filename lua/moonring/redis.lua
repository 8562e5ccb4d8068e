-- moonring.redis: a Redis client on moonring's sockets (mr.tcp), for code
-- that may wait: connection functions, timers, mr.spawn.
--
--   local redis = require "moonring.redis"
--   local r, err = redis.connect("127.0.0.1", 6379, { timeout = 2 })
--   if not r then return nil, err end
--   local n, err = r:incr("hits")          -- any command, as a method
--   local v = r:call("GET", "k")           -- or by name
--   r:init_pipeline()
--   r:set("a", 1); r:get("a"); r:incr("a")
--   local results, err = r:commit_pipeline()
--   r:keepalive()                          -- back to the pool, or r:close()
--
-- Replies (RESP2):
--   simple string  the string ("OK" is "OK")
--   integer        a Lua number (exact up to 2^53)
--   bulk string    the string, binary-safe
--   nil bulk/array redis.null (never Lua nil, so that arrays keep their
--                  length and a missing key is not taken for a failure)
--   array          a table 1..n, nested as the reply nests
--   error          from a command: nil, "ERR ..."; inside an array or a
--                  pipeline's results: an error object, which
--                  redis.is_error(v) recognizes, with v.message the text
--                  (tostring(v) gives it too)
--
-- A call returns nil, err on failure: a Redis error reply ("ERR ...",
-- "WRONGTYPE ..."; the connection stays usable), or a failure of the
-- connection ("closed", "reset", "timeout", "Connection refused",
-- "protocol error: ..."), after which the client is closed and every
-- later call returns nil, "closed": a connection whose state is unknown
-- never goes back to the pool.
--
-- Arguments are strings or numbers (integral numbers are sent as
-- integers, others with enough digits to read back the same); anything
-- else raises an error. A client belongs to one coroutine at a time.
local mr = require "moonring"

local redis = {}

local byte, sub, find, upper, format, char =
  string.byte, string.sub, string.find, string.upper, string.format, string.char
local concat = table.concat
local type, select, tonumber, setmetatable, getmetatable, rawset =
  type, select, tonumber, setmetatable, getmetatable, rawset

-- What a reply may announce. A length is only a promise, so these bound
-- what a bad or hostile server can make the client allocate or loop over.
local MAX_BULK = 512 * 1024 * 1024       -- as Redis's own proto-max-bulk-len
local MAX_ELEMENTS = 16 * 1024 * 1024    -- elements in one array
local MAX_DEPTH = 64                     -- arrays within arrays

redis.null = setmetatable({}, {
  __tostring = function() return "redis.null" end,
  __newindex = function() error("redis.null is read-only", 2) end,
  __metatable = "redis.null",
})
local null = redis.null

local Error = { __metatable = "redis.error" }
Error.__tostring = function(e) return e.message end
local function new_error(message) return setmetatable({ message = message }, Error) end

function redis.is_error(v) return type(v) == "table" and getmetatable(v) == "redis.error" end

-- Commands after which a pooled connection would surprise its next
-- user: an open transaction or watch, or a subscription (messages keep
-- coming). keepalive() closes such a connection instead.
local STATE = {
  MULTI = "multi", WATCH = "watch", UNWATCH = "unwatch", EXEC = "end", DISCARD = "end",
  SUBSCRIBE = "subscribed", PSUBSCRIBE = "subscribed", SSUBSCRIBE = "subscribed",
  MONITOR = "monitoring", QUIT = "quit",
}

local function track(self, cmd)
  local s = STATE[cmd]
  if not s then return end
  if s == "multi" then self._multi = true
  elseif s == "watch" then self._watch = true
  elseif s == "unwatch" then if not self._multi then self._watch = false end
  elseif s == "end" then self._multi, self._watch = false, false
  else self._stuck = s end
end

------------------------------------------------------------------------
-- Requests: an array of bulk strings.

local FLOAT = { "%.15g", "%.16g", "%.17g" }

local function number_arg(v)
  if v % 1 == 0 and v >= -2 ^ 63 and v < 2 ^ 63 then   -- integral: not inf, nan
    if v == 0 then return "0" end        -- not "-0", which Redis refuses
    return format("%.0f", v)             -- tostring would give "1e+15"
  end
  local s
  for i = 1, 3 do                        -- the shortest that reads back as v
    s = format(FLOAT[i], v)
    if tonumber(s) == v then break end
  end
  return s
end

-- Append the request (name, ...) to buf after its n-th piece; returns the
-- new count. An argument that is neither string nor number is the
-- caller's mistake: the error names the line that called the command
-- (level 3: encode, then call or a method, then that line).
local function encode(buf, n, name, ...)
  local nargs = select("#", ...)
  buf[n + 1], buf[n + 2], buf[n + 3] = "*", nargs + 1, "\r\n"
  buf[n + 4], buf[n + 5], buf[n + 6], buf[n + 7], buf[n + 8] = "$", #name, "\r\n", name, "\r\n"
  n = n + 8
  if nargs == 0 then return n end
  local args = { ... }
  for i = 1, nargs do
    local a = args[i]
    local t = type(a)
    if t == "number" then
      a = number_arg(a)
    elseif t ~= "string" then
      error(format("bad argument #%d to '%s' (string or number expected, got %s)",
        i, name, t), 3)
    end
    buf[n + 1], buf[n + 2], buf[n + 3], buf[n + 4], buf[n + 5] = "$", #a, "\r\n", a, "\r\n"
    n = n + 5
  end
  return n
end

------------------------------------------------------------------------
-- Replies.

-- Close the connection: after a failed read or write its state is
-- unknown (a reply may still be on its way).
local function fail(self, err)
  local sock = self._sock
  if sock then
    self._sock, self._pipe = nil, nil
    sock:close()
  end
  return nil, err
end

local function protocol(self, what)
  return fail(self, "protocol error: " .. what)
end

-- The number in line[2..] if line[from..] is decimal digits and nothing
-- else (tonumber would also take " 12", "0x1f", "1e3" or "inf").
local function digits(line, from)
  local len = #line
  if from > len or len > 21 then return nil end   -- type, sign, 19 digits
  for i = from, len do
    local b = byte(line, i)
    if b < 48 or b > 57 then return nil end
  end
  return tonumber(sub(line, 2))
end

local function integer(line)
  return digits(line, byte(line, 2) == 45 and 3 or 2)
end

-- A bulk string's or an array's length: digits, or -1 for nil.
local function length(line)
  if byte(line, 2) ~= 45 then return digits(line, 2) end
  if #line == 3 and byte(line, 3) == 49 then return -1 end
  return nil
end

local function shown(b)
  if b >= 32 and b < 127 then return "'" .. char(b) .. "'" end
  return "byte " .. b
end

-- Read one reply. Returns the value (a string, a number, redis.null, a
-- table, or at depth > 0 an error object), false and the message for an
-- error reply at depth 0, or nil and the error after closing.
local function read_value(self, sock, depth)
  local line, err = sock:receive_until("\r\n")
  if not line then
    if err == "line too long" then return protocol(self, "line too long") end
    return fail(self, err)
  end
  local t = byte(line, 1)
  if not t then return protocol(self, "empty line") end
  if t == 36 then                                         -- $ bulk string
    local n = length(line)
    if not n then return protocol(self, "bad bulk length") end
    if n == -1 then return null end
    if n > MAX_BULK then return protocol(self, "bulk string too large") end
    -- the payload alone, then its CRLF: no copy of a large value to cut it
    local data, err = sock:receive(n)
    if not data then return fail(self, err) end
    local crlf, err = sock:receive(2)
    if not crlf then return fail(self, err) end
    if crlf ~= "\r\n" then return protocol(self, "bulk string not followed by CRLF") end
    return data
  elseif t == 43 or t == 45 then                          -- + status, - error
    if find(line, "\n", 2, true) then return protocol(self, "LF inside a line") end
    if t == 43 then return sub(line, 2) end
    if depth == 0 then return false, sub(line, 2) end
    return new_error(sub(line, 2))
  elseif t == 58 then                                     -- : integer
    local n = integer(line)
    if not n then return protocol(self, "bad integer") end
    return n
  elseif t == 42 then                                     -- * array
    local n = length(line)
    if not n then return protocol(self, "bad array length") end
    if n == -1 then return null end
    if n > MAX_ELEMENTS then return protocol(self, "array too long") end
    if depth >= MAX_DEPTH then return protocol(self, "arrays nested too deep") end
    local arr = {}
    for i = 1, n do
      local v, err = read_value(self, sock, depth + 1)
      if v == nil then return nil, err end
      arr[i] = v
    end
    return arr
  end
  return protocol(self, "unknown reply type " .. shown(t))
end

------------------------------------------------------------------------
-- The client.

local Client = {}
Client.__index = Client

-- Send one request and read its reply (or queue it in the pipeline).
local function command(self, cmd, buf, n)
  if self._pipe then
    self._pipe_n = n
    self._pipe_count = self._pipe_count + 1
    track(self, cmd)
    return true
  end
  local sock = self._sock
  if not sock then return nil, "closed" end
  local ok, err = sock:send(concat(buf, "", 1, n))
  if not ok then return fail(self, err) end
  track(self, cmd)
  local v, err = read_value(self, sock, 0)
  if not v then return nil, err end
  return v
end

-- r:call(name, ...): any command.
function Client:call(name, ...)
  if type(name) ~= "string" then
    error(format("bad argument #1 to 'call' (command name expected, got %s)", type(name)), 2)
  end
  local buf, n = self._pipe
  if buf then
    n = encode(buf, self._pipe_n, name, ...)
  else
    buf = {}
    n = encode(buf, 0, name, ...)
  end
  return command(self, upper(name), buf, n)
end

-- The command methods: r:get(...) is r:call("GET", ...). Made on first
-- use and kept in Client, so __index runs once per name.
setmetatable(Client, {
  __index = function(t, name)
    if type(name) ~= "string" or byte(name, 1) == 95 then return nil end   -- "_x": fields
    local cmd = upper(name)
    local f = function(self, ...)
      local buf = self._pipe
      local n
      if buf then
        n = encode(buf, self._pipe_n, cmd, ...)
      else
        buf = {}
        n = encode(buf, 0, cmd, ...)
      end
      return command(self, cmd, buf, n)
    end
    rawset(t, name, f)
    return f
  end,
})

-- Queue the next commands (each returns true) until commit_pipeline,
-- which sends them in one write and returns all their replies.
function Client:init_pipeline()
  self._pipe, self._pipe_n, self._pipe_count = {}, 0, 0
end

function Client:cancel_pipeline()
  self._pipe = nil
end

-- The replies to the queued commands, in order, one per command (error
-- replies as error objects); nil, err if the connection failed.
function Client:commit_pipeline()
  local buf, n, count = self._pipe, self._pipe_n, self._pipe_count
  if not buf then return nil, "no pipeline" end
  self._pipe = nil
  local sock = self._sock
  if not sock then return nil, "closed" end
  local results = {}
  if count == 0 then return results end
  local ok, err = sock:send(concat(buf, "", 1, n))
  if not ok then return fail(self, err) end
  for i = 1, count do
    local v, err = read_value(self, sock, 0)
    if v == nil then return nil, err end
    if v == false then v = new_error(err) end
    results[i] = v
  end
  return results
end

-- One more reply, for what the server sends unasked (pub/sub messages
-- after SUBSCRIBE). A read timeout closes the client, as for any read.
function Client:read_reply()
  local sock = self._sock
  if not sock then return nil, "closed" end
  local v, err = read_value(self, sock, 0)
  if not v then return nil, err end
  return v
end

-- Seconds for the connect, each send and each read (0: no limit).
function Client:set_timeout(sec)
  local sock = self._sock
  if not sock then return nil, "closed" end
  return sock:settimeouts(sec, sec, sec)
end

-- How often the connection came from the pool (0: a new one).
function Client:get_reused_times()
  local sock = self._sock
  if not sock then return nil, "closed" end
  return sock:getreusedtimes()
end

function Client:close()
  local sock = self._sock
  if not sock then return nil, "closed" end
  self._sock, self._pipe = nil, nil
  return sock:close()
end

-- Give the connection back to the pool (idle and pool_size from
-- connect). The client is done with afterwards. A connection in a state
-- that its next user would not expect is closed instead: nil, err.
function Client:keepalive()
  local sock = self._sock
  if not sock then return nil, "closed" end
  self._sock, self._pipe = nil, nil
  local why = self._multi and "in a transaction" or self._watch and "keys watched"
    or self._stuck
  if why then
    sock:close()
    return nil, "not reusable (" .. why .. "): closed"
  end
  return sock:setkeepalive(self._idle, self._size)
end

-- redis.connect(host, port [, opts]): a client, on a pooled connection
-- to host:port if there is one. opts: timeout (seconds for the connect,
-- each send and each read; default 10, 0 for none), pool_size (default
-- 32) and idle (seconds a pooled connection waits, default 60), used by
-- keepalive().
function redis.connect(host, port, opts)
  local timeout, size, idle = 10, nil, nil
  if opts ~= nil then
    if type(opts) ~= "table" then error("bad argument #3 to 'connect' (table expected)", 2) end
    timeout = opts.timeout or timeout
    size, idle = opts.pool_size, opts.idle
    if type(timeout) ~= "number" or timeout < 0 then
      error("bad option 'timeout' to 'connect' (seconds expected)", 2)
    end
    if size ~= nil and (type(size) ~= "number" or size < 1) then
      error("bad option 'pool_size' to 'connect' (a positive number expected)", 2)
    end
    if idle ~= nil and (type(idle) ~= "number" or idle < 0) then
      error("bad option 'idle' to 'connect' (seconds expected)", 2)
    end
  end
  local sock, err = mr.tcp(host, port, { timeout = timeout })
  if not sock then return nil, err end
  sock:settimeouts(timeout, timeout, timeout)
  return setmetatable({ _sock = sock, _size = size, _idle = idle }, Client)
end

return redis
