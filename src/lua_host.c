/* lua_host.c - the worker's Lua state: load the script, call handlers.
 * Every call into Lua is protected, with a traceback handler; an error
 * is logged with the script's file and line and closes that connection
 * only. */
#include "lua_host.h"
#include "log.h"
#include "lua_int.h"

#include <errno.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
 * the CPU of pipelined Redis SETs, perf). */
static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lua_host *h = ud;
    if (nsize == 0) {
        h->mem -= osize;
        return h->base_alloc(h->base_ud, ptr, osize, 0);
    }
    if (h->guarded && h->mem_limit && nsize > osize &&
        h->mem - osize + nsize > h->mem_limit)
        return NULL;
    void *p = h->base_alloc(h->base_ud, ptr, osize, nsize);
    if (p)
        h->mem = h->mem - osize + nsize;
    return p;
}

static int panic(lua_State *L)
{
    log_error("Lua panic: %s", lua_tostring(L, -1));
    abort();
}

int lua_host_pcall(struct lua_host *h, int nargs, int nres)
{
    h->guarded = true;
    int ret = lua_pcall(h->L, nargs, nres, LS_TRACEBACK);
    h->guarded = false;
    return ret;
}

/* Message handler: the error plus a stack traceback. */
static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1))
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)",
                                  luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
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
static void set_arg(lua_State *L, const struct cli_opts *o)
{
    lua_createtable(L, o->script_argc, 2);
    lua_pushstring(L, "moonring");
    lua_rawseti(L, -2, -1);
    lua_pushstring(L, o->script ? o->script : "echo");
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < o->script_argc; i++) {
        lua_pushstring(L, o->script_argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
}

/* Copy the first line of the error on top of the stack into err. */
static void first_line(lua_State *L, char *err, size_t len)
{
    const char *msg = lua_tostring(L, -1);
    if (!msg)
        msg = "(error object is not a string)";
    size_t n = strcspn(msg, "\n");
    snprintf(err, len, "%.*s", (int)n, msg);
}

/* Check the value at idx is a usable handler table. */
static int check_handlers(lua_State *L, int idx, const char *name, char *err,
                          size_t len)
{
    static const char *const fields[] = { "on_open", "on_close", "on_drain",
                                          "on_reload" };
    if (!lua_istable(L, idx)) {
        snprintf(err, len, "%s: the script must return a table of handlers "
                 "(it returned %s)", name, luaL_typename(L, idx));
        return -1;
    }
    lua_getfield(L, idx, "on_data");
    int ok = lua_isfunction(L, -1);
    lua_pop(L, 1);
    if (!ok) {
        snprintf(err, len, "%s: the handler table has no on_data function", name);
        return -1;
    }
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        lua_getfield(L, idx, fields[i]);
        ok = lua_isnil(L, -1) || lua_isfunction(L, -1);
        lua_pop(L, 1);
        if (!ok) {
            snprintf(err, len, "%s: handler %s must be a function", name,
                     fields[i]);
            return -1;
        }
    }
    return 0;
}

/* Make the table at idx the live handlers, caching its functions. */
void lua_host_install(lua_State *L, int idx)
{
    lua_pushvalue(L, idx);
    lua_replace(L, LS_HANDLERS);
    lua_getfield(L, LS_HANDLERS, "on_open");
    lua_replace(L, LS_ON_OPEN);
    lua_getfield(L, LS_HANDLERS, "on_data");
    lua_replace(L, LS_ON_DATA);
    lua_getfield(L, LS_HANDLERS, "on_close");
    lua_replace(L, LS_ON_CLOSE);
    lua_getfield(L, LS_HANDLERS, "on_drain");
    lua_replace(L, LS_ON_DRAIN);
}

/* Load and run the script; leaves its result on the stack. */
int lua_host_load(struct lua_host *h, char *err, size_t len)
{
    lua_State *L = h->L;
    int ret;
    if (h->script) {
        struct stat st;
        if (stat(h->script, &st)) {
            snprintf(err, len, "cannot open script '%s': %s", h->script,
                     strerror(errno));
            return -1;
        }
        if (!S_ISREG(st.st_mode)) {
            snprintf(err, len, "cannot open script '%s': not a regular file",
                     h->script);
            return -1;
        }
        ret = luaL_loadfile(L, h->script);
    } else {
        ret = luaL_loadbuffer(L, mr_echo_lua, mr_echo_lua_len, "=echo");
    }
    if (ret) {
        first_line(L, err, len);
        lua_pop(L, 1);
        return -1;
    }
    snprintf(h->read, sizeof h->read, "%s", h->script ? h->script : "echo");
    for (int i = 0; i < h->argc; i++)
        lua_pushstring(L, h->argv[i]);
    if (lua_host_pcall(h, h->argc, 1)) {
        first_line(L, err, len);
        lua_pop(L, 1);
        return -1;
    }
    if (check_handlers(L, -1, h->name, err, len)) {
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

struct lua_host *lua_host_new(const struct cli_opts *o, int worker, char *err,
                              size_t len)
{
    struct lua_host *h = calloc(1, sizeof *h);
    if (h)
        h->mem_limit = (size_t)o->lua_memory << 20;
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
    h->script = o->script ? strdup(o->script) : NULL;
    h->name = strdup(o->script ? o->script : "echo (built-in)");
    h->next_timer_id = 1;
    h->worker = worker;
    luaL_openlibs(L);
    lua_pushcfunction(L, traceback);   /* LS_TRACEBACK */
    lua_newtable(L);                   /* LS_CONNS */
    lua_settop(L, LS_TIMERS - 1);      /* handlers: nil until loaded */
    lua_newtable(L);                   /* LS_TIMERS */

    set_path(h, L, h->script);
    set_arg(L, o);
    lua_conn_register(L, h);
    lua_mod_register(L, h);
    h->argc = o->script_argc;
    h->argv = o->script_argv;
    lua_reload_register(L, h);
    lua_gc_pace(L, h);
    if (lua_host_load(h, err, len)) {
        lua_host_free(h);
        return NULL;
    }
    lua_host_install(L, -1);
    lua_settop(L, LS_TOP);
    return h;
}

void lua_host_free(struct lua_host *h)
{
    if (!h)
        return;
    h->closing = true;
    if (h->L)
        lua_close(h->L);
    lua_reload_free(h);
    timer_heap_free(&h->early);
    free(h->script);
    free(h->name);
    free(h->dirs[0]);
    free(h->dirs[1]);
    free(h);
}

const char *lua_host_script_name(const struct lua_host *h) { return h->name; }

void lua_host_attach(struct lua_host *h, struct worker *w)
{
    h->w = w;
    struct timer_entry e;
    while (timer_pop_due(&h->early, UINT64_MAX, &e))
        timer_push(&w->timers, e.due, e.kind, e.key);
    timer_heap_free(&h->early);
}

size_t lua_host_mem(struct lua_host *h) { return h->mem; }

/* Call the function below nargs arguments; on error log it and, if the
 * connection is still open, close it. */
static void call(struct lua_host *h, struct conn *c, const char *what, int nargs)
{
    lua_State *L = h->L;
    if (lua_host_pcall(h, nargs, 0) == 0)
        return;
    h->w->stats.lua_errors++;
    log_error("%s failed (connection %llu): %s", what,
              (unsigned long long)c->id, lua_tostring(L, -1));
    lua_settop(L, LS_TOP);
    if (c->state == CONN_OPEN)
        conn_close(&h->w->conns, c, REASON_ERROR, true);
}

void lua_host_open(struct lua_host *h, struct conn *c)
{
    lua_State *L = h->L;
    if (!(c->flags & CF_OWN_HANDLERS)) /* outbound ones have theirs already */
        lua_conn_push_new(L, c, LS_CONNS);
    else
        lua_rawgeti(L, LS_CONNS, (int)c->slot + 1);
    if (!lua_conn_push_handler(L, c, LS_ON_OPEN, "on_open")) {
        lua_pop(L, 1);
        return;
    }
    lua_insert(L, -2);
    call(h, c, "on_open", 1);
}

void lua_host_data(struct lua_host *h, struct conn *c, const char *p, size_t n)
{
    lua_State *L = h->L;
    if (c->flags & CF_OWN_HANDLERS) {
        if (!lua_conn_push_handler(L, c, LS_ON_DATA, "on_data"))
            return;
    } else {
        lua_pushvalue(L, LS_ON_DATA); /* the hot path: no lookup */
    }
    lua_rawgeti(L, LS_CONNS, (int)c->slot + 1);
    lua_pushlstring(L, p, n);
    call(h, c, "on_data", 2);
}

void lua_host_drain(struct lua_host *h, struct conn *c)
{
    lua_State *L = h->L;
    if (!lua_conn_push_handler(L, c, LS_ON_DRAIN, "on_drain"))
        return;
    lua_rawgeti(L, LS_CONNS, (int)c->slot + 1);
    call(h, c, "on_drain", 1);
}

void lua_host_close(struct lua_host *h, struct conn *c)
{
    lua_State *L = h->L;
    if (lua_conn_push_handler(L, c, LS_ON_CLOSE, "on_close")) {
        lua_rawgeti(L, LS_CONNS, (int)c->slot + 1);
        lua_pushstring(L, conn_reason_name((enum conn_reason)c->reason));
        if (c->err)
            lua_pushstring(L, strerror(-c->err));
        else
            lua_pushnil(L);
        call(h, c, "on_close", 3);
    }
    lua_conn_invalidate(L, c);
}

bool lua_host_timer(struct lua_host *h, uint64_t id, uint64_t due)
{
    lua_State *L = h->L;
    lua_rawgeti(L, LS_TIMERS, (int)id);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return false; /* cancelled */
    }
    lua_getfield(L, -1, "period");
    double period = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (period > 0) {
        uint64_t step = (uint64_t)(period * 1e9);
        uint64_t next = due + step;
        if (next <= h->w->now)
            next = h->w->now + step; /* fell behind: do not catch up in a burst */
        timer_push(&h->w->timers, next, TIMER_LUA, id);
    } else {
        lua_pushnil(L);
        lua_rawseti(L, LS_TIMERS, (int)id);
    }
    lua_getfield(L, -1, "fn");
    lua_insert(L, -2); /* fn(timer) */
    if (lua_host_pcall(h, 1, 0)) {
        h->w->stats.lua_errors++;
        log_error("timer callback failed%s: %s",
                  period > 0 ? " (the timer goes on)" : "", lua_tostring(L, -1));
        lua_settop(L, LS_TOP);
    }
    return true;
}
