/* test_core_udp.c - the core's datagram sockets through the real ring and
 * real loopback sockets, with a fake handler in C: echo of every size,
 * truncation, the per-turn bound, connected sockets, the send queue's
 * bound, and closing. */
#include "core.h"
#include "fds.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#define TICK_KEY 0xfffffffful
#define TURN_MS  5
#define WAIT_MS  3000

struct rec {
    struct core k;
    int dgrams, errors, max_turn, this_turn;
    unsigned last_flags;
    size_t last_len;
    struct core_udp *last_u;
    struct sockaddr_storage last_peer;
    socklen_t last_plen;
    bool echo;                 /* reply with the same bytes */
};

static void ev_timer(void *ctx, uint64_t key, uint64_t due)
{
    (void)ctx, (void)key, (void)due;
}

static void ev_conn(void *ctx, struct conn *c) { (void)ctx, (void)c; }
static void ev_data(void *ctx, struct conn *c, const char *p, size_t n)
{
    (void)ctx, (void)c, (void)p, (void)n;
}

static void ev_datagram(void *ctx, struct core_udp *u, const struct sockaddr *peer,
                        socklen_t plen, const char *p, size_t n, unsigned flags)
{
    struct rec *r = ctx;
    r->last_u = u;
    if (!p) {
        r->errors++;
        return;
    }
    r->dgrams++;
    r->this_turn++;
    r->last_len = n;
    r->last_flags = flags;
    memcpy(&r->last_peer, peer, plen);
    r->last_plen = plen;
    if (r->echo)
        assert_int_equal(core_sendto(&r->k, u, u->listener ? peer : NULL,
                                     plen, p, n), 0);
}

static const struct core_events events = {
    .opened = ev_conn, .connected = ev_conn, .data = ev_data,
    .drained = ev_conn, .closed = ev_conn, .timer = ev_timer,
    .datagram = ev_datagram,
};

static int fds_before;

static struct rec *make(unsigned buffers, unsigned size)
{
    struct rec *r = calloc(1, sizeof *r);
    struct core_config cfg = {
        .max_conns = 16, .buffers = 16, .buffer_size = 4096,
        .udp_buffers = buffers, .udp_buffer_size = size,
    };
    assert_non_null(r);
    assert_int_equal(core_init(&r->k, &cfg), 0);
    core_set_events(&r->k, &events, r);
    return r;
}

static int setup(void **state)
{
    fds_before = count_fds();
    *state = NULL;
    return 0;
}

static void one_turn(struct rec *r)
{
    r->this_turn = 0;
    core_timer_add(&r->k, timer_now() + TURN_MS * 1000000ull, TICK_KEY);
    assert_int_equal(core_wait(&r->k), 0);
    core_run(&r->k);
    if (r->this_turn > r->max_turn)
        r->max_turn = r->this_turn;
}

static void turn(struct rec *r, const int *flag, int want)
{
    uint64_t end = timer_now() + WAIT_MS * 1000000ull;
    while (*flag < want && timer_now() < end)
        one_turn(r);
    assert_int_equal(*flag, want);
}

static void done(struct rec *r)
{
    core_shutdown(&r->k);
    for (int i = 0; i < 4; i++)
        one_turn(r);
    core_finish(&r->k);
    core_destroy(&r->k);
    free(r);
    assert_int_equal(count_fds(), fds_before);
}

/* A listener on 127.0.0.1 or ::1; its port. */
static int listen_udp(struct rec *r, const char *addr)
{
    char err[256];
    int fd = net_bind_udp(addr, 0, 0, err, sizeof err);
    assert_true(fd >= 0);
    int port = net_port(fd);
    int e = 0;
    assert_non_null(core_udp_listen(&r->k, fd, &e));
    return port;
}

static int client(bool v6, int port, struct sockaddr_storage *to, socklen_t *len)
{
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    memset(to, 0, sizeof *to);
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)to;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_loopback;
        *len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)to;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *len = sizeof *a;
    }
    return fd;
}

/* Turn r until fd has a datagram; receive it. */
static ssize_t turn_recv(struct rec *r, int fd, char *buf, size_t cap)
{
    uint64_t end = timer_now() + WAIT_MS * 1000000ull;
    while (timer_now() < end) {
        ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
        if (n >= 0)
            return n;
        one_turn(r);
    }
    return -1;
}

static void echo_sizes(bool v6, bool sendmsg)
{
    static const size_t sizes[] = { 1, 2, 64, 1472, 9000, 65507 };
    struct rec *r = make(0, 0);
    r->echo = true;
    r->k.udp_sendmsg = sendmsg; /* as after a kernel refused a send's address */
    int port = listen_udp(r, v6 ? "::1" : "127.0.0.1");
    struct sockaddr_storage to;
    socklen_t tl;
    int fd = client(v6, port, &to, &tl);
    char *out = malloc(65536), *in = malloc(65536);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (size_t j = 0; j < sizes[i]; j++)
            out[j] = (char)(i * 7 + j);
        assert_int_equal(sendto(fd, out, sizes[i], 0, (struct sockaddr *)&to, tl),
                         (ssize_t)sizes[i]);
        assert_int_equal(turn_recv(r, fd, in, 65536), (ssize_t)sizes[i]);
        assert_memory_equal(in, out, sizes[i]);
        assert_int_equal(r->last_flags, 0);
    }
    /* the peer the event named is the client's socket */
    struct sockaddr_storage me;
    socklen_t ml = sizeof me;
    getsockname(fd, (struct sockaddr *)&me, &ml);
    assert_int_equal(r->last_plen, ml);
    assert_int_equal(r->last_peer.ss_family, v6 ? AF_INET6 : AF_INET);
    assert_int_equal(((struct sockaddr_in *)&r->last_peer)->sin_port,
                     ((struct sockaddr_in *)&me)->sin_port);
    assert_true(r->last_u->listener);
    assert_int_equal(r->k.stats.dgrams_in, 6);
    assert_int_equal(r->k.stats.dgrams_out, 6);
    free(out);
    free(in);
    close(fd);
    done(r);
}

static void test_echo_v4(void **state) { (void)state; echo_sizes(false, false); }
static void test_echo_v6(void **state) { (void)state; echo_sizes(true, false); }
static void test_echo_sendmsg_v4(void **state) { (void)state; echo_sizes(false, true); }
static void test_echo_sendmsg_v6(void **state) { (void)state; echo_sizes(true, true); }

/* A send whose address the kernel refuses (EINVAL: here a length too
 * short for AF_INET) is counted dropped and makes the core use sendmsg
 * from then on; the echo goes on through it. */
static void test_send_fallback(void **state)
{
    (void)state;
    struct rec *r = make(0, 0);
    int port = listen_udp(r, "127.0.0.1");
    struct sockaddr_storage to;
    socklen_t tl;
    int fd = client(false, port, &to, &tl);
    struct core_udp *u = r->k.udp[0];
    assert_false(r->k.udp_sendmsg);
    assert_int_equal(core_sendto(&r->k, u, (struct sockaddr *)&to, 4, "x", 1), 0);
    for (int i = 0; i < 10 && !r->k.udp_sendmsg; i++)
        one_turn(r);
    assert_true(r->k.udp_sendmsg);
    assert_int_equal(r->k.stats.dgrams_dropped, 1);
    r->echo = true;
    char in[8];
    assert_int_equal(sendto(fd, "hello", 5, 0, (struct sockaddr *)&to, tl), 5);
    assert_int_equal(turn_recv(r, fd, in, sizeof in), 5);
    assert_memory_equal(in, "hello", 5);
    close(fd);
    done(r);
}

/* Longer than the buffer: the start of it, flagged, counted. */
static void test_truncated(void **state)
{
    (void)state;
    struct rec *r = make(8, 100);
    int port = listen_udp(r, "127.0.0.1");
    struct sockaddr_storage to;
    socklen_t tl;
    int fd = client(false, port, &to, &tl);
    char buf[500];
    memset(buf, 'z', sizeof buf);
    sendto(fd, buf, 100, 0, (struct sockaddr *)&to, tl);
    turn(r, &r->dgrams, 1);
    assert_int_equal(r->last_len, 100);
    assert_int_equal(r->last_flags, 0);
    sendto(fd, buf, sizeof buf, 0, (struct sockaddr *)&to, tl);
    turn(r, &r->dgrams, 2);
    assert_int_equal(r->last_len, 100);
    assert_int_equal(r->last_flags, CORE_DGRAM_TRUNC);
    assert_int_equal(r->k.stats.dgrams_truncated, 1);
    close(fd);
    done(r);
}

/* 200 datagrams waiting: no turn takes more than the 8 buffers, and
 * none is lost (they wait in the socket). */
static void test_turn_bound(void **state)
{
    (void)state;
    struct rec *r = make(8, 2048);
    int port = listen_udp(r, "127.0.0.1");
    struct sockaddr_storage to;
    socklen_t tl;
    int fd = client(false, port, &to, &tl);
    one_turn(r); /* the receive is armed */
    for (int i = 0; i < 200; i++)
        assert_int_equal(sendto(fd, "ping", 4, 0, (struct sockaddr *)&to, tl), 4);
    turn(r, &r->dgrams, 200);
    assert_true(r->max_turn <= 8);
    assert_true(r->max_turn >= 2);
    assert_true(r->k.stats.dgram_turns_full > 0);
    close(fd);
    done(r);
}

/* A connected socket hears its peer only, answers it, and closes. */
static void test_connected(void **state)
{
    (void)state;
    struct rec *r = make(0, 0);
    int peer = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int other = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    assert_int_equal(bind(peer, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(peer, (struct sockaddr *)&a, &al);
    int e = 0;
    struct core_udp *u = core_udp_connect(&r->k, (struct sockaddr *)&a, al, &e);
    assert_non_null(u);
    assert_false(u->listener);
    assert_int_equal(core_sendto(&r->k, u, NULL, 0, "hello", 5), 0);
    char buf[64];
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    one_turn(r);
    struct pollfd pf = { .fd = peer, .events = POLLIN };
    assert_int_equal(poll(&pf, 1, WAIT_MS), 1);
    assert_int_equal(recvfrom(peer, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl), 5);
    assert_memory_equal(buf, "hello", 5);
    /* from another socket: the kernel drops it; from the peer: comes */
    sendto(other, "nope", 4, 0, (struct sockaddr *)&from, fl);
    sendto(peer, "back", 4, 0, (struct sockaddr *)&from, fl);
    turn(r, &r->dgrams, 1);
    assert_int_equal(r->last_len, 4);
    assert_ptr_equal(r->last_u, u);
    for (int i = 0; i < 5; i++)
        one_turn(r);
    assert_int_equal(r->dgrams, 1);
    /* nobody listens on the peer's port any more: an error event */
    close(peer);
    assert_int_equal(core_sendto(&r->k, u, NULL, 0, "x", 1), 0);
    turn(r, &r->errors, 1);
    assert_int_equal(u->err, -ECONNREFUSED);
    core_udp_close(&r->k, u);
    assert_int_equal(core_sendto(&r->k, u, NULL, 0, "x", 1), -EPIPE);
    for (int i = 0; i < 4; i++)
        one_turn(r);
    assert_null(r->k.udp[0]); /* freed */
    close(other);
    done(r);
}

/* What the sends hold with the kernel is bounded: 64 datagrams of
 * 65535 bytes fill the 4 MiB, the 65th is refused and counted. */
static void test_send_bound(void **state)
{
    (void)state;
    struct rec *r = make(0, 0);
    int port = listen_udp(r, "127.0.0.1");
    struct sockaddr_storage to;
    socklen_t tl;
    int fd = client(false, port, &to, &tl);
    char *big = calloc(1, 65535);
    struct core_udp *u = r->k.udp[0];
    for (int i = 0; i < 64; i++)
        assert_int_equal(core_sendto(&r->k, u, (struct sockaddr *)&to, tl, big, 65535), 0);
    assert_int_equal(core_sendto(&r->k, u, (struct sockaddr *)&to, tl, big, 65535), -ENOBUFS);
    assert_int_equal(r->k.stats.dgrams_dropped, 1);
    assert_int_equal(core_sendto(&r->k, u, (struct sockaddr *)&to, tl, big, 65536), -EMSGSIZE);
    one_turn(r); /* they went; room again */
    assert_int_equal(r->k.udp_queued, 0);
    assert_int_equal(core_sendto(&r->k, u, (struct sockaddr *)&to, tl, big, 1), 0);
    free(big);
    close(fd);
    done(r);
}

/* A datagram queued in the last turn, then the core torn down at once:
 * its send buffer is freed without touching the socket freed before it
 * (the sanitizer build saw a use after free here). */
static void test_send_at_destroy(void **state)
{
    (void)state;
    struct rec *r = make(0, 0);
    int port = listen_udp(r, "127.0.0.1");
    struct sockaddr_storage to;
    socklen_t tl;
    int fd = client(false, port, &to, &tl);
    struct core_udp *u = r->k.udp[0];
    assert_int_equal(core_sendto(&r->k, u, (struct sockaddr *)&to, tl, "late", 4), 0);
    core_shutdown(&r->k);
    core_finish(&r->k);
    core_destroy(&r->k);
    free(r);
    close(fd);
    assert_int_equal(count_fds(), fds_before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_echo_v4, setup),
        cmocka_unit_test_setup(test_echo_v6, setup),
        cmocka_unit_test_setup(test_echo_sendmsg_v4, setup),
        cmocka_unit_test_setup(test_echo_sendmsg_v6, setup),
        cmocka_unit_test_setup(test_send_fallback, setup),
        cmocka_unit_test_setup(test_truncated, setup),
        cmocka_unit_test_setup(test_turn_bound, setup),
        cmocka_unit_test_setup(test_connected, setup),
        cmocka_unit_test_setup(test_send_bound, setup),
        cmocka_unit_test_setup(test_send_at_destroy, setup),
    };
    return cmocka_run_group_tests_name("udp", tests, NULL, NULL);
}
