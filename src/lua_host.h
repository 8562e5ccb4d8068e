/* lua_host.h - the Lua side of a worker: the script and its handlers.
 * The worker calls these when connections open, receive and close. */
#ifndef MR_LUA_HOST_H
#define MR_LUA_HOST_H

#include "cli.h"
#include "conn.h"

#include <stdbool.h>
#include <stddef.h>

struct lua_host;
struct worker;

/* Create a Lua state for worker number `worker` (from 1), load the script (or the built-in echo) and check
 * that it returns a handler table with on_data. On failure returns NULL
 * with one line in err, naming the file and line where possible. */
struct lua_host *lua_host_new(const struct cli_opts *o, int worker, char *err,
                              size_t errlen);
void lua_host_free(struct lua_host *h);

/* The name the script is known by in logs ("echo" for the built-in). */
const char *lua_host_script_name(const struct lua_host *h);

void lua_host_attach(struct lua_host *h, struct worker *w);

/* A connection opened: make its Lua object and call on_open. */
void lua_host_open(struct lua_host *h, struct conn *c);
/* Bytes arrived on an open connection: call on_data. */
void lua_host_data(struct lua_host *h, struct conn *c, const char *p, size_t n);
/* Output fell below the low-water mark: call on_drain. */
void lua_host_drain(struct lua_host *h, struct conn *c);
/* Timer id, due at `due`, fired: call its function (and schedule the
 * next round of an every() timer); false if it was cancelled. */
bool lua_host_timer(struct lua_host *h, uint64_t id, uint64_t due);
/* The connection is closing: call on_close, then invalidate its object. */
void lua_host_close(struct lua_host *h, struct conn *c);

/* Reload the script (see lua_reload.c). Returns 0, or -1 with one line
 * in err and the running handlers untouched. */
int lua_host_reload(struct lua_host *h, char *err, size_t len);

/* Call fn for the script and every module a reload depends on. */
void lua_host_each_file(struct lua_host *h, void (*fn)(void *, const char *),
                        void *ctx);

/* The files the last (re)load read, comma-separated, for the log. */
const char *lua_host_files_read(const struct lua_host *h);

/* Bytes of Lua heap in use. */
size_t lua_host_mem(struct lua_host *h);

#endif
