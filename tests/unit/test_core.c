/* test_core.c - the core through the real ring and real loopback sockets,
 * with a fake handler written in C: no Lua state anywhere. Each test
 * turns the core until the events it expects have come, or fails after
 * a bounded time. */
#include "core.h"
#include "fds.h"
#include "net.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <cmocka.h>

#define TICK_KEY   0xfffffffful /* the test's own wake-up timer */
#define TURN_MS    5
#define WAIT_MS    3000

/* What the fake handler saw, and how it behaves. */
struct rec {
    struct core k;
    char log[1024];            /* events in order, "opened 0;data;..." */
    char in[1 << 16];          /* bytes of every data event */
    int in_len;
    int opened, connected, drained, closed, data_events;
    struct conn *last;         /* the connection of the last event */
    enum conn_reason reason;   /* of the last closed */
    int err;
    int timer_key;
    /* behaviour */
    int upper_echo;            /* echo data uppercased */
    size_t send_on_open;       /* bytes to send when opened */
    int pause_on_data;         /* pause after the first data event */
    int close_on_bye;          /* "bye": send "ok" and close */
};

static void note(struct rec *r, const char *fmt, ...)
{
    size_t n = strlen(r->log);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->log + n, sizeof r->log - n, fmt, ap);
    va_end(ap);
}

static void pattern(char *p, size_t n, size_t from)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('a' + (from + i) % 26);
}

static void ev_opened(void *ctx, struct conn *c)
{
    struct rec *r = ctx;
    r->opened++;
    r->last = c;
    note(r, "opened %u;", c->origin);
    if (r->send_on_open) {
        char *buf = malloc(r->send_on_open);
        pattern(buf, r->send_on_open, 0);
        assert_int_equal(core_send(&r->k, c, buf, r->send_on_open), 0);
        free(buf);
    }
}

static void ev_connected(void *ctx, struct conn *c)
{
    struct rec *r = ctx;
    r->connected++;
    r->last = c;
    note(r, "connected;");
}

static void ev_data(void *ctx, struct conn *c, const char *p, size_t n)
{
    struct rec *r = ctx;
    assert_true(r->in_len + n <= sizeof r->in);
    memcpy(r->in + r->in_len, p, n);
    r->in_len += (int)n;
    if (!r->data_events++)
        note(r, "data;");
    r->last = c;
    if (r->upper_echo) {
        char out[8192];
        assert_true(n <= sizeof out);
        for (size_t i = 0; i < n; i++)
            out[i] = (char)(p[i] >= 'a' && p[i] <= 'z' ? p[i] - 32 : p[i]);
        assert_int_equal(core_send(&r->k, c, out, n), 0);
    }
    if (r->pause_on_data && r->data_events == 1)
        core_pause(&r->k, c);
    if (r->close_on_bye && n >= 3 && memcmp(p + n - 3, "bye", 3) == 0) {
        assert_int_equal(core_send(&r->k, c, "ok", 2), 0);
        core_close(&r->k, c, REASON_CLOSED, false);
    }
}

static void ev_drained(void *ctx, struct conn *c)
{
    struct rec *r = ctx;
    r->drained++;
    note(r, "drained;");
    assert_true(sendq_pending(&c->q) <= r->k.conns.low_water);
}

static void ev_closed(void *ctx, struct conn *c)
{
    struct rec *r = ctx;
    r->closed++;
    r->reason = (enum conn_reason)c->reason;
    r->err = c->err;
    note(r, "closed %s;", conn_reason_name(r->reason));
}

static void ev_timer(void *ctx, uint64_t key, uint64_t due)
{
    struct rec *r = ctx;
    (void)due;
    if (key != TICK_KEY) {
        r->timer_key = (int)key;
        note(r, "timer %llu;", (unsigned long long)key);
    }
}

static const struct core_events events = {
    .opened = ev_opened, .connected = ev_connected, .data = ev_data,
    .drained = ev_drained, .closed = ev_closed, .timer = ev_timer,
};

static int fds_before;

static int setup(void **state)
{
    fds_before = count_fds();
    struct rec *r = calloc(1, sizeof *r);
    struct core_config cfg = {
        .max_conns = 64, .buffers = 64, .buffer_size = 4096,
        .high_water = 16384,
    };
    if (!r)
        return -1;
    if (core_init(&r->k, &cfg)) {
        core_destroy(&r->k);
        free(r);
        return -1;
    }
    core_set_events(&r->k, &events, r);
    *state = r;
    return 0;
}

static void one_turn(struct rec *r)
{
    core_timer_add(&r->k, timer_now() + TURN_MS * 1000000ull, TICK_KEY);
    assert_int_equal(core_wait(&r->k), 0);
    core_run(&r->k);
}

/* Turn the core until *flag reaches want (or, with flag NULL, for ms). */
static void turn(struct rec *r, const int *flag, int want, int ms)
{
    uint64_t end = timer_now() + (uint64_t)ms * 1000000;
    while (timer_now() < end) {
        if (flag && *flag >= want)
            return;
        one_turn(r);
    }
    if (flag && *flag < want)
        fail_msg("waited %d ms for %d events, got %d (log: %s)", ms, want,
                 *flag, r->log);
}

/* Turn until every connection is freed. */
static void settle(struct rec *r)
{
    uint64_t end = timer_now() + WAIT_MS * 1000000ull;
    while (core_live(&r->k) && timer_now() < end)
        one_turn(r);
    assert_int_equal(core_live(&r->k), 0);
}

/* Shut down, let every close finish: nothing of the test may be left,
 * not even an fd. */
static int teardown(void **state)
{
    struct rec *r = *state;
    core_shutdown(&r->k);
    settle(r);
    /* a freed connection's close chain has no completion to wait for,
     * and runs on in the kernel for a turn or two */
    uint64_t end = timer_now() + WAIT_MS * 1000000ull;
    while (count_fds() > fds_before && timer_now() < end)
        one_turn(r);
    core_finish(&r->k);
    core_destroy(&r->k);
    free(r);
    int fds = count_fds();
    if (fds != fds_before) {
        print_error("%d fds before the test, %d after\n", fds_before, fds);
        return -1;
    }
    return 0;
}

static int listen_here(struct rec *r, const struct transport *tp)
{
    char err[256];
    int fd = net_listen("127.0.0.1", 0, 0, err, sizeof err);
    assert_true(fd >= 0);
    int port = net_port(fd);
    assert_true(core_listen(&r->k, fd, tp) >= 0);
    return port;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sa;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = loopback(port);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = { .tv_sec = 3 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Read exactly n bytes from fd while the core turns (it may have to
 * send them first). */
static void read_all(struct rec *r, int fd, char *buf, size_t n)
{
    size_t got = 0;
    for (int t = 0; got < n && t < WAIT_MS; t += TURN_MS) {
        turn(r, NULL, 0, TURN_MS);
        ssize_t k;
        while (got < n && (k = recv(fd, buf + got, n - got, MSG_DONTWAIT)) > 0)
            got += (size_t)k;
    }
    assert_int_equal(got, n);
}

static void send_str(int fd, const char *s)
{
    assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

static void test_accept_data_close(void **state)
{
    struct rec *r = *state;
    r->upper_echo = 1;
    int fd = dial(listen_here(r, NULL));
    send_str(fd, "hello");
    turn(r, &r->in_len, 5, WAIT_MS);
    assert_memory_equal(r->in, "hello", 5);
    char buf[8];
    read_all(r, fd, buf, 5);
    assert_memory_equal(buf, "HELLO", 5);
    assert_int_equal(core_live(&r->k), 1);
    close(fd);
    turn(r, &r->closed, 1, WAIT_MS);
    assert_int_equal(r->reason, REASON_EOF);
    assert_string_equal(r->log, "opened 0;data;closed eof;");
    settle(r);
    assert_int_equal(r->k.stats.accepted, 1);
    assert_int_equal(r->k.stats.bytes_in, 5);
    assert_int_equal(r->k.stats.bytes_out, 5);
}

/* The handler sends, then closes: the bytes arrive before the FIN. */
static void test_handler_close(void **state)
{
    struct rec *r = *state;
    r->close_on_bye = 1;
    int fd = dial(listen_here(r, NULL));
    send_str(fd, "bye");
    turn(r, &r->closed, 1, WAIT_MS);
    assert_int_equal(r->reason, REASON_CLOSED);
    char buf[8];
    read_all(r, fd, buf, 2);
    assert_memory_equal(buf, "ok", 2);
    ssize_t n;
    for (int t = 0; (n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) < 0 && t < WAIT_MS; t += TURN_MS)
        turn(r, NULL, 0, TURN_MS);
    assert_int_equal(n, 0); /* EOF */
    close(fd);
}

/* 256 KiB sent at once is past the 16 KiB high-water mark: reading
 * pauses until it drains, and drained comes once, with every byte. */
static void test_backpressure_drained(void **state)
{
    struct rec *r = *state;
    enum { N = 256 << 10 };
    r->send_on_open = N;
    int fd = dial(listen_here(r, NULL));
    turn(r, &r->opened, 1, WAIT_MS);
    assert_true(r->last->flags & CF_HWM);
    char *buf = malloc(N), *want = malloc(N);
    pattern(want, N, 0);
    read_all(r, fd, buf, N);
    assert_memory_equal(buf, want, N);
    turn(r, &r->drained, 1, WAIT_MS);
    assert_int_equal(r->drained, 1);
    assert_string_equal(r->log, "opened 0;drained;");
    free(buf);
    free(want);
    close(fd);
}

/* A turn hands a connection at most its receive budget (the room below
 * the high-water mark, 16 KiB here) and a buffer more, however much
 * waits in its socket: the rest comes in the turns after, in order. */
static void test_turn_budget(void **state)
{
    struct rec *r = *state;
    enum { N = 60 << 10 };
    char *out = malloc(N);
    pattern(out, N, 0);
    int fd = dial(listen_here(r, NULL));
    assert_int_equal(send(fd, out, N, MSG_NOSIGNAL), N); /* waits in the socket */
    int largest = 0;
    for (int t = 0; r->in_len < N && t < WAIT_MS; t += TURN_MS) {
        int before = r->in_len;
        one_turn(r);
        if (r->in_len - before > largest)
            largest = r->in_len - before;
    }
    assert_int_equal(r->in_len, N);
    assert_memory_equal(r->in, out, N);
    print_message("largest turn: %d bytes\n", largest);
    assert_true(largest <= 16384 + 4096);
    free(out);
    close(fd);
}

/* After the handler's close, output sent, the core shuts down writing and
 * lingers: input behind the close is read and dropped (no reset: the
 * peer reads the answer and an EOF), until the peer closes too. */
static void test_linger(void **state)
{
    struct rec *r = *state;
    r->k.linger_ms = 5000;
    r->k.linger_gap_ms = 5000;
    r->k.linger_bytes = 1 << 20;
    r->close_on_bye = 1;
    int fd = dial(listen_here(r, NULL));
    send_str(fd, "bye");
    turn(r, &r->closed, 1, WAIT_MS);
    char buf[8];
    read_all(r, fd, buf, 2);
    assert_memory_equal(buf, "ok", 2);
    send_str(fd, "more input behind the close");
    ssize_t n;
    for (int t = 0; (n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) < 0 && t < WAIT_MS; t += TURN_MS)
        turn(r, NULL, 0, TURN_MS);
    assert_int_equal(n, 0); /* EOF, not a reset */
    turn(r, NULL, 0, 50);
    assert_int_equal(core_live(&r->k), 1); /* lingering */
    assert_int_equal(r->in_len, 3);        /* nothing after the close */
    close(fd);
    settle(r);
}

/* Bytes that arrive while the handler has paused wait for resume, in
 * order. */
static void test_pause_resume(void **state)
{
    struct rec *r = *state;
    r->pause_on_data = 1;
    int fd = dial(listen_here(r, NULL));
    send_str(fd, "one;");
    turn(r, &r->data_events, 1, WAIT_MS);
    send_str(fd, "two;");
    send_str(fd, "three;");
    turn(r, NULL, 0, 100);
    assert_int_equal(r->data_events, 1);
    assert_int_equal(r->in_len, 4);
    core_resume(&r->k, r->last);
    turn(r, &r->in_len, 14, WAIT_MS);
    assert_memory_equal(r->in, "one;two;three;", 14);
    close(fd);
}

static void test_connect(void **state)
{
    struct rec *r = *state;
    char err[256];
    int lfd = net_listen("127.0.0.1", 0, 0, err, sizeof err);
    assert_true(lfd >= 0);
    struct sockaddr_in sa = loopback(net_port(lfd));
    struct conn *c;
    assert_int_equal(core_connect(&r->k, (struct sockaddr *)&sa, sizeof sa, NULL, &c), 0);
    assert_int_equal(c->origin, CONN_OUTBOUND);
    assert_int_equal(core_send(&r->k, c, "ping", 4), 0); /* waits for the connect */
    turn(r, &r->connected, 1, WAIT_MS);
    assert_ptr_equal(r->last, c);
    int fd = accept(lfd, NULL, NULL);
    assert_true(fd >= 0);
    struct timeval tv = { .tv_sec = 3 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[8];
    read_all(r, fd, buf, 4);
    assert_memory_equal(buf, "ping", 4);
    send_str(fd, "pong");
    turn(r, &r->in_len, 4, WAIT_MS);
    assert_memory_equal(r->in, "pong", 4);
    close(fd);
    turn(r, &r->closed, 1, WAIT_MS);
    assert_string_equal(r->log, "connected;data;closed eof;");
    close(lfd);
}

static void test_connect_refused(void **state)
{
    struct rec *r = *state;
    char err[256];
    int lfd = net_listen("127.0.0.1", 0, 0, err, sizeof err);
    assert_true(lfd >= 0);
    struct sockaddr_in sa = loopback(net_port(lfd));
    close(lfd); /* nobody listens there now */
    struct conn *c;
    assert_int_equal(core_connect(&r->k, (struct sockaddr *)&sa, sizeof sa, NULL, &c), 0);
    turn(r, &r->closed, 1, WAIT_MS);
    assert_int_equal(r->connected, 0);
    assert_int_equal(r->reason, REASON_ERROR);
    assert_int_equal(r->err, -ECONNREFUSED);
    assert_string_equal(r->log, "closed error;");
}

/* Two listeners in one core: each connection carries its listener. */
static void test_two_listeners(void **state)
{
    struct rec *r = *state;
    int p0 = listen_here(r, NULL), p1 = listen_here(r, NULL);
    int b = dial(p1);
    turn(r, &r->opened, 1, WAIT_MS);
    assert_int_equal(r->last->origin, 1);
    int a = dial(p0);
    turn(r, &r->opened, 2, WAIT_MS);
    assert_int_equal(r->last->origin, 0);
    assert_string_equal(r->log, "opened 1;opened 0;");
    close(a);
    close(b);
    turn(r, &r->closed, 2, WAIT_MS);
}

/* A transport that greets the peer on its own, waits for a line (its
 * "handshake") before the handler hears of the connection, and rot13s
 * the bytes both ways. */
struct rot {
    struct transport_conn base;
    int handshaken;
};
static const struct transport rot_tp;
static int rot_released;

static void rot13(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch >= 'a' && ch <= 'z')
            p[i] = (char)('a' + (ch - 'a' + 13) % 26);
        else if (ch >= 'A' && ch <= 'Z')
            p[i] = (char)('A' + (ch - 'A' + 13) % 26);
    }
}

static int rot_start(struct core *k, struct conn *c)
{
    struct rot *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    st->base.ops = &rot_tp;
    c->tp = &st->base;
    int ret = core_queue(k, c, "HELLO?\n", 7);
    return ret < 0 ? ret : 1;
}

static int rot_recv(struct core *k, struct conn *c, const char *p, size_t n)
{
    struct rot *st = (struct rot *)c->tp;
    if (!st->handshaken) {
        const char *nl = memchr(p, '\n', n);
        if (!nl)
            return 0;
        st->handshaken = 1;
        core_ready(k, c);
        n -= (size_t)(nl + 1 - p);
        p = nl + 1;
    }
    char buf[4096];
    while (n) {
        size_t m = n < sizeof buf ? n : sizeof buf;
        memcpy(buf, p, m);
        rot13(buf, m);
        core_deliver(k, c, buf, m);
        p += m;
        n -= m;
    }
    return 0;
}

static int rot_send(struct core *k, struct conn *c, const void *p, size_t n)
{
    char buf[4096];
    if (n > sizeof buf)
        return -EMSGSIZE;
    memcpy(buf, p, n);
    rot13(buf, n);
    return core_queue(k, c, buf, n);
}

static void rot_release(struct core *k, struct conn *c)
{
    (void)k;
    free(c->tp);
    c->tp = NULL;
    rot_released++;
}

static const struct transport rot_tp = {
    .name = "rot13", .start = rot_start, .recv = rot_recv,
    .send = rot_send, .release = rot_release,
};

static void test_transport(void **state)
{
    struct rec *r = *state;
    r->upper_echo = 1;
    rot_released = 0;
    int fd = dial(listen_here(r, &rot_tp));
    char buf[16];
    read_all(r, fd, buf, 7);
    assert_memory_equal(buf, "HELLO?\n", 7); /* the transport's own bytes */
    assert_int_equal(r->opened, 0);
    send_str(fd, "hi\nuryyb");
    turn(r, &r->in_len, 5, WAIT_MS);
    assert_memory_equal(r->in, "hello", 5); /* plaintext for the handler */
    read_all(r, fd, buf, 5);
    assert_memory_equal(buf, "URYYB", 5); /* HELLO, through the transport */
    close(fd);
    turn(r, &r->closed, 1, WAIT_MS);
    turn(r, &rot_released, 1, WAIT_MS);
    assert_string_equal(r->log, "opened 0;data;closed eof;");
}

/* A connection the transport never made ready is closed unseen. */
static void test_transport_never_ready(void **state)
{
    struct rec *r = *state;
    rot_released = 0;
    int fd = dial(listen_here(r, &rot_tp));
    char buf[8];
    read_all(r, fd, buf, 7);
    close(fd);
    turn(r, &rot_released, 1, WAIT_MS);
    assert_string_equal(r->log, "");
    assert_int_equal(core_live(&r->k), 0);
}

/* Operations that are not connections complete through their core_op. */
struct probe {
    struct core_op op;
    int res, calls;
};

static void probe_done(struct core *k, struct core_op *op, const struct io_uring_cqe *cqe)
{
    (void)k;
    struct probe *p = core_op_owner(op, struct probe, op);
    p->res = cqe->res;
    p->calls++;
}

static void test_ops(void **state)
{
    struct rec *r = *state;
    struct probe nop = { .op.done = probe_done, .res = 1 };
    struct probe sleep = { .op.done = probe_done };
    struct __kernel_timespec ts = { .tv_nsec = 2 * 1000 * 1000 };
    io_uring_prep_nop(core_op_sqe(&r->k, &nop.op));
    io_uring_prep_timeout(core_op_sqe(&r->k, &sleep.op), &ts, 0, 0);
    turn(r, &sleep.calls, 1, WAIT_MS);
    assert_int_equal(nop.calls, 1);
    assert_int_equal(nop.res, 0);
    assert_int_equal(sleep.res, -ETIME);
}

static void test_timer(void **state)
{
    struct rec *r = *state;
    assert_int_equal(core_timer_add(&r->k, timer_now() + 1000000, 42), 0);
    turn(r, &r->timer_key, 42, WAIT_MS);
    assert_string_equal(r->log, "timer 42;");
}

/* max_wait_ms: a wait with nothing to do ends after it, also when the
 * next timer is further away; a nearer timer still comes first. */
static void test_max_wait(void **state)
{
    (void)state;
    struct core k;
    struct core_config cfg = {
        .max_conns = 8, .buffers = 8, .buffer_size = 4096, .max_wait_ms = 200,
    };
    assert_int_equal(core_init(&k, &cfg), 0);
    uint64_t t0 = timer_now();
    assert_int_equal(core_wait(&k), 0);              /* nothing at all */
    uint64_t t1 = timer_now();
    assert_true(t1 - t0 >= 190 * 1000000ull && t1 - t0 < 2000 * 1000000ull);
    assert_int_equal(core_timer_add(&k, t1 + 10 * 1000000000ull, 1), 0);
    assert_int_equal(core_wait(&k), 0);              /* a timer in 10 s */
    uint64_t t2 = timer_now();
    assert_true(t2 - t1 >= 190 * 1000000ull && t2 - t1 < 2000 * 1000000ull);
    assert_int_equal(core_timer_add(&k, t2 + 2 * 1000000ull, 2), 0);
    assert_int_equal(core_wait(&k), 0);              /* one in 2 ms */
    assert_true(timer_now() - t2 < 150 * 1000000ull);
    core_destroy(&k);
}

/* Shutdown closes every connection with reason "shutdown" and stops
 * accepting. */
static void test_shutdown(void **state)
{
    struct rec *r = *state;
    int port = listen_here(r, NULL);
    int a = dial(port), b = dial(port);
    turn(r, &r->opened, 2, WAIT_MS);
    core_shutdown(&r->k);
    turn(r, &r->closed, 2, WAIT_MS);
    assert_int_equal(r->reason, REASON_SHUTDOWN);
    settle(r);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = loopback(port);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), -1);
    assert_int_equal(errno, ECONNREFUSED);
    struct conn *c;
    assert_int_equal(core_connect(&r->k, (struct sockaddr *)&sa, sizeof sa, NULL, &c),
                     -ESHUTDOWN);
    close(fd);
    close(a);
    close(b);
    core_finish(&r->k);
}

/* A transport that delivers one byte at a time, stops when the handler
 * pauses, and keeps the rest: resuming hands it over even if the peer
 * sends nothing more. */
struct keep {
    struct transport_conn base;
    char rest[256];
    size_t n;
};
static const struct transport keep_tp;

static int keep_start(struct core *k, struct conn *c)
{
    (void)k;
    struct keep *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    st->base.ops = &keep_tp;
    c->tp = &st->base;
    return 0;
}

static int keep_recv(struct core *k, struct conn *c, const char *p, size_t n)
{
    struct keep *st = (struct keep *)c->tp;
    assert_true(st->n + n <= sizeof st->rest);
    if (n)
        memcpy(st->rest + st->n, p, n);
    st->n += n;
    size_t i = 0;
    while (i < st->n && !(c->flags & CF_READ_PAUSED))
        core_deliver(k, c, st->rest + i++, 1);
    memmove(st->rest, st->rest + i, st->n - i);
    st->n -= i;
    return 0;
}

static void keep_release(struct core *k, struct conn *c)
{
    (void)k;
    free(c->tp);
    c->tp = NULL;
}

static const struct transport keep_tp = {
    .name = "keep", .start = keep_start, .recv = keep_recv,
    .send = rot_send, .release = keep_release,
};

static void test_transport_pause(void **state)
{
    struct rec *r = *state;
    r->pause_on_data = 1;
    int fd = dial(listen_here(r, &keep_tp));
    send_str(fd, "abcdef");
    turn(r, &r->data_events, 1, WAIT_MS);
    turn(r, NULL, 0, 50);
    assert_int_equal(r->in_len, 1);
    core_resume(&r->k, r->last);
    turn(r, &r->in_len, 6, WAIT_MS); /* the peer sends nothing more */
    assert_memory_equal(r->in, "abcdef", 6);
    close(fd);
    turn(r, &r->closed, 1, WAIT_MS);
}

/* An outbound connection's transport that delivers before it is ready:
 * the handler hears of data only after connected. */
static int eager_start(struct core *k, struct conn *c)
{
    (void)k, (void)c;
    return 1;
}

static int eager_recv(struct core *k, struct conn *c, const char *p, size_t n)
{
    core_deliver(k, c, p, n); /* too early: dropped */
    core_ready(k, c);
    core_deliver(k, c, p, n);
    return 0;
}

static const struct transport eager_tp = {
    .name = "eager", .start = eager_start, .recv = eager_recv,
    .send = rot_send, .release = keep_release,
};

static void test_transport_outbound_order(void **state)
{
    struct rec *r = *state;
    char err[256];
    int lfd = net_listen("127.0.0.1", 0, 0, err, sizeof err);
    assert_true(lfd >= 0);
    struct sockaddr_in sa = loopback(net_port(lfd));
    struct transport_conn *tc = calloc(1, sizeof *tc);
    tc->ops = &eager_tp;
    struct conn *c;
    assert_int_equal(core_connect(&r->k, (struct sockaddr *)&sa, sizeof sa, tc, &c), 0);
    turn(r, NULL, 0, 50);
    assert_int_equal(r->connected, 0); /* not before the transport says */
    int fd = accept(lfd, NULL, NULL);
    assert_true(fd >= 0);
    send_str(fd, "hi");
    turn(r, &r->in_len, 2, WAIT_MS);
    assert_memory_equal(r->in, "hi", 2);
    assert_string_equal(r->log, "connected;data;");
    close(fd);
    close(lfd);
    turn(r, &r->closed, 1, WAIT_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accept_data_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handler_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_drained, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_turn_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_linger, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_listeners, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_never_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_pause, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_outbound_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer, setup, teardown),
        cmocka_unit_test(test_max_wait),
        cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
    };
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
