-- http.lua: an HTTP/1.1 server on moonring.http.
--   moonring examples/http.lua [HEAD_TIMEOUT [IDLE_TIMEOUT [BODY_TIMEOUT]]]
--                                                  (10, 30 and 60 s)
--
--   GET /        a short hello
--   POST /echo   answers with the request body
--   other paths  404
--
-- Keep-alive, pipelining, Content-Length and chunked bodies, Date and
-- Server headers, and the library's checks of every request (400, 413,
-- 414, 431, 501, 505, 408: see the README's "HTTP" section). A head may
-- take 8 KiB here.
local http = require "moonring.http"

local app = http.new({
  max_head = 8192,
  max_body = 1024 * 1024,
  head_timeout = tonumber(arg[1]) or 10,
  idle_timeout = tonumber(arg[2]) or 30,
  body_timeout = tonumber(arg[3]) or 60,
})

app:get("/", function(req, res) res:send(200, "hello from moonring\n") end)
app:post("/echo", function(req, res)
  local body = req:body()
  if body then res:send(200, body) end
end)
app:fallback(function(req, res) res:send(404, "not found\n") end)

return app:handler()
