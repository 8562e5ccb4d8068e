-- greeter.lua: greet each client, count its messages, say goodbye on "quit".
--   moonring examples/greeter.lua
-- Shows on_open, fields kept on the connection, conn:peer() and conn:close().
local mr = require "moonring"
local served = mr.keep("served", { total = 0 })   -- survives hot reloads

return {
  on_open = function(conn)
    conn.count = 0
    local host, port = conn:peer()
    conn:send("hello ", host, ":", port, ", you are client #", served.total + 1, "\n")
    served.total = served.total + 1
  end,

  on_data = function(conn, data)
    conn.count = conn.count + 1
    if data:match("^quit") then
      conn:send("bye after ", conn.count, " message(s)\n")
      conn:close()
    else
      conn:send(data)
    end
  end,

  on_close = function(conn, reason)
    mr.log("debug", "client", conn.id, "left:", reason)
  end,
}
