-- proxy.lua: a TCP proxy to one upstream.
--   moonring -p 7000 examples/proxy.lua HOST:PORT
-- Each client gets its own connection to HOST:PORT. Backpressure runs
-- both ways: when one side does not read, conn:send returns false and
-- the proxy stops reading from the other side until on_drain.
local mr = require "moonring"

local host, port = (arg[1] or ""):match("^%[?([^%]]-)%]?:(%d+)$")
if not host then error("usage: moonring examples/proxy.lua HOST:PORT", 0) end
port = tonumber(port)

return {
  on_open = function(client)
    local up, err = mr.connect(host, port, {
      on_data = function(up, data)
        if client:send(data) == false then up:pause() end
      end,
      on_drain = function(up) client:resume() end,
      on_close = function(up, reason, detail)
        if reason ~= "eof" and reason ~= "closed" then
          mr.log("warn", "upstream", host .. ":" .. port, reason, detail or "")
        end
        client:close()
      end,
    })
    if not up then
      mr.log("warn", "upstream", host .. ":" .. port, err)
      return client:close()
    end
    client.up = up
  end,

  on_data = function(client, data)
    if client.up:send(data) == false then client:pause() end
  end,

  on_drain = function(client)
    if client.up then client.up:resume() end
  end,

  on_close = function(client)
    if client.up then client.up:close() end
  end,
}
