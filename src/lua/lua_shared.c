/* lua_shared.c - mr.shared.NAME: the dictionaries of --shared, seen from
 * Lua with the methods of OpenResty's ngx.shared.DICT. Each call locks
 * one shard for a moment and never waits on the ring, so it works
 * anywhere: at load time, in handlers, timers and coroutines alike.
 * The hot calls make no table and copy a value once, through a buffer on
 * the C stack. */
#include "lua_int.h"
#include "shdict.h"

#include <stdlib.h>
#include <string.h>

#define SHD_MT "moonring.shdict"
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

/* d:get(key): value [, flags when not 0], or nil. */
static int l_get(lua_State *L)
{
    struct shdict *d = self(L);
    size_t kl;
    const char *k = key(L, &kl);
    if (!k)
        return 2;
    char buf[4096];
    struct shdict_val v;
    int r = shdict_get(d, k, kl, buf, sizeof buf, &v);
    while (r == SHD_SMALL_BUF) { /* a big one: a buffer the GC takes back */
        size_t need = v.len;
        char *big = lua_newuserdata(L, need);
        r = shdict_get(d, k, kl, big, need, &v);
    }
    if (r == SHD_NOT_FOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (r)
        return fail(L, r);
    switch (v.type) {
    case SHD_STRING:  lua_pushlstring(L, v.str, v.len); break;
    case SHD_NUMBER:  lua_pushnumber(L, v.num); break;
    default:          lua_pushboolean(L, v.num != 0); break;
    }
    if (!v.flags)
        return 1;
    lua_pushnumber(L, v.flags);
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

/* d:set / add / replace (key, value [, ttl [, flags]]): true (and nil,
 * true when live entries were evicted for room), or nil, err. */
static int store(lua_State *L, enum shdict_mode mode)
{
    struct shdict *d = self(L);
    size_t kl;
    const char *k = key(L, &kl);
    if (!k)
        return 2;
    struct shdict_val v = { .type = SHD_NIL };
    switch (lua_type(L, 3)) {
    case LUA_TSTRING:
        v.type = SHD_STRING;
        v.str = lua_tolstring(L, 3, &v.len);
        break;
    case LUA_TNUMBER:
        v.type = SHD_NUMBER;
        v.num = lua_tonumber(L, 3);
        break;
    case LUA_TBOOLEAN:
        v.type = SHD_BOOLEAN;
        v.num = lua_toboolean(L, 3);
        break;
    case LUA_TNIL:
    case LUA_TNONE:
        if (mode == SHD_SET) { /* as ngx.shared: set(k, nil) deletes */
            shdict_delete(d, k, kl);
            lua_pushboolean(L, 1);
            return 1;
        }
        /* fall through */
    default:
        return luaL_argerror(L, 3, "string, number or boolean expected");
    }
    double ttl = opt_ttl(L, 4);
    lua_Number f = luaL_optnumber(L, 5, 0);
    if (!(f >= 0 && f <= 4294967295.0) || f != (lua_Number)(uint32_t)f)
        return luaL_argerror(L, 5, "flags expected: an integer 0 to 2^32-1");
    v.flags = (uint32_t)f;
    bool evicted;
    int r = shdict_store(d, mode, k, kl, &v, ttl, &evicted);
    if (r)
        return fail(L, r);
    lua_pushboolean(L, 1);
    if (!evicted)
        return 1;
    lua_pushnil(L);
    lua_pushboolean(L, 1);
    return 3;
}

static int l_set(lua_State *L) { return store(L, SHD_SET); }
static int l_add(lua_State *L) { return store(L, SHD_ADD); }
static int l_replace(lua_State *L) { return store(L, SHD_REPLACE); }

/* d:incr(key, n [, init [, init_ttl]]): the new value, or nil, err
 * ("not found" without init, "not a number"). */
static int l_incr(lua_State *L)
{
    struct shdict *d = self(L);
    size_t kl;
    const char *k = key(L, &kl);
    if (!k)
        return 2;
    double by = luaL_checknumber(L, 3), init = 0, out;
    bool has_init = !lua_isnoneornil(L, 4);
    if (has_init)
        init = luaL_checknumber(L, 4);
    int r = shdict_incr(d, k, kl, by, has_init ? &init : NULL, opt_ttl(L, 5), &out);
    if (r)
        return fail(L, r);
    lua_pushnumber(L, out);
    return 1;
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
    { "get", l_get },
    { "set", l_set },
    { "add", l_add },
    { "replace", l_replace },
    { "incr", l_incr },
    { "delete", l_delete },
    { "ttl", l_ttl },
    { "expire", l_expire },
    { "keys", l_keys },
    { "flush_all", l_flush_all },
    { "capacity", l_capacity },
    { "free_space", l_free_space },
    { NULL, NULL },
};

void lua_shared_register(lua_State *L, struct lua_host *h)
{
    luaL_newmetatable(L, SHD_MT);
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "moonring.shdict");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    lua_createtable(L, 0, h->nshared);
    for (int i = 0; i < h->nshared; i++) {
        struct lshd *u = lua_newuserdata(L, sizeof *u);
        u->magic = LSHD_MAGIC;
        u->d = h->shared[i];
        luaL_getmetatable(L, SHD_MT);
        lua_setmetatable(L, -2);
        lua_setfield(L, -2, shdict_name(h->shared[i]));
    }
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
