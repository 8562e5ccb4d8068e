/* lua_conn.c - the `conn` object scripts see.
 *
 * A conn is a plain Lua table, so that scripts can set any field on it
 * (conn.user = "bob") and method lookups stay plain table lookups that
 * LuaJIT compiles. Its metatable holds the methods. The C connection is
 * reached through a light userdata under a private key; when the
 * connection closes that key is set to false, and every method then
 * returns nil, "closed" instead of touching freed memory. */
#include "lua_int.h"
#include "net.h"
#include "tls.h"

#include <errno.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONN_MT "moonring.conn"

static const char conn_key = 0;     /* private key of the C pointer */
static const char handlers_key = 0; /* private key of an outbound conn's handlers */

struct conn *lua_conn_at(lua_State *L, int idx)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushlightuserdata(L, (void *)&conn_key);
    lua_rawget(L, idx);
    if (lua_isnil(L, -1))
        luaL_argerror(L, idx, "conn expected");
    struct conn *c = lua_touserdata(L, -1); /* NULL for false */
    lua_pop(L, 1);
    return c;
}

static struct conn *to_conn(lua_State *L) { return lua_conn_at(L, 1); }

/* Open, or an outbound connection still connecting. */
static bool live(const struct conn *c)
{
    return c && (c->state == CONN_OPEN || c->state == CONN_CONNECTING);
}

static int closed(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
}

int lua_conn_send_args(lua_State *L, struct core *k, struct conn *c, int from,
                       size_t *total)
{
    int top = lua_gettop(L);
    *total = 0;
    if (c->tp && top > from) { /* one TLS record, not one for each piece */
        lua_concat(L, top - from + 1);
        top = from;
    }
    for (int i = from; i <= top; i++) {
        size_t len;
        const char *p = lua_tolstring(L, i, &len);
        int ret = core_send(k, c, p, len);
        if (ret)
            return ret;
        *total += len;
    }
    return 0;
}

/* conn:send(...): queue strings (or numbers) in order. Returns true, or
 * false when the queue is now above the high-water mark (the bytes are
 * queued all the same; stop producing until on_drain), or nil, "closed". */
static int l_send(lua_State *L)
{
    struct conn *c = to_conn(L);
    int n = lua_gettop(L);
    for (int i = 2; i <= n; i++)
        if (!lua_isstring(L, i))
            luaL_argerror(L, i, lua_pushfstring(L, "string expected, got %s",
                                                luaL_typename(L, i)));
    if (!live(c))
        return closed(L);
    size_t total;
    if (lua_conn_send_args(L, HOST(L)->k, c, 2, &total) == -ENOMEM) {
        lua_pushnil(L);
        lua_pushliteral(L, "out of memory");
        return 2;
    }
    lua_pushboolean(L, !(c->flags & CF_HWM));
    return 1;
}

/* conn:close(): close after what is queued has been sent. */
static int l_close(lua_State *L)
{
    struct conn *c = to_conn(L);
    if (!live(c))
        return closed(L);
    core_close(HOST(L)->k, c, REASON_CLOSED, false);
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:peer(): address and port of the other end. */
static int l_peer(lua_State *L)
{
    struct conn *c = to_conn(L);
    if (!c || c->fd < 0)
        return closed(L);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[128];
    int port;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) ||
        net_addr_text(&ss, sl, host, sizeof host, &port)) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushstring(L, host);
    lua_pushinteger(L, port);
    return 2;
}

void lua_conn_name_listeners(struct lua_host *h)
{
    unsigned n = h->k->nlsn;
    h->lsn_names = calloc(n, sizeof *h->lsn_names);
    if (!h->lsn_names)
        return;
    h->nlsn_names = n;
    for (unsigned i = 0; i < n; i++) {
        char where[INET6_ADDRSTRLEN + 128], name[sizeof where + 8];
        net_sockname(h->k->lsn[i].fd, where, sizeof where);
        bool tls = h->k->lsn[i].tp == &tls_server;
        snprintf(name, sizeof name, "%s%s", strncmp(where, "unix:", 5) == 0 ? ""
                 : tls ? "tls://" : "tcp://", where);
        h->lsn_names[i] = strdup(name);
    }
}

/* conn:listener(): the listener the connection came in on, as
 * "tcp://127.0.0.1:7000" or "unix:/run/app.sock"; nil for one this
 * worker made. */
static int l_listener(lua_State *L)
{
    struct conn *c = to_conn(L);
    struct lua_host *h = HOST(L);
    if (!c)
        return closed(L);
    if (c->origin >= h->nlsn_names || !h->lsn_names[c->origin])
        lua_pushnil(L); /* CONN_OUTBOUND, or out of memory at start */
    else
        lua_pushstring(L, h->lsn_names[c->origin]);
    return 1;
}

/* conn:tls(): nil for a plain connection, else { version=, cipher=,
 * sni=, alpn= } (sni and alpn when there are). */
static int l_tls(lua_State *L)
{
    struct conn *c = to_conn(L);
    struct tls_info ti;
    if (!c)
        return closed(L);
    if (!tls_info(c, &ti)) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 4);
    lua_pushstring(L, ti.version);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, ti.cipher);
    lua_setfield(L, -2, "cipher");
    if (ti.sni) {
        lua_pushstring(L, ti.sni);
        lua_setfield(L, -2, "sni");
    }
    if (ti.alpn[0]) {
        lua_pushstring(L, ti.alpn);
        lua_setfield(L, -2, "alpn");
    }
    return 1;
}

/* conn:pending(): bytes queued and not yet sent. */
static int l_pending(lua_State *L)
{
    struct conn *c = to_conn(L);
    if (!c)
        return closed(L);
    lua_pushnumber(L, (lua_Number)sendq_pending(&c->q));
    return 1;
}

/* conn:pause() / conn:resume(): stop and restart reading. Bytes already
 * on their way when pause() is called wait for resume(). */
static int l_pause(lua_State *L)
{
    struct conn *c = to_conn(L);
    if (!live(c))
        return closed(L);
    core_pause(HOST(L)->k, c);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_resume(lua_State *L)
{
    struct conn *c = to_conn(L);
    if (!live(c))
        return closed(L);
    core_resume(HOST(L)->k, c);
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:set_timeout(sec): close the connection (on_close reason
 * "timeout") once no byte has come in or gone out for sec seconds;
 * 0 or nil turns it off. */
static int l_set_timeout(lua_State *L)
{
    struct conn *c = to_conn(L);
    lua_Number sec = luaL_optnumber(L, 2, 0);
    if (!(sec >= 0 && sec <= 86400 * 365))
        return luaL_argerror(L, 2, "seconds between 0 and a year expected");
    if (!c || c->state != CONN_OPEN)
        return closed(L);
    uint32_t ms = (uint32_t)(sec * 1000 + 0.5);
    if (sec > 0 && !ms)
        ms = 1;
    core_set_idle(HOST(L)->k, c, ms);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_tostring(lua_State *L)
{
    lua_pushliteral(L, "id");
    lua_rawget(L, 1);
    lua_pushfstring(L, "conn %s", lua_tostring(L, -1));
    return 1;
}

/* What a socket (a connection run by a function) shares with a conn. */
static const luaL_Reg shared[] = {
    { "close", l_close },
    { "peer", l_peer },
    { "listener", l_listener },
    { "tls", l_tls },
    { "pending", l_pending },
    { "set_timeout", l_set_timeout },
    { NULL, NULL },
};

static const luaL_Reg methods[] = {
    { "send", l_send },
    { "pause", l_pause },
    { "resume", l_resume },
    { NULL, NULL },
};

void lua_conn_add_shared(lua_State *L, struct lua_host *h)
{
    lua_pushlightuserdata(L, h);
    luaL_openlib(L, NULL, shared, 1);
}

void lua_conn_register(lua_State *L, struct lua_host *h)
{
    luaL_newmetatable(L, CONN_MT);
    lua_newtable(L);
    lua_conn_add_shared(L, h);
    lua_pushlightuserdata(L, h);
    luaL_openlib(L, NULL, methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "conn");
    lua_setfield(L, -2, "__metatable"); /* scripts cannot swap methods */
    lua_pop(L, 1);
}

/* Create c's object, store it in conns[slot + 1] (the table at stack
 * index conns), leave it on the stack. */
void lua_conn_push_new(lua_State *L, struct conn *c, int conns)
{
    lua_conn_push_as(L, c, conns, CONN_MT);
}

void lua_conn_push_as(lua_State *L, struct conn *c, int conns, const char *mt)
{
    lua_createtable(L, 0, 4);
    lua_pushlightuserdata(L, (void *)&conn_key);
    lua_pushlightuserdata(L, c);
    lua_rawset(L, -3);
    lua_pushnumber(L, (lua_Number)c->id);
    lua_setfield(L, -2, "id");
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawseti(L, conns, (int)c->slot + 1);
}

void lua_conn_detach(lua_State *L, int idx)
{
    lua_pushlightuserdata(L, (void *)&conn_key);
    lua_pushboolean(L, 0);
    lua_rawset(L, idx);
}

void lua_conn_invalidate(lua_State *L, struct conn *c)
{
    lua_rawgeti(L, LS_CONNS, (int)c->slot + 1);
    if (lua_istable(L, -1)) {
        lua_pushlightuserdata(L, (void *)&conn_key);
        lua_pushboolean(L, 0);
        lua_rawset(L, -3);
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawseti(L, LS_CONNS, (int)c->slot + 1);
}

bool lua_conn_push_handler(lua_State *L, struct conn *c, int cached,
                           const char *name)
{
    if (!(c->user & LC_OWN_HANDLERS)) {
        lua_pushvalue(L, cached);
    } else {
        lua_rawgeti(L, LS_CONNS, (int)c->slot + 1);
        lua_pushlightuserdata(L, (void *)&handlers_key);
        lua_rawget(L, -2);
        lua_getfield(L, -1, name);
        lua_replace(L, -3);
        lua_pop(L, 1);
    }
    if (lua_isfunction(L, -1))
        return true;
    lua_pop(L, 1);
    return false;
}

void lua_conn_set_handlers(lua_State *L, struct conn *c, int obj, int idx)
{
    lua_pushlightuserdata(L, (void *)&handlers_key);
    lua_pushvalue(L, idx);
    lua_rawset(L, obj);
    c->user |= LC_OWN_HANDLERS;
}
