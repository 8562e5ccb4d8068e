/* lua_reload.c - hot reload of the handler script.
 *
 * A reload runs the new script in the same Lua state, so module-level
 * state kept with moonring.keep() and the fields scripts set on live
 * connections survive it. Modules that require() loaded from the
 * script's folder or lua/ are remembered with a signature of their file;
 * a reload re-requires those whose file changed. Only a script that runs
 * and returns a valid handler table replaces the running one; anything
 * else changes nothing, not even package.loaded. */
#include "log.h"
#include "lua_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A searcher placed before the standard Lua-file one: same search, but
 * it tells record() which file each module came from. */
static const char searcher_src[] =
    "local record, searchpath, loadfile = ...\n"
    "return function(name)\n"
    "  local path, err = searchpath(name, package.path)\n"
    "  if not path then return err end\n"
    "  local f, lerr = loadfile(path)\n"
    "  if not f then error(\"module '\" .. name .. \"': \" .. lerr, 0) end\n"
    "  record(name, path)\n"
    "  return f\n"
    "end\n";

/* What changes when a file is saved, in any of the ways editors save. */
static void file_sig(const char *path, char *sig, size_t len)
{
    struct stat st;
    if (stat(path, &st)) {
        snprintf(sig, len, "missing");
        return;
    }
    snprintf(sig, len, "%lu:%lld:%lld.%09ld:%lld.%09ld",
             (unsigned long)st.st_ino, (long long)st.st_size,
             (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
             (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
}

static bool under(const char *path, const char *dir)
{
    size_t n = dir ? strlen(dir) : 0;
    return n && strncmp(path, dir, n) == 0 && path[n] == '/';
}

static struct lua_mod_file *find_mod(struct lua_host *h, const char *name)
{
    for (size_t i = 0; i < h->nmods; i++)
        if (strcmp(h->mods[i].name, name) == 0)
            return &h->mods[i];
    return NULL;
}

/* record(name, path): a module was found in path. */
static int l_record(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *name = luaL_checkstring(L, 1);
    const char *path = luaL_checkstring(L, 2);
    if (!under(path, h->dirs[0]) && !under(path, h->dirs[1]))
        return 0;
    struct lua_mod_file *m = find_mod(h, name);
    if (!m) {
        m = realloc(h->mods, (h->nmods + 1) * sizeof *m);
        if (!m)
            return luaL_error(L, "out of memory");
        h->mods = m;
        m += h->nmods++;
        m->name = strdup(name);
        m->path = NULL;
    }
    free(m->path);
    m->path = strdup(path);
    file_sig(path, m->sig, sizeof m->sig);
    size_t n = strlen(h->read);
    snprintf(h->read + n, sizeof h->read - n, ", %s", path);
    return 0;
}

void lua_reload_register(lua_State *L, struct lua_host *h)
{
    if (luaL_loadbuffer(L, searcher_src, sizeof searcher_src - 1, "=searcher"))
        goto fail;
    lua_pushlightuserdata(L, h);
    lua_pushcclosure(L, l_record, 1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_remove(L, -2);
    lua_getglobal(L, "loadfile");
    if (lua_pcall(L, 3, 1, 0))
        goto fail;
    /* table.insert(package.loaders, 2, searcher) */
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "insert");
    lua_remove(L, -2);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaders");
    lua_remove(L, -2);
    lua_pushinteger(L, 2);
    lua_pushvalue(L, -4);
    if (lua_pcall(L, 3, 0, 0))
        goto fail;
    lua_pop(L, 1);
    return;
fail:
    /* only if this Lua lacks package.searchpath: reload still works,
     * but changed modules are not re-required */
    log_warn("module tracking unavailable: %s", lua_tostring(L, -1));
    lua_settop(L, LS_TOP);
}

void lua_reload_free(struct lua_host *h)
{
    for (size_t i = 0; i < h->nmods; i++) {
        free(h->mods[i].name);
        free(h->mods[i].path);
    }
    free(h->mods);
    h->mods = NULL;
    h->nmods = 0;
}

void lua_host_each_file(struct lua_host *h, void (*fn)(void *, const char *),
                        void *ctx)
{
    if (!h->script)
        return;
    fn(ctx, h->script);
    for (size_t i = 0; i < h->nmods; i++)
        if (h->mods[i].path)
            fn(ctx, h->mods[i].path);
}

const char *lua_host_files_read(const struct lua_host *h) { return h->read; }

/* Drop changed modules from package.loaded into the table at `saved`. */
static void unload_changed(struct lua_host *h, int loaded, int saved)
{
    lua_State *L = h->L;
    for (size_t i = 0; i < h->nmods; i++) {
        struct lua_mod_file *m = &h->mods[i];
        char sig[sizeof m->sig];
        file_sig(m->path, sig, sizeof sig);
        if (strcmp(sig, m->sig) == 0)
            continue;
        m->sig[0] = 0;
        lua_getfield(L, loaded, m->name);
        lua_setfield(L, saved, m->name);
        lua_pushnil(L);
        lua_setfield(L, loaded, m->name);
    }
}

/* A failed reload: put the old modules back, and remember that their
 * files still differ from what is loaded. */
static void restore(struct lua_host *h, int loaded, int saved)
{
    lua_State *L = h->L;
    lua_pushnil(L);
    while (lua_next(L, saved)) {
        struct lua_mod_file *m = find_mod(h, lua_tostring(L, -2));
        if (m)
            m->sig[0] = 0;
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_settable(L, loaded);
    }
}

int lua_host_reload(struct lua_host *h, char *err, size_t len)
{
    lua_State *L = h->L;
    if (!h->script) {
        snprintf(err, len, "the built-in echo has no file to reload");
        return -1;
    }
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_remove(L, -2);
    lua_newtable(L);
    int loaded = lua_gettop(L) - 1, saved = lua_gettop(L);
    unload_changed(h, loaded, saved);

    if (lua_script_load(h, err, len)) {
        restore(h, loaded, saved);
        lua_settop(L, LS_TOP);
        return -1;
    }
    /* stack: loaded, saved, new handlers */
    lua_pushvalue(L, LS_HANDLERS);
    lua_script_install(L, -2);
    if (lua_istable(L, LS_HANDLERS))
        lua_getfield(L, LS_HANDLERS, "on_reload");
    else
        lua_pushnil(L);
    if (lua_isfunction(L, -1)) {
        lua_insert(L, -2); /* on_reload(old) */
        if (lua_script_pcall(h, 1, 0)) {
            h->errors++;
            log_error("on_reload failed (the new handlers stay): %s",
                      lua_tostring(L, -1));
        }
    }
    lua_settop(L, LS_TOP);
    h->reloads++;
    return 0;
}
