/* lua_sock.c - connections run by a function.
 *
 * A script may return function(sock) instead of a handler table: each
 * connection then runs it in a coroutine of its own, and reads and writes
 * from top to bottom. sock:receive(...) returns what it asked for from
 * the bytes received so far, or waits (yields) until they have come;
 * sock:send(...) waits while the output is above the high-water mark.
 * The data event resumes a waiting reader as soon as its wait is met, so
 * a loop of receive_any and send costs one resume per message.
 *
 * Received bytes that no call has taken yet wait in one buffer per
 * socket, which only ever moves what is left when it needs room: reading
 * a message of n bytes costs O(n), and a line or delimiter search goes on
 * from where the last one stopped. The buffer is bounded by the
 * high-water mark (or by the count a receive(n) asks for): past it the
 * socket stops reading until the function takes the bytes.
 *
 * The socket's state is a userdata kept in its Lua object, so that what
 * was received before the peer closed can still be read afterwards. */
#include "lua_sock.h"
#include "tls.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

const char lua_sock_key = 0; /* private key of the state in the object */

/* The state of the socket at argument 1 (its connection is s->c, NULL
 * once closed): one lookup, on the path of every call. */
struct lua_sock *lua_sock_check(lua_State *L)
{
    struct lua_sock *s = NULL;
    if (lua_istable(L, 1)) {
        lua_pushlightuserdata(L, (void *)&lua_sock_key);
        lua_rawget(L, 1);
        s = lua_touserdata(L, -1);
        lua_pop(L, 1);
    }
    if (!s)
        luaL_argerror(L, 1, "socket expected (a conn has no receive)");
    return s;
}

static size_t limit(struct lua_host *h) { return h->k->conns.high_water; }

void lua_sock_wake_err(struct lua_host *h, lua_State *co, const char *err)
{
    lua_pushnil(co);
    lua_pushstring(co, err);
    lua_co_resume(h, co, 2);
}

int lua_sock_fail(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* Room for n more bytes at the end of the buffer: move what is left to
 * the front when that frees enough, else grow. */
static int reserve(struct lua_sock *s, size_t n)
{
    if (s->off + s->len + n <= s->cap)
        return 0;
    if (s->off && s->len + n <= s->cap) {
        memmove(s->buf, s->buf + s->off, s->len);
        s->off = 0;
        return 0;
    }
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + n)
        cap *= 2;
    char *b = malloc(cap);
    if (!b)
        return -1;
    if (s->len)
        memcpy(b, s->buf + s->off, s->len);
    free(s->buf);
    s->buf = b;
    s->cap = cap;
    s->off = 0;
    return 0;
}

/* Push the first n buffered bytes onto L and drop them and `skip` more. */
static void take(struct lua_host *h, struct lua_sock *s, lua_State *L,
                 size_t n, size_t skip)
{
    lua_pushlstring(L, s->buf + s->off, n);
    s->off += n + skip;
    s->len -= n + skip;
    s->scan = 0;
    if (!s->len)
        s->off = 0;
    if (s->paused && s->c && s->len < limit(h) / 2) {
        s->paused = false;
        core_resume(h->k, s->c);
    }
}

/* Is the reader's wait met by what is buffered? Push its results onto L
 * and return their count, or 0 (or -1: the buffer is full, which pauses
 * reading, and holds no end of line or delimiter). */
static int satisfy(struct lua_host *h, struct lua_sock *s, lua_State *L)
{
    const char *p = s->buf + s->off;
    switch (s->want) {
    case W_ANY:
        if (!s->len)
            return 0;
        take(h, s, L, s->len < s->n ? s->len : s->n, 0);
        return 1;
    case W_BYTES:
        if (s->len < s->n)
            return 0;
        take(h, s, L, s->n, 0);
        return 1;
    case W_LINE: {
        const char *nl = s->len > s->scan ? memchr(p + s->scan, '\n', s->len - s->scan) : NULL;
        if (!nl) {
            s->scan = s->len;
            return s->len >= limit(h) ? -1 : 0; /* full: reading paused */
        }
        size_t n = (size_t)(nl - p);
        size_t cr = n && p[n - 1] == '\r';
        take(h, s, L, n - cr, 1 + cr);
        return 1;
    }
    case W_UNTIL: {
        size_t from = s->scan >= s->patlen ? s->scan - s->patlen + 1 : 0;
        const char *at = s->len > from ? memmem(p + from, s->len - from, s->pat, s->patlen) : NULL;
        if (!at) {
            s->scan = s->len;
            return s->len >= limit(h) ? -1 : 0; /* full: reading paused */
        }
        take(h, s, L, (size_t)(at - p), s->patlen);
        return 1;
    }
    case W_ALL:
    case W_NONE:
        break;
    }
    return 0;
}

/* Nothing more will come: closed, or the peer has shut down its side
 * and the core holds no bytes of it for a resume. */
static bool ended(const struct lua_sock *s)
{
    return s->why || (s->eof && !(s->c && s->c->held_len));
}

/* The socket has closed: what a read that waits gets now. "*a" gets all
 * that came; the others nil, the reason, and the partial bytes. */
static int closed_result(struct lua_host *h, struct lua_sock *s, lua_State *L)
{
    if (s->want == W_ALL) {
        take(h, s, L, s->len, 0);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, s->why ? s->why : "closed");
    take(h, s, L, s->len, 0);
    return 3;
}

/* One entry in the heap serves every deadline of the socket: it is due
 * at the earliest, and looks for the next when it fires. A deadline
 * earlier than the queued entry (a read timeout shortened after a long
 * one) gets an entry of its own; the later one then fires for nothing. */
void lua_sock_queue_timer(struct lua_host *h, struct lua_sock *s, uint64_t due)
{
    if (!s->c || (s->timer_queued && s->timer_due <= due))
        return;
    uint64_t key = KEY_SOCK | (uint64_t)s->c->slot << 24 | (s->c->gen & 0xffffff);
    if (core_timer_add(h->k, due, key) == 0) {
        s->timer_queued = true;
        s->timer_due = due;
    }
}

/* Stop reading while the buffer holds what it may hold, unless the
 * waiting read needs more. */
static void check_room(struct lua_host *h, struct lua_sock *s)
{
    size_t max = limit(h);
    if (s->reader && s->want == W_BYTES && s->n > max)
        max = s->n;
    if (s->reader && s->want == W_ALL)
        max = SIZE_MAX;
    if (!s->paused && s->c && s->len >= max) {
        s->paused = true;
        core_pause(h->k, s->c);
    } else if (s->paused && s->c && s->len < max) {
        s->paused = false;
        core_resume(h->k, s->c);
    }
}

/* Wake the reader with the nres values on its stack. */
static void wake_reader(struct lua_host *h, struct lua_sock *s, int nres)
{
    lua_State *co = s->reader;
    s->reader = NULL;
    s->want = W_NONE;
    s->rdeadline = 0;
    lua_co_resume(h, co, nres);
}

/* The reader waits; see whether the buffer (or the close) ends the wait. */
static void try_reader(struct lua_host *h, struct lua_sock *s)
{
    if (!s->reader)
        return;
    int r = satisfy(h, s, s->reader);
    if (r < 0) {
        lua_pushnil(s->reader);
        lua_pushliteral(s->reader, "line too long");
        r = 2;
    } else if (!r && ended(s)) {
        r = closed_result(h, s, s->reader);
    }
    if (r)
        wake_reader(h, s, r);
    else
        check_room(h, s);
}

/* The wait of receive's pattern (argument 2) into s; 0, or raises. */
static void parse_receive(lua_State *L, struct lua_sock *s)
{
    enum want want = W_LINE;
    size_t n = 0;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Number v = lua_tonumber(L, 2);
        if (!(v >= 0 && v <= (lua_Number)(1ull << 40)))
            luaL_argerror(L, 2, "a count of bytes expected");
        want = W_BYTES;
        n = (size_t)v;
    } else {
        const char *pat = luaL_optstring(L, 2, "*l");
        if (pat[0] == '*')
            pat++;
        if (strcmp(pat, "l") == 0)
            want = W_LINE;
        else if (strcmp(pat, "a") == 0)
            want = W_ALL;
        else
            luaL_argerror(L, 2, "\"*l\", \"*a\" or a number expected");
    }
    s->want = want;
    s->n = n;
}

/* The part of every receive that waits: the wait is set up in s. */
static int receive_wait(lua_State *L, struct lua_sock *s, const char *what)
{
    struct lua_host *h = HOST(L);
    int r = satisfy(h, s, L);
    if (r < 0) { /* reading stays stopped: the bytes cannot be framed */
        s->want = W_NONE;
        return lua_sock_fail(L, "line too long");
    }
    if (!r && ended(s))
        r = closed_result(h, s, L);
    if (r) {
        s->want = W_NONE;
        return r;
    }
    if (L != s->home)
        lua_co_check(L, h, what);
    /* room for all of a big receive(n) at once, not by doublings */
    if (s->want == W_BYTES && reserve(s, s->n - s->len))
        return lua_sock_fail(L, "out of memory");
    s->reader = L;
    if (s->timeout_ms[T_READ]) {
        s->rdeadline = timer_now() + (uint64_t)s->timeout_ms[T_READ] * 1000000;
        lua_sock_queue_timer(h, s, s->rdeadline);
    }
    check_room(h, s);
    return lua_yield(L, 0);
}

/* sock:receive(pattern): a number of bytes, "*l" (a line, without its
 * "\n" or "\r\n"; the default) or "*a" (everything until the peer
 * closes). */
static int l_receive(lua_State *L)
{
    struct lua_sock *s = lua_sock_check(L);
    if (s->reader)
        return lua_sock_fail(L, "socket busy reading");
    parse_receive(L, s);
    return receive_wait(L, s, "sock:receive");
}

/* sock:receive_any(max): whatever has arrived, at most max bytes. */
static int l_receive_any(lua_State *L)
{
    struct lua_sock *s = lua_sock_check(L);
    lua_Number v = luaL_checknumber(L, 2);
    if (!(v >= 1 && v <= (lua_Number)(1ull << 40)))
        return luaL_argerror(L, 2, "a positive count of bytes expected");
    if (s->reader)
        return lua_sock_fail(L, "socket busy reading");
    s->want = W_ANY;
    s->n = (size_t)v;
    return receive_wait(L, s, "sock:receive_any");
}

/* sock:receive_until(delim): the bytes before delim, which is dropped. */
static int l_receive_until(lua_State *L)
{
    struct lua_sock *s = lua_sock_check(L);
    size_t len;
    const char *pat = luaL_checklstring(L, 2, &len);
    if (!len)
        return luaL_argerror(L, 2, "a non-empty delimiter expected");
    if (s->reader)
        return lua_sock_fail(L, "socket busy reading");
    if (len != s->patlen || !s->pat || memcmp(pat, s->pat, len)) {
        char *copy = malloc(len);
        if (!copy)
            return lua_sock_fail(L, "out of memory");
        memcpy(copy, pat, len);
        free(s->pat);
        s->pat = copy;
        s->patlen = len;
        s->scan = 0; /* a new delimiter: search again */
    }
    s->want = W_UNTIL;
    return receive_wait(L, s, "sock:receive_until");
}

/* sock:send(...): queue the strings; returns the bytes queued, after
 * waiting while the output is above the high-water mark. */
static int l_send(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lua_sock *s = lua_sock_check(L);
    int top = lua_gettop(L);
    for (int i = 2; i <= top; i++)
        if (!lua_isstring(L, i))
            luaL_argerror(L, i, lua_pushfstring(L, "string expected, got %s",
                                                luaL_typename(L, i)));
    struct conn *c = s->c;
    if (!c || (c->state != CONN_OPEN && c->state != CONN_CONNECTING))
        return lua_sock_fail(L, "closed");
    if (s->writer)
        return lua_sock_fail(L, "socket busy writing");
    size_t total;
    if (lua_conn_send_args(L, h->k, c, 2, &total))
        return lua_sock_fail(L, "out of memory");
    if (!(c->flags & CF_HWM)) {
        lua_pushnumber(L, (lua_Number)total);
        return 1;
    }
    if (L != s->home)
        lua_co_check(L, h, "sock:send");
    s->writer = L;
    s->wbytes = total;
    if (s->timeout_ms[T_SEND]) {
        s->wdeadline = timer_now() + (uint64_t)s->timeout_ms[T_SEND] * 1000000;
        lua_sock_queue_timer(h, s, s->wdeadline);
    }
    return lua_yield(L, 0);
}

static uint32_t to_ms(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    lua_Number sec = luaL_checknumber(L, idx);
    if (!(sec >= 0 && sec <= 86400.0 * 365))
        luaL_argerror(L, idx, "seconds between 0 and a year expected");
    uint32_t ms = (uint32_t)(sec * 1000 + 0.5);
    return sec > 0 && !ms ? 1 : ms;
}

/* sock:settimeouts(connect, send, read): seconds each, nil for none. A
 * read that times out returns nil, "timeout" and leaves the socket as it
 * was; a send that times out closes it. */
static int l_settimeouts(lua_State *L)
{
    struct lua_sock *s = lua_sock_check(L);
    for (int i = 0; i < 3; i++)
        s->timeout_ms[i] = to_ms(L, i + 2);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_gc(lua_State *L)
{
    struct lua_sock *s = lua_touserdata(L, 1);
    free(s->buf);
    free(s->pat);
    free(s->pool_key);
    s->buf = s->pat = s->pool_key = NULL;
    return 0;
}

static const luaL_Reg methods[] = {
    { "receive", l_receive },
    { "receive_any", l_receive_any },
    { "receive_until", l_receive_until },
    { "send", l_send },
    { "send_file", lua_sendfile },
    { "settimeouts", l_settimeouts },
    { NULL, NULL },
};

#define STATE_MT "moonring.sock_state"

void lua_sock_register(lua_State *L, struct lua_host *h)
{
    luaL_newmetatable(L, STATE_MT);
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    luaL_newmetatable(L, SOCK_MT);
    lua_newtable(L);
    lua_conn_add_shared(L, h);
    lua_pushlightuserdata(L, h);
    luaL_openlib(L, NULL, methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "sock");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

void lua_sock_attach(lua_State *L, int obj, int state)
{
    lua_pushlightuserdata(L, (void *)&lua_sock_key);
    lua_pushvalue(L, state);
    lua_rawset(L, obj);
}

struct lua_sock *lua_sock_push(struct lua_host *h, lua_State *L,
                               struct conn *c, int conns)
{
    if (!h->socks && !(h->socks = calloc(h->k->conns.max, sizeof *h->socks)))
        return NULL;
    lua_conn_push_as(L, c, conns, SOCK_MT);
    int obj = lua_gettop(L);
    struct lua_sock *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    luaL_getmetatable(L, STATE_MT);
    lua_setmetatable(L, -2);
    lua_sock_attach(L, obj, obj + 1);
    lua_pop(L, 1);
    s->c = c;
    h->socks[c->slot] = s;
    c->user |= LC_SOCK;
    return s;
}

/* A connection opened for the script's function: make its socket and
 * run the function in a coroutine of its own. */
void lua_sock_open(struct lua_host *h, struct conn *c)
{
    lua_State *L = h->L;
    struct lua_sock *s = lua_sock_push(h, L, c, LS_CONNS);
    if (!s) {
        core_close(h->k, c, REASON_ERROR, true);
        return;
    }
    int obj = lua_gettop(L);
    lua_pushvalue(L, LS_HANDLERS);
    lua_pushvalue(L, obj);
    s->home = lua_co_new(h, L, 1, obj);
    lua_co_resume(h, s->home, 1);
    lua_settop(L, LS_TOP);
}

void lua_sock_data(struct lua_host *h, struct conn *c, const char *p, size_t n)
{
    struct lua_sock *s = h->socks[c->slot];
    if (s->pooled) { /* nobody asked: the connection cannot be trusted */
        core_close(h->k, c, REASON_ERROR, true);
        return;
    }
    if (s->reader && s->want == W_ANY && !s->len && n <= s->n) {
        lua_pushlstring(s->reader, p, n); /* the usual case: no copy kept */
        wake_reader(h, s, 1);
        return;
    }
    if (reserve(s, n)) {
        core_close(h->k, c, REASON_ERROR, true);
        return;
    }
    memcpy(s->buf + s->off + s->len, p, n);
    s->len += n;
    if (s->reader)
        try_reader(h, s);
    else
        check_room(h, s);
}

void lua_sock_drained(struct lua_host *h, struct conn *c)
{
    struct lua_sock *s = h->socks[c->slot];
    if (s->sf) {
        lua_sendfile_drained(s);
        return;
    }
    if (!s->writer)
        return;
    lua_State *co = s->writer;
    s->writer = NULL;
    s->wdeadline = 0;
    lua_pushnumber(co, (lua_Number)s->wbytes);
    lua_co_resume(h, co, 1);
}

void lua_sock_closed(struct lua_host *h, struct conn *c)
{
    struct lua_sock *s = h->socks[c->slot];
    h->socks[c->slot] = NULL;
    s->c = NULL;
    s->why = conn_reason_name((enum conn_reason)c->reason);
    const char *tls_why = tls_error(c);
    if (tls_why) {
        snprintf(s->why_buf, sizeof s->why_buf, "%s", tls_why);
        s->why = s->why_buf;
    } else if (c->reason == REASON_ERROR && c->err)
        s->why = strerror(-c->err);
    else if (c->reason == REASON_EOF || c->reason == REASON_CLOSED)
        s->why = "closed";
    lua_sendfile_detach(s);
    if (s->writer) {
        lua_State *co = s->writer;
        s->writer = NULL;
        lua_sock_wake_err(h, co, s->why);
    }
    lua_tcp_closed(h, s);
    try_reader(h, s);
}

void lua_sock_eof(struct lua_host *h, struct conn *c)
{
    struct lua_sock *s = h->socks[c->slot];
    s->eof = true;
    if (s->pooled) {
        core_close(h->k, c, REASON_EOF, false);
        return;
    }
    try_reader(h, s);
}

/* The socket's deadline entry is due: end the waits whose time is up,
 * and look again at the next deadline. */
void lua_sock_timer(struct lua_host *h, uint64_t low)
{
    struct conn *c = conn_get(&h->k->conns, (uint32_t)(low >> 24),
                              (uint32_t)(low & 0xffffff));
    struct lua_sock *s = c && h->socks ? h->socks[c->slot] : NULL;
    if (!s)
        return;
    uint64_t now = h->k->now;
    if (s->timer_queued && now >= s->timer_due)
        s->timer_queued = false; /* else an earlier entry is still queued */
    lua_tcp_timer(h, s, now);
    if (s->reader && s->rdeadline && now >= s->rdeadline) {
        lua_pushnil(s->reader);
        lua_pushliteral(s->reader, "timeout");
        wake_reader(h, s, 2); /* the socket stays as it was */
    }
    if (s->writer && s->wdeadline && now >= s->wdeadline) {
        lua_State *co = s->writer;
        s->writer = NULL;
        s->wdeadline = 0;
        lua_sendfile_detach(s);
        core_close(h->k, c, REASON_TIMEOUT, true);
        lua_sock_wake_err(h, co, "timeout");
    }
    uint64_t next = s->connecting ? s->cdeadline : 0;
    if (s->reader && s->rdeadline && (!next || s->rdeadline < next))
        next = s->rdeadline;
    if (s->writer && s->wdeadline && (!next || s->wdeadline < next))
        next = s->wdeadline;
    if (next && h->socks[c->slot] == s)
        lua_sock_queue_timer(h, s, next);
}

/* The connection's function returned (close once the output is sent)
 * or raised (logged; close at once). obj is its socket on L. */
void lua_sock_done(struct lua_host *h, lua_State *L, int obj, const char *err)
{
    if (!lua_istable(L, obj))
        return;
    struct conn *c = lua_conn_at(L, obj);
    lua_pushlightuserdata(L, (void *)&lua_sock_key);
    lua_rawget(L, obj);
    struct lua_sock *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (s)
        s->home = NULL; /* its address may go to another coroutine */
    if (err)
        log_error("connection function failed (connection %llu): %s",
                  c ? (unsigned long long)c->id : 0ull, err);
    if (c && (c->state == CONN_OPEN || c->state == CONN_CONNECTING))
        core_close(h->k, c, err ? REASON_ERROR : REASON_CLOSED, err != NULL);
}
