-- files.lua: the files of a directory over HTTP/1.1, on moonring.http.
--   moonring examples/files.lua ROOT
--
-- Serves ROOT on /: index.html for directories, Content-Type by
-- extension, ETag and Last-Modified with 304s, single ranges (206, 416),
-- HEAD; no path leads out of ROOT (see moonring.http.static).
local http = require "moonring.http"

local root = arg[1]
if not root then error("usage: moonring examples/files.lua ROOT", 0) end

local app = http.new()
app:get("/*", http.static(root))
return app:handler()
