/* lua_mod.c - the `moonring` module: require "moonring". */
#include "log.h"
#include "lua_fs.h"
#include "lua_sock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* Every function here has three upvalues: the host, the conns table and
 * the timers table. Upvalues, not the main stack's fixed slots, because
 * these may be called from a coroutine, whose stack is another. */
#define UV_CONNS lua_upvalueindex(2)
#define UV_TIMERS lua_upvalueindex(3)

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
    lua_pushinteger(L, HOST(L)->worker);
    return 1;
}

static int l_workers(lua_State *L)
{
    lua_pushinteger(L, HOST(L)->workers);
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
    struct core *k = h->k;
    lua_createtable(L, 0, 11);
    if (!k)
        return 1; /* called while the script loads: nothing to count yet */
    set_num(L, "conns", core_live(k));
    set_num(L, "accepted", (double)k->stats.accepted);
    set_num(L, "bytes_in", (double)k->stats.bytes_in);
    set_num(L, "bytes_out", (double)k->stats.bytes_out);
    set_num(L, "lua_errors", (double)h->errors);
    set_num(L, "enobufs", (double)k->stats.enobufs);
    set_num(L, "reloads", (double)h->reloads);
    set_num(L, "enters", (double)k->loop.enters);
    set_num(L, "cqes", (double)k->loop.cqes);
    set_num(L, "lua_mem", (double)h->mem);
    set_num(L, "dgrams_in", (double)k->stats.dgrams_in);
    set_num(L, "dgrams_out", (double)k->stats.dgrams_out);
    set_num(L, "dgrams_truncated", (double)k->stats.dgrams_truncated);
    set_num(L, "dgrams_dropped", (double)k->stats.dgrams_dropped);
    lua_shared_stats(L, h);
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

/* after(sec, fn) / every(sec, fn): a timer object with :cancel(). fn
 * gets the timer. The loop's wait timeout wakes it: no thread, no SQE. */
static int make_timer(lua_State *L, bool repeat)
{
    struct lua_host *h = HOST(L);
    lua_Number sec = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (repeat ? !(sec > 0) : !(sec >= 0))
        return luaL_argerror(L, 1, repeat ? "positive number of seconds expected"
                                          : "seconds expected (0 or more)");
    if (sec > 86400.0 * 365 * 100)
        return luaL_argerror(L, 1, "too far in the future");
    uint64_t id = h->next_timer_id++;
    /* from now, not from when this turn began: a timer never fires early */
    uint64_t due = timer_now() + (uint64_t)(sec * 1e9);
    if (h->k ? core_timer_add(h->k, due, id)
             : timer_push(&h->early, due, TIMER_USER, id))
        return luaL_error(L, "out of memory");
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "fn");
    lua_pushnumber(L, repeat ? sec : 0);
    lua_setfield(L, -2, "period");
    lua_pushnumber(L, (lua_Number)id);
    lua_setfield(L, -2, "id");
    luaL_getmetatable(L, TIMER_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawseti(L, UV_TIMERS, (int)id);
    return 1;
}

static int l_after(lua_State *L) { return make_timer(L, false); }
static int l_every(lua_State *L) { return make_timer(L, true); }

/* timer:cancel(): true if it was still pending. */
static int l_timer_cancel(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "id");
    int id = (int)lua_tointeger(L, -1);
    lua_rawgeti(L, UV_TIMERS, id);
    bool live = lua_rawequal(L, -1, 1);
    if (live) {
        lua_pushnil(L);
        lua_rawseti(L, UV_TIMERS, id);
    }
    lua_pushboolean(L, live);
    return 1;
}

/* conns(): iterate this worker's open connections. It returns next over
 * a snapshot whose keys are the connections, so closing or opening
 * connections in the loop is safe, and the iterator keeps no state of its
 * own (a stateful C iterator hung in JIT-compiled loops under load). */
static int l_conns(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct conn_table *t = h->k ? &h->k->conns : NULL;
    lua_getglobal(L, "next");
    lua_createtable(L, 0, t ? (int)t->live : 0);
    for (uint32_t i = 0; t && i < t->used_hi; i++) {
        if (t->c[i].state != CONN_OPEN)
            continue;
        lua_rawgeti(L, UV_CONNS, (int)i + 1);
        if (lua_istable(L, -1)) {
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
        } else {
            lua_pop(L, 1);
        }
    }
    lua_pushnil(L);
    return 3;
}

static int fail2(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* connect(host, port, handlers [, opts]): an outbound connection
 * through the ring, with handlers of its own (on_data required). It is
 * returned at once, connecting; what it is sent waits for the
 * connection. on_open runs when it is up (for TLS, opts.tls, once the
 * handshake is done); a failure goes to on_close(conn, "error" or
 * "timeout", message). */
static int l_connect(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *host = luaL_checkstring(L, 1);
    int port = luaL_checkint(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "on_data");
    if (!lua_isfunction(L, -1))
        return luaL_argerror(L, 3, "handler table with on_data expected");
    lua_pop(L, 1);
    if (port < 1 || port > 65535)
        return luaL_argerror(L, 2, "port 1-65535 expected");
    if (!h->k)
        return luaL_error(L, "moonring.connect works once the server runs "
                             "(from a handler or a timer)");
    char err[256];
    struct transport_conn *tp = lua_tcp_tls(L, 4, host, err, sizeof err);
    if (!tp && err[0])
        return fail2(L, err);
    struct conn *c;
    int ret = core_connect_new(h->k, tp, &c);
    if (ret) {
        if (tp)
            tp->ops->release(h->k, &(struct conn){ .tp = tp });
        return fail2(L, lua_tcp_strerror(ret));
    }
    lua_conn_push_new(L, c, UV_CONNS);
    lua_conn_set_handlers(L, c, lua_gettop(L), 3);
    lua_tcp_connect_to(h, c, host, port); /* a failure goes to on_close */
    return 1;
}

static const luaL_Reg timer_methods[] = {
    { "cancel", l_timer_cancel },
    { NULL, NULL },
};

static const luaL_Reg funcs[] = {
    { "log", l_log },
    { "now", l_now },
    { "worker", l_worker },
    { "workers", l_workers },
    { "stats", l_stats },
    { "after", l_after },
    { "every", l_every },
    { "conns", l_conns },
    { "connect", l_connect },
    { NULL, NULL },
};

static void push_upvalues(lua_State *L, struct lua_host *h)
{
    lua_pushlightuserdata(L, h);
    lua_pushvalue(L, LS_CONNS);
    lua_pushvalue(L, LS_TIMERS);
}

void lua_mod_register(lua_State *L, struct lua_host *h)
{
    luaL_newmetatable(L, TIMER_MT);
    lua_newtable(L);
    push_upvalues(L, h);
    luaL_openlib(L, NULL, timer_methods, 3);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_newtable(L);
    push_upvalues(L, h);
    luaL_openlib(L, NULL, funcs, 3);
    lua_newtable(L);
    lua_pushcclosure(L, l_keep, 1);
    lua_setfield(L, -2, "keep");
    lua_co_register(L, h);
    lua_tcp_register(L, h);
    lua_udp_register(L, h);
    lua_shared_register(L, h);
    lua_fs_register(L, h);
    lua_pushliteral(L, MR_VERSION);
    lua_setfield(L, -2, "version");
    lua_setfield(L, -2, "moonring");
    lua_pop(L, 2);
}
