/* lua_co.c - the coroutines moonring runs: connection functions,
 * spawned threads and timer functions, and the calls that make them wait
 * (mr.sleep, thread:wait; sockets wait in lua_sock.c).
 *
 * Every such coroutine is anchored in the registry table `threads`
 * (threads[co] = what it runs for) from its start to its end, so that a
 * waiting coroutine stays alive with nothing else pointing at it, and so
 * that a call that waits can tell one of ours from a coroutine the script
 * made itself, whose yield would go to the script, not to the loop. A
 * waiting coroutine is resumed from C by whatever it waits for. */
#include "log.h"
#include "lua_int.h"

#include <string.h>

#define THREAD_MT "moonring.thread"

static void push_ref(lua_State *L, int ref)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
}

static bool has_mt(lua_State *L, int idx, const char *name)
{
    if (!lua_getmetatable(L, idx))
        return false;
    luaL_getmetatable(L, name);
    bool same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

void lua_co_check(lua_State *L, struct lua_host *h, const char *what)
{
    bool ours = false;
    if (!lua_pushthread(L)) {
        push_ref(L, h->threads_ref);
        lua_pushvalue(L, -2);
        lua_rawget(L, -2);
        ours = !lua_isnil(L, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    if (!ours)
        luaL_error(L, "%s waits, and works only in a coroutine that moonring "
                   "runs (a connection function, a timer, or mr.spawn(fn)); "
                   "here, wrap the code in mr.spawn", what);
}

/* A spawned thread ended: keep the outcome for wait(), hand it to the
 * thread that waits already, or log an error nobody waits for. The
 * thread object is at obj on L; co's stack holds its results (ok) or its
 * error (!ok). */
static void thread_done(struct lua_host *h, lua_State *L, int obj,
                        lua_State *co, bool ok)
{
    int n = lua_gettop(co);
    if (!ok) { /* only the error, not what the failed stack still holds */
        lua_replace(co, 1);
        lua_settop(co, 1);
        n = 1;
    }
    lua_createtable(L, n + 1, 0);
    lua_pushboolean(L, ok);
    lua_rawseti(L, -2, 1);
    for (int i = 1; i <= n; i++) {
        lua_pushvalue(co, i);
        lua_xmove(co, L, 1);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, n + 1);
    lua_setfield(L, -2, "n");
    lua_setfield(L, obj, "result");
    lua_getfield(L, obj, "waiter");
    lua_State *w = lua_tothread(L, -1);
    lua_pop(L, 1);
    if (!w) {
        if (!ok)
            log_error("spawned thread failed (nobody waits for it): %s",
                      lua_tostring(co, -1));
        return;
    }
    lua_pushnil(L);
    lua_setfield(L, obj, "waiter");
    lua_pushboolean(w, ok);
    for (int i = 1; i <= n; i++)
        lua_pushvalue(co, i);
    lua_xmove(co, w, n);
    lua_co_resume(h, w, n + 1);
}

/* co ended, with its results or its error on its stack: unanchor it and
 * tell what it ran for. */
static void ended(struct lua_host *h, lua_State *co, bool ok)
{
    lua_State *L = h->L;
    int top = lua_gettop(L);
    push_ref(L, h->threads_ref);
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);             /* threads, co, owner */
    lua_insert(L, -2);
    lua_pushnil(L);
    lua_rawset(L, -4);             /* threads[co] = nil */
    int owner = lua_gettop(L);
    if (!ok)
        h->errors++;
    if (has_mt(L, owner, THREAD_MT)) {
        thread_done(h, L, owner, co, ok);
    } else if (has_mt(L, owner, TIMER_MT)) {
        lua_getfield(L, owner, "period");
        if (!ok)
            log_error("timer callback failed%s: %s",
                      lua_tonumber(L, -1) > 0 ? " (the timer goes on)" : "",
                      lua_tostring(co, -1));
    } else {
        lua_sock_done(h, L, owner, ok ? NULL : lua_tostring(co, -1));
    }
    lua_settop(L, top);
}

/* The error on top of co, with co's traceback, replacing it. */
static void add_traceback(lua_State *co)
{
    const char *msg = lua_tostring(co, -1);
    luaL_traceback(co, co, msg ? msg : "(error object is not a string)", 0);
    lua_remove(co, -2);
}

void lua_co_resume(struct lua_host *h, lua_State *co, int nargs)
{
    bool guarded = h->guarded;
    h->guarded = true;
    int ret = lua_resume(co, nargs);
    h->guarded = guarded;
    if (ret == LUA_YIELD)
        return;
    if (ret != 0)
        add_traceback(co);
    ended(h, co, ret == 0);
    lua_settop(co, 0);
}

lua_State *lua_co_new(struct lua_host *h, lua_State *L, int nargs, int owner)
{
    lua_State *co = lua_newthread(L);
    push_ref(L, h->threads_ref);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, owner);
    lua_rawset(L, -3);             /* threads[co] = owner */
    lua_pop(L, 2);                 /* the table and co (anchored now) */
    lua_xmove(L, co, nargs + 1);   /* fn and its arguments */
    return co;
}

void lua_co_start(struct lua_host *h, lua_State *L, int nargs, int owner)
{
    lua_co_resume(h, lua_co_new(h, L, nargs, owner), nargs);
}

/* mr.sleep(sec): wait sec seconds (a timer of the core's heap, no SQE). */
static int l_sleep(lua_State *L)
{
    struct lua_host *h = HOST(L);
    lua_Number sec = luaL_checknumber(L, 1);
    if (!(sec >= 0 && sec <= 86400.0 * 365))
        return luaL_argerror(L, 1, "seconds between 0 and a year expected");
    if (!h->k)
        return luaL_error(L, "mr.sleep works once the server runs: at load "
                             "time, wrap the code in mr.spawn");
    lua_co_check(L, h, "mr.sleep");
    uint64_t id = h->next_wait_id++;
    /* from now, not from when this turn began: a sleep never ends early */
    if (core_timer_add(h->k, timer_now() + (uint64_t)(sec * 1e9), KEY_SLEEP | id))
        return luaL_error(L, "out of memory");
    push_ref(L, h->waits_ref);
    lua_pushthread(L);
    lua_rawseti(L, -2, (int)id);
    lua_pop(L, 1);
    return lua_yield(L, 0);
}

void lua_co_wake(struct lua_host *h, uint64_t id)
{
    lua_State *L = h->L;
    push_ref(L, h->waits_ref);
    lua_rawgeti(L, -1, (int)id);
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawseti(L, -2, (int)id);
    lua_pop(L, 1);
    if (co) {
        lua_pushboolean(co, 1);
        lua_co_resume(h, co, 1);
    }
}

/* mr.spawn(fn, ...): run fn(...) in a coroutine of its own, now, until
 * it first waits; returns its thread object. Works anywhere, so that a
 * plain callback can start sequential work. At load time it starts once
 * the worker runs (and never under -t, which only loads). */
static int l_spawn(lua_State *L)
{
    struct lua_host *h = HOST(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    lua_createtable(L, 0, 2);
    luaL_getmetatable(L, THREAD_MT);
    lua_setmetatable(L, -2);
    lua_insert(L, 1);              /* obj, fn, args... */
    if (h->k) {
        lua_co_start(h, L, nargs, 1);
    } else {
        lua_State *co = lua_co_new(h, L, nargs, 1);
        push_ref(L, h->waits_ref);  /* waits[-n] = { co, nargs } */
        lua_createtable(L, 2, 0);
        lua_pushthread(co);
        lua_xmove(co, L, 1);
        lua_rawseti(L, -2, 1);
        lua_pushinteger(L, nargs);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, -(int)h->next_wait_id++);
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    return 1;
}

void lua_co_run_pending(struct lua_host *h)
{
    lua_State *L = h->L;
    for (uint64_t id = 1; id < h->next_wait_id; id++) {
        push_ref(L, h->waits_ref);
        lua_rawgeti(L, -1, -(int)id);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 2);
            continue;
        }
        lua_pushnil(L);
        lua_rawseti(L, -3, -(int)id);
        lua_rawgeti(L, -1, 1);
        lua_State *co = lua_tothread(L, -1);
        lua_rawgeti(L, -2, 2);
        int nargs = (int)lua_tointeger(L, -1);
        lua_pop(L, 4);
        lua_co_resume(h, co, nargs);
    }
}

/* thread:wait(): true and fn's results, or false and its error, once it
 * has ended. One thread may wait for it. */
static int l_wait(lua_State *L)
{
    struct lua_host *h = HOST(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "result");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "n");
        int n = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
        luaL_checkstack(L, n, "too many results");
        for (int i = 1; i <= n; i++)
            lua_rawgeti(L, 2, i);
        return n;
    }
    lua_co_check(L, h, "thread:wait");
    lua_getfield(L, 1, "waiter");
    if (!lua_isnil(L, -1)) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "another thread waits for it already");
        return 2;
    }
    lua_pushthread(L);
    lua_setfield(L, 1, "waiter");
    return lua_yield(L, 0);
}

static const luaL_Reg funcs[] = {
    { "sleep", l_sleep },
    { "spawn", l_spawn },
    { NULL, NULL },
};

/* Adds sleep and spawn to the moonring module, the table on top. */
void lua_co_register(lua_State *L, struct lua_host *h)
{
    lua_newtable(L);
    h->threads_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    h->waits_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    h->next_wait_id = 1;

    luaL_newmetatable(L, THREAD_MT);
    lua_newtable(L);
    lua_pushlightuserdata(L, h);
    lua_pushcclosure(L, l_wait, 1);
    lua_setfield(L, -2, "wait");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_pushlightuserdata(L, h);
    luaL_openlib(L, NULL, funcs, 1);
}
