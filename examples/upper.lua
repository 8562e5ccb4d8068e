-- upper.lua: answer every message in upper case.
--   moonring examples/upper.lua
return {
  on_data = function(conn, data)
    conn:send(data:upper())
  end,
}
