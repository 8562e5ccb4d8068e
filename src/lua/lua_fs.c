/* lua_fs.c - mr.fs: files through the worker's ring (src/core/fs.h).
 *
 * Every call submits one request and yields the calling coroutine; the
 * request's completion resumes it with the results. While the disk
 * works, the loop goes on serving every other connection. The waiting
 * coroutine is kept in the host's waits table under an id the request
 * carries (as mr.sleep's are); what the kernel reads from Lua's memory
 * (the bytes of a write) is kept in `keep` under the same id, since a
 * yield from C leaves nothing of the call on the coroutine's stack.
 *
 * A file object holds a struct fs_file of the core, which outlives the
 * object while requests on it are in flight: collecting a file closes
 * it through the ring (without waiting), after its last request. */
#include "fs.h"
#include "lua_fs.h"
#include "lua_int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#define FILE_MT "moonring.file"

/* What the completion pushes; in the top byte of the request's tag. */
enum lk { LK_OPEN = 1, LK_READ, LK_WRITE, LK_TRUE, LK_STAT, LK_BYTES,
          LK_LIST, LK_REMOVE };
#define TAG(kind, id)   ((uint64_t)(kind) << 56 | (id))
#define TAG_KIND(t)     ((enum lk)((t) >> 56))
#define TAG_ADVANCE     (1ull << 48)  /* read/write at the file's position */
#define TAG_ID(t)       ((t) & ((1ull << 40) - 1))

struct lfile {
    struct fs_file *f;         /* NULL once closed */
    bool append;
};

static int fail(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

static int fail_errno(lua_State *L, int err)
{
    return fail(L, strerror(-err));
}

static struct lfile *check_file(lua_State *L)
{
    return luaL_checkudata(L, 1, FILE_MT);
}

/* The call waits: the server must run and L be one of its coroutines. */
static void check_wait(lua_State *L, struct lua_host *h, const char *what)
{
    if (!h->k)
        luaL_error(L, "%s works once the server runs: at load time, wrap "
                      "the code in mr.spawn", what);
    lua_co_check(L, h, what);
}

static void on_done(struct core *k, struct fs_req *r, int res);

static struct fs_req *new_req(lua_State *L, struct lua_host *h)
{
    struct fs_req *r = fs_req_new(h->k, on_done, h);
    if (!r)
        luaL_error(L, "out of memory");
    return r;
}

/* The request started (ret 0): park L under a fresh id, keeping the
 * value at `keep` (0: none) for as long; else free it and fail. */
static int wait_for(lua_State *L, struct lua_host *h, struct fs_req *r,
                    int ret, enum lk kind, uint64_t flags, int keep)
{
    if (ret) {
        fs_req_free(r);
        return fail_errno(L, ret);
    }
    uint64_t id = h->next_wait_id++;
    r->tag = TAG(kind, id) | flags;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->waits_ref);
    lua_pushthread(L);
    lua_rawseti(L, -2, (int)id);
    lua_pop(L, 1);
    if (keep) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->fs_keep_ref);
        lua_pushvalue(L, keep);
        lua_rawseti(L, -2, (int)id);
        lua_pop(L, 1);
    }
    return lua_yield(L, 0);
}

static void push_file(lua_State *L, struct fs_file *f, bool append)
{
    struct lfile *lf = lua_newuserdata(L, sizeof *lf);
    lf->f = f;
    lf->append = append;
    luaL_getmetatable(L, FILE_MT);
    lua_setmetatable(L, -2);
}

static const char *type_name(unsigned mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "dir";
    case S_IFLNK: return "link";
    default:      return "other";
    }
}

static void push_stat(lua_State *L, const struct statx *st)
{
    lua_createtable(L, 0, 5);
    lua_pushnumber(L, (lua_Number)st->stx_size);
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, (lua_Number)st->stx_mtime.tv_sec +
                      (lua_Number)st->stx_mtime.tv_nsec / 1e9);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, st->stx_mode & 07777);
    lua_setfield(L, -2, "mode");
    lua_pushstring(L, type_name(st->stx_mode));
    lua_setfield(L, -2, "type");
    lua_pushnumber(L, (lua_Number)st->stx_ino);
    lua_setfield(L, -2, "ino");
}

static void push_list(lua_State *L, const char *p, size_t len, int n)
{
    lua_createtable(L, n, 0);
    for (int i = 1; len; i++) {
        size_t l = strlen(p);
        lua_pushlstring(L, p, l);
        lua_rawseti(L, -2, i);
        p += l + 1;
        len -= l + 1;
    }
}

/* A big string is made in a protected call on the main state and moved
 * to co: made on co, suspended outside any pcall, a failure to allocate
 * it would be a panic that ends the worker. */
struct bytes_push {
    lua_State *co;
    const char *p;
    size_t n;
};

static int push_bytes_p(lua_State *L)
{
    struct bytes_push *b = lua_touserdata(L, 1);
    lua_pushlstring(L, b->p, b->n);
    lua_xmove(L, b->co, 1);
    return 0;
}

static int push_bytes(struct lua_host *h, lua_State *co, const char *p,
                      size_t n)
{
    struct bytes_push b = { co, p ? p : "", n };
    if (n < (1u << 20)) {
        lua_pushlstring(co, b.p, n);
        return 1;
    }
    if (lua_cpcall(h->L, push_bytes_p, &b)) {
        lua_pop(h->L, 1); /* the error: out of memory */
        lua_pushnil(co);
        lua_pushliteral(co, "not enough memory");
        return 2;
    }
    return 1;
}

/* Push on co what the request of kind gives; returns the count. */
static int push_result(struct lua_host *h, lua_State *co, struct fs_req *r,
                       int res)
{
    if (res < 0) {
        lua_pushnil(co);
        lua_pushstring(co, strerror(-res));
        return 2;
    }
    switch (TAG_KIND(r->tag)) {
    case LK_OPEN:
        push_file(co, r->file, (r->how.flags & O_APPEND) != 0);
        return 1;
    case LK_READ:
        if (r->tag & TAG_ADVANCE)
            r->file->pos += (uint64_t)res;
        return push_bytes(h, co, r->buf, (size_t)res);
    case LK_WRITE:
        lua_pushnumber(co, (lua_Number)r->n);
        return 1;
    case LK_STAT:
        push_stat(co, &r->stx);
        return 1;
    case LK_BYTES:
        return push_bytes(h, co, r->buf, r->len);
    case LK_LIST:
        push_list(co, r->buf, r->len, res);
        return 1;
    default:
        lua_pushboolean(co, 1);
        return 1;
    }
}

/* remove(path) found a directory: remove it as one, for the same wait. */
static bool retry_as_dir(struct core *k, struct fs_req *r, int res)
{
    if (TAG_KIND(r->tag) != LK_REMOVE || res != -EISDIR)
        return false;
    struct fs_req *d = fs_req_new(k, on_done, r->data);
    if (!d)
        return false;
    d->tag = TAG(LK_TRUE, TAG_ID(r->tag));
    if (fs_unlink(k, d, r->path, true)) {
        fs_req_free(d);
        return false;
    }
    return true;
}

static void on_done(struct core *k, struct fs_req *r, int res)
{
    struct lua_host *h = r->data;
    lua_State *L = h->L;
    uint64_t id = TAG_ID(r->tag);
    if (retry_as_dir(k, r, res))
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->fs_keep_ref);
    lua_pushnil(L);
    lua_rawseti(L, -2, (int)id);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->waits_ref);
    lua_rawgeti(L, -1, (int)id);
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawseti(L, -2, (int)id);
    lua_pop(L, 2);
    if (!co || lua_status(co) != LUA_YIELD) {
        if (TAG_KIND(r->tag) == LK_OPEN && res == 0)
            fs_close(k, r->file); /* nobody to hand it to */
        return;
    }
    int n = push_result(h, co, r, res);
    lua_co_resume(h, co, n);
}

/* --- mr.fs ------------------------------------------------------------ */

static int open_flags(const char *mode)
{
    int rw = strchr(mode, '+') != NULL;
    switch (mode[0]) {
    case 'r': return rw ? O_RDWR : O_RDONLY;
    case 'w': return (rw ? O_RDWR : O_WRONLY) | O_CREAT | O_TRUNC;
    case 'a': return (rw ? O_RDWR : O_WRONLY) | O_CREAT | O_APPEND;
    default:  return -1;
    }
}

static bool mode_ok(const char *m)
{
    if (!m[0] || !strchr("rwa", m[0])) /* strchr finds the NUL too */
        return false;
    for (const char *p = m + 1; *p; p++)
        if (*p != '+' && *p != 'b')
            return false;
    return strlen(m) <= 3;
}

const char *lua_fs_check_path(lua_State *L, int idx)
{
    size_t n;
    const char *p = luaL_checklstring(L, idx, &n);
    if (strlen(p) != n)
        luaL_argerror(L, idx, "a path without NUL bytes expected");
    return p;
}

/* mr.fs.open(path [, mode [, opts]]) -> file, or nil, err */
static int l_open(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *path = lua_fs_check_path(L, 1);
    const char *mode = luaL_optstring(L, 2, "r");
    if (!mode_ok(mode))
        return luaL_argerror(L, 2, "\"r\", \"w\", \"a\", \"r+\", \"w+\" or \"a+\" expected");
    const char *beneath = NULL;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "beneath");
        if (!lua_isnil(L, -1)) {
            size_t n;
            if (!lua_isstring(L, -1))
                return luaL_argerror(L, 3, "opts.beneath: a directory expected");
            beneath = lua_tolstring(L, -1, &n);
            if (strlen(beneath) != n)
                return luaL_argerror(L, 3, "opts.beneath: a path without NUL bytes expected");
        }
    }
    check_wait(L, h, "mr.fs.open");
    struct fs_req *r = new_req(L, h);
    int ret = fs_open(h->k, r, path, open_flags(mode), 0644, beneath);
    return wait_for(L, h, r, ret, LK_OPEN, 0, 0);
}

/* A number argument at idx: an offset or a count, whole and >= 0. */
static int64_t opt_count(lua_State *L, int idx, int64_t dflt)
{
    if (lua_isnoneornil(L, idx))
        return dflt;
    lua_Number v = luaL_checknumber(L, idx);
    if (!(v >= 0 && v <= 9007199254740992.0) || v != (lua_Number)(int64_t)v)
        luaL_argerror(L, idx, "a whole number >= 0 expected");
    return (int64_t)v;
}

static int l_stat_path(lua_State *L, bool follow, const char *what)
{
    struct lua_host *h = HOST(L);
    const char *path = lua_fs_check_path(L, 1);
    check_wait(L, h, what);
    struct fs_req *r = new_req(L, h);
    return wait_for(L, h, r, fs_stat(h->k, r, path, follow), LK_STAT, 0, 0);
}

static int l_stat(lua_State *L) { return l_stat_path(L, true, "mr.fs.stat"); }
static int l_lstat(lua_State *L) { return l_stat_path(L, false, "mr.fs.lstat"); }

static int l_rename(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *from = lua_fs_check_path(L, 1);
    const char *to = lua_fs_check_path(L, 2);
    check_wait(L, h, "mr.fs.rename");
    struct fs_req *r = new_req(L, h);
    return wait_for(L, h, r, fs_rename(h->k, r, from, to), LK_TRUE, 0, 0);
}

static int l_remove(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *path = lua_fs_check_path(L, 1);
    check_wait(L, h, "mr.fs.remove");
    struct fs_req *r = new_req(L, h);
    return wait_for(L, h, r, fs_unlink(h->k, r, path, false), LK_REMOVE, 0, 0);
}

static int l_mkdir(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *path = lua_fs_check_path(L, 1);
    int64_t mode = opt_count(L, 2, 0755);
    if (mode > 07777)
        return luaL_argerror(L, 2, "permission bits expected (e.g. 493 = 0755)");
    check_wait(L, h, "mr.fs.mkdir");
    struct fs_req *r = new_req(L, h);
    return wait_for(L, h, r, fs_mkdir(h->k, r, path, (mode_t)mode), LK_TRUE, 0, 0);
}

static int l_list(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *path = lua_fs_check_path(L, 1);
    check_wait(L, h, "mr.fs.list");
    struct fs_req *r = new_req(L, h);
    return wait_for(L, h, r, fs_list(h->k, r, path), LK_LIST, 0, 0);
}

static int l_read_file(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *path = lua_fs_check_path(L, 1);
    check_wait(L, h, "mr.fs.read_file");
    struct fs_req *r = new_req(L, h);
    return wait_for(L, h, r, fs_read_file(h->k, r, path), LK_BYTES, 0, 0);
}

static int l_write_file(lua_State *L)
{
    struct lua_host *h = HOST(L);
    const char *path = lua_fs_check_path(L, 1);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    check_wait(L, h, "mr.fs.write_file");
    struct fs_req *r = new_req(L, h);
    int ret = fs_write_file(h->k, r, path, data, n);
    return wait_for(L, h, r, ret, LK_TRUE, 0, 2);
}

/* --- file methods ------------------------------------------------------ */

/* f:read(n [, offset]) -> up to n bytes, "" at the end, or nil, err */
static int f_read(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lfile *lf = check_file(L);
    int64_t n = opt_count(L, 2, -1);
    if (n < 0)
        return luaL_argerror(L, 2, "a count of bytes expected");
    int64_t off = opt_count(L, 3, -1);
    if (!lf->f)
        return fail(L, "closed");
    check_wait(L, h, "file:read");
    struct fs_req *r = new_req(L, h);
    uint64_t adv = off < 0 ? TAG_ADVANCE : 0;
    int ret = fs_read(h->k, r, lf->f, (size_t)n, off < 0 ? (int64_t)lf->f->pos : off);
    return wait_for(L, h, r, ret, LK_READ, adv, 0);
}

/* f:write(data [, offset]) -> #data, or nil, err. Without an offset at
 * the file's position (the end, for "a" modes). */
static int f_write(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lfile *lf = check_file(L);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    int64_t off = opt_count(L, 3, -1);
    if (!lf->f)
        return fail(L, "closed");
    check_wait(L, h, "file:write");
    struct fs_req *r = new_req(L, h);
    if (off < 0 && !lf->append) {
        off = (int64_t)lf->f->pos;
        lf->f->pos += n; /* all of it, or the position no longer matters */
    }
    int ret = fs_write(h->k, r, lf->f, data, n, lf->append ? -1 : off);
    return wait_for(L, h, r, ret, LK_WRITE, 0, 2);
}

static int f_sync(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lfile *lf = check_file(L);
    if (!lf->f)
        return fail(L, "closed");
    check_wait(L, h, "file:sync");
    struct fs_req *r = new_req(L, h);
    return wait_for(L, h, r, fs_fsync(h->k, r, lf->f), LK_TRUE, 0, 0);
}

static int f_stat(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lfile *lf = check_file(L);
    if (!lf->f)
        return fail(L, "closed");
    check_wait(L, h, "file:stat");
    struct fs_req *r = new_req(L, h);
    return wait_for(L, h, r, fs_fstat(h->k, r, lf->f), LK_STAT, 0, 0);
}

/* f:close() -> true: the close goes through the ring, without waiting
 * (after the file's requests in flight). */
static int f_close(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lfile *lf = check_file(L);
    if (!lf->f)
        return fail(L, "closed");
    fs_close(h->k, lf->f);
    lf->f = NULL;
    lua_pushboolean(L, 1);
    return 1;
}

static int f_gc(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lfile *lf = lua_touserdata(L, 1);
    if (lf && lf->f && h->k)
        fs_close(h->k, lf->f);
    if (lf)
        lf->f = NULL;
    return 0;
}

static int f_tostring(lua_State *L)
{
    struct lfile *lf = check_file(L);
    if (lf->f)
        lua_pushfstring(L, "file (%p)", (void *)lf);
    else
        lua_pushliteral(L, "file (closed)");
    return 1;
}

struct fs_file *lua_fs_file_at(lua_State *L, int idx)
{
    struct lfile *lf = luaL_testudata(L, idx, FILE_MT);
    return lf ? lf->f : NULL;
}

bool lua_fs_is_file(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, FILE_MT) != NULL;
}

static const luaL_Reg file_methods[] = {
    { "read", f_read },
    { "write", f_write },
    { "sync", f_sync },
    { "stat", f_stat },
    { "close", f_close },
    { NULL, NULL },
};

static const luaL_Reg funcs[] = {
    { "open", l_open },
    { "stat", l_stat },
    { "lstat", l_lstat },
    { "rename", l_rename },
    { "remove", l_remove },
    { "mkdir", l_mkdir },
    { "list", l_list },
    { "read_file", l_read_file },
    { "write_file", l_write_file },
    { NULL, NULL },
};

void lua_fs_register(lua_State *L, struct lua_host *h)
{
    lua_newtable(L);
    h->fs_keep_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    luaL_newmetatable(L, FILE_MT);
    lua_newtable(L);
    lua_pushlightuserdata(L, h);
    luaL_openlib(L, NULL, file_methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pushlightuserdata(L, h);
    lua_pushcclosure(L, f_gc, 1);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, f_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "file");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);

    lua_newtable(L);
    lua_pushlightuserdata(L, h);
    luaL_openlib(L, NULL, funcs, 1);
    lua_setfield(L, -2, "fs");
}
