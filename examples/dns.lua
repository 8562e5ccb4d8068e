-- dns.lua: an authoritative DNS server over UDP and TCP, answering A,
-- AAAA and TXT questions from a Lua table.
--   moonring -l udp://127.0.0.1:5353 -l tcp://127.0.0.1:5353 examples/dns.lua [ZONE.lua [IDLE]]
--   dig @127.0.0.1 -p 5353 www.example.test A
--   dig +tcp @127.0.0.1 -p 5353 www.example.test A
--
-- ZONE.lua, when given, returns a table like ZONE below (names lowercase,
-- without the final dot). A name in the table with no record of the type
-- asked gets an empty answer (NOERROR); a name not in it, NXDOMAIN; ANY,
-- every record of the name. Every answer is authoritative, with TTL.
--
-- Queries are read strictly and never trusted: a datagram shorter than
-- the 12-byte header, or one that is itself a response (QR set), gets
-- no answer at all (there is nobody sensible to answer); any other
-- malformed query (no question or several, a label past 63 bytes, a
-- name past 255, a compression pointer in the question, a question cut
-- short, a truncated datagram) gets FORMERR with its id, an opcode other
-- than QUERY gets NOTIMP, a class other than IN (or ANY) REFUSED. An
-- EDNS OPT record in the additional section is ignored: answers over
-- UDP stay within 512 bytes (records that would not fit are left out and
-- TC is set), so that a resolver asks again over TCP.
--
-- Over TCP (RFC 7766) each message has a 2-byte big-endian length in
-- front (RFC 1035 4.2.2), and a connection may carry several queries,
-- pipelined: they are answered in order, with the same code as over UDP,
-- but an answer may be up to 65,535 bytes and TC is never set (records
-- past that are left out). A message that would get no answer over UDP
-- (shorter than a header, a length of 0, a response) closes the
-- connection instead, after the answers before it; a connection with
-- nothing in or out for IDLE seconds (10) is closed. What one client can
-- make the server hold is bounded: one message (65,535 bytes) and one
-- read of input, and output up to the high-water mark plus one answer:
-- past the mark, the queries already read wait for on_drain.
local bit = require "bit"
local framing = require "moonring.framing"
local band, bor, rshift, lshift = bit.band, bit.bor, bit.rshift, bit.lshift
local byte, char, sub, lower = string.byte, string.char, string.sub, string.lower

local TTL = 300
local ZONE = {
  ["example.test"]     = { A = { "192.0.2.1" }, AAAA = { "2001:db8::1" },
                           TXT = { "v=moonring example zone" } },
  ["www.example.test"] = { A = { "192.0.2.10", "192.0.2.11" },
                           AAAA = { "2001:db8::10" } },
  ["txt.example.test"] = { TXT = { "hello", "world with spaces" } },
}
if arg and arg[1] then ZONE = assert(dofile(arg[1])) end
local IDLE = 10                         -- seconds a TCP connection may idle
if arg and arg[2] then
  IDLE = tonumber(arg[2])
  assert(IDLE and IDLE > 0, "IDLE: a number of seconds expected, not " .. arg[2])
end

local T_A, T_AAAA, T_TXT, T_ANY = 1, 28, 16, 255
local NAMES = { [T_A] = "A", [T_AAAA] = "AAAA", [T_TXT] = "TXT" }
local NOERROR, FORMERR, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 3, 4, 5
-- How long an answer may be, and whether what is left out sets TC.
local UDP = { max = 512, tc = true }
local TCP = { max = 65535, tc = false }

local function u16(n) return char(band(rshift(n, 8), 255), band(n, 255)) end
local function u32(n)
  return char(band(rshift(n, 24), 255), band(rshift(n, 16), 255),
              band(rshift(n, 8), 255), band(n, 255))
end

-- Record data on the wire, computed once per zone entry.
local function ipv4(text)
  local a, b, c, d = text:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  assert(a, "bad IPv4 address in the zone: " .. text)
  return char(tonumber(a), tonumber(b), tonumber(c), tonumber(d))
end

local function ipv6(text)
  local head, tail = text:match("^(.-)::(.*)$")
  local groups = {}
  local function add(part)
    for g in part:gmatch("[^:]+") do groups[#groups + 1] = tonumber(g, 16) end
  end
  if head then
    add(head)
    local tailg = {}
    for g in tail:gmatch("[^:]+") do tailg[#tailg + 1] = tonumber(g, 16) end
    for _ = 1, 8 - #groups - #tailg do groups[#groups + 1] = 0 end
    for _, g in ipairs(tailg) do groups[#groups + 1] = g end
  else
    add(text)
  end
  assert(#groups == 8, "bad IPv6 address in the zone: " .. text)
  local out = {}
  for i, g in ipairs(groups) do out[i] = u16(g) end
  return table.concat(out)
end

local function txt(text)                -- strings of at most 255 bytes each
  local out = {}
  for i = 1, math.max(#text, 1), 255 do
    local piece = sub(text, i, i + 254)
    out[#out + 1] = char(#piece) .. piece
  end
  return table.concat(out)
end

local RDATA = {}                        -- RDATA[name][type] = { rdata... }
for name, recs in pairs(ZONE) do
  local by = {}
  for t, conv in pairs({ [T_A] = ipv4, [T_AAAA] = ipv6, [T_TXT] = txt }) do
    local list = recs[NAMES[t]]
    if list then
      by[t] = {}
      for i, v in ipairs(list) do by[t][i] = conv(v) end
    end
  end
  RDATA[lower(name)] = by
end

-- The question's name from offset 13 (1-based): its lowercase text, and
-- the offset after it; nil when malformed.
local function read_name(q)
  local pos, labels, len = 13, {}, 0
  while true do
    local n = byte(q, pos)
    if not n then return nil end
    if n == 0 then break end
    if n > 63 then return nil end       -- a pointer (192+) or a reserved kind
    len = len + n + 1
    if len > 255 or pos + n > #q then return nil end
    labels[#labels + 1] = lower(sub(q, pos + 1, pos + n))
    pos = pos + n + 1
  end
  return table.concat(labels, "."), pos + 1
end

local function header(id, flags, rcode, qd, an)
  -- QR, the query's opcode and RD, AA; no recursion available
  local hi = bor(0x84, band(flags, 0x79))
  return u16(id) .. char(hi, rcode) .. u16(qd) .. u16(an) .. u16(0) .. u16(0)
end

-- The answer to the query q over transport (UDP or TCP); nil when q gets
-- none (shorter than a header, or a response).
local function answer(q, transport)
  if #q < 12 then return nil end
  local id = byte(q, 1) * 256 + byte(q, 2)
  local flags = byte(q, 3)
  if band(flags, 0x80) ~= 0 then return nil end       -- a response: silence
  if band(rshift(flags, 3), 15) ~= 0 then return header(id, flags, NOTIMP, 0, 0) end
  local qd = byte(q, 5) * 256 + byte(q, 6)
  if qd ~= 1 then return header(id, flags, FORMERR, 0, 0) end
  local name, pos = read_name(q)
  if not name or pos + 3 > #q then return header(id, flags, FORMERR, 0, 0) end
  local qtype = byte(q, pos) * 256 + byte(q, pos + 1)
  local qclass = byte(q, pos + 2) * 256 + byte(q, pos + 3)
  local question = sub(q, 13, pos + 3)
  if qclass ~= 1 and qclass ~= 255 then
    return header(id, flags, REFUSED, 1, 0) .. question
  end
  local recs = RDATA[name]
  if not recs then return header(id, flags, NXDOMAIN, 1, 0) .. question end
  local out, an, size, tc = {}, 0, 12 + #question, false
  local types = qtype == T_ANY and { T_A, T_AAAA, T_TXT } or { qtype }
  for _, t in ipairs(types) do
    for _, rdata in ipairs(recs[t] or {}) do
      -- the name is a pointer to the question's (offset 12)
      local rr = "\192\12" .. u16(t) .. u16(1) .. u32(TTL) .. u16(#rdata) .. rdata
      if size + #rr > transport.max then tc = transport.tc; break end
      out[#out + 1], an, size = rr, an + 1, size + #rr
    end
  end
  local h = header(id, flags, NOERROR, 1, an)
  if tc then h = sub(h, 1, 2) .. char(bor(byte(h, 3), 2)) .. sub(h, 4) end
  return h .. question .. table.concat(out)
end

-- Answer the queries conn's decoder holds, in order, until none is
-- whole, the output queue passes the high-water mark (then on_drain goes
-- on: a burst of small queries for large answers must not queue without
-- bound), or one gets no answer (then the connection is closed).
local function serve(conn)
  local dec = conn.dns
  while not conn.dns_blocked and not conn.dns_done do
    local q = dec:next()
    if not q then
      -- a frame past 65,535 cannot be (the length is 2 bytes), but the
      -- decoder's error is not ignored either
      if dec.err then conn.dns_done = true; conn:close() end
      return
    end
    local reply = answer(q, TCP)
    if not reply then conn.dns_done = true; conn:close(); return end
    if conn:send(u16(#reply), reply) == false then conn.dns_blocked = true end
  end
end

return {
  on_datagram = function(dgram, data)
    if dgram.truncated then            -- cut by the buffer: not a whole query
      if #data >= 12 and band(byte(data, 3), 0x80) == 0 then
        dgram:reply(header(byte(data, 1) * 256 + byte(data, 2), byte(data, 3),
                           FORMERR, 0, 0))
      end
      return
    end
    local reply = answer(data, UDP)
    if reply then dgram:reply(reply) end
  end,
  on_open = function(conn)
    conn.dns = framing.length(2, 65535)
    conn:set_timeout(IDLE)
  end,
  on_data = function(conn, data)
    if conn.dns_done then return end
    conn.dns:push(data)
    serve(conn)
  end,
  on_drain = function(conn)
    conn.dns_blocked = false
    serve(conn)
  end,
}
