-- hits.lua: an HTTP/1.1 hit counter kept in Redis, on moonring.http.
--   moonring examples/hits.lua [HOST:PORT]      (Redis at 127.0.0.1:6379)
--
--   GET /          INCR hits in Redis; 200 with the new count as the body
--   anything else  404
--   Redis failing  502, and the connection goes on
--
-- The handler waits for Redis in the connection's coroutine, through
-- moonring.redis and the worker's pool, so a busy server keeps a few
-- connections to Redis open instead of making one per request.
local mr = require "moonring"
local redis = require "moonring.redis"
local http = require "moonring.http"

local host, port = (arg[1] or "127.0.0.1:6379"):match("^%[?([^%]]-)%]?:(%d+)$")
if not host then error("usage: moonring examples/hits.lua [HOST:PORT]", 0) end
port = tonumber(port)

-- A pool smaller than the number of clients waiting on Redis at once
-- makes connections churn: each one given back beyond it closes another.
local REDIS = { timeout = 2, pool_size = 64, idle = 60 }

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

local app = http.new({ max_head = 8192, max_body = 65536, idle_timeout = 30,
  send_timeout = 10 })

app:get("/", function(req, res)
  local n, err = hit()
  if n then return res:send(200, string.format("%d", n)) end
  warn(err)
  res:send(502, "Bad Gateway\n")
end)
app:fallback(function(req, res) res:send(404, "Not Found\n") end)

return app:handler()
