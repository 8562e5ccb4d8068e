-- statsd.lua: a statsd server: counters, timers and gauges over UDP,
-- flushed every INTERVAL seconds to the log, or as Graphite plaintext
-- lines to a TCP backend.
--   moonring -l udp://127.0.0.1:8125 examples/statsd.lua [INTERVAL [HOST:PORT]]
--   echo "hits:1|c" | socat - UDP:127.0.0.1:8125
--
-- A datagram holds one metric or several, a line each:
--   name:1|c  name:3|c|@0.1   a counter (3 sampled at 1 in 10 counts 30)
--   name:320|ms               a timer: count, min, max, mean, p90 per flush
--   name:42|g                 a gauge: the last value, kept across flushes
-- Lines that do not parse are counted (statsd.bad_lines) and dropped.
-- Every flush (10 s by default) writes, for each metric seen since the
-- last one, Graphite lines "stats.counters.NAME.count 30 TIME",
-- "stats.timers.NAME.p90 320 TIME"...: to the log at info ("statsd:
-- LINE"), or with HOST:PORT through one mr.tcp connection (kept and
-- reused; a backend that is down loses that flush's lines, which are
-- logged as a warning). Counters and timers start again from zero after
-- each flush.
--
-- Bounded: at most MAX_METRICS names per flush (others are dropped and
-- counted), and a timer keeps at most MAX_SAMPLES values for its p90 (its
-- count, min, max and mean count them all).
local mr = require "moonring"

local INTERVAL = tonumber(arg and arg[1]) or 10
local BACKEND = arg and arg[2]
local MAX_METRICS = 10000
local MAX_SAMPLES = 10000

local state = mr.keep("statsd", { counters = {}, timers = {}, gauges = {},
                                  metrics = 0, bad = 0, dropped = 0 })

local function add_counter(name, v, rate)
  local c = state.counters
  if not c[name] then
    if state.metrics >= MAX_METRICS then state.dropped = state.dropped + 1; return end
    state.metrics = state.metrics + 1
    c[name] = 0
  end
  c[name] = c[name] + v / rate
end

local function add_timer(name, v)
  local t = state.timers[name]
  if not t then
    if state.metrics >= MAX_METRICS then state.dropped = state.dropped + 1; return end
    state.metrics = state.metrics + 1
    t = { n = 0, sum = 0, min = v, max = v, samples = {} }
    state.timers[name] = t
  end
  t.n, t.sum = t.n + 1, t.sum + v
  if v < t.min then t.min = v end
  if v > t.max then t.max = v end
  if #t.samples < MAX_SAMPLES then t.samples[#t.samples + 1] = v end
end

local function parse_line(line)
  local name, value, kind, rest = line:match("^([^:|@%s]+):([^|]+)|(%a+)(.*)$")
  local v = tonumber(value)
  if not name or not v or v ~= v or v == math.huge or v == -math.huge then
    return false
  end
  local rate = 1
  if rest ~= "" then
    rate = tonumber(rest:match("^|@([%d.]+)$"))
    if not rate or rate <= 0 or rate > 1 then return false end
  end
  if kind == "c" then add_counter(name, v, rate)
  elseif kind == "ms" then add_timer(name, v)
  elseif kind == "g" then state.gauges[name] = v
  else return false end
  return true
end

local function num(v)
  if v == math.floor(v) and math.abs(v) < 2^53 then return string.format("%d", v) end
  return string.format("%.6g", v)
end

-- The Graphite lines for everything since the last flush; resets it.
local function collect(now)
  local out, ts = {}, string.format("%d", now)
  local function put(path, v) out[#out + 1] = path .. " " .. num(v) .. " " .. ts end
  for name, v in pairs(state.counters) do
    put("stats.counters." .. name .. ".count", v)
    put("stats.counters." .. name .. ".rate", v / INTERVAL)
  end
  for name, t in pairs(state.timers) do
    table.sort(t.samples)
    local p90 = t.samples[math.max(1, math.ceil(#t.samples * 0.9))]
    put("stats.timers." .. name .. ".count", t.n)
    put("stats.timers." .. name .. ".min", t.min)
    put("stats.timers." .. name .. ".max", t.max)
    put("stats.timers." .. name .. ".mean", t.sum / t.n)
    put("stats.timers." .. name .. ".p90", p90)
  end
  for name, v in pairs(state.gauges) do put("stats.gauges." .. name, v) end
  if state.bad > 0 then put("statsd.bad_lines", state.bad) end
  if state.dropped > 0 then put("statsd.dropped", state.dropped) end
  state.counters, state.timers, state.metrics = {}, {}, 0
  state.bad, state.dropped = 0, 0
  return out
end

local backend                          -- the mr.tcp socket, kept between flushes

local function send_backend(lines)
  local host, port = BACKEND:match("^(.+):(%d+)$")
  if not backend then
    local err
    backend, err = mr.tcp(host, tonumber(port), { timeout = 5 })
    if not backend then
      mr.log("warn", "statsd: backend", BACKEND, err, "- lost", #lines, "lines")
      return
    end
  end
  local ok, err = backend:send(table.concat(lines, "\n"), "\n")
  if not ok then
    mr.log("warn", "statsd: backend", BACKEND, err, "- lost", #lines, "lines")
    backend:close()
    backend = nil
  end
end

local function flush()
  local lines = collect(mr.now())
  if #lines == 0 then return end
  if BACKEND then
    send_backend(lines)
  else
    for _, l in ipairs(lines) do mr.log("info", "statsd: " .. l) end
  end
end

if state.timer then state.timer:cancel() end   -- the previous version's
state.timer = mr.every(INTERVAL, flush)

return {
  on_datagram = function(dgram, data)
    for line in data:gmatch("[^\n]+") do
      if not parse_line(line) then state.bad = state.bad + 1 end
    end
  end,
}
