-- The echo, written top to bottom: a connection function reads whatever
-- has arrived and sends it back, until the peer goes away.
--   moonring examples/echo_seq.lua
return function(sock)
  while true do
    local data = sock:receive_any(65536)
    if not data then return end
    sock:send(data)
  end
end
