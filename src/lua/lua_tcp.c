/* lua_tcp.c - outbound sockets: mr.tcp(host, port), and the worker's
 * pool of idle connections that sock:setkeepalive() fills.
 *
 * A pooled connection keeps its socket state (a userdata) but not its
 * Lua object: setkeepalive detaches the caller's object, which then
 * answers nil, "closed" to everything, and the next mr.tcp for the same
 * host:port gets a fresh object around the same state. So a caller that
 * keeps using a socket it gave back cannot disturb the next one. The
 * pools are a registry table: pools["host:port"] = { state, ... }, the
 * most recently returned last. */
#include "lua_sock.h"
#include "log.h"
#include "net.h"
#include "resolv.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UV_CONNS lua_upvalueindex(2)
#define POOL_IDLE_S 60      /* setkeepalive's default idle time */
#define POOL_SIZE 32        /* and its default size */

static void push_pool(struct lua_host *h, lua_State *L, const char *key,
                      bool create)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->pools_ref);
    lua_getfield(L, -1, key);
    if (lua_isnil(L, -1) && create) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, key);
    }
    lua_remove(L, -2);
}

/* Take the most recent idle connection to key that is still good, as a
 * new socket object on L; false if there is none. */
static bool take_pooled(struct lua_host *h, lua_State *L, const char *key)
{
    push_pool(h, L, key, false);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return false;
    }
    int pool = lua_gettop(L);
    for (int n = (int)lua_objlen(L, pool); n > 0; n--) {
        lua_rawgeti(L, pool, n);
        lua_pushnil(L);
        lua_rawseti(L, pool, n);
        struct lua_sock *s = lua_touserdata(L, -1);
        struct conn *c = s->c;
        if (!c || c->state != CONN_OPEN) {
            lua_pop(L, 1);
            continue;
        }
        s->pooled = false;
        s->reused++;
        core_set_idle(h->k, c, 0);
        lua_conn_push_as(L, c, UV_CONNS, SOCK_MT);
        lua_sock_attach(L, lua_gettop(L), lua_gettop(L) - 1);
        lua_remove(L, -2);          /* the state */
        lua_remove(L, pool);
        return true;
    }
    lua_pop(L, 1);
    return false;
}

/* host as an address, if it is a literal one (or localhost): no lookup. */
static bool literal(const char *host, int port, struct sockaddr_storage *ss,
                    socklen_t *len)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
        return true;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof *v6;
        return true;
    }
    return false;
}

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

/* Start the connect for co, which waits: its socket is made now, on the
 * main stack, and handed to co when it is connected. Returns NULL, or
 * why it could not start. */
/* mr.tcp's options, kept while a name is looked up. */
struct tcp_opts {
    double timeout;
    bool tls, verify;
    char server_name[256];
    char ca[256];              /* "" for the system's store */
};

/* The TLS state for a connection with these options, or NULL (and why,
 * into err) when it cannot be made. */
static struct transport_conn *tls_for(const struct tcp_opts *o, char *err,
                                      size_t len)
{
    struct tls_client_opts to = {
        .server_name = o->server_name, .verify = o->verify,
        .ca = o->ca[0] ? o->ca : NULL,
    };
    return tls_client_new(&to, err, len);
}

static const char *start_connect(struct lua_host *h, lua_State *co,
                                 const struct sockaddr_storage *ss,
                                 socklen_t len, const char *key,
                                 const struct tcp_opts *o)
{
    static char err[256];
    struct transport_conn *tp = NULL;
    if (o->tls && !(tp = tls_for(o, err, sizeof err)))
        return err;
    struct conn *c;
    int ret = core_connect(h->k, (const struct sockaddr *)ss, len, tp, &c);
    if (ret) {
        if (tp)
            tp->ops->release(h->k, &(struct conn){ .tp = tp });
        return lua_tcp_strerror(ret);
    }
    double timeout = o->timeout;
    struct lua_sock *s = lua_sock_push(h, h->L, c, LS_CONNS);
    if (s)
        lua_pop(h->L, 1); /* it waits in conns[slot + 1] */
    if (!s || !(s->pool_key = strdup(key))) {
        core_close(h->k, c, REASON_ERROR, true);
        return "out of memory";
    }
    s->connecting = co;
    if (timeout > 0) {
        s->cdeadline = timer_now() + (uint64_t)(timeout * 1e9);
        lua_sock_queue_timer(h, s, s->cdeadline);
    }
    return NULL;
}

const char *lua_tcp_strerror(int err)
{
    switch (err) {
    case -ENOSPC:    return "too many connections";
    case -ESHUTDOWN: return "shutting down";
    case -ENOMEM:    return "out of memory";
    default:         return strerror(-err);
    }
}

/* A name being looked up for a coroutine that waits. */
struct lookup {
    struct lua_host *h;
    lua_State *co;
    int port;                  /* 0: mr.resolve, else mr.tcp's */
    struct tcp_opts opts;
    char key[600];
};

static void tcp_resolved(struct core *k, void *ctx, int err,
                         const struct resolv_result *r)
{
    struct lookup *q = ctx;
    struct lua_host *h = q->h;
    (void)k;
    if (err) {
        lua_sock_wake_err(h, q->co, resolv_strerror(err));
    } else {
        struct sockaddr_storage ss = r->addr[0];
        set_port(&ss, q->port);
        const char *why = start_connect(h, q->co, &ss, r->len[0], q->key,
                                        &q->opts);
        if (why)
            lua_sock_wake_err(h, q->co, why);
    }
    free(q);
}

/* Look name up for the coroutine L, which then waits; fn gets q. */
static int wait_lookup(lua_State *L, struct lua_host *h, const char *name,
                       int port, const struct tcp_opts *o, const char *key,
                       resolv_fn fn)
{
    struct lookup *q = calloc(1, sizeof *q);
    if (!q)
        return lua_sock_fail(L, "out of memory");
    *q = (struct lookup){ .h = h, .co = L, .port = port };
    if (o)
        q->opts = *o;
    snprintf(q->key, sizeof q->key, "%s", key);
    int ret = core_resolve(h->k, name, fn, q);
    if (ret) {
        free(q);
        return lua_sock_fail(L, resolv_strerror(ret));
    }
    return lua_yield(L, 0);
}

/* A string option of the table at idx into out (size n), or def. */
static void opt_string(lua_State *L, int idx, const char *name, const char *def,
                       char *out, size_t n)
{
    lua_getfield(L, idx, name);
    const char *v = lua_isnil(L, -1) ? def : luaL_checkstring(L, -1);
    if (strlen(v) >= n)
        luaL_error(L, "mr.tcp: %s is too long", name);
    snprintf(out, n, "%s", v);
    lua_pop(L, 1);
}

/* opts: timeout, and for TLS: tls, server_name (the host by default, if
 * it is a name), verify (true), ca (a PEM file; the system's store). */
static void get_opts(lua_State *L, int idx, const char *host, struct tcp_opts *o)
{
    lua_getfield(L, idx, "timeout");
    o->timeout = lua_isnil(L, -1) ? 0 : luaL_checknumber(L, -1);
    lua_getfield(L, idx, "tls");
    o->tls = lua_toboolean(L, -1);
    lua_getfield(L, idx, "verify");
    o->verify = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 3);
    struct sockaddr_storage ss;
    socklen_t len;
    opt_string(L, idx, "server_name", literal(host, 1, &ss, &len) ? "" : host,
               o->server_name, sizeof o->server_name);
    opt_string(L, idx, "ca", "", o->ca, sizeof o->ca);
}

struct transport_conn *lua_tcp_tls(lua_State *L, int idx, const char *host,
                                   char *err, size_t len)
{
    struct tcp_opts o = { .verify = true };
    err[0] = 0;
    if (!lua_istable(L, idx))
        return NULL;
    get_opts(L, idx, host, &o);
    return o.tls ? tls_for(&o, err, len) : NULL;
}

/* mr.tcp(host, port [, opts]): a connected socket, waiting until it is.
 * opts.timeout bounds the connect (seconds, 10 at most). A name is
 * looked up on the ring first. */
static int l_tcp(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *host = luaL_checkstring(L, 1);
    int port = luaL_checkint(L, 2);
    if (port < 1 || port > 65535)
        return luaL_argerror(L, 2, "port 1-65535 expected");
    struct tcp_opts o = { .verify = true };
    if (lua_istable(L, 3))
        get_opts(L, 3, host, &o);
    if (!h->k)
        return luaL_error(L, "mr.tcp works once the server runs: at load "
                             "time, wrap the code in mr.spawn");
    lua_co_check(L, h, "mr.tcp");
    char key[600]; /* a TLS connection is pooled apart, by its options */
    if (o.tls)
        snprintf(key, sizeof key, "tls:%s:%d:%s:%d:%s", host, port, o.server_name,
                 o.verify, o.ca);
    else
        snprintf(key, sizeof key, "%s:%d", host, port);
    if (take_pooled(h, L, key))
        return 1;
    struct sockaddr_storage ss;
    socklen_t len;
    if (!literal(host, port, &ss, &len)) {
        struct resolv_result r;
        int ret = core_resolve_known(h->k, host, &r);
        if (ret < 0)
            return lua_sock_fail(L, resolv_strerror(ret));
        if (!ret)
            return wait_lookup(L, h, host, port, &o, key, tcp_resolved);
        ss = r.addr[0]; /* known already: connect at once */
        len = r.len[0];
        set_port(&ss, port);
    }
    const char *why = start_connect(h, L, &ss, len, key, &o);
    if (why)
        return lua_sock_fail(L, why);
    return lua_yield(L, 0);
}

/* A lookup's addresses as a table of strings, on L's stack. */
static void push_addrs(lua_State *L, const struct resolv_result *r)
{
    lua_createtable(L, r->count, 0);
    for (int i = 0; i < r->count; i++) {
        char text[64];
        int port;
        net_addr_text(&r->addr[i], r->len[i], text, sizeof text, &port);
        lua_pushstring(L, text);
        lua_rawseti(L, -2, i + 1);
    }
}

static void resolved(struct core *k, void *ctx, int err,
                     const struct resolv_result *r)
{
    struct lookup *q = ctx;
    (void)k;
    if (err) {
        lua_sock_wake_err(q->h, q->co, resolv_strerror(err));
    } else {
        push_addrs(q->co, r);
        lua_co_resume(q->h, q->co, 1);
    }
    free(q);
}

/* The lookup for mr.connect's connection: it may have closed meanwhile. */
struct pending {
    struct lua_host *h;
    uint32_t slot, gen;
    int port;
};

static void connect_resolved(struct core *k, void *ctx, int err,
                             const struct resolv_result *r)
{
    struct pending *q = ctx;
    struct conn *c = conn_get(&k->conns, q->slot, q->gen);
    if (c && c->state == CONN_CONNECTING) {
        if (err) {
            c->err = err;
            c->user |= LC_LOOKUP;
            core_close(k, c, REASON_ERROR, true);
        } else {
            struct sockaddr_storage ss = r->addr[0];
            set_port(&ss, q->port);
            core_connect_to(k, c, (struct sockaddr *)&ss, r->len[0]);
        }
    }
    free(q);
}

void lua_tcp_connect_to(struct lua_host *h, struct conn *c, const char *host,
                        int port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (literal(host, port, &ss, &len)) {
        core_connect_to(h->k, c, (struct sockaddr *)&ss, len);
        return;
    }
    struct pending *q = malloc(sizeof *q);
    int ret = q ? 0 : -ENOMEM;
    if (q) {
        *q = (struct pending){ .h = h, .slot = c->slot, .gen = c->gen, .port = port };
        ret = core_resolve(h->k, host, connect_resolved, q);
    }
    if (ret) {
        free(q);
        c->err = ret;
        c->user |= LC_LOOKUP;
        core_close(h->k, c, REASON_ERROR, true);
    }
}

/* mr.resolve(name): its addresses, IPv4 first ({ "127.0.0.1", ... }),
 * or nil and why; looked up on the ring (resolv.h), never blocking. */
static int l_resolve(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *name = luaL_checkstring(L, 1);
    if (!h->k)
        return luaL_error(L, "mr.resolve works once the server runs: at load "
                             "time, wrap the code in mr.spawn");
    lua_co_check(L, h, "mr.resolve");
    struct resolv_result r;
    int ret = core_resolve_known(h->k, name, &r);
    if (ret < 0)
        return lua_sock_fail(L, resolv_strerror(ret));
    if (ret) { /* no query needed: no wait either */
        push_addrs(L, &r);
        return 1;
    }
    return wait_lookup(L, h, name, 0, NULL, "", resolved);
}

void lua_tcp_connected(struct lua_host *h, struct conn *c)
{
    struct lua_sock *s = h->socks[c->slot];
    lua_State *co = s->connecting;
    if (!co)
        return;
    s->connecting = NULL;
    s->cdeadline = 0;
    lua_rawgeti(h->L, LS_CONNS, (int)c->slot + 1);
    lua_xmove(h->L, co, 1);
    lua_co_resume(h, co, 1);
}

/* Drop s from its pool. */
static void unpool(struct lua_host *h, struct lua_sock *s)
{
    lua_State *L = h->L;
    push_pool(h, L, s->pool_key, false);
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        bool it = lua_touserdata(L, -1) == s;
        lua_pop(L, 1);
        if (!it)
            continue;
        for (; i < n; i++) { /* keep the order: the newest last */
            lua_rawgeti(L, -1, i + 1);
            lua_rawseti(L, -2, i);
        }
        lua_pushnil(L);
        lua_rawseti(L, -2, n);
        break;
    }
    lua_pop(L, 1);
    s->pooled = false;
}

void lua_tcp_closed(struct lua_host *h, struct lua_sock *s)
{
    if (s->pooled)
        unpool(h, s);
    if (s->connecting) {
        lua_State *co = s->connecting;
        s->connecting = NULL;
        lua_sock_wake_err(h, co, s->why);
    }
}

void lua_tcp_timer(struct lua_host *h, struct lua_sock *s, uint64_t now)
{
    if (!s->connecting || !s->cdeadline || now < s->cdeadline)
        return;
    s->cdeadline = 0;
    s->why = "timeout"; /* what the closed event will wake it with */
    core_close(h->k, s->c, REASON_TIMEOUT, true);
}

/* sock:setkeepalive([idle_sec [, size]]): give an outbound connection
 * back to this worker's pool for its host:port, to be closed after
 * idle_sec (60) unused; the pool keeps size (32) at most, and closes
 * its oldest to make room. The socket object is done with: every call
 * on it now returns nil, "closed". */
static int l_setkeepalive(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lua_sock *s = lua_sock_check(L);
    double idle = luaL_optnumber(L, 2, POOL_IDLE_S);
    int size = luaL_optint(L, 3, POOL_SIZE);
    if (!(idle >= 0 && idle <= 86400.0 * 365) || size < 1)
        return luaL_argerror(L, idle >= 0 ? 3 : 2, "a positive number expected");
    struct conn *c = s->c;
    if (!c || c->state != CONN_OPEN)
        return lua_sock_fail(L, "closed");
    if (!s->pool_key)
        return lua_sock_fail(L, "only outbound connections go to the pool");
    if (s->reader || s->writer)
        return lua_sock_fail(L, "socket busy");
    if (s->len) { /* what nobody read would reach the next user */
        core_close(h->k, c, REASON_CLOSED, false);
        return lua_sock_fail(L, "unread data: closed instead");
    }
    push_pool(h, L, s->pool_key, true);
    int pool = lua_gettop(L), n = (int)lua_objlen(L, pool);
    if (n >= size) { /* the oldest goes */
        lua_rawgeti(L, pool, 1);
        struct lua_sock *old = lua_touserdata(L, -1);
        lua_pop(L, 1);
        core_close(h->k, old->c, REASON_CLOSED, false);
        unpool(h, old);
        n = (int)lua_objlen(L, pool);
    }
    lua_pushlightuserdata(L, (void *)&lua_sock_key);
    lua_rawget(L, 1);
    lua_rawseti(L, pool, n + 1);    /* the state, newest last */
    lua_conn_detach(L, 1);
    lua_pushlightuserdata(L, (void *)&lua_sock_key);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->dead_ref);
    lua_rawset(L, 1);
    s->pooled = true;
    s->home = NULL;
    uint32_t ms = (uint32_t)(idle * 1000 + 0.5);
    core_set_idle(h->k, c, ms ? ms : 1);
    lua_pushboolean(L, 1);
    return 1;
}

/* sock:getreusedtimes(): how often this connection came from the pool. */
static int l_getreusedtimes(lua_State *L)
{
    struct lua_sock *s = lua_sock_check(L);
    lua_pushinteger(L, (lua_Integer)s->reused);
    return 1;
}

static const luaL_Reg funcs[] = {    /* upvalues: host, conns */
    { "tcp", l_tcp },
    { "resolve", l_resolve },
    { NULL, NULL },
};

static const luaL_Reg methods[] = {  /* upvalue: host */
    { "setkeepalive", l_setkeepalive },
    { "getreusedtimes", l_getreusedtimes },
    { NULL, NULL },
};

/* Adds mr.tcp and mr.resolve to the module table on top, and the pool's
 * methods to sockets. */
void lua_tcp_register(lua_State *L, struct lua_host *h)
{
    lua_newtable(L);
    h->pools_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    struct lua_sock *dead = lua_newuserdata(L, sizeof *dead);
    memset(dead, 0, sizeof *dead);
    dead->why = "closed";
    h->dead_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_pushlightuserdata(L, h);
    lua_pushvalue(L, LS_CONNS);
    luaL_openlib(L, NULL, funcs, 2);

    luaL_getmetatable(L, SOCK_MT);
    lua_getfield(L, -1, "__index");
    lua_pushlightuserdata(L, h);
    luaL_openlib(L, NULL, methods, 1);
    lua_pop(L, 2);
}
