/* test_echo.c - the built-in echo over real sockets. */
#include "harness.h"

#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static struct h_server server;

static int setup(void **state)
{
    static const char *const argv[] = { NULL };
    h_start(&server, argv);
    *state = &server;
    return 0;
}

/* The same tests with min-wait batching: every byte still arrives, in
 * order, and nothing waits for a batch that never fills. */
static int setup_batch_wait(void **state)
{
    static const char *const argv[] = { "--batch-wait", "50", NULL };
    h_start(&server, argv);
    *state = &server;
    return 0;
}

static int teardown(void **state)
{
    struct h_server *s = *state;
    assert_int_equal(h_stop(s, SIGTERM), 0);
    free(s->log);
    return 0;
}

/* Echo one random payload of n bytes and compare every byte. */
static void echo_size(struct h_server *s, size_t n)
{
    int fd = h_connect(s->port, false);
    unsigned char *in = malloc(n), *out = malloc(n);
    h_fill_random(in, n, (unsigned)n);
    size_t got = h_echo(fd, in, out, n, H_WAIT_MS);
    if (got != n)
        fprintf(stderr, "size %zu: got %zu bytes back\n", n, got);
    assert_int_equal(got, n);
    assert_memory_equal(in, out, n);
    close(fd);
    free(in);
    free(out);
}

static void test_sizes(void **state)
{
    static const size_t sizes[] = { 1, 2, 100, 4095, 4096, 4097, 16383, 16384,
                                    16385, 65536, 1 << 20, 4 << 20 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        echo_size(*state, sizes[i]);
}

static void test_many_messages(void **state)
{
    struct h_server *s = *state;
    int fd = h_connect(s->port, false);
    for (int i = 0; i < 200; i++) {
        char in[64], out[64];
        int n = snprintf(in, sizeof in, "message %d", i);
        h_send_all(fd, in, (size_t)n);
        assert_int_equal(h_recv_exact(fd, out, (size_t)n, H_WAIT_MS), n);
        assert_memory_equal(in, out, (size_t)n);
    }
    close(fd);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* 1,000 connections open at once, each echoing its own message. */
static void test_concurrent(void **state)
{
    enum { N = 1000 };
    struct h_server *s = *state;
    static int fds[N];
    raise_nofile();
    for (int i = 0; i < N; i++)
        fds[i] = h_connect(s->port, false);
    for (int i = 0; i < N; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "connection %04d", i);
        h_send_all(fds[i], msg, (size_t)n);
    }
    for (int i = 0; i < N; i++) {
        char want[32], got[32];
        int n = snprintf(want, sizeof want, "connection %04d", i);
        assert_int_equal(h_recv_exact(fds[i], got, (size_t)n, H_WAIT_MS), n);
        assert_memory_equal(want, got, (size_t)n);
    }
    for (int i = 0; i < N; i++)
        close(fds[i]);
}

/* Send, half-close, then read: the whole echo, then EOF. */
static void test_half_close(void **state)
{
    struct h_server *s = *state;
    enum { N = 300000 };
    int fd = h_connect(s->port, false);
    unsigned char *in = malloc(N), *out = malloc(N + 1);
    h_fill_random(in, N, 7);
    h_send_all(fd, in, N);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    assert_int_equal(h_recv_exact(fd, out, N, H_WAIT_MS), N);
    assert_memory_equal(in, out, N);
    struct pollfd pfd = { fd, POLLIN, 0 };
    assert_int_equal(poll(&pfd, 1, H_WAIT_MS), 1);
    assert_int_equal(recv(fd, out, 1, 0), 0); /* EOF, not more bytes */
    close(fd);
    free(in);
    free(out);
}

static void test_ipv6(void **state)
{
    (void)state;
    struct h_server s;
    static const char *const argv[] = { "-b", "::1", NULL };
    h_start(&s, argv);
    assert_non_null(strstr(s.log, "listening on [::1]:"));
    int fd = h_connect(s.port, true);
    char out[5];
    assert_int_equal(h_echo(fd, "hello", out, 5, H_WAIT_MS), 5);
    assert_memory_equal(out, "hello", 5);
    close(fd);
    assert_int_equal(h_stop(&s, SIGTERM), 0);
    free(s.log);
}

static void test_unix_socket(void **state)
{
    (void)state;
    char dir[] = "/tmp/moonring-unix-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64], bind[80];
    snprintf(path, sizeof path, "%s/s.sock", dir);
    snprintf(bind, sizeof bind, "unix:%s", path);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    strcpy(sun.sun_path, path);
    for (int round = 0; round < 2; round++) {
        struct h_server s;
        const char *argv[] = { "-b", bind, NULL };
        h_start(&s, argv);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof sun), 0);
        char out[5];
        assert_int_equal(h_echo(fd, "hello", out, 5, H_WAIT_MS), 5);
        assert_memory_equal(out, "hello", 5);
        close(fd);
        if (round == 0) {
            /* a crash leaves the socket file: the next start takes it over */
            assert_int_equal(h_stop(&s, SIGKILL), 128 + SIGKILL);
            assert_int_equal(access(path, F_OK), 0);
            /* the kernel releases a dead ring's listener asynchronously:
             * wait until nobody answers there any more */
            for (int t = 0; t < 200; t++) {
                int probe = socket(AF_UNIX, SOCK_STREAM, 0);
                int r = connect(probe, (struct sockaddr *)&sun, sizeof sun);
                close(probe);
                if (r)
                    break;
                h_sleep_ms(10);
            }
        } else {
            assert_int_equal(h_stop(&s, SIGTERM), 0);
            assert_int_not_equal(access(path, F_OK), 0); /* cleaned up */
        }
        free(s.log);
    }
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_many_messages),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_unix_socket),
    };
    const struct CMUnitTest batched[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_many_messages),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_half_close),
    };
    return cmocka_run_group_tests_name("echo", tests, setup, teardown) |
           cmocka_run_group_tests_name("echo --batch-wait", batched,
                                       setup_batch_wait, teardown);
}
