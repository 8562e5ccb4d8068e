-- The tarantool peer for make bench: a Lua echo server on socket.tcp_server,
-- written the fast way (one fiber per connection, a raw sysread as soon as
-- the socket is readable, write back all of it).
-- usage: tarantool tests/bench/tarantool_echo.lua PORT
local socket = require('socket')
local port = tonumber(arg[1])

local function serve(s)
    s:setsockopt('IPPROTO_TCP', 'TCP_NODELAY', true)
    while s:readable() do
        local data = s:sysread(65536)
        if data == nil or data == '' then break end
        if not s:write(data) then break end
    end
end

local server = socket.tcp_server('127.0.0.1', port, serve)
if not server then
    io.stderr:write('tarantool_echo: cannot listen on port ', port, '\n')
    os.exit(1)
end
