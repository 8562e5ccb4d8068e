/* test_cli.c - option parsing. */
#include "cli.h"
#include "log.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

static char err[256];
static char *argv_[32]; /* cli_parse keeps pointers into argv, as main's */

#define PARSE(o, ...)                                                        \
    ({                                                                       \
        char *a_[] = { "moonring", __VA_ARGS__, NULL };                      \
        memcpy(argv_, a_, sizeof a_);                                        \
        err[0] = 0;                                                          \
        cli_parse((int)(sizeof a_ / sizeof a_[0]) - 1, argv_, (o),           \
                  err, sizeof err);                                          \
    })

static void test_defaults(void **state)
{
    (void)state;
    struct cli_opts o;
    char *argv[] = { "moonring", NULL };
    assert_int_equal(cli_parse(1, argv, &o, err, sizeof err), CLI_RUN);
    assert_string_equal(o.bind, "127.0.0.1");
    assert_int_equal(o.port, 7000);
    assert_int_equal(o.workers, 1);
    assert_int_equal(o.buffers, 1024);
    assert_int_equal(o.buffer_size, 16384);
    assert_true(o.shutdown_timeout == 10);
    assert_int_equal(o.log_level, LOG_INFO);
    assert_int_equal(o.max_conns, 0);
    assert_false(o.test_only);
    assert_false(o.no_reload);
    assert_null(o.script);
    assert_null(o.user);
}

static void test_short_and_long(void **state)
{
    (void)state;
    struct cli_opts o;
    assert_int_equal(PARSE(&o, "-b", "::1", "-p", "0", "-w", "4", "-t"), CLI_RUN);
    assert_string_equal(o.bind, "::1");
    assert_int_equal(o.port, 0);
    assert_int_equal(o.workers, 4);
    assert_true(o.test_only);
    assert_int_equal(PARSE(&o, "--bind", "0.0.0.0", "--port", "65535",
                           "--workers", "auto", "--test", "--no-reload",
                           "--log-level", "debug", "--max-conns", "100",
                           "--buffers", "64", "--buffer-size", "4096",
                           "--shutdown-timeout", "2.5", "--user", "nobody",
                           "--batch-wait", "50"),
                     CLI_RUN);
    assert_int_equal(o.batch_wait_us, 50);
    assert_string_equal(o.bind, "0.0.0.0");
    assert_int_equal(o.port, 65535);
    assert_int_equal(o.workers, 0);
    assert_true(o.test_only);
    assert_true(o.no_reload);
    assert_int_equal(o.log_level, LOG_DEBUG);
    assert_int_equal(o.max_conns, 100);
    assert_int_equal(o.buffers, 64);
    assert_int_equal(o.buffer_size, 4096);
    assert_true(o.shutdown_timeout == 2.5);
    assert_string_equal(o.user, "nobody");
    assert_int_equal(PARSE(&o, "--port=8080"), CLI_RUN);
    assert_int_equal(o.port, 8080);
}

static void test_help_version(void **state)
{
    (void)state;
    struct cli_opts o;
    assert_int_equal(PARSE(&o, "-h"), CLI_HELP);
    assert_int_equal(PARSE(&o, "--help"), CLI_HELP);
    assert_int_equal(PARSE(&o, "-V"), CLI_VERSION);
    assert_int_equal(PARSE(&o, "--version"), CLI_VERSION);
}

static void expect_error(enum cli_result r, const char *needle)
{
    assert_int_equal(r, CLI_ERROR);
    if (!strstr(err, needle))
        fail_msg("error '%s' lacks '%s'", err, needle);
}

static void test_errors(void **state)
{
    (void)state;
    struct cli_opts o;
    expect_error(PARSE(&o, "-p", "70000"), "'70000' for --port");
    expect_error(PARSE(&o, "-p", "-1"), "'-1'");
    expect_error(PARSE(&o, "-p", "12x"), "'12x'");
    expect_error(PARSE(&o, "-p", ""), "--port");
    expect_error(PARSE(&o, "--buffers", "3"), "'3' for --buffers");
    expect_error(PARSE(&o, "--buffers", "0"), "--buffers");
    expect_error(PARSE(&o, "--buffers", "65536"), "--buffers");
    expect_error(PARSE(&o, "--buffer-size", "10"), "--buffer-size");
    expect_error(PARSE(&o, "--log-level", "loud"), "'loud' for --log-level");
    expect_error(PARSE(&o, "-w", "0"), "--workers");
    expect_error(PARSE(&o, "--shutdown-timeout", "soon"), "--shutdown-timeout");
    expect_error(PARSE(&o, "--max-conns", "0"), "--max-conns");
    expect_error(PARSE(&o, "--batch-wait", "-5"), "--batch-wait");
    expect_error(PARSE(&o, "--batch-wait", "2000000"), "--batch-wait");
    expect_error(PARSE(&o, "--frobnicate"), "unknown option '--frobnicate'");
    expect_error(PARSE(&o, "-x"), "unknown option '-x'");
    expect_error(PARSE(&o, "-p"), "needs a value");
    expect_error(PARSE(&o, "-b", ""), "--bind");
}

static void test_script_and_args(void **state)
{
    (void)state;
    struct cli_opts o;
    assert_int_equal(PARSE(&o, "-p", "1", "script.lua", "-x", "--y"), CLI_RUN);
    assert_string_equal(o.script, "script.lua");
    assert_int_equal(o.port, 1);
    assert_int_equal(o.script_argc, 2);
    assert_string_equal(o.script_argv[0], "-x");  /* the script's, not ours */
    assert_string_equal(o.script_argv[1], "--y");
    assert_int_equal(PARSE(&o, "app.lua"), CLI_RUN);
    assert_string_equal(o.script, "app.lua");
    assert_int_equal(o.script_argc, 0);
}

static void test_twice(void **state)
{
    (void)state;
    struct cli_opts o;
    assert_int_equal(PARSE(&o, "-p", "5", "a.lua"), CLI_RUN);
    assert_int_equal(PARSE(&o, "-p", "6", "b.lua"), CLI_RUN);
    assert_int_equal(o.port, 6);
    assert_string_equal(o.script, "b.lua");
    expect_error(PARSE(&o, "-p", "x"), "'x'");
    assert_int_equal(PARSE(&o, "-p", "7"), CLI_RUN);
    assert_int_equal(o.port, 7);
}

/* -l, several times; -b/-p as the shorthand for one listener. */
static void test_listen(void **state)
{
    (void)state;
    struct cli_opts o;
    assert_int_equal(PARSE(&o, "-b", "::1", "-p", "8080"), CLI_RUN);
    assert_int_equal(o.nlisten, 1);
    assert_string_equal(o.listen[0].addr, "::1");
    assert_int_equal(o.listen[0].port, 8080);
    assert_int_equal(PARSE(&o, "-l", "tcp://127.0.0.1:80", "--listen",
                           "tcp://[::1]:0", "-l", "unix:/run/a.sock"), CLI_RUN);
    assert_int_equal(o.nlisten, 3);
    assert_string_equal(o.listen[0].addr, "127.0.0.1");
    assert_int_equal(o.listen[0].port, 80);
    assert_string_equal(o.listen[0].url, "tcp://127.0.0.1:80");
    assert_string_equal(o.listen[1].addr, "::1");
    assert_int_equal(o.listen[1].port, 0);
    assert_string_equal(o.listen[2].addr, "unix:/run/a.sock");
    static const char *const bad[] = {
        "tcp://127.0.0.1", "tcp://127.0.0.1:", "tcp://:80", "tcp://::1:80",
        "tcp://[::1:80", "tcp://h:65536", "tcp://h:8x", "http://h:80",
        "unix:", "", "tls://127.0.0.1", "udp://127.0.0.1", "udp://::1:53",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(PARSE(&o, "-l", (char *)bad[i]), CLI_ERROR);
        assert_non_null(strstr(err, bad[i]));
    }
    assert_int_equal(PARSE(&o, "-l", "udp://127.0.0.1:53", "-l", "udp://[::1]:0",
                           "--udp-buffers", "128", "--udp-buffer-size", "1500"), CLI_RUN);
    assert_true(o.listen[0].udp && o.listen[1].udp && !o.listen[0].tls);
    assert_string_equal(o.listen[1].addr, "::1");
    assert_int_equal(o.listen[0].port, 53);
    assert_int_equal(o.udp_buffers, 128);
    assert_int_equal(o.udp_buffer_size, 1500);
    assert_int_equal(PARSE(&o, "--udp-buffers", "100"), CLI_ERROR);
    assert_int_equal(PARSE(&o, "--udp-buffer-size", "65536"), CLI_ERROR);
    assert_int_equal(PARSE(&o, "-l", "tls://127.0.0.1:443"), CLI_ERROR);
    assert_non_null(strstr(err, "--tls-cert and --tls-key"));
    assert_int_equal(PARSE(&o, "-l", "tls://[::]:443", "-l", "tcp://[::]:80",
                           "--tls-cert", "c.pem", "--tls-key", "k.pem"), CLI_RUN);
    assert_true(o.listen[0].tls && !o.listen[1].tls);
    assert_string_equal(o.listen[0].addr, "::");
    assert_int_equal(o.ntls_cert, 1);
    assert_string_equal(o.tls_cert[0], "c.pem");
    assert_true(o.tls_handshake_timeout == 10);
    assert_int_equal(PARSE(&o, "-l", "tls://h:1", "--tls-cert", "a", "--tls-key", "a",
                           "--tls-cert", "b"), CLI_ERROR);
    assert_non_null(strstr(err, "in pairs"));
    assert_int_equal(PARSE(&o, "-l", "tcp://h:1", "-p", "2"), CLI_ERROR);
    assert_non_null(strstr(err, "-b/-p"));
    char *many[40] = { "moonring" };
    int n = 1;
    for (int i = 0; i < 17; i++) {
        many[n++] = "-l";
        many[n++] = "tcp://127.0.0.1:0";
    }
    assert_int_equal(cli_parse(n, many, &o, err, sizeof err), CLI_ERROR);
    assert_non_null(strstr(err, "at most 16"));
}

static void test_shared(void **state)
{
    (void)state;
    struct cli_opts o;
    assert_int_equal(PARSE(&o, "--shared", "sessions:64m", "--shared", "a_1:65536",
                           "--shared", "Big:2G", "--shared", "k:64k"), CLI_RUN);
    assert_int_equal(o.nshared, 4);
    assert_string_equal(o.shared[0].name, "sessions");
    assert_true(o.shared[0].size == 64ull << 20);
    assert_string_equal(o.shared[1].name, "a_1");
    assert_true(o.shared[1].size == 65536);
    assert_true(o.shared[2].size == 2ull << 30);
    assert_true(o.shared[3].size == 64 << 10);
    assert_null(o.shared[0].dict);
    static const char *const bad_names[] = { "sessions", ":64m", "1x:64m", "a-b:64m",
        "a.b:1m", "0123456789012345678901234567890123456789012345678901234567890123:1m" };
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        assert_int_equal(PARSE(&o, "--shared", (char *)bad_names[i]), CLI_ERROR);
        assert_non_null(strstr(err, "NAME:SIZE"));
    }
    static const char *const bad_sizes[] = { "a:", "a:0", "a:63k", "a:64x", "a:-1m",
        "a: 1m", "a:1mb", "a:33g", "a:99999999999999999999", "a:17179869184k" };
    for (size_t i = 0; i < sizeof bad_sizes / sizeof *bad_sizes; i++) {
        assert_int_equal(PARSE(&o, "--shared", (char *)bad_sizes[i]), CLI_ERROR);
        assert_non_null(strstr(err, "SIZE must be 64k to 32g"));
    }
    assert_int_equal(PARSE(&o, "--shared", "a:1m", "--shared", "b:1m", "--shared", "a:2m"),
                     CLI_ERROR);
    assert_string_equal(err, "--shared a: given twice");
    assert_int_equal(PARSE(&o, "--shared"), CLI_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_short_and_long),
        cmocka_unit_test(test_help_version),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_script_and_args),
        cmocka_unit_test(test_twice),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_shared),
    };
    return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
