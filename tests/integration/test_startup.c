/* test_startup.c - start-up errors, -t, -h, -V, and signals. Each error
 * must be one clear line on stderr and a non-zero exit, never a hang. */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Run argv; expect a failure with one line containing each needle. */
static void expect_error(const char *const *argv, const char *n1, const char *n2)
{
    char *err;
    int st = h_run(argv, &err);
    if (st == 0 || st >= 128 || !strstr(err, n1) || (n2 && !strstr(err, n2)))
        fprintf(stderr, "status %d, stderr: %s\n", st, err);
    assert_true(st > 0 && st < 128);
    assert_non_null(strstr(err, n1));
    if (n2)
        assert_non_null(strstr(err, n2));
    /* one line for the error (a bad option adds a hint line) */
    assert_true(lines(err) >= 1 && lines(err) <= 2);
    free(err);
}

static void contains_ok(const char *out)
{
    assert_non_null(strstr(out, ": ok"));
}

static char *script(const char *text)
{
    return h_write_file(NULL, "s.lua", text);
}

static void test_missing_script(void **state)
{
    (void)state;
    const char *argv[] = { "/nonexistent/app.lua", NULL };
    expect_error(argv, "/nonexistent/app.lua", "No such file");
}

static void test_syntax_error(void **state)
{
    (void)state;
    char *p = script("local x = 1\nreturn {\n  on_data = function(c, d) c:send(d end,\n}\n");
    const char *argv[] = { p, NULL };
    char want[600];
    snprintf(want, sizeof want, "%s:3:", p);
    expect_error(argv, want, NULL);
    free(p);
}

static void test_runtime_error(void **state)
{
    (void)state;
    char *p = script("local t = nil\nreturn t.x\n");
    const char *argv[] = { p, NULL };
    char want[600];
    snprintf(want, sizeof want, "%s:2:", p);
    expect_error(argv, want, "nil");
    free(p);
}

static void test_not_a_table(void **state)
{
    (void)state;
    char *p = script("return 42\n");
    const char *argv[] = { p, NULL };
    expect_error(argv, "must return a table", "number");
    free(p);
}

static void test_no_on_data(void **state)
{
    (void)state;
    char *p = script("return { on_open = function() end }\n");
    const char *argv[] = { p, NULL };
    expect_error(argv, "no on_data", NULL);
    free(p);
}

/* Top-level code that never ends, in the start-up check: given up on
 * after --handler-timeout with one line, not a hang (also with -t). */
static void test_loop_at_start(void **state)
{
    (void)state;
    char *p = script("while true do end\n");
    const char *argv[] = { "--handler-timeout", "1", p, NULL };
    expect_error(argv, "top-level code", "--handler-timeout");
    const char *check[] = { "-t", "--handler-timeout", "1", p, NULL };
    expect_error(check, "top-level code", NULL);
    free(p);
}

static void test_port_in_use(void **state)
{
    (void)state;
    int p, fd = h_listen(1, &p);
    char port[16];
    snprintf(port, sizeof port, "%d", p);
    const char *argv[] = { "-p", port, NULL };
    expect_error(argv, "Address already in use", port);
    close(fd);
}

/* Stop and start again on the same port, at once, as a restart does:
 * the old process must have let go of the listening socket when it
 * exits (its multishot accept held it open a moment longer). */
static void test_restart_same_port(void **state)
{
    (void)state;
    struct h_server s;
    h_start(&s, NULL);
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    const char *argv[] = { "-p", port, NULL };
    for (int i = 0; i < 8; i++) {
        int fd = h_connect(s.port, false);
        char out[5];
        assert_int_equal(h_echo(fd, "ping", out, 4, H_WAIT_MS), 4);
        assert_memory_equal(out, "ping", 4);
        close(fd);
        assert_int_equal(h_stop(&s, SIGTERM), 0);
        free(s.log);
        h_start(&s, argv); /* fails the test if the port is still held */
    }
    h_finish(&s, NULL);
}

static void test_bad_options(void **state)
{
    (void)state;
    const char *a1[] = { "-p", "70000", NULL };
    expect_error(a1, "invalid value '70000'", "port");
    const char *a2[] = { "-p", "abc", NULL };
    expect_error(a2, "invalid value 'abc'", NULL);
    const char *a3[] = { "--log-level", "loud", NULL };
    expect_error(a3, "'loud'", "log-level");
    const char *a4[] = { "--buffers", "3", NULL };
    expect_error(a4, "'3'", "buffers");
    const char *a5[] = { "--frobnicate", NULL };
    expect_error(a5, "unknown option '--frobnicate'", NULL);
    const char *a6[] = { "-p", NULL };
    expect_error(a6, "needs a value", NULL);
    const char *a7[] = { "-b", "not-an-address.invalid", NULL };
    expect_error(a7, "cannot listen on not-an-address.invalid", NULL);
}

static void test_check_mode(void **state)
{
    (void)state;
    char *good = script("return { on_data = function(c, d) c:send(d) end }\n");
    const char *a1[] = { "-t", good, NULL };
    char *err;
    assert_int_equal(h_run(a1, &err), 0);
    assert_non_null(strstr(err, "ok"));
    assert_null(strstr(err, "listening"));
    free(err);
    const char *a2[] = { "-t", NULL };   /* the built-in echo */
    assert_int_equal(h_run(a2, &err), 0);
    free(err);
    char *bad = script("return {\n");
    const char *a3[] = { "-t", bad, NULL };
    expect_error(a3, bad, NULL);
    free(good);
    free(bad);
}

static void test_help_version(void **state)
{
    (void)state;
    char *err;
    const char *a1[] = { "-h", NULL };
    assert_int_equal(h_run(a1, &err), 0);
    free(err);
    const char *a2[] = { "--version", NULL };
    assert_int_equal(h_run(a2, &err), 0);
    free(err);
}

/* SIGTERM and SIGINT shut down cleanly, with a connection open. */
static void test_signals(void **state)
{
    (void)state;
    static const int sigs[] = { SIGTERM, SIGINT };
    for (int i = 0; i < 2; i++) {
        struct h_server s;
        const char *argv[] = { NULL };
        h_start(&s, argv);
        int fd = h_connect(s.port, false);
        char out[2];
        assert_int_equal(h_echo(fd, "hi", out, 2, H_WAIT_MS), 2);
        assert_int_equal(h_stop(&s, sigs[i]), 0);
        assert_true(h_wait_closed(fd, H_WAIT_MS));
        assert_true(strstr(s.log, "shutting down") != NULL);
        close(fd);
        free(s.log);
    }
}

/* make install lays out a tree whose binary finds its Lua library from
 * wherever the tree is put. */
static void test_install(void **state)
{
    (void)state;
    char dir[] = "/tmp/moonring-install-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char destdir[128];
    snprintf(destdir, sizeof destdir, "DESTDIR=%s", dir);
    /* a make of its own, not the sanitizer settings of the one running us */
    const char *mk[] = { "env", "-u", "MAKEFLAGS", "-u", "MFLAGS", "-u", "MAKELEVEL",
                         "-u", "SANITIZE", "make", "-s", "install", destdir,
                         "PREFIX=/opt/mr", NULL };
    char *out;
    int st = h_exec(mk, NULL, &out, 60000, true);
    if (st)
        fail_msg("make install: %d\n%s", st, out);
    free(out);
    char path[256];
    snprintf(path, sizeof path, "%s/opt/mr/share/man/man1/moonring.1", dir);
    assert_int_equal(access(path, R_OK), 0);
    char *script = h_write_file(NULL, "s.lua",
        "local stream = require 'moonring.stream'\n"
        "local http = require 'moonring.http'\n"   /* and its own modules */
        "http.static('/tmp')\n"
        "return stream.handler(function(s, conn) end)\n");
    snprintf(path, sizeof path, "%s/opt/mr/bin/moonring", dir);
    const char *run[] = { path, "-t", script, NULL };
    st = h_exec(run, NULL, &out, H_WAIT_MS, true);
    if (st)
        fail_msg("installed moonring -t: %d\n%s", st, out);
    contains_ok(out);
    free(out);
    free(script);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_script),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_runtime_error),
        cmocka_unit_test(test_not_a_table),
        cmocka_unit_test(test_no_on_data),
        cmocka_unit_test(test_loop_at_start),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_restart_same_port),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_check_mode),
        cmocka_unit_test(test_help_version),
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_install),
    };
    return cmocka_run_group_tests_name("startup", tests, NULL, NULL);
}
