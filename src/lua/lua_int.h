/* lua_int.h - what the lua_*.c files share; not for the rest of moonring. */
#ifndef MR_LUA_INT_H
#define MR_LUA_INT_H

#include "core.h"
#include "lua_host.h"
#include "lua_pool.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>

/* Fixed slots at the bottom of the main thread's stack, kept for the
 * life of the state so that the hot path never searches the registry. */
enum {
    LS_TRACEBACK = 1,  /* message handler for every pcall */
    LS_CONNS,          /* conns[slot + 1] = the Lua object of a connection */
    LS_HANDLERS,       /* the handler table or function the script returned */
    LS_ON_OPEN,        /* its handlers, cached (nil when absent) */
    LS_ON_DATA,
    LS_ON_CLOSE,
    LS_ON_DRAIN,
    LS_TIMERS,         /* timers[id] = the timer object of after()/every() */
    LS_ON_DATAGRAM,    /* the handler table's on_datagram (nil when absent) */
    LS_DGRAM_MT,       /* the metatables of a datagram's object (lua_udp.c) */
    LS_DGRAM_TRUNC_MT, /* ... and of a truncated one's */
    LS_TOP = LS_DGRAM_TRUNC_MT
};

/* Keys of the core's timers: Lua timers by id, and the binding's own. */
#define KEY_KIND(k)   ((k) >> 60)
#define KEY_SLEEP     (1ull << 60)  /* | wait id: mr.sleep */
#define KEY_SOCK      (2ull << 60)  /* | slot << 24 | gen: a socket's deadline */
#define KEY_UDP       (3ull << 60)  /* | wait id: an mr.udp receive's deadline */
#define KEY_LOW(k)    ((k) & ((1ull << 60) - 1))

struct lua_sock;

/* A module that require() loaded from the script's folder or lua/: a
 * reload re-requires it when its file changed. */
struct lua_mod_file {
    char *name;        /* module name, as given to require */
    char *path;
    char sig[64];      /* inode, size and times when loaded; "" = stale */
};

struct lua_host {
    lua_State *L;
    struct core *k;    /* NULL until attached: the script only loads */
    char *script;      /* path as given, or NULL for the built-in echo */
    char *name;        /* for logs */
    char *dirs[2];     /* the script's folder and the library: watched */
    int argc;          /* the script's arguments */
    char **argv;
    struct lua_mod_file *mods;
    size_t nmods;
    char read[512];    /* files read by the last (re)load, for the log */
    uint64_t next_timer_id;
    int worker;        /* this worker's number, from 1 */
    int workers;       /* how many the server runs (mr.workers()) */
    size_t mem;        /* bytes of Lua heap */
    lua_Alloc base_alloc; /* LuaJIT's own allocator, which host_alloc wraps */
    void *base_ud;
    struct lua_pool pool; /* small blocks freed, for the next of their size */
    size_t mem_limit;  /* --lua-memory, 0 for none */
    bool guarded;      /* a handler runs: the limit applies */
    bool closing;      /* lua_close runs: no more GC pacing */
    int gc_pause;      /* the pause lua_gc.c last set */
    struct timer_heap early; /* timers made before it is attached */
    uint64_t errors;   /* handlers that raised an error */
    uint64_t reloads;  /* reloads that took over */
    int threads_ref;   /* registry: threads[co] = what co runs for */
    int waits_ref;     /* registry: waits[id] = a thread asleep */
    uint64_t next_wait_id;
    struct lua_sock **socks; /* socks[slot]: connections run by a function */
    int pools_ref;     /* registry: pools["host:port"] = { idle socket states } */
    int dead_ref;      /* registry: the state of a socket given to the pool */
    int fs_keep_ref;   /* registry: keep[id] = what a file request reads
                          from Lua's memory while it waits (lua_fs.c) */
    char **lsn_names;  /* what conn:listener() says of each of k's listeners */
    unsigned nlsn_names;
    char **udp_names;  /* what dgram:listener() says, by datagram socket */
    unsigned nudp_names;
    const void *dgram_mt[2]; /* the dgram metatables, as lua_topointer gives them */
    bool streams, datagrams; /* the listeners it serves (lua_host_config) */
    struct shdict **shared; /* --shared dictionaries, the server's */
    int nshared;
};

/* Metatables, registered by name */
#define TIMER_MT "moonring.timer"  /* after() and every() */
#define SOCK_MT  "moonring.sock"   /* a connection run by a function */

/* Bits of conn.user */
#define LC_OWN_HANDLERS 1  /* outbound: handlers of its own, not the script's */
#define LC_SOCK         2  /* run by a connection function, as a socket */
#define LC_LOOKUP       4  /* c->err is a name lookup's (resolv_strerror) */

/* lua_conn.c */
void lua_conn_register(lua_State *L, struct lua_host *h);
void lua_conn_push_new(lua_State *L, struct conn *c, int conns);
/* The same with metatable mt (registered by name). */
void lua_conn_push_as(lua_State *L, struct conn *c, int conns, const char *mt);
/* The connection behind the object at idx: NULL once closed; raises
 * when it is no conn at all. */
struct conn *lua_conn_at(lua_State *L, int idx);
/* The object at idx no longer stands for a connection (methods say
 * "closed"). */
void lua_conn_detach(lua_State *L, int idx);
/* Add the methods a socket shares with a conn to the table on top. */
/* Send the strings at from..top on c, in order (joined first when c has
 * a transport); *total counts the bytes. Returns 0 or core_send's error. */
int lua_conn_send_args(lua_State *L, struct core *k, struct conn *c, int from,
                       size_t *total);

/* Name k's listeners for conn:listener(), once they are set up. */
void lua_conn_name_listeners(struct lua_host *h);

void lua_conn_add_shared(lua_State *L, struct lua_host *h);
void lua_conn_invalidate(lua_State *L, struct conn *c);
/* Push handler `name` of c (its own table for an outbound connection,
 * else the cached one in stack slot `cached`); false, nothing pushed,
 * when there is no such function. */
bool lua_conn_push_handler(lua_State *L, struct conn *c, int cached,
                           const char *name);
/* Set the handler table at stack index idx as c's own (outbound
 * connections); obj is the stack index of c's object. */
void lua_conn_set_handlers(lua_State *L, struct conn *c, int obj, int idx);

/* lua_co.c: the coroutines moonring runs */
void lua_co_register(lua_State *L, struct lua_host *h);
/* Run the function below nargs arguments on L's stack in a new
 * coroutine, for `owner` (the value at stack index owner: a socket, a
 * spawned thread's object, or true), until its first wait. Pops the
 * function and its arguments. */
void lua_co_start(struct lua_host *h, lua_State *L, int nargs, int owner);
/* The same, without running it yet: resume it with nargs. */
lua_State *lua_co_new(struct lua_host *h, lua_State *L, int nargs, int owner);
/* Resume co, which waits, with the nargs values on top of its stack. */
void lua_co_resume(struct lua_host *h, lua_State *co, int nargs);
/* Raise, saying why and what to do, unless L is a coroutine moonring
 * runs (calls that wait work only there). */
void lua_co_check(lua_State *L, struct lua_host *h, const char *what);
/* A sleep's timer fired. */
void lua_co_wake(struct lua_host *h, uint64_t id);
/* The worker runs: start what mr.spawn was given at load time. */
void lua_co_run_pending(struct lua_host *h);

/* lua_sock.c: connections run by a function, as sockets */
void lua_sock_register(lua_State *L, struct lua_host *h);
void lua_sock_open(struct lua_host *h, struct conn *c);
void lua_sock_data(struct lua_host *h, struct conn *c, const char *p, size_t n);
void lua_sock_drained(struct lua_host *h, struct conn *c);
void lua_sock_closed(struct lua_host *h, struct conn *c);
/* The peer sends no more; the socket may still send. */
void lua_sock_eof(struct lua_host *h, struct conn *c);
void lua_sock_timer(struct lua_host *h, uint64_t low);
/* A connection's function returned or raised: close it. */
/* err: the error and its traceback, or NULL when it returned */
void lua_sock_done(struct lua_host *h, lua_State *L, int obj, const char *err);

/* lua_udp.c: datagrams, for on_datagram and mr.udp */
void lua_udp_register(lua_State *L, struct lua_host *h);
void lua_udp_name_listeners(struct lua_host *h);
void lua_udp_event(void *ctx, struct core_udp *u, const struct sockaddr *peer,
                   socklen_t plen, const char *p, size_t n, unsigned flags);
void lua_udp_timer(struct lua_host *h, uint64_t id);

/* lua_gc.c: collect small heaps rarely, large ones as LuaJIT would */
void lua_gc_pace(lua_State *L, struct lua_host *h);

/* lua_script.c: load and run the script, leaving a checked handler
 * table on the stack; 0, or -1 with one line in err */
int lua_script_load(struct lua_host *h, char *err, size_t len);
/* Make the handler table at idx the live one, caching its functions. */
void lua_script_install(lua_State *L, int idx);
/* lua_pcall with the Lua memory limit in force and LS_TRACEBACK as the
 * message handler. */
int lua_script_pcall(struct lua_host *h, int nargs, int nres);
/* The message handler: the error plus a stack traceback. */
int lua_script_traceback(lua_State *L);

/* lua_reload.c (which also gives lua_host.h's reload functions) */
void lua_reload_register(lua_State *L, struct lua_host *h);
void lua_reload_free(struct lua_host *h);

/* lua_shared.c: mr.shared, into the module table on top */
void lua_shared_register(lua_State *L, struct lua_host *h);
/* Their counters as field "shared" of the table on top. */
void lua_shared_stats(lua_State *L, struct lua_host *h);

/* lua_mod.c: the `moonring` module */
void lua_mod_register(lua_State *L, struct lua_host *h);

/* C functions registered by lua_conn.c and lua_mod.c carry their
 * struct lua_host as upvalue 1: cheaper than a registry lookup. */
#define HOST(L) ((struct lua_host *)lua_touserdata((L), lua_upvalueindex(1)))

extern const char mr_echo_lua[];
extern const unsigned mr_echo_lua_len;

#endif
