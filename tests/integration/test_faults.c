/* test_faults.c - what operators meet: stats on SIGUSR1, a graceful
 * shutdown that flushes, dropping root, clients that reset mid-transfer,
 * and a receive-buffer ring far too small for its connections. */
#include "harness.h"

#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static void test_stats_signal(void **state)
{
    (void)state;
    struct h_server s;
    const char *argv[] = { NULL };
    h_start(&s, argv);
    int fd = h_connect(s.port, false);
    char out[5];
    assert_int_equal(h_echo(fd, "stats", out, 5, H_WAIT_MS), 5);
    kill(s.pid, SIGUSR1);
    assert_true(h_log_wait(&s, "stats: conns=1 accepted=1 bytes_in=5 bytes_out=5", H_WAIT_MS));
    assert_true(h_log_wait(&s, "cqes_per_enter=", 0));
    assert_true(h_log_wait(&s, "lua_mem=", 0));
    close(fd);
    h_finish(&s, NULL);
}

static const char goodbye_lua[] =
    "return {\n"
    "  on_data = function(conn, data) conn:send(data) end,\n"
    "  on_close = function(conn, reason)\n"
    "    io.stderr:write('closing for ', reason, '\\n')\n"
    "  end,\n"
    "}\n";

/* SIGTERM: every connection's on_close sees "shutdown", what is queued
 * still goes out, then EOF; the process exits 0. */
static void test_graceful_shutdown(void **state)
{
    (void)state;
    enum { N = 1 << 20 };
    struct h_server s;
    char *path = h_serve(&s, goodbye_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    char *in = malloc(N), *out = malloc(N);
    h_fill_random(in, N, 9);
    h_send_all(fd, in, N);          /* its echo is queued, unread */
    h_sleep_ms(200);
    kill(s.pid, SIGTERM);
    assert_int_equal(h_recv_exact(fd, out, N, H_WAIT_MS), N);
    assert_memory_equal(in, out, N);
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    assert_int_equal(h_stop(&s, 0), 0);
    assert_non_null(strstr(s.log, "closing for shutdown"));
    close(fd);
    free(in);
    free(out);
    free(s.log);
    free(path);
}

static void test_drop_root(void **state)
{
    (void)state;
    struct passwd *pw = getpwnam("nobody");
    if (geteuid() != 0 || !pw) {
        fprintf(stderr, "(not root or no user nobody: skipped)\n");
        return;
    }
    struct h_server s;
    const char *argv[] = { "--user", "nobody", NULL };
    h_start(&s, argv);
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)s.pid);
    FILE *f = fopen(path, "r");
    unsigned uid = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Uid: %u", &uid) == 1)
            break;
    fclose(f);
    assert_int_equal(uid, pw->pw_uid);
    int fd = h_connect(s.port, false);
    char out[2];
    assert_int_equal(h_echo(fd, "hi", out, 2, H_WAIT_MS), 2);
    close(fd);
    h_finish(&s, NULL);
}

/* Clients that reset while the server is sending to them: nothing
 * breaks for anyone else. */
static void test_reset_mid_send(void **state)
{
    (void)state;
    struct h_server s;
    const char *argv[] = { NULL };
    h_start(&s, argv);
    char *junk = calloc(1, 1 << 20);
    for (int i = 0; i < 20; i++) {
        int fd = h_connect(s.port, false);
        h_send_all(fd, junk, 1 << 20);
        struct linger lg = { 1, 0 };    /* close sends RST */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    free(junk);
    int fd = h_connect(s.port, false);
    char out[5];
    assert_int_equal(h_echo(fd, "alive", out, 5, H_WAIT_MS), 5);
    assert_memory_equal(out, "alive", 5);
    close(fd);
    h_finish(&s, NULL);
}

/* Two receive buffers for 100 busy connections: the ring is empty all
 * the time (ENOBUFS), yet every byte is echoed, in order. */
static void test_tiny_buffer_ring(void **state)
{
    (void)state;
    enum { NC = 100, SIZE = 20000 };
    struct h_server s;
    const char *argv[] = { "--buffers", "2", "--buffer-size", "4096", NULL };
    h_start(&s, argv);
    static int fds[NC];
    static char in[NC][SIZE], out[SIZE];
    for (int c = 0; c < NC; c++) {
        fds[c] = h_connect(s.port, false);
        h_fill_random(in[c], SIZE, (unsigned)c + 100);
        h_send_all(fds[c], in[c], SIZE);
    }
    for (int c = 0; c < NC; c++) {
        assert_int_equal(h_recv_exact(fds[c], out, SIZE, H_WAIT_MS), SIZE);
        assert_memory_equal(in[c], out, SIZE);
        close(fds[c]);
    }
    kill(s.pid, SIGUSR1);
    assert_true(h_log_wait(&s, "enobufs=", H_WAIT_MS));
    const char *e = strstr(s.log, "enobufs=");
    assert_true(atoi(e + 8) > 0);   /* it really ran dry */
    h_finish(&s, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_signal),
        cmocka_unit_test(test_graceful_shutdown),
        cmocka_unit_test(test_drop_root),
        cmocka_unit_test(test_reset_mid_send),
        cmocka_unit_test(test_tiny_buffer_ring),
    };
    return cmocka_run_group_tests_name("faults", tests, NULL, NULL);
}
