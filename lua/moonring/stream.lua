-- moonring.stream: the first way to write protocol code top to bottom,
-- kept for the scripts that use it. It is now a thin layer over
-- connection functions (a script that returns function(sock)), which do
-- the same with more: receive(n | "*l" | "*a"), receive_any,
-- receive_until, send that waits, timeouts, and linear-time reads. Use
-- those in new code.
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
-- Every read returns nil, reason once the connection has closed, or when
-- a line would exceed its maximum (default 65536 bytes: "line too long").
-- When the function returns, or raises (logged with its traceback), the
-- connection is closed. conn is the connection's socket.
local stream = {}
local S = {}
S.__index = S

-- Exactly n bytes.
function S:read(n)
  local data, err = self.sock:receive(n)
  return data, err
end

-- Bytes up to delim (which is consumed, not returned).
function S:read_until(delim, max)
  local data, err = self.sock:receive_until(delim)
  if data and #data > (max or self.max) then return nil, "line too long" end
  return data, err
end

-- A line, without its "\n" or "\r\n".
function S:read_line(max)
  local line, err = self.sock:receive("*l")
  if line and #line > (max or self.max) then return nil, "line too long" end
  return line, err
end

-- A connection function that runs fn(s, conn) for each connection.
function stream.handler(fn, opts)
  local max = opts and opts.max or 65536
  return function(sock)
    fn(setmetatable({ sock = sock, max = max }, S), sock)
  end
end

return stream
