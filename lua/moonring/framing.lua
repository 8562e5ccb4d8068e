-- moonring.framing: split a TCP byte stream into messages.
--
-- TCP delivers bytes, not messages: one on_data may carry half a message
-- or several. A decoder collects the bytes and hands out whole frames.
--
--   local framing = require "moonring.framing"
--   on_open = function(conn) conn.lines = framing.lines(8192) end,
--   on_data = function(conn, data)
--     for line in conn.lines:each(data) do conn:send(line:upper(), "\n") end
--     if conn.lines.err then conn:send("ERR ", conn.lines.err, "\n"); conn:close() end
--   end,
--
-- Decoders: framing.lines(max) (ends with "\n", a "\r" before it is
-- dropped), framing.delimited(delim, max), framing.length(bytes, max)
-- (a big-endian length of 1, 2 or 4 bytes, then that many bytes).
-- A frame longer than max (default 65536) sets dec.err and stops the
-- decoder: the stream cannot be trusted past it.
local framing = {}

local find, sub, byte, char = string.find, string.sub, string.byte, string.char

local Decoder = {}
Decoder.__index = Decoder

local function new(split, max)
  return setmetatable({ buf = "", pos = 1, split = split, max = max or 65536 }, Decoder)
end

-- Append received bytes.
function Decoder:push(data)
  if self.pos > #self.buf then
    self.buf, self.pos = data, 1
  else
    self.buf, self.pos = sub(self.buf, self.pos) .. data, 1
  end
end

-- The next whole frame; nil when more bytes are needed; nil, err on a
-- framing error (also kept in self.err).
function Decoder:next()
  if self.err then return nil, self.err end
  local frame, err = self.split(self)
  if err then self.err = err end
  return frame, err
end

-- push(data), then iterate over the frames it completed.
function Decoder:each(data)
  if data then self:push(data) end
  return function() return (self:next()) end
end

-- Bytes received and not yet part of a frame.
function Decoder:pending()
  return #self.buf - self.pos + 1
end

local function delimited(delim, strip_cr)
  local dlen = #delim
  return function(self)
    local s, e = find(self.buf, delim, self.pos, true)
    if not s then
      if #self.buf - self.pos + 1 > self.max then return nil, "frame too long" end
      return nil
    end
    local stop = s - 1
    if strip_cr and stop >= self.pos and byte(self.buf, stop) == 13 then stop = stop - 1 end
    if stop - self.pos + 1 > self.max then return nil, "frame too long" end
    local frame = sub(self.buf, self.pos, stop)
    self.pos = e + 1
    return frame
  end, dlen
end

function framing.lines(max)
  return new((delimited("\n", true)), max)
end

function framing.delimited(delim, max)
  assert(type(delim) == "string" and #delim > 0, "delimiter expected")
  return new((delimited(delim, false)), max)
end

function framing.length(bytes, max)
  bytes = bytes or 4
  assert(bytes == 1 or bytes == 2 or bytes == 4, "length of 1, 2 or 4 bytes expected")
  return new(function(self)
    local have = #self.buf - self.pos + 1
    if have < bytes then return nil end
    local n = 0
    for i = 0, bytes - 1 do n = n * 256 + byte(self.buf, self.pos + i) end
    if n > self.max then return nil, "frame too long" end
    if have < bytes + n then return nil end
    local frame = sub(self.buf, self.pos + bytes, self.pos + bytes + n - 1)
    self.pos = self.pos + bytes + n
    return frame
  end, max)
end

-- A payload with its big-endian length in front, for framing.length.
function framing.encode_length(payload, bytes)
  bytes = bytes or 4
  local n, out = #payload, {}
  assert(n < 256 ^ bytes, "payload too long for its length prefix")
  for i = bytes, 1, -1 do
    out[i] = char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(out) .. payload
end

return framing
