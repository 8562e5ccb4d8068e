/* lua_mod.c - the `moonring` module: require "moonring". */
#include "log.h"
#include "lua_host.h"
#include "lua_int.h"

#include <string.h>
#include <time.h>

/* moonring.log(level, ...): the arguments, tostring'd and joined by
 * spaces, in the server's log. */
static int l_log(lua_State *L)
{
    const char *lv = luaL_checkstring(L, 1);
    int level = log_level_parse(lv);
    if (level < 0)
        return luaL_argerror(L, 1, "error|warn|info|debug expected");
    if (!log_enabled((enum log_level)level))
        return 0;
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 2; i <= n; i++) {
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        if (i > 2)
            luaL_addchar(&b, ' ');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    log_msg((enum log_level)level, "%s", lua_tostring(L, -1));
    return 0;
}

/* moonring.now(): wall-clock seconds since the epoch, as a float. */
static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* moonring.worker(): this worker's number, from 1. */
static int l_worker(lua_State *L)
{
    lua_pushinteger(L, 1);
    return 1;
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

/* moonring.stats(): this worker's counters. */
static int l_stats(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct worker *w = h->w;
    lua_createtable(L, 0, 10);
    if (!w)
        return 1; /* called while the script loads: nothing to count yet */
    set_num(L, "conns", w->conns.live);
    set_num(L, "accepted", (double)w->stats.accepted);
    set_num(L, "bytes_in", (double)w->stats.bytes_in);
    set_num(L, "bytes_out", (double)w->stats.bytes_out);
    set_num(L, "lua_errors", (double)w->stats.lua_errors);
    set_num(L, "enobufs", (double)w->stats.enobufs);
    set_num(L, "reloads", (double)w->stats.reloads);
    set_num(L, "enters", (double)w->loop.enters);
    set_num(L, "cqes", (double)w->loop.cqes);
    set_num(L, "lua_mem", (double)lua_host_mem(h));
    return 1;
}

/* moonring.keep(name, default): a value that survives reloads. The first
 * call stores default under name; later calls, from any version of the
 * script, return what is stored. */
static int l_keep(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_settop(L, 2);
    lua_pushvalue(L, 1);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1))
        return 1;
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_rawset(L, lua_upvalueindex(1));
    return 1;
}

static const luaL_Reg funcs[] = {
    { "log", l_log },
    { "now", l_now },
    { "worker", l_worker },
    { "stats", l_stats },
    { NULL, NULL },
};

void lua_mod_register(lua_State *L, struct lua_host *h)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_newtable(L);
    lua_pushlightuserdata(L, h);
    luaL_openlib(L, NULL, funcs, 1);
    lua_newtable(L);
    lua_pushcclosure(L, l_keep, 1);
    lua_setfield(L, -2, "keep");
    lua_pushliteral(L, MR_VERSION);
    lua_setfield(L, -2, "version");
    lua_setfield(L, -2, "moonring");
    lua_pop(L, 2);
}
