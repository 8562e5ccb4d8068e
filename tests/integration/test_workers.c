/* test_workers.c - several workers under a master: connections spread
 * over them, signals reach them, and a worker that dies is restarted
 * while the others lose nothing. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static const char who_lua[] =
    "local mr = require 'moonring'\n"
    "return { on_data = function(conn, data)\n"
    "  if data == 'exit\\n' then os.exit(3) end\n"
    "  if data == 'loop\\n' then while true do end end\n"
    "  if data == 'hog\\n' then\n"
    "    local t = {}\n"
    "    for i = 1, 1e9 do t[i] = ('x'):rep(64) .. i end\n"
    "  end\n"
    "  conn:send('worker ', mr.worker(), ' ', data)\n"
    "end }\n";

/* Which worker answers on fd (1 or 2), 0 if none. */
static int who(int fd)
{
    h_send_all(fd, "ping\n", 5);
    char *l = h_line(fd, H_WAIT_MS);
    int w = 0;
    if (sscanf(l, "worker %d ping", &w) != 1)
        return 0;
    return w;
}

/* New connections reach both workers within ms. */
static bool both_serve(int port, int ms)
{
    int seen = 0;
    for (int t = 0; t < ms && seen != 3; t += 10) {
        int fd = h_connect(port, false);
        int w = who(fd);
        close(fd);
        if (w == 1 || w == 2)
            seen |= 1 << (w - 1);
        else
            h_sleep_ms(10);
    }
    return seen == 3;
}

/* The pid of worker k, from its "listening on" line. */
static pid_t worker_pid(struct h_server *s, int k)
{
    char tag[32];
    snprintf(tag, sizeof tag, "(worker %d,", k);
    assert_true(h_log_wait(s, tag, H_WAIT_MS));
    const char *p = strstr(s->log, tag);
    while (p > s->log && p[-1] != '\n')
        p--;
    p = strstr(p, "] ");
    return p ? (pid_t)atoi(p + 2) : 0;
}

static void test_spread_and_signals(void **state)
{
    (void)state;
    struct h_server s;
    static const char *const opts[] = { "-w", "2", NULL };
    char *path = h_serve(&s, who_lua, opts, NULL);
    assert_true(both_serve(s.port, H_WAIT_MS));
    kill(s.pid, SIGHUP);                          /* forwarded to each */
    for (int t = 0; t < H_WAIT_MS && h_log_count(&s, "reloaded") < 2; t += 10)
        h_sleep_ms(10);
    assert_int_equal(h_log_count(&s, "reloaded"), 2);
    h_finish(&s, path);                           /* SIGTERM: exit 0 */
}

/* kill -9 one worker under load: its own connections go, the other
 * worker's carry on untouched, and new connections are served by both
 * again within a second. */
static void test_kill_worker(void **state)
{
    (void)state;
    enum { N = 20 };
    struct h_server s;
    static const char *const opts[] = { "-w", "2", NULL };
    char *path = h_serve(&s, who_lua, opts, NULL);
    assert_true(both_serve(s.port, H_WAIT_MS));
    int fds[N], owner[N];
    for (int i = 0; i < N; i++) {
        fds[i] = h_connect(s.port, false);
        owner[i] = who(fds[i]);
    }
    pid_t victim = worker_pid(&s, 1);
    assert_true(victim > 0);
    assert_int_equal(kill(victim, SIGKILL), 0);
    int survivors = 0;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < N; i++)
            if (owner[i] == 2) {
                assert_int_equal(who(fds[i]), 2);   /* nothing lost there */
                survivors += round == 0;
            }
    assert_true(survivors > 0);
    assert_true(h_log_wait(&s, "killed by signal 9", H_WAIT_MS));
    assert_true(both_serve(s.port, 1000));   /* restarted after 100 ms */
    for (int i = 0; i < N; i++)
        close(fds[i]);
    h_finish(&s, path);
}

/* A worker that keeps dying is restarted ever more slowly, not in a loop. */
static void test_backoff(void **state)
{
    (void)state;
    struct h_server s;
    static const char *const opts[] = { "-w", "2", NULL };
    char *path = h_serve(&s, who_lua, opts, NULL);
    for (int i = 0; i < 3; i++) {
        int fd = h_connect(s.port, false);
        h_send_all(fd, "exit\n", 5);
        h_wait_closed(fd, H_WAIT_MS);
        close(fd);
        h_sleep_ms(450);
    }
    assert_true(h_log_wait(&s, "exited with status 3; restarting in", H_WAIT_MS));
    assert_true(both_serve(s.port, H_WAIT_MS));
    h_finish(&s, path);
}

/* A handler that never returns: the master kills that worker and starts
 * another; the endless loop is compiled by the JIT, which no hook could
 * interrupt. */
static void test_runaway_handler(void **state)
{
    (void)state;
    struct h_server s;
    static const char *const opts[] = { "-w", "2", "--handler-timeout", "1", NULL };
    char *path = h_serve(&s, who_lua, opts, NULL);
    int fd = h_connect(s.port, false);
    h_send_all(fd, "loop\n", 5);
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    assert_true(h_log_wait(&s, "stuck in a handler", H_WAIT_MS));
    assert_true(both_serve(s.port, H_WAIT_MS));
    h_finish(&s, path);
}

/* Without a master, the stuck worker exits (for its supervisor to
 * restart) instead of hanging for good. */
static void test_lone_runaway(void **state)
{
    (void)state;
    struct h_server s;
    static const char *const opts[] = { "--handler-timeout", "1", NULL };
    char *path = h_serve(&s, who_lua, opts, NULL);
    int fd = h_connect(s.port, false);
    h_send_all(fd, "loop\n", 5);
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    assert_true(h_log_wait(&s, "stuck in a handler", H_WAIT_MS));
    assert_int_equal(h_stop(&s, 0), 70);   /* signal 0: just wait for it */
    free(s.log);
    free(path);
}

/* --lua-memory: a handler that eats the heap fails like any error; the
 * worker and its other connections go on. */
static void test_lua_memory(void **state)
{
    (void)state;
    struct h_server s;
    static const char *const opts[] = { "--lua-memory", "32", NULL };
    char *path = h_serve(&s, who_lua, opts, NULL);
    int other = h_connect(s.port, false);
    assert_int_equal(who(other), 1);
    int fd = h_connect(s.port, false);
    h_send_all(fd, "hog\n", 4);
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    assert_true(h_log_wait(&s, "not enough memory", H_WAIT_MS));
    assert_int_equal(who(other), 1);
    close(other);
    h_finish(&s, path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spread_and_signals),
        cmocka_unit_test(test_kill_worker),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_runaway_handler),
        cmocka_unit_test(test_lone_runaway),
        cmocka_unit_test(test_lua_memory),
    };
    return cmocka_run_group_tests_name("workers", tests, NULL, NULL);
}
