/* test_http_lib.c - moonring.http, through tests/integration/test_http_lib.lua
 * run in the real binary over a directory of files made here: routes and
 * captures, queries, headers, bodies whole, streamed and chunked both
 * ways, 100-continue, pipelining, 10,000 requests on one connection, the
 * lingering close after an error or "Connection: close", each smuggling
 * vector, each way out of the static root, ranges and conditional
 * requests, body limits and timeouts; with curl, python3's http.client,
 * wrk and raw sockets. One server serves the whole group. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#define SCRIPT "tests/integration/test_http_lib.lua"
#define T_TXT "0123456789abcdef" /* root/sub/t.txt */

static struct h_server srv;
static char root[256], outside[256];
static char url[512];

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void put_file(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/mr-http-XXXXXX";
    char *base = mkdtemp(tmpl);
    assert_non_null(base);
    snprintf(root, sizeof root, "%s/root", base);
    snprintf(outside, sizeof outside, "%s/outside", base);
    char p[512], q[512];
    assert_int_equal(mkdir(root, 0755), 0);
    assert_int_equal(mkdir(outside, 0755), 0);
    snprintf(p, sizeof p, "%s/sub", root);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/docs", root);
    assert_int_equal(mkdir(p, 0755), 0);
    put_file(root, "index.html", "<h1>home</h1>\n");
    put_file(root, "style.css", "body{}\n");
    put_file(root, "docs/index.html", "<p>docs</p>\n");
    put_file(root, "sub/t.txt", T_TXT);
    put_file(outside, "secret.txt", "secret\n");
    /* 3 MiB, byte i = (i * 7) % 251: sent whole and in ranges */
    snprintf(p, sizeof p, "%s/big.bin", root);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    for (long i = 0; i < 3 << 20; i++)
        fputc((int)((i * 7) % 251), f);
    fclose(f);
    /* out of the root: relative and absolute; within it: relative */
    snprintf(p, sizeof p, "%s/evil", root);
    assert_int_equal(symlink("../outside/secret.txt", p), 0);
    snprintf(p, sizeof p, "%s/abs", root);
    snprintf(q, sizeof q, "%s/secret.txt", outside);
    assert_int_equal(symlink(q, p), 0);
    snprintf(p, sizeof p, "%s/good", root);
    assert_int_equal(symlink("sub/t.txt", p), 0);
    const char *argv[] = { SCRIPT, root, NULL };
    h_start(&srv, argv);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_finish(&srv, NULL);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%.*s'", (int)(strlen(root) - 5), root);
    if (system(cmd) != 0)
        print_message("could not remove %s\n", root);
    return 0;
}

static const char *at(const char *path)
{
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv.port, path);
    return url;
}

static void lacks(const char *out, const char *needle)
{
    if (strstr(out, needle))
        fail_msg("did not expect '%s' in:\n%s", needle, out);
}

enum end { END_EOF, END_RESET, END_TIMEOUT };

/* On a fresh connection: send n bytes of req (reading at the same time,
 * so that a big request cannot deadlock against the response; a send
 * the server refuses ends the sending) and read until the server closes
 * or ms pass. *end says how it ended: an orderly EOF, a reset
 * (ECONNRESET: the lingering close failed) or the time. Returns what
 * came, NUL-terminated (static buffer). */
static char *exchange(const void *req, size_t n, int ms, enum end *end, size_t *len)
{
    static char buf[1 << 20];
    int fd = h_connect(srv.port, false);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t sent = 0, got = 0;
    long t_end = mono_ms() + ms;
    *end = END_TIMEOUT;
    for (;;) {
        long left = t_end - mono_ms();
        if (left <= 0)
            break;
        struct pollfd pfd = { fd, POLLIN | (sent < n ? POLLOUT : 0), 0 };
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        if ((pfd.revents & POLLOUT) && sent < n) {
            ssize_t w = send(fd, (const char *)req + sent, n - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN)
                sent = n;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
            if (r > 0) {
                got += (size_t)r;
                if (got == sizeof buf - 1)
                    break;
            } else if (r == 0) {
                *end = END_EOF;
                break;
            } else if (errno != EAGAIN && errno != EINTR) {
                *end = errno == ECONNRESET ? END_RESET : END_TIMEOUT;
                break;
            }
        }
    }
    close(fd);
    buf[got] = 0;
    if (len)
        *len = got;
    return buf;
}

/* The same for a string, within H_WAIT_MS. */
static char *xs(const char *req, enum end *end)
{
    return exchange(req, strlen(req), H_WAIT_MS, end, NULL);
}

/* A request whose answer must start with want, then an orderly close. */
static void refused(const char *why, const void *req, size_t n, const char *want)
{
    enum end end;
    char *out = exchange(req, n, H_WAIT_MS, &end, NULL);
    if (strncmp(out, want, strlen(want)) || end != END_EOF)
        fail_msg("%s: wanted '%s' and an orderly close, got %s:\n%.300s", why, want,
                 end == END_EOF ? "EOF" : end == END_RESET ? "a reset" : "no close", out);
}

/* One response on fd within ms: its status (0 if none came whole), its
 * head into head and its body (Content-Length framed) into body. */
static int response(int fd, char *head, size_t hcap, char *body, size_t cap, int ms)
{
    size_t n = 0;
    while (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4)) {
        if (n + 1 >= hcap || h_recv_exact(fd, head + n, 1, ms) != 1)
            return 0;
        n++;
    }
    head[n] = 0;
    int status = 0;
    if (sscanf(head, "HTTP/1.1 %d ", &status) != 1)
        return 0;
    char *cl = strstr(head, "Content-Length: ");
    size_t len = cl ? strtoul(cl + 16, NULL, 10) : 0;
    if (len >= cap || h_recv_exact(fd, body, len, ms) != len)
        return 0;
    body[len] = 0;
    return status;
}

/* One response of a lockstep exchange (nothing pipelined behind it),
 * read in as few reads as it comes in: its status, its body in body. */
static int response_fast(int fd, char *body, size_t cap, int ms)
{
    static char buf[8192];
    size_t got = 0;
    for (;;) {
        buf[got] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            char *cl = strstr(buf, "Content-Length: ");
            size_t len = cl && cl < end ? strtoul(cl + 16, NULL, 10) : 0;
            size_t hl = (size_t)(end + 4 - buf);
            if (got >= hl + len) {
                int status = 0;
                if (got != hl + len || len >= cap || sscanf(buf, "HTTP/1.1 %d ", &status) != 1)
                    return 0;
                memcpy(body, end + 4, len);
                body[len] = 0;
                return status;
            }
        }
        struct pollfd pfd = { fd, POLLIN, 0 };
        if (got + 1 >= sizeof buf || poll(&pfd, 1, ms) <= 0)
            return 0;
        ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (r <= 0)
            return 0;
        got += (size_t)r;
    }
}

static void test_routes(void **state)
{
    (void)state;
    struct { const char *path, *want; } cases[] = {
        { "/hello", "hello\n" },
        { "/users/42/posts/7", "42|7\n" },
        { "/users/a%20b/posts/x%2Fy", "a b|x/y\n" },
        { "/rest/a/b/c.txt", "rest=a/b/c.txt\n" },
        { "/star/", "star=\n" },
        { "/star/x/y", "star=x/y\n" },
        { "/nowhere", "no route\n" },
        { "/users/42/posts", "no route\n" },
        { "/hello/", "no route\n" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *c[] = { "curl", "-s", at(cases[i].path), NULL };
        char *out = h_client(c, NULL);
        if (strcmp(out, cases[i].want))
            fail_msg("%s: got '%s', wanted '%s'", cases[i].path, out, cases[i].want);
        free(out);
    }
    const char *c1[] = { "curl", "-s", "-X", "PUT", at("/any"), NULL };
    char *out = h_client(c1, NULL);
    assert_string_equal(out, "any PUT\n");
    free(out);
    /* the 404 of the fallback, 201 set by res:status, 204 without a body */
    const char *c2[] = { "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", at("/nowhere"),
                         NULL };
    out = h_client(c2, NULL);
    assert_string_equal(out, "404");
    free(out);
    const char *c3[] = { "curl", "-s", "-i", at("/created"), NULL };
    out = h_client(c3, NULL);
    h_contains(out, "HTTP/1.1 201 Created\r\n");
    h_contains(out, "\r\n\r\nmade\n");
    free(out);
    const char *c4[] = { "curl", "-s", "-i", at("/nocontent"), NULL };
    out = h_client(c4, NULL);
    h_contains(out, "HTTP/1.1 204 No Content\r\n");
    lacks(out, "Content-Length");
    free(out);
    /* a handler that answers nothing: 200 and an empty body; one that
     * raises: 500 (and the server goes on) */
    const char *c5[] = { "curl", "-s", "-i", at("/nothing"), NULL };
    out = h_client(c5, NULL);
    h_contains(out, "HTTP/1.1 200 OK\r\n");
    h_contains(out, "Content-Length: 0\r\n");
    free(out);
    const char *c6[] = { "curl", "-s", "-i", at("/error"), NULL };
    out = h_client(c6, NULL);
    h_contains(out, "HTTP/1.1 500 Internal Server Error\r\n");
    free(out);
    assert_true(h_log_wait(&srv, "boom", H_WAIT_MS));
    /* HEAD: the GET route's head, its length, no body */
    const char *c7[] = { "curl", "-s", "-I", at("/hello"), NULL };
    out = h_client(c7, NULL);
    h_contains(out, "HTTP/1.1 200 OK\r\n");
    h_contains(out, "Content-Length: 6\r\n");
    free(out);
    enum end end;
    char *raw = xs("HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &end);
    h_contains(raw, "Content-Length: 6\r\n");
    assert_string_equal(strstr(raw, "\r\n\r\n"), "\r\n\r\n");
    assert_int_equal(end, END_EOF);
    /* HEAD of a streamed response: its head, no chunks */
    raw = xs("HEAD /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &end);
    h_contains(raw, "Transfer-Encoding: chunked\r\n");
    assert_string_equal(strstr(raw, "\r\n\r\n"), "\r\n\r\n");
    /* the absolute form (as to a proxy) routes by its path */
    raw = xs("GET http://example.org/users/5/posts/6?q=1 HTTP/1.1\r\nHost: example.org\r\n"
             "Connection: close\r\n\r\n", &end);
    assert_string_equal(strstr(raw, "\r\n\r\n"), "\r\n\r\n5|6\n");
}

/* An app without a fallback: 405 with Allow for a path that has routes
 * for other methods, 404 for one that has none. */
static void test_method_not_allowed(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s,
        "local http = require 'moonring.http'\n"
        "local app = http.new()\n"
        "app:get('/thing', function(req, res) res:send('thing\\n') end)\n"
        "app:put('/thing', function(req, res) res:send('put\\n') end)\n"
        "app:post('/items/:id', function(req, res) res:send('item\\n') end)\n"
        "return app:handler()\n", NULL, NULL);
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/thing", s.port);
    const char *c1[] = { "curl", "-s", "-i", "-X", "DELETE", u, NULL };
    char *out = h_client(c1, NULL);
    h_contains(out, "HTTP/1.1 405 Method Not Allowed\r\n");
    h_contains(out, "Allow: GET, HEAD, PUT\r\n");
    free(out);
    snprintf(u, sizeof u, "http://127.0.0.1:%d/items/7", s.port);
    const char *c2[] = { "curl", "-s", "-i", u, NULL };
    out = h_client(c2, NULL);
    h_contains(out, "HTTP/1.1 405 ");
    h_contains(out, "Allow: POST\r\n");
    free(out);
    snprintf(u, sizeof u, "http://127.0.0.1:%d/other", s.port);
    const char *c3[] = { "curl", "-s", "-i", u, NULL };
    out = h_client(c3, NULL);
    h_contains(out, "HTTP/1.1 404 Not Found\r\n");
    free(out);
    h_finish(&s, path);
}

static void test_query_and_headers(void **state)
{
    (void)state;
    const char *c1[] = { "curl", "-s", at("/query?a=1&b=x%20y+z&a=2&flag&e=%3D%26"), NULL };
    char *out = h_client(c1, NULL);
    assert_string_equal(out, "raw=a=1&b=x%20y+z&a=2&flag&e=%3D%26\n"
                             "a=1,2\nb=x y z\ne==&\nflag=\n");
    free(out);
    const char *c2[] = { "curl", "-s", "-i", "-H", "x-TEST: some value ", at("/headers"),
                         NULL };
    out = h_client(c2, NULL);
    h_contains(out, "X-Reply: yes\r\n");
    h_contains(out, "Content-Type: text/x-test\r\n");
    h_contains(out, "Server: moonring\r\n");
    h_contains(out, "Date: ");
    h_contains(out, "x-test=some value ua=true version=1.1 method=GET host=127.0.0.1:");
    free(out);
    /* HTTP/1.0: keep-alive only when asked, and said back */
    const char *c3[] = { "curl", "-s", "-i", "--http1.0", at("/headers"), NULL };
    out = h_client(c3, NULL);
    h_contains(out, "version=1.0");
    h_contains(out, "Connection: close\r\n");
    free(out);
    int fd = h_connect(srv.port, false);
    const char *ka = "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    char head[2048], body[256];
    for (int i = 0; i < 2; i++) {
        h_send_all(fd, ka, strlen(ka));
        assert_int_equal(response(fd, head, sizeof head, body, sizeof body, H_WAIT_MS), 200);
        h_contains(head, "Connection: keep-alive\r\n");
    }
    close(fd);
}

/* The Date of a response on fd: seconds since the epoch, or -1. */
static long date_of(int fd)
{
    const char *r = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    char head[1024], body[64];
    h_send_all(fd, r, strlen(r));
    if (response(fd, head, sizeof head, body, sizeof body, H_WAIT_MS) != 200)
        return -1;
    char *d = strstr(head, "Date: ");
    struct tm tm = { 0 };
    if (!d || !strptime(d + 6, "%a, %d %b %Y %H:%M:%S GMT", &tm))
        return -1;
    return (long)timegm(&tm);
}

/* The Date header is the time, to the second, and moves on with it
 * (the clock is read once a second while responses go out). */
static void test_date(void **state)
{
    (void)state;
    int fd = h_connect(srv.port, false);
    for (int i = 0; i < 2; i++) {
        long now = (long)time(NULL), d = date_of(fd);
        if (d < now - 1 || d > now + 1)
            fail_msg("Date %ld, the time %ld", d, now);
        h_sleep_ms(1100);
    }
    close(fd);
    h_sleep_ms(2100);   /* the clock's timer stops, then starts again */
    fd = h_connect(srv.port, false);
    long now = (long)time(NULL), d = date_of(fd);
    if (d < now - 1 || d > now + 1)
        fail_msg("Date %ld after a pause, the time %ld", d, now);
    close(fd);
}

static void test_json(void **state)
{
    (void)state;
    /* without lua-cjson, res:json and req:json say what is missing */
    char *script = h_write_file(NULL, "nojson.lua",
        "package.preload.cjson = function() error('not here') end\n"
        "local json = require 'moonring.http.json'\n"
        "assert(not json.available())\n"
        "json.get()\n");
    const char *argv[] = { "-t", script, NULL };
    char *err;
    assert_int_not_equal(h_run(argv, &err), 0);
    h_contains(err, "JSON needs lua-cjson (Debian: apt-get install lua-cjson)");
    free(err);
    free(script);
    const char *c0[] = { "curl", "-s", at("/jsoninfo"), NULL };
    char *out = h_client(c0, NULL);
    bool have = strcmp(out, "cjson\n") == 0;
    free(out);
    if (!have) {
        print_message("lua-cjson is not installed: res:json must say so\n");
        const char *c[] = { "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            at("/users/42"), NULL };
        out = h_client(c, NULL);
        assert_string_equal(out, "500");
        free(out);
        assert_true(h_log_wait(&srv, "lua-cjson", H_WAIT_MS));
        return;
    }
    const char *c1[] = { "curl", "-s", "-i", at("/users/42"), NULL };
    out = h_client(c1, NULL);
    h_contains(out, "Content-Type: application/json\r\n");
    h_contains(out, "\r\n\r\n{\"id\":\"42\"}");
    free(out);
    const char *c2[] = { "curl", "-s", "--data-binary", "{\"n\": 21}", at("/json"), NULL };
    out = h_client(c2, NULL);
    assert_string_equal(out, "{\"got\":42}");
    free(out);
    const char *c3[] = { "curl", "-s", "--data-binary", "{nope", at("/json"), NULL };
    out = h_client(c3, NULL);
    h_contains(out, "bad JSON");
    free(out);
}

/* Bodies: Content-Length and chunked in, whole and in pieces; chunked out. */
static void test_bodies(void **state)
{
    (void)state;
    const char *c1[] = { "curl", "-s", "--data-binary", "@-", at("/echo"), NULL };
    char *out = h_client(c1, "posted body\n");
    assert_string_equal(out, "posted body\n");
    free(out);
    const char *c2[] = { "curl", "-s", "-H", "Transfer-Encoding: chunked", "--data-binary",
                         "@-", at("/echo"), NULL };
    out = h_client(c2, "chunked body");
    assert_string_equal(out, "chunked body");
    free(out);
    /* chunked out, on the wire */
    enum end end;
    char *raw = xs("GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &end);
    h_contains(raw, "Transfer-Encoding: chunked\r\n");
    h_contains(raw, "Content-Type: text/x-stream\r\n");
    lacks(raw, "Content-Length");
    assert_string_equal(strstr(raw, "\r\n\r\n"), "\r\n\r\n1\r\na\r\n2\r\nbb\r\n3\r\nccc\r\n0\r\n\r\n");
    /* HTTP/1.0 gets it unchunked, ended by the close */
    raw = xs("GET /chunked HTTP/1.0\r\n\r\n", &end);
    assert_string_equal(strstr(raw, "\r\n\r\n"), "\r\n\r\nabbccc");
    assert_int_equal(end, END_EOF);
    /* a chunked body with extensions and trailers (dropped), then the
     * next request on the same connection */
    raw = xs("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "3;ext=1\r\nabc\r\n00A \t;x\r\n0123456789\r\n0\r\nTrailer-A: v\r\n"
                   "Content-Length: 99\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n"
                   "Connection: close\r\n\r\n", &end);
    h_contains(raw, "Content-Length: 13\r\n\r\nabc0123456789HTTP/1.1 200 OK\r\n");
    h_contains(raw, "\r\n\r\nhello\n");
    /* 300 KB streamed through read_body and back as chunks, and counted
     * through body_pieces, by python's http.client (chunked too) */
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    const char *py =
        "import http.client, sys\n"
        "c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=10)\n"
        "body = bytes(range(256)) * 1200\n"
        "c.request('POST', '/stream', body=body)\n"
        "r = c.getresponse()\n"
        "assert r.getheader('Transfer-Encoding') == 'chunked'\n"
        "assert r.read() == body\n"
        "def gen():\n"
        "    for i in range(100):\n"
        "        yield b'y' * 1000\n"
        "c.request('POST', '/count', body=gen(), encode_chunked=True)\n"
        "r = c.getresponse()\n"
        "print(r.status, r.read().decode().strip())\n"
        "c.request('PUT', '/echo', body=b'z' * 70000)\n"
        "r = c.getresponse()\n"
        "assert r.read() == b'z' * 70000\n"
        "print('same connection', c.sock is not None)\n";
    const char *argv[] = { "python3", "-c", py, port, NULL };
    out = h_client(argv, NULL);
    assert_string_equal(out, "200 100000 bytes\nsame connection True\n");
    free(out);
}

/* Expect: 100-continue: "100 Continue" only when the handler reads the
 * body; 417 for any other expectation. */
static void test_continue(void **state)
{
    (void)state;
    static char big[4096];
    memset(big, 'k', sizeof big - 1);
    const char *c1[] = { "curl", "-s", "-i", "-H", "Expect: 100-continue", "--data-binary",
                         "@-", at("/echo"), NULL };
    char *out = h_client(c1, big);
    h_contains(out, "HTTP/1.1 100 Continue\r\n");
    h_contains(out, "HTTP/1.1 200 OK\r\n");
    h_contains(out, big);
    free(out);
    /* raw: the 100 comes before the body is sent, then the answer */
    int fd = h_connect(srv.port, false);
    const char *head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                       "Expect: 100-continue\r\n\r\n";
    h_send_all(fd, head, strlen(head));
    char buf[2048] = { 0 }, body[64];
    assert_int_equal(h_recv_exact(fd, buf, 25, H_WAIT_MS), 25);
    assert_string_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n");
    h_send_all(fd, "hello", 5);
    assert_int_equal(response(fd, buf, sizeof buf, body, sizeof body, H_WAIT_MS), 200);
    assert_string_equal(body, "hello");
    close(fd);
    /* a handler that does not read: no 100, the answer says close, and
     * closes (the body was never sent) */
    const char *ign = "POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                      "Expect: 100-continue\r\n\r\n";
    enum end end;
    out = exchange(ign, strlen(ign), H_WAIT_MS, &end, NULL);
    lacks(out, "100 Continue");
    h_contains(out, "HTTP/1.1 200 OK\r\n");
    h_contains(out, "Connection: close\r\n");
    assert_int_equal(end, END_EOF);
    /* python, raw: the same by hand */
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    const char *py =
        "import socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)\n"
        "s.sendall(b'PUT /echo HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 3\\r\\n'\n"
        "          b'Expect: 100-Continue\\r\\n\\r\\n')\n"
        "print(s.recv(100))\n"
        "s.sendall(b'abc')\n"
        "print(s.recv(1000).split(b'\\r\\n\\r\\n')[1])\n";
    const char *argv[] = { "python3", "-c", py, port, NULL };
    out = h_client(argv, NULL);
    assert_string_equal(out, "b'HTTP/1.1 100 Continue\\r\\n\\r\\n'\nb'abc'\n");
    free(out);
    const char *other = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                        "Expect: something-else\r\n\r\nx";
    refused("Expect: something-else", other, strlen(other), "HTTP/1.1 417 ");
}

/* Pipelined requests are answered in order, from the bytes already
 * received; 10,000 requests go through one connection, and max_requests
 * (here 10,001) ends it. */
static void test_pipelining_keepalive(void **state)
{
    (void)state;
    enum { N = 100 };
    static char req[N * 64];
    size_t n = 0;
    for (int i = 0; i < N; i++)
        n += (size_t)snprintf(req + n, sizeof req - n,
                              "GET /users/%d/posts/%d HTTP/1.1\r\nHost: x\r\n\r\n", i, i + 1);
    n += (size_t)snprintf(req + n, sizeof req - n,
                          "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    enum end end;
    size_t len;
    char *out = exchange(req, n, H_WAIT_MS, &end, &len);
    assert_int_equal(end, END_EOF);
    char *p = out;
    for (int i = 0; i < N; i++) {
        char want[64];
        snprintf(want, sizeof want, "\r\n\r\n%d|%d\n", i, i + 1);
        char *at_ = strstr(p, want);
        if (!at_)
            fail_msg("response %d (%s) missing or out of order", i, want);
        p = at_ + strlen(want);
    }
    h_contains(p, "hello\n");
    /* 10,000 requests, each answered before the next, on one connection */
    int fd = h_connect(srv.port, false);
    const char *r = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    char body[64];
    long t0 = mono_ms();
    for (int i = 0; i < 10000; i++) {
        h_send_all(fd, r, strlen(r));
        int st = response_fast(fd, body, sizeof body, H_WAIT_MS);
        if (st != 200 || strcmp(body, "hello\n"))
            fail_msg("request %d on the connection: %d '%s'", i, st, body);
    }
    print_message("10,000 requests on one connection: %ld ms\n", mono_ms() - t0);
    /* the 10,001st is the last (max_requests): it says close, and closes */
    char head[1024];
    h_send_all(fd, r, strlen(r));
    assert_int_equal(response(fd, head, sizeof head, body, sizeof body, H_WAIT_MS), 200);
    h_contains(head, "Connection: close\r\n");
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    /* handlers that wait: two connections sleep at once, not in turn */
    t0 = mono_ms();
    char u2[512];
    snprintf(u2, sizeof u2, "%s", at("/sleep"));
    const char *c2[] = { "curl", "-s", "-Z", "--parallel-immediate", u2, u2, u2, NULL };
    out = h_client(c2, NULL);
    assert_string_equal(out, "slept\nslept\nslept\n");
    free(out);
    long took = mono_ms() - t0;
    print_message("three handlers sleeping 0.2 s at once: %ld ms\n", took);
    assert_true(took < 550);
}

static void test_wrk(void **state)
{
    (void)state;
    const char *w1[] = { "wrk", "-t1", "-c20", "-d1s", at("/hello"), NULL };
    char *out = h_client(w1, NULL);
    h_contains(out, "Requests/sec:");
    lacks(out, "Non-2xx");
    lacks(out, "Socket errors");
    free(out);
    const char *w2[] = { "wrk", "-t1", "-c10", "-d1s", "-s", "tests/clients/wrk-pipeline.lua",
                         at("/hello"), "--", "16", NULL };
    out = h_client(w2, NULL);
    h_contains(out, "Requests/sec:");
    lacks(out, "Non-2xx");
    lacks(out, "Socket errors");
    free(out);
}

/* After "Connection: close" or an error, the server closes gracefully:
 * it lingers, reading what the client still sends, so that the client
 * reads the whole response, then EOF, never a reset. */
static void test_lingering_close(void **state)
{
    (void)state;
    const char *req = "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    enum end end;
    char *out = exchange(req, strlen(req), H_WAIT_MS, &end, NULL);
    h_contains(out, "Connection: close\r\n");
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\nhello\n");
    if (end != END_EOF)
        fail_msg("after Connection: close: %s", end == END_RESET ? "a reset" : "no close");
    /* 1 MiB to a route that does not read it: the 404, then EOF */
    size_t n = 1 << 20;
    char head[256];
    int hl = snprintf(head, sizeof head, "POST /nowhere HTTP/1.1\r\nHost: x\r\n"
                      "Content-Length: %zu\r\n\r\n", n);
    char *big = malloc(hl + n);
    assert_non_null(big);
    memcpy(big, head, hl);
    memset(big + hl, 'b', n);
    size_t len;
    out = exchange(big, hl + n, H_WAIT_MS, &end, &len);
    h_contains(out, "HTTP/1.1 404 Not Found\r\n");
    h_contains(out, "Connection: close\r\n");
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\nno route\n");
    if (end != END_EOF)
        fail_msg("1 MiB to a 404: %s", end == END_RESET ? "a reset" : "no close");
    /* and 1 MiB more than /small takes: 413 at once, then EOF */
    hl = snprintf(head, sizeof head, "POST /small HTTP/1.1\r\nHost: x\r\n"
                  "Content-Length: %zu\r\n\r\n", n);
    memcpy(big, head, hl);
    memset(big + hl, 'b', n);
    out = exchange(big, hl + n, H_WAIT_MS, &end, &len);
    h_contains(out, "HTTP/1.1 413 ");
    if (end != END_EOF)
        fail_msg("1 MiB to a 413: %s", end == END_RESET ? "a reset" : "no close");
    free(big);
}

/* Each of these frames its request in a way that leaves a doubt, or
 * breaks the syntax: its 4xx/5xx and an orderly close. */
static void test_smuggling(void **state)
{
    (void)state;
#define POST "POST /echo HTTP/1.1\r\nHost: x\r\n"
#define CHUNKED POST "Transfer-Encoding: chunked\r\n\r\n"
#define CASE(why, req, want) { why, req, sizeof req - 1, want }
    static const struct { const char *why, *req; size_t n; const char *want; } cases[] = {
        CASE("Transfer-Encoding and Content-Length",
             POST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", "400"),
        CASE("Content-Length and Transfer-Encoding",
             POST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        CASE("two equal Content-Lengths",
             POST "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", "400"),
        CASE("two Content-Lengths", POST "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
             "400"),
        CASE("a list in Content-Length", POST "Content-Length: 3, 3\r\n\r\nabc", "400"),
        CASE("a sign in Content-Length", POST "Content-Length: +3\r\n\r\nabc", "400"),
        CASE("Transfer-Encoding: gzip", POST "Transfer-Encoding: gzip\r\n\r\n", "501"),
        CASE("Transfer-Encoding: gzip, chunked",
             POST "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "501"),
        CASE("Transfer-Encoding: identity", POST "Transfer-Encoding: identity\r\n\r\n", "501"),
        CASE("two Transfer-Encodings", POST "Transfer-Encoding: chunked\r\n"
             "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        CASE("Transfer-Encoding in HTTP/1.0",
             "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        CASE("obs-fold (space)", POST "X-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", "400"),
        CASE("obs-fold (tab)", POST "X-A: a\r\n\tb\r\nContent-Length: 0\r\n\r\n", "400"),
        CASE("a space before the colon", POST "Content-Length : 0\r\n\r\n", "400"),
        CASE("a chunk size zz", CHUNKED "zz\r\nabc\r\n0\r\n\r\n", "400"),
        CASE("a chunk size 0x3", CHUNKED "0x3\r\nabc\r\n0\r\n\r\n", "400"),
        CASE("a chunk size -3", CHUNKED "-3\r\nabc\r\n0\r\n\r\n", "400"),
        CASE("an empty chunk size", CHUNKED "\r\nabc\r\n0\r\n\r\n", "400"),
        CASE("a chunk size then a space", CHUNKED "3 \r\nabc\r\n0\r\n\r\n", "400"),
        CASE("a chunk size that overflows", CHUNKED "10000000000000003\r\nabc\r\n0\r\n\r\n",
             "400"),
        CASE("a chunk without its CRLF", CHUNKED "3\r\nabcX\r\n0\r\n\r\n", "400"),
        CASE("a chunk size with a bare LF", CHUNKED "3\nabc\r\n0\r\n\r\n", "400"),
        CASE("a chunk size line of 2 KiB", CHUNKED "3;" "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "\r\nabc\r\n0\r\n\r\n", "400"),
        CASE("a bad trailer", CHUNKED "0\r\nno colon\r\n\r\n", "400"),
        CASE("a NUL in a header", POST "X-A: a\0b\r\nContent-Length: 0\r\n\r\n", "400"),
        CASE("a bare CR in a header", POST "X-A: a\rb\r\nContent-Length: 0\r\n\r\n", "400"),
        CASE("a bare LF after a header", POST "X-A: ab\n\r\n", "400"),
        CASE("a NUL in the target", "GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        CASE("a request line without a version", "GET /hello\r\nHost: x\r\n\r\n", "400"),
        CASE("two spaces in the request line", "GET  /hello HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        CASE("a bad version", "GET /hello HTTP/1.x\r\nHost: x\r\n\r\n", "400"),
        CASE("HTTP/2.0", "GET /hello HTTP/2.0\r\nHost: x\r\n\r\n", "505"),
        CASE("a bad method", "G(T /hello HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        CASE("a relative target", "GET hello HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        CASE("HTTP/1.1 without Host", "GET /hello HTTP/1.1\r\n\r\n", "400"),
        CASE("two Hosts", "GET /hello HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "400"),
        CASE("a Content-Length over max_body", POST "Content-Length: 1048577\r\n\r\n", "413"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char want[32];
        snprintf(want, sizeof want, "HTTP/1.1 %s ", cases[i].want);
        refused(cases[i].why, cases[i].req, cases[i].n, want);
    }
#undef CASE
#undef CHUNKED
#undef POST
    /* a request line over 8 KiB: 414; a head over 32 KiB: 431 */
    static char big[40000];
    int n = snprintf(big, sizeof big, "GET /");
    memset(big + n, 'a', 9000);
    n += 9000;
    n += snprintf(big + n, sizeof big - n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    refused("a request line of 9 KB", big, (size_t)n, "HTTP/1.1 414 ");
    n = snprintf(big, sizeof big, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 40; i++)
        n += snprintf(big + n, sizeof big - n, "X-%d: %0900d\r\n", i, 0);
    n += snprintf(big + n, sizeof big - n, "\r\n");
    refused("a head of 37 KB", big, (size_t)n, "HTTP/1.1 431 ");
    /* a head just under the limit is fine */
    n = snprintf(big, sizeof big, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (int i = 0; i < 30; i++)
        n += snprintf(big + n, sizeof big - n, "X-%d: %0900d\r\n", i, 0);
    n += snprintf(big + n, sizeof big - n, "\r\n");
    refused("a head of 28 KB", big, (size_t)n, "HTTP/1.1 200 ");
    /* random bytes: an error or a close, never a crash */
    static unsigned char junk[65536];
    for (unsigned seed = 1; seed <= 3; seed++) {
        h_fill_random(junk, sizeof junk, seed);
        enum end end;
        exchange(junk, sizeof junk, 2000, &end, NULL);
    }
    const char *c[] = { "curl", "-s", at("/hello"), NULL };
    char *out = h_client(c, NULL);
    assert_string_equal(out, "hello\n");
    free(out);
}

/* Bodies past the route's or the app's limit: 413, for Content-Length at
 * once, for chunked bodies as they grow. */
static void test_body_limits(void **state)
{
    (void)state;
    enum end end;
    const char *ok = "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                     "Connection: close\r\n\r\n0123456789";
    char *out = exchange(ok, strlen(ok), H_WAIT_MS, &end, NULL);
    h_contains(out, "HTTP/1.1 200 OK\r\n");
    h_contains(out, "\r\n\r\n0123456789");
    const char *over = "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n0123456789a";
    refused("11 bytes to /small", over, strlen(over), "HTTP/1.1 413 ");
    const char *ch = "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "6\r\n012345\r\n6\r\n6789ab\r\n0\r\n\r\n";
    refused("12 chunked bytes to /small", ch, strlen(ch), "HTTP/1.1 413 ");
    /* the app's limit, 1 MiB, for a chunked body too */
    size_t n = 1100000, hl;
    char *big = malloc(n + 200);
    assert_non_null(big);
    hl = (size_t)sprintf(big, "POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                         "\r\n\r\n%zx\r\n", n);
    memset(big + hl, 'c', n);
    memcpy(big + hl + n, "\r\n0\r\n\r\n", 7);
    refused("1.1 MB chunked to /count", big, hl + n + 7, "HTTP/1.1 413 ");
    free(big);
}

/* The head, the body and idleness each have their timeout (here 1, 1
 * and 1.5 s): 408 and a close for the first two, however slowly the
 * bytes trickle in; a quiet close for the last. */
static void test_timeouts(void **state)
{
    (void)state;
    char buf[512] = { 0 };
    /* idle: nothing sent, closed after about 1.5 s, without a word */
    int fd = h_connect(srv.port, false);
    long t0 = mono_ms();
    assert_true(h_wait_closed(fd, 5000));
    long took = mono_ms() - t0;
    print_message("idle connection closed after %ld ms\n", took);
    assert_in_range(took, 1300, 3500);
    close(fd);
    /* a keep-alive connection idle after a request: the same */
    fd = h_connect(srv.port, false);
    const char *get = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    h_send_all(fd, get, strlen(get));
    char head[1024], body[64];
    assert_int_equal(response(fd, head, sizeof head, body, sizeof body, H_WAIT_MS), 200);
    t0 = mono_ms();
    assert_true(h_wait_closed(fd, 5000));
    took = mono_ms() - t0;
    assert_in_range(took, 1300, 3500);
    close(fd);
    /* the head, a byte every 100 ms: 408 after about 1 s */
    fd = h_connect(srv.port, false);
    const char *slow = "GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    t0 = mono_ms();
    size_t got = 0;
    for (int i = 0; slow[i] && !got; i++) {
        h_send_all(fd, slow + i, 1);
        struct pollfd pfd = { fd, POLLIN, 0 };
        if (poll(&pfd, 1, 100) > 0)
            got = h_recv_exact(fd, buf, 12, H_WAIT_MS);
    }
    took = mono_ms() - t0;
    print_message("head trickled a byte every 100 ms: '%.12s' after %ld ms\n", buf, took);
    assert_memory_equal(buf, "HTTP/1.1 408", 12);
    assert_in_range(took, 900, 3000);
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    /* the body, a byte every 100 ms: 408 after about 1 s */
    fd = h_connect(srv.port, false);
    const char *bh = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    h_send_all(fd, bh, strlen(bh));
    t0 = mono_ms();
    int status = 0;
    for (int i = 0; i < 40 && !status; i++) {
        h_send_all(fd, "b", 1);
        struct pollfd pfd = { fd, POLLIN, 0 };
        if (poll(&pfd, 1, 100) > 0)
            status = response(fd, head, sizeof head, body, sizeof body, H_WAIT_MS);
    }
    took = mono_ms() - t0;
    print_message("body trickled a byte every 100 ms: %d after %ld ms\n", status, took);
    assert_int_equal(status, 408);
    assert_in_range(took, 900, 3000);
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    /* a body that comes in time, in two parts */
    fd = h_connect(srv.port, false);
    const char *part = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc";
    h_send_all(fd, part, strlen(part));
    h_sleep_ms(300);
    h_send_all(fd, "def", 3);
    assert_int_equal(response(fd, head, sizeof head, body, sizeof body, H_WAIT_MS), 200);
    assert_string_equal(body, "abcdef");
    close(fd);
}

/* GET a path under /files/ (or /follow/) on a raw connection: its status
 * and body. */
static int get_file(const char *path, const char *extra, char **body)
{
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n",
                     path, extra ? extra : "");
    enum end end;
    char *out = exchange(req, (size_t)n, H_WAIT_MS, &end, NULL);
    int status = 0;
    sscanf(out, "HTTP/1.1 %d ", &status);
    if (body)
        *body = out;
    return status;
}

static void test_traversal(void **state)
{
    (void)state;
    struct { const char *path; int want; } cases[] = {
        { "/files/sub/t.txt", 200 },
        { "/files/./sub//t.txt", 200 },
        { "/files/good", 200 },                        /* a symlink within */
        { "/files/../outside/secret.txt", 403 },
        { "/files/sub/../../outside/secret.txt", 403 },
        { "/files/%2e%2e/outside/secret.txt", 403 },
        { "/files/%2E%2E/outside/secret.txt", 403 },
        { "/files/.%2e/outside/secret.txt", 403 },
        { "/files/..%2foutside%2fsecret.txt", 404 },
        { "/files/sub%2ft.txt", 404 },
        { "/files/sub/t.txt%00", 404 },
        { "/files/sub/t.txt%00.html", 404 },
        { "/files/evil", 403 },                        /* a symlink out */
        { "/files/abs", 403 },                         /* an absolute one */
        { "/files/nothing.txt", 404 },
        { "/files/sub/t.txt/x", 404 },
        { "/follow/evil", 200 },                       /* follow_symlinks */
        { "/follow/../outside/secret.txt", 403 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body;
        int st = get_file(cases[i].path, NULL, &body);
        if (st != cases[i].want)
            fail_msg("%s: %d, wanted %d:\n%.300s", cases[i].path, st, cases[i].want, body);
        if (strncmp(cases[i].path, "/follow/", 8))
            lacks(body, "secret\n");
    }
    char *body;
    get_file("/follow/evil", NULL, &body);
    h_contains(body, "\r\n\r\nsecret\n");
}

static void test_static(void **state)
{
    (void)state;
    char *out;
    /* index, type, length, validators */
    assert_int_equal(get_file("/files/", NULL, &out), 200);
    h_contains(out, "Content-Type: text/html; charset=utf-8\r\n");
    h_contains(out, "\r\n\r\n<h1>home</h1>\n");
    assert_int_equal(get_file("/files/docs/", NULL, &out), 200);
    h_contains(out, "<p>docs</p>");
    assert_int_equal(get_file("/files/docs?x=1", NULL, &out), 301);
    h_contains(out, "Location: /files/docs/?x=1\r\n");
    assert_int_equal(get_file("/files/sub/", NULL, &out), 403);   /* no index */
    assert_int_equal(get_file("/files/style.css", NULL, &out), 200);
    h_contains(out, "Content-Type: text/css; charset=utf-8\r\n");
    assert_int_equal(get_file("/files/sub/t.txt", NULL, &out), 200);
    h_contains(out, "Content-Length: 16\r\n");
    h_contains(out, "Accept-Ranges: bytes\r\n");
    h_contains(out, "\r\n\r\n" T_TXT);
    char etag[64] = "", lastmod[64] = "";
    char *e = strstr(out, "ETag: "), *l = strstr(out, "Last-Modified: ");
    assert_non_null(e);
    assert_non_null(l);
    sscanf(e + 6, "%63[^\r]", etag);
    sscanf(l + 15, "%63[^\r]", lastmod);
    /* conditional requests */
    char h[256];
    snprintf(h, sizeof h, "If-None-Match: \"x\", %s\r\n", etag);
    assert_int_equal(get_file("/files/sub/t.txt", h, &out), 304);
    lacks(out, T_TXT);
    h_contains(out, etag);
    snprintf(h, sizeof h, "If-None-Match: W/%s\r\n", etag);
    assert_int_equal(get_file("/files/sub/t.txt", h, &out), 304);
    assert_int_equal(get_file("/files/sub/t.txt", "If-None-Match: \"other\"\r\n", &out), 200);
    snprintf(h, sizeof h, "If-Modified-Since: %s\r\n", lastmod);
    assert_int_equal(get_file("/files/sub/t.txt", h, &out), 304);
    assert_int_equal(get_file("/files/sub/t.txt",
                              "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n", &out), 200);
    /* ranges */
    assert_int_equal(get_file("/files/sub/t.txt", "Range: bytes=2-5\r\n", &out), 206);
    h_contains(out, "Content-Range: bytes 2-5/16\r\n");
    h_contains(out, "Content-Length: 4\r\n");
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\n2345");
    assert_int_equal(get_file("/files/sub/t.txt", "Range: bytes=-3\r\n", &out), 206);
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\ndef");
    assert_int_equal(get_file("/files/sub/t.txt", "Range: bytes=10-\r\n", &out), 206);
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\nabcdef");
    assert_int_equal(get_file("/files/sub/t.txt", "Range: bytes=14-100\r\n", &out), 206);
    h_contains(out, "Content-Range: bytes 14-15/16\r\n");
    assert_int_equal(get_file("/files/sub/t.txt", "Range: bytes=16-\r\n", &out), 416);
    h_contains(out, "Content-Range: bytes */16\r\n");
    assert_int_equal(get_file("/files/sub/t.txt", "Range: bytes=0-1,4-5\r\n", &out), 200);
    assert_int_equal(get_file("/files/sub/t.txt", "Range: bytes=1-2\r\nIf-Range: \"old\"\r\n",
                              &out), 200);
    snprintf(h, sizeof h, "Range: bytes=1-2\r\nIf-Range: %s\r\n", etag);
    assert_int_equal(get_file("/files/sub/t.txt", h, &out), 206);
    /* HEAD, curl's ranges, res:send_file */
    const char *c1[] = { "curl", "-s", "-I", at("/files/sub/t.txt"), NULL };
    out = h_client(c1, NULL);
    h_contains(out, "Content-Length: 16\r\n");
    free(out);
    const char *c2[] = { "curl", "-s", "-r", "0-3", at("/files/sub/t.txt"), NULL };
    out = h_client(c2, NULL);
    assert_string_equal(out, "0123");
    free(out);
    const char *c3[] = { "curl", "-s", at("/sendfile"), NULL };
    out = h_client(c3, NULL);
    assert_string_equal(out, T_TXT);
    free(out);
    /* a big file, whole, in ranges and by HEAD, on one connection */
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    const char *py =
        "import http.client, sys\n"
        "c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=10)\n"
        "want = bytes((i * 7) % 251 for i in range(3 << 20))\n"
        "c.request('GET', '/files/big.bin')\n"
        "r = c.getresponse()\n"
        "assert r.status == 200 and r.read() == want\n"
        "for a, b in ((0, 0), (1000000, 2999999), (3145000, 3145727)):\n"
        "    c.request('GET', '/files/big.bin', headers={'Range': 'bytes=%d-%d' % (a, b)})\n"
        "    r = c.getresponse()\n"
        "    assert r.status == 206 and r.read() == want[a:b + 1], (a, b)\n"
        "c.request('HEAD', '/files/big.bin')\n"
        "r = c.getresponse()\n"
        "print(r.status, r.getheader('Content-Length'), r.read())\n";
    const char *argv[] = { "python3", "-c", py, port, NULL };
    out = h_client(argv, NULL);
    assert_string_equal(out, "200 3145728 b''\n");
    free(out);
    const char *c4[] = { "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                         at("/files/sub/t.txt"), NULL };
    out = h_client(c4, NULL);
    assert_string_equal(out, "404");   /* a GET route: no POST there */
    free(out);
}

/* How many of the server's fds are files under root/cache. */
static int cache_fds(void)
{
    char dir[64], p[600], link[600], want[300];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)srv.pid);
    snprintf(want, sizeof want, "%s/cache/", root);
    int n = 0;
    for (int fd = 0; fd < 4096; fd++) {
        snprintf(p, sizeof p, "%s/%d", dir, fd);
        ssize_t len = readlink(p, link, sizeof link - 1);
        if (len <= 0)
            continue;
        link[len] = 0;
        if (!strncmp(link, want, strlen(want)))
            n++;
    }
    return n;
}

/* Wait (up to a second) for cache_fds() to be want; returns it. */
static int cache_fds_become(int want)
{
    int n = cache_fds();
    for (int i = 0; i < 100 && n != want; i++) {
        usleep(10000);
        n = cache_fds();
    }
    return n;
}

/* Replace root/cache/name by a new file (a new inode, as deploys do). */
static void replace_file(const char *name, const char *text)
{
    char dir[300], tmp[600], dst[600];
    snprintf(dir, sizeof dir, "%s/cache", root);
    put_file(dir, "new.tmp", text);
    snprintf(tmp, sizeof tmp, "%s/new.tmp", dir);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    assert_int_equal(rename(tmp, dst), 0);
}

/* /cached/ keeps at most two files open for a second, /nocache/ none. */
static void test_static_cache(void **state)
{
    (void)state;
    char dir[300], *out;
    snprintf(dir, sizeof dir, "%s/cache", root);
    assert_int_equal(mkdir(dir, 0755), 0);
    put_file(dir, "a.txt", "one\n");
    put_file(dir, "b.txt", "bee\n");
    put_file(dir, "c.txt", "sea\n");
    assert_int_equal(cache_fds(), 0);
    long t0 = mono_ms();
    assert_int_equal(get_file("/cached/a.txt", NULL, &out), 200);
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\none\n");
    char etag[64] = "";
    char *e = strstr(out, "ETag: ");
    assert_non_null(e);
    sscanf(e + 6, "%63[^\r]", etag);
    assert_int_equal(cache_fds_become(1), 1);   /* held after the response */
    /* replaced: the cache still serves the old file, its validators
     * and ranges; without the cache the new one at once */
    replace_file("a.txt", "two!!\n");
    assert_int_equal(get_file("/cached/a.txt", NULL, &out), 200);
    long t1 = mono_ms();
    if (t1 - t0 < 900) {   /* else too slow a machine to see it */
        assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\none\n");
        h_contains(out, etag);
        char h[128];
        snprintf(h, sizeof h, "If-None-Match: %s\r\n", etag);
        assert_int_equal(get_file("/cached/a.txt", h, &out), 304);
        assert_int_equal(get_file("/cached/a.txt", "Range: bytes=1-2\r\n", &out), 206);
        h_contains(out, "Content-Range: bytes 1-2/4\r\n");
        assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\nne");
    } else {
        print_message("a request took %ld ms: the stale check skipped\n", t1 - t0);
    }
    assert_int_equal(get_file("/nocache/a.txt", NULL, &out), 200);
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\ntwo!!\n");
    /* valid passed: fresh, with a new ETag */
    usleep(1100000);
    assert_int_equal(get_file("/cached/a.txt", NULL, &out), 200);
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\ntwo!!\n");
    h_contains(out, "Content-Length: 6\r\n");
    lacks(out, etag);
    assert_int_equal(get_file("/cached/a.txt", "Range: bytes=-2\r\n", &out), 206);
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\n!\n");
    assert_int_equal(cache_fds_become(1), 1);   /* the old one closed */
    /* max 2: a third file closes the least recently used */
    assert_int_equal(get_file("/cached/b.txt", NULL, &out), 200);
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\nbee\n");
    assert_int_equal(cache_fds_become(2), 2);
    assert_int_equal(get_file("/cached/c.txt", NULL, &out), 200);
    assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\nsea\n");
    assert_int_equal(cache_fds_become(2), 2);
    assert_int_equal(get_file("/cached/nothing.txt", NULL, &out), 404);
    assert_int_equal(cache_fds_become(2), 2);   /* a 404 is not cached */
    assert_int_equal(get_file("/cached/", NULL, &out), 403);   /* no index */
    assert_int_equal(cache_fds_become(1), 1);   /* a directory is an entry */
    /* a file evicted while a slow client still reads it: the send goes
     * on to its end (the file closes after it) */
    char src[600], dst[600];
    snprintf(src, sizeof src, "%s/big.bin", root);
    snprintf(dst, sizeof dst, "%s/big.bin", dir);
    assert_int_equal(link(src, dst), 0);
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    const char *py =
        "import socket, sys, time, http.client\n"
        "port = int(sys.argv[1])\n"
        "want = bytes((i * 7) % 251 for i in range(3 << 20))\n"
        "s = socket.socket()\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)\n"
        "s.settimeout(10)\n"
        "s.connect(('127.0.0.1', port))\n"
        "s.sendall(b'GET /cached/big.bin HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "got = s.recv(1000)\n"
        "for p in ('a', 'b', 'c', 'a', 'b'):\n"
        "    c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)\n"
        "    c.request('GET', '/cached/%s.txt' % p)\n"
        "    assert c.getresponse().status == 200\n"
        "    c.close()\n"
        "while True:\n"
        "    b = s.recv(65536)\n"
        "    if not b: break\n"
        "    got += b\n"
        "body = got[got.index(b'\\r\\n\\r\\n') + 4:]\n"
        "print(len(body), body == want)\n";
    const char *argv[] = { "python3", "-c", py, port, NULL };
    out = h_client(argv, NULL);
    assert_string_equal(out, "3145728 True\n");
    free(out);
    assert_int_equal(cache_fds_become(2), 2);
    /* cut short in place while cached (a body read with the head, and
     * one with send_file): the response falls short of its length, so
     * it ends with the connection rather than leave the client waiting */
    static char text[20001];
    memset(text, 'x', sizeof text - 1);
    text[100] = 0;
    put_file(dir, "s.txt", text);
    text[100] = 'x';
    put_file(dir, "l.txt", text);
    const char *names[] = { "s.txt", "l.txt" };
    const char *lens[] = { "Content-Length: 100\n", "Content-Length: 20000\n" };
    for (int i = 0; i < 2; i++) {
        char req[128];
        snprintf(req, sizeof req, "/cached/%s", names[i]);
        t0 = mono_ms();
        assert_int_equal(get_file(req, NULL, &out), 200);
        put_file(dir, names[i], "short\n");   /* truncated, rewritten */
        /* a keep-alive request, the socket left open for writing: the
         * server must end it (python prints "eof"), not wait */
        const char *ka =
            "import socket, sys, time\n"
            "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3)\n"
            "s.sendall(b'GET /cached/%s HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' % sys.argv[2].encode())\n"
            "got = b''\n"
            "try:\n"
            "    while True:\n"
            "        b = s.recv(65536)\n"
            "        if not b: break\n"
            "        got += b\n"
            "    end = 'eof'\n"
            "except socket.timeout:\n"
            "    end = 'waiting'\n"
            "except ConnectionResetError:\n"
            "    end = 'eof'\n"
            "print(got.decode().replace('\\r', ''), end)\n";
        long sent_at = mono_ms();   /* the request within valid? */
        const char *kav[] = { "python3", "-c", ka, port, names[i], NULL };
        out = h_client(kav, NULL);
        if (sent_at - t0 > 900) {
            print_message("%s: too slow to see the cached stat\n", names[i]);
            free(out);
            continue;
        }
        h_contains(out, lens[i]);
        h_contains(out, "\n\nshort\n eof\n");
        free(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_method_not_allowed),
        cmocka_unit_test(test_query_and_headers),
        cmocka_unit_test(test_date),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_continue),
        cmocka_unit_test(test_pipelining_keepalive),
        cmocka_unit_test(test_wrk),
        cmocka_unit_test(test_lingering_close),
        cmocka_unit_test(test_smuggling),
        cmocka_unit_test(test_body_limits),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_traversal),
        cmocka_unit_test(test_static),
        cmocka_unit_test(test_static_cache),
    };
    return cmocka_run_group_tests_name("http_lib", tests, setup, teardown);
}
