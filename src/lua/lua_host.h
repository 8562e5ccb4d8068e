/* lua_host.h - the Lua binding: a worker's Lua state, the script, and
 * the core's events turned into calls of its handlers. */
#ifndef MR_LUA_HOST_H
#define MR_LUA_HOST_H

#include "core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lua_host;
struct shdict;

struct lua_host_config {
    const char *script;        /* path; NULL for the built-in echo */
    int argc;                  /* the script's arguments */
    char **argv;
    unsigned memory_mib;       /* Lua heap limit while handlers run; 0: none */
    int worker;                /* this worker's number, from 1 */
    int workers;               /* how many the server runs */
    /* the listeners it serves: a stream one needs on_data (or a
     * function), a udp:// one on_datagram */
    bool streams, datagrams;
    struct shdict *const *shared; /* --shared dictionaries: mr.shared.NAME */
    int nshared;
};

struct lua_host_stats {
    uint64_t errors;           /* handlers that raised an error */
    uint64_t reloads;          /* reloads that took over */
    size_t mem;                /* bytes of Lua heap in use */
};

/* Create a Lua state, load the script (or the built-in echo) and check
 * that it returns a handler table with on_data. On failure returns NULL
 * with one line in err, naming the file and line where possible. */
struct lua_host *lua_host_new(const struct lua_host_config *cfg, char *err,
                              size_t errlen);
void lua_host_free(struct lua_host *h);

/* The name the script is known by in logs ("echo" for the built-in). */
const char *lua_host_script_name(const struct lua_host *h);

/* Take k's events: from now on its connections and timers run the
 * script's handlers, and the script's calls go to k. */
void lua_host_attach(struct lua_host *h, struct core *k);

/* Reload the script (see lua_reload.c). Returns 0, or -1 with one line
 * in err and the running handlers untouched. Only between two turns of
 * the core, when no handler is on the stack. */
int lua_host_reload(struct lua_host *h, char *err, size_t len);

/* Call fn for the script and every module a reload depends on. */
void lua_host_each_file(struct lua_host *h, void (*fn)(void *, const char *),
                        void *ctx);

/* The files the last (re)load read, comma-separated, for the log. */
const char *lua_host_files_read(const struct lua_host *h);

void lua_host_stats(const struct lua_host *h, struct lua_host_stats *out);

#endif
