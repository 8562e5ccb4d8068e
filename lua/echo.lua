-- The built-in handler: every byte received goes back to its sender,
-- and every datagram (on a udp:// listener) to its own.
-- `moonring` alone serves this; `moonring lua/echo.lua` is the same.
return {
  on_data = function(conn, data)
    conn:send(data)
  end,
  on_datagram = function(dgram, data)
    dgram:reply(data)
  end,
}
