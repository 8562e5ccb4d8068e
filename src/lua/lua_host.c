/* lua_host.c - a worker's Lua state: its allocator, where require
 * looks, the script's arguments, and the parts of the binding set up
 * around the script. */
#include "log.h"
#include "lua_int.h"

#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef MR_LUADIR
#define MR_LUADIR "/usr/local/share/moonring/lua"
#endif

/* The Lua heap's allocator: accounting around LuaJIT's own allocator.
 * Past --lua-memory it refuses to grow while a handler runs: the "not
 * enough memory" error ends that handler like any other error. Outside
 * handlers (C pushing a callback's arguments, where an error could not be
 * caught) it lets the heap go on, by at most what one callback's
 * arguments take.
 * LuaJIT's allocator beats glibc's malloc here: a collection frees
 * thousands of objects at once, glibc's per-thread cache holds 7 of a
 * size, and most allocations then took malloc's slow paths (a quarter of
 * the CPU of pipelined Redis SETs, perf).
 * Blocks of up to LUA_POOL_MAX_SIZE bytes are kept on free lists by exact
 * size (at most LUA_POOL_MAX_BYTES in all) and handed out again for the
 * same size: a handler's garbage is mostly blocks of a few sizes (the
 * data string, a dgram), which a sweep frees and the next requests
 * allocate again. A list's push or pop is a tenth of the instructions
 * of LuaJIT's malloc or free (callgrind, UDP echo). The accounting, and
 * so --lua-memory, is as before: a kept block counts as free. */
static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lua_host *h = ud;
    if (nsize == 0) {
        if (!ptr)
            return NULL;
        h->mem -= osize;
        if (lua_pool_put(&h->pool, ptr, osize))
            return NULL;
        return h->base_alloc(h->base_ud, ptr, osize, 0);
    }
    if (h->guarded && h->mem_limit && nsize > osize &&
        h->mem - osize + nsize > h->mem_limit)
        return NULL;
    void *p = ptr ? NULL : lua_pool_get(&h->pool, nsize);
    if (!p)
        p = h->base_alloc(h->base_ud, ptr, osize, nsize);
    if (p)
        h->mem = h->mem - osize + nsize;
    return p;
}

/* The blocks the pool kept, back to LuaJIT's allocator (after lua_close:
 * with an allocator of ours set, LuaJIT leaves its own standing). */
static void pool_drain(struct lua_host *h)
{
    for (size_t n = 0; n <= LUA_POOL_MAX_SIZE; n++) {
        void *b;
        while ((b = lua_pool_get(&h->pool, n)))
            h->base_alloc(h->base_ud, b, n, 0);
    }
}

static int panic(lua_State *L)
{
    log_error("Lua panic: %s", lua_tostring(L, -1));
    abort();
}

/* The folder holding the Lua library: lua/ next to the binary in a build
 * tree, else ../share/moonring/lua from it (an installed tree, wherever
 * its prefix), else the prefix the binary was built for. */
static void lua_dir(char *out, size_t len)
{
    static const char *const rel[] = { "lua", "../share/moonring/lua" };
    char exe[3072];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = n > 0 ? (exe[n] = 0, strrchr(exe, '/')) : NULL;
    if (slash) {
        *slash = 0;
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
            char probe[4200];
            snprintf(out, len, "%s/%s", exe, rel[i]);
            snprintf(probe, sizeof probe, "%s/echo.lua", out);
            if (access(probe, R_OK) == 0)
                return;
        }
    }
    snprintf(out, len, "%s", MR_LUADIR);
}

/* require finds modules next to the script, then in the library. */
static void set_path(struct lua_host *h, lua_State *L, const char *script)
{
    char dir[4096], lib[4096 + 16];
    const char *slash = script ? strrchr(script, '/') : NULL;
    if (slash)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - script), script);
    else
        snprintf(dir, sizeof dir, ".");
    lua_dir(lib, sizeof lib);
    h->dirs[0] = strdup(dir);
    h->dirs[1] = strdup(lib);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua;%s",
                    dir, dir, lib, lib, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

/* arg[0] = script, arg[1..n] = its arguments, arg[-1] = "moonring" */
static void set_arg(lua_State *L, const struct lua_host_config *cfg)
{
    lua_createtable(L, cfg->argc, 2);
    lua_pushstring(L, "moonring");
    lua_rawseti(L, -2, -1);
    lua_pushstring(L, cfg->script ? cfg->script : "echo");
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < cfg->argc; i++) {
        lua_pushstring(L, cfg->argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
}

struct lua_host *lua_host_new(const struct lua_host_config *cfg, char *err,
                              size_t len)
{
    struct lua_host *h = calloc(1, sizeof *h);
    if (h)
        h->mem_limit = (size_t)cfg->memory_mib << 20;
    if (!h || !(h->L = luaL_newstate())) {
        snprintf(err, len, "cannot create a Lua state: out of memory");
        free(h);
        return NULL;
    }
    lua_State *L = h->L;
    h->base_alloc = lua_getallocf(L, &h->base_ud);
    h->mem = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, host_alloc, h);
    lua_atpanic(L, panic);
    h->script = cfg->script ? strdup(cfg->script) : NULL;
    h->name = strdup(cfg->script ? cfg->script : "echo (built-in)");
    h->next_timer_id = 1;
    h->worker = cfg->worker;
    h->workers = cfg->workers > 0 ? cfg->workers : 1;
    h->streams = cfg->streams;
    h->datagrams = cfg->datagrams;
    if (cfg->nshared && (h->shared = calloc((size_t)cfg->nshared, sizeof *h->shared)))
        for (int i = 0; i < cfg->nshared; i++)
            h->shared[h->nshared++] = cfg->shared[i];
    luaL_openlibs(L);
    lua_pushcfunction(L, lua_script_traceback); /* LS_TRACEBACK */
    lua_newtable(L);                   /* LS_CONNS */
    lua_settop(L, LS_TIMERS - 1);      /* handlers: nil until loaded */
    lua_newtable(L);                   /* LS_TIMERS */
    lua_settop(L, LS_TOP);             /* on_datagram, the dgram metatables */

    set_path(h, L, h->script);
    set_arg(L, cfg);
    lua_conn_register(L, h);
    lua_sock_register(L, h);
    lua_mod_register(L, h);
    h->argc = cfg->argc;
    h->argv = cfg->argv;
    lua_reload_register(L, h);
    lua_gc_pace(L, h);
    if (lua_script_load(h, err, len)) {
        lua_host_free(h);
        return NULL;
    }
    lua_script_install(L, -1);
    lua_settop(L, LS_TOP);
    return h;
}

void lua_host_free(struct lua_host *h)
{
    if (!h)
        return;
    h->closing = true;
    if (h->L) {
        lua_close(h->L);
        pool_drain(h);
    }
    lua_reload_free(h);
    timer_heap_free(&h->early);
    free(h->socks);
    for (unsigned i = 0; i < h->nlsn_names; i++)
        free(h->lsn_names[i]);
    free(h->lsn_names);
    for (unsigned i = 0; i < h->nudp_names; i++)
        free(h->udp_names[i]);
    free(h->udp_names);
    free(h->shared);
    free(h->script);
    free(h->name);
    free(h->dirs[0]);
    free(h->dirs[1]);
    free(h);
}

const char *lua_host_script_name(const struct lua_host *h) { return h->name; }

void lua_host_stats(const struct lua_host *h, struct lua_host_stats *out)
{
    out->errors = h->errors;
    out->reloads = h->reloads;
    out->mem = h->mem;
}
