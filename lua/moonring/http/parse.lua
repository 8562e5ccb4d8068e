-- moonring.http.parse: the pieces of an HTTP/1.1 request head, parsed
-- from a string between two positions, with no I/O: the request line,
-- a header line, the framing of the body, a chunk's size line.
--
-- A request's framing must leave no doubt, since a proxy in front might
-- read it differently (request smuggling): what these refuse is listed
-- in the README's "HTTP" section. They keep to plain string.find,
-- string.byte and string.sub, which LuaJIT compiles; string.match would
-- leave its traces.
local P = {}

local find, sub, byte, lower, match = string.find, string.sub, string.byte, string.lower,
  string.match

local TOKEN = {}   -- the bytes a header name or a method may hold (RFC 9110 tchar)
for c in ("!#$%&'*+-.^_`|~"):gmatch(".") do TOKEN[byte(c)] = true end
for c = byte("0"), byte("9") do TOKEN[c] = true end
for c = byte("A"), byte("Z") do TOKEN[c] = true; TOKEN[c + 32] = true end
local HEX = {}     -- the value of each hex digit, by its byte
for i = 0, 9 do HEX[48 + i] = i end
for i = 10, 15 do HEX[87 + i] = i; HEX[55 + i] = i end
P.HEX = HEX
local METHOD = { GET = true, HEAD = true, POST = true, PUT = true, DELETE = true,
  OPTIONS = true, PATCH = true, CONNECT = true, TRACE = true }
-- headers that frame the request or name its target: a second one is an error
local SINGLE = { ["content-length"] = true, ["transfer-encoding"] = true, host = true }
local SP, TAB, SEMI, SLASH = byte(" "), byte("\t"), byte(";"), byte("/")

-- Header names are stored in lower case; looking one up in another case
-- finds it all the same.
local headers_mt = { __index = function(t, k)
  if type(k) == "string" then
    local l = lower(k)
    if l ~= k then return rawget(t, l) end
  end
end }
P.headers_mt = headers_mt

-- The request line buf[pos, cr) into req (method, target, path,
-- query_string, version). Returns true, or nil and a status.
function P.request_line(buf, pos, cr, req)
  local sp1 = find(buf, " ", pos, true)
  local sp2 = sp1 and find(buf, " ", sp1 + 1, true)
  if not sp2 or sp2 >= cr or sp1 == pos or sp2 == sp1 + 1 then return nil, 400 end
  local method = sub(buf, pos, sp1 - 1)
  if not METHOD[method] then
    for i = pos, sp1 - 1 do
      if not TOKEN[byte(buf, i)] then return nil, 400 end
    end
  end
  local version = sub(buf, sp2 + 1, cr - 1)
  if version == "HTTP/1.1" then req.version = 1.1
  elseif version == "HTTP/1.0" then req.version = 1.0
  else
    local major, minor = match(version, "^HTTP/(%d)%.(%d)$")
    if not major then return nil, 400 end
    if major ~= "1" then return nil, 505 end
    req.version = minor == "0" and 1.0 or 1.1
  end
  -- the target: no controls, no spaces (a space would have ended it)
  local ts, te = sp1 + 1, sp2 - 1
  for i = ts, te do
    local b = byte(buf, i)
    if b < 33 or b == 127 then return nil, 400 end
  end
  local target = sub(buf, ts, te)
  local first = byte(target, 1)
  local path = target
  if first ~= SLASH then
    if target == "*" and method == "OPTIONS" then
      path = "*"
    else   -- absolute form, as sent to a proxy: keep the path
      local rest = match(target, "^[hH][tT][tT][pP][sS]?://[^/?#]+(.*)$")
      if not rest then return nil, 400 end
      path = rest == "" and "/" or rest
    end
  end
  local q = find(path, "?", 1, true)
  req.method, req.target = method, target
  if q then
    req.path, req.query_string = sub(path, 1, q - 1), sub(path, q + 1)
  else
    req.path, req.query_string = path, ""
  end
  return true
end

-- The header line buf[pos, cr) into headers (nil: check it only, as for
-- a trailer). Returns true, or nil for a malformed line (obs-fold
-- included: a name cannot start with a space) or a second one of the
-- SINGLE headers. Other repeated headers are joined with ", ".
function P.header(buf, pos, cr, headers)
  local colon = find(buf, ":", pos, true)
  if not colon or colon >= cr or colon == pos then return nil end
  for i = pos, colon - 1 do
    if not TOKEN[byte(buf, i)] then return nil end
  end
  local vs, ve = colon + 1, cr - 1
  while vs <= ve and (byte(buf, vs) == SP or byte(buf, vs) == TAB) do vs = vs + 1 end
  while ve >= vs and (byte(buf, ve) == SP or byte(buf, ve) == TAB) do ve = ve - 1 end
  local nul = find(buf, "\0", vs, true)
  if nul and nul <= ve then return nil end
  if not headers then return true end
  local value = sub(buf, vs, ve)
  local name = lower(sub(buf, pos, colon - 1))
  local old = rawget(headers, name)
  if old then
    if SINGLE[name] then return nil end
    value = old .. ", " .. value
  end
  headers[name] = value
  return true
end

local function all_digits(s)
  for i = 1, #s do
    local b = byte(s, i)
    if b < 48 or b > 57 then return false end
  end
  return #s > 0
end

-- Does the comma-separated list s hold token (in lower case)?
local function has_token(s, token)
  for t in lower(s):gmatch("[^,%s]+") do
    if t == token then return true end
  end
  return false
end
P.has_token = has_token

-- The head is all there: how is its body framed, does the connection
-- stay open, what does it expect? Sets req._chunked or req._left (the
-- Content-Length), req._close, req._ka10 (an HTTP/1.0 keep-alive),
-- req._continue. Returns true, or nil and a status.
function P.finish_head(req)
  local headers, v10 = req.headers, req.version == 1.0
  if not v10 and not rawget(headers, "host") then return nil, 400 end
  local te, cl = rawget(headers, "transfer-encoding"), rawget(headers, "content-length")
  if te then
    if cl or v10 then return nil, 400 end
    if lower(te) ~= "chunked" then return nil, 501 end
    req._chunked, req._phase, req._left = true, "size", 0
  elseif cl then
    if not all_digits(cl) or #cl > 15 then return nil, 400 end
    local n = tonumber(cl)
    if n > 0 then req._left, req._phase = n, "data" end
  end
  local connection = rawget(headers, "connection")
  if v10 then
    req._close = not (connection and has_token(connection, "keep-alive"))
    req._ka10 = not req._close
  elseif connection then
    req._close = has_token(connection, "close")
  end
  local expect = rawget(headers, "expect")
  if expect and not v10 then
    if lower(expect) ~= "100-continue" then return nil, 417 end
    req._continue = req._phase ~= "done"
  end
  return true
end

-- The size on the chunk-size line buf[pos, cr): hex digits, then nothing
-- or an extension: optional spaces, ";" and anything (ignored). Returns
-- the size, or nil when the line is malformed or the size over 2^40.
function P.chunk_size(buf, pos, cr)
  local i, n = pos, 0
  while i < cr do
    local v = HEX[byte(buf, i)]
    if not v then break end
    n = n * 16 + v
    if n > 1099511627776 then return nil end
    i = i + 1
  end
  if i == pos then return nil end
  if i == cr then return n end
  while i < cr and (byte(buf, i) == SP or byte(buf, i) == TAB) do i = i + 1 end
  if i == cr or byte(buf, i) ~= SEMI then return nil end
  local nul = find(buf, "\0", i, true)
  if nul and nul < cr then return nil end
  return n
end

return P
