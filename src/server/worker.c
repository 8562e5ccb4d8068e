/* worker.c - one worker: a core with the Lua binding attached, turned
 * until shut down. Signals arrive through a signalfd read on the ring,
 * so nothing but io_uring_enter blocks. */
#include "worker.h"
#include "tls.h"
#include "log.h"
#include "net.h"
#include "shdict.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void arm_signal(struct worker *w)
{
    struct io_uring_sqe *sqe = core_op_sqe(&w->core, &w->signal_op);
    io_uring_prep_read(sqe, w->signal_fd, &w->siginfo, sizeof w->siginfo, 0);
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

static void log_stats(struct worker *w)
{
    const struct core *k = &w->core;
    const struct core_stats *s = &k->stats;
    struct lua_host_stats ls;
    lua_host_stats(w->lua, &ls);
    double per = k->loop.enters ? (double)k->loop.cqes / k->loop.enters : 0;
    log_info("stats: conns=%u accepted=%llu bytes_in=%llu bytes_out=%llu "
             "enters=%llu cqes=%llu cqes_per_enter=%.2f enobufs=%llu "
             "reloads=%llu lua_errors=%llu lua_mem=%zu dgrams_in=%llu "
             "dgrams_out=%llu dgrams_truncated=%llu dgrams_dropped=%llu "
             "dgram_turns_full=%llu",
             core_live(k), (unsigned long long)s->accepted,
             (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out,
             (unsigned long long)k->loop.enters, (unsigned long long)k->loop.cqes,
             per, (unsigned long long)s->enobufs, (unsigned long long)ls.reloads,
             (unsigned long long)ls.errors, ls.mem,
             (unsigned long long)s->dgrams_in, (unsigned long long)s->dgrams_out,
             (unsigned long long)s->dgrams_truncated,
             (unsigned long long)s->dgrams_dropped,
             (unsigned long long)s->dgram_turns_full);
    for (int i = 0; i < w->opts->nshared; i++) { /* the same for every worker */
        struct shdict_stats st;
        shdict_stats(w->opts->shared[i].dict, &st);
        log_info("stats: shared %s: hits=%llu misses=%llu evictions=%llu "
                 "entries=%llu used=%llu capacity=%llu wipes=%llu",
                 w->opts->shared[i].name, (unsigned long long)st.hits,
                 (unsigned long long)st.misses, (unsigned long long)st.evictions,
                 (unsigned long long)st.entries, (unsigned long long)st.used,
                 (unsigned long long)st.capacity, (unsigned long long)st.wipes);
    }
}

static void on_shutdown_timer(struct core *k, struct core_op *op,
                              const struct io_uring_cqe *cqe)
{
    struct worker *w = core_op_owner(op, struct worker, shutdown_op);
    (void)cqe;
    log_warn("shutdown timeout: dropping %u connection(s)", core_live(k));
    w->stop_now = true;
}

/* Graceful shutdown: stop accepting, tell every connection, send what is
 * queued, close; give up after --shutdown-timeout. */
static void begin_shutdown(struct worker *w, const char *why)
{
    log_info("%s: shutting down, %u connection(s) to close", why,
             core_live(&w->core));
    w->stopping = true;
    core_shutdown(&w->core);
    double t = w->opts->shutdown_timeout;
    w->shutdown_ts.tv_sec = (long long)t;
    w->shutdown_ts.tv_nsec = (long long)((t - (double)(long long)t) * 1e9);
    struct io_uring_sqe *sqe = core_op_sqe(&w->core, &w->shutdown_op);
    io_uring_prep_timeout(sqe, &w->shutdown_ts, 0, 0);
}

static void on_signal(struct core *k, struct core_op *op,
                      const struct io_uring_cqe *cqe)
{
    struct worker *w = core_op_owner(op, struct worker, signal_op);
    (void)k;
    if (cqe->res != (int)sizeof w->siginfo) {
        log_error("signalfd read: %s",
                  cqe->res < 0 ? strerror(-cqe->res) : "short read");
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
    case SIGHUP: {
        log_info("SIGHUP: reloading");
        reload_request(&w->reload);
        char err[700];
        if (tls_server_reload(err, sizeof err))
            log_warn("TLS certificates not reloaded, the old ones stay: %s", err);
        else if (w->opts->ntls_cert)
            log_info("TLS certificates reloaded");
        break;
    }
    case SIGUSR1:
        log_stats(w);
        break;
    }
    arm_signal(w);
}

/* Seconds of an option as milliseconds; a nonzero value stays nonzero. */
static unsigned ms_of(double s)
{
    double ms = s * 1000;
    return s > 0 && ms < 1 ? 1 : (unsigned)ms;
}

static void close_fds(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

/* Set up the core around the nl already bound fds, attach the loaded Lua
 * host, and take signals. Returns 0 or -1 (logged). */
static int worker_init(struct worker *w, const struct cli_opts *o, const int *fds,
                       int nl, struct lua_host *lua, uint64_t *beat)
{
    memset(w, 0, sizeof *w);
    w->beat = beat;
    w->opts = o;
    w->signal_fd = -1;
    w->lua = lua;
    w->signal_op.done = on_signal;
    w->shutdown_op.done = on_shutdown_timer;
    w->reload.watch.fd = -1;
    struct core_config cfg = {
        .max_conns = o->max_conns, .buffers = o->buffers,
        .buffer_size = o->buffer_size, .high_water = o->high_water,
        .batch_wait_us = o->batch_wait_us,
        .max_wait_ms = worker_beat_ms(o),
        .send_timeout_ms = ms_of(o->send_timeout),
        .linger_ms = ms_of(o->lingering_time),
        .linger_gap_ms = ms_of(o->lingering_timeout),
        .linger_bytes = o->lingering_bytes,
        .udp_buffers = o->udp_buffers, .udp_buffer_size = o->udp_buffer_size,
    };
    if (core_init(&w->core, &cfg)) {
        close_fds(fds, nl);
        return -1;
    }
    for (int l = 0; l < nl; l++) { /* the core owns each fd it took */
        int ret = 0;
        if (o->listen[l].udp)
            core_udp_listen(&w->core, fds[l], &ret);
        else
            ret = core_listen(&w->core, fds[l], o->listen[l].tls ? &tls_server : NULL);
        if (ret < 0) {
            if (o->listen[l].udp) /* core_udp_listen closed it */
                l++;
            close_fds(fds + l, nl - l);
            log_error("listener: %s", strerror(-ret));
            return -1;
        }
    }
    if (setup_signals(w)) {
        log_error("signals: %s", strerror(errno));
        return -1;
    }
    lua_host_attach(lua, &w->core);
    reload_init(&w->reload, &w->core, lua, !o->no_reload && o->script);
    arm_signal(w);
    return 0;
}

static void worker_destroy(struct worker *w)
{
    reload_destroy(&w->reload);
    core_destroy(&w->core);
    if (w->signal_fd >= 0)
        close(w->signal_fd);
}

unsigned worker_beat_ms(const struct cli_opts *o)
{
    if (o->handler_timeout <= 0)
        return 0;
    /* twice per timeout: an idle worker's heartbeat is never older than
     * half of it, which leaves the other half for a late wake-up */
    double ms = o->handler_timeout * 1000 / 2;
    return ms >= 1000 ? 1000 : ms >= 1 ? (unsigned)ms : 1;
}

/* A reload runs the script's top-level code again, between two turns:
 * the watchdog tells that apart. Returns when it ended, from which the
 * next wait is counted: the reload's time is no part of it. */
static uint64_t reload(struct worker *w)
{
    beat_set(w->beat, timer_now(), BEAT_RELOADING);
    reload_run(&w->reload);
    uint64_t now = timer_now();
    beat_set(w->beat, now, BEAT_RUNNING);
    return now;
}

static int worker_run(struct worker *w)
{
    struct core *k = &w->core;
    uint64_t since = k->now;   /* when this turn began */
    while (!w->stop_now && !(w->stopping && core_live(k) == 0)) {
        /* two stores a turn, no clock read: the wait is counted from
         * the turn's start, and the watchdog allows it worker_beat_ms */
        beat_set(w->beat, since, BEAT_WAITING);
        int ret = core_wait(k);
        if (ret < 0) {
            log_error("io_uring_enter: %s", strerror(-ret));
            return 1;
        }
        since = k->now;
        beat_set(w->beat, since, BEAT_RUNNING);
        core_run(k);
        if (!w->stopping && reload_pending(&w->reload))
            since = reload(w);
    }
    __atomic_store_n(w->beat, 0, __ATOMIC_RELAXED); /* done: not to be watched */
    core_finish(k);
    log_info("stopped");
    return 0;
}

struct lua_host *worker_load(const struct cli_opts *o, int index, char *err,
                             size_t len)
{
    struct shdict *shared[CLI_MAX_SHARED];
    for (int i = 0; i < o->nshared; i++)
        shared[i] = o->shared[i].dict;
    struct lua_host_config lc = {
        .script = o->script, .argc = o->script_argc, .argv = o->script_argv,
        .memory_mib = o->lua_memory, .worker = index, .workers = o->workers,
        .shared = shared, .nshared = o->nshared,
    };
    for (int l = 0; l < o->nlisten; l++) /* what the handlers must serve */
        *(o->listen[l].udp ? &lc.datagrams : &lc.streams) = true;
    return lua_host_new(&lc, err, len);
}

int worker_main(const struct cli_opts *o, const int *fds, int nl, int index,
                uint64_t *beat)
{
    char err[1024];
    /* the script's top-level code is watched too: it may never end */
    beat_set(beat, timer_now(), BEAT_LOADING);
    struct lua_host *lua = worker_load(o, index, err, sizeof err);
    if (!lua) {
        log_error("%s", err);
        close_fds(fds, nl);
        return 1;
    }
    beat_set(beat, timer_now(), BEAT_RUNNING);
    char where[1024];
    size_t used = 0;
    for (int l = 0; l < nl && used + 2 < sizeof where; l++) {
        if (l)
            used += (size_t)snprintf(where + used, sizeof where - used, ", ");
        net_sockname(fds[l], where + used, sizeof where - used);
        used += strlen(where + used);
        if (o->listen[l].udp && used + 5 < sizeof where)
            used += (size_t)snprintf(where + used, sizeof where - used, "/udp");
    }
    struct worker w;
    int status = 1;
    if (worker_init(&w, o, fds, nl, lua, beat) == 0) {
        log_info("moonring %s listening on %s, serving %s (worker %d, max %u "
                 "connections, %u x %u B receive buffers%s)", MR_VERSION, where,
                 lua_host_script_name(lua), index, o->max_conns, o->buffers,
                 o->buffer_size, w.core.bufs.off ? ", filled incrementally" : "");
        status = worker_run(&w);
    }
    worker_destroy(&w);
    lua_host_free(lua);
    return status;
}
