/* lua_udp.c - datagrams: the script's on_datagram(dgram, data) for the
 * udp:// listeners, the dgram object that answers its sender, and the
 * outbound sockets of mr.udp(host, port).
 *
 * A dgram is a small userdata holding the listener's index and the
 * sender's address, made for each datagram: it may be kept, and
 * answered later (from a coroutine after a wait, say), as long as the
 * listener lives. Truncated datagrams get another metatable, whose
 * __index table holds truncated = true beside the methods, so that the
 * field costs nothing on the others.
 *
 * An mr.udp socket is a connected UDP socket of the core's: the kernel
 * drops datagrams from anyone but its peer. Its datagrams come whether
 * or not a coroutine waits in receive; those that come while none does
 * wait in a queue of UDP_QUEUE (the oldest kept, the rest dropped, as a
 * full socket buffer would). */
#include "log.h"
#include "lua_sock.h"
#include "net.h"
#include "resolv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#define DGRAM_MT       "moonring.dgram"
#define DGRAM_TRUNC_MT "moonring.dgram.truncated"
#define UDP_MT         "moonring.udp"
#define UDP_QUEUE      64
#define UDP_TIMEOUT_S  60   /* receive's default */

struct lua_dgram {
    unsigned index;                 /* the listener's, in k->udp */
    socklen_t plen;
    struct sockaddr_in6 peer;       /* room for either family */
};

struct udp_msg {
    size_t len;
    char data[];
};

struct lua_udp {                    /* mr.udp's socket */
    struct core_udp *u;             /* NULL once closed */
    lua_State *waiter;              /* the coroutine in receive */
    /* One timer entry at a time serves every receive: the entry (key
     * timer_id, in waits) is reused while its time is no later than a
     * receive's deadline, and when it comes early it is queued again for
     * the deadline, so a fast loop of receives does not fill the heap */
    uint64_t deadline;              /* the waiting receive's */
    uint64_t timer_id, timer_due;   /* the entry queued, 0: none */
    int err;                        /* an error no receive has seen yet */
    unsigned head, count;           /* the queue */
    struct udp_msg *q[UDP_QUEUE];
};

/* ---- listeners ---- */

void lua_udp_name_listeners(struct lua_host *h)
{
    struct core *k = h->k;
    h->udp_names = calloc(k->nudp ? k->nudp : 1, sizeof *h->udp_names);
    if (!h->udp_names)
        return;
    h->nudp_names = k->nudp;
    for (unsigned i = 0; i < k->nudp; i++) {
        char where[INET6_ADDRSTRLEN + 16], name[sizeof where + 8];
        if (!k->udp[i] || !k->udp[i]->listener)
            continue;
        net_sockname(k->udp[i]->fd, where, sizeof where);
        snprintf(name, sizeof name, "udp://%s", where);
        h->udp_names[i] = strdup(name);
    }
}

/* The dgram at index 1: its metatable must be one of the two. Compared
 * by address (h->dgram_mt): two rawequal calls were a third of
 * dgram:reply's own instructions (callgrind). */
static struct lua_dgram *to_dgram(lua_State *L, const struct lua_host *h)
{
    struct lua_dgram *d = lua_touserdata(L, 1);
    if (d && lua_getmetatable(L, 1)) {
        const void *mt = lua_topointer(L, -1);
        lua_pop(L, 1);
        if (mt == h->dgram_mt[0] || mt == h->dgram_mt[1])
            return d;
    }
    luaL_typerror(L, 1, "dgram");
    return NULL;
}

/* The strings at from..top as one datagram: the one string itself, or
 * several joined. */
static const char *payload(lua_State *L, int from, size_t *n)
{
    int top = lua_gettop(L);
    if (top == from)
        return luaL_checklstring(L, from, n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = from; i <= top; i++) {
        luaL_checkstring(L, i);
        lua_pushvalue(L, i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return lua_tolstring(L, -1, n);
}

static const char *send_error(int err)
{
    switch (err) {
    case -ENOBUFS:  return "send queue full";
    case -EMSGSIZE: return "datagram too long";
    case -EPIPE:    return "closed";
    default:        return strerror(-err);
    }
}

/* dgram:reply(...): the strings, joined, as one datagram to the sender,
 * from the socket it came to. true, or nil and why. */
static int l_reply(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lua_dgram *d = to_dgram(L, h);
    size_t n;
    const char *p = payload(L, 2, &n);
    struct core *k = h->k;
    struct core_udp *u = d->index < k->nudp ? k->udp[d->index] : NULL;
    int ret = u ? core_sendto(k, u, (struct sockaddr *)&d->peer, d->plen, p, n)
                : -EPIPE;
    if (ret)
        return lua_sock_fail(L, send_error(ret));
    lua_pushboolean(L, 1);
    return 1;
}

static int push_addr(lua_State *L, const void *sa, socklen_t len)
{
    struct sockaddr_storage ss;
    char host[INET6_ADDRSTRLEN];
    int port;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, sa, len < sizeof ss ? len : sizeof ss);
    if (net_addr_text(&ss, len, host, sizeof host, &port))
        return lua_sock_fail(L, "unknown address family");
    lua_pushstring(L, host);
    lua_pushinteger(L, port);
    return 2;
}

/* dgram:peer(): the sender's address and port, as conn:peer(). */
static int l_dgram_peer(lua_State *L)
{
    struct lua_dgram *d = to_dgram(L, HOST(L));
    return push_addr(L, &d->peer, d->plen);
}

/* dgram:listener(): "udp://127.0.0.1:5353", as conn:listener(). */
static int l_dgram_listener(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lua_dgram *d = to_dgram(L, h);
    if (d->index < h->nudp_names && h->udp_names[d->index])
        lua_pushstring(L, h->udp_names[d->index]);
    else
        lua_pushnil(L);
    return 1;
}

static void listener_datagram(struct lua_host *h, struct core_udp *u,
                              const struct sockaddr *peer, socklen_t plen,
                              const char *p, size_t n, unsigned flags)
{
    lua_State *L = h->L;
    if (!lua_isfunction(L, LS_ON_DATAGRAM))
        return; /* checked at load: only a function script could get here */
    lua_pushvalue(L, LS_ON_DATAGRAM);
    struct lua_dgram *d = lua_newuserdata(L, sizeof *d);
    d->index = u->index;
    d->plen = plen <= sizeof d->peer ? plen : sizeof d->peer;
    memcpy(&d->peer, peer, d->plen);
    lua_pushvalue(L, flags & CORE_DGRAM_TRUNC ? LS_DGRAM_TRUNC_MT : LS_DGRAM_MT);
    lua_setmetatable(L, -2);
    lua_pushlstring(L, p, n);
    if (lua_script_pcall(h, 2, 0) == 0)
        return;
    h->errors++;
    log_error("on_datagram failed (%s): %s",
              u->index < h->nudp_names && h->udp_names[u->index]
                  ? h->udp_names[u->index] : "udp", lua_tostring(L, -1));
    lua_settop(L, LS_TOP);
}

/* ---- mr.udp ---- */

static struct lua_udp *to_udp(lua_State *L)
{
    return luaL_checkudata(L, 1, UDP_MT);
}

static void drop_queue(struct lua_udp *s)
{
    while (s->count) {
        free(s->q[s->head]);
        s->head = (s->head + 1) % UDP_QUEUE;
        s->count--;
    }
}

/* Resume s's waiter with what is on top of the main stack (nargs). */
static void wake(struct lua_host *h, struct lua_udp *s, int nargs)
{
    lua_State *co = s->waiter;
    s->waiter = NULL; /* its timer entry stays, for the next receive */
    lua_xmove(h->L, co, nargs);
    lua_co_resume(h, co, nargs);
}

static void wake_err(struct lua_host *h, struct lua_udp *s, const char *err)
{
    lua_pushnil(h->L);
    lua_pushstring(h->L, err);
    wake(h, s, 2);
}

static void outbound_datagram(struct lua_host *h, struct core_udp *u,
                              const char *p, size_t n)
{
    struct lua_udp *s = (struct lua_udp *)(uintptr_t)u->user;
    if (!s)
        return;
    if (!p) { /* an error: for the waiter, or the next receive */
        if (s->waiter)
            wake_err(h, s, strerror(-u->err));
        else
            s->err = u->err;
        return;
    }
    if (s->waiter) {
        lua_pushlstring(h->L, p, n);
        wake(h, s, 1);
        return;
    }
    struct udp_msg *m = s->count < UDP_QUEUE ? malloc(sizeof *m + n) : NULL;
    if (!m) {
        h->k->stats.dgrams_dropped++;
        return;
    }
    m->len = n;
    memcpy(m->data, p, n);
    s->q[(s->head + s->count++) % UDP_QUEUE] = m;
}

void lua_udp_event(void *ctx, struct core_udp *u, const struct sockaddr *peer,
                   socklen_t plen, const char *p, size_t n, unsigned flags)
{
    struct lua_host *h = ctx;
    if (u->listener)
        listener_datagram(h, u, peer, plen, p, n, flags);
    else
        outbound_datagram(h, u, p, n);
}

/* Queue s's timer entry for due; the socket object is at idx of L. */
static int queue_timer(struct lua_host *h, lua_State *L, int idx,
                       struct lua_udp *s, uint64_t due)
{
    uint64_t id = h->next_wait_id++;
    if (core_timer_add(h->k, due, KEY_UDP | id))
        return -1;
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->waits_ref);
    lua_pushvalue(L, idx);
    lua_rawseti(L, -2, (int)id);   /* waits[id] = the socket, for its timer */
    lua_pop(L, 1);
    s->timer_id = id;
    s->timer_due = due;
    return 0;
}

void lua_udp_timer(struct lua_host *h, uint64_t id)
{
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->waits_ref);
    lua_rawgeti(L, -1, (int)id);
    lua_pushnil(L);
    lua_rawseti(L, -3, (int)id);
    struct lua_udp *s = lua_touserdata(L, -1);
    if (s && s->timer_id == id) {
        s->timer_id = 0;
        if (s->waiter && s->deadline > timer_now() &&
            queue_timer(h, L, -1, s, s->deadline) == 0) {
            lua_pop(L, 2); /* came early: again, for the deadline */
            return;
        }
        lua_pop(L, 2);
        if (s->waiter)
            wake_err(h, s, "timeout");
        return;
    }
    lua_pop(L, 2); /* an entry another one replaced */
}

/* A new socket for addr, pushed on L; NULL and why when it cannot be. */
static const char *open_udp(struct lua_host *h, lua_State *L,
                            const struct sockaddr *addr, socklen_t len)
{
    int err;
    struct lua_udp *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    luaL_getmetatable(L, UDP_MT);
    lua_setmetatable(L, -2);
    s->u = core_udp_connect(h->k, addr, len, &err);
    if (!s->u) {
        lua_pop(L, 1);
        return err == -ESHUTDOWN ? "shutting down" : strerror(-err);
    }
    s->u->user = (uintptr_t)s;
    return NULL;
}

struct udp_lookup {
    struct lua_host *h;
    lua_State *co;
    int port;
};

static void udp_resolved(struct core *k, void *ctx, int err,
                         const struct resolv_result *r)
{
    struct udp_lookup *q = ctx;
    struct lua_host *h = q->h;
    lua_State *co = q->co;
    (void)k;
    const char *why = err ? resolv_strerror(err) : NULL;
    if (!why) {
        struct sockaddr_storage ss = r->addr[0];
        if (ss.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)q->port);
        else
            ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)q->port);
        why = open_udp(h, h->L, (struct sockaddr *)&ss, r->len[0]);
    }
    free(q);
    if (why) {
        lua_sock_wake_err(h, co, why);
        return;
    }
    lua_xmove(h->L, co, 1);
    lua_co_resume(h, co, 1);
}

/* mr.udp(host, port): a UDP socket connected to host:port (a name is
 * looked up on the ring first), or nil and why. */
static int l_udp(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *host = luaL_checkstring(L, 1);
    int port = luaL_checkint(L, 2);
    if (port < 1 || port > 65535)
        return luaL_argerror(L, 2, "port 1-65535 expected");
    if (!h->k)
        return luaL_error(L, "mr.udp works once the server runs: at load "
                             "time, wrap the code in mr.spawn");
    lua_co_check(L, h, "mr.udp");
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    socklen_t len = 0;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        len = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        len = sizeof *v6;
    }
    if (len) {
        const char *why = open_udp(h, L, (struct sockaddr *)&ss, len);
        return why ? lua_sock_fail(L, why) : 1;
    }
    struct udp_lookup *q = malloc(sizeof *q);
    if (!q)
        return lua_sock_fail(L, "out of memory");
    *q = (struct udp_lookup){ .h = h, .co = L, .port = port };
    int ret = core_resolve(h->k, host, udp_resolved, q);
    if (ret) {
        free(q);
        return lua_sock_fail(L, resolv_strerror(ret));
    }
    return lua_yield(L, 0);
}

/* u:send(...): the strings, joined, as one datagram. true, or nil and
 * why. */
static int l_send(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lua_udp *s = to_udp(L);
    if (!s->u)
        return lua_sock_fail(L, "closed");
    size_t n;
    const char *p = payload(L, 2, &n);
    int ret = core_sendto(h->k, s->u, NULL, 0, p, n);
    if (ret)
        return lua_sock_fail(L, send_error(ret));
    lua_pushboolean(L, 1);
    return 1;
}

/* u:receive([timeout]): the next datagram from the peer, waiting at most
 * timeout seconds (60); nil and "timeout", "closed", or the error the
 * socket reported ("Connection refused": nothing listens there). */
static int l_receive(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lua_udp *s = to_udp(L);
    double t = luaL_optnumber(L, 2, UDP_TIMEOUT_S);
    if (!(t >= 0 && t <= 86400.0 * 365))
        return luaL_argerror(L, 2, "seconds expected");
    if (s->count) {
        struct udp_msg *m = s->q[s->head];
        s->head = (s->head + 1) % UDP_QUEUE;
        s->count--;
        lua_pushlstring(L, m->data, m->len);
        free(m);
        return 1;
    }
    if (s->err) {
        int err = s->err;
        s->err = 0;
        return lua_sock_fail(L, strerror(-err));
    }
    if (!s->u)
        return lua_sock_fail(L, "closed");
    if (s->waiter)
        return lua_sock_fail(L, "socket busy reading");
    lua_co_check(L, h, "udp:receive");
    s->deadline = timer_now() + (uint64_t)(t * 1e9);
    if ((!s->timer_id || s->timer_due > s->deadline) &&
        queue_timer(h, L, 1, s, s->deadline))
        return lua_sock_fail(L, "out of memory");
    s->waiter = L;
    return lua_yield(L, 0);
}

static void close_udp(struct lua_host *h, struct lua_udp *s)
{
    if (s->u && h->k) {
        s->u->user = 0;
        core_udp_close(h->k, s->u);
    }
    s->u = NULL;
    drop_queue(s);
}

/* u:close(): no more datagrams; a receive waiting gets nil, "closed". */
static int l_close(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lua_udp *s = to_udp(L);
    close_udp(h, s);
    if (s->waiter)
        wake_err(h, s, "closed");
    lua_pushboolean(L, 1);
    return 1;
}

static int l_gc(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lua_udp *s = lua_touserdata(L, 1);
    if (!h->closing)
        close_udp(h, s);
    else
        drop_queue(s); /* lua_close: the core is gone or going */
    return 0;
}

static const luaL_Reg dgram_methods[] = {
    { "reply", l_reply },
    { "peer", l_dgram_peer },
    { "listener", l_dgram_listener },
    { NULL, NULL },
};

static const luaL_Reg udp_methods[] = {
    { "send", l_send },
    { "receive", l_receive },
    { "close", l_close },
    { NULL, NULL },
};

/* The two metatables of dgrams, into their slots (and their addresses
 * into h->dgram_mt): their __index tables hold the methods (with the host
 * as upvalue), and the truncated one's truncated = true. */
static void dgram_mts(lua_State *L, struct lua_host *h)
{
    luaL_newmetatable(L, DGRAM_MT);
    lua_replace(L, LS_DGRAM_MT);
    luaL_newmetatable(L, DGRAM_TRUNC_MT);
    lua_replace(L, LS_DGRAM_TRUNC_MT);
    h->dgram_mt[0] = lua_topointer(L, LS_DGRAM_MT);
    h->dgram_mt[1] = lua_topointer(L, LS_DGRAM_TRUNC_MT);
    for (int trunc = 0; trunc < 2; trunc++) {
        int mt = trunc ? LS_DGRAM_TRUNC_MT : LS_DGRAM_MT;
        lua_newtable(L);
        lua_pushlightuserdata(L, h);
        luaL_openlib(L, NULL, dgram_methods, 1);
        if (trunc) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "truncated");
        }
        lua_setfield(L, mt, "__index");
        lua_pushliteral(L, "dgram");
        lua_setfield(L, mt, "__metatable");
    }
}

/* Adds mr.udp to the module table on top; the dgram metatables go to
 * their slots of the main stack. */
void lua_udp_register(lua_State *L, struct lua_host *h)
{
    luaL_newmetatable(L, UDP_MT);
    lua_newtable(L);
    lua_pushlightuserdata(L, h);
    luaL_openlib(L, NULL, udp_methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pushlightuserdata(L, h);
    lua_pushcclosure(L, l_gc, 1);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    dgram_mts(L, h);

    lua_pushlightuserdata(L, h);
    lua_pushcclosure(L, l_udp, 1);
    lua_setfield(L, -2, "udp");
}
