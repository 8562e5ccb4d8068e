/* test_sock.c - connection functions: sockets that wait, sleep, spawn. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static void expect_line(int fd, const char *want)
{
    char *got = h_line(fd, H_WAIT_MS);
    if (strcmp(got, want))
        fail_msg("got '%s', wanted '%s'", got, want);
}

static const char forms_lua[] =
    "return function(sock)\n"
    "  local l = sock:receive('*l')\n"
    "  local b = sock:receive(4)\n"
    "  local h = sock:receive_until('\\r\\n\\r\\n')\n"
    "  local t = sock:receive_until(';')\n"
    "  local a = ''\n"
    "  while #a < 3 do a = a .. sock:receive_any(3 - #a) end\n"
    "  sock:send(('[%s][%s][%s][%s][%s]\\n'):format(l, b, h, t, a))\n"
    "end\n";

/* Every receive form, with the input split at every byte boundary, and
 * one byte at a time. */
static void test_forms_split(void **state)
{
    (void)state;
    static const char msg[] = "hello\r\nWXYZa: b\r\n\r\ntail;xyz";
    const char *want = "[hello][WXYZ][a: b][tail][xyz]";
    size_t n = sizeof msg - 1;
    struct h_server s;
    char *path = h_serve(&s, forms_lua, NULL, NULL);
    for (size_t k = 1; k < n; k++) {
        int fd = h_connect(s.port, false);
        h_send_all(fd, msg, k);
        h_sleep_ms(2);
        h_send_all(fd, msg + k, n - k);
        expect_line(fd, want);
        close(fd);
    }
    int fd = h_connect(s.port, false);
    for (size_t i = 0; i < n; i++) {
        h_send_all(fd, msg + i, 1);
        h_sleep_ms(1);
    }
    expect_line(fd, want);
    close(fd);
    h_finish(&s, path);
}

static const char timeouts_lua[] =
    "local mr = require 'moonring'\n"
    "return function(sock)\n"
    "  sock:settimeouts(nil, 0.3, 0.1)\n"
    "  local a, err = sock:receive('*l')\n"
    "  if a == 'conns' then sock:send(mr.stats().conns, '\\n') return end\n"
    "  sock:send(tostring(a), ' ', tostring(err), '\\n')\n"
    "  sock:settimeouts(nil, 0.3, 5)\n"
    "  local b = sock:receive('*l')\n"
    "  sock:send('got ', b, '\\n')\n"
    "  local big = string.rep('x', 1048576)\n"
    "  for i = 1, 64 do\n"
    "    local ok, e = sock:send(big)\n"
    "    if not ok then mr.log('info', 'send result:', tostring(ok), e) return end\n"
    "  end\n"
    "end\n";

/* A read timeout leaves the socket usable; a send to a peer that does
 * not read times out and closes it. */
static void test_timeouts(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, timeouts_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    int rcv = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    expect_line(fd, "nil timeout");
    h_send_all(fd, "x\n", 2);
    expect_line(fd, "got x");
    assert_true(h_log_wait(&s, "send result: nil timeout", H_WAIT_MS));
    /* closed: only the connection that asks is left (the bytes the
     * kernel took would take long to reach a 4 KiB window) */
    char *got = "";
    for (int i = 0; i < 100 && strcmp(got, "1"); i++) {
        int q = h_connect(s.port, false);
        h_send_all(q, "conns\n", 6);
        got = h_line(q, H_WAIT_MS);
        close(q);
    }
    assert_string_equal(got, "1");
    close(fd);
    h_finish(&s, path);
}

static const char shorter_lua[] =
    "local mr = require 'moonring'\n"
    "return function(sock)\n"
    "  sock:settimeouts(nil, nil, 30)\n"
    "  local a = sock:receive('*l')\n"
    "  sock:settimeouts(nil, nil, 0.2)\n"
    "  local t0 = mr.now()\n"
    "  local b, err = sock:receive('*l')\n"
    "  sock:send(tostring(b), ' ', tostring(err), ' ', ('%d'):format((mr.now() - t0) * 1000), '\\n')\n"
    "end\n";

/* A read timeout shorter than the last one is kept: the wait ends after
 * 0.2 s, not when the 30 s of the first read would have. */
static void test_timeout_shortened(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, shorter_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    h_send_all(fd, "a\n", 2);
    char *line = h_line(fd, H_WAIT_MS);
    int ms = 0;
    if (sscanf(line, "nil timeout %d", &ms) != 1)
        fail_msg("wanted 'nil timeout MS', got '%s'", line);
    assert_in_range(ms, 190, 1000);
    close(fd);
    h_finish(&s, path);
}

static const char sleep_lua[] =
    "local mr = require 'moonring'\n"
    "return function(sock)\n"
    "  local t0 = mr.now()\n"
    "  mr.sleep(0.1)\n"
    "  sock:send(('%d\\n'):format((mr.now() - t0) * 1000))\n"
    "end\n";

/* mr.sleep(0.1) sleeps 100 ms, and less than 5 ms more. */
static void test_sleep(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, sleep_lua, NULL, NULL);
    for (int i = 0; i < 3; i++) {
        int fd = h_connect(s.port, false);
        int ms = atoi(h_line(fd, H_WAIT_MS));
        print_message("mr.sleep(0.1) took %d ms\n", ms);
        assert_in_range(ms, 100, 105);
        close(fd);
    }
    h_finish(&s, path);
}

static const char spawn_lua[] =
    "local mr = require 'moonring'\n"
    "return {\n"
    "  on_data = function(conn, data)\n"
    "    mr.spawn(function()\n"           /* from a plain callback */
    "      local good = mr.spawn(function(a, b) mr.sleep(0.01) return a * b, 'x' end, 6, 7)\n"
    "      local bad = mr.spawn(function() error('boom') end)\n"
    "      local now = mr.spawn(function() return 'at once' end)\n"
    "      local ok1, v, x = good:wait()\n"
    "      local ok2, err = bad:wait()\n"
    "      local ok3, w = now:wait()\n"
    "      local again = select(2, good:wait())\n"
    "      conn:send(('%s %s %s|%s %s|%s %s|%s\\n'):format(tostring(ok1), v, x,\n"
    "        tostring(ok2), err:match('boom') or err, tostring(ok3), w, again))\n"
    "    end)\n"
    "  end,\n"
    "}\n";

/* Serve script, send msg on a connection, expect the line want. */
static void exchange(const char *script, const char *msg, const char *want)
{
    struct h_server s;
    char *path = h_serve(&s, script, NULL, NULL);
    int fd = h_connect(s.port, false);
    h_send_all(fd, msg, strlen(msg));
    expect_line(fd, want);
    close(fd);
    h_finish(&s, path);
}

static void test_spawn_wait(void **state)
{
    (void)state;
    exchange(spawn_lua, "go", "true 42 x|false boom|true at once|42");
}

static const char outside_lua[] =
    "local mr = require 'moonring'\n"
    "return { on_data = function(conn, data)\n"
    "  local ok, err = pcall(mr.sleep, 0.01)\n"
    "  conn:send(tostring(ok), ' ', err:match('mr%.spawn') or err, '\\n')\n"
    "end }\n";

/* A call that waits, made where nothing can wait, says what to do. */
static void test_wait_outside(void **state)
{
    (void)state;
    exchange(outside_lua, "x", "false mr.spawn");
}

static const char closed_lua[] =
    "local mr = require 'moonring'\n"
    "return function(sock)\n"
    "  sock:send('ready\\n')\n"
    "  local a, err, partial = sock:receive(10)\n"
    "  mr.log('info', 'receive:', tostring(a), err, partial)\n"
    "  if partial == 'die' then error('the function failed here') end\n"
    "end\n";

/* A peer that goes away wakes the reader with nil, "closed" and the
 * partial bytes (a send may still be taken: a closed peer cannot be told
 * from one that only shut down its side until it resets); an error in
 * the function is logged with its line. */
static void test_closed_and_errors(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, closed_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    expect_line(fd, "ready");
    h_send_all(fd, "abc", 3);
    h_sleep_ms(20);
    close(fd);
    assert_true(h_log_wait(&s, "receive: nil closed abc", H_WAIT_MS));
    fd = h_connect(s.port, false);
    expect_line(fd, "ready");
    h_send_all(fd, "die", 3);
    h_sleep_ms(20);
    shutdown(fd, SHUT_WR);
    assert_true(h_log_wait(&s, "connection function failed", H_WAIT_MS));
    assert_true(h_log_wait(&s, "app.lua:6: the function failed here", H_WAIT_MS));
    close(fd);
    h_finish(&s, path);
}

static const char halfclose_lua[] =
    "local mr = require 'moonring'\n"
    "return function(sock)\n"
    "  local l = sock:receive('*l')\n"
    "  local rest, err, partial = sock:receive('*l')\n"
    "  mr.sleep(0.05)\n"
    "  sock:send('got ', l, ' then ', tostring(rest), ' ', err, ' ', partial, '\\n')\n"
    "end\n";

/* A peer that shuts down its side still gets the answer: reads say
 * "closed", sending goes on, and the function's return closes. */
static void test_half_close(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, halfclose_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    h_send_all(fd, "question\ntail", 13);
    shutdown(fd, SHUT_WR);
    expect_line(fd, "got question then nil closed tail");
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    h_finish(&s, path);
}

static const char load_lua[] =
    "local mr = require 'moonring'\n"
    "local got = 'nothing yet'\n"
    "mr.spawn(function(x) mr.sleep(0.01) got = 'spawned at load: ' .. x end, 7)\n"
    "return function(sock) sock:send(got, '\\n') end\n";

/* mr.spawn at load time starts once the worker runs; -t, which only
 * loads, accepts the script. */
static void test_spawn_at_load(void **state)
{
    (void)state;
    char *path = h_write_file(NULL, "app.lua", load_lua);
    const char *argv[] = { "-t", path, NULL };
    char *err;
    assert_int_equal(h_run(argv, &err), 0);
    free(err);
    struct h_server s;
    const char *sargv[] = { path, NULL };
    h_start(&s, sargv);
    h_sleep_ms(100);
    int fd = h_connect(s.port, false);
    expect_line(fd, "spawned at load: 7");
    close(fd);
    h_finish(&s, path);
}

/* A function that answers each line with its version's name. */
static const char version_lua[] =
    "return function(sock)\n"
    "  while true do\n"
    "    local l = sock:receive('*l')\n"
    "    if not l then return end\n"
    "    sock:send('%s ', l, '\\n')\n"
    "  end\n"
    "end\n";

/* A reload: a running function keeps its code, new connections run the
 * new script's. */
static void test_reload(void **state)
{
    (void)state;
    char v1[256], v2[256];
    snprintf(v1, sizeof v1, version_lua, "v1");
    snprintf(v2, sizeof v2, version_lua, "v2");
    struct h_server s;
    char *path = h_serve(&s, v1, NULL, NULL);
    int old = h_connect(s.port, false);
    h_send_all(old, "a\n", 2);
    expect_line(old, "v1 a");
    h_save(path, v2, "rename");
    assert_true(h_log_wait(&s, "reloaded", H_WAIT_MS));
    int fresh = h_connect(s.port, false);
    h_send_all(fresh, "b\n", 2);
    expect_line(fresh, "v2 b");
    h_send_all(old, "c\n", 2);
    expect_line(old, "v1 c");
    close(old);
    close(fresh);
    h_finish(&s, path);
}

static const char big_lua[] =
    "return function(sock)\n"
    "  while true do\n"
    "    local n = tonumber(sock:receive('*l'))\n"
    "    if not n then return end\n"
    "    local t0, total = os.clock(), 0\n"
    "    for i = 1, 8 / n do total = total + #sock:receive(n * 1048576) end\n"
    "    sock:send(total, ' ', math.floor((os.clock() - t0) * 1e6), '\\n')\n"
    "  end\n"
    "end\n";

/* Reading costs linear time: one 8 MiB receive(n) takes at most three
 * times the CPU of eight of 1 MiB (about 1.7 here: an 8 MiB buffer is
 * colder than a 1 MiB one). Joining the pieces again on every read, as
 * moonring.stream does, made it tens of times. */
static void test_big_receive_linear(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, big_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    size_t n = 8u << 20;
    char *buf = malloc(n);
    memset(buf, 'z', n);
    long us[2];
    for (int i = 0; i < 2; i++) {
        h_send_all(fd, i ? "8\n" : "1\n", 2);
        h_send_all(fd, buf, n);
        char *line = h_line(fd, H_WAIT_MS);
        assert_int_equal(atol(line), (long)n);
        us[i] = atol(strchr(line, ' ') + 1);
    }
    print_message("8 x 1 MiB: %ld us of CPU; 1 x 8 MiB: %ld us\n", us[0], us[1]);
    assert_true(us[1] <= 3 * us[0] + 2000);
    free(buf);
    close(fd);
    h_finish(&s, path);
}

static const char line_lua[] =
    "return function(sock)\n"
    "  local l, err = sock:receive('*l')\n"
    "  sock:send(l and #l or err, '\\n')\n"
    "end\n";

/* A line within the limit arrives whole however it is cut; a longer one
 * is refused, and the function can still answer. */
static void test_line_limit(void **state)
{
    (void)state;
    const char *opts[] = { "--high-water", "65536", NULL };
    struct h_server s;
    char *path = h_serve(&s, line_lua, opts, NULL);
    char buf[70000];
    memset(buf, 'q', sizeof buf);
    int fd = h_connect(s.port, false);
    for (int i = 0; i < 60000; i += 1000)
        h_send_all(fd, buf, 1000);
    h_send_all(fd, "\n", 1);
    expect_line(fd, "60000");
    close(fd);
    fd = h_connect(s.port, false);
    h_send_all(fd, buf, sizeof buf);
    expect_line(fd, "line too long");
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    h_finish(&s, path);
}

static const char echo_lua[] =
    "return function(sock)\n"
    "  while true do\n"
    "    local d = sock:receive_any(65536)\n"
    "    if not d then return end\n"
    "    sock:send(d)\n"
    "  end\n"
    "end\n";

/* 1,000 connections, each with its coroutine waiting at once. */
static void test_many(void **state)
{
    (void)state;
    enum { N = 1000 };
    struct h_server s;
    char *path = h_serve(&s, echo_lua, NULL, NULL);
    static int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = h_connect(s.port, false);
    for (int i = 0; i < N; i++) {
        char msg[32];
        snprintf(msg, sizeof msg, "conn %d\n", i);
        h_send_all(fds[i], msg, strlen(msg));
    }
    for (int i = 0; i < N; i++) {
        char want[32];
        snprintf(want, sizeof want, "conn %d", i);
        expect_line(fds[i], want);
        close(fds[i]);
    }
    h_finish(&s, path);
}

static const char tcp_lua[] =
    "local mr = require 'moonring'\n"
    "local port = tonumber(arg[1])\n"
    "return function(sock)\n"
    "  while true do\n"
    "    local line = sock:receive('*l')\n"
    "    if not line then return end\n"
    "    local to = line == 'go' and port or tonumber(arg[line == 'stuck' and 2 or 3])\n"
    "    local up, err = mr.tcp('127.0.0.1', to,\n"
    "                           { timeout = 0.2 })\n"
    "    if not up then sock:send('ERR ', err, '\\n') else\n"
    "      up:send('INCR hits\\r\\n')\n"
    "      local n = up:receive('*l')\n"
    "      local reused = up:getreusedtimes()\n"
    "      assert(up:setkeepalive(10, 4))\n"
    "      local gone, why = up:send('x')\n"
    "      sock:send(n, ' ', reused, ' ', tostring(gone), ' ', why, '\\n')\n"
    "    end\n"
    "  end\n"
    "end\n";

/* 1,000 requests through mr.tcp and the pool open one connection to
 * redis-server; a socket given back answers "closed"; a refused
 * connect and one that never completes come back as errors. */
static void test_tcp_pool(void **state)
{
    (void)state;
    int rport = h_free_port();
    pid_t redis = h_redis(rport);
    /* a port whose backlog is full: its connects never complete */
    int fport, full = h_listen(0, &fport);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)fport) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fillers[3];
    for (int i = 0; i < 3; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&sa, sizeof sa);
    }
    char a1[16], a2[16], a3[16];
    snprintf(a1, sizeof a1, "%d", rport);
    snprintf(a2, sizeof a2, "%d", fport);
    snprintf(a3, sizeof a3, "%d", h_free_port());
    const char *args[] = { a1, a2, a3, NULL };
    struct h_server s;
    char *path = h_serve(&s, tcp_lua, NULL, args);
    long before = h_redis_info(rport, "total_connections_received");
    int fd = h_connect(s.port, false);
    for (int i = 1; i <= 1000; i++) {
        char want[64];
        snprintf(want, sizeof want, ":%d %d nil closed", i, i - 1);
        h_send_all(fd, "go\n", 3);
        expect_line(fd, want);
    }
    /* one from the pool, one the INFO itself */
    assert_int_equal(h_redis_info(rport, "total_connections_received") - before, 2);
    h_send_all(fd, "stuck\n", 6);
    expect_line(fd, "ERR timeout");
    close(full);
    h_send_all(fd, "refused\n", 8);
    expect_line(fd, "ERR Connection refused");
    close(fd);
    for (int i = 0; i < 3; i++)
        close(fillers[i]);
    h_finish(&s, path);
    h_kill(redis);
}

static int count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    int n = 0, ch;
    while (f && (ch = fgetc(f)) != EOF)
        n += ch == '\n';
    if (f)
        fclose(f);
    return n;
}

static const char resolve_lua[] =
    "local mr = require 'moonring'\n"
    "return function(sock)\n"
    "  while true do\n"
    "    local line = sock:receive('*l')\n"
    "    if not line then return end\n"
    "    local what, name, port = line:match('^(%a+) (%S+) ?(%d*)$')\n"
    "    if what == 'resolve' then\n"
    "      local addrs, err = mr.resolve(name)\n"
    "      sock:send(addrs and table.concat(addrs, ' ') or 'nil ' .. err, '\\n')\n"
    "    elseif what == 'connect' then\n"
    "      mr.connect(name, tonumber(port), {\n"
    "        on_open = function(up) sock:send('connect open\\n') up:close() end,\n"
    "        on_data = function() end,\n"
    "        on_close = function(up, why, detail)\n"
    "          if why ~= 'closed' then sock:send('connect ', why, ' ', detail, '\\n') end\n"
    "        end })\n"
    "    else\n"
    "      local up, err = mr.tcp(name, tonumber(port))\n"
    "      if not up then sock:send('nil ', err, '\\n') else\n"
    "        sock:send('tcp ', up:receive('*l'), '\\n')\n"
    "        up:close()\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n";

/* Names looked up on the ring, against a DNS responder of the test's
 * own: A and AAAA, NXDOMAIN, the hosts file, the cache, a nameserver
 * that does not answer, and mr.tcp to a name. */
static void test_resolve(void **state)
{
    (void)state;
    char *first = h_write_file(NULL, "x", "");
    char *dir = h_dirname(first);
    free(first);
    char conf[512], hosts[512], log[512], port[16];
    int dport = h_free_port();
    snprintf(port, sizeof port, "%d", dport);
    snprintf(log, sizeof log, "%s/queries", dir);
    char text[128];
    snprintf(text, sizeof text, "nameserver 127.0.0.1:%d\noptions timeout:1 attempts:1\n", dport);
    char *f = h_write_file(dir, "resolv.conf", text);
    snprintf(conf, sizeof conf, "%s", f);
    free(f);
    f = h_write_file(dir, "hosts", "127.0.0.9 fromhosts.test\n");
    snprintf(hosts, sizeof hosts, "%s", f);
    free(f);
    const char *dns[] = { "python3", "tests/clients/dns_responder.py", port, log, NULL };
    pid_t responder = h_spawn(dns);
    for (int i = 0; i < 500 && access(log, F_OK); i++)
        h_sleep_ms(20);
    setenv("MOONRING_RESOLV_CONF", conf, 1);
    setenv("MOONRING_HOSTS", hosts, 1);
    struct h_server s;
    char *path = h_serve(&s, resolve_lua, NULL, NULL);
    unsetenv("MOONRING_RESOLV_CONF");
    unsetenv("MOONRING_HOSTS");
    int fd = h_connect(s.port, false);
    h_send_all(fd, "resolve svc.test\n", 17);
    expect_line(fd, "127.0.0.1 ::1");
    int asked = count_lines(log);
    assert_int_equal(asked, 2);                   /* A and AAAA, together */
    h_send_all(fd, "resolve svc.test\n", 17);
    expect_line(fd, "127.0.0.1 ::1");
    assert_int_equal(count_lines(log), asked);    /* from the cache */
    h_send_all(fd, "resolve nope.test\n", 18);
    expect_line(fd, "nil no such name");
    h_send_all(fd, "resolve fromhosts.test\n", 23);
    expect_line(fd, "127.0.0.9");
    h_send_all(fd, "resolve slow.test\n", 18);
    expect_line(fd, "nil resolver timed out");
    int lport, lfd = h_listen(4, &lport);
    char req[64];
    int n = snprintf(req, sizeof req, "tcp svc.test %d\n", lport);
    h_send_all(fd, req, (size_t)n);
    int up = accept(lfd, NULL, NULL);
    assert_true(up >= 0);
    h_send_all(up, "hi\n", 3);
    expect_line(fd, "tcp hi");
    close(up);
    /* mr.connect, the callback way, looks names up on the ring too */
    n = snprintf(req, sizeof req, "connect svc.test %d\n", lport);
    h_send_all(fd, req, (size_t)n);
    expect_line(fd, "connect open");
    h_send_all(fd, "connect nope.test 9\n", 20);
    expect_line(fd, "connect error no such name");
    close(lfd);
    close(fd);
    h_finish(&s, path);
    h_kill(responder);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms_split),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_timeout_shortened),
        cmocka_unit_test(test_sleep),
        cmocka_unit_test(test_spawn_wait),
        cmocka_unit_test(test_wait_outside),
        cmocka_unit_test(test_closed_and_errors),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_spawn_at_load),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_big_receive_linear),
        cmocka_unit_test(test_line_limit),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_tcp_pool),
        cmocka_unit_test(test_resolve),
    };
    return cmocka_run_group_tests_name("sock", tests, NULL, NULL);
}
