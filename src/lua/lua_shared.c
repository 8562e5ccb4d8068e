/* lua_shared.c - mr.shared.NAME: the dictionaries of --shared, seen from
 * Lua with the methods of OpenResty's ngx.shared.DICT. A call locks at
 * most one shard for a moment and never waits on the ring, so it works
 * anywhere: at load time, in handlers, timers and coroutines alike.
 * The hot calls (get, set, add, replace, incr) go through the FFI, make
 * no table, and copy a value once, into a buffer made once per state. */
#include "lua_int.h"
#include "shdict.h"

#include <stdlib.h>
#include <string.h>

#define LSHD_MAGIC 0x73686463u

struct lshd {
    uint32_t magic;
    struct shdict *d;
};

/* The dictionary at 1; raises for anything else (a call with '.'). */
static struct shdict *self(lua_State *L)
{
    struct lshd *u = lua_touserdata(L, 1);
    if (!u || lua_objlen(L, 1) != sizeof *u || u->magic != LSHD_MAGIC)
        luaL_argerror(L, 1, "shared dictionary expected (call methods with ':')");
    return u->d;
}

/* The key at 2: a string (or number), 1 to 65535 bytes. NULL with the
 * error pushed (nil, err) when it is empty or too long. */
static const char *key(lua_State *L, size_t *len)
{
    const char *k = lua_tolstring(L, 2, len);
    if (!k)
        luaL_argerror(L, 2, "string key expected");
    if (*len == 0 || *len > SHDICT_KEY_MAX) {
        lua_pushnil(L);
        lua_pushstring(L, *len ? "key too long" : "empty key");
        return NULL;
    }
    return k;
}

static int fail(lua_State *L, int err)
{
    lua_pushnil(L);
    lua_pushstring(L, shdict_strerror(err));
    return 2;
}

/* A time to live at idx: absent or nil is 0 (for ever). */
static double opt_ttl(lua_State *L, int idx)
{
    double t = luaL_optnumber(L, idx, 0);
    if (!(t >= 0 && t <= 1e9))
        luaL_argerror(L, idx, "seconds expected (0: no expiry)");
    return t;
}

/* The calls the Lua side makes through the FFI (ffi_lua below), with
 * plain arguments. */
static int ffi_store(struct shdict *d, int mode, const char *k, size_t kl, int type,
                     const char *s, size_t len, double num, double ttl, uint32_t flags)
{
    struct shdict_val v = { .type = (enum shdict_type)type, .flags = flags,
                            .num = num, .str = s, .len = len };
    bool evicted;
    int r = shdict_store(d, (enum shdict_mode)mode, k, kl, &v, ttl, &evicted);
    return r ? r : evicted;
}

static int ffi_incr(struct shdict *d, const char *k, size_t kl, double by, int has_init,
                    double init, double ttl, double *out)
{
    return shdict_incr(d, k, kl, by, has_init ? &init : NULL, ttl, out);
}

/* d:delete(key): true, or false when there was no such key. */
static int l_delete(lua_State *L)
{
    struct shdict *d = self(L);
    size_t kl;
    const char *k = key(L, &kl);
    if (!k)
        return 2;
    lua_pushboolean(L, shdict_delete(d, k, kl) == SHD_OK);
    return 1;
}

/* d:ttl(key): seconds left (0: no expiry), or nil, "not found". */
static int l_ttl(lua_State *L)
{
    struct shdict *d = self(L);
    size_t kl;
    const char *k = key(L, &kl);
    if (!k)
        return 2;
    double left;
    int r = shdict_ttl(d, k, kl, &left);
    if (r)
        return fail(L, r);
    lua_pushnumber(L, left);
    return 1;
}

/* d:expire(key, ttl): true, or nil, "not found". */
static int l_expire(lua_State *L)
{
    struct shdict *d = self(L);
    size_t kl;
    const char *k = key(L, &kl);
    if (!k)
        return 2;
    double ttl = opt_ttl(L, 3);
    int r = shdict_expire(d, k, kl, ttl);
    if (r)
        return fail(L, r);
    lua_pushboolean(L, 1);
    return 1;
}

/* d:keys([max]): up to max keys (default 1024, 0: all), in a table. */
static int l_keys(lua_State *L)
{
    struct shdict *d = self(L);
    lua_Number max = luaL_optnumber(L, 2, 1024);
    if (!(max >= 0 && max <= 1e12))
        return luaL_argerror(L, 2, "a count expected (0: all)");
    char *buf;
    size_t len;
    long n = shdict_keys(d, (size_t)max, &buf, &len);
    if (n < 0)
        return luaL_error(L, "not enough memory");
    lua_createtable(L, (int)n, 0);
    size_t at = 0;
    for (long i = 1; i <= n; i++) { /* no error may leave buf behind */
        uint16_t kl;
        memcpy(&kl, buf + at, 2);
        if (!lua_checkstack(L, 2))
            break;
        lua_pushlstring(L, buf + at + 2, kl);
        lua_rawseti(L, -2, (int)i);
        at += 2u + kl;
    }
    free(buf);
    return 1;
}

static int l_flush_all(lua_State *L)
{
    shdict_flush_all(self(L));
    return 0;
}

static int l_capacity(lua_State *L)
{
    struct shdict_stats st;
    shdict_stats(self(L), &st);
    lua_pushnumber(L, (lua_Number)st.capacity);
    return 1;
}

static int l_free_space(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)shdict_free_space(self(L)));
    return 1;
}

static int l_tostring(lua_State *L)
{
    lua_pushfstring(L, "shared dictionary %s", shdict_name(self(L)));
    return 1;
}

static const luaL_Reg methods[] = {
    { "delete", l_delete },
    { "ttl", l_ttl },
    { "expire", l_expire },
    { "keys", l_keys },
    { "flush_all", l_flush_all },
    { "capacity", l_capacity },
    { "free_space", l_free_space },
    { NULL, NULL },
};

/* get, set, add, replace and incr, the calls of hot loops, are Lua
 * functions that call C through the FFI: compiled by the JIT, such a call
 * costs a few ns, where one through the Lua C API costs some 30 (as in
 * OpenResty, whose lua-resty-core does the same). The chunk runs once
 * per Lua state with the C functions, and returns what adds those
 * methods to a dictionary's own method table, closing over it. */
static const char ffi_lua[] =
    "local ffi = require 'ffi'\n"
    "local c_get, c_store, c_incr = ...\n"
    "ffi.cdef[[typedef struct { int type; uint32_t flags; double num;\n"
    "  const char *str; size_t len; } moonring_shdict_val;]]\n"
    "c_get = ffi.cast('int (*)(void *, const char *, size_t, char *, size_t,'\n"
    "  .. ' moonring_shdict_val *)', c_get)\n"
    "c_store = ffi.cast('int (*)(void *, int, const char *, size_t, int,'\n"
    "  .. ' const char *, size_t, double, double, uint32_t)', c_store)\n"
    "c_incr = ffi.cast('int (*)(void *, const char *, size_t, double, int,'\n"
    "  .. ' double, double, double *)', c_incr)\n"
    "local BUF = 4096\n"
    "local buf, val, out = ffi.new('char[?]', BUF), ffi.new('moonring_shdict_val'),\n"
    "  ffi.new('double[1]')\n"
    "local fstring, type, tostring, tonumber, error = ffi.string, type, tostring,\n"
    "  tonumber, error\n"
    "local ERR = { [-1] = 'not found', [-2] = 'exists', [-3] = 'no memory',\n"
    "  [-4] = 'not a number' }\n"
    "local function bad(n, name, what)\n"
    "  error(\"bad argument #\" .. n .. \" to '\" .. name .. \"' (\" .. what .. ')', 3)\n"
    "end\n"
    "local function ttl_of(t, n, name)\n"
    "  if t == nil then return 0 end\n"
    "  if type(t) ~= 'number' or not (t >= 0 and t <= 1e9) then\n"
    "    bad(n, name, 'seconds expected (0: no expiry)') end\n"
    "  return t\n"
    "end\n"
    "return function(M, self, ptr)\n"
    "  local d = ffi.cast('void *', ptr)\n"
    "  local EXPECTED = \"shared dictionary expected (call methods with ':')\"\n"
    "  -- the key, or nil and the reason\n"
    "  local function key(s, k, name)\n"
    "    if s ~= self then bad(1, name, EXPECTED) end\n"
    "    local t = type(k)\n"
    "    if t ~= 'string' then\n"
    "      if t ~= 'number' then bad(2, name, 'string key expected') end\n"
    "      k = tostring(k)\n"
    "    end\n"
    "    local n = #k\n"
    "    if n == 0 then return nil, 'empty key' end\n"
    "    if n > 65535 then return nil, 'key too long' end\n"
    "    return k, n\n"
    "  end\n"
    "  function M.get(s, k)\n"
    "    local k, n = key(s, k, 'get')\n"
    "    if not k then return nil, n end\n"
    "    local b, r = buf, c_get(d, k, n, buf, BUF, val)\n"
    "    while r == -6 do   -- a big one\n"
    "      local len = tonumber(val.len)\n"
    "      b = ffi.new('char[?]', len)\n"
    "      r = c_get(d, k, n, b, len, val)\n"
    "    end\n"
    "    if r ~= 0 then\n"
    "      if r == -1 then return nil end\n"
    "      return nil, ERR[r]\n"
    "    end\n"
    /* val is this state's own: read all of it before fstring, which may
     * run a finaliser that calls get again */
    "    local t, v, f, len = val.type, nil, val.flags, val.len\n"
    "    if t == 1 then v = fstring(b, len)\n"
    "    elseif t == 2 then v = val.num\n"
    "    else v = val.num ~= 0 end\n"
    "    if f ~= 0 then return v, f end\n"
    "    return v\n"
    "  end\n"
    "  local function store(mode, name)\n"
    "    return function(s, k, v, ttl, flags)\n"
    "      local k, n = key(s, k, name)\n"
    "      if not k then return nil, n end\n"
    "      local tv, vt, str, len, num = type(v), 1, nil, 0, 0\n"
    "      if tv == 'string' then str, len = v, #v\n"
    "      elseif tv == 'number' then vt, num = 2, v\n"
    "      elseif tv == 'boolean' then vt, num = 3, v and 1 or 0\n"
    "      elseif v == nil and mode == 0 then   -- as ngx.shared: set(k, nil) deletes\n"
    "        M.delete(s, k)\n"
    "        return true\n"
    "      else bad(3, name, 'string, number or boolean expected') end\n"
    "      ttl = ttl_of(ttl, 4, name)\n"
    "      if flags == nil then flags = 0\n"
    "      elseif type(flags) ~= 'number' or flags < 0 or flags > 4294967295\n"
    "        or flags % 1 ~= 0 then bad(5, name, 'flags expected: an integer 0 to 2^32-1') end\n"
    "      local r = c_store(d, mode, k, n, vt, str, len, num, ttl, flags)\n"
    "      if r == 0 then return true end\n"
    "      if r == 1 then return true, nil, true end\n"
    "      return nil, ERR[r]\n"
    "    end\n"
    "  end\n"
    "  M.set, M.add, M.replace = store(0, 'set'), store(1, 'add'), store(2, 'replace')\n"
    "  function M.incr(s, k, by, init, ttl)\n"
    "    local k, n = key(s, k, 'incr')\n"
    "    if not k then return nil, n end\n"
    "    if type(by) ~= 'number' then bad(3, 'incr', 'number expected') end\n"
    "    local has = 1\n"
    "    if init == nil then has, init = 0, 0\n"
    "    elseif type(init) ~= 'number' then bad(4, 'incr', 'number expected') end\n"
    "    local r = c_incr(d, k, n, by, has, init, ttl_of(ttl, 5, 'incr'), out)\n"
    "    if r ~= 0 then return nil, ERR[r] end\n"
    "    return out[0]\n"
    "  end\n"
    "end\n";

/* The builder of ffi_lua, run with the C functions; pushed. */
static void push_builder(lua_State *L)
{
    if (luaL_loadbuffer(L, ffi_lua, sizeof ffi_lua - 1, "=moonring.shared"))
        lua_error(L);
    lua_pushlightuserdata(L, (void *)shdict_get);
    lua_pushlightuserdata(L, (void *)ffi_store);
    lua_pushlightuserdata(L, (void *)ffi_incr);
    lua_call(L, 3, 1);
}

/* mr.shared: each dictionary a userdata with a metatable and methods of
 * its own, into the module table on top. */
void lua_shared_register(lua_State *L, struct lua_host *h)
{
    lua_createtable(L, 0, h->nshared);
    if (h->nshared)
        push_builder(L);
    for (int i = 0; i < h->nshared; i++) {
        struct lshd *u = lua_newuserdata(L, sizeof *u);
        u->magic = LSHD_MAGIC;
        u->d = h->shared[i];
        lua_createtable(L, 0, 3);          /* its metatable */
        lua_newtable(L);                   /* its methods */
        luaL_register(L, NULL, methods);
        lua_pushvalue(L, -4);              /* the builder */
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -5);
        lua_pushlightuserdata(L, u->d);
        lua_call(L, 3, 0);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "moonring.shdict");
        lua_setfield(L, -2, "__metatable");
        lua_setmetatable(L, -2);
        lua_setfield(L, -3, shdict_name(h->shared[i]));
    }
    if (h->nshared)
        lua_pop(L, 1);                     /* the builder */
    lua_setfield(L, -2, "shared");
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

void lua_shared_stats(lua_State *L, struct lua_host *h)
{
    lua_createtable(L, 0, h->nshared);
    for (int i = 0; i < h->nshared; i++) {
        struct shdict_stats st;
        shdict_stats(h->shared[i], &st);
        lua_createtable(L, 0, 7);
        set_num(L, "hits", (double)st.hits);
        set_num(L, "misses", (double)st.misses);
        set_num(L, "evictions", (double)st.evictions);
        set_num(L, "entries", (double)st.entries);
        set_num(L, "used", (double)st.used);
        set_num(L, "capacity", (double)st.capacity);
        set_num(L, "wipes", (double)st.wipes);
        lua_setfield(L, -2, shdict_name(h->shared[i]));
    }
    lua_setfield(L, -2, "shared");
}
