/* harness.c - see harness.h. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

unsigned h_nofile;

/* Every process started and not yet reaped: killed at exit, so that a
 * failed assertion (which skips the test's own stop) leaves nothing
 * running. Children also die with the test (PR_SET_PDEATHSIG). */
static pid_t live[256];

static void forget(pid_t pid)
{
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
        if (live[i] == pid)
            live[i] = 0;
}

static void kill_leftovers(void)
{
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
        }
}

static void track(pid_t pid)
{
    static bool registered;
    if (!registered) {
        atexit(kill_leftovers);
        registered = true;
    }
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
        if (!live[i]) {
            live[i] = pid;
            return;
        }
}

static const char *bin(void)
{
    const char *b = getenv("MOONRING_BIN");
    return b && *b ? b : "./moonring";
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

void h_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

/* fork + exec moonring with argv (and extra), stderr to a pipe, or with
 * to_file to an unlinked temporary file */
static pid_t spawn(const char *const *argv, const char *const *extra, int *err_fd,
                   bool to_file)
{
    const char *args[64];
    int n = 0;
    args[n++] = bin();
    for (; extra && *extra && n < 40; extra++)
        args[n++] = *extra;
    for (; argv && *argv && n < 62; argv++)
        args[n++] = *argv;
    args[n] = NULL;
    int p[2];
    if (to_file) {
        char tmpl[] = "/tmp/moonring-log-XXXXXX";
        p[1] = mkostemp(tmpl, O_APPEND);
        assert_true(p[1] >= 0);
        p[0] = open(tmpl, O_RDONLY | O_CLOEXEC);
        assert_true(p[0] >= 0);
        unlink(tmpl);
        fcntl(p[1], F_SETFD, FD_CLOEXEC);
    } else {
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    }
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], 2);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        if (h_nofile) {
            struct rlimit rl = { h_nofile, h_nofile };
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        execv(args[0], (char *const *)args);
        fprintf(stderr, "exec %s: %s\n", args[0], strerror(errno));
        _exit(127);
    }
    close(p[1]);
    if (!to_file)
        fcntl(p[0], F_SETFL, O_NONBLOCK);
    *err_fd = p[0];
    track(pid);
    return pid;
}

/* Has pid exited (without reaping it), or been reaped already? */
static bool exited(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0)
        return true;
    return info.si_pid == pid;
}

/* Append what the server wrote since the last look, waiting up to ms for
 * something new; false once there is nothing more to come. A server's
 * stderr goes to a file (O_APPEND), not a pipe: a pipe that the test does
 * not drain while it is busy would block the server in write(2). */
static bool slurp(struct h_server *s, int ms)
{
    if (s->err_fd < 0)
        return false;
    for (long end = now_ms() + ms;;) {
        if (s->log_cap - s->log_len < 4096) {
            s->log_cap = s->log_cap ? s->log_cap * 2 : 65536;
            s->log = realloc(s->log, s->log_cap);
            assert_non_null(s->log);
            s->log[s->log_len] = 0;
        }
        ssize_t r;
        if (s->is_file)
            r = pread(s->err_fd, s->log + s->log_len, s->log_cap - s->log_len - 1,
                      (off_t)s->log_len);
        else
            r = read(s->err_fd, s->log + s->log_len, s->log_cap - s->log_len - 1);
        if (r > 0) {
            s->log_len += (size_t)r;
            s->log[s->log_len] = 0;
            continue;
        }
        if (r == 0 && (!s->is_file || exited(s->pid))) {
            if (s->is_file && pread(s->err_fd, s->log + s->log_len, 1, (off_t)s->log_len) > 0)
                continue; /* written just before it exited */
            close(s->err_fd);
            s->err_fd = -1;
            return false;
        }
        if (now_ms() >= end)
            return true;
        if (s->is_file) {
            h_sleep_ms(5);
        } else {
            struct pollfd pfd = { s->err_fd, POLLIN, 0 };
            long left = end - now_ms();
            poll(&pfd, 1, (int)(left > 0 ? left : 0));
        }
    }
}

bool h_log_wait(struct h_server *s, const char *want, int ms)
{
    long end = now_ms() + ms;
    slurp(s, 0);
    for (;;) {
        if (want && s->log && strstr(s->log, want))
            return true;
        long left = end - now_ms();
        if (left <= 0)
            return !want;
        if (!slurp(s, (int)(left < 50 ? left : 50)) && want &&
            !(s->log && strstr(s->log, want)))
            return false; /* stderr closed: it will not come */
    }
}

int h_log_count(struct h_server *s, const char *needle)
{
    slurp(s, 0);
    int n = 0;
    for (const char *p = s->log; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

void h_start(struct h_server *s, const char *const *argv)
{
    static const char *const extra[] = { "-p", "0", NULL };
    bool listens = false; /* -l names its own ports */
    for (const char *const *a = argv; a && *a; a++)
        listens |= strcmp(*a, "-l") == 0 || strcmp(*a, "--listen") == 0;
    memset(s, 0, sizeof *s);
    s->err_fd = -1;
    s->is_file = true;
    s->pid = spawn(argv, listens ? NULL : extra, &s->err_fd, true);
    if (!h_log_wait(s, "listening on ", H_WAIT_MS)) {
        fprintf(stderr, "server did not start; its stderr:\n%s\n", s->log ? s->log : "");
        h_stop(s, SIGKILL);
        fail();
    }
    /* the whole address: a read may catch the line half written */
    h_log_wait(s, ", serving ", H_WAIT_MS);
    const char *p = strstr(s->log, "listening on ") + strlen("listening on ");
    if (strncmp(p, "unix:", 5) == 0)
        return; /* no port */
    /* within that line: a later one (a Lua traceback's "[C]:") is not it */
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)strcspn(p, "\n"), p);
    const char *colon = strstr(line, "]:");
    colon = colon ? colon + 1 : strchr(line, ':');
    assert_non_null(colon);
    s->port = atoi(colon + 1);
    if (s->port <= 0) {
        fprintf(stderr, "no port in the server's log:\n%s\n", s->log);
        h_stop(s, SIGKILL);
        fail();
    }
}

static int wait_exit(pid_t pid, int ms)
{
    long end = now_ms() + ms;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            forget(pid);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (now_ms() > end)
            return -1;
        h_sleep_ms(5);
    }
}

int h_stop(struct h_server *s, int sig)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, sig);
    int st = wait_exit(s->pid, H_WAIT_MS);
    if (st < 0) {
        kill(s->pid, SIGKILL);
        st = wait_exit(s->pid, H_WAIT_MS);
        st = st < 0 ? st : 1000; /* it had to be killed */
    }
    s->pid = 0;
    while (slurp(s, 0))
        ;
    return st;
}

int h_run(const char *const *argv, char **err)
{
    struct h_server s;
    memset(&s, 0, sizeof s);
    s.pid = spawn(argv, NULL, &s.err_fd, false);
    long end = now_ms() + H_WAIT_MS;
    while (slurp(&s, 50) && now_ms() < end)
        ;
    int st = wait_exit(s.pid, 100);
    if (st < 0) {
        kill(s.pid, SIGKILL);
        wait_exit(s.pid, H_WAIT_MS);
        st = 1000;
    }
    *err = s.log ? s.log : strdup("");
    return st;
}

int h_connect(int port, bool v6)
{
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { H_WAIT_MS / 1000, 0 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int r;
    if (v6) {
        struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port) };
        a.sin6_addr = in6addr_loopback;
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (r)
        fprintf(stderr, "connect to port %d: %s\n", port, strerror(errno));
    assert_int_equal(r, 0);
    return fd;
}

void h_send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        c += w;
        n -= (size_t)w;
    }
}

size_t h_recv_exact(int fd, void *p, size_t n, int ms)
{
    size_t got = 0;
    long end = now_ms() + ms;
    while (got < n) {
        long left = end - now_ms();
        struct pollfd pfd = { fd, POLLIN, 0 };
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        ssize_t r = recv(fd, (char *)p + got, n - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

bool h_wait_closed(int fd, int ms)
{
    char buf[4096];
    long end = now_ms() + ms;
    for (bool first = true;; first = false) {
        /* poll at least once, even with no time left: a 1 ms wait whose
         * millisecond ran out before the first poll saw no EOF that was
         * already there */
        long left = end - now_ms();
        struct pollfd pfd = { fd, POLLIN, 0 };
        if ((left <= 0 && !first) || poll(&pfd, 1, left > 0 ? (int)left : 0) <= 0)
            return false;
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            return true;
    }
}

size_t h_echo(int fd, const void *in, void *out, size_t n, int ms)
{
    size_t sent = 0, got = 0;
    long end = now_ms() + ms;
    while (got < n) {
        long left = end - now_ms();
        struct pollfd pfd = { fd, POLLIN | (sent < n ? POLLOUT : 0), 0 };
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        if ((pfd.revents & POLLOUT) && sent < n) {
            ssize_t w = send(fd, (const char *)in + sent, n - sent,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                sent += (size_t)w;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(fd, (char *)out + got, n - got, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN))
                break;
            if (r > 0)
                got += (size_t)r;
        }
    }
    return got;
}

char *h_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
}

char *h_write_file(const char *dir, const char *name, const char *text)
{
    char *path;
    if (!dir) {
        char tmpl[] = "/tmp/moonring-test-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        assert_true(asprintf(&path, "%s/%s", tmpl, name) > 0);
    } else {
        assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

void h_save(const char *path, const char *text, const char *how)
{
    if (strcmp(how, "inplace") == 0) {
        FILE *f = fopen(path, "r+");
        assert_non_null(f);
        assert_int_equal(ftruncate(fileno(f), 0), 0);
        fputs(text, f);
        fclose(f);
    } else if (strcmp(how, "rename") == 0) {
        char *tmp;
        assert_true(asprintf(&tmp, "%s.swp~", path) > 0);
        FILE *f = fopen(tmp, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
        assert_int_equal(rename(tmp, path), 0);
        free(tmp);
    } else {
        assert_int_equal(unlink(path), 0);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
    }
}

void h_fill_random(void *p, size_t n, unsigned seed)
{
    uint64_t x = 0x9E3779B97F4A7C15ull ^ seed;
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c[i] = (unsigned char)x;
    }
}

int h_exec(const char *const *argv, const char *input, char **out, int ms,
           bool with_stderr)
{
    int in[2], o[2];
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(o, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in[0], 0);
        dup2(o[1], 1);
        if (with_stderr)
            dup2(o[1], 2);
        else
            dup2(open("/dev/null", O_WRONLY), 2);
        execvp(argv[0], (char *const *)argv);
        _exit(126);
    }
    close(in[0]);
    close(o[1]);
    track(pid);
    if (input) {
        signal(SIGPIPE, SIG_IGN);
        size_t n = strlen(input), off = 0;
        while (off < n) {
            ssize_t w = write(in[1], input + off, n - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    }
    close(in[1]);
    struct h_server s;
    memset(&s, 0, sizeof s);
    s.pid = pid;
    s.err_fd = o[0];
    fcntl(o[0], F_SETFL, O_NONBLOCK);
    long end = now_ms() + ms;
    while (slurp(&s, 50) && now_ms() < end)
        ;
    int st = wait_exit(pid, (int)(end - now_ms() > 0 ? end - now_ms() : 0) + 100);
    if (st < 0) {
        kill(pid, SIGKILL);
        wait_exit(pid, H_WAIT_MS);
        st = 1000;
    }
    if (s.err_fd >= 0)
        close(s.err_fd);
    *out = s.log ? s.log : strdup("");
    return st == 126 ? -1 : st;
}

char *h_client(const char *const *argv, const char *input)
{
    char *out;
    int st = h_exec(argv, input, &out, H_WAIT_MS, false);
    if (st == -1)
        fail_msg("%s is not installed (make test installs it)", argv[0]);
    if (st != 0)
        fail_msg("%s exited with %d:\n%s", argv[0], st, out);
    return out;
}

void h_contains(const char *out, const char *needle)
{
    if (!strstr(out, needle))
        fail_msg("expected '%s' in:\n%s", needle, out);
}

pid_t h_spawn(const char *const *argv)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(126);
    }
    track(pid);
    return pid;
}

void h_kill(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    if (wait_exit(pid, H_WAIT_MS) < 0) {
        kill(pid, SIGKILL);
        wait_exit(pid, H_WAIT_MS);
    }
}

bool h_wait_port(int port, int ms)
{
    long end = now_ms() + ms;
    while (now_ms() < end) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int r = connect(fd, (struct sockaddr *)&a, sizeof a);
        close(fd);
        if (r == 0)
            return true;
        h_sleep_ms(20);
    }
    return false;
}

int h_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t sl = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &sl);
    close(fd);
    return ntohs(a.sin_port);
}

char *h_serve(struct h_server *s, const char *text, const char *const *opts,
              const char *const *args)
{
    char *path = h_write_file(NULL, "app.lua", text);
    const char *argv[32];
    int n = 0;
    for (; opts && *opts && n < 15; opts++)
        argv[n++] = *opts;
    argv[n++] = path;
    for (; args && *args && n < 31; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    h_start(s, argv);
    return path;
}

void h_finish(struct h_server *s, char *path)
{
    int st = h_stop(s, SIGTERM);
    if (st) {
        size_t len = s->log ? strlen(s->log) : 0;
        fail_msg("exit status %d; the server's log ends:\n%s", st,
                 s->log ? s->log + (len > 4000 ? len - 4000 : 0) : "");
    }
    free(s->log);
    free(path);
}

char *h_line(int fd, int ms)
{
    static char buf[8192];
    size_t n = 0;
    while (n + 1 < sizeof buf && h_recv_exact(fd, buf + n, 1, ms) == 1 &&
           buf[n] != '\n')
        n++;
    buf[n] = 0;
    return buf;
}

long h_rss_kib(pid_t pid)
{
    char path[64], l[256];
    long rss = 0;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(l, sizeof l, f) && sscanf(l, "VmRSS: %ld", &rss) != 1)
        ;
    fclose(f);
    return rss;
}

pid_t h_redis(int port)
{
    char rp[16];
    snprintf(rp, sizeof rp, "%d", port);
    const char *rs[] = { "redis-server", "--port", rp, "--bind", "127.0.0.1",
                         "--save", "", "--appendonly", "no", NULL };
    pid_t pid = h_spawn(rs);
    assert_true(h_wait_port(port, H_WAIT_MS));
    return pid;
}

long h_redis_info(int port, const char *field)
{
    char p[16], *out;
    snprintf(p, sizeof p, "%d", port);
    const char *argv[] = { "redis-cli", "-p", p, "INFO", NULL };
    assert_int_equal(h_exec(argv, NULL, &out, H_WAIT_MS, false), 0);
    char *at = strstr(out, field);
    long v = at ? atol(at + strlen(field) + 1) : -1;
    free(out);
    return v;
}

int h_listen(int backlog, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, backlog), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}
