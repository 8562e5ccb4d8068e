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

/* Which worker answers a new connection within ms, 0 if none: a client
 * with a short patience, for a listener that may not be served. */
static int who_new(int port, int ms)
{
    int fd = h_connect(port, false);
    h_send_all(fd, "ping\n", 5);
    char *l = h_line(fd, ms);
    close(fd);
    int w = 0;
    return sscanf(l, "worker %d ping", &w) == 1 ? w : 0;
}

/* kill -STOP one worker: it is in no handler, it just makes no progress,
 * and its listener goes on taking its share of new connections. The
 * master sees its heartbeat stop and kills it after --handler-timeout (1
 * s here, plus the 0.5 s its wait may last, looked at every 0.5 s), then
 * starts another after the back-off (100 ms): 3 s on, every new client
 * is served. */
static void test_stopped_worker(void **state)
{
    (void)state;
    struct h_server s;
    static const char *const opts[] = { "-w", "2", "--handler-timeout", "1", NULL };
    char *path = h_serve(&s, who_lua, opts, NULL);
    assert_true(both_serve(s.port, H_WAIT_MS));
    pid_t victim = worker_pid(&s, 1);
    assert_true(victim > 0);
    assert_int_equal(kill(victim, SIGSTOP), 0);
    h_sleep_ms(3000);
    int served = 0;
    for (int i = 0; i < 20; i++)
        served += who_new(s.port, 1000) != 0;
    kill(victim, SIGCONT);   /* should it still be there: let it go */
    assert_int_equal(served, 20);
    char want[96];
    snprintf(want, sizeof want, "worker 1 (pid %d) made no progress", (int)victim);
    assert_true(h_log_wait(&s, want, 0));
    assert_true(h_log_wait(&s, "(stopped): killing it", 0));
    assert_true(both_serve(s.port, H_WAIT_MS));
    h_finish(&s, path);
}

/* An idle worker's loop still turns (at least twice per --handler-
 * timeout): the heartbeat goes on, and no idle worker is taken for a
 * stuck one. */
static void test_idle_workers_live(void **state)
{
    (void)state;
    struct h_server s;
    static const char *const opts[] = { "-w", "2", "--handler-timeout", "1", NULL };
    char *path = h_serve(&s, who_lua, opts, NULL);
    assert_true(both_serve(s.port, H_WAIT_MS));
    h_sleep_ms(3500);
    assert_true(h_log_wait(&s, NULL, 0));
    assert_int_equal(h_log_count(&s, "no progress"), 0);
    assert_int_equal(h_log_count(&s, "restarting"), 0);
    assert_true(both_serve(s.port, 1000));
    h_finish(&s, path);
}

static const char loop_at_load_lua[] =
    "local mr = require 'moonring'\n"
    "if mr.worker() == 2 then while true do end end\n"
    "return { on_data = function(conn, data)\n"
    "  conn:send('worker ', mr.worker(), ' ', data)\n"
    "end }\n";

/* Worker 2's top-level code never ends, before its loop exists: the
 * master kills it after --handler-timeout and says why, and restarts it
 * ever more slowly, as it dies young. Worker 1 serves all along. */
static void test_loop_at_load(void **state)
{
    (void)state;
    struct h_server s;
    static const char *const opts[] = { "-w", "2", "--handler-timeout", "1", NULL };
    char *path = h_serve(&s, loop_at_load_lua, opts, NULL);
    assert_true(h_log_wait(&s, "(stuck loading the script): killing it", 4000));
    assert_true(h_log_wait(&s, "restarting in 200 ms", 4000)); /* the second */
    /* worker 2's listener waits for a successor that never comes up:
     * the connections it takes hang, so look for worker 1 */
    int w = 0;
    for (int i = 0; i < 10 && w != 1; i++)
        w = who_new(s.port, 300);
    assert_int_equal(w, 1);
    assert_true(h_log_count(&s, "stuck loading the script") <= 3);
    h_finish(&s, path);
}

/* A lone worker reloads a script whose top-level code never ends: its
 * watchdog thread ends the process (exit 70) and says why. */
static void test_lone_reload_loop(void **state)
{
    (void)state;
    struct h_server s;
    static const char *const opts[] = { "--no-reload", "--handler-timeout", "1", NULL };
    char *path = h_serve(&s, who_lua, opts, NULL);
    assert_int_equal(who_new(s.port, H_WAIT_MS), 1);
    h_save(path, "while true do end\n", "rename");
    kill(s.pid, SIGHUP);
    assert_true(h_log_wait(&s, "(stuck reloading the script): exiting", 4000));
    assert_int_equal(h_stop(&s, 0), 70);
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
        cmocka_unit_test(test_stopped_worker),
        cmocka_unit_test(test_idle_workers_live),
        cmocka_unit_test(test_loop_at_load),
        cmocka_unit_test(test_lone_reload_loop),
        cmocka_unit_test(test_lua_memory),
    };
    return cmocka_run_group_tests_name("workers", tests, NULL, NULL);
}
