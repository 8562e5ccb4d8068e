/* test_framing.c - moonring.framing, by tests/integration/test_framing.lua
 * run in the real binary: frames cut at every byte, limits, pending
 * bytes, and work linear in the bytes received however a frame is cut. */
#include "harness.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#define SCRIPT "tests/integration/test_framing.lua"

/* A quadratic decoder takes some 15 s over the timed streams, past the
 * watchdog's default 10 s: let it finish, so that the test fails on its
 * figures rather than on a killed server. */
#define SLOW_MS 60000

static char *ask(int port, const char *cmd)
{
    int fd = h_connect(port, false);
    h_send_all(fd, cmd, strlen(cmd));
    char *got = h_line(fd, SLOW_MS);
    close(fd);
    return got;
}

static void start(struct h_server *s)
{
    const char *argv[] = { "--handler-timeout", "120", SCRIPT, NULL };
    h_start(s, argv);
}

/* Every decoder, fed its input whole, cut once or twice at every byte,
 * a byte at a time and in pushes without next() in between, gives
 * exactly the frames and leaves exactly the bytes pending after each
 * read; past max it sets err "frame too long" at the first byte that
 * proves it, and stays stopped. */
static void test_frames(void **state)
{
    (void)state;
    struct h_server s;
    start(&s);
    assert_string_equal(ask(s.port, "check"), "ok");
    h_finish(&s, NULL);
}

/* Each byte received is searched for a delimiter and copied a bounded
 * number of times, in reads of 1 KiB or of 1 byte. */
static void test_work(void **state)
{
    (void)state;
    struct h_server s;
    start(&s);
    assert_string_equal(ask(s.port, "work"), "ok");
    h_finish(&s, NULL);
}

/* One 8 MiB frame in reads of 16 KiB costs about what eight of 1 MiB do
 * (a decoder that joins what it holds on every read takes about eight
 * times as long). */
static void test_linear(void **state)
{
    (void)state;
    struct h_server s;
    start(&s);
    double len8, len1, line8, line1;
    char *got = ask(s.port, "time");
    if (sscanf(got, "%lf %lf %lf %lf", &len8, &len1, &line8, &line1) != 4)
        fail_msg("time: got '%s'", got);
    print_message("8 MiB frame vs 8 x 1 MiB, in 16 KiB reads: length %.4f s vs %.4f s,"
                  " lines %.4f s vs %.4f s\n", len8, len1, line8, line1);
    if (len8 > 2 * len1)
        fail_msg("length: an 8 MiB frame took %.4f s, 8 of 1 MiB %.4f s", len8, len1);
    if (line8 > 2 * line1)
        fail_msg("lines: an 8 MiB line took %.4f s, 8 of 1 MiB %.4f s", line8, line1);
    h_finish(&s, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames),
        cmocka_unit_test(test_work),
        cmocka_unit_test(test_linear),
    };
    return cmocka_run_group_tests_name("framing", tests, NULL, NULL);
}
