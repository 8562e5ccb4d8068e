-- http.lua: an HTTP/1.1 server.
--   moonring examples/http.lua [HEAD_TIMEOUT [IDLE_TIMEOUT]]   (10 and 30 s)
--
--   GET /        a short hello
--   POST /echo   answers with the request body
--   other paths  404
--
-- Keep-alive and pipelining, Content-Length and chunked request bodies,
-- Date and Server headers. Malformed or oversized requests get 400, 413,
-- 431 or 505 and the connection is closed. A client gets HEAD_TIMEOUT
-- seconds to send a request's head (then 408) and IDLE_TIMEOUT seconds of
-- idleness, so slow or silent clients cannot hold connections for ever.
local mr = require "moonring"

local MAX_HEAD = 8192          -- request line and headers; 431 beyond
local MAX_BODY = 1024 * 1024   -- 413 beyond
local HEAD_TIMEOUT = tonumber(arg[1]) or 10
local IDLE_TIMEOUT = tonumber(arg[2]) or 30

local find, sub, lower, match = string.find, string.sub, string.lower, string.match

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
  conn.failed = true
end

-- The parser keeps to plain string.find, string.byte and string.sub, which
-- LuaJIT compiles; string.match and gmatch would leave its traces.
local byte = string.byte
local TOKEN = {}   -- the bytes a header name may hold (RFC 9110 tchar)
for c in ("!#$%&'*+-.^_`|~"):gmatch(".") do TOKEN[byte(c)] = true end
for c = byte("0"), byte("9") do TOKEN[c] = true end
for c = byte("A"), byte("Z") do TOKEN[c] = true; TOKEN[c + 32] = true end
local METHOD = { GET = true, HEAD = true, POST = true, PUT = true, DELETE = true,
  OPTIONS = true, PATCH = true, CONNECT = true, TRACE = true }
local SP, TAB = byte(" "), byte("\t")

-- Parse one header line buf[pos, le) into headers. Returns true, or nil
-- for a malformed line.
local function parse_header(buf, pos, le, headers)
  local colon = find(buf, ":", pos, true)
  if not colon or colon >= le or colon == pos then return nil end
  for i = pos, colon - 1 do
    if not TOKEN[byte(buf, i)] then return nil end
  end
  local vs, ve = colon + 1, le - 1
  while vs <= ve and (byte(buf, vs) == SP or byte(buf, vs) == TAB) do vs = vs + 1 end
  while ve >= vs and (byte(buf, ve) == SP or byte(buf, ve) == TAB) do ve = ve - 1 end
  headers[lower(sub(buf, pos, colon - 1))] = sub(buf, vs, ve)
  return true
end

local function all_digits(s)
  for i = 1, #s do
    local b = byte(s, i)
    if b < 48 or b > 57 then return false end
  end
  return #s > 0
end

-- Parse the request head buf[pos, e] (e: the first byte of its closing
-- blank line). Returns the request, or nil and a status.
local function parse_head(buf, pos, e)
  local le = find(buf, "\r\n", pos, true)
  if find(buf, "\n", pos, true) ~= le + 1 or find(buf, "\r", pos, true) ~= le then
    return nil, 400
  end
  local sp1 = find(buf, " ", pos, true)
  local sp2 = sp1 and find(buf, " ", sp1 + 1, true)
  if not sp2 or sp2 >= le or sp1 == pos or sp2 == sp1 + 1 then return nil, 400 end
  local method, target, version = sub(buf, pos, sp1 - 1), sub(buf, sp1 + 1, sp2 - 1),
    sub(buf, sp2 + 1, le - 1)
  if not METHOD[method] and not match(method, "^%u+$") then return nil, 400 end
  local minor
  if version == "HTTP/1.1" then minor = "1"
  elseif version == "HTTP/1.0" then minor = "0"
  else
    local major
    major, minor = match(version, "^HTTP/(%d)%.(%d)$")
    if not major then return nil, 400 end
    if major ~= "1" then return nil, 505 end
  end
  local headers = {}
  pos = le + 2
  while pos < e + 2 do
    le = find(buf, "\r\n", pos, true)
    -- a bare CR or LF inside a line is malformed
    if find(buf, "\n", pos, true) ~= le + 1 or find(buf, "\r", pos, true) ~= le
      or not parse_header(buf, pos, le, headers) then
      return nil, 400
    end
    pos = le + 2
  end
  local req = { method = method, path = target, headers = headers, minor = minor }
  local te, cl = headers["transfer-encoding"], headers["content-length"]
  if te then
    if cl then return nil, 400 end
    if lower(te) ~= "chunked" then return nil, 501 end
    req.chunked = true
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

-- Read a chunked body from buf at pos. Returns the body and the position
-- after it, nil when more bytes are needed, or nil and a status.
local function parse_chunked(buf, pos)
  local parts, size = {}, 0
  while true do
    local e = find(buf, "\r\n", pos, true)
    if not e then
      if #buf - pos > 64 then return nil, 400 end   -- no size line is that long
      return nil
    end
    local hex = match(sub(buf, pos, e - 1), "^(%x+)[ \t]*;?.*$")
    if not hex or #hex > 8 then return nil, 400 end
    local n = tonumber(hex, 16)
    if n == 0 then
      -- trailers, up to an empty line
      local t = find(buf, "\r\n\r\n", e, true)
      if sub(buf, e, e + 3) == "\r\n\r\n" then t = e end
      if not t then return nil, #buf - e > MAX_HEAD and 431 or nil end
      return table.concat(parts), t + 4
    end
    size = size + n
    if size > MAX_BODY then return nil, 413 end
    if #buf < e + 2 + n + 1 then return nil end
    if sub(buf, e + 2 + n, e + 3 + n) ~= "\r\n" then return nil, 400 end
    parts[#parts + 1] = sub(buf, e + 2, e + 1 + n)
    pos = e + 4 + n
  end
end

local function head_timer(conn)
  conn.timer = mr.after(HEAD_TIMEOUT, function()
    conn.timer = nil
    if not conn.req and conn.buf ~= "" and not conn.failed then fail(conn, 408) end
  end)
end

-- Handle every complete request in the buffer, in order.
local function process(conn)
  local buf, pos = conn.buf, 1
  while not conn.failed do
    local req = conn.req
    if not req then
      local e = find(buf, "\r\n\r\n", pos, true)
      if not e then
        if #buf - pos + 1 > MAX_HEAD then return fail(conn, 431) end
        break
      end
      if e - pos > MAX_HEAD then return fail(conn, 431) end
      local status
      req, status = parse_head(buf, pos, e)
      if not req then return fail(conn, status) end
      conn.req, pos = req, e + 4
    end
    if req.chunked then
      local body, next_pos = parse_chunked(buf, pos)
      if not body then
        if next_pos then return fail(conn, next_pos) end
        break
      end
      req.body, pos = body, next_pos
    else
      local n = req.length or 0
      if #buf - pos + 1 < n then break end
      req.body, pos = sub(buf, pos, pos + n - 1), pos + n
    end
    conn.req = nil
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
      return
    end
  end
  conn.buf = sub(buf, pos)
  -- the head timer runs while part of a head has arrived
  if conn.req or conn.buf == "" then
    if conn.timer then conn.timer:cancel(); conn.timer = nil end
  elseif not conn.timer then
    head_timer(conn)
  end
end

return {
  on_open = function(conn)
    conn.buf = ""
    conn:set_timeout(IDLE_TIMEOUT)
  end,
  on_data = function(conn, data)
    if conn.failed then return end
    local buf = conn.buf
    conn.buf = buf == "" and data or buf .. data
    process(conn)
  end,
  on_close = function(conn)
    if conn.timer then conn.timer:cancel() end
  end,
}
