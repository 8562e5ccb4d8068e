-- moonring.http.request: what a handler reads of a request: its query,
-- its headers, its body whole or in pieces.
--
-- The body is read from the connection only when the handler asks (so a
-- handler may refuse a body it does not want, and "Expect: 100-continue"
-- gets its "100 Continue" only then). Its state is req._phase: "data"
-- (req._left bytes of a Content-Length body, or of a chunk), "size" (a
-- chunk's size line next), "crlf" (the CRLF after a chunk), "done", or
-- "failed" (the connection is being closed, its error response sent).
local reader = require "moonring.http.reader"
local parse = require "moonring.http.parse"

local Req = {}

local find, sub, byte, char, gsub, lower = string.find, string.sub, string.byte, string.char,
  string.gsub, string.lower
local concat = table.concat
local tonumber, type, rawget, rawset, pcall = tonumber, type, rawget, rawset, pcall
local line, take, fill, exact = reader.line, reader.take, reader.fill, reader.exact
local chunk_size, check_header = parse.chunk_size, parse.header

local CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n"
local MAX_CHUNK_LINE = 1024   -- a chunk's size line, with its extension

-- %XX decoded ("+" too, as a space, when plus); nil for a bad escape
-- when strict.
local function hexbyte(h) return char(tonumber(h, 16)) end
local function unescape(s, plus)
  if plus and find(s, "+", 1, true) then s = gsub(s, "+", " ") end
  if not find(s, "%", 1, true) then return s end
  return (gsub(s, "%%(%x%x)", hexbyte))
end
Req.unescape = unescape

-- "a=1&b=x%20y&a=2" -> { a = { "1", "2" }, b = "x y" }: a name given
-- once has its value, a name given again a list of them in order; a
-- name without "=" has "".
local function parse_query(qs)
  local q = {}
  if qs == "" then return q end
  for pair in qs:gmatch("[^&]+") do
    local eq = find(pair, "=", 1, true)
    local k, v
    if eq then
      k, v = unescape(sub(pair, 1, eq - 1), true), unescape(sub(pair, eq + 1), true)
    else
      k, v = unescape(pair, true), ""
    end
    local old = q[k]
    if old == nil then q[k] = v
    elseif type(old) == "table" then old[#old + 1] = v
    else q[k] = { old, v } end
  end
  return q
end
Req.parse_query = parse_query

-- Fields made when first read: query (decoded from query_string) and
-- params (the route's captures, when it had none).
Req.__index = function(t, k)
  local m = Req[k]
  if m ~= nil then return m end
  if k == "query" then
    local q = parse_query(rawget(t, "query_string") or "")
    rawset(t, "query", q)
    return q
  elseif k == "params" then
    local p = {}
    rawset(t, "params", p)
    return p
  end
end

-- A header's value, in any case: req:header("Content-Type").
function Req:header(name)
  return rawget(self.headers, lower(name))
end

-- The body could not be read: answer (unless the response has started)
-- and close. Returns nil and the reason for the handler.
local function fail(req, err)
  local status
  if err == "timeout" then status = 408
  elseif err == "too large" then status = 413
  elseif err == "bad" or err == "long" then status, err = 400, "bad chunked body"
  end
  req._phase = "failed"
  local c = req._c
  c.close = true
  if status then c.fail(c, req._res, status) end
  return nil, err
end

-- Ask for the body if the client waits for leave to send it.
local function go_ahead(req)
  if req._continue then
    req._continue = false
    local c = req._c
    if reader.buffered(c) == 0 then c.sock:send(CONTINUE) end
  end
end

-- The deadline of the body runs from its first read.
local function body_phase(req)
  local c = req._c
  if c.dl_kind ~= req then
    c.dl_kind, c.dl, c.dl_sec = req, nil, c.app.opts.body_timeout
  end
  return c
end

-- The chunked body's next size line and trailers, up to its next data:
-- true, or false at the end, or nil and an error.
local function next_chunk(req, c)
  while true do
    local ph = req._phase
    if ph == "crlf" then
      local ok, err = fill(c, 2)
      if not ok then return nil, err end
      local pos = c.pos
      if byte(c.buf, pos) ~= 13 or byte(c.buf, pos + 1) ~= 10 then return nil, "bad" end
      c.pos, req._phase = pos + 2, "size"
    elseif ph == "size" then
      local cr, nxt = line(c, MAX_CHUNK_LINE)
      if not cr then return nil, nxt end
      local n = chunk_size(c.buf, c.pos, cr)
      if not n then return nil, "bad" end
      c.pos = nxt
      if n == 0 then   -- trailers, checked and dropped
        local room = c.app.opts.max_head
        while true do
          cr, nxt = line(c, room)
          if not cr then return nil, nxt end
          local buf, pos = c.buf, c.pos
          room = room - (nxt - pos)
          c.pos = nxt
          if cr == pos then break end
          if not check_header(buf, pos, cr, nil) then return nil, "bad" end
        end
        req._phase = "done"
        return false
      end
      req._size = req._size + n
      if req._size > req._max then return nil, "too large" end
      req._left, req._phase = n, "data"
    else
      return ph == "data"
    end
  end
end

-- The body's next piece, at most max bytes: a string, false at the end,
-- or nil and an error (after which the connection closes).
local function piece(req, max)
  local ph = req._phase
  if ph == "done" then return false end
  if ph == "failed" then return nil, req._err or "failed" end
  go_ahead(req)
  local c = body_phase(req)
  if req._chunked then
    local more, err = next_chunk(req, c)
    if more == nil then req._err = err; return fail(req, err) end
    if not more then return false end
  end
  local left = req._left
  local data, err = take(c, max and max < left and max or left)
  if not data then req._err = err; return fail(req, err) end
  left = left - #data
  req._left = left
  if left == 0 then req._phase = req._chunked and "crlf" or "done" end
  return data
end

-- The whole body as a string ("" for none), read once; or nil and why:
-- "too large" (413 sent), "timeout" (408), "bad chunked body" (400),
-- "closed".
function Req:body()
  local b = rawget(self, "_body")
  if b then return b end
  local ph = self._phase
  if ph == "done" then b = ""
  elseif ph == "failed" then return nil, self._err
  elseif not self._chunked then   -- Content-Length: at once
    go_ahead(self)
    local c = body_phase(self)
    local err
    b, err = exact(c, self._left)
    if not b then self._err = err; return fail(self, err) end
    self._left, self._phase = 0, "done"
  else
    local parts, n = {}, 0
    while true do
      local data, err = piece(self, nil)
      if data == nil then return nil, err end
      if not data then break end
      n = n + 1
      parts[n] = data
    end
    b = concat(parts, "", 1, n)
  end
  self._body = b
  return b
end

-- Call fn(piece) for each piece of the body as it comes (at most 64 KiB
-- each): true at the end, or nil and why (as body()). fn may return
-- false to stop reading (the connection then closes after the response).
function Req:read_body(fn)
  while true do
    local data, err = piece(self, 65536)
    if data == nil then return nil, err end
    if not data then return true end
    if fn(data) == false then
      self._c.close = true
      return true
    end
  end
end

-- An iterator over the body's pieces: for piece in req:body_pieces() do
-- ... end; after the loop, req.body_error says why it stopped early.
function Req:body_pieces()
  return function()
    local data, err = piece(self, 65536)
    if data == nil then self.body_error = err; return nil end
    return data or nil
  end
end

-- The body decoded as JSON (lua-cjson): the value, or nil and why.
function Req:json()
  local cjson = require("moonring.http.json").get()
  local b, err = self:body()
  if not b then return nil, err end
  local ok, v = pcall(cjson.decode, b)
  if not ok then return nil, "bad JSON: " .. tostring(v) end
  return v
end

-- Once the response is sent: the unread body, when it has all come, is
-- skipped; else (or a body still owed after "100 Continue" was not
-- sent) the connection closes. Returns true to go on.
function Req.skip_body(req)
  local ph = req._phase
  if ph == "done" then return true end
  if ph == "data" and not req._chunked then
    local c = req._c
    if reader.buffered(c) >= req._left then
      c.pos = c.pos + req._left
      req._phase = "done"
      return true
    end
  end
  return false
end

-- Will skip_body be able to skip it? (Asked before the response head,
-- to say "Connection: close" when not.)
function Req.body_blocks(req)
  return req._chunked or req._phase ~= "data" or reader.buffered(req._c) < req._left
end

return Req
