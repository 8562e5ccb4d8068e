-- mixed.lua: the mixed workload of make bench. Echo on the listener whose
-- port is arg[2]; on the others, the files of arg[1] over HTTP with
-- moonring.http's static handler (bytes through the ring with send_file),
-- and under /io/ the same files read with Lua's io library, which blocks
-- the worker while the disk works: the stall the ring takes away.
--   moonring -l tcp://127.0.0.1:7000 -l tcp://127.0.0.1:8080 tests/bench/mixed.lua ROOT 7000
local http = require "moonring.http"

local root, echo_port = arg[1], arg[2]
if not root or not echo_port then
  error("usage: moonring -l ... tests/bench/mixed.lua ROOT ECHO_PORT", 0)
end

local app = http.new()
app:get("/io/*", function(req, res)
  local f = io.open(root .. "/" .. req.path:sub(5):gsub("%.%.", ""), "rb")
  if not f then return res:send(404, "not found\n") end
  local size = f:seek("end")
  f:seek("set")
  res:set_header("content-length", tostring(size))
  while true do
    local chunk = f:read(262144)
    if not chunk then break end
    res:write(chunk)
  end
  f:close()
  res:finish()
end)
app:get("/*", http.static(root))
local serve = app:handler()

local suffix = ":" .. echo_port
return function(sock)
  local where = sock:listener()
  if where:sub(-#suffix) ~= suffix then return serve(sock) end
  while true do
    local data = sock:receive_any(65536)
    if not data or not sock:send(data) then return end
  end
end
