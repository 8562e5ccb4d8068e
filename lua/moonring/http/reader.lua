-- moonring.http.reader: the bytes a connection has received and the
-- parser has not used yet, and the reads that bring more.
--
-- A connection's state c holds them as c.buf, from c.pos on; bytes not
-- in c.buf wait in the socket's own buffer, after them. Reads are bound
-- by a deadline for the whole phase (the head, the body): c.dl, set from
-- c.dl_sec at the first read that needs it, so that a request that comes
-- whole costs no clock reading, and bytes trickled one at a time cannot
-- keep a request going past it.
--
-- What cannot be used yet is kept in pieces and joined once there is
-- something to use (a whole line, n bytes): a line trickled a byte at a
-- time costs time linear in its length, not quadratic.
local mr = require "moonring"

local R = {}

local find, sub, byte = string.find, string.sub, string.byte
local concat = table.concat
local now = mr.now

local READ = 65536   -- at most this much per read

-- Arm the socket's read timeout for what is left of the phase's deadline.
-- Returns false when it has passed.
local function arm(c)
  local sec = c.dl_sec
  if not sec or sec <= 0 then
    if c.rt ~= false then
      c.rt = false
      c.sock:settimeouts(nil, c.send_timeout, nil)
    end
    return true
  end
  local t = now()
  local dl = c.dl
  if not dl then
    dl = t + sec
    c.dl = dl
  end
  local left = dl - t
  if left <= 0 then return false end
  c.rt = left
  c.sock:settimeouts(nil, c.send_timeout, left)
  return true
end

-- More bytes, at most n: a string, or nil and "timeout", "closed"...
local function recv(c, n)
  if not arm(c) then return nil, "timeout" end
  local data, err = c.sock:receive_any(n or READ)
  if not data then return nil, err end
  return data
end
R.recv = recv

-- The next line at c.pos, reading until it has come: the position of its
-- CR (the line is c.buf[c.pos, cr)) and of the byte after its LF. Or nil
-- and "long" (more than room bytes with its CRLF), "bad" (a LF without a
-- CR before it, or a CR inside), or the socket's error. c.buf may be
-- replaced: read it again after the call.
function R.line(c, room)
  local buf, pos = c.buf, c.pos
  local lf = find(buf, "\n", pos, true)
  if not lf then
    local have = #buf - pos + 1
    if have > room then return nil, "long" end
    local parts, n = { sub(buf, pos) }, 1
    while true do
      local data, err = recv(c)
      if not data then return nil, err end
      n = n + 1
      parts[n] = data
      local l = find(data, "\n", 1, true)
      if l then
        lf = have + l
        break
      end
      have = have + #data
      if have > room then return nil, "long" end
    end
    buf, pos = concat(parts, "", 1, n), 1
    c.buf, c.pos = buf, 1
  end
  if lf - pos + 1 > room then return nil, "long" end
  if lf == pos or byte(buf, lf - 1) ~= 13 or find(buf, "\r", pos, true) ~= lf - 1 then
    return nil, "bad"
  end
  return lf - 1, lf + 1
end

-- At least n bytes from c.pos on (n small). true, or nil and the error.
function R.fill(c, n)
  local buf, pos = c.buf, c.pos
  local have = #buf - pos + 1
  if have >= n then return true end
  local parts, k = { sub(buf, pos) }, 1
  while have < n do
    local data, err = recv(c)
    if not data then return nil, err end
    k = k + 1
    parts[k] = data
    have = have + #data
  end
  c.buf, c.pos = concat(parts, "", 1, k), 1
  return true
end

-- Some bytes, at most n (n > 0): what is buffered, else one read.
function R.take(c, n)
  local buf, pos = c.buf, c.pos
  local have = #buf - pos + 1
  if have > 0 then
    if have <= n then
      c.buf, c.pos = "", 1
      return pos == 1 and buf or sub(buf, pos)
    end
    c.pos = pos + n
    return sub(buf, pos, pos + n - 1)
  end
  return recv(c, n < READ and n or READ)
end

-- Exactly n bytes (n > 0): what is buffered and the rest in one wait.
function R.exact(c, n)
  local buf, pos = c.buf, c.pos
  local have = #buf - pos + 1
  if have >= n then
    c.pos = pos + n
    return sub(buf, pos, pos + n - 1)
  end
  local rest = have > 0 and sub(buf, pos) or ""
  c.buf, c.pos = "", 1
  if not arm(c) then return nil, "timeout" end
  local data, err = c.sock:receive(n - have)
  if not data then return nil, err end
  return have > 0 and rest .. data or data
end

-- How many bytes are buffered here (the socket may hold more).
function R.buffered(c)
  return #c.buf - c.pos + 1
end

return R
