/* master.c - the master process of a multi-worker moonring.
 *
 * Each worker is a process with its own ring, its own Lua state and its
 * own SO_REUSEPORT listener, which the master opened and keeps: when a
 * worker dies, the connections the kernel queued on its listener wait
 * there for its successor instead of being lost. The master does no I/O
 * of its own; it sleeps in sigtimedwait, forwards SIGHUP, SIGUSR1,
 * SIGTERM and SIGINT, and restarts a worker that dies, with a back-off
 * so that a script that crashes at start-up cannot make it loop hot. It
 * also kills (and so restarts) a worker whose heartbeat (worker.h) stops:
 * stuck in a handler or in its script's top-level code, stuck in the
 * kernel, or stopped. A lone worker runs in the process itself, watched
 * by a thread. */
#include "master.h"
#include "log.h"
#include "timer.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
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
    uint64_t *beat;          /* its heartbeat, shared with it: see worker.h */
    pid_t pid;               /* 0 while waiting to be restarted */
    bool killed;             /* by the watchdog: once is enough */
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

/* How long, in seconds, the worker whose heartbeat is `beat` has made
 * no progress, if that is longer than --handler-timeout allows; else 0.
 * A wait is counted from the start of its turn, and may itself last up
 * to worker_beat_ms. */
static double stuck_for(const struct cli_opts *o, uint64_t beat, uint64_t now)
{
    uint64_t at = beat_ns(beat);
    if (o->handler_timeout <= 0 || !beat || now <= at)
        return 0;
    double limit = o->handler_timeout;
    if (beat_phase(beat) == BEAT_WAITING)
        limit += worker_beat_ms(o) / 1e3;
    double s = (double)(now - at) / 1e9;
    return s > limit ? s : 0;
}

/* The state of pid's main thread, from /proc: 'R' running, 'S' asleep,
 * 'D' asleep in the kernel, 'T' stopped...; '?' when unknown. Read only
 * when a worker is found stuck, to say where. */
static char proc_state(pid_t pid)
{
    char path[32], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return '?';
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    /* "pid (comm) S ...": the name may hold spaces and parentheses */
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] ? p[2] : '?';
}

/* Where a worker that made no progress is, for the log line: stopped,
 * or else in the step its heartbeat names. A batch of completions whose
 * thread sleeps is in a system call that a handler made. */
static const char *stuck_where(uint64_t beat, pid_t pid)
{
    char st = proc_state(pid);
    if (st == 'T' || st == 't')
        return "stopped";
    switch (beat_phase(beat)) {
    case BEAT_LOADING:
        return "stuck loading the script";
    case BEAT_RELOADING:
        return "stuck reloading the script";
    case BEAT_WAITING:
        return "stuck in the kernel, in its wait";
    default:
        return st == 'S' || st == 'D' ? "blocked in a system call in a handler"
                                      : "stuck in a handler";
    }
}

static pid_t start(const struct cli_opts *o, const int *fds, int n, int i,
                   uint64_t *beat)
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
    /* Its signals stay blocked (for its signalfd) while it loads the
     * script, except these: a worker still loading has nothing to drain,
     * and the one whose script never ends must still go with its master,
     * as a lone worker would. */
    sigset_t end;
    sigemptyset(&end);
    sigaddset(&end, SIGTERM);
    sigaddset(&end, SIGINT);
    sigprocmask(SIG_UNBLOCK, &end, NULL);
    int nl = o->nlisten;
    const int *mine = fds + i * nl;
    for (int j = 0; j < n * nl; j++) {
        bool keep = false;
        for (int l = 0; l < nl; l++)
            keep |= fds[j] == mine[l];
        if (!keep)
            close(fds[j]);
    }
    _exit(worker_main(o, mine, nl, i + 1, beat));
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
            /* one that never got through its script failed to start,
             * however long it took: restart it ever more slowly too */
            int64_t lived = now_ms() - c[i].started;
            bool loaded = beat_phase(beat_get(c[i].beat)) != BEAT_LOADING;
            c[i].backoff = lived >= STABLE_MS && loaded ? 0
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

/* A worker whose heartbeat stopped: a handler that never returns (an
 * endless loop compiled by the JIT cannot be interrupted from inside),
 * the same in the script's top-level code, a process stopped or stuck
 * in the kernel. Its listener would go on taking its share of new
 * connections, never to serve them: kill it (SIGKILL ends a stopped
 * process too); it is restarted as any worker that dies. */
static void watchdog(const struct cli_opts *o, struct child *c, int n)
{
    uint64_t now = timer_now();
    for (int i = 0; i < n; i++) {
        if (c[i].pid <= 0 || c[i].killed)
            continue;
        uint64_t beat = beat_get(c[i].beat);
        double s = stuck_for(o, beat, now);
        if (s == 0)
            continue;
        log_error("worker %d (pid %d) made no progress for %.1f s (%s): killing it",
                  i + 1, (int)c[i].pid, s, stuck_where(beat, c[i].pid));
        kill(c[i].pid, SIGKILL);
        c[i].killed = true;
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
            /* a fresh heartbeat, from before the fork: watched from the
             * start, whatever the last one left there */
            beat_set(c[i].beat, timer_now(), BEAT_LOADING);
            c[i].killed = false;
            c[i].pid = start(o, fds, n, i, c[i].beat);
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
    uint64_t *beat = mmap(NULL, (size_t)n * sizeof *beat, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!c || beat == MAP_FAILED) {
        free(c);
        return 1;
    }
    for (int i = 0; i < n; i++)
        c[i].beat = &beat[i];
    sigset_t set;
    worker_signals(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    log_info("master %d: starting %d workers", (int)getpid(), n);

    bool stopping = false;
    int64_t deadline = 0;
    int64_t look = worker_beat_ms(o);  /* how often the watchdog looks */
    for (;;) {
        int64_t wait = stopping ? 100 : restart_due(o, fds, c, n);
        if (look && wait > look)
            wait = look;
        /* also while stopping: a worker stuck there would hold the
         * shutdown up until its deadline */
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
    munmap(beat, (size_t)n * sizeof *beat);
    log_info("master: stopped");
    return 0;
}

/* The watchdog of a lone worker. */
struct lone_watch {
    struct cli_opts o;         /* a copy: main's goes when main returns */
    uint64_t beat;
};

/* The same watch from a thread of the process: it ends a worker stuck
 * in a handler, in its script or in the kernel, but not one that is
 * stopped, as it stops with it: only something outside the process (a
 * supervisor's health check) can see that. */
static void *lone_watchdog(void *arg)
{
    struct lone_watch *lw = arg;
    unsigned ms = worker_beat_ms(&lw->o);
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };
    for (;;) {
        nanosleep(&ts, NULL);
        uint64_t beat = beat_get(&lw->beat);
        double s = stuck_for(&lw->o, beat, timer_now());
        if (s > 0) {
            log_error("made no progress for %.1f s (%s): exiting", s,
                      stuck_where(beat, getpid()));
            _exit(70);
        }
    }
    return NULL;
}

int master_run_one(const struct cli_opts *o, const int *fds)
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
    return worker_main(o, fds, o->nlisten, 1, &lw.beat);
}
