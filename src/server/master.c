/* master.c - the master process of a multi-worker moonring.
 *
 * Each worker is a process with its own ring, its own Lua state and its
 * own SO_REUSEPORT listener, which the master opened and keeps: when a
 * worker dies, the connections the kernel queued on its listener wait
 * there for its successor instead of being lost. The master does no I/O
 * of its own; it sleeps in sigtimedwait, forwards SIGHUP, SIGUSR1,
 * SIGTERM and SIGINT, and restarts a worker that dies, with a back-off
 * so that a script that crashes at start-up cannot make it loop hot. It
 * also kills (and so restarts) a worker stuck in a handler. A lone
 * worker runs in the process itself, watched by a thread. */
#include "master.h"
#include "log.h"
#include "timer.h"
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
#define STABLE_MS 5000       /* a worker that lived this long died by accident */

struct child {
    uint64_t *busy;          /* shared with the worker: see worker.h */
    pid_t pid;               /* 0 while waiting to be restarted */
    int64_t started;         /* ms */
    int64_t restart_at;      /* ms, when pid is 0 */
    int backoff;             /* ms */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Is a worker that has been busy since `since` (monotonic ns) stuck? */
static bool stuck(const struct cli_opts *o, uint64_t since, uint64_t now)
{
    return o->handler_timeout > 0 && since && now > since &&
           (double)(now - since) / 1e9 > o->handler_timeout;
}

static pid_t start(const struct cli_opts *o, const int *fds, int n, int i,
                   uint64_t *busy)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork: %s", strerror(errno));
        return -1;
    }
    if (pid > 0)
        return pid;
    /* the worker: die with the master; keep only its own listener */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        _exit(1);
    for (int j = 0; j < n; j++)
        if (fds[j] != fds[i])
            close(fds[j]);
    _exit(worker_main(o, fds[i], i + 1, busy));
}

static void reap(struct child *c, int n, bool stopping)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < n; i++) {
            if (c[i].pid != pid)
                continue;
            c[i].pid = 0;
            if (stopping)
                break;
            int64_t lived = now_ms() - c[i].started;
            c[i].backoff = lived >= STABLE_MS ? 0
                         : c[i].backoff ? c[i].backoff * 2 : BACKOFF_MIN_MS;
            if (c[i].backoff > BACKOFF_MAX_MS)
                c[i].backoff = BACKOFF_MAX_MS;
            c[i].restart_at = now_ms() + c[i].backoff;
            if (WIFSIGNALED(st))
                log_error("worker %d (pid %d) killed by signal %d (%s); "
                          "restarting in %d ms", i + 1, (int)pid, WTERMSIG(st),
                          strsignal(WTERMSIG(st)), c[i].backoff);
            else
                log_error("worker %d (pid %d) exited with status %d; restarting in %d ms",
                          i + 1, (int)pid, WEXITSTATUS(st), c[i].backoff);
        }
    }
}

static void forward(struct child *c, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (c[i].pid > 0)
            kill(c[i].pid, sig);
}

/* A handler that never returns (an endless loop compiled by the JIT
 * cannot be interrupted from inside): kill its worker; it is restarted. */
static void watchdog(const struct cli_opts *o, struct child *c, int n)
{
    uint64_t now = timer_now();
    for (int i = 0; i < n; i++) {
        uint64_t since = __atomic_load_n(c[i].busy, __ATOMIC_RELAXED);
        if (c[i].pid > 0 && stuck(o, since, now)) {
            log_error("worker %d (pid %d) stuck in a handler for %.0f s: killing it",
                      i + 1, (int)c[i].pid, (double)(now - since) / 1e9);
            kill(c[i].pid, SIGKILL);
            __atomic_store_n(c[i].busy, 0, __ATOMIC_RELAXED);
        }
    }
}

static int live(const struct child *c, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += c[i].pid > 0;
    return k;
}

/* Start the workers that are due; returns ms until the next one is. */
static int64_t restart_due(const struct cli_opts *o, const int *fds,
                           struct child *c, int n)
{
    int64_t next = 1000, now = now_ms();
    for (int i = 0; i < n; i++) {
        if (c[i].pid > 0)
            continue;
        if (c[i].restart_at <= now) {
            __atomic_store_n(c[i].busy, 0, __ATOMIC_RELAXED);
            c[i].pid = start(o, fds, n, i, c[i].busy);
            c[i].started = now;
            if (c[i].pid < 0) {
                c[i].pid = 0;
                c[i].restart_at = now + BACKOFF_MAX_MS;
            }
        } else if (c[i].restart_at - now < next) {
            next = c[i].restart_at - now;
        }
    }
    return next;
}

int master_run(const struct cli_opts *o, const int *fds, int n)
{
    struct child *c = calloc((size_t)n, sizeof *c);
    uint64_t *busy = mmap(NULL, (size_t)n * sizeof *busy, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!c || busy == MAP_FAILED) {
        free(c);
        return 1;
    }
    for (int i = 0; i < n; i++)
        c[i].busy = &busy[i];
    sigset_t set;
    worker_signals(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    log_info("master %d: starting %d workers", (int)getpid(), n);

    bool stopping = false;
    int64_t deadline = 0;
    for (;;) {
        int64_t wait = stopping ? 100 : restart_due(o, fds, c, n);
        if (!stopping)
            watchdog(o, c, n);
        if (stopping && live(c, n) == 0)
            break;
        if (stopping && now_ms() > deadline) {
            log_warn("workers did not stop in time: killing them");
            forward(c, n, SIGKILL);
            deadline = INT64_MAX;
        }
        struct timespec ts = { (time_t)(wait / 1000), (long)(wait % 1000) * 1000000 };
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGCHLD || sig < 0) {
            reap(c, n, stopping);
        } else if (sig == SIGTERM || sig == SIGINT) {
            if (stopping) {
                forward(c, n, SIGKILL);   /* a second signal: now */
                continue;
            }
            log_info("master: %s, stopping the workers", strsignal(sig));
            stopping = true;
            deadline = now_ms() + (int64_t)(o->shutdown_timeout * 1000) + 5000;
            forward(c, n, SIGTERM);
        } else {
            forward(c, n, sig);           /* SIGHUP, SIGUSR1 */
        }
    }
    free(c);
    munmap(busy, (size_t)n * sizeof *busy);
    log_info("master: stopped");
    return 0;
}

/* The watchdog of a lone worker. */
struct lone_watch {
    struct cli_opts o;         /* a copy: main's goes when main returns */
    uint64_t busy_since;
};

static void *lone_watchdog(void *arg)
{
    struct lone_watch *lw = arg;
    for (;;) {
        sleep(1);
        uint64_t since = __atomic_load_n(&lw->busy_since, __ATOMIC_RELAXED);
        if (stuck(&lw->o, since, timer_now())) {
            log_error("stuck in a handler for over %.0f s: exiting",
                      lw->o.handler_timeout);
            _exit(70);
        }
    }
    return NULL;
}

int master_run_one(const struct cli_opts *o, int fd)
{
    /* static: the thread lives on while the process exits */
    static struct lone_watch lw;
    lw.o = *o;
    pthread_t t;
    sigset_t all, old;
    sigfillset(&all);
    /* the thread starts with every signal blocked: they belong to the
     * worker's signalfd */
    pthread_sigmask(SIG_BLOCK, &all, &old);
    if (o->handler_timeout > 0)
        pthread_create(&t, NULL, lone_watchdog, &lw);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return worker_main(o, fd, 1, &lw.busy_since);
}
