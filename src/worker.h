/* worker.h - one worker: its ring, buffer pool, connections and Lua. */
#ifndef MR_WORKER_H
#define MR_WORKER_H

#include "bufring.h"
#include "cli.h"
#include "conn.h"
#include "loop.h"
#include "timer.h"
#include "watch.h"

#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <time.h>

struct lua_host;

struct worker_stats {
    uint64_t accepted;
    uint64_t bytes_in, bytes_out;
    uint64_t lua_errors;
    uint64_t enobufs;
    uint64_t reloads;
};

struct worker {
    const struct cli_opts *opts;
    struct loop loop;
    struct bufring bufs;
    struct conn_table conns;
    struct lua_host *lua;
    struct worker_stats stats;
    uint64_t now;              /* monotonic ns, read once per batch */
    struct timer_heap timers;  /* Lua timers and idle timeouts */
    struct __kernel_timespec connect_ts; /* timeout of outbound connects */

    int listen_fd;
    bool accept_armed;
    bool accept_paused;        /* EMFILE/ENFILE: waiting for fds */
    bool accept_retry_armed;   /* the retry timeout is in flight */
    struct __kernel_timespec accept_retry_ts;
    time_t warned_accept, warned_full;   /* rate-limit repeated warnings */

    int signal_fd;
    struct signalfd_siginfo siginfo;

    struct slotvec rearm;      /* connections whose receive must be re-armed */

    struct watch watch;        /* the script's files; fd -1 when off */
    bool reload_pending;       /* reload between this batch and the next */
    bool reload_timer_armed;
    uint64_t reload_at;        /* monotonic ns: when the saves have settled */
    struct __kernel_timespec reload_ts;

    /* When the current batch began (monotonic ns), 0 while waiting: a
     * watchdog (the master, or a thread) sees a handler that never ends.
     * Shared memory with several workers. */
    uint64_t *busy_since;

    bool stopping;             /* graceful shutdown under way */
    bool stop_now;             /* leave the loop at once */
    struct __kernel_timespec shutdown_ts;
};

/* Set up the ring, buffers and signal handling around an already bound
 * listen_fd and a loaded Lua host; busy_since is the watchdog's word.
 * Returns 0 or -1 (logged). */
int worker_init(struct worker *w, const struct cli_opts *o, int listen_fd,
                struct lua_host *lua, uint64_t *busy_since);

/* Serve until shut down. Returns the process exit status. */
int worker_run(struct worker *w);

void worker_destroy(struct worker *w);

/* The signals a worker takes (through its signalfd): SIGTERM, SIGINT,
 * SIGHUP, SIGUSR1. The master forwards the same ones. */
void worker_signals(sigset_t *set);

/* conn_io.c: the ring side of connections */
void conn_io_arm_recv(struct worker *w, struct conn *c);
void conn_io_on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe);
void conn_io_on_send(struct worker *w, struct conn *c, struct io_uring_cqe *cqe);
void conn_io_on_close(struct worker *w, struct conn *c, struct io_uring_cqe *cqe);
void conn_io_on_connect(struct worker *w, struct conn *c, struct io_uring_cqe *cqe);
void conn_io_resume(struct worker *w);
/* Start an outbound connection on c (CONNECTING) to addr; takes addr. */
void conn_io_connect(struct worker *w, struct conn *c, void *addr, unsigned len);
/* Idle timeouts: (re)schedule c's check; run the due ones. */
void conn_io_idle_arm(struct worker *w, struct conn *c);
void conn_io_idle_check(struct worker *w, uint64_t key);
void conn_io_flush(struct worker *w);
void conn_io_notify_closes(struct worker *w);
void conn_io_rearm(struct worker *w);

/* reload.c: watching the script and reloading it */
void reload_init(struct worker *w);
void reload_on_inotify(struct worker *w, int res);
void reload_on_timer(struct worker *w);
void reload_run(struct worker *w);

/* accept.c: the listener */
void accept_arm(struct worker *w);
void accept_on_cqe(struct worker *w, struct io_uring_cqe *cqe);
void accept_on_retry(struct worker *w);
void accept_stop(struct worker *w);

#endif
