/* main.c - moonring: options, start-up checks, then serve. */
#include "cli.h"
#include "log.h"
#include "tls.h"
#include "lua_host.h"
#include "master.h"
#include "net.h"
#include "shdict.h"
#include "worker.h"

#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

/* fds kept aside from --max-conns: listener, ring, signalfd, logs, Lua's
 * own files */
#define FD_RESERVE 32

static int fail(const char *msg)
{
    fprintf(stderr, "moonring: %s\n", msg);
    return 1;
}

/* Output queues take and give back buffers up to 1.25 x --high-water
 * all the time. glibc's defaults then map and unmap those of more than
 * 128 KiB, or trim the heap under them, so each one is faulted in anew,
 * and page faults are dear on a VM: at --high-water 1048576, 4
 * connections echoing 1 MiB messages ran at 148 a second against 1,338
 * with these, and 4 flooders echoed 308 against 1,291 MiB/s. Up to
 * 32 MiB of freed heap stays resident per process as the price. */
static void tune_malloc(void)
{
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
}

/* Raise the soft fd limit to the hard one and size the connection table
 * from it unless --max-conns says otherwise. */
static void fit_fd_limit(struct cli_opts *o)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    rlim_t room = rl.rlim_cur > FD_RESERVE * 2 ? rl.rlim_cur - FD_RESERVE : FD_RESERVE;
    if (room > (1u << 20))
        room = 1u << 20;
    if (!o->max_conns)
        o->max_conns = (unsigned)room;
    else if (o->max_conns > room)
        log_warn("--max-conns %u exceeds the fd limit (%llu): expect refused "
                 "connections beyond about %llu", o->max_conns,
                 (unsigned long long)rl.rlim_cur, (unsigned long long)room);
}

/* The start-up check runs the script's top-level code before there is a
 * worker or a watchdog: a loop in it would hang the start (or -t) for
 * good. An interval timer gives up after --handler-timeout, with a line
 * made beforehand, as a signal handler may only write it. */
static char stuck_msg[600];
static size_t stuck_len;

static void on_stuck_load(int sig)
{
    ssize_t r = write(STDERR_FILENO, stuck_msg, stuck_len);
    (void)sig, (void)r;
    _exit(1);
}

static void guard_load(const struct cli_opts *o, bool on)
{
    if (o->handler_timeout <= 0)
        return;
    struct itimerval it = { { 0, 0 }, { 0, 0 } };
    if (on) {
        int n = snprintf(stuck_msg, sizeof stuck_msg, "moonring: %s: its top-level "
                         "code ran for over %g s (--handler-timeout): giving up\n",
                         o->script ? o->script : "the script", o->handler_timeout);
        stuck_len = n < 0 ? 0 : (size_t)n < sizeof stuck_msg ? (size_t)n
                                                             : sizeof stuck_msg - 1;
        struct sigaction sa = { .sa_handler = on_stuck_load, .sa_flags = SA_RESTART };
        sigaction(SIGALRM, &sa, NULL);
        it.it_value.tv_sec = (time_t)o->handler_timeout;
        it.it_value.tv_usec = (suseconds_t)((o->handler_timeout -
                                             (double)it.it_value.tv_sec) * 1e6);
        if (!it.it_value.tv_sec && !it.it_value.tv_usec)
            it.it_value.tv_usec = 1;
    }
    setitimer(ITIMER_REAL, &it, NULL);
    if (!on)
        signal(SIGALRM, SIG_DFL);
}

/* Close the sockets of listeners [0, upto), each once (a Unix socket's
 * is shared by the workers), and remove the Unix sockets' files. */
static void close_listeners(const struct cli_opts *o, int *fds, int n, int upto)
{
    int nl = o->nlisten;
    for (int l = 0; l < upto; l++) {
        for (int w = 0; w < n; w++)
            if (w == 0 || fds[w * nl + l] != fds[l])
                close(fds[w * nl + l]);
        if (strncmp(o->listen[l].addr, "unix:", 5) == 0)
            unlink(o->listen[l].addr + 5);
    }
}

static int drop_privileges(const char *user, char *err, size_t len)
{
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        snprintf(err, len, "--user: no such user '%s'", user);
        return -1;
    }
    if (setgid(pw->pw_gid) || initgroups(pw->pw_name, pw->pw_gid) ||
        setuid(pw->pw_uid)) {
        snprintf(err, len, "--user %s: %s", user, strerror(errno));
        return -1;
    }
    return 0;
}

/* Bind listener l for n workers into fds[0..n). One worker gets one
 * socket. Several get one SO_REUSEPORT socket each, so that the kernel
 * spreads connections across them, after a plain bind has checked that
 * nobody else holds the port (SO_REUSEPORT alone would share it with
 * another server of the same user) and, for port 0, picked it. A Unix
 * socket is one listener that the workers share. Returns 0, or -1 with
 * err. */
static int open_listener(const struct cli_listen *l, int *fds, int n, char *err,
                         size_t len)
{
    bool unix_sock = strncmp(l->addr, "unix:", 5) == 0;
    int (*bind_fn)(const char *, int, int, char *, size_t) =
        l->udp ? net_bind_udp : net_listen;
    fds[0] = bind_fn(l->addr, l->port, 0, err, len);
    if (fds[0] < 0)
        return -1;
    if (n == 1 || unix_sock) {
        for (int i = 1; i < n; i++)
            fds[i] = fds[0];
        return 0;
    }
    int port = net_port(fds[0]);
    close(fds[0]);
    for (int i = 0; i < n; i++) {
        fds[i] = bind_fn(l->addr, port, 1, err, len);
        if (fds[i] < 0) {
            while (i-- > 0)
                close(fds[i]);
            return -1;
        }
    }
    return 0;
}

/* Every listener for n workers: fds[w * nlisten + l] is worker w's
 * socket for listener l. */
static int open_listeners(const struct cli_opts *o, int *fds, int n, char *err,
                          size_t len)
{
    int nl = o->nlisten, *col = calloc((size_t)n, sizeof *col);
    if (!col) {
        snprintf(err, len, "out of memory");
        return -1;
    }
    for (int l = 0; l < nl; l++) {
        if (open_listener(&o->listen[l], col, n, err, len)) {
            close_listeners(o, fds, n, l);
            free(col);
            return -1;
        }
        for (int w = 0; w < n; w++)
            fds[w * nl + l] = col[w];
    }
    free(col);
    return 0;
}

/* The --shared dictionaries, mapped before anything forks: the workers
 * inherit them, and a worker that dies or reloads leaves them whole. */
static int make_shared(struct cli_opts *o, char *err, size_t len)
{
    for (int i = 0; i < o->nshared; i++)
        if (!(o->shared[i].dict = shdict_new(o->shared[i].name,
                                             (size_t)o->shared[i].size, err, len)))
            return -1;
    return 0;
}

static void free_shared(struct cli_opts *o)
{
    for (int i = 0; i < o->nshared; i++)
        shdict_free(o->shared[i].dict);
}

int main(int argc, char **argv)
{
    struct cli_opts o;
    char err[1024];

    switch (cli_parse(argc, argv, &o, err, sizeof err)) {
    case CLI_HELP:
        fputs(cli_usage, stdout);
        return 0;
    case CLI_VERSION:
        printf("moonring %s\n", MR_VERSION);
        return 0;
    case CLI_ERROR:
        fprintf(stderr, "moonring: %s\n%s", err,
                "Try 'moonring --help' for more information.\n");
        return 2;
    case CLI_RUN:
        break;
    }
    log_threshold = (enum log_level)o.log_level;
    int n = o.workers;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (int)cpus : 1;
    }
    o.workers = n; /* what mr.workers() says */

    if (make_shared(&o, err, sizeof err))
        return fail(err);
    /* load the script once here, so that a broken one stops us now with
     * one clear line; each worker loads its own copy afterwards */
    guard_load(&o, true);
    struct lua_host *lua = worker_load(&o, 1, err, sizeof err);
    guard_load(&o, false);
    if (!lua)
        return fail(err);
    if (o.test_only) {
        fprintf(stderr, "moonring: %s: ok\n", lua_host_script_name(lua));
        lua_host_free(lua);
        return 0;
    }
    lua_host_free(lua);
    fit_fd_limit(&o);
    tune_malloc();
    /* before the workers fork: each inherits the loaded certificate */
    struct tls_server_config tc = {
        .ncert = o.ntls_cert, .protocols = o.tls_protocols,
        .ciphers = o.tls_ciphers, .alpn = o.tls_alpn,
        .handshake_ms = (unsigned)(o.tls_handshake_timeout * 1000),
    };
    for (int i = 0; i < o.ntls_cert; i++) {
        tc.cert[i] = o.tls_cert[i];
        tc.key[i] = o.tls_key[i];
    }
    if (o.ntls_cert && tls_server_init(&tc, err, sizeof err))
        return fail(err);

    int *fds = calloc((size_t)n * (size_t)o.nlisten, sizeof *fds);
    if (!fds || open_listeners(&o, fds, n, err, sizeof err)) {
        free(fds);
        return fail(fds ? err : "out of memory");
    }
    if (o.user && drop_privileges(o.user, err, sizeof err)) {
        close_listeners(&o, fds, n, o.nlisten);
        free(fds);
        return fail(err);
    }
    int status = n == 1 ? master_run_one(&o, fds) : master_run(&o, fds, n);
    for (int l = 0; l < o.nlisten; l++) /* the sockets went with the workers */
        if (strncmp(o.listen[l].addr, "unix:", 5) == 0)
            unlink(o.listen[l].addr + 5);
    free(fds);
    free_shared(&o);
    return status;
}
