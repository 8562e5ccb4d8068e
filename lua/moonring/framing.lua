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
-- decoder: the stream cannot be trusted past it. However a frame is cut
-- into reads, decoding it costs time linear in its size.
local framing = {}

local find, sub, byte, char = string.find, string.sub, string.byte, string.char
local concat = table.concat

local Decoder = {}
Decoder.__index = Decoder

-- The bytes not yet part of a frame are buf from pos on, so that a read
-- holding whole frames is cut with string.sub and nothing else. Once a
-- frame spans reads they are parts[1..n] instead (buf is then empty,
-- size their total), and are joined only when a frame is complete:
-- appending to one string on every read would copy the frame once per
-- piece, and cost time quadratic in its size.
--
-- A delimiter search remembers how far it got (the first `searched`
-- pieces, `seen` bytes, with `tail` their last #delim - 1 bytes, for a
-- delimiter split between pieces): searching everything pending again on
-- every read would be quadratic too.
local function new(split, max)
  return setmetatable({ buf = "", pos = 1, n = 0, size = 0, searched = 0, seen = 0, tail = "",
                        split = split, max = max or 65536 }, Decoder)
end

-- Append received bytes.
function Decoder:push(data)
  if #data == 0 then return end
  local n = self.n
  if n == 0 then
    local buf, pos = self.buf, self.pos
    if pos > #buf then
      self.buf, self.pos, self.searched = data, 1, 0
      return
    end
    local parts = self.parts
    if not parts then
      parts = {}
      self.parts = parts
    end
    parts[1] = pos == 1 and buf or sub(buf, pos)
    self.size = #buf - pos + 1
    self.buf, self.pos, n = "", 1, 1
  end
  n = n + 1
  self.parts[n] = data
  self.n, self.size = n, self.size + #data
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
  if self.n == 0 then return #self.buf - self.pos + 1 end
  return self.size
end

-- The piece of parts holding pending byte off, and off within it.
local function locate(parts, off)
  local i, len = 1, #parts[1]
  while off > len do
    off, i = off - len, i + 1
    len = #parts[i]
  end
  return i, off
end

-- From parts: pending bytes first..stop are the frame, and everything up
-- to last is dropped; what follows goes back to buf, pos.
local function take(self, first, stop, last)
  local parts, n = self.parts, self.n
  local frame = ""
  if first <= stop then
    local a, at = locate(parts, first)
    local b, bt = locate(parts, stop)
    if a == b then
      frame = sub(parts[a], at, bt)
    else
      local pa, pb = parts[a], parts[b]
      if at > 1 then parts[a] = sub(pa, at) end
      if bt < #pb then parts[b] = sub(pb, 1, bt) end
      frame = concat(parts, "", a, b)
      parts[a], parts[b] = pa, pb
    end
  end
  local c, ct = locate(parts, last)
  local rest = parts[c]
  if c < n then rest = concat(parts, "", c, n) end
  for i = 1, n do parts[i] = nil end   -- the table is reused: let the pieces go
  self.buf, self.pos, self.n, self.size, self.searched = rest, ct + 1, 0, 0, 0
  return frame
end

-- Where delim starts in the pending bytes of parts, searching only the
-- pieces not searched yet; keep = #delim - 1.
local function search(self, delim, keep)
  local parts, n, from = self.parts, self.n, self.searched + 1
  local seen, tail = 0, ""
  if from > 1 then seen, tail = self.seen, self.tail end
  for i = from, n do
    local piece = parts[i]
    if #tail > 0 then
      -- a delimiter that starts in earlier pieces and ends in this one
      local s = find(tail .. sub(piece, 1, keep), delim, 1, true)
      if s and s <= #tail then return seen - #tail + s end
    end
    local s = find(piece, delim, 1, true)
    if s then return seen + s end
    seen = seen + #piece
    if keep > 0 then
      tail = #piece >= keep and sub(piece, -keep) or sub(tail .. piece, -keep)
    end
  end
  self.searched, self.seen, self.tail = n, seen, tail
  return nil
end

local function delimited(delim, strip_cr)
  local dlen = #delim
  local keep = dlen - 1
  return function(self)
    if self.n == 0 then
      if self.searched > 0 then return nil end
      local buf, pos = self.buf, self.pos
      local s = find(buf, delim, pos, true)
      if not s then
        local have = #buf - pos + 1
        if have > self.max then return nil, "frame too long" end
        self.searched, self.seen = 1, have
        if keep > 0 then
          local from = #buf - keep + 1
          self.tail = sub(buf, from > pos and from or pos)
        end
        return nil
      end
      local stop = s - 1
      if strip_cr and stop >= pos and byte(buf, stop) == 13 then stop = stop - 1 end
      if stop - pos + 1 > self.max then return nil, "frame too long" end
      self.pos = s + dlen
      return sub(buf, pos, stop)
    end
    local s = search(self, delim, keep)
    if not s then
      if self.size > self.max then return nil, "frame too long" end
      return nil
    end
    local stop = s - 1
    if strip_cr and stop >= 1 then
      local i, at = locate(self.parts, stop)
      if byte(self.parts[i], at) == 13 then stop = stop - 1 end
    end
    if stop > self.max then return nil, "frame too long" end
    return take(self, 1, stop, s + keep)
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
    local n = 0
    if self.n == 0 then
      local buf, pos = self.buf, self.pos
      local have = #buf - pos + 1
      if have < bytes then return nil end
      for i = 0, bytes - 1 do n = n * 256 + byte(buf, pos + i) end
      if n > self.max then return nil, "frame too long" end
      if have < bytes + n then return nil end
      self.pos = pos + bytes + n
      return sub(buf, pos + bytes, pos + bytes + n - 1)
    end
    if self.size < bytes then return nil end
    -- the length itself may be split between pieces (none is empty)
    local parts, i, j = self.parts, 1, 1
    local piece = parts[1]
    for _ = 1, bytes do
      if j > #piece then
        i, j = i + 1, 1
        piece = parts[i]
      end
      n = n * 256 + byte(piece, j)
      j = j + 1
    end
    if n > self.max then return nil, "frame too long" end
    if self.size < bytes + n then return nil end
    return take(self, bytes + 1, bytes + n, bytes + n)
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
