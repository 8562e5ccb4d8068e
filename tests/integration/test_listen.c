/* test_listen.c - several listeners in one server (-l): each accepts,
 * and conn:listener() (or sock:listener()) says which one a connection
 * came in on, in one worker and in several. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static const char which_lua[] =
    "return { on_data = function(conn, data)\n"
    "  conn:send(tostring(conn:listener()), '\\n')\n"
    "end }\n";

static const char which_fn_lua[] =
    "return function(sock)\n"
    "  while sock:receive('*l') do sock:send(tostring(sock:listener()), '\\n') end\n"
    "end\n";

/* The port after `prefix` in the server's "listening on" line. */
static int port_after(struct h_server *s, const char *prefix)
{
    assert_true(h_log_wait(s, "listening on", H_WAIT_MS));
    const char *p = strstr(strstr(s->log, "listening on"), prefix);
    assert_non_null(p);
    return atoi(p + strlen(prefix));
}

static int unix_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Ask on fd which listener it came in on. */
static void says(int fd, const char *want)
{
    h_send_all(fd, "which\n", 6);
    assert_string_equal(h_line(fd, H_WAIT_MS), want);
    close(fd);
}

static void three_listeners(const char *script, const char *const *extra)
{
    char sock[64], lsock[80];
    snprintf(sock, sizeof sock, "/tmp/moonring-test-%d.sock", (int)getpid());
    snprintf(lsock, sizeof lsock, "unix:%s", sock);
    const char *opts[12] = { "-l", "tcp://127.0.0.1:0", "-l", "tcp://[::1]:0",
                             "-l", lsock };
    int n = 6;
    for (int i = 0; extra && extra[i]; i++)
        opts[n++] = extra[i];
    struct h_server s;
    char *path = h_serve(&s, script, opts, NULL);
    int p4 = port_after(&s, "127.0.0.1:"), p6 = port_after(&s, "[::1]:");
    char want4[64], want6[64];
    snprintf(want4, sizeof want4, "tcp://127.0.0.1:%d", p4);
    snprintf(want6, sizeof want6, "tcp://[::1]:%d", p6);
    for (int i = 0; i < 10; i++) { /* with -w 2, both workers' sockets */
        says(h_connect(p4, false), want4);
        says(h_connect(p6, true), want6);
        says(unix_connect(sock), lsock);
    }
    h_finish(&s, path);
    assert_int_equal(access(sock, F_OK), -1); /* removed at exit */
}

static void test_three_listeners(void **state)
{
    (void)state;
    three_listeners(which_lua, NULL);
}

static void test_three_listeners_function(void **state)
{
    (void)state;
    three_listeners(which_fn_lua, NULL);
}

static void test_three_listeners_workers(void **state)
{
    (void)state;
    const char *w2[] = { "-w", "2", NULL };
    three_listeners(which_lua, w2);
}

/* A connection this worker made came in on no listener. */
static void test_outbound_has_none(void **state)
{
    (void)state;
    static const char lua[] =
        "local mr = require 'moonring'\n"
        "return function(sock)\n"
        "  local port = tonumber(sock:receive('*l'))\n"
        "  local up = assert(mr.tcp('127.0.0.1', port))\n"
        "  sock:send(tostring(up:listener()), '\\n')\n"
        "  up:close()\n"
        "end\n";
    struct h_server s;
    char *path = h_serve(&s, lua, NULL, NULL);
    int port;
    int lfd = h_listen(4, &port);
    int fd = h_connect(s.port, false);
    char line[32];
    snprintf(line, sizeof line, "%d\n", port);
    h_send_all(fd, line, strlen(line));
    assert_string_equal(h_line(fd, H_WAIT_MS), "nil");
    close(fd);
    close(lfd);
    h_finish(&s, path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_listeners),
        cmocka_unit_test(test_three_listeners_function),
        cmocka_unit_test(test_three_listeners_workers),
        cmocka_unit_test(test_outbound_has_none),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
