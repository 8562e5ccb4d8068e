/* test_lua.c - handler scripts: errors, the conn object, require, arg,
 * the moonring module. */
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

/* Send msg, expect exactly want back. */
static void ask(int fd, const char *msg, const char *want)
{
    char buf[512] = { 0 };
    size_t n = strlen(want);
    h_send_all(fd, msg, strlen(msg));
    size_t got = h_recv_exact(fd, buf, n, H_WAIT_MS);
    if (got != n || memcmp(buf, want, n))
        fprintf(stderr, "sent '%s', wanted '%s', got '%.*s'\n", msg, want, (int)got, buf);
    assert_int_equal(got, n);
    assert_memory_equal(buf, want, n);
}

static const char error_script[] =
    "return {\n"
    "  on_data = function(conn, data)\n"
    "    if data:sub(1, 3) == 'die' then\n"
    "      error('boom')\n"             /* line 4 */
    "    end\n"
    "    conn:send(data)\n"
    "  end,\n"
    "}\n";

static void test_handler_error(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, error_script, NULL, NULL);
    int a = h_connect(s.port, false), b = h_connect(s.port, false);
    ask(a, "hi", "hi");
    ask(b, "hello", "hello");
    h_send_all(a, "die", 3);
    assert_true(h_wait_closed(a, H_WAIT_MS));
    ask(b, "still here", "still here");     /* the others go on */
    char want[600];
    snprintf(want, sizeof want, "%s:4: boom", path);
    assert_true(h_log_wait(&s, want, H_WAIT_MS));
    assert_true(h_log_wait(&s, "on_data failed", 0));
    close(a);
    close(b);
    h_finish(&s, path);
}

static const char conn_script[] =
    "local seen = {}\n"
    "return {\n"
    "  on_open = function(conn) conn.n = 0 end,\n"
    "  on_data = function(conn, data)\n"
    "    conn.n = conn.n + 1\n"
    "    if data == 'peer' then\n"
    "      local host, port = conn:peer()\n"
    "      conn:send(host, ' ', port)\n"
    "    elseif data == 'id' then\n"
    "      conn:send(type(conn.id), ' ', conn.n, ' ', tostring(conn:pending()))\n"
    "    elseif data == 'bye' then\n"
    "      conn:send('bye\\n')\n"
    "      conn:close()\n"
    "      seen.after_send = table.concat({tostring(conn:send('x'))}, ',')\n"
    "      local a, b = conn:send('x')\n"
    "      seen.after = tostring(a) .. ',' .. tostring(b)\n"
    "      seen.conn = conn\n"
    "    elseif data == 'later' then\n"
    "      local a, b = seen.conn:send('x')\n"
    "      local c, d = seen.conn:peer()\n"
    "      conn:send(seen.after, ' ', tostring(a), ',', tostring(b), ' ',\n"
    "                tostring(c), ',', tostring(d), ' ', seen.reason or '-')\n"
    "    end\n"
    "  end,\n"
    "  on_close = function(conn, reason) seen.reason = reason end,\n"
    "}\n";

static void test_conn_api(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, conn_script, NULL, NULL);
    int a = h_connect(s.port, false);

    struct sockaddr_in me;
    socklen_t sl = sizeof me;
    getsockname(a, (struct sockaddr *)&me, &sl);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1 %d", ntohs(me.sin_port));
    ask(a, "peer", want);
    ask(a, "id", "number 2 0");   /* fields set in on_open persist */

    int b = h_connect(s.port, false);
    ask(b, "bye", "bye\n");       /* queued output goes out before the close */
    assert_true(h_wait_closed(b, H_WAIT_MS));
    /* after close: methods answer nil, "closed"; on_close saw "closed" */
    ask(a, "later", "nil,closed nil,closed nil,closed closed");
    close(a);
    close(b);
    h_finish(&s, path);
}

static const char reason_script[] =
    "local last = '-'\n"
    "return {\n"
    "  on_data = function(conn, data)\n"
    "    if data == 'reason?' then conn:send(last) end\n"
    "  end,\n"
    "  on_close = function(conn, reason) last = reason end,\n"
    "}\n";

static void test_close_reason_eof(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, reason_script, NULL, NULL);
    int a = h_connect(s.port, false);
    h_send_all(a, "x", 1);
    close(a);
    h_sleep_ms(200);
    int b = h_connect(s.port, false);
    ask(b, "reason?", "eof");
    close(b);
    h_finish(&s, path);
}

static void test_require_and_arg(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_write_file(NULL, "app.lua",
        "local helper = require 'helper'\n"
        "local builtin = require 'echo'\n"   /* from moonring's lua/ */
        "assert(type(builtin.on_data) == 'function')\n"
        "local a, b = ...\n"
        "return { on_data = function(conn, data)\n"
        "  conn:send(helper.shout(data), ' ', arg[1], ' ', arg[2], ' ', a, ' ', b,\n"
        "            ' ', arg[-1], ' ', arg[0]:match('app%.lua$') and 'ok' or 'bad')\n"
        "end }\n");
    char *dir = h_dirname(path);
    free(h_write_file(dir, "helper.lua",
        "return { shout = function(s) return s:upper() end }\n"));
    const char *argv[] = { path, "one", "--two", NULL };
    h_start(&s, argv);
    int fd = h_connect(s.port, false);
    ask(fd, "hey", "HEY one --two one --two moonring ok");
    close(fd);
    h_finish(&s, path);
    free(dir);
}

static void test_moonring_module(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s,
        "local mr = require 'moonring'\n"
        "mr.log('info', 'hello', 42)\n"
        "return { on_data = function(conn, data)\n"
        "  local st = mr.stats()\n"
        "  conn:send(mr.worker(), ' ', st.conns, ' ', type(mr.now()))\n"
        "end }\n", NULL, NULL);
    assert_true(h_log_wait(&s, "hello 42", H_WAIT_MS));
    int fd = h_connect(s.port, false);
    ask(fd, "?", "1 1 number");
    close(fd);
    h_finish(&s, path);
}

/* The examples in examples/ start and behave as their comments say. */
static void test_examples(void **state)
{
    (void)state;
    struct h_server s;
    const char *a1[] = { "examples/upper.lua", NULL };
    h_start(&s, a1);
    int fd = h_connect(s.port, false);
    ask(fd, "shout", "SHOUT");
    close(fd);
    assert_int_equal(h_stop(&s, SIGTERM), 0);
    free(s.log);

    const char *a2[] = { "examples/greeter.lua", NULL };
    h_start(&s, a2);
    fd = h_connect(s.port, false);
    char buf[128] = { 0 };
    assert_true(h_recv_exact(fd, buf, 16, H_WAIT_MS) == 16);
    assert_memory_equal(buf, "hello 127.0.0.1:", 16);
    h_recv_exact(fd, buf, sizeof buf - 1, 300);  /* the rest of the line */
    assert_non_null(strstr(buf, "client #1\n"));
    ask(fd, "one", "one");
    ask(fd, "quit", "bye after 2 message(s)\n");
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    assert_int_equal(h_stop(&s, SIGTERM), 0);
    free(s.log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handler_error),
        cmocka_unit_test(test_conn_api),
        cmocka_unit_test(test_close_reason_eof),
        cmocka_unit_test(test_require_and_arg),
        cmocka_unit_test(test_moonring_module),
        cmocka_unit_test(test_examples),
    };
    return cmocka_run_group_tests_name("lua", tests, NULL, NULL);
}
