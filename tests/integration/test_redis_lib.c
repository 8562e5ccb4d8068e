/* test_redis_lib.c - moonring.redis, by tests/integration/test_redis_lib.lua
 * run in the real binary against a redis-server of its own (on a free
 * port) and against a fake server the script itself runs: every reply
 * type, binary values, pipelines, the pool, protocol errors, timeouts,
 * and redis-server killed while calls are in flight. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#define SCRIPT "tests/integration/test_redis_lib.lua"

struct env {
    pid_t redis;
    int rport;
    char rp[16];
    struct h_server s;
    int fd;             /* a driver connection */
};

static void setup(struct env *e)
{
    e->rport = h_free_port();
    snprintf(e->rp, sizeof e->rp, "%d", e->rport);
    e->redis = h_redis(e->rport);
    const char *argv[] = { SCRIPT, e->rp, NULL };
    h_start(&e->s, argv);
    e->fd = h_connect(e->s.port, false);
}

static void teardown(struct env *e)
{
    close(e->fd);
    h_finish(&e->s, NULL);
    h_kill(e->redis);
}

/* One request line, its answer line. */
static const char *ask(int fd, const char *line)
{
    h_send_all(fd, line, strlen(line));
    h_send_all(fd, "\n", 1);
    return h_line(fd, H_WAIT_MS);
}

static void expect(int fd, const char *line, const char *want)
{
    const char *got = ask(fd, line);
    if (strcmp(got, want))
        fail_msg("%s: got '%s', wanted '%s'", line, got, want);
}

#define NOT_INT "\"ERR value is not an integer or out of range\""

/* Every RESP2 reply type, as the client returns it. */
static void test_replies(void **state)
{
    (void)state;
    struct env e;
    setup(&e);
    static const struct { const char *cmd, *want; } cases[] = {
        { "SET k v", "\"OK\"" },                          /* simple string */
        { "PING", "\"PONG\"" },
        { "TYPE k", "\"string\"" },
        { "GET k", "\"v\"" },                             /* bulk string */
        { "SET\tempty\t", "\"OK\"" },
        { "GET empty", "\"\"" },
        { "GET nokey", "null" },                          /* nil bulk */
        { "INCR n", "1" },                                /* integers */
        { "DECRBY n 5", "-4" },
        { "INCRBY big 9007199254740991", "9007199254740991" },
        { "INCR k", "nil " NOT_INT },                     /* errors */
        { "LPUSH k x", "nil \"WRONGTYPE Operation against a key holding the wrong kind of value\"" },
        { "NOSUCH a", "nil \"ERR unknown command 'NOSUCH', with args beginning with: 'a' \"" },
        { "PING", "\"PONG\"" },                           /* still usable */
        { "RPUSH l a b c", "3" },                         /* arrays */
        { "LRANGE l 0 -1", "[\"a\", \"b\", \"c\"]" },
        { "LRANGE none 0 -1", "[]" },
        { "BLPOP none 0.01", "null" },                    /* nil array */
        { "HSET h f v", "1" },
        { "HGETALL h", "[\"f\", \"v\"]" },
        /* nested arrays, with nil, an error, a status and an empty
         * array inside */
        { "EVAL\treturn {1, 'a', {2, {3, 'b'}, {}}, false, redis.error_reply('MYERR boom'), "
          "redis.status_reply('fine')}\t0",
          "[1, \"a\", [2, [3, \"b\"], []], null, error(\"MYERR boom\"), \"fine\"]" },
        { "EVAL\treturn {{{{{'deep'}}}}}\t0", "[[[[[\"deep\"]]]]]" },
        { "EVAL\treturn redis.error_reply('MYERR top')\t0", "nil \"MYERR top\"" },
        { "EVAL\treturn 2^53\t0", "9007199254740992" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect(e.fd, cases[i].cmd, cases[i].want);
    teardown(&e);
}

/* Bytes 0-255, CRLF and RESP-looking bytes in keys and values, 1 and 3
 * MiB values: all read back the same, and redis-server holds them. */
static void test_binary(void **state)
{
    (void)state;
    struct env e;
    setup(&e);
    expect(e.fd, "!binary", "ok 1048576 3145728");
    char *out;
    const char *c1[] = { "redis-cli", "-p", e.rp, "STRLEN", "big1048576", NULL };
    assert_int_equal(h_exec(c1, NULL, &out, H_WAIT_MS, false), 0);
    assert_string_equal(out, "1048576\n");
    free(out);
    const char *c2[] = { "redis-cli", "-p", e.rp, "--raw", "GET", "bin", NULL };
    assert_int_equal(h_exec(c2, NULL, &out, H_WAIT_MS, false), 0);
    for (int i = 0; i < 256; i++)
        assert_int_equal((unsigned char)out[i], i);
    free(out);
    teardown(&e);
}

/* 100 commands of every reply type in one pipeline, an error among them
 * kept in its place; MULTI inside a pipeline; 10,000 commands. */
static void test_pipeline(void **state)
{
    (void)state;
    struct env e;
    setup(&e);
    const char *got = ask(e.fd, "!pipeline");
    if (strncmp(got, "ok ", 3))
        fail_msg("%s", got);
    print_message("pipeline: %s\n", got + 3);
    teardown(&e);
}

static void test_args(void **state)
{
    (void)state;
    struct env e;
    setup(&e);
    expect(e.fd, "!args", "ok");
    teardown(&e);
}

/* 1,000 requests, each through connect and keepalive, open one
 * connection to redis-server. */
static void test_pool(void **state)
{
    (void)state;
    struct env e;
    setup(&e);
    long before = h_redis_info(e.rport, "total_connections_received");
    expect(e.fd, "!pool 1000", "1000 999");
    /* one from the pool, one the INFO itself */
    assert_int_equal(h_redis_info(e.rport, "total_connections_received") - before, 2);
    teardown(&e);
}

/* keepalive() closes a connection left in a transaction, watching keys
 * or subscribed, and pools a clean one. */
static void test_state(void **state)
{
    (void)state;
    struct env e;
    setup(&e);
    expect(e.fd, "!state", "ok");
    teardown(&e);
}

/* Ask the fake server (the script) to answer RAW with reply[0, n), then
 * stay or close. The answer: the client's result ; a second call's ;
 * whether the fake saw its client close before the second call. */
static const char *fake(struct env *e, const char *reply, size_t n, const char *how)
{
    char line[96];
    snprintf(line, sizeof line, "!fake %d %zu %s\n", e->s.port, n, how);
    h_send_all(e->fd, line, strlen(line));
    h_send_all(e->fd, reply, n);
    return h_line(e->fd, H_WAIT_MS);
}

static void expect_fake(struct env *e, const char *reply, const char *want)
{
    const char *got = fake(e, reply, strlen(reply), "stay");
    if (strcmp(got, want))
        fail_msg("reply '%s': got '%s', wanted '%s'", reply, got, want);
}

#define CLOSED " ; nil \"closed\" ; closed"
#define PROTO(what) "nil \"protocol error: " what "\"" CLOSED

/* Malformed replies: the client closes the connection and says why;
 * well-formed odd ones parse, and the connection goes on. */
static void test_protocol_errors(void **state)
{
    (void)state;
    struct env e;
    setup(&e);
    static const struct { const char *reply, *want; } cases[] = {
        { "$abc\r\n", PROTO("bad bulk length") },
        { "$-2\r\n", PROTO("bad bulk length") },
        { "$-0\r\n\r\n", PROTO("bad bulk length") },
        { "$-\r\n", PROTO("bad bulk length") },
        { "$ 3\r\nfoo\r\n", PROTO("bad bulk length") },
        { "$+3\r\nfoo\r\n", PROTO("bad bulk length") },
        { "$0x3\r\nfoo\r\n", PROTO("bad bulk length") },
        { "$3.0\r\nfoo\r\n", PROTO("bad bulk length") },
        { "$\r\n", PROTO("bad bulk length") },
        { "$99999999999999999999999\r\n", PROTO("bad bulk length") },
        { "$536870913\r\n", PROTO("bulk string too large") },
        { "$3\r\nfooXY", PROTO("bulk string not followed by CRLF") },
        { ":12a\r\n", PROTO("bad integer") },
        { ":\r\n", PROTO("bad integer") },
        { ": 1\r\n", PROTO("bad integer") },
        { ":1e3\r\n", PROTO("bad integer") },
        { ":-\r\n", PROTO("bad integer") },
        { ":--1\r\n", PROTO("bad integer") },
        { "*x\r\n", PROTO("bad array length") },
        { "*-2\r\n", PROTO("bad array length") },
        { "*-10\r\n", PROTO("bad array length") },
        { "*16777217\r\n", PROTO("array too long") },
        { "*2\r\n:1\r\n$z\r\n", PROTO("bad bulk length") },
        { "+OK\nmore\r\n", PROTO("LF inside a line") },
        { "?what\r\n", PROTO("unknown reply type '?'") },
        { "%1\r\n+a\r\n+b\r\n", PROTO("unknown reply type '%'") },   /* RESP3 */
        { "\x01\r\n", PROTO("unknown reply type byte 1") },
        { "\r\n", PROTO("empty line") },
        /* well-formed */
        { "$0\r\n\r\n", "\"\" ; \"PONG\" ; open" },
        { "*0\r\n", "[] ; \"PONG\" ; open" },
        { "*-1\r\n", "null ; \"PONG\" ; open" },
        { "$-1\r\n", "null ; \"PONG\" ; open" },
        { "*3\r\n$-1\r\n-ERR inside\r\n*1\r\n:-1\r\n",
          "[null, error(\"ERR inside\"), [-1]] ; \"PONG\" ; open" },
        { ":-9223372036854775808\r\n", "-9223372036854775808 ; \"PONG\" ; open" },
        { ":007\r\n", "7 ; \"PONG\" ; open" },
        { "-ERR plain\r\n", "nil \"ERR plain\" ; \"PONG\" ; open" },
        { "+\r\n", "\"\" ; \"PONG\" ; open" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_fake(&e, cases[i].reply, cases[i].want);

    /* 64 arrays deep parse; 65 do not */
    static char deep[1024];
    size_t n = 0;
    for (int i = 0; i < 64; i++)
        n += (size_t)sprintf(deep + n, "*1\r\n");
    strcpy(deep + n, ":1\r\n");
    char want[512];
    memset(want, '[', 64);
    strcpy(want + 64, "1");
    memset(want + 65, ']', 64);
    strcpy(want + 129, " ; \"PONG\" ; open");
    expect_fake(&e, deep, want);
    memmove(deep + 4, deep, strlen(deep) + 1);
    memcpy(deep, "*1\r\n", 4);
    expect_fake(&e, deep, PROTO("arrays nested too deep"));

    /* a line longer than the socket may buffer (1 MiB) */
    size_t big = 1536 * 1024;
    char *line = malloc(big);
    memset(line, 'a', big);
    line[0] = '+';
    const char *got = fake(&e, line, big, "stay");
    assert_string_equal(got, PROTO("line too long"));
    free(line);

    /* the fake closes in the middle of a reply, or at once */
    assert_string_equal(fake(&e, "$10\r\nabc", 8, "close"), "nil \"closed\"" CLOSED);
    assert_string_equal(fake(&e, "", 0, "close"), "nil \"closed\"" CLOSED);
    /* and redis-server still answers through the same client code */
    expect(e.fd, "PING", "\"PONG\"");
    teardown(&e);
}

/* A reply that stops coming: the read times out (0.3 s here), and the
 * connection is closed rather than kept with half a reply in it. */
static void test_timeouts(void **state)
{
    (void)state;
    struct env e;
    setup(&e);
    assert_string_equal(fake(&e, "$10\r\nabc", 8, "stay"), "nil \"timeout\"" CLOSED);
    assert_string_equal(fake(&e, "", 0, "stay"), "nil \"timeout\"" CLOSED);
    assert_string_equal(fake(&e, "*2\r\n:1\r\n", 8, "stay"), "nil \"timeout\"" CLOSED);
    teardown(&e);
}

/* redis-server killed while a BLPOP waits and a loop of INCRs runs:
 * the BLPOP returns an error at once, every call of the loop returns
 * within its timeout, and once redis-server is back calls work again. */
static void test_redis_down(void **state)
{
    (void)state;
    struct env e;
    setup(&e);
    expect(e.fd, "!loop", "started");
    int b = h_connect(e.s.port, false);
    expect(b, "!blpop", "waiting");
    h_sleep_ms(300);
    kill(e.redis, SIGKILL);
    h_kill(e.redis);                    /* reaps it */
    const char *got = h_line(b, H_WAIT_MS);
    print_message("BLPOP when redis-server died: %s\n", got);
    int ms = -1;
    if (strncmp(got, "nil \"closed\" ", 13) == 0)
        ms = atoi(got + 13);
    else if (strncmp(got, "nil \"reset\" ", 12) == 0)
        ms = atoi(got + 12);
    else
        fail_msg("BLPOP: %s", got);
    assert_in_range(ms, 250, 1500);     /* not the 5 s of its own timeout */
    close(b);
    h_sleep_ms(500);
    expect(e.fd, "GET k", "nil \"Connection refused\"");
    e.redis = h_redis(e.rport);
    h_sleep_ms(300);
    got = ask(e.fd, "!stop");
    print_message("the loop: %s\n", got);
    int ok = -1, err = -1, max = -1;
    char last[32] = "", errors[256] = "";
    assert_int_equal(sscanf(got, "ok=%d err=%d max=%d last=%31s errors=%255[^\n]",
                            &ok, &err, &max, last, errors), 5);
    assert_true(ok > 0);
    assert_true(err > 0);
    assert_true(max < 1500);            /* no call waited past its 1 s timeout */
    assert_string_equal(last, "ok");
    for (char *tok = strtok(errors, ","); tok; tok = strtok(NULL, ","))
        if (strcmp(tok, "closed") && strcmp(tok, "Connection refused") &&
            strcmp(tok, "reset"))
            fail_msg("unexpected error '%s'", tok);
    expect(e.fd, "SET k back", "\"OK\"");
    expect(e.fd, "GET k", "\"back\"");
    teardown(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replies),
        cmocka_unit_test(test_binary),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_args),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_state),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_redis_down),
    };
    return cmocka_run_group_tests_name("redis_lib", tests, NULL, NULL);
}
