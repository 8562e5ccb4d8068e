-- chat.lua: line-based chat.
--   moonring examples/chat.lua [IDLE_SECONDS]      (default 300)
-- The first line a client sends is its nickname; each later line goes to
-- every other client as "nick: text". Idle clients are disconnected, and so
-- are clients that stop reading.
local mr = require "moonring"
local framing = require "moonring.framing"

local IDLE = tonumber(arg[1]) or 300
local MAX_LINE = 4096

-- A client that does not read what the others say would make its queue
-- grow for ever: once it passes the high-water mark, it is let go
-- (IRC servers call this "SendQ exceeded").
local function broadcast(from, msg)
  for c in mr.conns() do
    if c ~= from and c.nick and c:send(msg) == false then
      mr.log("info", "chat:", c.nick, "does not keep up; disconnecting")
      c:close()
    end
  end
end

return {
  on_open = function(conn)
    conn.lines = framing.lines(MAX_LINE)
    conn:set_timeout(IDLE)
    conn:send("welcome! your nickname?\n")
  end,

  on_data = function(conn, data)
    for line in conn.lines:each(data) do
      if not conn.nick then
        local nick = line:match("^%s*([%w_%-%.]+)%s*$")
        if not nick or #nick > 32 then
          conn:send("a nickname is 1 to 32 letters, digits, _ - or .; try again\n")
        else
          conn.nick = nick
          conn:send("hello ", nick, "\n")
          broadcast(conn, "* " .. nick .. " joined\n")
        end
      elseif line ~= "" then
        broadcast(conn, conn.nick .. ": " .. line .. "\n")
      end
    end
    if conn.lines.err then
      conn:send("line too long (max ", MAX_LINE, " bytes), bye\n")
      conn:close()
    end
  end,

  on_close = function(conn, reason)
    if conn.nick then broadcast(conn, "* " .. conn.nick .. " left (" .. reason .. ")\n") end
  end,
}
