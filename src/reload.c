/* reload.c - the worker's side of hot reload: watch the script's files
 * through the ring, let a burst of saves settle, then reload between two
 * completion batches. SIGHUP asks for a reload directly. */
#include "log.h"
#include "lua_host.h"
#include "ud.h"
#include "worker.h"

#include <string.h>
#include <time.h>

/* Saves that come closer together than this make one reload: an editor's
 * save can be several writes, or a write and a rename. */
#define RELOAD_SETTLE_NS (30 * 1000 * 1000ull)

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void arm_read(struct worker *w)
{
    struct io_uring_sqe *sqe = loop_sqe(&w->loop);
    io_uring_prep_read(sqe, w->watch.fd, w->watch.buf, sizeof w->watch.buf, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_INOTIFY, 0, 0));
}

static void add_file(void *ctx, const char *path)
{
    struct worker *w = ctx;
    int ret = watch_add(&w->watch, path);
    if (ret < 0)
        log_warn("cannot watch %s for changes: %s", path, strerror(-ret));
}

void reload_init(struct worker *w)
{
    w->watch.fd = -1;
    if (w->opts->no_reload || !w->opts->script)
        return;
    int ret = watch_init(&w->watch);
    if (ret < 0) {
        log_warn("inotify: %s; the script will reload on SIGHUP only",
                 strerror(-ret));
        return;
    }
    lua_host_each_file(w->lua, add_file, w);
    arm_read(w);
}

static void arm_timer(struct worker *w, uint64_t ns)
{
    w->reload_ts.tv_sec = (long long)(ns / 1000000000ull);
    w->reload_ts.tv_nsec = (long long)(ns % 1000000000ull);
    struct io_uring_sqe *sqe = loop_sqe(&w->loop);
    io_uring_prep_timeout(sqe, &w->reload_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_RELOAD_TIMER, 0, 0));
    w->reload_timer_armed = true;
}

void reload_on_inotify(struct worker *w, int res)
{
    if (res < 0) {
        log_error("reading inotify: %s; the script will reload on SIGHUP only",
                  strerror(-res));
        return;
    }
    if (watch_match(&w->watch, w->watch.buf, (size_t)res)) {
        /* each save pushes the reload back: it runs once they settle */
        w->reload_at = mono_ns() + RELOAD_SETTLE_NS;
        if (!w->reload_timer_armed)
            arm_timer(w, RELOAD_SETTLE_NS);
    }
    arm_read(w);
}

void reload_on_timer(struct worker *w)
{
    w->reload_timer_armed = false;
    uint64_t now = mono_ns();
    if (now < w->reload_at)
        arm_timer(w, w->reload_at - now);
    else
        w->reload_pending = true;
}

/* Runs between two batches, when no handler is on the stack. */
void reload_run(struct worker *w)
{
    char err[1024];
    w->reload_pending = false;
    uint64_t t0 = mono_ns();
    if (lua_host_reload(w->lua, err, sizeof err)) {
        log_error("reload failed, the running handlers stay: %s", err);
        return;
    }
    w->stats.reloads++;
    if (w->watch.fd >= 0)
        lua_host_each_file(w->lua, add_file, w); /* newly required modules */
    log_info("reloaded %s in %.2f ms (read %s); %u connection(s) carried over",
             lua_host_script_name(w->lua), (double)(mono_ns() - t0) / 1e6,
             lua_host_files_read(w->lua), w->conns.live);
}
