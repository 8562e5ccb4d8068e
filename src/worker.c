/* worker.c - one worker's loop: submit-and-wait, drain, notify closes,
 * flush sends, re-arm receives. Signals arrive through a signalfd read on
 * the ring, so nothing but io_uring_enter blocks. */
#include "worker.h"
#include "log.h"
#include "lua_host.h"
#include "ud.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUF_GROUP 1

static void arm_signal(struct worker *w)
{
    struct io_uring_sqe *sqe = loop_sqe(&w->loop);
    io_uring_prep_read(sqe, w->signal_fd, &w->siginfo, sizeof w->siginfo, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_SIGNAL, 0, 0));
}

void worker_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
}

static int setup_signals(struct worker *w)
{
    sigset_t set;
    worker_signals(&set);
    if (sigprocmask(SIG_BLOCK, &set, NULL))
        return -1;
    signal(SIGPIPE, SIG_IGN);
    w->signal_fd = signalfd(-1, &set, SFD_CLOEXEC);
    return w->signal_fd < 0 ? -1 : 0;
}

static unsigned pow2_at_least(unsigned n)
{
    unsigned p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

int worker_init(struct worker *w, const struct cli_opts *o, int listen_fd,
                struct lua_host *lua, uint64_t *busy_since)
{
    int ret;
    memset(w, 0, sizeof *w);
    w->busy_since = busy_since;
    w->opts = o;
    w->listen_fd = listen_fd;
    w->signal_fd = -1;
    w->watch.fd = -1;
    w->lua = lua;
    w->now = timer_now();
    w->connect_ts.tv_sec = 10;

    /* room for a receive and a send CQE per connection plus one per
     * buffer, so that a full batch cannot overflow the CQ */
    unsigned cq = pow2_at_least(2 * o->max_conns + o->buffers + 64);
    if (cq > 65536)
        cq = 65536;
    if (cq < 4096)
        cq = 4096;
    if ((ret = loop_init(&w->loop, 4096, cq))) {
        log_error("io_uring setup failed: %s", strerror(-ret));
        return -1;
    }
    if (loop_set_batch_wait(&w->loop, o->batch_wait_us))
        log_warn("--batch-wait needs Linux 6.12 or later: not batching");
    if ((ret = bufring_init(&w->bufs, o->buffers, o->buffer_size)) ||
        (ret = bufring_register(&w->bufs, &w->loop.ring, BUF_GROUP))) {
        log_error("receive buffer ring: %s", strerror(-ret));
        return -1;
    }
    if ((ret = conn_table_init(&w->conns, o->max_conns))) {
        log_error("connection table: %s", strerror(-ret));
        return -1;
    }
    if (o->high_water) {
        w->conns.high_water = o->high_water;
        w->conns.low_water = o->high_water / 4;
    }
    if (setup_signals(w)) {
        log_error("signals: %s", strerror(errno));
        return -1;
    }
    lua_host_attach(lua, w);
    reload_init(w);
    return 0;
}

void worker_destroy(struct worker *w)
{
    watch_destroy(&w->watch);
    /* the ring first: after it, the kernel holds no send or receive
     * buffer of ours, even of connections a shutdown timeout cut off */
    loop_destroy(&w->loop);
    conn_table_destroy(&w->conns);
    bufring_destroy(&w->bufs);
    timer_heap_free(&w->timers);
    free(w->rearm.v);
    if (w->signal_fd >= 0)
        close(w->signal_fd);
    if (w->listen_fd >= 0)
        close(w->listen_fd);
}

static void log_stats(struct worker *w)
{
    struct worker_stats *s = &w->stats;
    double per = w->loop.enters ? (double)w->loop.cqes / w->loop.enters : 0;
    log_info("stats: conns=%u accepted=%llu bytes_in=%llu bytes_out=%llu "
             "enters=%llu cqes=%llu cqes_per_enter=%.2f enobufs=%llu "
             "reloads=%llu lua_errors=%llu lua_mem=%zu",
             w->conns.live, (unsigned long long)s->accepted,
             (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out,
             (unsigned long long)w->loop.enters, (unsigned long long)w->loop.cqes,
             per, (unsigned long long)s->enobufs,
             (unsigned long long)s->reloads, (unsigned long long)s->lua_errors, lua_host_mem(w->lua));
}

/* Graceful shutdown: stop accepting, tell every connection, send what is
 * queued, close; give up after --shutdown-timeout. */
static void begin_shutdown(struct worker *w, const char *why)
{
    log_info("%s: shutting down, %u connection(s) to close", why,
             w->conns.live);
    w->stopping = true;
    accept_stop(w);
    for (uint32_t i = 0; i < w->conns.used_hi; i++)
        if (w->conns.c[i].state == CONN_OPEN)
            conn_close(&w->conns, &w->conns.c[i], REASON_SHUTDOWN, false);
    double t = w->opts->shutdown_timeout;
    w->shutdown_ts.tv_sec = (long long)t;
    w->shutdown_ts.tv_nsec = (long long)((t - (double)(long long)t) * 1e9);
    struct io_uring_sqe *sqe = loop_sqe(&w->loop);
    io_uring_prep_timeout(sqe, &w->shutdown_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_SHUTDOWN_TIMER, 0, 0));
}

static void on_signal(struct worker *w, int res)
{
    if (res != (int)sizeof w->siginfo) {
        log_error("signalfd read: %s", res < 0 ? strerror(-res) : "short read");
        w->stop_now = true;
        return;
    }
    int sig = (int)w->siginfo.ssi_signo;
    switch (sig) {
    case SIGTERM:
    case SIGINT:
        if (w->stopping) {
            log_warn("%s again: exiting now", strsignal(sig));
            w->stop_now = true;
        } else {
            begin_shutdown(w, strsignal(sig));
        }
        break;
    case SIGHUP:
        log_info("SIGHUP: reloading");
        w->reload_pending = true;
        break;
    case SIGUSR1:
        log_stats(w);
        break;
    }
    arm_signal(w);
}

static void dispatch(void *ctx, struct io_uring_cqe *cqe)
{
    struct worker *w = ctx;
    uint64_t ud = cqe->user_data;
    enum ud_op op = ud_op(ud);
    struct conn *c = NULL;

    if (op == OP_RECV || op == OP_SEND || op == OP_CLOSE || op == OP_CANCEL ||
        op == OP_CONNECT) {
        c = conn_get(&w->conns, ud_slot(ud), ud_gen(ud));
        if (!c)
            return; /* late completion for a freed connection */
    }
    switch (op) {
    case OP_ACCEPT:       accept_on_cqe(w, cqe); break;
    case OP_ACCEPT_RETRY: w->accept_retry_armed = false; accept_on_retry(w); break;
    case OP_RECV:         conn_io_on_recv(w, c, cqe); break;
    case OP_SEND:         conn_io_on_send(w, c, cqe); break;
    case OP_CLOSE:        conn_io_on_close(w, c, cqe); break;
    case OP_CONNECT:      conn_io_on_connect(w, c, cqe); break;
    case OP_CANCEL:       /* only failures post; the close that follows matters */
        break;
    case OP_CLOSE_RAW:
        log_debug("close: %s", strerror(-cqe->res));
        break;
    case OP_SIGNAL:       on_signal(w, cqe->res); break;
    case OP_INOTIFY:      reload_on_inotify(w, cqe->res); break;
    case OP_RELOAD_TIMER: reload_on_timer(w); break;
    case OP_SHUTDOWN_TIMER:
        log_warn("shutdown timeout: dropping %u connection(s)", w->conns.live);
        w->stop_now = true;
        break;
    default:
        log_error("completion with unknown user_data 0x%llx (res %d)",
                  (unsigned long long)ud, cqe->res);
    }
}

/* Wait no longer than the earliest timer: the wait's own timeout, so
 * timers cost no SQE and no extra syscall. */
static struct __kernel_timespec *wait_limit(struct worker *w,
                                            struct __kernel_timespec *ts)
{
    const struct timer_entry *e = timer_peek(&w->timers);
    if (!e)
        return NULL;
    uint64_t now = timer_now();
    uint64_t d = e->due > now ? e->due - now : 0;
    ts->tv_sec = (long long)(d / 1000000000ull);
    ts->tv_nsec = (long long)(d % 1000000000ull);
    return ts;
}

static void run_timers(struct worker *w)
{
    struct timer_entry e;
    while (timer_pop_due(&w->timers, w->now, &e)) {
        if (e.kind == TIMER_IDLE)
            conn_io_idle_check(w, e.key);
        else
            lua_host_timer(w->lua, e.key, e.due);
    }
}

/* Submit the last close chains and wait, briefly, for the multishot
 * accept to end. Until its last completion the request holds the
 * listening socket open, even after we exit (the ring is torn down
 * asynchronously), and a restart would find the port in use. */
static void wait_accept_end(struct worker *w)
{
    struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 50 * 1000 * 1000 };
    for (int i = 0; i < 20 && w->accept_armed; i++) {
        int ret = loop_wait(&w->loop, &ts);
        if (ret < 0 && ret != -ETIME)
            break;
        loop_drain(&w->loop, dispatch, w);
    }
    io_uring_submit(&w->loop.ring);
}

int worker_run(struct worker *w)
{
    struct __kernel_timespec ts;
    accept_arm(w);
    arm_signal(w);
    while (!w->stop_now && !(w->stopping && w->conns.live == 0)) {
        __atomic_store_n(w->busy_since, 0, __ATOMIC_RELAXED);
        int ret = loop_wait(&w->loop, wait_limit(w, &ts));
        if (ret < 0 && ret != -ETIME) {
            log_error("io_uring_enter: %s", strerror(-ret));
            return 1;
        }
        w->now = timer_now();
        __atomic_store_n(w->busy_since, w->now, __ATOMIC_RELAXED);
        loop_drain(&w->loop, dispatch, w);
        run_timers(w);
        conn_io_resume(w);
        conn_io_notify_closes(w);
        conn_io_flush(w);
        conn_io_rearm(w);
        if (w->reload_pending && !w->stopping)
            reload_run(w);
    }
    __atomic_store_n(w->busy_since, 0, __ATOMIC_RELAXED); /* not stuck: done */
    wait_accept_end(w);
    log_info("stopped");
    return 0;
}
