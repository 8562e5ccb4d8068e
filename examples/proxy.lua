-- proxy.lua: a TCP proxy to one upstream.
--   moonring -p 7000 examples/proxy.lua HOST:PORT
-- Each client gets its own connection to HOST:PORT, and two loops copy
-- bytes, one each way. Backpressure runs both ways by itself: a send
-- waits while the other side does not read, and while it waits nothing
-- is read from this side, so the sender there is held back by TCP.
local mr = require "moonring"

local host, port = (arg[1] or ""):match("^%[?([^%]]-)%]?:(%d+)$")
if not host then error("usage: moonring examples/proxy.lua HOST:PORT", 0) end
port = tonumber(port)

-- Copy from one socket to the other until either side goes away.
local function pipe(from, to)
  while true do
    local data = from:receive_any(65536)
    if not data or not to:send(data) then return end
  end
end

return function(client)
  local up, err = mr.tcp(host, port)
  if not up then
    mr.log("warn", "upstream", host .. ":" .. port, err)
    return
  end
  local back = mr.spawn(function()
    pipe(up, client)
    client:close()
  end)
  pipe(client, up)
  up:close()
  back:wait()
end
