/* worker.h - one worker process: its core, its Lua binding, its signals
 * and hot reload. */
#ifndef MR_WORKER_H
#define MR_WORKER_H

#include "cli.h"
#include "core.h"
#include "lua_host.h"
#include "reload.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/signalfd.h>

struct worker {
    const struct cli_opts *opts;
    struct core core;
    struct lua_host *lua;
    struct reloader reload;

    int signal_fd;
    struct signalfd_siginfo siginfo;
    struct core_op signal_op;  /* the read of the signalfd */
    struct core_op shutdown_op; /* --shutdown-timeout expired */
    struct __kernel_timespec shutdown_ts;

    /* The heartbeat (below), which a watchdog reads: in memory shared
     * with the master, or the lone worker's own. */
    uint64_t *beat;

    bool stopping;             /* graceful shutdown under way */
    bool stop_now;             /* leave the loop at once */
};

/* The heartbeat: one word, the monotonic ns at which the worker's
 * current step began, with what the step is in the three low bits. Its
 * loop stores it twice per turn, before the wait and after, and the wait
 * lasts at most worker_beat_ms even when idle: a step older than
 * --handler-timeout (a wait older than that plus worker_beat_ms) means a
 * worker that is stuck, in a handler, in its script's top-level code or
 * in the kernel, or stopped; never one that is merely idle. 0: not
 * watched (not started yet, or done). */
enum beat_phase {
    BEAT_RUNNING = 1,          /* handling a batch of completions */
    BEAT_WAITING = 2,          /* in its io_uring_enter */
    BEAT_LOADING = 3,          /* running the script's top-level code */
    BEAT_RELOADING = 4,        /* the same, for a reload */
};
#define BEAT_PHASE_BITS 7ull

static inline void beat_set(uint64_t *beat, uint64_t ns, enum beat_phase p)
{
    /* relaxed: the watchdog needs no order, only a value not torn */
    __atomic_store_n(beat, (ns & ~BEAT_PHASE_BITS) | (uint64_t)p, __ATOMIC_RELAXED);
}
static inline uint64_t beat_get(const uint64_t *beat)
{
    return __atomic_load_n(beat, __ATOMIC_RELAXED);
}
static inline uint64_t beat_ns(uint64_t b) { return b & ~BEAT_PHASE_BITS; }
static inline unsigned beat_phase(uint64_t b) { return (unsigned)(b & BEAT_PHASE_BITS); }

/* How often the heartbeat of an idle worker advances, and so how often
 * a watchdog looks: once a second, or every half --handler-timeout when
 * that is under 2 s; 0 when there is no watchdog. */
unsigned worker_beat_ms(const struct cli_opts *o);

/* A worker's whole life: load the script, serve on listen_fd until shut
 * down, return the exit status. `index` counts from 1; beat is its
 * heartbeat, for the watchdog. */
int worker_main(const struct cli_opts *o, const int *fds, int nl, int index,
                uint64_t *beat);

/* Load the script for worker `index` as the options say; NULL with one
 * line in err if it does not load. */
struct lua_host *worker_load(const struct cli_opts *o, int index, char *err,
                             size_t len);

/* The signals a worker takes (through its signalfd): SIGTERM, SIGINT,
 * SIGHUP, SIGUSR1. The master forwards the same ones. */
void worker_signals(sigset_t *set);

#endif
