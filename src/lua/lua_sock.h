/* lua_sock.h - a socket's state, shared by the files of sockets
 * (lua_sock.c: reading and writing; lua_tcp.c: outbound ones and their
 * pool). */
#ifndef MR_LUA_SOCK_H
#define MR_LUA_SOCK_H

#include "lua_int.h"

enum want { W_NONE, W_BYTES, W_LINE, W_UNTIL, W_ANY, W_ALL };
enum { T_CONNECT, T_SEND, T_READ };

struct lua_sock {
    char *buf;                 /* buf[off, off + len): received, not taken */
    size_t off, len, cap;
    size_t scan;               /* a line or delimiter search goes on here */
    lua_State *reader, *writer; /* the coroutines waiting on the socket */
    lua_State *home;           /* the connection's own coroutine, while it runs */
    enum want want;
    size_t n;                  /* W_BYTES: bytes wanted; W_ANY: at most */
    char *pat;                 /* W_UNTIL: the delimiter */
    size_t patlen;
    size_t wbytes;             /* what the waiting send returns */
    uint32_t timeout_ms[3];    /* T_*; 0: none */
    uint64_t rdeadline, wdeadline; /* of the current waits, 0: none */
    struct conn *c;            /* NULL once closed */
    const char *why;           /* once closed: why, as on_close would say */
    bool timer_queued;         /* an entry is in the core's timer heap */
    uint64_t timer_due;        /* ... due then, the earliest of them */
    bool paused;               /* reading stopped: the buffer is full */
    bool eof;                  /* the peer sends no more */
    /* outbound sockets (lua_tcp.c) */
    lua_State *connecting;     /* the coroutine waiting for the connect */
    uint64_t cdeadline;        /* of the connect, 0: the core's own bound */
    char *pool_key;            /* "host:port" */
    bool pooled;               /* idle in the pool */
    unsigned reused;           /* times taken from the pool */
    char why_buf[200];         /* why points here for a TLS failure */
    struct lua_sendfile *sf;   /* send_file's job, while the writer waits on it */
};

/* The private key under which a socket's object keeps its state. */
extern const char lua_sock_key;

/* The state of the socket at argument 1; raises for anything else. */
struct lua_sock *lua_sock_check(lua_State *L);
/* nil, err */
int lua_sock_fail(lua_State *L, const char *err);
/* Resume co, which waits, with nil, err. */
void lua_sock_wake_err(struct lua_host *h, lua_State *co, const char *err);
/* Have the socket's deadline entry in the core's heap, due at `due`. */
void lua_sock_queue_timer(struct lua_host *h, struct lua_sock *s, uint64_t due);
/* Make a socket object for c, with fresh state, and leave it on L's
 * stack; conns is the index of the conns table on L. NULL (nothing
 * pushed) when out of memory. */
struct lua_sock *lua_sock_push(struct lua_host *h, lua_State *L,
                               struct conn *c, int conns);
/* Give the socket object at obj the state userdata at state. */
void lua_sock_attach(lua_State *L, int obj, int state);

/* lua_sendfile.c: sock:send_file */
int lua_sendfile(lua_State *L);
/* The output fell to the low-water mark: the job reads on. */
void lua_sendfile_drained(struct lua_sock *s);
/* The socket closed or its send timed out: the job ends without waking
 * the writer (the caller does). */
void lua_sendfile_detach(struct lua_sock *s);

/* lua_tcp.c */
void lua_tcp_register(lua_State *L, struct lua_host *h);
void lua_tcp_connected(struct lua_host *h, struct conn *c);
/* The socket's connection closed, or its connect timed out: wake what
 * waits for the connect, drop it from the pool. */
void lua_tcp_closed(struct lua_host *h, struct lua_sock *s);
void lua_tcp_timer(struct lua_host *h, struct lua_sock *s, uint64_t now);
/* What a connect that could not start says: "too many connections",
 * "shutting down"... */
const char *lua_tcp_strerror(int err);

/* The TLS state the options table at idx asks for ({ tls = true, ... },
 * as mr.tcp's), or NULL: none asked for (err ""), or it cannot be made
 * (why, in err). */
struct transport_conn *lua_tcp_tls(lua_State *L, int idx, const char *host,
                                   char *err, size_t len);
/* Connect c (from core_connect_new) to host:port, looking a name up on
 * the ring first; a failure closes c, with c->err (LC_LOOKUP when it
 * is the lookup's: a resolv.h error). */
void lua_tcp_connect_to(struct lua_host *h, struct conn *c, const char *host,
                        int port);

#endif
