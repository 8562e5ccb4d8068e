-- moonring.http: an HTTP/1.1 server for moonring's connection functions.
--
--   local http = require "moonring.http"
--   local app = http.new({ max_body = 1048576 })
--   app:get("/users/:id", function(req, res) res:json({ id = req.params.id }) end)
--   app:post("/echo", function(req, res) res:send(200, req:body()) end)
--   app:get("/static/*", http.static("/srv/www"))
--   app:fallback(function(req, res) res:send(404, "not found\n") end)
--   return app:handler()        -- the script's connection function
--
-- Each connection runs in a coroutine of its own (a connection function),
-- and so do its handlers: they may wait (mr.sleep, mr.tcp, redis) while
-- they answer. Requests on a connection are read one after the other
-- from the bytes it has received (keep-alive, pipelining), each parsed
-- from where the last one ended; see the README's "HTTP" section.
local mr = require "moonring"
local reader = require "moonring.http.reader"
local parse = require "moonring.http.parse"
local Request = require "moonring.http.request"
local Response = require "moonring.http.response"

local M = {}

local find, sub, gsub = string.find, string.sub, string.gsub
local type, pairs, setmetatable, getmetatable, xpcall, tostring, error = type, pairs,
  setmetatable, getmetatable, xpcall, tostring, error
local traceback = debug.traceback
local line = reader.line
local request_line, header, finish_head = parse.request_line, parse.header, parse.finish_head
local headers_mt = parse.headers_mt
local skip_body = Request.skip_body
local REASONS = Response.REASONS

M.Request, M.Response, M.REASONS = Request, Response, REASONS
M.unescape, M.parse_query, M.http_date = Request.unescape, Request.parse_query,
  Response.http_date

local DEFAULTS = {
  max_head = 32768,        -- request line and headers (431 beyond): nginx's
                           -- large_client_header_buffers (4 x 8k), as one
  max_line = 8192,         -- the request line (414 beyond)
  max_body = 1048576,      -- 413 beyond; per route too
  head_timeout = 10,       -- from a request's first byte to its blank line (408)
  body_timeout = 60,       -- from the body's first read to its end (408)
  idle_timeout = 30,       -- between requests (closed quietly)
  send_timeout = 60,       -- a send that waits this long closes
  max_requests = 0,        -- per connection (0: no limit)
  server = "moonring",     -- the Server header (false: none)
  default_type = "text/plain",
}

local App = {}
App.__index = App

-- A new application: opts as DEFAULTS.
function M.new(opts)
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if DEFAULTS[k] == nil then error("moonring.http: unknown option '" .. tostring(k) .. "'", 2) end
    o[k] = v
  end
  return setmetatable({
    opts = o,
    exact = {},      -- exact[method][path] = route
    patterns = {},   -- patterns[method] = { route... }, in the order added
    fallback_fn = nil,
    _sec = -1, _heads = {}, _date = "",
    _server_line = o.server and ("Server: " .. o.server .. "\r\n") or "",
  }, App)
end

-- A path pattern: literal segments, ":name" captures a segment, a last
-- "*" (or "*name") captures the rest (params["*"], or params.name).
local function compile(path)
  if sub(path, 1, 1) ~= "/" then error("moonring.http: a route's path starts with /", 3) end
  if not find(path, "[:*]") then return nil end
  local names, pat = {}, { "^" }
  local rest = nil
  for seg in path:gmatch("/([^/]*)") do
    if rest then error("moonring.http: '*' must end the route: " .. path, 3) end
    if sub(seg, 1, 1) == ":" then
      names[#names + 1] = sub(seg, 2)
      pat[#pat + 1] = "/([^/]+)"
    elseif sub(seg, 1, 1) == "*" then
      rest = sub(seg, 2)
      names[#names + 1] = rest ~= "" and rest or "*"
      pat[#pat + 1] = "/(.*)"
    else
      pat[#pat + 1] = "/" .. gsub(seg, "[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
    end
  end
  pat[#pat + 1] = "$"
  return table.concat(pat), names
end

-- app:route(method, path [, opts], fn): method "*" is any; opts.max_body
-- overrides the app's for this route.
function App:route(method, path, opts, fn)
  if fn == nil then fn, opts = opts, nil end
  if type(fn) ~= "function" and not (type(fn) == "table" and getmetatable(fn) and
      getmetatable(fn).__call) then
    error("moonring.http: a route's handler must be a function", 2)
  end
  local r = { fn = fn, max_body = opts and opts.max_body or nil }
  local pat, names = compile(path)
  if pat then
    r.pat, r.names, r.rest = pat, names, find(path, "/%*[^/]*$") ~= nil
    local list = self.patterns[method]
    if not list then
      list = {}
      self.patterns[method] = list
    end
    list[#list + 1] = r
  else
    local by = self.exact[method]
    if not by then
      by = {}
      self.exact[method] = by
    end
    by[path] = r
  end
  return self
end

for _, m in pairs({ "get", "post", "put", "delete", "patch", "head", "options" }) do
  local M_ = m:upper()
  App[m] = function(self, path, opts, fn) return self:route(M_, path, opts, fn) end
end
function App:all(path, opts, fn) return self:route("*", path, opts, fn) end

-- What no route matches (404 by default).
function App:fallback(fn)
  self.fallback_fn = fn
  return self
end

local function match_patterns(list, path, req)
  if not list then return nil end
  for i = 1, #list do
    local r = list[i]
    local caps = { path:match(r.pat) }
    if caps[1] then
      local params, names = req.params, r.names
      for k = 1, #names do params[names[k]] = Request.unescape(caps[k], false) end
      if r.rest then req._rest = caps[#names] end   -- as sent, for static
      return r
    end
  end
end

-- The route for req: an exact path first, then patterns in the order
-- added; HEAD falls back to GET; method "*" matches any.
local function lookup(app, req)
  local method, path = req.method, req.path
  local by = app.exact[method]
  local r = by and by[path]
  if r then return r end
  r = match_patterns(app.patterns[method], path, req)
  if r then return r end
  if method == "HEAD" then
    by = app.exact.GET
    r = by and by[path] or match_patterns(app.patterns.GET, path, req)
    if r then return r end
  end
  by = app.exact["*"]
  return by and by[path] or match_patterns(app.patterns["*"], path, req)
end

-- An error response the library sends (and then closes the connection).
local function fail(c, res, status)
  c.close = true
  if res and res._started then return end
  local body = (REASONS[status] or "Error") .. "\n"
  if res then
    res._started, res._done, res._hdrs = true, true, false   -- not the handler's headers
    c.sock:send(Response.full_head(res, status, nil, #body, "text/plain"), body)
    return
  end
  local app = c.app
  local head = "HTTP/1.1 " .. status .. " " .. (REASONS[status] or "Error") .. "\r\n" ..
    app._server_line .. "Date: " .. Response.http_date(os.time()) ..
    "\r\nContent-Type: text/plain\r\nContent-Length: " .. #body ..
    "\r\nConnection: close\r\n\r\n"
  c.sock:send(head, body)
end

-- Without a fallback of the app's: 405 with Allow when the path has
-- routes for other methods (as Go's ServeMux), else 404.
local function default_fallback(req, res)
  local app, path = req._c.app, req.path
  local allow, n = {}, 0
  for method, by in pairs(app.exact) do
    if by[path] and method ~= "*" then
      n = n + 1
      allow[n] = method
    end
  end
  for method, list in pairs(app.patterns) do
    if method ~= "*" and not (app.exact[method] and app.exact[method][path]) then
      for i = 1, #list do
        if find(path, list[i].pat) then
          n = n + 1
          allow[n] = method
          break
        end
      end
    end
  end
  if n == 0 then return res:send(404, "Not Found\n") end
  local has = {}
  for i = 1, n do has[allow[i]] = true end
  if has.GET and not has.HEAD then
    n = n + 1
    allow[n] = "HEAD"
  end
  table.sort(allow)
  res:send(405, "Method Not Allowed\n", { Allow = table.concat(allow, ", ") })
end

-- Read one request's head from c: the request, or nil and a status to
-- answer with (nil: close quietly).
local function read_head(c)
  local opts = c.app.opts
  -- every field the request path reads is here, so that none falls
  -- through to Request.__index, a function
  local req = setmetatable({ headers = setmetatable({}, headers_mt), _c = c,
    _phase = "done", _size = 0, _left = 0, _chunked = false, _close = false, _ka10 = false,
    _continue = false, _res = false, _rest = false }, Request)
  -- the request line (empty lines before it are skipped, RFC 9112 2.2)
  local cr, nxt, room = nil, nil, opts.max_head
  while true do
    cr, nxt = line(c, opts.max_line)
    if not cr then
      if nxt == "long" then return nil, 414 end
      if nxt == "bad" then return nil, 400 end
      if nxt == "timeout" then return nil, 408 end
      return nil
    end
    room = room - (nxt - c.pos)
    if cr ~= c.pos then break end
    if room <= 0 then return nil, 400 end   -- nothing but empty lines
    c.pos = nxt
  end
  local ok, status = request_line(c.buf, c.pos, cr, req)
  if not ok then return nil, status end
  c.pos = nxt
  local headers = req.headers
  while true do
    if room < 2 then return nil, 431 end
    cr, nxt = line(c, room)
    if not cr then
      if nxt == "long" then return nil, 431 end
      if nxt == "bad" then return nil, 400 end
      if nxt == "timeout" then return nil, 408 end
      return nil
    end
    local buf, pos = c.buf, c.pos
    room = room - (nxt - pos)
    c.pos = nxt
    if cr == pos then break end
    if not header(buf, pos, cr, headers) then return nil, 400 end
  end
  ok, status = finish_head(req)
  if not ok then return nil, status end
  return req
end

-- Serve one request on c (its head read): route, run, finish.
local function serve_one(c, req)
  local app = c.app
  local res = setmetatable({ _c = c, _req = req, _started = false, _done = false,
    _hdrs = false }, Response)
  req._res = res
  if req._close then c.close = true end
  local route = lookup(app, req)
  local fn = route and route.fn or app.fallback_fn or default_fallback
  if req._phase ~= "done" then
    local max = route and route.max_body or app.opts.max_body
    req._max = max
    if not req._chunked and req._left > max then return fail(c, res, 413) end
  end
  local ok, err = xpcall(fn, traceback, req, res)
  if not ok then
    mr.log("error", "http: handler for " .. req.method .. " " .. req.path .. " failed: " ..
      tostring(err))
    if not res._started then fail(c, res, 500) end
    c.close = true
    return
  end
  if not res._started then
    res:send(res._status or 200, "")
  elseif not res._done then
    res:finish()
  end
  if not c.close and not skip_body(req) then c.close = true end
end

-- The connection function: requests one after the other until one says
-- close, the client goes, or a timeout.
local function serve(app, sock)
  local opts = app.opts
  local c = { sock = sock, app = app, buf = "", pos = 1, close = false,
    send_timeout = opts.send_timeout, dl = nil, dl_sec = nil, dl_kind = nil, rt = nil,
    fail = fail }
  local idle = opts.idle_timeout   -- c.rt: the read timeout set (false: none, nil: unset)
  if idle <= 0 then idle = false end
  local count, max_requests = 0, opts.max_requests
  while true do
    if c.pos > #c.buf then   -- wait for the next request, idle
      if c.rt ~= idle then
        c.rt = idle
        sock:settimeouts(nil, c.send_timeout, idle or nil)
      end
      local data = sock:receive_any(65536)
      if not data then return end
      c.buf, c.pos = data, 1
    end
    c.dl_kind, c.dl, c.dl_sec = "head", nil, opts.head_timeout
    local req, status = read_head(c)
    if not req then
      if status then fail(c, nil, status) end
      return
    end
    count = count + 1
    if count == max_requests then req._close = true end
    serve_one(c, req)
    if c.close then return end
  end
end

-- The connection function to return from the script.
function App:handler()
  local app = self
  return function(sock) return serve(app, sock) end
end

-- moonring.http.static, loaded when first used.
function M.static(root, opts)
  return require("moonring.http.static").handler(root, opts)
end

return M
