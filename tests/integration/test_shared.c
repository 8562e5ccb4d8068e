/* test_shared.c - --shared dictionaries from Lua: every operation, TTLs,
 * LRU eviction, two workers adding to one key at once, a worker killed
 * with -9 in the middle of its sets while the other goes on, reloads
 * that keep the data, and examples/redis.lua under -w 2 seen through
 * redis-cli. The script evaluates each line it is sent as Lua, with the
 * dictionary as `d`, and answers the results joined by spaces. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static const char eval_lua[] =
    "local mr = require 'moonring'\n"
    "local d = mr.shared.t or mr.shared.small\n"
    "d:set('loaded', true)   -- at load time too\n"
    "-- a value that says whether it was read whole\n"
    "local function value(i)\n"
    "  return i .. ':' .. string.rep(string.char(97 + i % 26), i % 300) .. ':' .. i\n"
    "end\n"
    "local function whole(v)\n"
    "  local a, body, b = v:match('^(%d+):(%a*):(%d+)$')\n"
    "  if not a or a ~= b or #body ~= tonumber(a) % 300 then return false end\n"
    "  return body == string.rep(string.char(97 + tonumber(a) % 26), #body)\n"
    "end\n"
    "local env = setmetatable({ d = d, mr = mr, value = value, whole = whole },\n"
    "                         { __index = _G })\n"
    "local function reply(ok, ...)\n"
    "  if not ok then return 'ERR ' .. tostring((...)) end\n"
    "  local t = {}\n"
    "  for i = 1, select('#', ...) do t[i] = tostring((select(i, ...))) end\n"
    "  return table.concat(t, ' ')\n"
    "end\n"
    "return { on_data = function(conn, data)\n"
    "  for line in data:gmatch('[^\\n]+') do\n"
    "    local f, e = loadstring(line, 'line')\n"
    "    if f then setfenv(f, env) end\n"
    "    conn:send(f and reply(pcall(f)) or 'ERR ' .. e, '\\n')\n"
    "  end\n"
    "end }\n";

/* Send one line of Lua on fd; the answer (static), waiting up to ms. */
static char *ask_ms(int fd, const char *lua, int ms)
{
    h_send_all(fd, lua, strlen(lua));
    h_send_all(fd, "\n", 1);
    return h_line(fd, ms);
}

static char *ask(int fd, const char *lua) { return ask_ms(fd, lua, H_WAIT_MS); }

#define ASK(fd, lua, want) assert_string_equal(ask(fd, lua), want)

static char *serve(struct h_server *s, const char *workers, const char *dict)
{
    const char *const opts[] = { "-w", workers, "--shared", dict, NULL };
    return h_serve(s, eval_lua, opts, NULL);
}

/* Every method, its results and its errors, in the lone-worker mode. */
static void test_operations(void **state)
{
    (void)state;
    struct h_server s;
    char *path = serve(&s, "1", "t:1m");
    int fd = h_connect(s.port, false);
    ASK(fd, "return d:get('loaded'), mr.shared.nope, tostring(d)", "true nil shared dictionary t");
    ASK(fd, "return d:set('a', 'x'), d:get('a')", "true x");
    ASK(fd, "return d:set('f', 'y', 0, 42), d:get('f')", "true y 42");
    ASK(fd, "return d:set('n', 1.5), d:get('n')", "true 1.5");
    ASK(fd, "return d:set('b', false), d:get('b')", "true false");
    ASK(fd, "return d:add('a', 'z')", "nil exists");
    ASK(fd, "return d:add('new', 'z'), d:get('new')", "true z");
    ASK(fd, "return d:replace('none', 1)", "nil not found");
    ASK(fd, "return d:replace('a', 'w'), d:get('a')", "true w");
    ASK(fd, "return d:incr('none', 1)", "nil not found");
    ASK(fd, "return d:incr('c', 5, 10), d:incr('c', -1), d:get('c')", "15 14 14");
    ASK(fd, "return d:incr('a', 1)", "nil not a number");
    ASK(fd, "return d:delete('a'), d:delete('a'), d:get('a')", "true false nil");
    ASK(fd, "d:set('x', 1); d:set('x', nil); return d:get('x')", "nil");
    ASK(fd, "return d:ttl('c')", "0");
    ASK(fd, "return d:ttl('none')", "nil not found");
    ASK(fd, "d:set('t', 1, 100); return math.ceil(d:ttl('t'))", "100");
    ASK(fd, "return d:expire('t', 0), d:ttl('t')", "true 0");
    ASK(fd, "return d:expire('none', 1)", "nil not found");
    ASK(fd, "d:flush_all(); for i = 1, 1500 do d:set('k' .. i, i) end; "
            "return #d:keys(), #d:keys(0), #d:keys(10)", "1024 1500 10");
    ASK(fd, "return d:capacity() > 1000000, d:free_space() < d:capacity()", "true true");
    ASK(fd, "d:flush_all(); return d:free_space() == d:capacity(), #d:keys(0)", "true 0");
    ASK(fd, "return d:get('')", "nil empty key");
    ASK(fd, "return d:set(string.rep('k', 65536), 1)", "nil key too long");
    ASK(fd, "return d:set('big', string.rep('x', 2000000))", "nil no memory");
    ASK(fd, "local v = string.rep('x', 100000); return d:set('big', v), d:get('big') == v",
        "true true");
    assert_non_null(strstr(ask(fd, "return d.get('x')"), "shared dictionary expected"));
    assert_non_null(strstr(ask(fd, "return d:set('x', {})"), "string, number or boolean expected"));
    assert_non_null(strstr(ask(fd, "return d:set('x', 1, -1)"), "seconds expected"));
    assert_non_null(strstr(ask(fd, "return d:set('x', 1, 0, 1.5)"), "flags expected"));
    /* from a timer and from a coroutine that waits, as from a handler */
    ASK(fd, "mr.after(0, function() d:set('timer', 'yes') end); "
            "mr.spawn(function() mr.sleep(0.01); d:set('co', 'yes') end); return true", "true");
    h_sleep_ms(100);
    ASK(fd, "return d:get('timer'), d:get('co')", "yes yes");
    ASK(fd, "local s = mr.stats().shared.t; "
            "return s.hits > 0, s.misses > 0, s.capacity == d:capacity(), s.entries, s.wipes",
        "true true true 3 0");
    kill(s.pid, SIGUSR1);
    assert_true(h_log_wait(&s, "stats: shared t: hits=", H_WAIT_MS));
    /* a reload keeps the data: it lives outside the Lua state */
    kill(s.pid, SIGHUP);
    assert_true(h_log_wait(&s, "reloaded", H_WAIT_MS));
    close(fd);
    fd = h_connect(s.port, false);
    ASK(fd, "return d:get('timer'), d:get('big') ~= nil", "yes true");
    close(fd);
    h_finish(&s, path);
}

static void test_ttl_expiry(void **state)
{
    (void)state;
    struct h_server s;
    char *path = serve(&s, "1", "t:1m");
    int fd = h_connect(s.port, false);
    ASK(fd, "d:set('short', 'v', 0.2); d:set('long', 'v', 100); d:incr('n', 1, 0, 0.2); "
            "return d:get('short'), d:get('n')", "v 1");
    h_sleep_ms(300);
    ASK(fd, "return d:get('short'), d:get('long'), d:get('n'), d:ttl('short')",
        "nil v nil nil not found");
    /* gone means gone for add, replace and incr too */
    ASK(fd, "d:set('e', 'v', 0.05)", "");
    h_sleep_ms(100);
    ASK(fd, "return d:replace('e', 1)", "nil not found");
    ASK(fd, "return d:incr('e', 1)", "nil not found");
    ASK(fd, "return d:add('e', 'again'), d:get('e')", "true again");
    close(fd);
    h_finish(&s, path);
}

/* A 64 KiB dictionary filled with 100-byte values: the least recently
 * used go, a key read all along stays, and set says it forced room. */
static void test_lru_eviction(void **state)
{
    (void)state;
    struct h_server s;
    char *path = serve(&s, "1", "small:64k");
    int fd = h_connect(s.port, false);
    ASK(fd, "local forced = false; for i = 1, 2000 do "
            "local ok, e, f = d:set('k' .. i, string.rep('v', 100)); assert(ok, e); "
            "forced = forced or f; d:get('k1') end; local s = mr.stats().shared.small; "
            "return forced, s.evictions > 1000, d:get('k1') ~= nil, d:get('k2'), "
            "d:get('k2000') ~= nil, #d:keys(0) < 500",
        "true true true nil true true");
    close(fd);
    h_finish(&s, path);
}

/* A connection served by worker w (1 or 2), or -1 when none came within
 * ms. Connections that land on the other worker are closed. */
static int conn_to(int port, int w, int ms)
{
    for (int t = 0; t < ms; t += 10) {
        int fd = h_connect(port, false);
        char *l = ask_ms(fd, "return mr.worker()", 2000);
        if (atoi(l) == w)
            return fd;
        close(fd);
        if (!*l)
            h_sleep_ms(10);
    }
    return -1;
}

/* Two workers add 1 to one key 100,000 times each, at the same time:
 * each waits for the other to be ready before it starts. */
static void test_two_workers_incr(void **state)
{
    (void)state;
    struct h_server s;
    char *path = serve(&s, "2", "t:1m");
    int a = conn_to(s.port, 1, H_WAIT_MS), b = conn_to(s.port, 2, H_WAIT_MS);
    assert_true(a >= 0 && b >= 0);
    static const char loop[] =
        "d:incr('ready', 1, 0); local t0 = mr.now(); "
        "while d:get('ready') < 2 and mr.now() - t0 < 5 do end; t0 = mr.now(); "
        "for i = 1, 100000 do assert(d:incr('hits', 1, 0)) end; "
        "return mr.worker(), string.format('%.3f', mr.now() - t0)\n";
    h_send_all(a, loop, strlen(loop));
    h_send_all(b, loop, strlen(loop));
    char ra[64], rb[64];
    snprintf(ra, sizeof ra, "%s", h_line(a, H_WAIT_MS * 3));
    snprintf(rb, sizeof rb, "%s", h_line(b, H_WAIT_MS * 3));
    assert_int_equal(atoi(ra), 1);   /* both did their share */
    assert_int_equal(atoi(rb), 2);
    fprintf(stderr, "    (worker, seconds): %s; %s\n", ra, rb);
    ASK(a, "return d:get('hits')", "200000");
    ASK(b, "return d:get('hits')", "200000");
    close(a);
    close(b);
    h_finish(&s, path);
}

/* The pid of the newest worker k, from the last "(worker k," line. */
static pid_t newest_worker_pid(struct h_server *s, int k)
{
    char tag[32];
    snprintf(tag, sizeof tag, "(worker %d,", k);
    h_log_wait(s, NULL, 0);
    const char *p = NULL;
    for (const char *q = strstr(s->log, tag); q; q = strstr(q + 1, tag))
        p = q;
    if (!p)
        return 0;
    while (p > s->log && p[-1] != '\n')
        p--;
    p = strstr(p, "] ");
    return p ? (pid_t)atoi(p + 2) : 0;
}

/* Worker 1 sets values in an endless loop and is killed with -9, four
 * times; worker 2 reads and writes all along. It never hangs on a lock
 * the dead one held, every value it reads is whole, and once worker 1
 * is back both read and write as before. */
static void test_kill_worker(void **state)
{
    (void)state;
    struct h_server s;
    char *path = serve(&s, "2", "t:1m");
    int b = conn_to(s.port, 2, H_WAIT_MS);
    assert_true(b >= 0);
    /* keys and values made beforehand: the loop is mostly d:set, so a
     * kill often lands while it holds a lock */
    static const char hammer[] =
        "local k, v = {}, {}; for i = 1, 100 do k[i] = 'k' .. i end; "
        "for i = 1, 600 do v[i] = value(i) end; "
        "local i = 0; while true do i = i + 1; d:set(k[i % 100 + 1], v[i % 600 + 1]) end\n";
    static const char check[] =
        "local bad, n, t0 = 0, 0, mr.now(); while mr.now() - t0 < 0.5 do "
        "for i = 1, 100 do local v = d:get('k' .. i); if v and not whole(v) then "
        "bad = bad + 1 end; n = n + 1; d:set('k' .. i, value(n)) end end; return bad, n > 0\n";
    int restarts = 0;
    for (int round = 0; round < 4; round++) {
        int a = conn_to(s.port, 1, H_WAIT_MS);
        assert_true(a >= 0);
        pid_t victim = newest_worker_pid(&s, 1);
        assert_true(victim > 0);
        h_send_all(a, hammer, strlen(hammer));
        h_send_all(b, check, strlen(check));
        h_sleep_ms(150 + 37 * round);
        assert_int_equal(kill(victim, SIGKILL), 0);
        assert_string_equal(h_line(b, H_WAIT_MS), "0 true");  /* no hang, nothing torn */
        close(a);
        for (int t = 0; t < H_WAIT_MS && h_log_count(&s, "killed by signal 9") <= restarts; t += 10)
            h_sleep_ms(10);
        assert_int_equal(h_log_count(&s, "killed by signal 9"), ++restarts);
    }
    int a = conn_to(s.port, 1, H_WAIT_MS);
    assert_true(a >= 0);
    static const char verify[] =
        "for i = 1, 100 do local v = d:get('k' .. i); if v and not whole(v) then "
        "return 'torn', i, v end end; d:set('after' .. mr.worker(), 'x'); "
        "return d:get('after1'), d:get('after2') or 'x', mr.stats().shared.t.wipes";
    char *l = ask(a, verify);
    assert_true(strncmp(l, "x x ", 4) == 0);
    fprintf(stderr, "    shards wiped after a kill inside a change: %s\n", l + 4);
    ASK(b, verify, l);
    close(a);
    close(b);
    h_finish(&s, path);
}

/* SIGHUP under a master reloads both workers; the data stays. */
static void test_reload_keeps_data(void **state)
{
    (void)state;
    struct h_server s;
    char *path = serve(&s, "2", "t:1m");
    int a = conn_to(s.port, 1, H_WAIT_MS);
    ASK(a, "return d:set('kept', 'yes', 100), d:incr('count', 7, 0)", "true 7");
    close(a);
    kill(s.pid, SIGHUP);
    for (int t = 0; t < H_WAIT_MS && h_log_count(&s, "reloaded") < 2; t += 10)
        h_sleep_ms(10);
    assert_int_equal(h_log_count(&s, "reloaded"), 2);
    for (int w = 1; w <= 2; w++) {
        int fd = conn_to(s.port, w, H_WAIT_MS);
        ASK(fd, "return d:get('kept'), d:get('count'), d:ttl('kept') > 90", "yes 7 true");
        close(fd);
    }
    h_finish(&s, path);
}

/* redis-cli ARGS... against port; its output, without the newline
 * (static). */
static char *redis(int port, const char *a1, const char *a2, const char *a3,
                   const char *a4, const char *a5)
{
    static char ans[4096];
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    const char *argv[] = { "redis-cli", "-p", p, a1, a2, a3, a4, a5, NULL };
    char *out = NULL;
    assert_int_equal(h_exec(argv, NULL, &out, H_WAIT_MS, true), 0);
    snprintf(ans, sizeof ans, "%s", out ? out : "");
    free(out);
    size_t n = strlen(ans);
    while (n && ans[n - 1] == '\n')
        ans[--n] = 0;
    return ans;
}

/* examples/redis.lua under -w 2 with --shared redis:64m: a SET on one
 * connection is seen by every other, whichever worker serves it; INCRs
 * from 20 connections add up; TTLs hold. */
static void test_redis_example(void **state)
{
    (void)state;
    struct h_server s;
    static const char *const argv[] = { "-w", "2", "--shared", "redis:64m",
                                        "examples/redis.lua", NULL };
    h_start(&s, argv);
    assert_string_equal(redis(s.port, "SET", "k", "v", NULL, NULL), "OK");
    int seen = 0;
    for (int i = 0; i < 30; i++) { /* each redis-cli is a new connection */
        assert_string_equal(redis(s.port, "GET", "k", NULL, NULL, NULL), "v");
        char *info = redis(s.port, "INFO", NULL, NULL, NULL, NULL);
        char *w = strstr(info, "moonring_worker:");
        assert_non_null(w);
        seen |= 1 << (atoi(w + 16) - 1);
    }
    assert_int_equal(seen, 3);   /* both workers answered */
    char p[16];
    snprintf(p, sizeof p, "%d", s.port);
    const char *bench[] = { "redis-benchmark", "-p", p, "-t", "incr", "-n", "20000",
                            "-c", "20", "-q", NULL };
    char *out = NULL;
    assert_int_equal(h_exec(bench, NULL, &out, H_WAIT_MS * 3, false), 0);
    free(out);
    assert_string_equal(redis(s.port, "GET", "counter:__rand_int__", NULL, NULL, NULL), "20000");
    assert_string_equal(redis(s.port, "INCRBY", "counter:__rand_int__", "5", NULL, NULL), "20005");
    assert_string_equal(redis(s.port, "SET", "e", "v", "EX", "100"), "OK");
    for (int i = 0; i < 6; i++) {
        int t = atoi(redis(s.port, "TTL", "e", NULL, NULL, NULL));
        assert_true(t == 100 || t == 99);
    }
    assert_string_equal(redis(s.port, "TTL", "k", NULL, NULL, NULL), "-1");
    assert_string_equal(redis(s.port, "EXPIRE", "k", "50", NULL, NULL), "1");
    assert_string_equal(redis(s.port, "SET", "p", "v", "PX", "300"), "OK");
    assert_string_equal(redis(s.port, "GET", "p", NULL, NULL, NULL), "v");
    assert_string_equal(redis(s.port, "SET", "p", "w", "NX", NULL), "");
    h_sleep_ms(400);
    for (int i = 0; i < 4; i++)
        assert_string_equal(redis(s.port, "GET", "p", NULL, NULL, NULL), "");
    assert_string_equal(redis(s.port, "SET", "z", "007", NULL, NULL), "OK");
    assert_string_equal(redis(s.port, "GET", "z", NULL, NULL, NULL), "007");
    assert_string_equal(redis(s.port, "DBSIZE", NULL, NULL, NULL, NULL), "4");
    assert_string_equal(redis(s.port, "DEL", "k", "nope", NULL, NULL), "1");
    assert_string_equal(redis(s.port, "FLUSHALL", NULL, NULL, NULL, NULL), "OK");
    assert_string_equal(redis(s.port, "DBSIZE", NULL, NULL, NULL, NULL), "0");
    h_finish(&s, NULL);
}

/* Bad --shared values stop the start with one line and status 2. */
static void test_bad_option(void **state)
{
    (void)state;
    const char *argv[] = { "--shared", "x:1", "-t", NULL };
    char *err = NULL;
    assert_int_equal(h_run(argv, &err), 2);
    assert_non_null(strstr(err, "--shared x:1: SIZE must be 64k to 32g"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_operations),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_two_workers_incr),
        cmocka_unit_test(test_kill_worker),
        cmocka_unit_test(test_reload_keeps_data),
        cmocka_unit_test(test_redis_example),
        cmocka_unit_test(test_bad_option),
    };
    return cmocka_run_group_tests_name("shared", tests, NULL, NULL);
}
