-- test_framing.lua: moonring.framing held to its contract, and its cost
-- when a frame comes in many pieces. test_framing.c sends "check" and
-- "work" (each answers "ok" or the first failure) and "time" (the answer
-- is the seconds each stream took).
local framing = require "moonring.framing"

local concat, rep, sub, char, format = table.concat, string.rep, string.sub, string.char, string.format

-- what: a string, or a function giving one (built only on a failure)
local function eq(got, want, what)
  if got ~= want then
    if type(what) == "function" then what = what() end
    error(format("%s: got %q, wanted %q", what, tostring(got), tostring(want)), 0)
  end
end

-- A case: a decoder, and its input as units (the bytes of one frame and
-- the frame they must give) with a tail that stays pending.
local function case(name, make, units, tail)
  local raw, ends, frames, at = {}, {}, {}, 0
  for i, u in ipairs(units) do
    raw[i], frames[i] = u[1], u[2]
    at = at + #u[1]
    ends[i] = at
  end
  raw[#raw + 1] = tail
  return { name = name, make = make, input = concat(raw), ends = ends, frames = frames }
end

local cases = {
  case("lines", function() return framing.lines(64) end, {
    { "hello\r\n", "hello" }, { "\n", "" }, { "\r\n", "" }, { "a\rb\n", "a\rb" },
    { "x\r\r\n", "x\r" }, { "no cr\n", "no cr" }, { "\r\r\n", "\r" },
  }, "tail\r"),
  case("crlf crlf", function() return framing.delimited("\r\n\r\n", 64) end, {
    { "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/1.1\r\nHost: x" },
    { "\r\n\r\n", "" }, { "a\r\n\r\r\n\r\n", "a\r\n\r" }, { "\r\r\n\r\n", "\r" },
  }, "b\r\n\r"),
  case("abab", function() return framing.delimited("abab", 64) end, {
    { "xabaabab", "xaba" }, { "aabab", "a" }, { "abab", "" }, { "babaabab", "baba" },
  }, "aba"),
  case(";", function() return framing.delimited(";", 64) end, {
    { ";", "" }, { "one;", "one" }, { "two\n;", "two\n" },
  }, "three"),
}
for _, bytes in ipairs { 1, 2, 4 } do
  local big = rep("z", bytes == 1 and 255 or 300)
  local units = {}
  for i, m in ipairs { "", "a", big, "\0\0\0\1", "" } do
    units[i] = { framing.encode_length(m, bytes), m }
  end
  cases[#cases + 1] = case("length " .. bytes, function() return framing.length(bytes, 300) end,
                           units, sub(framing.encode_length("partial", bytes), 1, -2))
end

-- Feed c.input cut at the given offsets (ascending) through each(); after
-- every piece, the frames so far and the bytes pending must be exact.
local function feed(c, cuts)
  local dec, got, last, done = c.make(), 0, 0, 0
  cuts[#cuts + 1] = #c.input
  for _, cut in ipairs(cuts) do
    local function what(v)
      return function() return format("%s, cut at %s, after %d bytes: %s", c.name, concat(cuts, ","), cut, v) end
    end
    for f in dec:each(sub(c.input, last + 1, cut)) do
      got = got + 1
      eq(f, c.frames[got], what("frame " .. got))
    end
    last = cut
    while c.ends[done + 1] and c.ends[done + 1] <= cut do done = done + 1 end
    eq(got, done, what("frames"))
    eq(dec:pending(), cut - (c.ends[done] or 0), what("pending"))
    eq(dec.err, nil, what("err"))
  end
end

-- Push every piece first, then take the frames with next().
local function feed_then_drain(c, size)
  local dec, got = c.make(), {}
  for i = 1, #c.input, size do dec:push(sub(c.input, i, i + size - 1)) end
  for f in dec.next, dec do got[#got + 1] = f end
  eq(concat(got, "|"), concat(c.frames, "|"), c.name .. ", pushed in pieces of " .. size)
  eq(#got, #c.frames, c.name .. ", pushed in pieces of " .. size .. ": frames")
  eq(dec:pending(), #c.input - c.ends[#c.ends], c.name .. ": pending after draining")
end

local function check_cases()
  for _, c in ipairs(cases) do
    local n = #c.input
    feed(c, {})
    for i = 1, n - 1 do feed(c, { i }) end
    -- three pieces: every pair of cuts in a short input; in a long one,
    -- every middle piece short enough for a delimiter or a length to
    -- span all three
    for i = 1, n - 2 do
      for j = i + 1, n <= 64 and n - 1 or math.min(n - 1, i + 5) do feed(c, { i, j }) end
    end
    local every = {}
    for i = 1, n - 1 do every[i] = i end
    feed(c, every)
    for size = 1, 5 do feed_then_drain(c, size) end
  end
end

-- Long streams cut at random, against frames built beside them.
local function check_random()
  math.randomseed(7)
  local alphabet = "ab\r\n;x"
  for round = 1, 40 do
    local raw, want = {}, {}
    local bytes = ({ 1, 2, 4 })[round % 3 + 1]
    for i = 1, 50 do
      local t = {}
      for k = 1, math.random(0, 200) do
        local r = math.random(#alphabet)
        t[k] = sub(alphabet, r, r)
      end
      want[i] = concat(t)
      raw[i] = framing.encode_length(want[i], bytes)
    end
    local input, dec, got, at = concat(raw), framing.length(bytes, 200), {}, 1
    while at <= #input do
      local n = math.random(1, 64)
      for f in dec:each(sub(input, at, at + n - 1)) do got[#got + 1] = f end
      at = at + n
    end
    eq(#got, #want, "random length frames: count")
    for i = 1, #want do eq(got[i], want[i], "random length frame " .. i) end
    eq(dec:pending(), 0, "random length frames: pending")

    -- the same text split on "\r\n\r\n" and as lines
    local text = concat(want)
    for _, kind in ipairs { "crlf crlf", "lines" } do
      local delim = kind == "lines" and "\n" or "\r\n\r\n"
      local frames, from = {}, 1
      while true do
        local s, e = string.find(text, delim, from, true)
        if not s then break end
        local f = sub(text, from, s - 1)
        if kind == "lines" and sub(f, -1) == "\r" then f = sub(f, 1, -2) end
        frames[#frames + 1] = f
        from = e + 1
      end
      dec = kind == "lines" and framing.lines(1e6) or framing.delimited(delim, 1e6)
      got, at = {}, 1
      while at <= #text do
        local n = math.random(1, 16)
        for f in dec:each(sub(text, at, at + n - 1)) do got[#got + 1] = f end
        at = at + n
      end
      eq(#got, #frames, kind .. " of random text: count")
      for i = 1, #frames do eq(got[i], frames[i], kind .. " of random text: frame " .. i) end
      eq(dec:pending(), #text - from + 1, kind .. " of random text: pending")
    end
  end
end

-- Past max: the error, at the first byte that proves it, in any pieces.
local function check_max()
  local limits = {
    { "lines", function() return framing.lines(5) end, "12345\n", "12345", "123456\n", 6 },
    { "lines with cr", function() return framing.lines(5) end, "1234\r\n", "1234", "123456\r\n", 6 },
    { "delimited", function() return framing.delimited("||", 4) end, "abc||", "abc", "abcde||", 5 },
    -- a length over max is known from its prefix alone
    { "length", function() return framing.length(2, 10) end,
      framing.encode_length(rep("y", 10), 2), rep("y", 10), framing.encode_length(rep("y", 11), 2), 2 },
  }
  for _, l in ipairs(limits) do
    local name, make, fits, frame, over, known = l[1], l[2], l[3], l[4], l[5], l[6]
    for size = 1, #over do
      local dec, got = make(), {}
      for i = 1, #fits, size do
        for f in dec:each(sub(fits, i, i + size - 1)) do got[#got + 1] = f end
      end
      eq(concat(got, "|"), frame, name .. ": a frame of max bytes in pieces of " .. size)
      for i = 1, #over, size do
        for f in dec:each(sub(over, i, i + size - 1)) do got[#got + 1] = f end
        local fed = math.min(i + size - 1, #over)
        eq(dec.err, fed >= known and "frame too long" or nil,
           format("%s: err after %d bytes in pieces of %d", name, fed, size))
      end
      eq(#got, 1, name .. ": frames past max")
      local f, err = dec:next()
      eq(f, nil, name .. ": next() after the error")
      eq(err, "frame too long", name .. ": next() after the error")
      for _ in dec:each(fits) do error(name .. ": a frame after the error", 0) end
    end
  end
end

-- Frames decoded, and the bytes after them still pending, in every shape
-- the bytes can be held in.
local function check_pending()
  local dec = framing.lines()
  local got = {}
  for f in dec:each("a\nbb\r\nxyz") do got[#got + 1] = f end
  eq(concat(got, ","), "a,bb", "two lines")
  eq(dec:pending(), 3, "pending after two lines")
  dec:push("w")
  eq(dec:pending(), 4, "pending after one more byte")
  dec:push("")
  eq(dec:pending(), 4, "pending after nothing")
  eq(dec:next(), nil, "no line yet")
  dec:push("\r")
  dec:push("\nq\n12")
  eq(dec:pending(), 10, "pending over three pieces")
  eq(dec:next(), "xyzw", "a line over three pieces")
  eq(dec:pending(), 4, "pending after it")
  eq(dec:next(), "q", "then a line within the last piece")
  eq(dec:next(), nil, "and no more")
  eq(dec:pending(), 2, "pending at the end")

  dec = framing.length(1)
  dec:push(framing.encode_length("abc", 1) .. "\5ab")
  eq(dec:next(), "abc", "a length frame")
  eq(dec:pending(), 3, "pending after it")
  dec:push("c")
  dec:push("de\2x")
  eq(dec:pending(), 8, "pending over pieces")
  eq(dec:next(), "abcde", "a length frame over pieces")
  eq(dec:pending(), 2, "pending after it")
  eq(dec:next(), nil, "half a frame")
  dec:push("y\0")
  eq(dec:next(), "xy", "the frame completed")
  eq(dec:next(), "", "an empty frame")
  eq(dec:pending(), 0, "nothing pending")
end

local function check_encode()
  eq(framing.encode_length("abc", 1), "\3abc", "encode_length 1")
  eq(framing.encode_length("abc", 2), "\0\3abc", "encode_length 2")
  eq(framing.encode_length("abc"), "\0\0\0\3abc", "encode_length 4 by default")
  eq(sub(framing.encode_length(rep("x", 258), 2), 1, 2), "\1\2", "encode_length 258")
  eq(pcall(framing.encode_length, rep("x", 256), 1), false, "256 bytes behind 1")
end

local function check()
  check_cases()
  check_random()
  check_max()
  check_pending()
  check_encode()
  return "ok"
end

-- The work, counted: a copy of the module whose string.find counts the
-- bytes it may look at, and whose string.sub and table.concat count the
-- bytes they build. However frames are cut, each byte is searched and
-- copied a bounded number of times.
local function counted()
  local find0, sub0, concat0 = string.find, string.sub, table.concat
  local n = { searched = 0, built = 0 }
  string.find = function(s, p, init, plain)
    n.searched = n.searched + #s - (init or 1) + 1
    return find0(s, p, init, plain)
  end
  string.sub = function(...)
    local r = sub0(...)
    n.built = n.built + #r
    return r
  end
  table.concat = function(...)
    local r = concat0(...)
    n.built = n.built + #r
    return r
  end
  package.loaded["moonring.framing"] = nil
  local ok, fresh = pcall(require, "moonring.framing")
  string.find, string.sub, table.concat = find0, sub0, concat0
  package.loaded["moonring.framing"] = framing
  assert(ok, fresh)
  return fresh, n
end

local function work()
  local fresh, n = counted()
  local shapes = {
    { "lines", function() return fresh.lines(1e6) end, function(p) return p .. "\r\n" end },
    { "crlf crlf", function() return fresh.delimited("\r\n\r\n", 1e6) end,
      function(p) return p .. "\r\n\r\n" end },
    { "length", function() return fresh.length(4, 1e6) end, function(p) return framing.encode_length(p) end },
  }
  for _, shape in ipairs(shapes) do
    local name, make, frame = shape[1], shape[2], shape[3]
    -- frames of 64 KiB in reads of 1 KiB; of 2 KiB in reads of 1 byte
    for _, cut in ipairs { { 65536, 1024 }, { 2048, 1 } } do
      local size, piece = cut[1], cut[2]
      local raw = {}
      for k = 1, 4 do raw[k] = frame(rep(char(96 + k), size)) end
      local stream = concat(raw) .. "tail"
      local dec, got, reads = make(), 0, 0
      n.searched, n.built = 0, 0
      for i = 1, #stream, piece do
        for f in dec:each(sub(stream, i, i + piece - 1)) do
          got = got + 1
          eq(#f, size, name .. ": frame size")
        end
        reads = reads + 1
      end
      eq(got, 4, name .. ": frames")
      eq(dec:pending(), 4, name .. ": pending")
      local what = format("%s, frames of %d bytes in reads of %d: ", name, size, piece)
      local bound = 2 * #stream + 8 * reads
      if n.searched > bound then
        error(format("%s%d bytes searched for %d received", what, n.searched, #stream), 0)
      end
      if n.built > bound then
        error(format("%s%d bytes copied for %d received", what, n.built, #stream), 0)
      end
    end
  end
  return "ok"
end

-- The cost: one 8 MiB frame against eight of 1 MiB, in reads of 16 KiB.
-- Linear, they take about the same time. Each is timed a few times
-- (within a budget) and the fastest kept, so that a stray pause does not
-- count. Every round has bytes of its own, so that no frame is a string
-- LuaJIT still holds from the round before (which it would not build),
-- and starts from a collected heap; the frames are kept, as a handler
-- would keep them, so that small ones do not reuse each other's memory:
-- most of the time is the kernel's, handing out fresh pages for them,
-- and it should be the same 8 MiB in both.
local MiB, PIECE = 1024 * 1024, 16 * 1024

local pattern = {}   -- 251 bytes, no "\n": no two reads alike
for i = 1, 251 do pattern[i] = char(32 + i * 7 % 90) end
pattern = concat(pattern)

-- count frames of size bytes (distinct for each round) as a stream cut
-- into reads, by lines or behind 4-byte lengths
local function reads(count, size, as_lines, round)
  local whole = rep(pattern, math.ceil(size / #pattern) + 1)
  local frames = {}
  for k = 1, count do
    local p = sub(whole, round * count + k, round * count + k + size - 1)
    frames[k] = as_lines and p .. "\n" or framing.encode_length(p)
  end
  local stream, t = concat(frames), {}
  for i = 1, #stream, PIECE do t[#t + 1] = sub(stream, i, i + PIECE - 1) end
  return t
end

local function best(count, size, as_lines)
  local fastest, spent = math.huge, 0
  for round = 1, 5 do
    collectgarbage()
    local input = reads(count, size, as_lines, round)
    local dec = as_lines and framing.lines(8 * MiB) or framing.length(4, 8 * MiB)
    local got, kept = 0, {}
    local t0 = os.clock()
    for i = 1, #input do
      for f in dec:each(input[i]) do
        got = got + 1
        kept[got] = f
        assert(#f == size, "frame size")
      end
    end
    local t = os.clock() - t0
    assert(got == count and dec:pending() == 0 and not dec.err, "frames")
    fastest, spent = math.min(fastest, t), spent + t
    if spent > 0.5 then break end
  end
  return format("%.4f", fastest)
end

-- "length 8 MiB, length 8 x 1 MiB, lines 8 MiB, lines 8 x 1 MiB", seconds
local function timing()
  return concat({ best(1, 8 * MiB, false), best(8, MiB, false),
                  best(1, 8 * MiB, true), best(8, MiB, true) }, " ")
end

local commands = { check = check, work = work, time = timing }

return {
  on_data = function(conn, data)
    local ok, res = pcall(commands[data] or error, "no such command: " .. data)
    conn:send(ok and res or tostring(res), "\n")
  end,
}
