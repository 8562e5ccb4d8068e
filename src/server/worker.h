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

    /* When the current turn began (monotonic ns), 0 while waiting: a
     * watchdog (the master, or a thread) sees a handler that never ends.
     * Shared memory with several workers. */
    uint64_t *busy_since;

    bool stopping;             /* graceful shutdown under way */
    bool stop_now;             /* leave the loop at once */
};

/* A worker's whole life: load the script, serve on listen_fd until shut
 * down, return the exit status. `index` counts from 1; busy_since is
 * where it tells the watchdog since when it has been busy. */
int worker_main(const struct cli_opts *o, int listen_fd, int index,
                uint64_t *busy_since);

/* Load the script for worker `index` as the options say; NULL with one
 * line in err if it does not load. */
struct lua_host *worker_load(const struct cli_opts *o, int index, char *err,
                             size_t len);

/* The signals a worker takes (through its signalfd): SIGTERM, SIGINT,
 * SIGHUP, SIGUSR1. The master forwards the same ones. */
void worker_signals(sigset_t *set);

#endif
