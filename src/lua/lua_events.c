/* lua_events.c - the core's events as calls of the script's handlers.
 * Every call into Lua is protected, with a traceback handler; an error
 * is logged with the script's file and line and closes that connection
 * only. */
#include "log.h"
#include "lua_sock.h"
#include "tls.h"
#include "resolv.h"

#include <string.h>

/* Call the function below nargs arguments; on error log it and, if the
 * connection is still open, close it. */
static void call(struct lua_host *h, struct conn *c, const char *what, int nargs)
{
    lua_State *L = h->L;
    if (lua_script_pcall(h, nargs, 0) == 0)
        return;
    h->errors++;
    log_error("%s failed (connection %llu): %s", what,
              (unsigned long long)c->id, lua_tostring(L, -1));
    lua_settop(L, LS_TOP);
    if (c->state == CONN_OPEN)
        core_close(h->k, c, REASON_ERROR, true);
}

static void ev_open(void *ctx, struct conn *c)
{
    struct lua_host *h = ctx;
    lua_State *L = h->L;
    if (c->user & LC_SOCK) { /* an outbound socket connected */
        lua_tcp_connected(h, c);
        return;
    }
    if (!(c->user & LC_OWN_HANDLERS) && lua_isfunction(L, LS_HANDLERS)) {
        lua_sock_open(h, c);
        return;
    }
    if (!(c->user & LC_OWN_HANDLERS)) /* outbound ones have theirs already */
        lua_conn_push_new(L, c, LS_CONNS);
    else
        lua_rawgeti(L, LS_CONNS, (int)c->slot + 1);
    if (!lua_conn_push_handler(L, c, LS_ON_OPEN, "on_open")) {
        lua_pop(L, 1);
        return;
    }
    lua_insert(L, -2);
    call(h, c, "on_open", 1);
}

static void ev_data(void *ctx, struct conn *c, const char *p, size_t n)
{
    struct lua_host *h = ctx;
    lua_State *L = h->L;
    if (c->user & (LC_OWN_HANDLERS | LC_SOCK)) {
        if (c->user & LC_SOCK) {
            lua_sock_data(h, c, p, n);
            return;
        }
        if (!lua_conn_push_handler(L, c, LS_ON_DATA, "on_data"))
            return;
    } else {
        lua_pushvalue(L, LS_ON_DATA); /* the hot path: no lookup */
    }
    lua_rawgeti(L, LS_CONNS, (int)c->slot + 1);
    lua_pushlstring(L, p, n);
    call(h, c, "on_data", 2);
}

static void ev_drained(void *ctx, struct conn *c)
{
    struct lua_host *h = ctx;
    lua_State *L = h->L;
    if (c->user & LC_SOCK) {
        lua_sock_drained(h, c);
        return;
    }
    if (!lua_conn_push_handler(L, c, LS_ON_DRAIN, "on_drain"))
        return;
    lua_rawgeti(L, LS_CONNS, (int)c->slot + 1);
    call(h, c, "on_drain", 1);
}

static void ev_closed(void *ctx, struct conn *c)
{
    struct lua_host *h = ctx;
    lua_State *L = h->L;
    if (c->user & LC_SOCK) {
        lua_sock_closed(h, c);
        lua_conn_invalidate(L, c);
        return;
    }
    if (lua_conn_push_handler(L, c, LS_ON_CLOSE, "on_close")) {
        lua_rawgeti(L, LS_CONNS, (int)c->slot + 1);
        lua_pushstring(L, conn_reason_name((enum conn_reason)c->reason));
        if (tls_error(c))
            lua_pushstring(L, tls_error(c));
        else if (c->err)
            lua_pushstring(L, c->user & LC_LOOKUP ? resolv_strerror(c->err)
                                                  : strerror(-c->err));
        else
            lua_pushnil(L);
        call(h, c, "on_close", 3);
    }
    lua_conn_invalidate(L, c);
}

/* Timer id, due at `due`, fired: run its function in a coroutine (and
 * schedule the next round of an every() timer), unless it was cancelled. */
static void lua_timer(struct lua_host *h, uint64_t id, uint64_t due)
{
    lua_State *L = h->L;
    lua_rawgeti(L, LS_TIMERS, (int)id);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return; /* cancelled */
    }
    lua_getfield(L, -1, "period");
    double period = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (period > 0) {
        uint64_t step = (uint64_t)(period * 1e9);
        uint64_t next = due + step;
        if (next <= h->k->now)
            next = h->k->now + step; /* fell behind: do not catch up in a burst */
        core_timer_add(h->k, next, id);
    } else {
        lua_pushnil(L);
        lua_rawseti(L, LS_TIMERS, (int)id);
    }
    lua_getfield(L, -1, "fn");
    lua_pushvalue(L, -2);
    lua_co_start(h, L, 1, lua_gettop(L) - 2); /* fn(timer), for the timer */
    lua_settop(L, LS_TOP);
}

static void ev_timer(void *ctx, uint64_t key, uint64_t due)
{
    struct lua_host *h = ctx;
    switch (KEY_KIND(key)) {
    case KEY_KIND(KEY_SLEEP): lua_co_wake(h, KEY_LOW(key)); break;
    case KEY_KIND(KEY_SOCK):  lua_sock_timer(h, KEY_LOW(key)); break;
    case KEY_KIND(KEY_UDP):   lua_udp_timer(h, KEY_LOW(key)); break;
    default:                  lua_timer(h, key, due);
    }
}

/* A socket keeps sending after its peer has stopped: the function reads
 * nil, "closed" and may still answer. A handler table's connection
 * closes, as it always has. */
static bool ev_eof(void *ctx, struct conn *c)
{
    struct lua_host *h = ctx;
    if (!(c->user & LC_SOCK))
        return false;
    lua_sock_eof(h, c);
    return true;
}

/* An outbound connection's on_open runs when it connects: the same
 * handler as an accepted one's, from its own table. */
static const struct core_events events = {
    .opened = ev_open,
    .connected = ev_open,
    .data = ev_data,
    .drained = ev_drained,
    .closed = ev_closed,
    .timer = ev_timer,
    .eof = ev_eof,
    .datagram = lua_udp_event,
};

void lua_host_attach(struct lua_host *h, struct core *k)
{
    h->k = k;
    core_set_events(k, &events, h);
    lua_conn_name_listeners(h);
    lua_udp_name_listeners(h);
    struct timer_entry e;
    while (timer_pop_due(&h->early, UINT64_MAX, &e))
        core_timer_add(k, e.due, e.key);
    timer_heap_free(&h->early);
    lua_co_run_pending(h);
}
