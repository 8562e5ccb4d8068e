/* lua_int.h - what the lua_*.c files share; not for the rest of moonring. */
#ifndef MR_LUA_INT_H
#define MR_LUA_INT_H

#include "worker.h"

#include <lauxlib.h>
#include <lua.h>

/* Fixed slots at the bottom of the main thread's stack, kept for the
 * life of the state so that the hot path never searches the registry. */
enum {
    LS_TRACEBACK = 1,  /* message handler for every pcall */
    LS_CONNS,          /* conns[slot + 1] = the Lua object of a connection */
    LS_HANDLERS,       /* the handler table the script returned */
    LS_ON_OPEN,        /* its handlers, cached (nil when absent) */
    LS_ON_DATA,
    LS_ON_CLOSE,
    LS_TOP = LS_ON_CLOSE
};

struct lua_host {
    lua_State *L;
    struct worker *w;
    char *script;      /* path as given, or NULL for the built-in echo */
    char *name;        /* for logs */
};

/* lua_conn.c */
void lua_conn_register(lua_State *L, struct lua_host *h);
void lua_conn_push_new(lua_State *L, struct conn *c);
void lua_conn_invalidate(lua_State *L, struct conn *c);

/* lua_mod.c: the `moonring` module */
void lua_mod_register(lua_State *L, struct lua_host *h);

/* C functions registered by lua_conn.c and lua_mod.c carry their
 * struct lua_host as upvalue 1: cheaper than a registry lookup. */
#define HOST(L) ((struct lua_host *)lua_touserdata((L), lua_upvalueindex(1)))

extern const char mr_echo_lua[];
extern const unsigned mr_echo_lua_len;

#endif
