-- The application test_http_lib.c drives: a route for each feature of
-- moonring.http.   moonring test_http_lib.lua ROOT
local mr = require "moonring"
local http = require "moonring.http"

local root = assert(arg[1], "ROOT expected")
local app = http.new({ head_timeout = 1, body_timeout = 1, idle_timeout = 1.5, max_requests = 10001,
  max_body = 1048576 })

app:get("/hello", function(req, res) res:send(200, "hello\n") end)
app:get("/", function(req, res) res:send(200, "hello\n") end)
app:get("/users/:id", function(req, res) res:json({ id = req.params.id }) end)
app:get("/users/:id/posts/:post", function(req, res)
  res:send(req.params.id .. "|" .. req.params.post .. "\n")
end)
app:get("/rest/*path", function(req, res) res:send("rest=" .. req.params.path .. "\n") end)
app:get("/star/*", function(req, res) res:send("star=" .. req.params["*"] .. "\n") end)
app:all("/any", function(req, res) res:send("any " .. req.method .. "\n") end)

-- the query, sorted: "k=v" lines (a list joined with ",")
app:get("/query", function(req, res)
  local keys = {}
  for k in pairs(req.query) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = { "raw=" .. req.query_string }
  for _, k in ipairs(keys) do
    local v = req.query[k]
    out[#out + 1] = k .. "=" .. (type(v) == "table" and table.concat(v, ",") or v)
  end
  res:send(table.concat(out, "\n") .. "\n")
end)

app:get("/headers", function(req, res)
  res:set_header("X-Reply", "yes")
  res:send(200, string.format("x-test=%s ua=%s version=%.1f method=%s host=%s\n",
    tostring(req.headers["X-Test"]), tostring(req:header("User-Agent") ~= nil),
    req.version, req.method, tostring(req.headers.host)),
    { ["Content-Type"] = "text/x-test" })
end)

app:post("/echo", function(req, res)
  local body = req:body()
  if body then res:send(200, body) end
end)
app:put("/echo", function(req, res)
  local body = req:body()
  if body then res:send(200, body) end
end)
app:post("/small", { max_body = 10 }, function(req, res)
  local body = req:body()
  if body then res:send(200, body) end
end)

-- the body in pieces, back as a chunked response of the same pieces
app:post("/stream", function(req, res)
  local n = 0
  local ok = req:read_body(function(piece)
    n = n + 1
    res:write(piece)
  end)
  if ok then res:finish() end
end)

app:post("/count", function(req, res)
  local total, pieces = 0, 0
  for piece in req:body_pieces() do
    total, pieces = total + #piece, pieces + 1
  end
  if not req.body_error then res:send(string.format("%d bytes\n", total)) end
end)

app:post("/ignore", function(req, res) res:send("ignored\n") end)

app:get("/chunked", function(req, res)
  res:set_header("Content-Type", "text/x-stream")
  res:write("a")
  res:write("bb")
  res:finish("ccc")
end)

app:get("/sleep", function(req, res)
  mr.sleep(0.2)
  res:send("slept\n")
end)
app:get("/error", function(req, res) error("boom") end)
app:get("/nothing", function(req, res) end)
app:get("/created", function(req, res) res:status(201):send("made\n") end)
app:get("/nocontent", function(req, res) res:send(204) end)
app:get("/sendfile", function(req, res) res:send_file(root .. "/sub/t.txt") end)
app:get("/jsoninfo", function(req, res)
  local ok = pcall(require, "cjson")
  res:send(ok and "cjson\n" or "none\n")
end)
app:post("/json", function(req, res)
  local v, err = req:json()
  if not v then return res:send(400, tostring(err) .. "\n") end
  res:json({ got = v.n * 2 })
end)

app:get("/files/*", http.static(root))
app:get("/follow/*", http.static(root, { follow_symlinks = true }))
-- the cache: two files, for a second (test_static_cache); and none
app:get("/cached/*", http.static(root .. "/cache", { cache = { max = 2, valid = 1 } }))
app:get("/nocache/*", http.static(root .. "/cache", { cache = false }))

app:fallback(function(req, res) res:send(404, "no route\n") end)

return app:handler()
