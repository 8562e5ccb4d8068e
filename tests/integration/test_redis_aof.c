/* test_redis_aof.c - examples/redis.lua's append-only file (--aof FILE):
 * the writes of redis-cli come back after a restart with their TTLs, the
 * writes acknowledged before a kill -9 are there after it, a truncated
 * last record is dropped (and cut off the file), a corrupt one stops the
 * start, a 100,000-command file replays in well under a second, and
 * commands that arrive during a replay are answered from its data. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

/* A fresh directory's AOF path (malloc'd); the directory holds a stub. */
static char *aof_path(void)
{
    char *stub = h_write_file(NULL, "stub", "");
    char *dir = h_dirname(stub);
    char *path = malloc(strlen(dir) + 16);
    sprintf(path, "%s/test.aof", dir);
    free(stub);
    free(dir);
    return path;
}

/* Start examples/redis.lua --aof path; s is zeroed or holds a stopped
 * server, whose log goes. */
static void start(struct h_server *s, const char *path)
{
    free(s->log);
    s->log = NULL;
    const char *argv[] = { "examples/redis.lua", "--aof", path, NULL };
    h_start(s, argv);
}

/* redis-cli -p PORT args... (a NULL-terminated list), its output (malloc'd). */
static char *cli(struct h_server *s, const char *const *args)
{
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    const char *argv[16] = { "redis-cli", "-p", port };
    for (int i = 0; args[i] && i < 12; i++)
        argv[3 + i] = args[i];
    char *out;
    int st = h_exec(argv, NULL, &out, H_WAIT_MS, false);
    if (st == -1)
        fail_msg("redis-cli is not installed (scripts/deps.sh installs it)");
    assert_int_equal(st, 0);
    return out;
}

static void cli_is(struct h_server *s, const char *want, const char *const *args)
{
    char *out = cli(s, args);
    if (strcmp(out, want) != 0)
        fail_msg("redis-cli %s %s: expected '%s', got '%s'", args[0], args[1] ? args[1] : "",
                 want, out);
    free(out);
}
#define IS(want, ...) cli_is(&s, want, (const char *const[]){ __VA_ARGS__, NULL })

static long cli_num(struct h_server *s, const char *a1, const char *a2)
{
    char *out = cli(s, (const char *const[]){ a1, a2, NULL });
    long v = atol(out);
    free(out);
    return v;
}

static char *slurp_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    char *p = malloc((size_t)len + 1);
    assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
    p[len] = 0;
    fclose(f);
    *n = (size_t)len;
    return p;
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Every write command, a restart, and the data back: values, TTLs kept
 * as absolute times (not restarted), expired keys gone. The file is RESP
 * with the TTLs as PXAT and PEXPIREAT. A SIGTERM right after the last
 * reply loses nothing. */
static void test_aof_restart(void **state)
{
    (void)state;
    char *path = aof_path();
    struct h_server s = { 0 };
    start(&s, path);
    IS("OK\n", "SET", "a", "1");
    IS("3\n", "INCRBY", "a", "2");
    IS("4\n", "INCR", "a");
    IS("3\n", "DECR", "a");
    IS("OK\n", "SET", "b", "x", "EX", "100");
    IS("OK\n", "SET", "short", "y", "PX", "300");
    IS("1\n", "EXPIRE", "a", "50");
    IS("OK\n", "MSET", "c", "1", "d", "2");
    IS("1\n", "DEL", "c");
    IS("\n", "SET", "d", "3", "NX");    /* not done: nil */
    IS("OK\n", "SET", "e", "gone");
    IS("1\n", "EXPIRE", "e", "0");      /* a DEL */
    IS("OK\n", "SET", "last", "v");
    assert_int_equal(h_stop(&s, SIGTERM), 0);

    size_t n;
    char *file = slurp_file(path, &n);
    assert_non_null(strstr(file, "$4\r\nPXAT\r\n$13\r\n"));
    assert_non_null(strstr(file, "*3\r\n$9\r\nPEXPIREAT\r\n$1\r\na\r\n$13\r\n"));
    assert_non_null(strstr(file, "*3\r\n$6\r\nINCRBY\r\n$1\r\na\r\n$2\r\n-1\r\n"));
    assert_null(strstr(file, "NX"));
    free(file);

    h_sleep_ms(1500);   /* so that a TTL counted again from the restart would show */
    start(&s, path);
    assert_true(h_log_wait(&s, "replayed 12 commands", H_WAIT_MS));
    IS("3\n", "GET", "a");
    long ttl = cli_num(&s, "TTL", "a");
    assert_true(ttl >= 45 && ttl <= 49);
    ttl = cli_num(&s, "TTL", "b");
    assert_true(ttl >= 95 && ttl <= 99);
    IS("x\n", "GET", "b");
    IS("\n", "GET", "short");
    IS("\n", "GET", "c");
    IS("2\n", "GET", "d");
    IS("-1\n", "TTL", "d");
    IS("\n", "GET", "e");
    IS("v\n", "GET", "last");
    IS("4\n", "DBSIZE");

    /* FLUSHALL is replayed too */
    IS("OK\n", "FLUSHALL");
    IS("OK\n", "SET", "after", "flush");
    assert_int_equal(h_stop(&s, SIGTERM), 0);
    start(&s, path);
    IS("1\n", "DBSIZE");
    IS("flush\n", "GET", "after");
    h_finish(&s, NULL);
    unlink(path);
    free(path);
}

/* A client writing k<i> = i, 16 at a time, for SECS seconds, which then
 * kills PID with SIGKILL if KILL is 1 (right after sending a batch, so
 * that writes are in flight) and prints "i t" for each acknowledged
 * batch: the last key of it and when its replies came (wall clock). */
static const char WRITER_PY[] =
    "import socket, sys, time, os, signal\n"
    "port, secs, pid, kill = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == '1'\n"
    "s = socket.create_connection(('127.0.0.1', port)); s.settimeout(5)\n"
    "end, i, out = time.time() + secs, 0, []\n"
    "while True:\n"
    "    req = b''.join(b'*3\\r\\n$3\\r\\nSET\\r\\n$%d\\r\\n%s\\r\\n$%d\\r\\n%s\\r\\n' % (len(k), k, len(v), v)\n"
    "                  for k, v in ((b'k%d' % j, b'%d' % j) for j in range(i, i + 16)))\n"
    "    s.sendall(req)\n"
    "    if time.time() >= end:\n"
    "        if kill: os.kill(pid, signal.SIGKILL); print('killed %.6f' % time.time())\n"
    "        break\n"
    "    got = b''\n"
    "    while got.count(b'+OK\\r\\n') < 16:\n"
    "        d = s.recv(65536)\n"
    "        if not d: raise SystemExit('closed')\n"
    "        got += d\n"
    "    out.append('%d %.6f' % (i + 15, time.time())); i += 16\n"
    "print('\\n'.join(out))\n";

/* Checks k0..k<last> are all there, with their values: prints "ok". */
static const char CHECK_PY[] =
    "import socket, sys\n"
    "port, last = int(sys.argv[1]), int(sys.argv[2])\n"
    "s = socket.create_connection(('127.0.0.1', port)); s.settimeout(5)\n"
    "f = s.makefile('rb')\n"
    "for base in range(0, last + 1, 500):\n"
    "    keys = [b'k%d' % j for j in range(base, min(base + 500, last + 1))]\n"
    "    s.sendall(b'*%d\\r\\n$4\\r\\nMGET\\r\\n' % (len(keys) + 1) + b''.join(b'$%d\\r\\n%s\\r\\n' % (len(k), k) for k in keys))\n"
    "    assert f.readline() == b'*%d\\r\\n' % len(keys)\n"
    "    for k in keys:\n"
    "        h = f.readline()\n"
    "        if h == b'$-1\\r\\n': raise SystemExit('missing %s' % k.decode())\n"
    "        v = f.readline()[:-2]\n"
    "        if v != k[1:]: raise SystemExit('bad %s' % k.decode())\n"
    "print('ok')\n";

/* The last key acknowledged at or before `before` (-1 if none), from
 * WRITER_PY's output; *killed gets the kill's time if it says. */
static long acked_before(const char *out, double before, double *killed)
{
    long last = -1;
    for (const char *p = out; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        long i;
        double t;
        if (sscanf(p, "killed %lf", &t) == 1)
            *killed = t;
        else if (sscanf(p, "%ld %lf", &i, &t) == 2 && t <= before)
            last = i;
    }
    return last;
}

static void check_keys(struct h_server *s, long last)
{
    char port[16], n[24];
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(n, sizeof n, "%ld", last);
    const char *argv[] = { "python3", "-c", CHECK_PY, port, n, NULL };
    char *out;
    int st = h_exec(argv, NULL, &out, H_WAIT_MS, true);
    if (st != 0 || strcmp(out, "ok\n") != 0)
        fail_msg("keys k0..k%ld after the restart: %s", last, out);
    free(out);
}

static char *run_writer(struct h_server *s, const char *secs, bool kill)
{
    char port[16], pid[16];
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(pid, sizeof pid, "%d", (int)s->pid);
    const char *argv[] = { "python3", "-c", WRITER_PY, port, secs, pid, kill ? "1" : "0", NULL };
    char *out;
    int st = h_exec(argv, NULL, &out, H_WAIT_MS, true);
    if (st != 0)
        fail_msg("the writer failed (%d): %s", st, out);
    return out;
}

/* kill -9 in the middle of a load: every write acknowledged more than a
 * second before it is there after a restart (everysec's promise; a kill
 * keeps what was written to the page cache, so in fact far more is). */
static void test_aof_kill9_mid_load(void **state)
{
    (void)state;
    char *path = aof_path();
    struct h_server s = { 0 };
    start(&s, path);
    char *out = run_writer(&s, "1.6", true);
    double killed = 0;
    acked_before(out, 0, &killed);
    assert_true(killed > 0);
    long last = acked_before(out, killed - 1.0, &killed);
    long all = acked_before(out, killed + 1.0, &killed);
    free(out);
    assert_int_equal(h_stop(&s, 0), 128 + SIGKILL);
    assert_true(last > 1000);
    start(&s, path);
    check_keys(&s, last);
    print_message("kill -9 mid-load: %ld writes acknowledged, %ld of them over 1 s before "
                  "the kill; all of those back\n", all + 1, last + 1);
    h_finish(&s, NULL);
    unlink(path);
    free(path);
}

/* kill -9 more than a second after the last acknowledged write: all of
 * them are there. */
static void test_aof_kill9_after_pause(void **state)
{
    (void)state;
    char *path = aof_path();
    struct h_server s = { 0 };
    start(&s, path);
    char *out = run_writer(&s, "0.5", false);
    double unused = 0;
    long last = acked_before(out, now_s() + 1, &unused);
    free(out);
    assert_true(last > 100);
    h_sleep_ms(1200);
    assert_int_equal(h_stop(&s, SIGKILL), 128 + SIGKILL);
    start(&s, path);
    check_keys(&s, last);
    h_finish(&s, NULL);
    unlink(path);
    free(path);
}

static const char RECORDS[] =
    "*3\r\n$3\r\nSET\r\n$3\r\none\r\n$1\r\n1\r\n"
    "*2\r\n$4\r\nINCR\r\n$3\r\none\r\n";

/* A last record cut short (as by a kill -9 inside a write): dropped with
 * a log line, and cut off the file, so that what is written next follows
 * whole records and the file replays again. */
static void test_aof_truncated(void **state)
{
    (void)state;
    char *path = aof_path();
    char text[256];
    snprintf(text, sizeof text, "%s*3\r\n$3\r\nSET\r\n$3\r\ntwo\r\n$5\r\nval", RECORDS);
    put(path, text);
    struct h_server s = { 0 };
    start(&s, path);
    assert_true(h_log_wait(&s, "ends with a truncated command (29 bytes from byte 52)",
                           H_WAIT_MS));
    IS("2\n", "GET", "one");
    IS("\n", "GET", "two");
    IS("OK\n", "SET", "three", "3");
    assert_int_equal(h_stop(&s, SIGTERM), 0);
    size_t n;
    char *file = slurp_file(path, &n);
    assert_int_equal(n, strlen(RECORDS) + strlen("*3\r\n$3\r\nSET\r\n$5\r\nthree\r\n$1\r\n3\r\n"));
    assert_memory_equal(file, RECORDS, strlen(RECORDS));
    free(file);
    start(&s, path);
    assert_int_equal(h_log_count(&s, "truncated"), 0);
    IS("3\n", "GET", "three");
    IS("2\n", "GET", "one");
    h_finish(&s, NULL);
    unlink(path);
    free(path);
}

/* A bad record before the end stops the start with where it is; so does
 * a command that is not a write, or one that fails. */
static void test_aof_corrupt(void **state)
{
    (void)state;
    char *path = aof_path();
    static const char *const bad[][2] = {
        { "*3\r\n$3\r\nSET\r\n$3\r\none\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$3\r\nXone\r\n"
          "*2\r\n$4\r\nINCR\r\n$3\r\none\r\n", "at byte 29 (invalid bulk format)" },
        { "*3\r\n$3\r\nSET\r\n$3\r\none\r\n$1\r\n1\r\nGET one\r\n*1\r\n$8\r\nFLUSHALL\r\n",
          "at byte 29 (not a '*' array)" },
        { "*2\r\n$3\r\nGET\r\n$3\r\none\r\n*1\r\n$8\r\nFLUSHALL\r\n",
          "at byte 0 (not a write command: GET)" },
        { "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\ny\r\n*2\r\n$4\r\nINCR\r\n$1\r\nx\r\n",
          "at byte 27 (INCR failed: ERR value is not an integer" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put(path, bad[i][0]);
        const char *argv[] = { "-p", "0", "examples/redis.lua", "--aof", path, NULL };
        char *err;
        int st = h_run(argv, &err);
        if (st != 1 || !strstr(err, "bad record in the AOF") || !strstr(err, bad[i][1]))
            fail_msg("case %zu: status %d, expected '%s' in:\n%s", i, st, bad[i][1], err);
        free(err);
    }
    unlink(path);
    free(path);
}

/* An AOF of n SETs key:<i> = value:<i>. */
static void write_sets(const char *path, long n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (long i = 0; i < n; i++) {
        char k[32], v[32];
        int kl = snprintf(k, sizeof k, "key:%ld", i), vl = snprintf(v, sizeof v, "value:%ld", i);
        fprintf(f, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", kl, k, vl, v);
    }
    fclose(f);
}

/* 100,000 commands (4.6 MB, read 1 MiB at a time, records across the
 * chunks' edges) replay in well under a second. */
static void test_aof_replay_speed(void **state)
{
    (void)state;
    char *path = aof_path();
    write_sets(path, 100000);
    struct h_server s = { 0 };
    start(&s, path);
    assert_true(h_log_wait(&s, "replayed 100000 commands", H_WAIT_MS));
    h_log_wait(&s, " s\n", H_WAIT_MS);
    double secs = atof(strstr(strstr(s.log, "replayed 100000"), " in ") + 4);
    print_message("replayed 100000 commands in %.3f s\n", secs);
    assert_true(secs < 1.0);
    IS("value:99999\n", "GET", "key:99999");
    IS("value:0\n", "GET", "key:0");
    IS("100000\n", "DBSIZE");
    h_finish(&s, NULL);
    unlink(path);
    free(path);
}

/* Commands that come while the file replays wait, and are answered from
 * all of its data once it is in, in their order. */
static void test_aof_commands_during_replay(void **state)
{
    (void)state;
    char *path = aof_path();
    write_sets(path, 300000);
    struct h_server s = { 0 };
    start(&s, path);
    int fd = h_connect(s.port, false);
    static const char req[] = "*2\r\n$3\r\nGET\r\n$10\r\nkey:299999\r\n*1\r\n$6\r\nDBSIZE\r\n"
                              "*3\r\n$3\r\nSET\r\n$3\r\nnew\r\n$1\r\n1\r\n";
    h_send_all(fd, req, sizeof req - 1);
    bool early = h_log_count(&s, "replayed 300000") == 0;
    static const char want[] = "$12\r\nvalue:299999\r\n:300000\r\n+OK\r\n";
    char got[64] = { 0 };
    assert_int_equal(h_recv_exact(fd, got, sizeof want - 1, H_WAIT_MS), sizeof want - 1);
    assert_string_equal(got, want);
    assert_true(early);   /* the commands came before the replay was over */
    close(fd);
    h_finish(&s, NULL);
    unlink(path);
    free(path);
}

/* --appendfsync always: a reply goes out only once the records before it
 * are written and fsynced, so the file holds every acknowledged write the
 * moment its reply comes; replies keep their order (a GET after a SET on
 * the same connection, a QUIT's close after its +OK). */
static void test_aof_always(void **state)
{
    (void)state;
    char *path = aof_path();
    struct h_server s = { 0 };
    const char *argv[] = { "examples/redis.lua", "--aof", path, "--appendfsync", "always", NULL };
    h_start(&s, argv);
    int fd = h_connect(s.port, false);
    char req[8192], want[8192];
    size_t n = 0, w = 0;
    for (int i = 0; i < 100; i++) {
        n += (size_t)snprintf(req + n, sizeof req - n,
                              "*3\r\n$3\r\nSET\r\n$3\r\nk%02d\r\n$1\r\n%d\r\n", i, i % 10);
        w += (size_t)snprintf(want + w, sizeof want - w, "+OK\r\n");
    }
    n += (size_t)snprintf(req + n, sizeof req - n, "*2\r\n$3\r\nGET\r\n$3\r\nk99\r\nQUIT\r\n");
    w += (size_t)snprintf(want + w, sizeof want - w, "$1\r\n9\r\n+OK\r\n");
    h_send_all(fd, req, n);
    char got[8192] = { 0 };
    assert_int_equal(h_recv_exact(fd, got, w, H_WAIT_MS), w);
    size_t len;
    char *file = slurp_file(path, &len);   /* at once: no time for a late write */
    assert_string_equal(got, want);
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    assert_non_null(strstr(file, "$3\r\nk99\r\n$1\r\n9\r\n"));
    assert_int_equal(len, 100 * strlen("*3\r\n$3\r\nSET\r\n$3\r\nk00\r\n$1\r\n0\r\n"));
    free(file);
    close(fd);
    h_finish(&s, NULL);
    unlink(path);
    free(path);
}

/* With --shared redis:SIZE (one worker) the data lives in the dictionary:
 * the same records, and the replay fills it, TTLs and INCR included. */
static void test_aof_shared(void **state)
{
    (void)state;
    char *path = aof_path();
    struct h_server s = { 0 };
    const char *argv[] = { "--shared", "redis:8m", "examples/redis.lua", "--aof", path, NULL };
    h_start(&s, argv);
    IS("OK\n", "SET", "n", "41", "EX", "100");
    IS("42\n", "INCR", "n");
    IS("OK\n", "SET", "s", "x");
    IS("1\n", "DEL", "s");
    IS("OK\n", "SET", "t", "y");
    assert_int_equal(h_stop(&s, SIGTERM), 0);
    free(s.log);
    h_start(&s, argv);
    assert_true(h_log_wait(&s, "replayed 5 commands", H_WAIT_MS));
    IS("42\n", "GET", "n");
    long ttl = cli_num(&s, "TTL", "n");
    assert_true(ttl >= 95 && ttl <= 100);
    IS("\n", "GET", "s");
    IS("y\n", "GET", "t");
    IS("2\n", "DBSIZE");
    h_finish(&s, NULL);
    unlink(path);
    free(path);
}

/* With several workers the records of each would reach the file in its
 * own order: the start is refused, with one line. */
static void test_aof_workers(void **state)
{
    (void)state;
    char *path = aof_path();
    /* refused at start, with one line, before any worker serves */
    const char *argv[] = { "-w", "2", "-p", "0", "--shared", "redis:8m",
                           "examples/redis.lua", "--aof", path, NULL };
    char *err;
    int st = h_run(argv, &err);
    if (st <= 0 || st >= 128 || !strstr(err, "--aof works with one worker only"))
        fail_msg("status %d, stderr: %s", st, err);
    assert_null(strstr(err, "listening"));
    free(err);
    unlink(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aof_restart),
        cmocka_unit_test(test_aof_kill9_mid_load),
        cmocka_unit_test(test_aof_kill9_after_pause),
        cmocka_unit_test(test_aof_truncated),
        cmocka_unit_test(test_aof_corrupt),
        cmocka_unit_test(test_aof_replay_speed),
        cmocka_unit_test(test_aof_commands_during_replay),
        cmocka_unit_test(test_aof_always),
        cmocka_unit_test(test_aof_shared),
        cmocka_unit_test(test_aof_workers),
    };
    return cmocka_run_group_tests_name("redis_aof", tests, NULL, NULL);
}
