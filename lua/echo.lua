-- The built-in handler: every byte received goes back to its sender.
-- `moonring` alone serves this; `moonring lua/echo.lua` is the same.
return {
  on_data = function(conn, data)
    conn:send(data)
  end,
}
