-- moonring.http.json: lua-cjson, when it is installed.
local J = {}

local ok, cjson = pcall(require, "cjson")
local why = not ok and cjson

-- cjson, or an error that says how to get it.
function J.get()
  if not ok then
    error("moonring.http: JSON needs lua-cjson (Debian: apt-get install lua-cjson), "
      .. "which LuaJIT could not load: " .. tostring(why):match("^[^\n]*"), 3)
  end
  return cjson
end

function J.available() return ok end

return J
