/* test_reload.c - hot reload: no connection dropped, no byte lost, every
 * way of saving, failures that change nothing, state that survives. */
#include "harness.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
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

static const char echo_lua[] =
    "return { on_data = function(conn, data) conn:send(data) end }\n";
static const char upper_lua[] =
    "return { on_data = function(conn, data) conn:send(data:upper()) end }\n";

/* A script answering every message with a fixed word. */
static char *answer(const char *word)
{
    static char buf[256];
    snprintf(buf, sizeof buf,
             "return { on_data = function(conn) conn:send('%s\\n') end }\n", word);
    return buf;
}

/* Send msg and read the one-line reply into buf (without the newline). */
static void ask(int fd, const char *msg, char *buf, size_t len)
{
    size_t n = 0;
    h_send_all(fd, msg, strlen(msg));
    while (n + 1 < len) {
        assert_int_equal(h_recv_exact(fd, buf + n, 1, H_WAIT_MS), 1);
        if (buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = 0;
}

static bool reply_is(int fd, const char *msg, const char *want)
{
    char buf[256];
    ask(fd, msg, buf, sizeof buf);
    if (strcmp(buf, want))
        fprintf(stderr, "reply '%s', expected '%s'\n", buf, want);
    return strcmp(buf, want) == 0;
}

/* Ask until the reply starts with want (a reload is asynchronous);
 * returns the number that follows want in that reply, if any. */
static int await_reply(int fd, const char *msg, const char *want, int ms)
{
    char buf[256];
    for (int t = 0; t < ms; t += 10) {
        ask(fd, msg, buf, sizeof buf);
        if (strncmp(buf, want, strlen(want)) == 0)
            return atoi(buf + strlen(want));
        h_sleep_ms(10);
    }
    fail_msg("no reply '%s' after %d ms", want, ms);
    return -1;
}

/* --- 100 connections stream while echo becomes upper-case echo --- */

enum { NC = 100, WINDOW = 2048, CHUNK = 97 };

struct stream {
    int fd;
    uint64_t sent, got;
    bool upper;          /* has seen its first upper-cased reply */
};

static char byte_at(int c, uint64_t i)
{
    return (char)('a' + (i + (uint64_t)c * 7) % 26);
}

/* Check the bytes just received: each is the byte sent at that offset, or
 * its upper case, and once upper case, never back. */
static void check_bytes(struct stream *st, int c, const char *p, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        char want = byte_at(c, st->got + k);
        if (p[k] == want && !st->upper)
            continue;
        if (p[k] == toupper((unsigned char)want)) {
            st->upper = true;
            continue;
        }
        fail_msg("connection %d: byte %llu is '%c', sent '%c' (upper %d)", c,
                 (unsigned long long)(st->got + k), p[k], want, st->upper);
    }
    st->got += n;
}

static void pump(struct stream *st, int c, short revents)
{
    char buf[8192];
    if (revents & POLLOUT && st->sent - st->got < WINDOW) {
        for (int k = 0; k < CHUNK; k++)
            buf[k] = byte_at(c, st->sent + (uint64_t)k);
        ssize_t w = send(st->fd, buf, CHUNK, MSG_DONTWAIT | MSG_NOSIGNAL);
        assert_true(w > 0 || errno == EAGAIN);
        if (w > 0)
            st->sent += (uint64_t)w;
    }
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t r = recv(st->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN))
            fail_msg("connection %d dropped", c);
        if (r > 0)
            check_bytes(st, c, buf, (size_t)r);
    }
}

static long ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void test_stream_through_reload(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, echo_lua, NULL, NULL);
    static struct stream st[NC];
    struct pollfd pfd[NC];
    for (int c = 0; c < NC; c++) {
        st[c] = (struct stream){ .fd = h_connect(s.port, false) };
        pfd[c] = (struct pollfd){ st[c].fd, POLLIN | POLLOUT, 0 };
    }
    long start = ms_now(), saved = 0, drain_from = 0;
    for (;;) {
        long now = ms_now();
        if (!saved && now - start > 400) {
            h_save(path, upper_lua, "rename");
            saved = now;
        }
        if (saved && !drain_from && now - saved > 600)
            drain_from = now;  /* stop sending, collect what is owed */
        bool owed = false;
        for (int c = 0; c < NC; c++) {
            pfd[c].events = POLLIN | (drain_from ? 0 : POLLOUT);
            owed |= st[c].got < st[c].sent;
        }
        if (drain_from && !owed)
            break;
        assert_true(now - start < 4 * H_WAIT_MS);
        int n = poll(pfd, NC, 100);
        assert_true(n >= 0);
        for (int c = 0; n > 0 && c < NC; c++)
            if (pfd[c].revents)
                pump(&st[c], c, pfd[c].revents);
    }
    for (int c = 0; c < NC; c++) {
        assert_true(st[c].sent > 0);
        assert_int_equal(st[c].got, st[c].sent);  /* every byte, once */
        assert_true(reply_is(st[c].fd, "abc\n", "ABC")); /* new code for all */
        close(st[c].fd);
    }
    assert_int_equal(h_log_count(&s, "reloaded"), 1);
    assert_true(h_log_wait(&s, "100 connection(s) carried over", 0));
    h_finish(&s, path);
}

/* --- each way editors save reloads exactly once --- */

static void test_save_styles(void **state)
{
    (void)state;
    static const char *const how[] = { "inplace", "rename", "recreate" };
    struct h_server s;
    char *path = h_serve(&s, answer("v0"), NULL, NULL);
    int fd = h_connect(s.port, false);
    assert_true(reply_is(fd, "?", "v0"));
    for (int i = 0; i < 3; i++) {
        char word[8];
        snprintf(word, sizeof word, "v%d", i + 1);
        h_save(path, answer(word), how[i]);
        await_reply(fd, "?", word, H_WAIT_MS);
        h_sleep_ms(300); /* longer than the settling time: no second reload */
        if (h_log_count(&s, "reloaded") != i + 1)
            fprintf(stderr, "after a save by %s:\n%s\n", how[i], s.log);
        assert_int_equal(h_log_count(&s, "reloaded"), i + 1);
    }
    close(fd);
    int st = h_stop(&s, SIGTERM);
    if (st)
        fprintf(stderr, "exit %d; log:\n%s\n", st, s.log);
    assert_int_equal(st, 0);
    free(s.log);
    free(path);
}

/* --- a broken script changes nothing; a fix takes over --- */

static void test_broken_then_fixed(void **state)
{
    (void)state;
    static const struct { const char *text, *log; } broken[] = {
        { "return {\n  on_data = function(c, d) c:send(d end,\n}\n", ":2:" },
        { "local t\nreturn t.x\n", ":2:" },
        { "return 'hello'\n", "must return a table" },
        { "return { on_open = function() end }\n", "no on_data" },
    };
    struct h_server s;
    char *path = h_serve(&s, answer("good"), NULL, NULL);
    int fd = h_connect(s.port, false);
    for (int i = 0; i < 4; i++) {
        h_save(path, broken[i].text, "rename");
        char want[64];
        snprintf(want, sizeof want, "reload failed");
        for (int t = 0; t < H_WAIT_MS && h_log_count(&s, want) < i + 1; t += 10)
            h_sleep_ms(10);
        assert_int_equal(h_log_count(&s, want), i + 1);
        assert_true(h_log_wait(&s, broken[i].log, 0));
        assert_true(reply_is(fd, "?", "good"));   /* the old code runs on */
    }
    h_save(path, answer("fixed"), "rename");
    await_reply(fd, "?", "fixed", H_WAIT_MS);
    assert_int_equal(h_log_count(&s, "reloaded"), 1);
    close(fd);
    h_finish(&s, path);
}

/* --- keep() and connection fields survive; on_reload runs --- */

static const char state_v1[] =
    "local mr = require 'moonring'\n"
    "local st = mr.keep('st', { n = 0 })\n"
    "return {\n"
    "  on_open = function(conn) conn.name = 'c' .. conn.id end,\n"
    "  on_data = function(conn) st.n = st.n + 1; conn:send('v1 ', st.n, '\\n') end,\n"
    "}\n";
static const char state_v2[] =
    "local mr = require 'moonring'\n"
    "local st = mr.keep('st', { n = 100 })\n"
    "local reloaded = 'no'\n"
    "return {\n"
    "  on_data = function(conn)\n"
    "    st.n = st.n + 1\n"
    "    conn:send('v2 ', st.n, ' ', conn.name, ' ', reloaded, '\\n')\n"
    "  end,\n"
    "  on_reload = function(old) reloaded = type(old.on_data) end,\n"
    "}\n";

static void test_state_survives(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, state_v1, NULL, NULL);
    int fd = h_connect(s.port, false);
    assert_true(reply_is(fd, "?", "v1 1"));
    assert_true(reply_is(fd, "?", "v1 2"));
    h_save(path, state_v2, "inplace");
    /* the counter goes on from 2 (keep ignored v2's default), and the
     * field v1 set on the connection is still there */
    int n = await_reply(fd, "?", "v2 ", H_WAIT_MS);
    assert_true(n >= 3 && n < 100);
    char want[64];
    snprintf(want, sizeof want, "v2 %d c1 function", n + 1);
    assert_true(reply_is(fd, "?", want));
    close(fd);
    h_finish(&s, path);
}

/* --- SIGHUP reloads, also with --no-reload --- */

static void test_sighup(void **state)
{
    static const char *const no_reload[] = { "--no-reload", NULL };
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, answer("one"), no_reload, NULL);
    int fd = h_connect(s.port, false);
    assert_true(reply_is(fd, "?", "one"));
    h_save(path, answer("two"), "rename");
    h_sleep_ms(300);
    assert_true(reply_is(fd, "?", "one"));   /* not watched */
    kill(s.pid, SIGHUP);
    await_reply(fd, "?", "two", H_WAIT_MS);
    assert_int_equal(h_log_count(&s, "reloaded"), 1);
    close(fd);
    h_finish(&s, path);
}

/* --- a changed module is re-required; an unchanged one keeps its state --- */

static void test_module_change(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_write_file(NULL, "app.lua",
        "local fmt = require 'fmt'\n"
        "local count = require 'count'\n"
        "return { on_data = function(conn) conn:send(fmt(count()), '\\n') end }\n");
    char *dir = h_dirname(path);
    char *fmt = h_write_file(dir, "fmt.lua",
        "return function(n) return 'a' .. n end\n");
    free(h_write_file(dir, "count.lua",
        "local n = 0\nreturn function() n = n + 1; return n end\n"));
    const char *argv[] = { path, NULL };
    h_start(&s, argv);
    int fd = h_connect(s.port, false);
    assert_true(reply_is(fd, "?", "a1"));
    assert_true(reply_is(fd, "?", "a2"));
    h_save(fmt, "return function(n) return 'b' .. n end\n", "rename");
    /* fmt.lua changed; count.lua did not, and keeps counting */
    int n = await_reply(fd, "?", "b", H_WAIT_MS);
    assert_true(n >= 3);
    char want[32];
    snprintf(want, sizeof want, "b%d", n + 1);
    assert_true(reply_is(fd, "?", want));
    assert_true(h_log_wait(&s, "fmt.lua", 0));
    close(fd);
    h_finish(&s, path);
    free(dir);
    free(fmt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_through_reload),
        cmocka_unit_test(test_save_styles),
        cmocka_unit_test(test_broken_then_fixed),
        cmocka_unit_test(test_state_survives),
        cmocka_unit_test(test_sighup),
        cmocka_unit_test(test_module_change),
    };
    return cmocka_run_group_tests_name("reload", tests, NULL, NULL);
}
