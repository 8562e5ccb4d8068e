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

local find, sub, lower, match, gmatch = string.find, string.sub, string.lower,
  string.match, string.gmatch

local routes = {
  ["GET /"] = function() return 200, "hello from moonring\n" end,
  ["POST /echo"] = function(req) return 200, req.body end,
}

local reasons = {
  [200] = "OK", [400] = "Bad Request", [404] = "Not Found",
  [408] = "Request Timeout", [413] = "Content Too Large",
  [431] = "Request Header Fields Too Large", [501] = "Not Implemented",
  [505] = "HTTP Version Not Supported",
}

-- The Date header changes once a second: format it once a second.
local date_sec, date_str = -1, ""
local function http_date()
  local now = math.floor(mr.now())
  if now ~= date_sec then
    date_sec, date_str = now, os.date("!%a, %d %b %Y %H:%M:%S GMT", now)
  end
  return date_str
end

local function respond(conn, status, body, close)
  conn:send("HTTP/1.1 ", status, " ", reasons[status], "\r\nServer: moonring\r\nDate: ",
    http_date(), "\r\nContent-Type: text/plain\r\nContent-Length: ", #body,
    close and "\r\nConnection: close\r\n\r\n" or "\r\n\r\n", body)
end

-- Answer a bad request and close: the stream cannot be trusted past it.
local function fail(conn, status)
  respond(conn, status, reasons[status] .. "\n", true)
  conn:close()
  conn.failed = true
end

-- Parse a request head. Returns the request, or nil and a status.
local function parse_head(head)
  local method, target, major, minor = match(head, "^(%u+) (%S+) HTTP/(%d)%.(%d)\r\n")
  if not method then return nil, 400 end
  if major ~= "1" then return nil, 505 end
  local req = { method = method, path = target, headers = {}, minor = minor }
  local first = true
  for line in gmatch(head, "([^\r\n]*)\r\n") do
    if first then
      first = false
    else
      local name, value = match(line, "^([%w!#$%%&'*+%-.^_`|~]+):[ \t]*(.-)[ \t]*$")
      if not name then return nil, 400 end
      req.headers[lower(name)] = value
    end
  end
  local h = req.headers
  local te, cl = h["transfer-encoding"], h["content-length"]
  if te then
    if cl then return nil, 400 end
    if lower(te) ~= "chunked" then return nil, 501 end
    req.chunked = true
  elseif cl then
    if not match(cl, "^%d+$") or #cl > 15 then return nil, 400 end
    req.length = tonumber(cl)
    if req.length > MAX_BODY then return nil, 413 end
  end
  local connection = lower(h["connection"] or "")
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
      req, status = parse_head(sub(buf, pos, e + 1))
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
    local route = routes[req.method .. " " .. req.path]
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
    conn.buf = conn.buf .. data
    process(conn)
  end,
  on_close = function(conn)
    if conn.timer then conn.timer:cancel() end
  end,
}
