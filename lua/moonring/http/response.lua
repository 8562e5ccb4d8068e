-- moonring.http.response: what a handler answers with.
--
--   res:send([status,] body [, headers])  a whole response
--   res:json(value [, status])            a whole response in JSON
--   res:status(code), res:set_header(name, value), res:get_header(name)
--   res:write(piece) ... res:finish([piece])   a streamed response
--   res:send_file(path_or_file [, opts])  (moonring.http.static)
--
-- Every response carries Date and Server and, when its length is known,
-- Content-Length; a streamed one is chunked (HTTP/1.1) or ends with the
-- connection (HTTP/1.0). HEAD gets the head alone. The head of a plain
-- response (no headers of its own) is made once a second per status and
-- Content-Type, with the Date, and sent with its length and body in one
-- send.
local mr = require "moonring"
local Request = require "moonring.http.request"
local json = require "moonring.http.json"

local Res = {}
Res.__index = Res

local find, lower, format, floor = string.find, string.lower, string.format, math.floor
local concat = table.concat
local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local now = mr.now
local body_blocks = Request.body_blocks

local REASONS = {
  [100] = "Continue", [101] = "Switching Protocols",
  [200] = "OK", [201] = "Created", [202] = "Accepted", [203] = "Non-Authoritative Information",
  [204] = "No Content", [205] = "Reset Content", [206] = "Partial Content",
  [300] = "Multiple Choices", [301] = "Moved Permanently", [302] = "Found",
  [303] = "See Other", [304] = "Not Modified", [307] = "Temporary Redirect",
  [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [406] = "Not Acceptable", [408] = "Request Timeout",
  [409] = "Conflict", [410] = "Gone", [411] = "Length Required",
  [412] = "Precondition Failed", [413] = "Content Too Large", [414] = "URI Too Long",
  [415] = "Unsupported Media Type", [416] = "Range Not Satisfiable",
  [417] = "Expectation Failed", [422] = "Unprocessable Content", [426] = "Upgrade Required",
  [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
  [505] = "HTTP Version Not Supported",
}
Res.REASONS = REASONS

local END, CLOSE, KEEP = "\r\n\r\n", "\r\nConnection: close\r\n\r\n",
  "\r\nConnection: keep-alive\r\n\r\n"

local LENGTHS = {}   -- [n] = n .. "\r\n\r\n", for the lengths of small bodies

local function http_date(t) return os.date("!%a, %d %b %Y %H:%M:%S GMT", t) end
Res.http_date = http_date

-- The second, for the Date header: the clock is read at most once a
-- second while responses go out, by a timer that runs just past the end
-- of each second and stops after a second without a response (the next
-- one reads the clock and starts it again). Reading it for every
-- response cost about 500 instructions of 10,000.
local clock_sec, clock_on, clock_used = -1, false, false
local function tick()
  local t = now()
  clock_sec = floor(t)
  if clock_used then
    clock_used = false
    mr.after(clock_sec + 1 - t + 0.001, tick)
  else
    clock_on = false
  end
end
local function second()
  if clock_on then
    clock_used = true
    return clock_sec
  end
  local t = now()
  clock_sec = floor(t)
  clock_on, clock_used = true, false
  mr.after(clock_sec + 1 - t + 0.001, tick)
  return clock_sec
end

-- The app's heads for this second, made again when the second changes.
local function cache(app)
  local sec = second()
  if sec ~= app._sec then
    app._sec, app._date, app._heads = sec, http_date(sec), {}
  end
  return app._heads
end

local function status_line(app, status)
  return "HTTP/1.1 " .. status .. " " .. (REASONS[status] or "Unknown") .. "\r\n" ..
    app._server_line .. "Date: " .. app._date .. "\r\n"
end

-- "HTTP/1.1 200 OK\r\nServer: ...\r\nDate: ...\r\nContent-Type: ...\r\nContent-Length: "
local function plain_head(app, status, ctype)
  local heads = cache(app)
  local by = heads[ctype]
  if not by then
    by = {}
    heads[ctype] = by
  end
  local h = by[status]
  if not h then
    h = status_line(app, status) .. "Content-Type: " .. ctype .. "\r\nContent-Length: "
    by[status] = h
  end
  return h
end

-- Must this response end the connection? Yes when asked, and when the
-- request's body is unread and cannot be skipped (it has not all come).
local function closing(res)
  local c, req = res._c, res._req
  if c.close then return true end
  if req._phase ~= "done" and body_blocks(req) then
    c.close = true
    return true
  end
  return false
end

local function check_field(s, what)
  s = tostring(s)
  if find(s, "[\r\n%z]") then error("moonring.http: a CR, LF or NUL in a header " .. what, 4) end
  return s
end

-- The head of any response: its status line, Server, Date, the headers
-- set with set_header and those given (which win), then the framing:
-- Content-Length (length), chunked (length true), or neither (length
-- false: no body, or one that ends with the connection).
local function full_head(res, status, headers, length, ctype)
  local c = res._c
  local app = c.app
  cache(app)
  local t, n = { status_line(app, status) }, 1
  local seen_type = false
  local function add(h, skip)
    for k, v in pairs(h) do
      local lk = lower(k)
      if skip and skip[lk] ~= nil then
        -- given again in the call's headers: those win
      elseif lk == "content-length" or lk == "transfer-encoding" or lk == "date" then
        -- the framing is ours
      elseif lk == "connection" then
        if find(lower(tostring(v)), "close", 1, true) then c.close = true end
      else
        if lk == "content-type" then seen_type = true end
        k = check_field(k, "name")
        if type(v) == "table" then
          for _, x in ipairs(v) do
            n = n + 1
            t[n] = k .. ": " .. check_field(x, "value") .. "\r\n"
          end
        else
          n = n + 1
          t[n] = k .. ": " .. check_field(v, "value") .. "\r\n"
        end
      end
    end
  end
  local own = res._hdrs
  if own then
    local skip
    if headers then
      skip = {}
      for k in pairs(headers) do skip[lower(k)] = true end
    end
    add(own, skip)
  end
  if headers then add(headers, nil) end
  if not seen_type and ctype and length ~= false then
    n = n + 1
    t[n] = "Content-Type: " .. ctype .. "\r\n"
  end
  if length == true then
    n = n + 1
    t[n] = "Transfer-Encoding: chunked\r\n"
  elseif length then
    n = n + 1
    t[n] = "Content-Length: " .. length .. "\r\n"
  end
  local close = closing(res)
  n = n + 1
  t[n] = close and "Connection: close\r\n\r\n" or
    (res._req._ka10 and "Connection: keep-alive\r\n\r\n" or "\r\n")
  return concat(t, "", 1, n)
end
Res.full_head = full_head

-- The head of a file's response when nothing else joins it (no headers
-- set with set_header): the status line, Server, Date, fields (the
-- file's, ready made and checked) and the framing.
function Res.file_head(res, status, fields, length)
  local app = res._c.app
  cache(app)
  local close = closing(res)
  return status_line(app, status) .. fields .. "Content-Length: " .. length .. "\r\n" ..
    (close and "Connection: close\r\n\r\n" or
      (res._req._ka10 and "Connection: keep-alive\r\n\r\n" or "\r\n"))
end

local function no_body(status) return status < 200 or status == 204 or status == 304 end

-- A whole response of body with Content-Type ctype (unless headers name one).
local function send_body(res, status, body, headers, ctype)
  if res._started then return nil, "response already sent" end
  if type(status) ~= "number" or status < 200 or status > 999 then
    error("moonring.http: a status from 200 to 999 expected, got " .. tostring(status), 3)
  end
  if type(body) ~= "string" then
    if body == nil then body = ""
    elseif type(body) == "number" then body = tostring(body)
    else error("moonring.http: a string body expected, got " .. type(body), 3) end
  end
  res._started, res._done = true, true
  local c = res._c
  local sock = c.sock
  if headers == nil and not res._hdrs and not no_body(status) then
    local close = closing(res)
    local head = plain_head(c.app, status, ctype)
    local req = res._req
    local len = #body
    if not close and not req._ka10 and len < 4096 and req.method ~= "HEAD" then
      -- the usual case: the length and the blank line as one string,
      -- made once per length, rather than a number made a string each time
      local tail = LENGTHS[len]
      if not tail then
        tail = len .. END
        LENGTHS[len] = tail
      end
      return sock:send(head, tail, body)
    end
    local tail = close and CLOSE or (req._ka10 and KEEP or END)
    if req.method == "HEAD" then return sock:send(head, len, tail) end
    return sock:send(head, len, tail, body)
  end
  if no_body(status) then
    return sock:send(full_head(res, status, headers, false, nil))
  end
  local head = full_head(res, status, headers, #body, ctype)
  if res._req.method == "HEAD" then return sock:send(head) end
  return sock:send(head, body)
end
Res.send_body = send_body

-- res:send(status, body, headers), res:send(body, headers) (the status
-- set with res:status, 200 by default), res:send(status).
function Res:send(status, body, headers)
  if type(status) ~= "number" then
    status, body, headers = self._status or 200, status, body
  end
  return send_body(self, status, body, headers, self._c.app.opts.default_type)
end

function Res:json(value, status)
  local s = json.get().encode(value)
  return send_body(self, status or self._status or 200, s, nil, "application/json")
end

-- res:status(404):send("gone\n")
function Res:status(code)
  if type(code) ~= "number" then error("moonring.http: a status number expected", 2) end
  self._status = code
  return self
end

function Res:set_header(name, value)
  local h = self._hdrs
  if not h then
    h = {}
    self._hdrs = h
  end
  -- one entry per name, in any case
  local l = lower(name)
  for k in pairs(h) do
    if lower(k) == l then h[k] = nil end
  end
  h[name] = value
  return self
end

function Res:get_header(name)
  local h = self._hdrs
  if not h then return nil end
  local l = lower(name)
  for k, v in pairs(h) do
    if lower(k) == l then return v end
  end
end

-- Has the response started (its head is sent)?
function Res:started() return self._started == true end

-- The head of a streamed response: chunked, unless the handler set a
-- Content-Length (then its bytes are sent as they are) or the client
-- speaks HTTP/1.0 (then the body ends with the connection).
local function start_stream(res)
  local status = res._status or 200
  local req, c = res._req, res._c
  res._started = true
  local length = true
  local cl = res:get_header("content-length")
  if no_body(status) then
    length, res._nobody = false, true
  elseif cl then
    length = tonumber(cl)
    if not length then error("moonring.http: a bad Content-Length: " .. tostring(cl), 3) end
  elseif req.version == 1.0 then
    length, c.close = false, true
  end
  res._chunked = length == true
  if req.method == "HEAD" then res._nobody = true end
  return c.sock:send(full_head(res, status, nil, length, c.app.opts.default_type))
end

-- Send a piece of a streamed response (its head first, at the first).
-- Returns the bytes queued, or nil and why ("closed"...).
function Res:write(piece)
  if self._done then return nil, "response already sent" end
  if not self._started then
    local ok, err = start_stream(self)
    if not ok then return nil, err end
  end
  if piece == nil or piece == "" or self._nobody then return 0 end
  piece = tostring(piece)
  if self._chunked then
    return self._c.sock:send(format("%x\r\n", #piece), piece, "\r\n")
  end
  return self._c.sock:send(piece)
end

-- End a streamed response (or send a whole one, if nothing was written).
function Res:finish(piece)
  if self._done then return nil, "response already sent" end
  if not self._started then
    return self:send(self._status or 200, piece or "")
  end
  if piece then
    local ok, err = self:write(piece)
    if not ok then return nil, err end
  end
  self._done = true
  if self._chunked and not self._nobody then return self._c.sock:send("0\r\n\r\n") end
  return true
end

-- res:send_file(path_or_file [, opts]): in moonring.http.static, which
-- replaces this on loading.
function Res:send_file(file, opts)
  require "moonring.http.static"
  return self:send_file(file, opts)
end

-- res:redirect(url [, status]): 302 by default.
function Res:redirect(url, status)
  return send_body(self, status or 302, "", { Location = url },
    self._c.app.opts.default_type)
end

return Res
