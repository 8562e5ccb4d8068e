/* test_api.c - timers, idle timeouts, flow control, conns(), connect(). */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static void ask(int fd, const char *msg, const char *want)
{
    h_send_all(fd, msg, strlen(msg));
    char *got = h_line(fd, H_WAIT_MS);
    if (strcmp(got, want))
        fail_msg("sent '%s': got '%s', wanted '%s'", msg, got, want);
}

static long ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static const char timers_lua[] =
    "local mr = require 'moonring'\n"
    "local log = {}\n"
    "mr.after(0.15, function() log[#log + 1] = 'b' end)\n"
    "mr.after(0.05, function() log[#log + 1] = 'a' end)\n"
    "local n = 0\n"
    "local t\n"
    "t = mr.every(0.02, function(self)\n"
    "  n = n + 1\n"
    "  if n == 5 then self:cancel() end\n"
    "  if n == 3 then error('tick 3 failed') end\n"
    "end)\n"
    "local never = mr.after(0.05, function() log[#log + 1] = 'never' end)\n"
    "local cancelled = never:cancel()\n"
    "return { on_data = function(conn)\n"
    "  conn:send(table.concat(log, ','), ' ', n, ' ', tostring(cancelled),\n"
    "            ' ', tostring(never:cancel()), ' ', tostring(t:cancel()), '\\n')\n"
    "end }\n";

static void test_timers(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, timers_lua, NULL, NULL);
    h_sleep_ms(400);
    int fd = h_connect(s.port, false);
    /* in order of their times; every() stopped itself at 5 although its
     * third round failed; a cancelled timer never runs */
    ask(fd, "?", "a,b 5 true false false");
    assert_true(h_log_wait(&s, "tick 3 failed", 0));
    assert_true(h_log_wait(&s, "the timer goes on", 0));
    close(fd);
    h_finish(&s, path);
}

/* The collector: moonring paces it (a small heap is collected only past a
 * floor, so the pause it sets is far above LuaJIT's 200), collection
 * still happens, and a script that sets its own pause keeps it. */
static const char gc_lua[] =
    "local own = tonumber(arg[1])\n"
    "if own then collectgarbage('setpause', own) end\n"
    "return { on_data = function(conn, data)\n"
    "  if data == 'churn' then\n"
    "    for i = 1, 200000 do local t = { i } end\n"   /* ~8 MB of garbage */
    "    conn:send('done\\n')\n"
    "  else\n"
    "    local p = collectgarbage('setpause', 200)\n"
    "    collectgarbage('setpause', p)\n"
    "    conn:send(p, ' ', collectgarbage('count') < 16384 and 'small' or 'big', '\\n')\n"
    "  end\n"
    "end }\n";

static void test_gc_pacing(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, gc_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    for (int i = 0; i < 5; i++)
        ask(fd, "churn", "done");
    h_send_all(fd, "?", 1);
    char *line = h_line(fd, H_WAIT_MS);
    int pause = atoi(line);
    assert_true(pause > 400);  /* paced: a 512 KiB floor over a heap of ~40 KiB */
    assert_non_null(strstr(line, " small")); /* and collected all the same */
    close(fd);
    h_finish(&s, path);

    const char *args[] = { "150", NULL };
    path = h_serve(&s, gc_lua, NULL, args);
    fd = h_connect(s.port, false);
    for (int i = 0; i < 5; i++)
        ask(fd, "churn", "done");
    ask(fd, "?", "150 small");
    close(fd);
    h_finish(&s, path);
}

static const char idle_lua[] =
    "local mr = require 'moonring'\n"
    "local reasons = {}\n"
    "return {\n"
    "  on_data = function(conn, data)\n"
    "    if data == 'reasons' then conn:send(table.concat(reasons, ','), '\\n')\n"
    "    else conn:set_timeout(0.2); conn:send(data) end\n"
    "  end,\n"
    "  on_close = function(conn, reason) reasons[#reasons + 1] = reason end,\n"
    "}\n";

static void test_idle_timeout(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, idle_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    char out[2];
    long t0 = ms_now();
    /* activity keeps it open past the timeout */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(h_echo(fd, "hi", out, 2, H_WAIT_MS), 2);
        h_sleep_ms(100);
    }
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    long lived = ms_now() - t0;
    if (lived < 550 || lived >= 2000)
        fail_msg("closed after %ld ms", lived);
    close(fd);
    fd = h_connect(s.port, false);
    ask(fd, "reasons", "timeout");
    close(fd);
    h_finish(&s, path);
}

static const char flow_lua[] =
    "local mr = require 'moonring'\n"
    "local drains = 0\n"
    "return {\n"
    "  on_data = function(conn, data)\n"
    "    if data == 'drains' then return conn:send(drains, '\\n') end\n"
    "    if data:sub(1, 5) == 'pause' then\n"
    "      conn:pause()\n"
    "      mr.after(0.3, function() conn:resume() end)\n"
    "      return conn:send('paused\\n')\n"
    "    end\n"
    "    conn:send(data)\n"
    "  end,\n"
    "  on_drain = function(conn) drains = drains + 1 end,\n"
    "}\n";

/* Bytes sent while reading is paused all arrive after resume, in order. */
static void test_pause_resume(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, flow_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    ask(fd, "pause", "paused");
    long t0 = ms_now();
    h_send_all(fd, "0123456789", 10);
    char out[10];
    assert_int_equal(h_recv_exact(fd, out, 10, H_WAIT_MS), 10);
    assert_memory_equal(out, "0123456789", 10);
    assert_true(ms_now() - t0 >= 200);   /* not before the resume */
    close(fd);
    h_finish(&s, path);
}

/* A client that does not read: reading from it pauses at the high-water
 * mark, so the server's memory stays bounded; once it reads, every byte
 * comes back and on_drain has run. */
static void test_high_water(void **state)
{
    (void)state;
    enum { TOTAL = 32 << 20 };
    struct h_server s;
    /* a small buffer pool, so that its pages do not blur the measure */
    const char *extra[] = { "--high-water", "65536", "--buffers", "64", NULL };
    char *path = h_serve(&s, flow_lua, extra, NULL);
    int fd = h_connect(s.port, false);
    struct timeval tv = { 0, 200000 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    unsigned char *in = malloc(TOTAL), *out = malloc(TOTAL);
    h_fill_random(in, TOTAL, 3);
    long rss0 = h_rss_kib(s.pid);
    size_t sent = 0;
    for (;;) {    /* write until the server stops reading */
        ssize_t w = send(fd, in + sent, TOTAL - sent, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        sent += (size_t)w;
    }
    assert_true(sent < TOTAL);   /* the pressure reached us */
    long grown = h_rss_kib(s.pid) - rss0;
    if (grown > 16 * 1024)   /* not the megabytes sent */
        fail_msg("server RSS grew by %ld KiB", grown);
    tv.tv_sec = 10;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    size_t got = h_recv_exact(fd, out, sent, H_WAIT_MS); /* now read it all */
    assert_int_equal(got, sent);
    assert_memory_equal(in, out, sent);
    int fd2 = h_connect(s.port, false);
    h_send_all(fd2, "drains", 6);
    int drains = atoi(h_line(fd2, H_WAIT_MS));
    assert_true(drains >= 1);
    close(fd);
    close(fd2);
    free(in);
    free(out);
    h_finish(&s, path);
}

/* Small writes from a timer to a client that reads nothing for a while.
 * Over a Unix socket every send is one buffer of its own, so the socket
 * fills after a send that went out whole, and the next send, which does
 * not wait (MSG_DONTWAIT), finds it full: that send must be made again,
 * waiting for room, with nothing lost or reordered. */
static const char trickle_lua[] =
    "local mr = require 'moonring'\n"
    "return { on_data = function(conn)\n"
    "  local i = 0\n"
    "  local function tick()\n"
    "    for _ = 1, 4 do i = i + 1; conn:send(string.format('%08d', i)) end\n"
    "    if i < 4000 then mr.after(0.0001, tick) end\n"
    "  end\n"
    "  tick()\n"
    "end }\n";

static void test_send_socket_full(void **state)
{
    (void)state;
    enum { N = 4000 };
    char dir[] = "/tmp/moonring-full-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    char bind[sizeof sun.sun_path + 8];
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s/s.sock", dir);
    snprintf(bind, sizeof bind, "unix:%s", sun.sun_path);
    const char *opts[] = { "-b", bind, "--log-level", "debug", NULL };
    struct h_server s;
    char *path = h_serve(&s, trickle_lua, opts, NULL);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    h_send_all(fd, "go", 2);
    assert_true(h_log_wait(&s, "socket full, the next send waits for room", H_WAIT_MS));
    char *got = malloc(N * 8 + 1), want[9];
    assert_int_equal(h_recv_exact(fd, got, N * 8, H_WAIT_MS), N * 8);
    for (int i = 0; i < N; i++) {
        snprintf(want, sizeof want, "%08d", i + 1);
        if (memcmp(got + i * 8, want, 8))
            fail_msg("message %d is '%.8s'", i + 1, got + i * 8);
    }
    free(got);
    close(fd);
    h_finish(&s, path);
    unlink(sun.sun_path);
    rmdir(dir);
}

static const char chatty_lua[] =
    "local mr = require 'moonring'\n"
    "return { on_data = function(conn, data)\n"
    "  local n = 0\n"
    "  for c in mr.conns() do c:send(data); n = n + 1 end\n"
    "end }\n";

static void test_conns_broadcast(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, chatty_lua, NULL, NULL);
    int fds[5];
    for (int i = 0; i < 5; i++)
        fds[i] = h_connect(s.port, false);
    h_sleep_ms(100);
    h_send_all(fds[2], "all\n", 4);
    for (int i = 0; i < 5; i++)
        assert_string_equal(h_line(fds[i], H_WAIT_MS), "all");
    for (int i = 0; i < 5; i++)
        close(fds[i]);
    h_finish(&s, path);
}

static const char connect_lua[] =
    "local mr = require 'moonring'\n"
    "local port = tonumber(arg[1])\n"
    "return { on_data = function(conn, data)\n"
    "  if data == 'refused' then\n"
    "    mr.connect('127.0.0.1', 1, { on_data = function() end,\n"
    "      on_close = function(up, reason, err)\n"
    "        conn:send(reason, ' ', tostring(err), '\\n') end })\n"
    "    return\n"
    "  end\n"
    "  local up = mr.connect('127.0.0.1', port, {\n"
    "    on_open = function(up) up.opened = true end,\n"
    "    on_data = function(up, d)\n"
    "      conn:send('upstream said ', d, ' ', tostring(up.opened), '\\n')\n"
    "      up:close()\n"
    "    end })\n"
    "  up:send(data)   -- queued until connected\n"
    "end }\n";

static void test_connect(void **state)
{
    (void)state;
    struct h_server echo;
    const char *none[] = { NULL };
    h_start(&echo, none);
    char port[16];
    snprintf(port, sizeof port, "%d", echo.port);
    struct h_server s;
    char *path = h_write_file(NULL, "app.lua", connect_lua);
    const char *argv[] = { path, port, NULL };
    h_start(&s, argv);
    int fd = h_connect(s.port, false);
    ask(fd, "ping", "upstream said ping true");
    ask(fd, "refused", "error Connection refused");
    close(fd);
    h_finish(&s, path);
    assert_int_equal(h_stop(&echo, SIGTERM), 0);
    free(echo.log);
}

static const char helpers_lua[] =
    "local stream = require 'moonring.stream'\n"
    "local framing = require 'moonring.framing'\n"
    "return stream.handler(function(s, conn)\n"
    "  conn:send('name?\\n')\n"
    "  local name = s:read_line()\n"
    "  if not name then return end\n"
    "  conn:send('hello ', name, '\\n')\n"
    "  local n = tonumber(s:read(2))\n"
    "  local words = {}\n"
    "  for i = 1, n do words[i] = s:read_until(';') end\n"
    "  conn:send(table.concat(words, '+'), '\\n')\n"
    "  local dec = framing.length(2, 100)\n"
    "  local frames = {}\n"
    "  while #frames < 2 do\n"
    "    local f = dec:next()\n"
    "    if f then frames[#frames + 1] = f else dec:push(s:read(1)) end\n"
    "  end\n"
    "  conn:send(framing.encode_length(frames[1] .. '|' .. frames[2], 2))\n"
    "  local line, err = s:read_line(10)\n"
    "  conn:send(tostring(line), ' ', tostring(err), '\\n')\n"
    "end)\n";

/* moonring.stream reads top to bottom across any split of the bytes;
 * moonring.framing decodes length prefixes; limits are enforced. */
static void test_helpers(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, helpers_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    assert_string_equal(h_line(fd, H_WAIT_MS), "name?");
    static const char input[] = "bo\0b\r\n03ab;c;;\0\x03xyz\0\x02pq";
    /* one byte at a time: every read must wait for the rest */
    for (size_t i = 0; i < sizeof input - 1; i++) {
        h_send_all(fd, input + i, 1);
        h_sleep_ms(2);
    }
    char want_name[] = "hello bo";
    char *l = h_line(fd, H_WAIT_MS);
    assert_memory_equal(l, want_name, 8);     /* "bo\0b": bytes kept as sent */
    assert_string_equal(h_line(fd, H_WAIT_MS), "ab+c+");
    unsigned char frame[16];
    assert_int_equal(h_recv_exact(fd, frame, 8, H_WAIT_MS), 8);
    assert_memory_equal(frame, "\0\x06xyz|pq", 8);
    h_send_all(fd, "this line is too long\n", 22);
    assert_string_equal(h_line(fd, H_WAIT_MS), "nil line too long");
    assert_true(h_wait_closed(fd, H_WAIT_MS));   /* the function returned */
    close(fd);
    h_finish(&s, path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_high_water),
        cmocka_unit_test(test_send_socket_full),
        cmocka_unit_test(test_conns_broadcast),
        cmocka_unit_test(test_connect),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_gc_pacing),
    };
    return cmocka_run_group_tests_name("api", tests, NULL, NULL);
}
