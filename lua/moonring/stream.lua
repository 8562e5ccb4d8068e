-- moonring.stream: protocol code written top to bottom.
--
-- Each connection runs its function in a coroutine; the read calls yield
-- until enough bytes have arrived, so a protocol reads like a blocking
-- one while the server stays event-driven.
--
--   local stream = require "moonring.stream"
--   return stream.handler(function(s, conn)
--     conn:send("name? ")
--     local name = s:read_line()
--     if not name then return end          -- closed (or line too long)
--     conn:send("hello ", name, "\n")
--     local body = s:read(4)               -- exactly 4 bytes
--     local word = s:read_until(";")       -- up to ";" (not included)
--   end)
--
-- Every read returns nil, reason once the connection has closed (reason
-- as in on_close) or when a line would exceed its maximum (default
-- 65536 bytes: "line too long"). When the function returns, or raises
-- (logged with its traceback), the connection is closed.
local mr = require "moonring"

local stream = {}
local S = {}
S.__index = S

local find, sub = string.find, string.sub

-- Wait for more bytes; false, reason once closed.
local function more(self)
  if self.closed then return false end
  self.waiting = true
  coroutine.yield()
  self.waiting = false
  return not self.closed or #self.buf >= self.pos
end

local function take(self, n)
  local s = sub(self.buf, self.pos, self.pos + n - 1)
  self.pos = self.pos + n
  return s
end

-- Exactly n bytes.
function S:read(n)
  while #self.buf - self.pos + 1 < n do
    if not more(self) then return nil, self.closed end
  end
  return take(self, n)
end

-- Bytes up to delim (which is consumed, not returned).
function S:read_until(delim, max)
  max = max or self.max
  while true do
    local s, e = find(self.buf, delim, self.pos, true)
    if s and s - self.pos > max then return nil, "line too long" end
    if s then
      local out = sub(self.buf, self.pos, s - 1)
      self.pos = e + 1
      return out
    end
    if #self.buf - self.pos + 1 > max then return nil, "line too long" end
    if not more(self) then return nil, self.closed end
  end
end

-- A line, without its "\n" or "\r\n".
function S:read_line(max)
  local line, err = self:read_until("\n", max)
  if line and sub(line, -1) == "\r" then line = sub(line, 1, -2) end
  return line, err
end

local function resume(conn, s)
  local ok, err = coroutine.resume(s.co)
  if not ok then
    mr.log("error", "stream handler failed (connection " .. tostring(conn.id) .. "): " .. tostring(err))
    conn:close()
  elseif coroutine.status(s.co) == "dead" then
    conn:close()
  end
end

-- A handler table that runs fn(s, conn) for each connection.
function stream.handler(fn, opts)
  opts = opts or {}
  return {
    on_open = function(conn)
      local s = setmetatable({ buf = "", pos = 1, max = opts.max or 65536 }, S)
      conn._stream = s
      s.co = coroutine.create(function()
        local ok, err = xpcall(fn, debug.traceback, s, conn)
        if not ok then error(err, 0) end
      end)
      resume(conn, s)
    end,
    on_data = function(conn, data)
      local s = conn._stream
      if s.pos > #s.buf then s.buf, s.pos = data, 1
      else s.buf, s.pos = sub(s.buf, s.pos) .. data, 1 end
      if s.waiting then resume(conn, s) end
    end,
    on_close = function(conn, reason)
      local s = conn._stream
      s.closed = reason
      if s.waiting then resume(conn, s) end
      if opts.on_close then opts.on_close(conn, reason) end
    end,
  }
end

return stream
