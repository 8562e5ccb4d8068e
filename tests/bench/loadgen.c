/* loadgen.c - echo load generator for moonring and its peers.
 *
 *   loadgen -p PORT [-H HOST] [-c CONNS] [-s SIZE] [-P DEPTH] [-d SECS]
 *           [-W WARMUP_SECS] [-S SERVER_PID]
 *       ping-pong: each connection sends DEPTH messages of SIZE bytes,
 *       waits for all of them to come back, verifies every byte, repeats.
 *   loadgen -p PORT --churn N [-c CONCURRENCY] [-s SIZE] [--waves] [-S PID]
 *       N short-lived clients, CONCURRENCY at a time: connect, send one
 *       message, read the echo, close. A new client starts as soon as one
 *       ends, or with --waves, CONCURRENCY start together once the
 *       previous wave is done.
 *
 *   --tls (either mode): speak TLS to the server (no verification, no
 *       resumption: every connection is a full handshake, on its own
 *       epoll events, before its first message).
 *
 * Every message is unique (it carries its connection and sequence number,
 * over random bytes) and every echoed byte is checked. With -S, the
 * server's CPU time (user + system, from /proc/PID/stat) over the
 * measured interval is divided by the requests served. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct client {
    int fd;
    uint32_t id;
    uint64_t seq;          /* sequence number of the first message in flight */
    size_t want;           /* bytes of the current batch */
    size_t sent, got;
    uint64_t t0;           /* when the batch was sent */
    uint64_t next;         /* -r: when the next batch may go */
    int idle;              /* -r: its batch waits for next */
    unsigned char *out;    /* the batch, kept to verify the echo */
    int done;
    SSL *ssl;              /* --tls: the connection's, or NULL */
    int ready;             /* its handshake is done */
};

static struct {
    const char *host;
    int port, conns, depth, churn, waves, server_pid, tls;
    size_t size;
    double secs, warmup;
    double rate;           /* -r: batches per second in all, 0: as fast as echoed */
} opt = { "127.0.0.1", 7000, 50, 1, 0, 0, 0, 0, 64, 5, 1, 0 };

static uint64_t *lat;      /* latency samples in ns */
static size_t nlat, caplat;
static uint64_t errors;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Messages are cut from a block of random bytes at an offset that depends
 * on connection and sequence number, then stamped with both, so that every
 * message of 12 bytes or more is unique. Filling is a memcpy: at 4 KiB a
 * byte-by-byte pattern cost this client more CPU than the server's echo. */
#define NOISE (1u << 16)
static unsigned char *noise;   /* NOISE + opt.size bytes */

static void make_noise(void)
{
    noise = malloc(NOISE + opt.size);
    if (!noise)
        die("malloc");
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < NOISE + opt.size; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        noise[i] = (unsigned char)(x >> 56);
    }
}

static void fill_msg(unsigned char *dst, uint32_t id, uint64_t seq)
{
    unsigned char tag[12];
    uint64_t off = ((uint64_t)id * 0x9e3779b1u + seq * 0x85ebca77u) % NOISE;
    memcpy(dst, noise + off, opt.size);
    memcpy(tag, &id, sizeof id);
    memcpy(tag + sizeof id, &seq, sizeof seq);
    memcpy(dst, tag, opt.size < sizeof tag ? opt.size : sizeof tag);
}

static void fill_batch(struct client *c)
{
    for (int m = 0; m < opt.depth; m++)
        fill_msg(c->out + (size_t)m * opt.size, c->id, c->seq + (uint64_t)m);
    c->want = opt.size * (size_t)opt.depth;
    c->sent = c->got = 0;
}

static struct sockaddr_storage addr;
static socklen_t addrlen;

static void resolve(void)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
    char port[16];
    snprintf(port, sizeof port, "%d", opt.port);
    if (getaddrinfo(opt.host, port, &hints, &res)) {
        fprintf(stderr, "loadgen: cannot resolve %s\n", opt.host);
        exit(1);
    }
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    addrlen = res->ai_addrlen;
    freeaddrinfo(res);
}

static int connect_nb(void)
{
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, addrlen) && errno != EINPROGRESS)
        die("connect");
    return fd;
}

/* --tls: one context for every connection; each gets its own SSL on its
 * socket (blocking calls would serialise the handshakes). */
static SSL_CTX *tls_ctx;

static void tls_attach(struct client *c)
{
    c->ready = !opt.tls;
    if (!opt.tls)
        return;
    if (!tls_ctx) {
        tls_ctx = SSL_CTX_new(TLS_client_method());
        if (!tls_ctx)
            die("SSL_CTX_new");
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
    }
    c->ssl = SSL_new(tls_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
        die("SSL_new");
    SSL_set_connect_state(c->ssl);
}

static void drop(struct client *c)
{
    SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);
}

/* What SSL_get_error says of r, as errno: EAGAIN to wait, or a failure. */
static int tls_errno(struct client *c, int r)
{
    int e = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return EAGAIN;
    return e == SSL_ERROR_ZERO_RETURN ? ECONNRESET : EPROTO;
}

/* Go on with the handshake: 1 done, 0 wait for the socket, -1 failed. */
static int handshake(struct client *c)
{
    if (c->ready)
        return 1;
    int r = SSL_do_handshake(c->ssl);
    if (r == 1)
        return c->ready = 1;
    errno = tls_errno(c, r);
    return errno == EAGAIN ? 0 : -1;
}

static ssize_t io_send(struct client *c, const void *p, size_t n)
{
    if (!c->ssl)
        return send(c->fd, p, n, MSG_NOSIGNAL);
    int r = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0)
        return r;
    errno = tls_errno(c, r);
    return -1;
}

static ssize_t io_recv(struct client *c, void *p, size_t n)
{
    if (!c->ssl)
        return recv(c->fd, p, n, 0);
    int r = SSL_read(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0)
        return r;
    errno = tls_errno(c, r);
    return errno == ECONNRESET ? 0 : -1; /* a close_notify: the end */
}

static void record(uint64_t ns)
{
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 16;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat)
            die("realloc");
    }
    lat[nlat++] = ns;
}

/* Write what remains of the batch; returns -1 on a broken connection. */
static int pump_out(struct client *c)
{
    while (c->sent < c->want) {
        ssize_t n = io_send(c, c->out + c->sent, c->want - c->sent);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        c->sent += (size_t)n;
    }
    return 0;
}

/* Read and verify; returns 1 when the batch is complete, -1 on error. */
static int pump_in(struct client *c)
{
    unsigned char buf[65536];
    while (c->got < c->want) {
        size_t room = c->want - c->got;
        ssize_t n = io_recv(c, buf, room < sizeof buf ? room : sizeof buf);
        if (n == 0) {
            fprintf(stderr, "loadgen: connection %u: unexpected EOF\n", c->id);
            errno = ECONNRESET;
            return -1;
        }
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        if (memcmp(buf, c->out + c->got, (size_t)n)) {
            fprintf(stderr, "loadgen: connection %u: wrong bytes at offset %zu\n",
                    c->id, c->got);
            errno = EBADMSG;
            return -1;
        }
        c->got += (size_t)n;
    }
    return 1;
}

static double cpu_secs(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut, st;
    /* fields after the command: state ppid pgrp session tty tpgid flags
     * minflt cminflt majflt cmajflt utime stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                     &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (!nlat)
        return 0;
    size_t i = (size_t)(p * (double)(nlat - 1));
    return (double)lat[i] / 1000.0;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* -r: send the batches whose time has come; -1 if a send failed. */
static int send_due(struct client *cs, uint64_t t)
{
    for (int i = 0; i < opt.conns; i++) {
        struct client *c = &cs[i];
        if (!c->idle || c->fd < 0 || c->next > t)
            continue;
        c->idle = 0;
        c->t0 = t;
        if (pump_out(c) < 0) {
            fprintf(stderr, "loadgen: connection %u failed: %s\n", c->id, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* How long epoll may wait: 100 ms, or until the next paced batch. */
static struct timespec *wait_for(const struct client *cs, uint64_t t)
{
    static struct timespec ts;
    uint64_t w = 100000000ull;
    for (int i = 0; opt.rate > 0 && i < opt.conns; i++)
        if (cs[i].idle && cs[i].fd >= 0)
            w = cs[i].next <= t ? 0 : cs[i].next - t < w ? cs[i].next - t : w;
    ts.tv_sec = (time_t)(w / 1000000000ull);
    ts.tv_nsec = (long)(w % 1000000000ull);
    return &ts;
}

static int pingpong(void)
{
    int ep = epoll_create1(0);
    struct client *cs = calloc((size_t)opt.conns, sizeof *cs);
    for (int i = 0; i < opt.conns; i++) {
        struct client *c = &cs[i];
        c->id = (uint32_t)i;
        c->fd = connect_nb();
        tls_attach(c);
        c->out = malloc(opt.size * (size_t)opt.depth);
        fill_batch(c);
        c->t0 = c->next = now_ns();
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    uint64_t start = now_ns();
    uint64_t warm_end = start + (uint64_t)(opt.warmup * 1e9);
    uint64_t end = warm_end + (uint64_t)(opt.secs * 1e9);
    uint64_t reqs = 0, t_meas = 0;
    double cpu0 = 0;
    int measuring = 0;
    struct epoll_event evs[256];
    for (;;) {
        uint64_t t = now_ns();
        if (!measuring && t >= warm_end) {
            measuring = 1;
            t_meas = t;
            nlat = 0;
            if (opt.server_pid)
                cpu0 = cpu_secs(opt.server_pid);
        }
        if (t >= end)
            break;
        if (opt.rate > 0 && send_due(cs, t) < 0)
            goto done;
        int n = epoll_pwait2(ep, evs, 256, wait_for(cs, t), NULL);
        for (int i = 0; i < n; i++) {
            struct client *c = evs[i].data.ptr;
            if (c->idle)
                continue; /* nothing asked: its batch waits for its time */
            int h = handshake(c);
            if (h < 0)
                goto broken;
            if (h == 0)
                continue;
            if (pump_out(c) < 0)
                goto broken;
            int r = pump_in(c);
            if (r < 0)
                goto broken;
            if (r == 1) {
                uint64_t tn = now_ns();
                if (measuring) {
                    reqs += (uint64_t)opt.depth;
                    record(tn - c->t0);
                }
                c->seq += (uint64_t)opt.depth;
                fill_batch(c);
                if (opt.rate > 0) { /* paced: each connection at rate / conns */
                    c->next += (uint64_t)(1e9 * opt.conns / opt.rate);
                    if (c->next > tn) {
                        c->idle = 1;
                        continue;
                    }
                    c->next = tn; /* behind: no burst to catch up */
                }
                c->t0 = tn;
                if (pump_out(c) < 0)
                    goto broken;
            }
            continue;
        broken:
            errors++;
            fprintf(stderr, "loadgen: connection %u failed: %s\n", c->id, strerror(errno));
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            drop(c);
            c->fd = -1;
        }
    }
done:;
    double el = (double)(now_ns() - t_meas) / 1e9;
    double cpu = opt.server_pid ? cpu_secs(opt.server_pid) - cpu0 : -1;
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    printf("requests/s %.0f p50_us %.1f p99_us %.1f p999_us %.1f",
           (double)reqs / el, pct(0.50), pct(0.99), pct(0.999));
    if (opt.server_pid && reqs)
        printf(" server_cpu_us_per_req %.3f", cpu * 1e6 / (double)reqs);
    printf(" errors %llu\n", (unsigned long long)errors);
    return errors ? 1 : 0;
}

static int churn(void)
{
    int ep = epoll_create1(0);
    struct client *cs = calloc((size_t)opt.conns, sizeof *cs);
    int started = 0, finished = 0, active = 0;
    uint64_t t0 = now_ns();
    double cpu0 = opt.server_pid ? cpu_secs(opt.server_pid) : 0;
    while (finished < opt.churn) {
        /* --waves: the next CONCURRENCY clients start together once the
         * previous ones are all done; otherwise one starts as one ends */
        while (active < opt.conns && started < opt.churn &&
               (!opt.waves || active == 0 || started % opt.conns)) {
            struct client *c = NULL;
            for (int i = 0; i < opt.conns; i++)
                if (!cs[i].out || cs[i].done) { c = &cs[i]; break; }
            if (!c->out)
                c->out = malloc(opt.size);
            c->id = (uint32_t)started++;
            c->seq = 0;
            c->done = 0;
            fill_batch(c);
            c->want = opt.size;
            c->fd = connect_nb();
            tls_attach(c);
            c->t0 = now_ns();
            struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c };
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            active++;
        }
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, 5000);
        if (n == 0) {
            fprintf(stderr, "loadgen: churn stalled (%d active)\n", active);
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct client *c = evs[i].data.ptr;
            if (c->done)
                continue;
            int r = handshake(c);
            if (r == 1)
                r = pump_out(c) < 0 ? -1 : pump_in(c);
            if (r == 0)
                continue;
            if (r < 0)
                errors++;
            else
                record(now_ns() - c->t0);
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            drop(c);
            c->done = 1;
            active--;
            finished++;
        }
    }
    double el = (double)(now_ns() - t0) / 1e9;
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    printf("clients %d clients/s %.0f p50_us %.1f p99_us %.1f",
           opt.churn, opt.churn / el, pct(0.5), pct(0.99));
    if (opt.server_pid)
        printf(" server_cpu_us_per_client %.1f", (cpu_secs(opt.server_pid) - cpu0) * 1e6 / opt.churn);
    printf(" errors %llu\n", (unsigned long long)errors);
    return errors ? 1 : 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = { { "churn", required_argument, NULL, 'n' },
                                        { "waves", no_argument, NULL, 'v' },
                                        { "tls", no_argument, NULL, 't' },
                                        { NULL, 0, NULL, 0 } };
    int ch;
    while ((ch = getopt_long(argc, argv, "H:p:c:s:P:d:W:S:r:", lo, NULL)) != -1) {
        switch (ch) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'c': opt.conns = atoi(optarg); break;
        case 's': opt.size = (size_t)atol(optarg); break;
        case 'P': opt.depth = atoi(optarg); break;
        case 'd': opt.secs = atof(optarg); break;
        case 'W': opt.warmup = atof(optarg); break;
        case 'S': opt.server_pid = atoi(optarg); break;
        case 'n': opt.churn = atoi(optarg); break;
        case 'v': opt.waves = 1; break;
        case 't': opt.tls = 1; break;
        case 'r': opt.rate = atof(optarg); break;
        default:
            fprintf(stderr, "usage: loadgen -p PORT [-H HOST] [-c CONNS] [-s SIZE] "
                            "[-P DEPTH] [-d SECS] [-W SECS] [-S PID] [-r RATE] [--churn N [--waves]] [--tls]\n");
            return 2;
        }
    }
    if (opt.conns < 1 || opt.size < 1 || opt.depth < 1) {
        fprintf(stderr, "loadgen: -c, -s and -P must be positive\n");
        return 2;
    }
    raise_nofile();
    resolve();
    make_noise();
    return opt.churn ? churn() : pingpong();
}
