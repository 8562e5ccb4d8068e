/* lua_sendfile.c - sock:send_file(file_or_path [, offset [, length]]):
 * a file's bytes to the connection without passing them through Lua.
 *
 * The default way: reads through the ring into a chunk buffer (the
 * size of the high-water mark), which the connection's send queue takes
 * over (core_give): on plain TCP the bytes are sent from where they were
 * read, with no copy in user space, and the next chunk gets a buffer of
 * its own; with a transport they go through it (TLS encrypts them on
 * their way). The same backpressure
 * as sock:send: the next chunk is read while the output is at or below
 * the high-water mark, and the job waits for the drained event while it
 * is above, so a slow reader holds at most about two chunks of the
 * file in memory.
 *
 * The other way, for plain TCP only ({ splice = true }): the file's
 * pages go file -> pipe -> socket by IORING_OP_SPLICE, linked in pairs,
 * with no copy through user space. The README gives the figures of
 * both; the reads are the default.
 *
 * The coroutine waits as the socket's writer (a send meanwhile gets
 * "socket busy writing"); the job is the socket's (s->sf) and ends with
 * the wait: done, failed, or the connection closed. A read still in
 * flight then frees it when it completes. */
#include "fs.h"
#include "lua_fs.h"
#include "lua_sock.h"
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPLICE_CHUNK (1u << 20)

struct lua_sendfile {
    struct lua_host *h;
    struct lua_sock *s;        /* NULL once the wait ended */
    struct fs_file *f;         /* held while the job runs */
    bool own;                  /* opened by the job from a path: closed by it */
    bool busy;                 /* a request (open, read, splice) is in flight */
    bool splice;
    int pipe[2];               /* splice: its pipe, -1 for none */
    int sock;                  /* splice: the job's own dup of the socket */
    uint64_t off, left;        /* next offset; bytes still to send */
    uint64_t sent;
    char *buf;
    size_t cap;
    /* On plain TCP, chunks of whole segments (seg: the socket's MSS), so
     * that each send ends where a segment does: 64 KiB chunks on
     * loopback (MSS 65483) had gone out as a full segment and one of 53
     * bytes, twice the packets for the peer to take. lead: the bytes
     * queued before the first chunk (a head), whose segment the first
     * chunk fills. */
    size_t seg, lead;
};

static void step(struct lua_sendfile *j);

/* The send timeout counts time without progress, as sock:send's does:
 * each chunk that reaches the connection (or the socket), and each
 * drained event, starts it again. The queued timer entry stays; when it
 * is due, lua_sock_timer sees the later deadline and queues that. */
static void progress(struct lua_sendfile *j)
{
    struct lua_sock *s = j->s;
    if (!s->timeout_ms[T_SEND])
        return;
    s->wdeadline = timer_now() + (uint64_t)s->timeout_ms[T_SEND] * 1000000;
    lua_sock_queue_timer(j->h, s, s->wdeadline);
}

static void job_free(struct lua_sendfile *j)
{
    struct core *k = j->h->k;
    if (j->f) {
        fs_unhold(k, j->f);
        if (j->own)
            fs_close(k, j->f);
    }
    for (int i = 0; i < 2; i++)
        fs_fd_close(k, j->pipe[i]);
    fs_fd_close(k, j->sock);
    free(j->buf);
    free(j);
}

/* The first chunk is queued, or the job is over: what waited for it
 * goes out (job_start corked the connection). */
static void uncork(struct lua_sendfile *j)
{
    struct conn *c = j->s ? j->s->c : NULL;
    if (c)
        core_cork(j->h->k, c, false);
}

/* The wait ends: resume the writer with the bytes sent, or nil, err. */
static void end(struct lua_sendfile *j, const char *err)
{
    struct lua_sock *s = j->s;
    struct lua_host *h = j->h;
    uncork(j);
    lua_State *co = s->writer;
    s->writer = NULL;
    s->sf = NULL;
    s->wdeadline = 0;
    j->s = NULL;
    uint64_t sent = j->sent;
    if (!j->busy)
        job_free(j);
    if (err) {
        lua_sock_wake_err(h, co, err);
    } else {
        lua_pushnumber(co, (lua_Number)sent);
        lua_co_resume(h, co, 1);
    }
}

void lua_sendfile_detach(struct lua_sock *s)
{
    struct lua_sendfile *j = s->sf;
    if (!j)
        return;
    uncork(j);
    s->sf = NULL;
    j->s = NULL;
    if (!j->busy)
        job_free(j);
}

/* A request of the job completed: false when the job is gone. */
static bool back(struct fs_req *r)
{
    struct lua_sendfile *j = r->data;
    j->busy = false;
    if (j->s)
        return true;
    job_free(j);
    return false;
}

static void on_data(struct core *k, struct fs_req *r, int res)
{
    struct lua_sendfile *j = r->data;
    if (!back(r))
        return;
    struct conn *c = j->s->c;
    if (res < 0) {
        end(j, strerror(-res));
        return;
    }
    if (!j->splice && res > 0) {
        char *buf = j->buf;
        j->buf = NULL; /* the queue's now, or freed */
        if (!c || core_give(k, c, buf, j->cap, (size_t)res)) {
            end(j, "closed");
            return;
        }
        uncork(j);
    }
    if (j->splice && c) {
        c->active = k->now;
        k->stats.bytes_out += (uint64_t)res;
    }
    if (res > 0)
        progress(j);
    j->sent += (uint64_t)res;
    j->off += (uint64_t)res;
    j->left -= (uint64_t)res;
    if (res == 0 || j->left == 0) {
        end(j, NULL);
        return;
    }
    step(j);
}

/* Read (or splice) the next n bytes: 0, or why it could not start. */
static int submit(struct lua_sendfile *j, size_t n)
{
    struct core *k = j->h->k;
    struct fs_req *r = fs_req_new(k, on_data, j);
    int ret = r ? 0 : -ENOMEM;
    if (r && j->splice)
        ret = fs_splice(k, r, j->f, (int64_t)j->off, n, j->pipe[1], j->pipe[0],
                        j->sock);
    else if (r && !j->buf && !(j->buf = malloc(j->cap)))
        ret = -ENOMEM;
    else if (r)
        ret = fs_read_into(k, r, j->f, j->buf, n, (int64_t)j->off);
    if (ret)
        fs_req_free(r);
    else
        j->busy = true;
    return ret;
}

static size_t next_len(struct lua_sendfile *j)
{
    size_t n = j->cap, seg = j->seg;
    if (seg && seg <= j->cap) {
        size_t room = (seg - j->lead % seg) % seg; /* the head's segment's rest */
        n = room + (j->cap - room) / seg * seg;
        j->lead = 0;
    }
    return j->left < n ? (size_t)j->left : n;
}

/* The next chunk, or wait for the output to drain. */
static void step(struct lua_sendfile *j)
{
    struct conn *c = j->s->c;
    if (!c || c->state != CONN_OPEN) {
        end(j, "closed");
        return;
    }
    if (c->flags & CF_HWM)
        return; /* lua_sendfile_drained goes on */
    int ret = submit(j, next_len(j));
    if (ret)
        end(j, strerror(-ret));
}

void lua_sendfile_drained(struct lua_sock *s)
{
    struct lua_sendfile *j = s->sf;
    if (j)
        progress(j);
    if (j && !j->busy)
        step(j);
}

static void on_open(struct core *k, struct fs_req *r, int res)
{
    struct lua_sendfile *j = r->data;
    if (res == 0) {
        j->f = r->file;
        fs_hold(j->f);
    }
    (void)k;
    if (!back(r))
        return;
    if (res < 0) {
        end(j, strerror(-res));
        return;
    }
    step(j);
}

static int64_t opt_count(lua_State *L, int idx, int64_t dflt)
{
    if (lua_isnoneornil(L, idx))
        return dflt;
    lua_Number v = luaL_checknumber(L, idx);
    if (!(v >= 0 && v <= 9007199254740992.0) || v != (lua_Number)(int64_t)v)
        luaL_argerror(L, idx, "a whole number >= 0 expected");
    return (int64_t)v;
}

/* The splice way's pipe, as big as a chunk, and its own fd of the
 * socket (fs.h, fs_splice): all three count against the fd limit. */
static int make_pipe(struct lua_sendfile *j, int sock_fd)
{
    struct core *k = j->h->k;
    int ret = fs_pipe(k, j->pipe);
    if (ret) {
        j->pipe[0] = j->pipe[1] = -1;
        return ret;
    }
    if ((j->sock = fs_dup(k, sock_fd)) < 0) {
        ret = j->sock;
        j->sock = -1;
        return ret;
    }
    if (fcntl(j->pipe[1], F_SETPIPE_SZ, SPLICE_CHUNK) < 0)
        j->cap = 64u << 10; /* what a pipe holds by default */
    else
        j->cap = SPLICE_CHUNK;
    return 0;
}

static bool want_splice(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return false;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "splice");
    bool on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return on;
}

/* A job for off and len (-1: to the end), with its chunk buffer or its
 * pipe; NULL and *err when it cannot be made. */
static struct lua_sendfile *job_new(struct lua_host *h, struct lua_sock *s,
                                    int64_t off, int64_t len, bool splice,
                                    int *err)
{
    struct lua_sendfile *j = calloc(1, sizeof *j);
    if (!j) {
        *err = -ENOMEM;
        return NULL;
    }
    j->h = h;
    j->s = s;
    j->off = (uint64_t)off;
    j->left = len < 0 ? UINT64_MAX : (uint64_t)len;
    j->pipe[0] = j->pipe[1] = j->sock = -1;
    j->splice = splice;
    *err = 0;
    if (splice) {
        *err = make_pipe(j, s->c->fd);
    } else {
        size_t hw = h->k->conns.high_water;
        j->cap = hw < (16u << 10) ? 16u << 10 : hw > (1u << 20) ? 1u << 20 : hw;
        if (j->left < j->cap)
            j->cap = (size_t)j->left;
    }
    if (*err) {
        job_free(j);
        return NULL;
    }
    return j;
}

/* The first request: the first chunk of f, or the open of path. */
static int job_start(struct lua_sendfile *j, struct fs_file *f, const char *path)
{
    struct core *k = j->h->k;
    struct conn *c = j->s->c;
    /* what was sent before (an HTTP head, say) goes with the first chunk,
     * unless part of it is already on its way */
    if (!j->splice && sendq_pending(&c->q) && !sendq_busy(&c->q) &&
        !(c->flags & CF_HWM)) { /* (above the mark the job waits for a drain) */
        core_cork(k, c, true);
        j->lead = sendq_pending(&c->q);
    }
    if (!j->splice && !c->tp) /* TLS records would not fit segments anyway */
        j->seg = net_mss(c->fd);
    if (f) {
        j->f = f;
        fs_hold(f);
        return submit(j, next_len(j));
    }
    j->own = true;
    struct fs_req *r = fs_req_new(k, on_open, j);
    int ret = r ? fs_open(k, r, path, O_RDONLY, 0, NULL) : -ENOMEM;
    if (ret)
        fs_req_free(r);
    else
        j->busy = true;
    return ret;
}

/* sock:send_file(file_or_path [, offset [, length [, opts]]]) -> bytes
 * sent, or nil, err. */
int lua_sendfile(lua_State *L)
{
    struct lua_host *h = HOST(L);
    struct lua_sock *s = lua_sock_check(L);
    bool is_file = lua_fs_is_file(L, 2);
    if (!is_file && !lua_isstring(L, 2))
        return luaL_argerror(L, 2, "a file or a path expected");
    if (!is_file)
        lua_fs_check_path(L, 2);
    int64_t off = opt_count(L, 3, 0);
    int64_t len = opt_count(L, 4, -1);
    bool splice = want_splice(L, 5);
    struct conn *c = s->c;
    if (!c || c->state != CONN_OPEN)
        return lua_sock_fail(L, "closed");
    if (s->writer)
        return lua_sock_fail(L, "socket busy writing");
    if (splice && c->tp)
        return lua_sock_fail(L, "splice works on plain TCP only");
    if (splice && (sendq_busy(&c->q) || sendq_pending(&c->q)))
        return lua_sock_fail(L, "splice needs the output sent first");
    struct fs_file *f = is_file ? lua_fs_file_at(L, 2) : NULL;
    if (is_file && !f)
        return lua_sock_fail(L, "closed");
    if (len == 0)
        return lua_pushnumber(L, 0), 1;
    if (L != s->home)
        lua_co_check(L, h, "sock:send_file");
    int ret;
    struct lua_sendfile *j = job_new(h, s, off, len, splice, &ret);
    if (!j)
        return lua_sock_fail(L, strerror(-ret));
    s->writer = L;
    s->sf = j;
    if ((ret = job_start(j, f, is_file ? NULL : lua_tostring(L, 2)))) {
        uncork(j);
        s->writer = NULL;
        s->sf = NULL;
        job_free(j);
        return lua_sock_fail(L, strerror(-ret));
    }
    progress(j);
    return lua_yield(L, 0);
}
