/* test_limits.c - running out of fds or of connection slots: the server
 * neither spins nor exits, and serves again once there is room. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static void echo_ok(int fd, const char *msg)
{
    char out[64];
    size_t n = strlen(msg);
    assert_int_equal(h_echo(fd, msg, out, n, H_WAIT_MS), n);
    assert_memory_equal(out, msg, n);
}

/* CPU seconds (user + system) the process has used. */
static double cpu_secs(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    unsigned long ut, st;
    assert_int_equal(sscanf(strrchr(buf, ')') + 2,
                            "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                            &ut, &st), 2);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* With 64 fds, 100 clients: the first ones are served, the rest wait in
 * the backlog while accepting pauses (no spinning), and are served as
 * soon as earlier ones close. */
static void test_emfile(void **state)
{
    (void)state;
    enum { N = 100 };
    struct h_server s;
    const char *argv[] = { "--max-conns", "1000", NULL };
    h_nofile = 64;
    h_start(&s, argv);
    h_nofile = 0;
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = h_connect(s.port, false);
    echo_ok(fds[0], "first");
    assert_true(h_log_wait(&s, "pausing accepts", H_WAIT_MS));
    double cpu0 = cpu_secs(s.pid);
    h_sleep_ms(500);
    assert_true(cpu_secs(s.pid) - cpu0 < 0.2);   /* paused, not spinning */
    for (int i = 0; i < N / 2; i++)
        close(fds[i]);
    for (int i = N / 2; i < N; i++) {
        char msg[32];
        snprintf(msg, sizeof msg, "client %d", i);
        echo_ok(fds[i], msg);
    }
    for (int i = N / 2; i < N; i++)
        close(fds[i]);
    assert_int_equal(h_stop(&s, SIGTERM), 0);
    free(s.log);
}

/* Past --max-conns a client is closed at once; the others go on. */
static void test_max_conns(void **state)
{
    (void)state;
    struct h_server s;
    const char *argv[] = { "--max-conns", "2", NULL };
    h_start(&s, argv);
    int a = h_connect(s.port, false), b = h_connect(s.port, false);
    echo_ok(a, "a");
    echo_ok(b, "b");
    int c = h_connect(s.port, false);
    assert_true(h_wait_closed(c, H_WAIT_MS));
    assert_true(h_log_wait(&s, "connection limit (2) reached", H_WAIT_MS));
    echo_ok(a, "still a");
    close(a);
    h_sleep_ms(100);
    int d = h_connect(s.port, false);             /* room again */
    echo_ok(d, "d");
    close(b);
    close(c);
    close(d);
    assert_int_equal(h_stop(&s, SIGTERM), 0);
    free(s.log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_emfile),
        cmocka_unit_test(test_max_conns),
    };
    return cmocka_run_group_tests_name("limits", tests, NULL, NULL);
}
