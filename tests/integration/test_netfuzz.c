/* test_netfuzz.c - random and mutated input, for a bounded time, to the
 * echo, HTTP, Redis and chat servers: no crash, no hang, memory bounded,
 * and a well-behaved client is still served correctly afterwards. */
#include "harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#define FUZZ_MS 1000   /* per round; two rounds */

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* A mutated copy of seed into out: flips, insertions, deletions,
 * repetitions and truncation. Returns the length. */
static size_t mutate(const char *seed, char *out, size_t cap)
{
    size_t n = strlen(seed);
    if (rnd() % 8 == 0) {                   /* plain garbage */
        n = rnd() % cap;
        for (size_t i = 0; i < n; i++)
            out[i] = (char)rnd();
        return n;
    }
    memcpy(out, seed, n);
    for (int k = rnd() % 6; k > 0; k--) {
        size_t at = n ? rnd() % n : 0;
        switch (rnd() % 5) {
        case 0: if (n) out[at] ^= (char)(1 << (rnd() % 8)); break;
        case 1: if (n + 1 < cap) { memmove(out + at + 1, out + at, n - at); out[at] = (char)rnd(); n++; } break;
        case 2: if (n) { memmove(out + at, out + at + 1, n - at - 1); n--; } break;
        case 3: { size_t len = rnd() % 64; while (len-- && n + 1 < cap) out[n++] = out[at]; } break;
        case 4: n = at; break;
        }
    }
    return n;
}

static long ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Hammer the server with mutants of the seeds for FUZZ_MS, over a few
 * connections at a time, sent in random pieces, reading what comes
 * back, sometimes resetting. */
static bool sanitized(void)
{
    /* a sanitizer build is ten times slower: a shorter round keeps the
     * load within what it can serve, so that the test is about crashes
     * and hangs, not about a backlog */
    const char *bin = getenv("MOONRING_BIN");
    return bin && strstr(bin, "-san");
}

static void hammer(struct h_server *s, const char *const *seeds, int nseeds)
{
    const int round_ms = sanitized() ? 200 : FUZZ_MS;
    enum { NC = 8 };
    int fds[NC] = { 0 };
    static char buf[16384];
    long end = ms_now() + round_ms, execs = 0;
    for (int i = 0; i < NC; i++)
        fds[i] = -1;
    while (ms_now() < end) {
        int i = (int)(rnd() % NC);
        if (fds[i] < 0) {
            fds[i] = h_connect(s->port, false);
            fcntl(fds[i], F_SETFL, O_NONBLOCK);
        }
        size_t n = mutate(seeds[rnd() % nseeds], buf, sizeof buf);
        for (size_t off = 0; off < n;) {
            size_t piece = 1 + rnd() % (n - off);
            ssize_t w = send(fds[i], buf + off, piece, MSG_NOSIGNAL);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        execs++;
        char sink[65536];
        for (int j = 0; j < NC; j++)
            if (fds[j] >= 0 && recv(fds[j], sink, sizeof sink, 0) == 0) {
                close(fds[j]);          /* the server closed it */
                fds[j] = -1;
            }
        if (rnd() % 16 == 0 && fds[i] >= 0) {
            if (rnd() % 2) {
                struct linger lg = { 1, 0 };
                setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            }
            close(fds[i]);
            fds[i] = -1;
        }
    }
    for (int i = 0; i < NC; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    fprintf(stderr, "    %ld inputs in %d ms\n", execs, round_ms);
}

static void fuzz(const char *script, const char *const *seeds, int nseeds,
                 const char *probe, const char *want)
{
    struct h_server s;
    /* a small high-water mark and buffer pool: what memory may grow by is
     * then small, and growth beyond it stands out */
    const char *argv[] = { "--high-water", "65536", "--buffers", "256",
                           "--shutdown-timeout", "2", script, NULL };
    h_start(&s, argv);
    /* Memory must level off: the first round warms up (buffers, the JIT,
     * allocator caches, a sanitizer's quarantine), the second may not grow
     * much further. Unbounded growth grows in every round. */
    hammer(&s, seeds, nseeds);
    long rss1 = h_rss_kib(s.pid);
    hammer(&s, seeds, nseeds);
    long grown = h_rss_kib(s.pid) - rss1;
    /* A sanitizer's allocator (redzones, quarantine, slow frees) makes
     * RSS say little about the server's own memory: check it on the
     * plain build only. */
    if (!sanitized() && grown > 32 * 1024) {
        h_log_wait(&s, NULL, 100);
        size_t len = strlen(s.log);
        fail_msg("RSS grew by %ld KiB; the server's log ends:\n%s", grown,
                 s.log + (len > 3000 ? len - 3000 : 0));
    }
    int fd = h_connect(s.port, false);
    h_send_all(fd, probe, strlen(probe));
    char out[256] = { 0 };
    size_t n = strlen(want);
    if (h_recv_exact(fd, out, n, H_WAIT_MS) != n) {
        kill(s.pid, SIGUSR1);
        h_log_wait(&s, "stats:", 2000);
        size_t len = strlen(s.log);
        fail_msg("no answer after fuzzing; the server's log ends:\n%s",
                 s.log + (len > 3000 ? len - 3000 : 0));
    }
    assert_memory_equal(out, want, n);
    close(fd);
    h_finish(&s, NULL);   /* exit status 0: no crash on the way */
}

static void test_fuzz_echo(void **state)
{
    (void)state;
    static const char *const seeds[] = { "hello\n", "x", "" };
    fuzz(NULL, seeds, 3, "still there", "still there");
}

static void test_fuzz_http(void **state)
{
    (void)state;
    static const char *const seeds[] = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n0\r\n\r\n",
        "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    };
    fuzz("examples/http.lua", seeds, 4, "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
         "HTTP/1.1 200 OK\r\n");
}

static void test_fuzz_redis(void **state)
{
    (void)state;
    static const char *const seeds[] = {
        "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n",
        "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
        "*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nPX\r\n$3\r\n100\r\n",
        "PING\r\nINCR n\r\n",
        "*2\r\n$4\r\nKEYS\r\n$3\r\n*[a\r\n",
    };
    fuzz("examples/redis.lua", seeds, 5, "PING\r\n", "+PONG\r\n");
}

static void test_fuzz_chat(void **state)
{
    (void)state;
    static const char *const seeds[] = { "alice\nhello everyone\n", "bob\r\n\r\n\n", "x\n" };
    fuzz("examples/chat.lua", seeds, 3, "", "welcome! your nickname?\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fuzz_echo),
        cmocka_unit_test(test_fuzz_http),
        cmocka_unit_test(test_fuzz_redis),
        cmocka_unit_test(test_fuzz_chat),
    };
    return cmocka_run_group_tests_name("netfuzz", tests, NULL, NULL);
}
