-- moonring.http.static: files from a directory, and res:send_file.
--
--   app:get("/*", http.static("/srv/www", { index = "index.html" }))
--
-- The request's path (the route's "*" capture, else the whole path) is
-- percent-decoded and split into segments; "." segments are dropped, a
-- ".." segment is 403 (nginx normalizes it away, or answers 400 when it
-- climbs above the root: here no path climbs at all), a NUL or an
-- encoded "/" (%2f) 404. The file is opened beneath the root (openat2
-- RESOLVE_BENEATH, through mr.fs): a symlink that leads out of it, or
-- is absolute, fails and is 403, as nginx's disable_symlinks answers,
-- unless opts.follow_symlinks. A directory gets a redirect to its path
-- with a "/", then its index file (403 without one, as nginx without
-- autoindex).
--
-- res:send_file answers like Go's http.ServeContent: Content-Type from
-- the extension, Last-Modified and ETag (nginx's form, "mtime-size" in
-- hex), 304 for If-None-Match or If-Modified-Since, one Range (206, or
-- 416 when it is past the end; a list of ranges gets the whole file),
-- If-Range, HEAD. The bytes go out with sock:send_file: read through the
-- ring and queued without passing through Lua (a body up to 8 KiB is read
-- into a string and sent with the head, which costs less). http.static
-- keeps its files open, with their stat, for opts.cache.valid seconds
-- (see "the cache of open files" below).
local mr = require "moonring"
local Res = require "moonring.http.response"

local S = {}

local find, sub, lower, match, gsub, format, floor = string.find, string.sub, string.lower,
  string.match, string.gsub, string.format, math.floor
local concat = table.concat
local now = mr.now
local http_date = Res.http_date

local TYPES = {
  html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
  css = "text/css; charset=utf-8", js = "text/javascript; charset=utf-8",
  mjs = "text/javascript; charset=utf-8", json = "application/json",
  txt = "text/plain; charset=utf-8", md = "text/markdown; charset=utf-8",
  csv = "text/csv; charset=utf-8", xml = "application/xml", svg = "image/svg+xml",
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif",
  webp = "image/webp", avif = "image/avif", ico = "image/x-icon", pdf = "application/pdf",
  wasm = "application/wasm", woff = "font/woff", woff2 = "font/woff2", ttf = "font/ttf",
  otf = "font/otf", mp4 = "video/mp4", webm = "video/webm", mp3 = "audio/mpeg",
  ogg = "audio/ogg", wav = "audio/wav", zip = "application/zip", gz = "application/gzip",
  tar = "application/x-tar", lua = "text/plain; charset=utf-8",
}
S.TYPES = TYPES

function S.content_type(path)
  local ext = path and match(path, "%.([%w]+)$")
  return ext and TYPES[lower(ext)] or "application/octet-stream"
end

local function fs()
  local f = mr.fs
  if not f then error("moonring.http: files need mr.fs, which this moonring lacks", 3) end
  return f
end

-- The bytes go with sock:send_file, which came with mr.fs.

-- "Sun, 06 Nov 1994 08:49:37 GMT" -> seconds since the epoch, or nil.
local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
  Sep = 9, Oct = 10, Nov = 11, Dec = 12 }
local function parse_date(s)
  local d, mon, y, hh, mm, ss = match(s or "", "^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  local m = MONTHS[mon or ""]
  if not m then return nil end
  y, m, d = tonumber(y), m, tonumber(d)
  -- days from 1970-01-01 (Howard Hinnant's days_from_civil)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local doy = floor((153 * (m + (m > 2 and -3 or 9)) + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
end
S.parse_date = parse_date

-- Does the If-None-Match list name etag (weak comparison)?
local function etag_matches(list, etag)
  if match(list, "^%s*%*%s*$") then return true end
  for tag in list:gmatch("[^,]+") do
    tag = gsub(gsub(tag, "^%s+", ""), "%s+$", "")
    if sub(tag, 1, 2) == "W/" then tag = sub(tag, 3) end
    if tag == etag then return true end
  end
  return false
end

-- The single range of a Range header within size: first, last; or
-- "unsatisfiable"; or nil to send the whole file (absent, malformed, a
-- list of ranges).
local function parse_range(h, size)
  if not h then return nil end
  local a, b = match(h, "^%s*bytes%s*=%s*(%d*)%s*%-%s*(%d*)%s*$")
  if not a or (a == "" and b == "") then return nil end
  if a == "" then   -- the last b bytes
    local n = tonumber(b)
    if n == 0 then return "unsatisfiable" end
    if size == 0 then return "unsatisfiable" end
    return n >= size and 0 or size - n, size - 1
  end
  local first = tonumber(a)
  local last = b ~= "" and tonumber(b) or size - 1
  if b ~= "" and last < first then return nil end
  if first >= size then return "unsatisfiable" end
  if last >= size then last = size - 1 end
  return first, last
end
S.parse_range = parse_range

-- The status for a failed open or stat: its message is the system's.
local function status_of(err)
  err = tostring(err)
  if find(err, "No such file", 1, true) or find(err, "Not a directory", 1, true) or
      find(err, "too long", 1, true) then
    return 404
  end
  if find(err, "Permission denied", 1, true) or find(err, "cross-device", 1, true) or
      find(err, "symbolic links", 1, true) or find(err, "not permitted", 1, true) then
    return 403
  end
  return 500
end
S.status_of = status_of

local function error_page(res, status)
  return res:send(status, Res.REASONS[status] .. "\n")
end

-- The fields every response of a file carries, made once per file (and
-- kept in its cache entry): etag, lastmod, ctype, and all three with
-- Accept-Ranges as header lines.
local function file_fields(st, path, ctype)
  local mtime = floor(st.mtime)
  local etag = format('"%x-%x"', mtime, st.size)
  local lastmod = http_date(mtime)
  ctype = ctype or S.content_type(path)
  return etag, lastmod, ctype, "Last-Modified: " .. lastmod .. "\r\nETag: " .. etag ..
    "\r\nAccept-Ranges: bytes\r\nContent-Type: " .. ctype .. "\r\n"
end

-- Bodies up to SMALL bytes are read into a Lua string and sent with the
-- head in one sock:send; bigger ones go with sock:send_file, never
-- through Lua. Measured on a 4 KiB file (wrk -c50, one worker, server
-- CPU per request): 11.5 against 13.6-15.2 us; 8 KiB: 15.8-18.0 against
-- 18.4-20.9; 16 KiB: 17.9 against 16.3, so send_file from there.
local SMALL = 8192

-- res:send_file(path_or_file [, opts]): opts.content_type, opts.headers
-- (more headers), opts.stat (the file's, when known). A path is opened
-- as given. Returns the bytes of the body sent, or nil and why (the
-- error response, 404 or 403, is sent for a path that does not open).
-- opts.entry (http.static's cache entry) keeps the head's fields.
function Res:send_file(file, opts)
  opts = opts or {}
  local req = self._req
  local own = type(file) == "string"
  local path = own and file or opts.path
  local f, err = file, nil
  if own then
    f, err = fs().open(file, "r")
    if not f then
      error_page(self, status_of(err))
      return nil, err
    end
  end
  local st = opts.stat
  if not st then
    st, err = f:stat()
    if not st then
      if own then f:close() end
      error_page(self, 500)
      return nil, err
    end
  end
  if st.type ~= "file" then
    if own then f:close() end
    error_page(self, 403)
    return nil, "not a file"
  end
  local size, mtime = st.size, floor(st.mtime)
  local e = opts.entry
  local etag, lastmod, ctype, fields
  if e and e.fields then
    etag, lastmod, ctype, fields = e.etag, e.lastmod, e.ctype, e.fields
  else
    etag, lastmod, ctype, fields = file_fields(st, path, opts.content_type)
    if e then e.etag, e.lastmod, e.ctype, e.fields = etag, lastmod, ctype, fields end
  end
  local h = req.headers
  local inm, ims, range = h["if-none-match"], h["if-modified-since"], h.range
  local head, status, offset, length
  if not (inm or ims or range or opts.headers or opts.content_type or self._hdrs) then
    -- the common case: the whole file, its head ready made
    if self._started then
      if own then f:close() end
      return nil, "response already sent"
    end
    status, offset, length = 200, 0, size
    head = Res.file_head(self, 200, fields, size)
  else
    local headers = { ["Last-Modified"] = lastmod, ETag = etag, ["Accept-Ranges"] = "bytes",
      ["Content-Type"] = ctype }
    if opts.headers then for k, v in pairs(opts.headers) do headers[k] = v end end
    local not_modified
    if inm then not_modified = etag_matches(inm, etag)
    elseif ims then
      local t = parse_date(ims)
      not_modified = t and mtime <= t
    end
    if not_modified and (req.method == "GET" or req.method == "HEAD") then
      if own then f:close() end
      headers["Content-Type"], headers["Accept-Ranges"] = nil, nil
      local ok, serr = Res.send_body(self, 304, "", headers, nil)
      if not ok then return nil, serr end
      return 0
    end
    status, offset, length = 200, 0, size
    local if_range = h["if-range"]
    if range and if_range and if_range ~= etag and if_range ~= lastmod then range = nil end
    if range then
      local first, last = parse_range(range, size)
      if first == "unsatisfiable" then
        if own then f:close() end
        headers["Content-Range"] = "bytes */" .. size
        headers["Content-Type"] = "text/plain"
        Res.send_body(self, 416, "Range Not Satisfiable\n", headers, nil)
        return nil, "range not satisfiable"
      elseif first then
        status, offset, length = 206, first, last - first + 1
        headers["Content-Range"] = format("bytes %d-%d/%d", first, last, size)
      end
    end
    if self._started then
      if own then f:close() end
      return nil, "response already sent"
    end
    head = Res.full_head(self, status, headers, length, nil)
  end
  self._started, self._done = true, true
  local sock = self._c.sock
  local ok, serr
  local sent = 0
  if length <= SMALL and length > 0 and req.method ~= "HEAD" then
    -- one read into a string and one send with the head: cheaper than
    -- send_file's job for a small body (see SMALL)
    local data = f:read(length, offset)
    if data and #data == length then
      ok, serr = sock:send(head .. data)
      if own then f:close() end
      if not ok then return nil, serr end
      return length
    end
    -- short (the file shrank): send_file below finds it and cuts the response
  end
  ok, serr = sock:send(head)
  if ok and req.method ~= "HEAD" and length > 0 then
    sent, serr = sock:send_file(f, offset, length)
    if not sent then
      ok = false
      self._c.close = true   -- the body is cut short: the client must see it end
    elseif sent < length then
      -- the file shrank since its stat (changed in place, or a cached
      -- stat): the response is short of its Content-Length, so it ends
      -- with the connection
      self._c.close = true
      ok, serr = nil, "the file is shorter than its stat"
    end
  end
  if own then f:close() end
  if not ok then return nil, serr end
  return sent
end

-- --- the cache of open files ---------------------------------------------
--
-- Per handler, so per worker (each has its own Lua state): by the path
-- beneath the root, an entry holds the open file (none for a
-- directory), its stat and its head's fields, for `valid` seconds from
-- its open; at most `max` entries, the least recently used going first.
-- An entry leaves the cache (expired, evicted) at once, but its file is
-- closed only when the last request using it is done (users): a request
-- holds it from the lookup to the end of its send_file, across yields.
-- The core (fs_close) would also wait for a send_file's reads in
-- flight; this also keeps a file open between the head and the body.

local function unlink(c, e)
  if e.prev then e.prev.next = e.next else c.first = e.next end
  if e.next then e.next.prev = e.prev else c.last = e.prev end
  e.prev, e.next = nil, nil
end

local function push_front(c, e)
  e.next = c.first
  if c.first then c.first.prev = e else c.last = e end
  c.first = e
end

local function drop(c, e)
  unlink(c, e)
  c.map[e.key] = nil
  c.n = c.n - 1
  e.dead = true
  if e.users == 0 and e.f then
    e.f:close()
    e.f = nil
  end
end

-- A request is done with e.
local function release(e)
  e.users = e.users - 1
  if e.dead and e.users == 0 and e.f then
    e.f:close()
    e.f = nil
  end
end

-- The entry for key (opened by open(key) when it is not cached or has
-- expired), held for the caller: release it. Or nil, err, status.
local function lookup(c, key, open)
  local t = now()
  local e = c and c.map[key]
  if e then
    if t < e.exp then
      if c.first ~= e then
        unlink(c, e)
        push_front(c, e)
      end
      e.users = e.users + 1
      return e
    end
    drop(c, e)
  end
  local f, err = open(key)
  if not f then return nil, err, status_of(err) end
  local st
  st, err = f:stat()
  if not st then
    f:close()
    return nil, err, 500
  end
  if st.type ~= "file" then   -- a directory (or else): nothing held
    f:close()
    f = nil
  end
  e = { key = key, f = f, st = st, users = 1, dead = true }
  if c and not c.map[key] then   -- else one came meanwhile: this one goes after use
    e.exp, e.dead = t + c.valid, false
    c.map[key] = e
    c.n = c.n + 1
    push_front(c, e)
    if c.n > c.max then drop(c, c.last) end
  end
  return e
end

local function new_cache(o, where)
  if o == false then return nil end
  if o ~= nil and type(o) ~= "table" then
    error(where .. ": opts.cache: a table or false expected", 4)
  end
  o = o or {}
  local max, valid = o.max or 1000, o.valid or 60
  if type(max) ~= "number" or max < 1 or max % 1 ~= 0 then
    error(where .. ": opts.cache.max: a count of files from 1 expected", 4)
  end
  if type(valid) ~= "number" or valid < 0 then
    error(where .. ": opts.cache.valid: seconds expected", 4)
  end
  return { max = max, valid = valid, n = 0, map = {} }
end

-- A route handler serving the files under root.
function S.handler(root, opts)
  opts = opts or {}
  if type(root) ~= "string" or root == "" then
    error("moonring.http.static: a root directory expected", 3)
  end
  root = gsub(root, "/+$", "")
  if root == "" then root = "/" end
  local index = opts.index
  if index == nil then index = "index.html" end
  local follow = opts.follow_symlinks
  local c = new_cache(opts.cache, "moonring.http.static")
  local files
  local function open(p)
    if follow then return files.open(root .. "/" .. p, "r") end
    return files.open(p, "r", { beneath = root })
  end
  return function(req, res)
    files = files or fs()
    if req.method ~= "GET" and req.method ~= "HEAD" then
      return res:send(405, "Method Not Allowed\n", { Allow = "GET, HEAD" })
    end
    local raw = req._rest or req.path
    if find(raw, "%", 1, true) then
      if find(lower(raw), "%2f", 1, true) then return error_page(res, 404) end
      raw = gsub(raw, "%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end)
      if find(raw, "\0", 1, true) then return error_page(res, 404) end
    end
    local path = raw
    if raw == "" or find(raw, "//", 1, true) or find(raw, "/%.") or sub(raw, 1, 1) == "." or sub(raw, 1, 1) == "/"
        or sub(raw, -1) == "/" then
      local segs, n = {}, 0
      for seg in raw:gmatch("[^/]+") do
        if seg == ".." then return error_page(res, 403) end
        if seg ~= "." then
          n = n + 1
          segs[n] = seg
        end
      end
      path = n > 0 and concat(segs, "/", 1, n) or "."
    end
    local e, err, status = lookup(c, path, open)
    if not e then return error_page(res, status) end
    if e.st.type == "dir" then
      release(e)
      if sub(req.path, -1) ~= "/" then
        local q = req.query_string
        return res:redirect(req.path .. "/" .. (q ~= "" and "?" .. q or ""), 301)
      end
      if not index then return error_page(res, 403) end
      path = (path == "." and "" or path .. "/") .. index
      e, err, status = lookup(c, path, open)
      if not e then return error_page(res, status == 404 and 403 or status) end
    end
    local ok, serr = res:send_file(e.f, { stat = e.st, path = path, entry = e })
    release(e)
    return ok, serr
  end
end

return S
