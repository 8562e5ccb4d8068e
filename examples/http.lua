-- http.lua: an HTTP/1.1 server.
--   moonring examples/http.lua [HEAD_TIMEOUT [IDLE_TIMEOUT [BODY_TIMEOUT]]]
--                                                  (10, 30 and 60 s)
--
--   GET /        a short hello
--   POST /echo   answers with the request body
--   other paths  404
--
-- Keep-alive and pipelining, Content-Length and chunked request bodies,
-- Date and Server headers. Malformed or oversized requests get 400, 413,
-- 431, 501 or 505 and the connection is closed. A client gets HEAD_TIMEOUT
-- seconds to send a request's head, BODY_TIMEOUT seconds more for its
-- body (then 408 and a close), and IDLE_TIMEOUT seconds of idleness, so
-- slow or silent clients cannot hold connections for ever: a body
-- trickled a byte a second is never idle, but it is cut off all the same.
--
-- A request's framing must leave no doubt, since a proxy in front of us
-- might read it differently (request smuggling). 400 for: a second
-- Content-Length (even with the same value, as nginx does), a second
-- Transfer-Encoding, both of them, Transfer-Encoding in HTTP/1.0, a
-- Content-Length that is not plain decimal digits, a chunk size that is
-- not plain hex (an extension after ";" is allowed and ignored: not
-- "0x3", "3zzz", " 3" or an empty one), a NUL or a CR that does not end
-- a line, and an HTTP/1.1 request without exactly one Host (HTTP/1.0: at
-- most one). Transfer-Encoding other than "chunked" gets 501. Other
-- repeated headers are joined with ", ".
--
-- A request is parsed as it comes, however it is cut into reads: each
-- line of the head once it has all come, a Content-Length body once it
-- has, a chunked body chunk by chunk. Bytes that cannot be parsed yet
-- are kept in pieces, joined when there is something to parse, so nothing
-- is parsed or copied again on every read (that made a body of 400,000
-- one-byte chunks take 7 to 10 s of CPU, against 0.07 s now).
local mr = require "moonring"

local MAX_HEAD = 8192          -- request line and headers; 431 beyond (trailers too)
local MAX_BODY = 1024 * 1024   -- 413 beyond
local MAX_CHUNK_LINE = 64      -- a chunk's size line, with its extension
local HEAD_TIMEOUT = tonumber(arg[1]) or 10
local IDLE_TIMEOUT = tonumber(arg[2]) or 30
local BODY_TIMEOUT = tonumber(arg[3]) or 60

local find, sub, lower, match = string.find, string.sub, string.lower, string.match
local concat = table.concat

local routes = {   -- routes[method][path]
  GET = { ["/"] = function() return 200, "hello from moonring\n" end },
  POST = { ["/echo"] = function(req) return 200, req.body end },
}

local reasons = {
  [200] = "OK", [400] = "Bad Request", [404] = "Not Found",
  [408] = "Request Timeout", [413] = "Content Too Large",
  [431] = "Request Header Fields Too Large", [501] = "Not Implemented",
  [505] = "HTTP Version Not Supported",
}

-- The Date header changes once a second, and with it the start of every
-- response: build those once a second, per status.
local date_sec, heads = -1, {}
local function head_of(status)
  local now = math.floor(mr.now())
  if now ~= date_sec then
    date_sec, heads = now, {}
  end
  local h = heads[status]
  if not h then
    h = "HTTP/1.1 " .. status .. " " .. reasons[status] ..
      "\r\nServer: moonring\r\nDate: " .. os.date("!%a, %d %b %Y %H:%M:%S GMT", now) ..
      "\r\nContent-Type: text/plain\r\nContent-Length: "
    heads[status] = h
  end
  return h
end

local function respond(conn, status, body, close)
  conn:send(head_of(status), #body,
    close and "\r\nConnection: close\r\n\r\n" or "\r\n\r\n", body)
end

-- Answer a bad request and close: the stream cannot be trusted past it.
local function fail(conn, status)
  respond(conn, status, reasons[status] .. "\n", true)
  conn:close()
  conn.st.done = true
end

-- The parser keeps to plain string.find, string.byte and string.sub, which
-- LuaJIT compiles; string.match and gmatch would leave its traces.
local byte = string.byte
local TOKEN = {}   -- the bytes a header name may hold (RFC 9110 tchar)
for c in ("!#$%&'*+-.^_`|~"):gmatch(".") do TOKEN[byte(c)] = true end
for c = byte("0"), byte("9") do TOKEN[c] = true end
for c = byte("A"), byte("Z") do TOKEN[c] = true; TOKEN[c + 32] = true end
local HEX = {}     -- the value of each hex digit, by its byte
for i = 0, 9 do HEX[48 + i] = i end                    -- 0-9
for i = 10, 15 do HEX[87 + i] = i; HEX[55 + i] = i end  -- a-f, A-F
local METHOD = { GET = true, HEAD = true, POST = true, PUT = true, DELETE = true,
  OPTIONS = true, PATCH = true, CONNECT = true, TRACE = true }
-- headers that frame the request or name its target: a second one is an error
local SINGLE = { ["content-length"] = true, ["transfer-encoding"] = true, host = true }
local SP, TAB, SEMI = byte(" "), byte("\t"), byte(";")

-- The next line at pos: the position of its CR (the line is buf[pos, cr))
-- and of the byte after its LF; nil when it has not all come; false when
-- it is not a line: a LF without a CR before it, or a CR inside.
local function line_at(buf, pos)
  local lf = find(buf, "\n", pos, true)
  if not lf then return nil end
  if lf == pos or byte(buf, lf - 1) ~= 13 or find(buf, "\r", pos, true) ~= lf - 1 then
    return false
  end
  return lf - 1, lf + 1
end

-- Parse the request line buf[pos, cr). Returns the request, or nil and a
-- status.
local function parse_request_line(buf, pos, cr)
  local sp1 = find(buf, " ", pos, true)
  local sp2 = sp1 and find(buf, " ", sp1 + 1, true)
  if not sp2 or sp2 >= cr or sp1 == pos or sp2 == sp1 + 1 then return nil, 400 end
  local method, target, version = sub(buf, pos, sp1 - 1), sub(buf, sp1 + 1, sp2 - 1),
    sub(buf, sp2 + 1, cr - 1)
  if not METHOD[method] and not match(method, "^%u+$") then return nil, 400 end
  if find(target, "\0", 1, true) then return nil, 400 end
  local minor
  if version == "HTTP/1.1" then minor = "1"
  elseif version == "HTTP/1.0" then minor = "0"
  else
    local major
    major, minor = match(version, "^HTTP/(%d)%.(%d)$")
    if not major then return nil, 400 end
    if major ~= "1" then return nil, 505 end
  end
  return { method = method, path = target, headers = {}, minor = minor }
end

-- Parse the header line buf[pos, cr) into headers (nil: check it only,
-- as for a trailer). Returns true, or nil for a malformed line or a
-- second one of the SINGLE headers.
local function parse_header(buf, pos, cr, headers)
  local colon = find(buf, ":", pos, true)
  if not colon or colon >= cr or colon == pos then return nil end
  for i = pos, colon - 1 do
    if not TOKEN[byte(buf, i)] then return nil end
  end
  local vs, ve = colon + 1, cr - 1
  while vs <= ve and (byte(buf, vs) == SP or byte(buf, vs) == TAB) do vs = vs + 1 end
  while ve >= vs and (byte(buf, ve) == SP or byte(buf, ve) == TAB) do ve = ve - 1 end
  local value = sub(buf, vs, ve)
  if find(value, "\0", 1, true) then return nil end
  if not headers then return true end
  local name = lower(sub(buf, pos, colon - 1))
  local old = headers[name]
  if old then
    if SINGLE[name] then return nil end
    value = old .. ", " .. value
  end
  headers[name] = value
  return true
end

local function all_digits(s)
  for i = 1, #s do
    local b = byte(s, i)
    if b < 48 or b > 57 then return false end
  end
  return #s > 0
end

-- The head is all there: how is its body framed? Sets req.chunked or
-- req.length, and req.close. Returns the request, or nil and a status.
local function finish_head(req)
  local headers, minor = req.headers, req.minor
  if minor ~= "0" and not headers.host then return nil, 400 end
  local te, cl = headers["transfer-encoding"], headers["content-length"]
  if te then
    if cl or minor == "0" then return nil, 400 end
    if lower(te) ~= "chunked" then return nil, 501 end
    req.chunked, req.parts, req.size = true, {}, 0
  elseif cl then
    if not all_digits(cl) or #cl > 15 then return nil, 400 end
    req.length = tonumber(cl)
    if req.length > MAX_BODY then return nil, 413 end
  end
  local connection = headers["connection"]
  connection = connection and lower(connection) or ""
  if minor == "0" then
    req.close = not find(connection, "keep-alive", 1, true)
  else
    req.close = find(connection, "close", 1, true) ~= nil
  end
  return req
end

-- The size on the chunk-size line buf[pos, cr): hex digits, then nothing
-- or an extension: optional spaces, ";" and anything (ignored). Returns
-- the size, or nil when the line is malformed.
local function chunk_size(buf, pos, cr)
  local i, n = pos, 0
  while i < cr and HEX[byte(buf, i)] do
    n = n * 16 + HEX[byte(buf, i)]
    i = i + 1
  end
  if i == pos or i - pos > 8 then return nil end
  if i == cr then return n end
  while i < cr and (byte(buf, i) == SP or byte(buf, i) == TAB) do i = i + 1 end
  if i == cr or byte(buf, i) ~= SEMI or find(sub(buf, i, cr - 1), "\0", 1, true) then
    return nil
  end
  return n
end

-- Parse on from buf at pos, where st left off. st.phase says what comes
-- next: "head" (the request line, then header lines, up to a blank line),
-- "body" (a Content-Length body), "size" (a chunk's size line), "chunk"
-- (its data and CRLF) or "trailer" (trailer lines, up to a blank line);
-- st.req is the request being read. Returns
--   req, pos               a whole request, and the position after it
--   nil, pos, need, line   buf from pos on is part of a request that has
--                          not all come: parse again from there once need
--                          bytes are there, or (line) once a "\n" comes
--   false, status          a bad request
local function parse(st, buf, pos)
  local len, req = #buf, st.req
  while true do
    local phase = st.phase
    if phase == "head" or phase == "trailer" then
      local room = MAX_HEAD - st.headsize   -- what the head may still take
      local cr, nxt = line_at(buf, pos)
      if cr == nil then
        if len - pos + 1 > room then return false, 431 end
        return nil, pos, room + 1, true
      end
      if not cr then return false, 400 end
      if nxt - pos > room then return false, 431 end
      st.headsize = st.headsize + (nxt - pos)
      if cr == pos then                    -- the blank line: the head is over
        if phase == "trailer" then pos = nxt; break end
        if not req then return false, 400 end
        local status
        req, status = finish_head(req)
        if not req then return false, status end
        st.phase = req.chunked and "size" or "body"
      elseif phase == "trailer" then
        if not parse_header(buf, pos, cr, nil) then return false, 400 end
      elseif not req then
        local status
        req, status = parse_request_line(buf, pos, cr)
        if not req then return false, status end
        st.req = req
      elseif not parse_header(buf, pos, cr, req.headers) then
        return false, 400
      end
      pos = nxt
    elseif phase == "body" then
      local n = req.length or 0
      if len - pos + 1 < n then return nil, pos, n, false end
      req.body, pos = sub(buf, pos, pos + n - 1), pos + n
      break
    elseif phase == "size" then
      local cr, nxt = line_at(buf, pos)
      if cr == nil then
        if len - pos + 1 > MAX_CHUNK_LINE then return false, 400 end
        return nil, pos, MAX_CHUNK_LINE + 1, true
      end
      if not cr or nxt - pos > MAX_CHUNK_LINE then return false, 400 end
      local n = chunk_size(buf, pos, cr)
      if not n then return false, 400 end
      pos = nxt
      if n == 0 then
        st.phase, st.headsize = "trailer", 0
      else
        req.size = req.size + n
        if req.size > MAX_BODY then return false, 413 end
        st.phase, st.chunk = "chunk", n
      end
    else -- "chunk"
      local n = st.chunk
      if len - pos + 1 < n + 2 then return nil, pos, n + 2, false end
      if byte(buf, pos + n) ~= 13 or byte(buf, pos + n + 1) ~= 10 then return false, 400 end
      req.parts[#req.parts + 1] = sub(buf, pos, pos + n - 1)
      pos, st.phase = pos + n + 2, "size"
    end
  end
  if req.chunked then req.body = concat(req.parts) end
  st.req, st.phase, st.headsize = nil, "head", 0
  return req, pos
end

-- One timer at a time: the head's while part of a head has come, then the
-- body's, from the end of the head. Neither is restarted by more bytes
-- (the idle timeout is), so a trickle cannot keep a request going.
local function arm(conn, st, kind, sec)
  if st.timer_for == kind then return end
  if st.timer then st.timer:cancel() end
  st.timer_for = kind
  st.timer = mr.after(sec, function()
    st.timer, st.timer_for = nil, nil
    if not st.done then fail(conn, 408) end
  end)
end

local function disarm(st)
  if st.timer then
    st.timer:cancel()
    st.timer, st.timer_for = nil, nil
  end
end

-- Bytes arrive in pieces. Those that cannot be parsed yet are kept in
-- st.parts (st.n pieces, st.have bytes), and joined only when parse can
-- go on: once st.need bytes are there, or when it waits for the end of a
-- line (st.line) and a piece holds a "\n". The usual case, whole requests
-- in one piece, allocates no table and starts no timer.
local function new_state()
  return { parts = {}, n = 0, have = 0, need = 0, line = false,
           phase = "head", req = nil, headsize = 0, chunk = 0 }
end

local function on_data(conn, data)
  local st = conn.st
  if not st then   -- a connection opened before a reload to this version
    st = new_state()
    conn.st = st
  end
  if st.done then return end
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
  local len, pos = #buf, 1
  while true do
    local req, nxt, need, line = parse(st, buf, pos)
    if req == false then return fail(conn, nxt) end
    pos = nxt
    if not req then
      st.need, st.line = need, line
      break
    end
    disarm(st)
    local route = routes[req.method]
    route = route and route[req.path]
    if route then
      local status, body = route(req)
      respond(conn, status, body, req.close)
    else
      respond(conn, 404, "not found\n", req.close)
    end
    if req.close then
      conn:close()
      st.done = true
      return
    end
    if pos > len then   -- between requests, with nothing left over
      st.need, st.line = 0, false
      break
    end
  end
  if pos > len then
    st.n, st.have = 0, 0
  else
    local rest = pos == 1 and buf or sub(buf, pos)
    st.parts[1], st.n, st.have = rest, 1, #rest
  end
  if st.phase ~= "head" then arm(conn, st, "body", BODY_TIMEOUT)
  elseif st.req or st.n > 0 then arm(conn, st, "head", HEAD_TIMEOUT) end
end

return {
  on_open = function(conn)
    conn.st = new_state()
    conn:set_timeout(IDLE_TIMEOUT)
  end,
  on_data = on_data,
  on_close = function(conn)
    if conn.st then disarm(conn.st) end
  end,
}
