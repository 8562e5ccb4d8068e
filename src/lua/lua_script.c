/* lua_script.c - run the script and check what it returns; the
 * protected call every handler goes through. */
#include "lua_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int lua_script_pcall(struct lua_host *h, int nargs, int nres)
{
    h->guarded = true;
    int ret = lua_pcall(h->L, nargs, nres, LS_TRACEBACK);
    h->guarded = false;
    return ret;
}

/* Message handler: the error plus a stack traceback. */
int lua_script_traceback(lua_State *L)
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

/* Copy the first line of the error on top of the stack into err. */
static void first_line(lua_State *L, char *err, size_t len)
{
    const char *msg = lua_tostring(L, -1);
    if (!msg)
        msg = "(error object is not a string)";
    size_t n = strcspn(msg, "\n");
    snprintf(err, len, "%.*s", (int)n, msg);
}

/* Check the value at idx is a usable handler table, or a function. */
static int check_handlers(struct lua_host *h, lua_State *L, int idx,
                          const char *name, char *err, size_t len)
{
    static const char *const fields[] = { "on_open", "on_close", "on_drain",
                                          "on_reload", "on_datagram" };
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    if (lua_isfunction(L, idx) && h->datagrams) {
        snprintf(err, len, "%s: a udp:// listener needs a handler table with "
                 "on_datagram (the script returned a function)", name);
        return -1;
    }
    if (lua_isfunction(L, idx))
        return 0;
    if (!lua_istable(L, idx)) {
        snprintf(err, len, "%s: the script must return a table of handlers "
                 "or a function (it returned %s)", name, luaL_typename(L, idx));
        return -1;
    }
    /* a server of datagrams alone needs no on_data, nor one of streams
     * alone an on_datagram */
    lua_getfield(L, idx, "on_data");
    lua_getfield(L, idx, "on_datagram");
    bool data = lua_isfunction(L, -2), dgram = lua_isfunction(L, -1);
    lua_pop(L, 2);
    if (!data && (h->streams || !h->datagrams)) {
        snprintf(err, len, "%s: the handler table has no on_data function", name);
        return -1;
    }
    if (!dgram && h->datagrams) {
        snprintf(err, len, "%s: the handler table has no on_datagram function, "
                 "which a udp:// listener needs", name);
        return -1;
    }
    int ok;
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

/* Make the table at idx the live handlers, caching its functions. A
 * function takes over new connections only: those opened for a handler
 * table go on with its functions. */
void lua_script_install(lua_State *L, int idx)
{
    lua_pushvalue(L, idx);
    lua_replace(L, LS_HANDLERS);
    if (!lua_istable(L, LS_HANDLERS))
        return;
    lua_getfield(L, LS_HANDLERS, "on_open");
    lua_replace(L, LS_ON_OPEN);
    lua_getfield(L, LS_HANDLERS, "on_data");
    lua_replace(L, LS_ON_DATA);
    lua_getfield(L, LS_HANDLERS, "on_close");
    lua_replace(L, LS_ON_CLOSE);
    lua_getfield(L, LS_HANDLERS, "on_drain");
    lua_replace(L, LS_ON_DRAIN);
    lua_getfield(L, LS_HANDLERS, "on_datagram");
    lua_replace(L, LS_ON_DATAGRAM);
}

/* Load and run the script; leaves its result on the stack. */
int lua_script_load(struct lua_host *h, char *err, size_t len)
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
    if (lua_script_pcall(h, h->argc, 1)) {
        first_line(L, err, len);
        lua_pop(L, 1);
        return -1;
    }
    if (check_handlers(h, L, -1, h->name, err, len)) {
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}
