/* reload.c - the worker's side of hot reload: watch the script's files
 * through the ring, let a burst of saves settle, then reload between two
 * turns of the core. SIGHUP asks for a reload directly. */
#include "reload.h"
#include "log.h"

#include <string.h>

/* Saves that come closer together than this make one reload: an editor's
 * save can be several writes, or a write and a rename. */
#define RELOAD_SETTLE_NS (30 * 1000 * 1000ull)

static void arm_read(struct reloader *r)
{
    struct io_uring_sqe *sqe = core_op_sqe(r->k, &r->read_op);
    io_uring_prep_read(sqe, r->watch.fd, r->watch.buf, sizeof r->watch.buf, 0);
}

static void add_file(void *ctx, const char *path)
{
    struct reloader *r = ctx;
    int ret = watch_add(&r->watch, path);
    if (ret < 0)
        log_warn("cannot watch %s for changes: %s", path, strerror(-ret));
}

static void arm_timer(struct reloader *r, uint64_t ns)
{
    r->ts.tv_sec = (long long)(ns / 1000000000ull);
    r->ts.tv_nsec = (long long)(ns % 1000000000ull);
    struct io_uring_sqe *sqe = core_op_sqe(r->k, &r->timer_op);
    io_uring_prep_timeout(sqe, &r->ts, 0, 0);
    r->timer_armed = true;
}

static void on_inotify(struct core *k, struct core_op *op,
                       const struct io_uring_cqe *cqe)
{
    struct reloader *r = core_op_owner(op, struct reloader, read_op);
    if (cqe->res < 0) {
        log_error("reading inotify: %s; the script will reload on SIGHUP only",
                  strerror(-cqe->res));
        return;
    }
    if (watch_match(&r->watch, r->watch.buf, (size_t)cqe->res)) {
        /* each save pushes the reload back: it runs once they settle */
        r->at = timer_now() + RELOAD_SETTLE_NS;
        if (!r->timer_armed)
            arm_timer(r, RELOAD_SETTLE_NS);
    }
    (void)k;
    arm_read(r);
}

static void on_timer(struct core *k, struct core_op *op,
                     const struct io_uring_cqe *cqe)
{
    struct reloader *r = core_op_owner(op, struct reloader, timer_op);
    (void)k, (void)cqe;
    r->timer_armed = false;
    uint64_t now = timer_now();
    if (now < r->at)
        arm_timer(r, r->at - now);
    else
        r->pending = true;
}

void reload_init(struct reloader *r, struct core *k, struct lua_host *lua,
                 bool watch)
{
    memset(r, 0, sizeof *r);
    r->k = k;
    r->lua = lua;
    r->read_op.done = on_inotify;
    r->timer_op.done = on_timer;
    r->watch.fd = -1;
    if (!watch)
        return;
    int ret = watch_init(&r->watch);
    if (ret < 0) {
        log_warn("inotify: %s; the script will reload on SIGHUP only",
                 strerror(-ret));
        return;
    }
    lua_host_each_file(lua, add_file, r);
    arm_read(r);
}

void reload_destroy(struct reloader *r)
{
    watch_destroy(&r->watch);
}

void reload_run(struct reloader *r)
{
    if (!r->pending)
        return;
    char err[1024];
    r->pending = false;
    uint64_t t0 = timer_now();
    if (lua_host_reload(r->lua, err, sizeof err)) {
        log_error("reload failed, the running handlers stay: %s", err);
        return;
    }
    if (r->watch.fd >= 0)
        lua_host_each_file(r->lua, add_file, r); /* newly required modules */
    log_info("reloaded %s in %.2f ms (read %s); %u connection(s) carried over",
             lua_host_script_name(r->lua), (double)(timer_now() - t0) / 1e6,
             lua_host_files_read(r->lua), core_live(r->k));
}
