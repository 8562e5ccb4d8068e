-- The shared workload of make bench (scripts/bench.sh): a line "get N"
-- or "set N" does N gets or sets of 100-byte values on mr.shared.bench
-- over 1,000 keys, timed inside the handler, and answers
-- "<worker> <seconds>\n" (a line "who" answers "<worker>\n"). The same
-- loop as tests/bench/nginx_shared.conf's.
local mr = require "moonring"
local d = assert(mr.shared.bench, "run with --shared bench:64m")
local VALUE = string.rep("v", 100)
local KEYS = {}
for i = 0, 999 do KEYS[i] = "key" .. i end

local function run(op, n)
  local keys, v = KEYS, VALUE
  for i = 0, 999 do d:set(keys[i], v) end
  local t0 = mr.now()
  if op == "get" then
    for i = 1, n do local x = d:get(keys[i % 1000]) end
  else
    for i = 1, n do d:set(keys[i % 1000], v) end
  end
  return mr.now() - t0
end

return {
  on_data = function(conn, data)
    for line in data:gmatch("[^\n]+") do
      local op, n = line:match("^(%a+) *(%d*)")
      if op == "who" then
        conn:send(mr.worker(), "\n")
      elseif op == "get" or op == "set" then
        conn:send(mr.worker(), " ", string.format("%.6f", run(op, tonumber(n) or 1000000)), "\n")
      else
        conn:send("ERR ", line, "\n")
      end
    end
  end,
}
