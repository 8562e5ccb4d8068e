-- wrk script: send requests pipelined, `depth` at a time (default 16).
--   wrk -s tests/clients/wrk-pipeline.lua http://127.0.0.1:7000/ -- 16
local req
init = function(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
