/* test_examples.c - the example servers, driven by the real clients
 * people use with them: curl, wrk and python3's http.client for HTTP;
 * redis-cli and redis-benchmark for Redis; socat for chat; the proxy
 * in front of redis-server and of the HTTP example; and the hit counter
 * on redis-server, which is also killed under it. Bad input as well:
 * every example answers with its protocol's error or closes, and stays
 * up for everyone else. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static void start_example(struct h_server *s, const char *name, const char *a1,
                          const char *a2)
{
    const char *argv[] = { name, a1, a2, NULL };
    h_start(s, argv);
}

static char url[128];
static const char *at(struct h_server *s, const char *path)
{
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->port, path);
    return url;
}

/* Send req (n bytes, the server may close before taking them all) and
 * read until the server closes or ms pass; *closed says which. Returns
 * what came. */
static char *answer(int port, const char *req, size_t n, int ms, bool *closed)
{
    int fd = h_connect(port, false);
    for (size_t off = 0; off < n;) {
        ssize_t w = send(fd, req + off, n - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    static char buf[65536];
    size_t got = h_recv_exact(fd, buf, sizeof buf - 1, ms);
    buf[got] = 0;
    *closed = got < sizeof buf - 1 && h_wait_closed(fd, 1);
    close(fd);
    return buf;
}

/* The same, when whether it closed does not matter. */
static char *raw(int port, const void *req, size_t n, int ms)
{
    bool closed;
    return answer(port, req, n, ms, &closed);
}

static char *raws(int port, const char *req)
{
    return raw(port, req, strlen(req), H_WAIT_MS);
}


/* The server's CPU time so far, user and system, in seconds. */
static double cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');   /* after the name, which may hold anything */
    unsigned long ut, st;
    assert_non_null(p);
    /* state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
     * cmajflt, then utime and stime */
    assert_int_equal(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                            &ut, &st), 2);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Send req to the server in writes of 1 KiB, reading its answer at the
 * same time until complete(answer, length) says it has all come, while
 * the server's CPU time stays within limit seconds (checked as it goes,
 * so that a slow server fails the test in about limit seconds rather
 * than finishing). Returns the CPU time it took; the answer in *out
 * (malloc'd). */
static double cpu_for(struct h_server *s, const char *what, const char *req, size_t n,
                      bool (*complete)(const char *, size_t), double limit, char **out)
{
    int fd = h_connect(s->port, false);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t sent = 0, got = 0, cap = 1 << 16;
    char *ans = malloc(cap);
    assert_non_null(ans);
    double c0 = cpu_seconds(s->pid);
    long t0 = mono_ms();
    while (!complete(ans, got)) {
        double used = cpu_seconds(s->pid) - c0;
        if (used > limit)
            fail_msg("%s: %.2f s of the server's CPU with %zu of %zu bytes sent (limit %.1f s)",
                     what, used, sent, n, limit);
        if (mono_ms() - t0 > H_WAIT_MS)
            fail_msg("%s: no whole answer within %d ms (%zu of %zu bytes sent, %zu received)",
                     what, H_WAIT_MS, sent, n, got);
        struct pollfd pfd = { fd, POLLIN | (sent < n ? POLLOUT : 0), 0 };
        if (poll(&pfd, 1, 20) <= 0)
            continue;
        for (int k = 0; k < 64 && sent < n && (pfd.revents & POLLOUT); k++) {
            size_t piece = n - sent < 1024 ? n - sent : 1024;
            ssize_t w = send(fd, req + sent, piece, MSG_NOSIGNAL);
            if (w <= 0)
                break;
            sent += (size_t)w;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            if (got + 65536 > cap) {
                cap *= 2;
                ans = realloc(ans, cap);
                assert_non_null(ans);
            }
            ssize_t r = recv(fd, ans + got, cap - got - 1, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN))
                fail_msg("%s: the server closed after %zu bytes of its answer", what, got);
            if (r > 0)
                got += (size_t)r;
        }
    }
    double used = cpu_seconds(s->pid) - c0;
    print_message("%s: %zu bytes in 1 KiB writes, %.2f s of the server's CPU, %ld ms\n",
                  what, n, used, mono_ms() - t0);
    close(fd);
    ans[got] = 0;
    *out = ans;
    return used;
}

/* One HTTP response on fd within ms: its status (0 if none came whole)
 * and its body into body. */
static int http_response(int fd, char *body, size_t cap, int ms)
{
    char head[2048];
    size_t n = 0;
    while (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4)) {
        if (n + 1 >= sizeof head || h_recv_exact(fd, head + n, 1, ms) != 1)
            return 0;
        n++;
    }
    head[n] = 0;
    int status = 0;
    char *cl = strstr(head, "Content-Length: ");
    if (sscanf(head, "HTTP/1.1 %d ", &status) != 1 || !cl)
        return 0;
    size_t len = strtoul(cl + 16, NULL, 10);
    if (len >= cap || h_recv_exact(fd, body, len, ms) != len)
        return 0;
    body[len] = 0;
    return status;
}

/* The server is still there for a well-behaved client. */
static void still_serves_http(struct h_server *s)
{
    const char *c[] = { "curl", "-s", at(s, "/"), NULL };
    char *out = h_client(c, NULL);
    assert_string_equal(out, "hello from moonring\n");
    free(out);
}

static void test_http_curl(void **state)
{
    (void)state;
    struct h_server s;
    start_example(&s, "examples/http.lua", NULL, NULL);
    const char *c1[] = { "curl", "-s", "-i", at(&s, "/"), NULL };
    char *out = h_client(c1, NULL);
    h_contains(out, "HTTP/1.1 200 OK\r\n");
    h_contains(out, "Server: moonring\r\n");
    h_contains(out, "Date: ");
    h_contains(out, "\r\n\r\nhello from moonring\n");
    free(out);
    const char *c2[] = { "curl", "-s", "--data-binary", "@-", at(&s, "/echo"), NULL };
    out = h_client(c2, "posted body\n");
    assert_string_equal(out, "posted body\n");
    free(out);
    const char *c3[] = { "curl", "-s", "-H", "Transfer-Encoding: chunked",
                         "--data-binary", "@-", at(&s, "/echo"), NULL };
    out = h_client(c3, "chunked body");
    assert_string_equal(out, "chunked body");
    free(out);
    const char *c4[] = { "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                         at(&s, "/nowhere"), NULL };
    out = h_client(c4, NULL);
    assert_string_equal(out, "404");
    free(out);
    /* keep-alive: the second request reuses the connection */
    char u2[128];
    snprintf(u2, sizeof u2, "%s", at(&s, "/"));
    const char *c5[] = { "curl", "-s", "-o", "/dev/null", "-o", "/dev/null", "-w",
                         "%{num_connects} ", u2, u2, NULL };
    out = h_client(c5, NULL);
    assert_string_equal(out, "1 0 ");
    free(out);
    h_finish(&s, NULL);
}

static void test_http_python(void **state)
{
    (void)state;
    struct h_server s;
    start_example(&s, "examples/http.lua", NULL, NULL);
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    const char *py =
        "import http.client, sys\n"
        "c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))\n"
        "for i in range(3):\n"
        "    body = b'x' * (1000 * i + 1)\n"
        "    c.request('POST', '/echo', body=body)\n"
        "    r = c.getresponse()\n"
        "    assert r.status == 200 and r.read() == body\n"
        "c.request('GET', '/')\n"
        "r = c.getresponse()\n"
        "print(r.status, r.getheader('Server'), r.read().decode().strip())\n";
    const char *argv[] = { "python3", "-c", py, port, NULL };
    char *out = h_client(argv, NULL);
    assert_string_equal(out, "200 moonring hello from moonring\n");
    free(out);
    h_finish(&s, NULL);
}

static void test_http_wrk(void **state)
{
    (void)state;
    struct h_server s;
    start_example(&s, "examples/http.lua", NULL, NULL);
    const char *w1[] = { "wrk", "-t1", "-c20", "-d1s", at(&s, "/"), NULL };
    char *out = h_client(w1, NULL);
    h_contains(out, "Requests/sec:");
    assert_null(strstr(out, "Non-2xx"));
    assert_null(strstr(out, "Socket errors"));
    free(out);
    const char *w2[] = { "wrk", "-t1", "-c20", "-d1s", "-s",
                         "tests/clients/wrk-pipeline.lua", at(&s, "/"), "--", "16", NULL };
    out = h_client(w2, NULL);
    h_contains(out, "Requests/sec:");
    assert_null(strstr(out, "Non-2xx"));
    assert_null(strstr(out, "Socket errors"));
    free(out);
    h_finish(&s, NULL);
}

static void test_http_bad_input(void **state)
{
    (void)state;
    struct h_server s;
    start_example(&s, "examples/http.lua", "1", NULL);
    h_contains(raws(s.port, "GARBAGE\r\n\r\n"), "HTTP/1.1 400 ");
    h_contains(raws(s.port, "GET / HTTP/2.0\r\n\r\n"), "HTTP/1.1 505 ");
    h_contains(raws(s.port, "POST /echo HTTP/1.1\r\nHost: x\r\n"
                          "Content-Length: 99999999\r\n\r\n"), "HTTP/1.1 413 ");
    h_contains(raws(s.port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n"), "HTTP/1.1 400 ");
    h_contains(raws(s.port, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                          "\r\n\r\nzz\r\n"), "HTTP/1.1 400 ");
    static char big[12000];
    int n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX: ");
    memset(big + n, 'a', 10000);
    strcpy(big + n + 10000, "\r\n\r\n");
    h_contains(raws(s.port, big), "HTTP/1.1 431 ");
    /* random bytes: an error or a close, never a crash */
    static unsigned char junk[65536];
    for (unsigned seed = 1; seed <= 5; seed++) {
        h_fill_random(junk, sizeof junk, seed);
        raw(s.port, junk, sizeof junk, 300);
    }
    /* slowloris: a head one byte at a time gets 408 after the head timeout */
    int fd = h_connect(s.port, false);
    const char *slow = "GET / HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; slow[i] && i < 8; i++) {   /* 0.8 s: within the timeout */
        h_send_all(fd, slow + i, 1);
        h_sleep_ms(100);
    }
    char buf[256] = { 0 };
    h_recv_exact(fd, buf, 12, H_WAIT_MS);
    assert_memory_equal(buf, "HTTP/1.1 408", 12);
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    still_serves_http(&s);
    h_finish(&s, NULL);
}

/* Each of these frames its request in a way that leaves a doubt (or
 * breaks a rule that makes one possible): 400 and a close. */
static void test_http_framing(void **state)
{
    (void)state;
    struct h_server s;
    start_example(&s, "examples/http.lua", NULL, NULL);
#define POST "POST /echo HTTP/1.1\r\nHost: x\r\n"
#define CHUNKED POST "Transfer-Encoding: chunked\r\n\r\n"
    /* with its length: some hold a NUL */
#define CASE(why, req) { why, req, sizeof req - 1 }
    static const struct { const char *why, *req; size_t n; } cases[] = {
        CASE("Content-Lengths that differ",
             POST "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        CASE("the same Content-Length twice",
             POST "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
        CASE("a list in Content-Length", POST "Content-Length: 3, 3\r\n\r\nabc"),
        CASE("a sign in Content-Length", POST "Content-Length: +3\r\n\r\nabc"),
        CASE("hex in Content-Length", POST "Content-Length: 0x3\r\n\r\nabc"),
        CASE("Transfer-Encoding twice", POST "Transfer-Encoding: chunked\r\n"
                                           "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        CASE("Transfer-Encoding then identity", POST "Transfer-Encoding: chunked\r\n"
                                                   "Transfer-Encoding: identity\r\n\r\n0\r\n\r\n"),
        CASE("Transfer-Encoding and Content-Length", POST "Transfer-Encoding: chunked\r\n"
                                                        "Content-Length: 5\r\n\r\n0\r\n\r\n"),
        CASE("Transfer-Encoding in HTTP/1.0", "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked"
                                            "\r\n\r\n0\r\n\r\n"),
        CASE("a chunk size 0x3", CHUNKED "0x3\r\nabc\r\n0\r\n\r\n"),
        CASE("a chunk size 3zzz", CHUNKED "3zzz\r\nabc\r\n0\r\n\r\n"),
        CASE("a chunk size after a space", CHUNKED " 3\r\nabc\r\n0\r\n\r\n"),
        CASE("a chunk size then a space", CHUNKED "3 \r\nabc\r\n0\r\n\r\n"),
        CASE("an empty chunk size", CHUNKED "\r\nabc\r\n0\r\n\r\n"),
        CASE("a chunk size -3", CHUNKED "-3\r\nabc\r\n0\r\n\r\n"),
        CASE("a NUL in a header", POST "X-A: a\0b\r\nContent-Length: 0\r\n\r\n"),
        CASE("a NUL in the target", "GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("a bare CR in a header", POST "X-A: a\rb\r\nContent-Length: 0\r\n\r\n"),
        CASE("a bare LF after a header", POST "X-A: ab\n\r\n"),
        CASE("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n"),
        CASE("HTTP/1.1 with two Hosts", "GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n"),
        CASE("HTTP/1.0 with two Hosts", "GET / HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool closed;
        char *out = answer(s.port, cases[i].req, cases[i].n, H_WAIT_MS, &closed);
        if (strncmp(out, "HTTP/1.1 400 ", 13) || !closed)
            fail_msg("%s: wanted 400 and a close, got%s:\n%s", cases[i].why,
                     closed ? "" : " (not closed)", out);
    }
    /* what is allowed: a chunk extension (after spaces too), hex in either
     * case with leading zeros, HTTP/1.0 without Host, trailers */
    h_contains(raws(s.port, CHUNKED "3;a=b\r\nabc\r\n00A \t;x\r\n0123456789\r\n0\r\nT: v\r\n\r\n"
                          "GET / HTTP/1.0\r\n\r\n"), "\r\n\r\nabc0123456789HTTP/1.1 200 OK\r\n");
#undef CASE
#undef CHUNKED
#undef POST
    still_serves_http(&s);
    h_finish(&s, NULL);
}

/* A body has BODY_TIMEOUT seconds (here 1) from the end of its head,
 * however it trickles in; one that comes in time is answered, and its
 * deadline does not outlive it. */
static void test_http_body_timeout(void **state)
{
    (void)state;
    struct h_server s;
    const char *argv[] = { "examples/http.lua", "10", "30", "1", NULL };
    h_start(&s, argv);
    const char *head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    /* in time: the body after 0.5 s, then another request 0.7 s later */
    int fd = h_connect(s.port, false);
    h_send_all(fd, head, strlen(head));
    h_sleep_ms(500);
    static char body[101];
    memset(body, 'b', 100);
    h_send_all(fd, body, 100);
    char buf[1024];
    assert_int_equal(http_response(fd, buf, sizeof buf, H_WAIT_MS), 200);
    assert_string_equal(buf, body);
    h_sleep_ms(700);
    h_send_all(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    assert_int_equal(http_response(fd, buf, sizeof buf, H_WAIT_MS), 200);
    close(fd);
    /* a byte every 100 ms: 408 after about a second, and a close */
    fd = h_connect(s.port, false);
    h_send_all(fd, head, strlen(head));
    long t0 = mono_ms();
    int status = 0;
    for (int i = 0; i < 40 && !status; i++) {   /* 4 s at most */
        h_send_all(fd, "b", 1);
        struct pollfd pfd = { fd, POLLIN, 0 };
        if (poll(&pfd, 1, 100) > 0)
            status = http_response(fd, buf, sizeof buf, H_WAIT_MS);
    }
    long took = mono_ms() - t0;
    print_message("body trickled a byte every 100 ms: %d after %ld ms\n", status, took);
    if (status != 408)
        fail_msg("a trickled body got %d after %ld ms, wanted 408 after about 1 s", status, took);
    assert_in_range(took, 900, 3000);
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    still_serves_http(&s);
    h_finish(&s, NULL);
}

static bool http_echo_complete(const char *ans, size_t n)
{
    const char *end = n ? memmem(ans, n, "\r\n\r\n", 4) : NULL;
    const char *cl = end ? memmem(ans, (size_t)(end - ans), "Content-Length: ", 16) : NULL;
    return cl && n >= (size_t)(end + 4 - ans) + strtoul(cl + 16, NULL, 10);
}

/* A chunked body of 300,000 one-byte chunks, in 1 KiB writes: parsed as
 * it comes, it takes about 0.07 s of CPU (ASan too). Parsing the body
 * again from its start on every read took 4.5 s. */
static void test_http_linear(void **state)
{
    (void)state;
    enum { CHUNKS = 300000 };
    struct h_server s;
    start_example(&s, "examples/http.lua", NULL, NULL);
    const char *head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    size_t hl = strlen(head), n = hl + 6 * (size_t)CHUNKS + 5;
    char *req = malloc(n + 1);
    assert_non_null(req);
    memcpy(req, head, hl);
    for (size_t i = 0; i < CHUNKS; i++)
        memcpy(req + hl + 6 * i, "1\r\nx\r\n", 6);
    memcpy(req + n - 5, "0\r\n\r\n", 5);
    char *ans;
    cpu_for(&s, "300,000 one-byte chunks", req, n, http_echo_complete, 1.0, &ans);
    h_contains(ans, "HTTP/1.1 200 OK\r\n");
    h_contains(ans, "Content-Length: 300000\r\n");
    const char *body = strstr(ans, "\r\n\r\n") + 4;
    assert_int_equal(strlen(body), CHUNKS);
    assert_int_equal(strspn(body, "x"), CHUNKS);
    free(ans);
    free(req);
    h_finish(&s, NULL);
}

static char port_arg[16];
static const char *port_of(struct h_server *s)
{
    snprintf(port_arg, sizeof port_arg, "%d", s->port);
    return port_arg;
}

static void test_redis_cli(void **state)
{
    (void)state;
    struct h_server s;
    start_example(&s, "examples/redis.lua", NULL, NULL);
    static const struct { const char *cmd, *want; } cases[] = {
        { "PING", "PONG\n" },
        { "SET foo bar", "OK\n" },
        { "GET foo", "bar\n" },
        { "SET foo baz NX", "\n" },
        { "SET foo baz XX", "OK\n" },
        { "GET foo", "baz\n" },
        { "SET n 10", "OK\n" },
        { "INCR n", "11\n" },
        { "INCRBY n 5", "16\n" },
        { "DECR n", "15\n" },
        { "INCR foo", "ERR value is not an integer or out of range\n" },
        { "MSET a 1 b 2", "OK\n" },
        { "MGET a nope b", "1\n\n2\n" },
        { "EXISTS a b nope", "2\n" },
        { "DEL a b nope", "2\n" },
        { "SET t v EX 100", "OK\n" },
        { "TTL t", "100\n" },
        { "TTL foo", "-1\n" },
        { "TTL nope", "-2\n" },
        { "EXPIRE foo 100", "1\n" },
        { "SET p v PX 1", "OK\n" },
        { "ECHO hello", "hello\n" },
        { "GET p", "\n" },            /* expired */
        { "DBSIZE", "3\n" },
        { "KEYS f*", "foo\n" },
        { "NOSUCH x", "ERR unknown command 'NOSUCH', with args beginning with: 'x'\n" },
        { "GET", "ERR wrong number of arguments for 'get' command\n" },
        { "FLUSHALL", "OK\n" },
        { "DBSIZE", "0\n" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[16] = { "redis-cli", "-p", port_of(&s) };
        char cmd[128];
        snprintf(cmd, sizeof cmd, "%s", cases[i].cmd);
        int n = 3;
        for (char *tok = strtok(cmd, " "); tok && n < 15; tok = strtok(NULL, " "))
            argv[n++] = tok;
        argv[n] = NULL;
        char *out = h_client(argv, NULL);
        /* redis-cli follows an error with an empty line */
        bool error = strncmp(cases[i].want, "ERR", 3) == 0;
        if (error ? strncmp(out, cases[i].want, strlen(cases[i].want))
                  : strcmp(out, cases[i].want))
            fail_msg("%s: got '%s', wanted '%s'", cases[i].cmd, out, cases[i].want);
        free(out);
    }
    h_finish(&s, NULL);
}

static void test_redis_benchmark(void **state)
{
    (void)state;
    struct h_server s;
    start_example(&s, "examples/redis.lua", NULL, NULL);
    const char *b1[] = { "redis-benchmark", "-p", port_of(&s), "-t", "ping,set,get",
                         "-c", "20", "-n", "20000", "-q", NULL };
    char *out = h_client(b1, NULL);
    h_contains(out, "PING_MBULK: ");
    h_contains(out, "SET: ");
    h_contains(out, "GET: ");
    free(out);
    const char *b2[] = { "redis-benchmark", "-p", port_of(&s), "-t", "ping,set,get",
                         "-c", "20", "-n", "50000", "-P", "16", "-q", NULL };
    out = h_client(b2, NULL);
    h_contains(out, "SET: ");
    h_contains(out, "GET: ");
    free(out);
    h_finish(&s, NULL);
}

static void test_redis_bad_input(void **state)
{
    (void)state;
    struct h_server s;
    start_example(&s, "examples/redis.lua", NULL, NULL);
    h_contains(raws(s.port, "*1\r\n$4\r\nPINGXX\r\n"), "-ERR Protocol error");
    h_contains(raws(s.port, "*1\r\n$-5\r\n"), "-ERR Protocol error: invalid bulk length");
    h_contains(raws(s.port, "*abc\r\n"), "-ERR Protocol error: invalid multibulk length");
    h_contains(raws(s.port, "PING\r\n*1\r\nX"), "+PONG\r\n-ERR Protocol error: expected '$'");
    static char longline[70000];
    memset(longline, 'a', sizeof longline - 1);
    h_contains(raws(s.port, longline), "-ERR Protocol error: too big inline request");
    static unsigned char junk[65536];
    for (unsigned seed = 1; seed <= 5; seed++) {
        h_fill_random(junk, sizeof junk, seed);
        raw(s.port, junk, sizeof junk, 300);
    }
    const char *argv[] = { "redis-cli", "-p", port_of(&s), "PING", NULL };
    char *out = h_client(argv, NULL);
    assert_string_equal(out, "PONG\n");
    free(out);
    h_finish(&s, NULL);
}

/* Lengths are strict decimal: each of these is a protocol error, and a
 * close, where a lax reading (strtod's) would have run a PING. */
static void test_redis_strict_lengths(void **state)
{
    (void)state;
    struct h_server s;
    start_example(&s, "examples/redis.lua", NULL, NULL);
    static const char *const counts[] = {   /* for "*N" of one PING */
        "0x1", " 1", "1 ", "1.0", "1e0", "+1", "01", "-2", "-0", "", "1048577",
        "99999999999999999999",
    };
    static const char *const lengths[] = {  /* for "$N" of "PING" */
        "0x4", " 4", "4 ", "4.0", "0.4e1", "+4", "04", "-1", "-4", "", "67108865",
    };
    char req[128];
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        int n = snprintf(req, sizeof req, "*%s\r\n$4\r\nPING\r\n", counts[i]);
        bool closed;
        char *out = answer(s.port, req, (size_t)n, H_WAIT_MS, &closed);
        const char *want = "-ERR Protocol error: invalid multibulk length\r\n";
        if (strcmp(out, want) || !closed)
            fail_msg("'*%s': wanted %sand a close, got%s '%s'", counts[i], want,
                     closed ? "" : " (not closed)", out);
    }
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        int n = snprintf(req, sizeof req, "*1\r\n$%s\r\nPING\r\n", lengths[i]);
        bool closed;
        char *out = answer(s.port, req, (size_t)n, H_WAIT_MS, &closed);
        const char *want = "-ERR Protocol error: invalid bulk length\r\n";
        if (strcmp(out, want) || !closed)
            fail_msg("'$%s': wanted %sand a close, got%s '%s'", lengths[i], want,
                     closed ? "" : " (not closed)", out);
    }
    /* what is allowed: "*0" and "*-1" (the null array) are no command,
     * "$0" an empty argument */
    h_contains(raws(s.port, "*0\r\n*-1\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\nQUIT\r\n"),
             "$0\r\n\r\n+PONG\r\n+OK\r\n");
    const char *argv[] = { "redis-cli", "-p", port_of(&s), "PING", NULL };
    char *out = h_client(argv, NULL);
    assert_string_equal(out, "PONG\n");
    free(out);
    h_finish(&s, NULL);
}

static bool redis_int_complete(const char *ans, size_t n)
{
    return n >= 2 && ans[n - 2] == '\r' && ans[n - 1] == '\n';
}

/* One EXISTS of 500,000 one-byte arguments, in 1 KiB writes: parsed as it
 * comes, it takes about 0.1 s of CPU (ASan too). Parsing the command
 * again from its start on every read took 8 s. */
static void test_redis_linear(void **state)
{
    (void)state;
    enum { ARGS = 500000 };
    struct h_server s;
    start_example(&s, "examples/redis.lua", NULL, NULL);
    char head[64];
    size_t hl = (size_t)snprintf(head, sizeof head, "*%d\r\n$6\r\nEXISTS\r\n", ARGS + 1);
    size_t n = hl + 7 * (size_t)ARGS;
    char *req = malloc(n + 1);
    assert_non_null(req);
    memcpy(req, head, hl);
    for (size_t i = 0; i < ARGS; i++)
        memcpy(req + hl + 7 * i, "$1\r\nx\r\n", 7);
    char *ans;
    cpu_for(&s, "500,000 one-byte arguments", req, n, redis_int_complete, 1.0, &ans);
    assert_string_equal(ans, ":0\r\n");
    free(ans);
    free(req);
    h_finish(&s, NULL);
}

static void test_chat(void **state)
{
    (void)state;
    struct h_server s;
    start_example(&s, "examples/chat.lua", "1", NULL);   /* 1 s idle timeout */
    int a = h_connect(s.port, false), b = h_connect(s.port, false);
    assert_string_equal(h_line(a, H_WAIT_MS), "welcome! your nickname?");
    assert_string_equal(h_line(b, H_WAIT_MS), "welcome! your nickname?");
    h_send_all(a, "alice\n", 6);
    assert_string_equal(h_line(a, H_WAIT_MS), "hello alice");
    h_send_all(b, "bob\r\n", 5);
    assert_string_equal(h_line(b, H_WAIT_MS), "hello bob");
    assert_string_equal(h_line(a, H_WAIT_MS), "* bob joined");
    h_send_all(a, "hi bob\n", 7);
    assert_string_equal(h_line(b, H_WAIT_MS), "alice: hi bob");
    /* a socat client: its lines reach the others as nick: text */
    char tcp[64];
    snprintf(tcp, sizeof tcp, "TCP:127.0.0.1:%d", s.port);
    const char *so[] = { "socat", "-t", "1", "-", tcp, NULL };
    char *out = h_client(so, "carol\nhello from socat\n");
    h_contains(out, "welcome! your nickname?\nhello carol\n");
    free(out);
    assert_string_equal(h_line(a, H_WAIT_MS), "* carol joined");
    assert_string_equal(h_line(a, H_WAIT_MS), "carol: hello from socat");
    assert_string_equal(h_line(a, H_WAIT_MS), "* carol left (eof)");
    assert_string_equal(h_line(b, H_WAIT_MS), "* carol joined");
    assert_string_equal(h_line(b, H_WAIT_MS), "carol: hello from socat");
    assert_string_equal(h_line(b, H_WAIT_MS), "* carol left (eof)");
    /* too long a line: a message, then the door */
    static char big[5000];
    memset(big, 'x', sizeof big);
    h_send_all(b, big, sizeof big);
    h_contains(h_line(b, H_WAIT_MS), "line too long");
    assert_true(h_wait_closed(b, H_WAIT_MS));
    assert_string_equal(h_line(a, H_WAIT_MS), "* bob left (closed)");
    /* idle: alice says nothing for a second and is let go */
    assert_true(h_wait_closed(a, 3000));
    close(a);
    close(b);
    h_finish(&s, NULL);
}

static void test_chat_bad_input(void **state)
{
    (void)state;
    struct h_server s;
    start_example(&s, "examples/chat.lua", NULL, NULL);
    static unsigned char junk[65536];
    for (unsigned seed = 1; seed <= 5; seed++) {
        h_fill_random(junk, sizeof junk, seed);
        int fd = h_connect(s.port, false);
        send(fd, junk, sizeof junk, MSG_NOSIGNAL);
        h_wait_closed(fd, 300);   /* random lines may well keep it open */
        close(fd);
    }
    int fd = h_connect(s.port, false);
    assert_string_equal(h_line(fd, H_WAIT_MS), "welcome! your nickname?");
    h_send_all(fd, "dave\n", 5);
    assert_string_equal(h_line(fd, H_WAIT_MS), "hello dave");
    close(fd);
    h_finish(&s, NULL);
}

static void test_proxy_redis(void **state)
{
    (void)state;
    int rport = h_free_port();
    char rp[16];
    snprintf(rp, sizeof rp, "%d", rport);
    pid_t redis = h_redis(rport);
    char target[32];
    snprintf(target, sizeof target, "127.0.0.1:%d", rport);
    struct h_server s;
    start_example(&s, "examples/proxy.lua", target, NULL);
    const char *c1[] = { "redis-cli", "-p", port_of(&s), "SET", "via", "proxy", NULL };
    char *out = h_client(c1, NULL);
    assert_string_equal(out, "OK\n");
    free(out);
    const char *c2[] = { "redis-cli", "-p", rp, "GET", "via", NULL };   /* straight */
    out = h_client(c2, NULL);
    assert_string_equal(out, "proxy\n");
    free(out);
    const char *b[] = { "redis-benchmark", "-p", port_of(&s), "-t", "set,get", "-c", "10",
                        "-n", "20000", "-P", "16", "-q", NULL };
    out = h_client(b, NULL);
    h_contains(out, "GET: ");
    free(out);
    h_finish(&s, NULL);
    h_kill(redis);
}

static void test_proxy_http(void **state)
{
    (void)state;
    struct h_server http, s;
    start_example(&http, "examples/http.lua", NULL, NULL);
    char target[32];
    snprintf(target, sizeof target, "127.0.0.1:%d", http.port);
    start_example(&s, "examples/proxy.lua", target, NULL);
    still_serves_http(&s);
    const char *c[] = { "curl", "-s", "--data-binary", "@-", at(&s, "/echo"), NULL };
    static char body[200000];
    memset(body, 'b', sizeof body - 1);
    char *out = h_client(c, body);
    assert_string_equal(out, body);
    free(out);
    /* random bytes through the proxy: the upstream's answer (a 4xx and a
     * close) comes back, and the proxy closes the client too */
    static unsigned char junk[65536];
    h_fill_random(junk, sizeof junk, 77);
    h_contains(raw(s.port, junk, sizeof junk, H_WAIT_MS), "HTTP/1.1 4");
    still_serves_http(&s);
    /* an upstream that is down: the client is closed, the proxy lives */
    int http_port = http.port;
    h_finish(&http, NULL);
    for (int t = 0; t < 100 && h_wait_port(http_port, 1); t++)
        h_sleep_ms(20); /* a dead ring's listener goes asynchronously */
    int fd = h_connect(s.port, false);
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    assert_true(h_log_wait(&s, "Connection refused", H_WAIT_MS));
    h_finish(&s, NULL);
}

/* A client of the proxy that never reads: the proxy stops reading the
 * upstream (and the upstream, echo, stops reading the proxy), so memory
 * stays bounded while the client keeps sending. */
static void test_proxy_backpressure(void **state)
{
    (void)state;
    struct h_server echo, s;
    const char *none[] = { NULL };
    h_start(&echo, none);
    char target[32];
    snprintf(target, sizeof target, "127.0.0.1:%d", echo.port);
    start_example(&s, "examples/proxy.lua", target, NULL);
    int fd = h_connect(s.port, false);
    struct timeval tv = { 0, 300000 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    enum { TOTAL = 64 << 20 };
    char *junk = malloc(1 << 20);
    memset(junk, 'j', 1 << 20);
    size_t sent = 0;
    while (sent < TOTAL) {
        ssize_t w = send(fd, junk, 1 << 20, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        sent += (size_t)w;
    }
    assert_true(sent < TOTAL);   /* pushed back, not swallowed */
    close(fd);
    free(junk);
    int fd2 = h_connect(s.port, false);
    char out[5];
    assert_int_equal(h_echo(fd2, "hello", out, 5, H_WAIT_MS), 5);
    assert_memory_equal(out, "hello", 5);
    close(fd2);
    h_finish(&s, NULL);
    h_finish(&echo, NULL);
}

/* The echo as a connection function: 4 MiB of random bytes back
 * exactly, from 10 connections at once, while each waits in its read. */
/* files.lua serves a directory on /, with its index and types, and
 * nothing above it. */
static void test_files(void **state)
{
    (void)state;
    char *page = h_write_file(NULL, "index.html", "<p>files</p>\n");
    char *dir = h_dirname(page);
    char *note = h_write_file(dir, "note.txt", "0123456789");
    struct h_server s;
    start_example(&s, "examples/files.lua", dir, NULL);
    const char *c1[] = { "curl", "-s", "-i", at(&s, "/"), NULL };
    char *out = h_client(c1, NULL);
    h_contains(out, "HTTP/1.1 200 OK\r\n");
    h_contains(out, "Content-Type: text/html; charset=utf-8\r\n");
    h_contains(out, "\r\n\r\n<p>files</p>\n");
    free(out);
    const char *c2[] = { "curl", "-s", "-r", "3-5", at(&s, "/note.txt"), NULL };
    out = h_client(c2, NULL);
    assert_string_equal(out, "345");
    free(out);
    const char *c3[] = { "curl", "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}",
                         at(&s, "/../etc/passwd"), NULL };
    out = h_client(c3, NULL);
    assert_string_equal(out, "403");
    free(out);
    h_finish(&s, NULL);
    unlink(note);
    unlink(page);
    rmdir(dir);
    free(note);
    free(page);
    free(dir);
}

/* A 1 GiB file through send_file, checked by SHA-256, while 50 other
 * clients keep getting a small file from the same worker. The file is
 * sparse with 4 KiB of random bytes every 16 MiB (and at both ends), so
 * that a byte sent from the wrong place changes the sum. */
static void test_files_big(void **state)
{
    (void)state;
    char *small = h_write_file(NULL, "small.txt", "hello from moonring\n");
    char *dir = h_dirname(small);
    char big[600];
    snprintf(big, sizeof big, "%s/big.bin", dir);
    int fd = open(big, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    static char block[4096];
    const off_t size = 1ll << 30;
    for (off_t off = 0; off < size; off += 16 << 20) {
        h_fill_random(block, sizeof block, (unsigned)(off >> 20) + 7);
        assert_int_equal(pwrite(fd, block, sizeof block, off), (ssize_t)sizeof block);
    }
    assert_int_equal(pwrite(fd, block, sizeof block, size - (off_t)sizeof block),
                     (ssize_t)sizeof block);
    close(fd);
    struct h_server s;
    start_example(&s, "examples/files.lua", dir, NULL);
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    const char *py =
        "import hashlib, http.client, subprocess, sys\n"
        "port, path = int(sys.argv[1]), sys.argv[2]\n"
        "want = hashlib.sha256()\n"
        "with open(path, 'rb') as f:\n"
        "    for b in iter(lambda: f.read(1 << 20), b''): want.update(b)\n"
        "wrk = subprocess.Popen(['wrk', '-t1', '-c50', '-d3s',\n"
        "    'http://127.0.0.1:%d/small.txt' % port], stdout=subprocess.PIPE, text=True)\n"
        "c = http.client.HTTPConnection('127.0.0.1', port, timeout=60)\n"
        "c.request('GET', '/big.bin')\n"
        "r = c.getresponse()\n"
        "got, n = hashlib.sha256(), 0\n"
        "for b in iter(lambda: r.read(1 << 20), b''):\n"
        "    got.update(b); n += len(b)\n"
        "out = wrk.communicate(timeout=60)[0]\n"
        "small = [l for l in out.splitlines() if 'requests in' in l]\n"
        "bad = 'Non-2xx' in out or 'Socket errors' in out\n"
        "print(r.status, n, got.hexdigest() == want.hexdigest(),\n"
        "      'wrk-errors' if bad else 'wrk-ok', int(small[0].split()[0]) > 1000)\n";
    const char *argv[] = { "python3", "-c", py, port, big, NULL };
    char *out;
    int st = h_exec(argv, NULL, &out, 120000, true);
    assert_int_equal(st, 0);
    assert_string_equal(out, "200 1073741824 True wrk-ok True\n");
    free(out);
    h_finish(&s, NULL);
    unlink(big);
    unlink(small);
    rmdir(dir);
    free(small);
    free(dir);
}

static void test_echo_seq(void **state)
{
    (void)state;
    enum { N = 10, SIZE = 4 << 20 };
    struct h_server s;
    start_example(&s, "examples/echo_seq.lua", NULL, NULL);
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = h_connect(s.port, false);
    char *in = malloc(SIZE), *out = malloc(SIZE);
    for (int i = 0; i < N; i++) {
        h_fill_random(in, SIZE, (unsigned)i + 1);
        assert_int_equal(h_echo(fds[i], in, out, SIZE, H_WAIT_MS), SIZE);
        assert_memory_equal(in, out, SIZE);
    }
    for (int i = 0; i < N; i++)
        close(fds[i]);
    free(in);
    free(out);
    h_finish(&s, NULL);
}

/* redis-cli -p port ARGS... (one argument or two), its output as a number. */
static long redis_cli(int port, const char *a1, const char *a2)
{
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    const char *argv[] = { "redis-cli", "-p", p, a1, a2, NULL };
    char *out = h_client(argv, NULL);
    long v = atol(out);
    free(out);
    return v;
}

/* curl, python3's http.client and wrk against hits.lua and a real
 * redis-server: the counter in Redis is the number of 200 responses,
 * and no more backend connections were opened than requests were ever
 * in flight at once (10; the pool holds 32). */
static void test_hits(void **state)
{
    (void)state;
    int rport = h_free_port();
    pid_t redis = h_redis(rport);
    char target[32];
    snprintf(target, sizeof target, "127.0.0.1:%d", rport);
    struct h_server s;
    start_example(&s, "examples/hits.lua", target, NULL);
    long conns = h_redis_info(rport, "total_connections_received");
    int clis = 0;   /* redis-cli connections made since */

    const char *c1[] = { "curl", "-s", "-i", at(&s, "/"), NULL };
    char *out = h_client(c1, NULL);
    h_contains(out, "HTTP/1.1 200 OK\r\n");
    h_contains(out, "Content-Length: 1\r\n");
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\n1");
    free(out);
    const char *c2[] = { "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                         at(&s, "/nowhere"), NULL };
    out = h_client(c2, NULL);
    assert_string_equal(out, "404");
    free(out);
    /* keep-alive: two requests, one connection */
    char u2[128];
    snprintf(u2, sizeof u2, "%s", at(&s, "/"));
    const char *c3[] = { "curl", "-s", "-w", " %{num_connects}\n", u2, u2, NULL };
    out = h_client(c3, NULL);
    assert_string_equal(out, "2 1\n3 0\n");
    free(out);
    /* Connection: close is honoured: said, and the connection closed */
    int fd = h_connect(s.port, false);
    const char *req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    h_send_all(fd, req, strlen(req));
    char buf[512] = { 0 };
    h_recv_exact(fd, buf, sizeof buf - 1, H_WAIT_MS);    /* until it closes */
    h_contains(buf, "HTTP/1.1 200 OK\r\n");
    h_contains(buf, "Connection: close\r\n");
    assert_string_equal(strstr(buf, "\r\n\r\n"), "\r\n\r\n4");
    close(fd);
    long ok = 4;
    /* bad requests: an error and a close, and no count */
    h_contains(raws(s.port, "GARBAGE\r\n\r\n"), "HTTP/1.1 400 ");
    h_contains(raws(s.port, "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
             "HTTP/1.1 501 ");
    h_contains(raws(s.port, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"),
             "HTTP/1.1 413 ");
    static char big[12000];
    int bn = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX: ");
    memset(big + bn, 'a', 10000);
    strcpy(big + bn + 10000, "\r\n\r\n");
    h_contains(raws(s.port, big), "HTTP/1.1 431 ");

    /* 4 keep-alive connections, 250 requests each: every count is new */
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    const char *py =
        "import http.client, sys, threading\n"
        "port, seen, lock = int(sys.argv[1]), set(), threading.Lock()\n"
        "statuses = []\n"
        "def run():\n"
        "    c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)\n"
        "    for i in range(250):\n"
        "        c.request('GET', '/')\n"
        "        r = c.getresponse()\n"
        "        body = r.read()\n"
        "        with lock:\n"
        "            statuses.append(r.status)\n"
        "            if r.status == 200: seen.add(int(body))\n"
        "ts = [threading.Thread(target=run) for _ in range(4)]\n"
        "for t in ts: t.start()\n"
        "for t in ts: t.join()\n"
        "print(statuses.count(200), len(statuses), len(seen))\n";
    const char *p1[] = { "python3", "-c", py, port, NULL };
    out = h_client(p1, NULL);
    assert_string_equal(out, "1000 1000 1000\n");
    free(out);
    ok += 1000;
    assert_int_equal(redis_cli(rport, "GET", "hits"), ok);
    clis++;

    /* wrk: its count is of the responses it read; those it had asked
     * for when it stopped (one per connection at most) were counted by
     * Redis too */
    const char *w[] = { "wrk", "-t1", "-c10", "-d2s", at(&s, "/"), NULL };
    out = h_client(w, NULL);
    assert_null(strstr(out, "Non-2xx"));
    assert_null(strstr(out, "Socket errors"));
    char *n = strstr(out, " requests in ");
    assert_non_null(n);
    while (n > out && n[-1] != ' ' && n[-1] != '\n')
        n--;
    long wrk_ok = atol(n);
    free(out);
    long hits = redis_cli(rport, "GET", "hits");
    clis++;
    print_message("wrk: %ld responses, all 200; Redis counted %ld\n", wrk_ok, hits - ok);
    assert_true(wrk_ok > 1000);
    assert_in_range(hits - ok, wrk_ok, wrk_ok + 10);

    long opened = h_redis_info(rport, "total_connections_received") - conns - clis - 1;
    print_message("backend connections opened: %ld\n", opened);
    assert_in_range(opened, 1, 10);
    h_finish(&s, NULL);
    h_kill(redis);
}

/* redis-server killed while 10 keep-alive clients send requests, with
 * 10 INCRs waiting in it: every request gets an answer, 502 or the
 * count, on the same connection; once redis-server is back, the counts
 * come again. */
static void test_hits_redis_down(void **state)
{
    (void)state;
    enum { N = 10, ROUNDS = 60, KILL = 20, BACK = 40 };
    int rport = h_free_port();
    pid_t redis = h_redis(rport);
    char target[32];
    snprintf(target, sizeof target, "127.0.0.1:%d", rport);
    struct h_server s;
    start_example(&s, "examples/hits.lua", target, NULL);
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = h_connect(s.port, false);
    const char *req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    int got[ROUNDS][2] = { { 0 } };    /* 200s and 502s per round */
    for (int r = 0; r < ROUNDS; r++) {
        if (r == BACK)
            redis = h_redis(rport);
        if (r == KILL)                  /* so that the round's INCRs wait in it */
            kill(redis, SIGSTOP);
        for (int i = 0; i < N; i++)
            h_send_all(fds[i], req, strlen(req));
        if (r == KILL) {
            h_sleep_ms(200);
            kill(redis, SIGKILL);
            h_kill(redis);
        }
        for (int i = 0; i < N; i++) {
            char body[64];
            int st = http_response(fds[i], body, sizeof body, H_WAIT_MS);
            if (st == 200)
                got[r][0]++;
            else if (st == 502)
                got[r][1]++;
            else
                fail_msg("round %d, client %d: no answer (%d)", r, i, st);
        }
    }
    int before = 0, down = 0, after = 0;
    for (int r = 0; r < ROUNDS; r++) {
        if (r < KILL)
            before += got[r][0];
        else if (r > KILL && r < BACK)
            down += got[r][1];
        else if (r > BACK)
            after += got[r][0];
    }
    print_message("200s before the kill %d/%d; at the kill %d 200s, %d 502s; while down "
                  "502s %d/%d; as it came back %d 200s, %d 502s; after %d/%d\n",
                  before, KILL * N, got[KILL][0], got[KILL][1], down,
                  (BACK - KILL - 1) * N, got[BACK][0], got[BACK][1], after,
                  (ROUNDS - BACK - 1) * N);
    assert_int_equal(before, KILL * N);
    assert_int_equal(got[KILL][1], N);  /* in flight when it died */
    assert_int_equal(down, (BACK - KILL - 1) * N);
    assert_int_equal(got[ROUNDS - 1][0], N);
    assert_true(h_log_wait(&s, target, H_WAIT_MS));   /* said, once a second at most */
    /* the counter restarted with the new redis-server: it counts the
     * 200s since */
    int since = 0;
    for (int r = BACK; r < ROUNDS; r++)
        since += got[r][0];
    assert_int_equal(redis_cli(rport, "GET", "hits"), since);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    h_finish(&s, NULL);
    h_kill(redis);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_curl),
        cmocka_unit_test(test_http_python),
        cmocka_unit_test(test_http_wrk),
        cmocka_unit_test(test_http_bad_input),
        cmocka_unit_test(test_http_framing),
        cmocka_unit_test(test_http_body_timeout),
        cmocka_unit_test(test_http_linear),
        cmocka_unit_test(test_redis_cli),
        cmocka_unit_test(test_redis_benchmark),
        cmocka_unit_test(test_redis_bad_input),
        cmocka_unit_test(test_redis_strict_lengths),
        cmocka_unit_test(test_redis_linear),
        cmocka_unit_test(test_chat),
        cmocka_unit_test(test_chat_bad_input),
        cmocka_unit_test(test_proxy_redis),
        cmocka_unit_test(test_proxy_http),
        cmocka_unit_test(test_proxy_backpressure),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_files_big),
        cmocka_unit_test(test_echo_seq),
        cmocka_unit_test(test_hits),
        cmocka_unit_test(test_hits_redis_down),
    };
    return cmocka_run_group_tests_name("examples", tests, NULL, NULL);
}
