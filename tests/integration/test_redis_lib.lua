-- test_redis_lib.lua: moonring.redis against redis-server (its port is
-- arg[1]) and against a fake server of its own. test_redis_lib.c sends
-- one line per request and reads one line back:
--
--   CMD ARG...         a command through the pool (arguments split on
--                      tabs if the line has one, else on spaces); the
--                      answer is what r:call returned, as dump() shows it
--   !binary, !pipeline, !args, !state
--                      checks made here: "ok ..." or the first failure
--   !pool N            N requests, each through connect and keepalive
--   !fake PORT LEN HOW and LEN raw bytes: a client of the fake server on
--                      PORT (this script) gets those bytes as its reply,
--                      after which the fake stays or closes (HOW)
--   !loop, !stop       INCR in a loop until !stop; then the counts
--   !blpop             a BLPOP that waits, for redis-server to die under
--
-- A connection whose first line is a RESP array is a client of the fake.
local mr = require "moonring"
local redis = require "moonring.redis"

local RPORT = tonumber(arg[1])
local format, concat, char, byte, rep = string.format, table.concat, string.char, string.byte, string.rep

local function esc(s)
  return (s:gsub('[%c"\\\128-\255]', function(c) return format("\\x%02x", byte(c)) end))
end

local function dump(v)
  local t = type(v)
  if t == "string" then return '"' .. esc(v) .. '"' end
  if t == "number" then
    return v % 1 == 0 and format("%d", v) or format("%.17g", v)
  end
  if v == redis.null then return "null" end
  if redis.is_error(v) then return 'error("' .. esc(v.message) .. '")' end
  if t == "table" then
    local parts = {}
    for i = 1, #v do parts[i] = dump(v[i]) end
    return "[" .. concat(parts, ", ") .. "]"
  end
  return tostring(v)
end

local function dumps(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = dump((select(i, ...))) end
  return concat(parts, " ")
end

local function split(line)
  local sep = line:find("\t", 1, true) and "\t" or " "
  local out, pos = {}, 1
  while true do
    local e = line:find(sep, pos, true)
    out[#out + 1] = line:sub(pos, (e or 0) - 1)
    if not e then return out end
    pos = e + 1
  end
end

local function eq(got, want, what)
  if got ~= want then
    error(format("%s: got %s, wanted %s", what, dump(got), dump(want)), 0)
  end
end

local function connect(opts)
  local r, err = redis.connect("127.0.0.1", RPORT, opts)
  if not r then error("connect: " .. err, 0) end
  return r
end

local checks = {}

-- Keys and values of any bytes, CRLF and RESP-looking bytes inside
-- them, and values of 1 and 3 MiB (past the socket's 1 MiB high-water
-- mark), each read back the same.
function checks.binary()
  local r = connect()
  local b = {}
  for i = 0, 255 do b[#b + 1] = char(i) end
  local all = concat(b)
  local values = { all, "\r\n", "a\r\nb", "$3\r\nfoo\r\n", "*1\r\n:1\r\n", "\0", "",
                   rep(all, 3) .. "\r\n", "-ERR not an error\r\n", "\n\r" }
  for i, v in ipairs(values) do
    local key = "bin:" .. i .. all
    eq(r:set(key, v), "OK", "SET " .. i)
    eq(r:get(key), v, "GET " .. i)
  end
  eq(r:set("bin", all), "OK", "SET bin")
  math.randomseed(7)
  local sizes = {}
  for _, size in ipairs({ 1048576, 3 * 1048576 }) do
    local chunks, t = {}, {}
    for c = 1, size / 4096 do
      for j = 1, 4096 do t[j] = math.random(0, 255) end
      chunks[c] = char(unpack(t))
    end
    local big = concat(chunks)
    local key = "big" .. size
    eq(r:set(key, big), "OK", "SET " .. key)
    eq(r:strlen(key), size, "STRLEN " .. key)
    local got = r:get(key)
    eq(#got, size, "GET " .. key .. " length")
    if got ~= big then error("GET " .. key .. ": different bytes", 0) end
    sizes[#sizes + 1] = size
  end
  r:init_pipeline()
  for i, v in ipairs(values) do r:rpush("binlist", v) end
  r:lrange("binlist", 0, -1)
  local res = assert(r:commit_pipeline())
  local list = res[#values + 1]
  eq(#list, #values, "LRANGE length")
  for i, v in ipairs(values) do eq(list[i], v, "LRANGE " .. i) end
  r:keepalive()
  return "ok " .. concat(sizes, " ")
end

-- 100 commands in one pipeline, of every reply type, an error among
-- them; a transaction inside a pipeline; 10,000 commands; the edges.
function checks.pipeline()
  local r = connect()
  r:del("pc", "pl")
  r:init_pipeline()
  local want, incr, pushed = {}, 0, 0
  for i = 1, 100 do
    local k, ok = i % 5
    if k == 1 then ok = r:set("p" .. i, "v" .. i); want[i] = '"OK"'
    elseif k == 2 then ok = r:get("p" .. (i - 1)); want[i] = '"v' .. (i - 1) .. '"'
    elseif k == 3 then incr = incr + 1; ok = r:incr("pc"); want[i] = tostring(incr)
    elseif k == 4 then
      if i % 10 == 4 then
        ok = r:incr("p" .. (i - 3))
        want[i] = 'error("ERR value is not an integer or out of range")'
      else
        ok = r:get("nothing" .. i); want[i] = "null"
      end
    else
      pushed = pushed + 1
      ok = r:rpush("pl", i)
      want[i] = tostring(pushed)
    end
    eq(ok, true, "queueing " .. i)
  end
  r:lrange("pl", 0, 2)
  want[101] = '["5", "10", "15"]'
  local res, err = r:commit_pipeline()
  if not res then error("commit: " .. err, 0) end
  eq(#res, 101, "results")
  for i = 1, 101 do eq(dump(res[i]), want[i], "result " .. i) end
  -- the connection goes on after the pipeline
  eq(r:get("p1"), "v1", "GET after the pipeline")

  r:init_pipeline()
  r:multi(); r:set("tx", 1); r:incr("p1"); r:incr("tx"); r:exec()
  res = assert(r:commit_pipeline())
  eq(dump(res), '["OK", "QUEUED", "QUEUED", "QUEUED", ["OK", error("ERR value is not an integer or out of range"), 2]]', "MULTI in a pipeline")

  local t0 = mr.now()
  r:init_pipeline()
  for i = 1, 10000 do r:incr("many") end
  res = assert(r:commit_pipeline())
  local ms = (mr.now() - t0) * 1000
  eq(#res, 10000, "10,000 results")
  eq(res[10000], 10000, "the last INCR")

  r:init_pipeline()
  eq(dump(r:commit_pipeline()), "[]", "an empty pipeline")
  eq(dumps(r:commit_pipeline()), 'nil "no pipeline"', "commit without init")
  r:init_pipeline(); r:set("cancelled", 1); r:cancel_pipeline()
  eq(r:exists("cancelled"), 0, "a cancelled pipeline sends nothing")
  assert(r:keepalive())
  return format("ok 10000 in %.1f ms", ms)
end

-- Arguments: numbers as Redis reads them, anything else raises; bad
-- options raise; a closed client answers nil, "closed".
function checks.args()
  local r = connect()
  local nums = { { 1e15, "1000000000000000" }, { 2 ^ 53, "9007199254740992" }, { -7, "-7" },
                 { 0.1, "0.1" }, { -0.0, "0" }, { 1 / 3, "0.3333333333333333" },
                 { 1.5e300, "1.5e+300" }, { math.huge, "inf" } }
  for _, n in ipairs(nums) do
    eq(r:set("num", n[1]), "OK", "SET " .. n[2])
    eq(r:get("num"), n[2], "GET " .. n[2])
  end
  eq(r:incrby("num2", 2 ^ 40), 2 ^ 40, "INCRBY 2^40")
  eq(r:call("set", "lower", "case"), "OK", "a command in lower case")
  local ok, err = pcall(r.set, r, "k", {})
  eq(ok, false, "a table argument")
  if not err:find("bad argument #2 to 'SET' (string or number expected, got table)", 1, true) then
    error("a table argument: " .. err, 0)
  end
  ok, err = pcall(r.call, r, "SET", "k", nil)
  eq(ok, false, "a nil argument")
  ok = pcall(r.call, r, nil)
  eq(ok, false, "no command name")
  ok = pcall(redis.connect, "127.0.0.1", RPORT, { pool_size = 0 })
  eq(ok, false, "pool_size 0")
  ok = pcall(redis.connect, "127.0.0.1", RPORT, { timeout = "1" })
  eq(ok, false, "a timeout that is not a number")
  assert(r:close())
  eq(dumps(r:get("k")), 'nil "closed"', "GET after close")
  eq(dumps(r:keepalive()), 'nil "closed"', "keepalive after close")
  eq(dumps(r:close()), 'nil "closed"', "close after close")
  return "ok"
end

-- A connection in a transaction, with keys watched or subscribed is
-- closed by keepalive, not given to the next user; a clean one is.
function checks.state()
  local function id(r) return assert(r:client("id")) end
  local r = connect()
  local first = id(r)
  assert(r:keepalive())
  r = connect()
  eq(id(r), first, "a connection from the pool")
  eq(r:get_reused_times() >= 1, true, "reused")
  local cases = {
    { function(c) return c:multi() end, "in a transaction" },
    { function(c) return c:watch("w") end, "keys watched" },
    { function(c) return c:subscribe("ch") end, "subscribed" },
  }
  local ids = { [first] = true }
  for _, case in ipairs(cases) do
    assert(case[1](r))
    eq(dumps(r:keepalive()), 'nil "not reusable (' .. case[2] .. '): closed"',
      "keepalive " .. case[2])
    r = connect()
    local now = id(r)
    if ids[now] then error("a connection left " .. case[2] .. " came back from the pool", 0) end
    ids[now] = true
    eq(dumps(r:exec()), 'nil "ERR EXEC without MULTI"', "EXEC on the next connection")
  end
  -- ended transactions and unwatched keys leave it clean
  r:multi(); r:incr("x"); r:exec(); r:watch("w"); r:unwatch()
  local clean = id(r)
  assert(r:keepalive())
  r = connect()
  eq(id(r), clean, "a clean connection is pooled")
  r:keepalive()
  return "ok"
end

function checks.pool(n)
  local v, reused
  for i = 1, tonumber(n) do
    local r = connect()
    reused = r:get_reused_times()
    v = assert(r:incr("pooled"))
    assert(r:keepalive())
  end
  return v .. " " .. reused
end

-- The fake server: answers the first request with the bytes stored for
-- it, then closes or answers every later one with +PONG; records when
-- the connection is gone.
local fake = { replies = {}, after = {}, seen = {} }
local next_id = 0

local function read_request(sock, first)
  local n = tonumber(first:sub(2))
  local args = {}
  for i = 1, n or 0 do
    local len = tonumber((sock:receive("*l") or ""):sub(2))
    if not len then return nil end
    local a = sock:receive(len + 2)
    if not a then return nil end
    args[i] = a:sub(1, -3)
  end
  return args
end

local function serve_fake(sock, first)
  local args = read_request(sock, first)
  local id = args and args[2]
  if not id or not fake.replies[id] then return end
  fake.seen[id] = "open"
  sock:send(fake.replies[id])
  if fake.after[id] ~= "close" then
    while true do
      local line = sock:receive("*l")
      if not line or not read_request(sock, line) then break end
      sock:send("+PONG\r\n")
    end
  end
  fake.seen[id] = "closed"
end

function checks.fake(sock, port, len, how)
  next_id = next_id + 1
  local id = tostring(next_id)
  fake.replies[id] = assert(sock:receive(tonumber(len)))
  fake.after[id] = how
  local r = assert(redis.connect("127.0.0.1", tonumber(port), { timeout = 0.3 }))
  local first = dumps(r:call("RAW", id))
  fake.replies[id] = nil
  local v, err = r:ping()
  for _ = 1, 100 do           -- failed: up to a second for the close to reach the fake
    if v or fake.seen[id] ~= "open" then break end
    mr.sleep(0.01)
  end
  local seen = fake.seen[id]
  r:close()
  return first .. " ; " .. (v and dumps(v) or dumps(v, err)) .. " ; " .. tostring(seen)
end

-- INCR through the pool every 5 ms until !stop, each call timed.
local loop
function checks.loop()
  loop = { ok = 0, err = 0, max = 0, errors = {}, last = "none" }
  local st = loop
  st.thread = mr.spawn(function()
    while not st.stop do
      local t0 = mr.now()
      local r, err = redis.connect("127.0.0.1", RPORT, { timeout = 1 })
      local v
      if r then
        v, err = r:incr("loop")
        r:keepalive()
      end
      local ms = (mr.now() - t0) * 1000
      if ms > st.max then st.max = ms end
      if v then st.ok, st.last = st.ok + 1, "ok"
      else st.err, st.last = st.err + 1, err; st.errors[err] = true end
      mr.sleep(0.005)
    end
  end)
  return "started"
end

function checks.stop()
  local st = loop
  st.stop = true
  st.thread:wait()
  local errors = {}
  for e in pairs(st.errors) do errors[#errors + 1] = e end
  table.sort(errors)
  return format("ok=%d err=%d max=%d last=%s errors=%s", st.ok, st.err, st.max, st.last,
    concat(errors, ","))
end

function checks.blpop(sock)
  local r = connect({ timeout = 10 })
  sock:send("waiting\n")
  local t0 = mr.now()
  local res = dumps(r:blpop("never", 5))
  return format("%s %d", res, (mr.now() - t0) * 1000)
end

return function(sock)
  local first = sock:receive("*l")
  if not first then return end
  if first:byte(1) == 42 then return serve_fake(sock, first) end
  local line = first
  while line do
    local reply
    if line:byte(1) == 33 then                           -- "!"
      local words = split(line:sub(2))
      local check = checks[words[1]]
      local ok, res
      if words[1] == "fake" or words[1] == "blpop" then
        ok, res = pcall(check, sock, unpack(words, 2))
      else
        ok, res = pcall(check, unpack(words, 2))
      end
      reply = ok and res or "FAIL " .. tostring(res)
    else
      local r, err = redis.connect("127.0.0.1", RPORT)
      if r then
        reply = dumps(r:call(unpack(split(line))))
        r:keepalive()
      else
        reply = dumps(nil, err)
      end
    end
    sock:send(reply, "\n")
    line = sock:receive("*l")
  end
end
