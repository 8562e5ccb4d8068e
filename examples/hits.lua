-- hits.lua: an HTTP/1.1 hit counter kept in Redis.
--   moonring examples/hits.lua [HOST:PORT]      (Redis at 127.0.0.1:6379)
--
--   GET /          INCR hits in Redis; 200 with the new count as the body
--   anything else  404
--   Redis failing  502, and the connection goes on
--
-- A connection function: each client connection reads its requests top
-- to bottom, with keep-alive (HTTP/1.1's default; "Connection: close"
-- and HTTP/1.0 end it). Redis is reached through moonring.redis and
-- the worker's pool, so a busy server keeps a few connections to Redis
-- open instead of making one per request.
local mr = require "moonring"
local redis = require "moonring.redis"

local host, port = (arg[1] or "127.0.0.1:6379"):match("^%[?([^%]]-)%]?:(%d+)$")
if not host then error("usage: moonring examples/hits.lua [HOST:PORT]", 0) end
port = tonumber(port)

local MAX_HEAD = 8192        -- request line and headers; 431 beyond
local MAX_BODY = 65536       -- a body nobody reads is still read, up to this; 413 beyond
-- A pool smaller than the number of clients waiting on Redis at once
-- makes connections churn: each one given back beyond it closes another.
local REDIS = { timeout = 2, pool_size = 64, idle = 60 }

local find, sub, lower, match, format = string.find, string.sub, string.lower, string.match,
  string.format

local reasons = {
  [200] = "OK", [400] = "Bad Request", [404] = "Not Found", [413] = "Content Too Large",
  [431] = "Request Header Fields Too Large", [501] = "Not Implemented",
  [502] = "Bad Gateway",
}

local function respond(sock, status, body, close)
  return sock:send("HTTP/1.1 ", status, " ", reasons[status],
    "\r\nContent-Type: text/plain\r\nContent-Length: ", #body,
    close and "\r\nConnection: close\r\n\r\n" or "\r\n\r\n", body)
end

-- A Redis outage fails every request: say so once a second, not each time.
local last_warning = 0
local function warn(err)
  local now = mr.now()
  if now - last_warning >= 1 then
    last_warning = now
    mr.log("warn", "redis", host .. ":" .. port .. ":", err)
  end
end

local function hit()
  local r, err = redis.connect(host, port, REDIS)
  if not r then return nil, err end
  local n
  n, err = r:incr("hits")
  r:keepalive()              -- a failed connection is closed already
  return n, err
end

-- The request head (without its blank line): method, target, and
-- whether the connection is to close after it, its body length; or nil
-- and the status for a malformed head.
local function parse(head)
  local le = find(head, "\r\n", 1, true) or #head + 1
  local method, target, minor = match(sub(head, 1, le - 1), "^(%u+) (%S+) HTTP/1%.(%d)$")
  if not method then return nil, 400 end
  local close = minor == "0"
  local length = 0
  local pos = le + 2
  while pos <= #head do
    local e = find(head, "\r\n", pos, true) or #head + 1
    local name, value = match(sub(head, pos, e - 1), "^([%w!#$%%&'*+.^_`|~-]+):[ \t]*(.-)[ \t]*$")
    if not name then return nil, 400 end
    name = lower(name)
    if name == "connection" then
      for token in lower(value):gmatch("[^,%s]+") do
        if token == "close" then close = true
        elseif token == "keep-alive" then close = false end
      end
    elseif name == "content-length" then
      if not match(value, "^%d+$") or #value > 15 then return nil, 400 end
      length = tonumber(value)
    elseif name == "transfer-encoding" then
      return nil, 501
    end
    pos = e + 2
  end
  return method, target, close, length
end

return function(sock)
  sock:settimeouts(nil, 10, 30)    -- a client idle for 30 s is let go
  while true do
    local head, err = sock:receive_until("\r\n\r\n")
    if not head then
      if err == "line too long" then respond(sock, 431, "Request Header Fields Too Large\n", true) end
      return
    end
    if #head > MAX_HEAD then return respond(sock, 431, "Request Header Fields Too Large\n", true) end
    local method, target, close, length = parse(head)
    if not method then
      local status = target
      return respond(sock, status, reasons[status] .. "\n", true)
    end
    if length > MAX_BODY then return respond(sock, 413, "Content Too Large\n", true) end
    if length > 0 and not sock:receive(length) then return end
    if method == "GET" and target == "/" then
      local n, rerr = hit()
      if n then
        respond(sock, 200, format("%d", n), close)
      else
        warn(rerr)
        respond(sock, 502, "Bad Gateway\n", close)
      end
    else
      respond(sock, 404, "Not Found\n", close)
    end
    if close then return end
  end
end
