/* test_conn.c - the connection table and its state transitions. */
#include "conn.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

enum { MAX = 4 };

static int setup(void **state)
{
    struct conn_table *t = calloc(1, sizeof *t);
    if (!t || conn_table_init(t, MAX))
        return -1;
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    conn_table_destroy(*state);
    free(*state);
    return 0;
}

static void test_alloc_until_full(void **state)
{
    struct conn_table *t = *state;
    for (uint32_t i = 0; i < MAX; i++) {
        struct conn *c = conn_alloc(t, 100 + (int)i);
        assert_non_null(c);
        assert_int_equal(c->slot, i);
        assert_int_equal(c->id, i + 1);
        assert_int_equal(c->fd, 100 + (int)i);
        assert_int_equal(c->state, CONN_OPEN);
        assert_ptr_equal(conn_get(t, i, c->gen), c);
    }
    assert_int_equal(t->live, MAX);
    assert_null(conn_alloc(t, 9));
}

/* Free a connection the way the worker does once nothing is in flight. */
static void close_and_free(struct conn_table *t, struct conn *c)
{
    conn_close(t, c, REASON_EOF, false);
    c->flags |= CF_NOTIFIED | CF_CLOSE_SENT | CF_CLOSED;
    assert_true(conn_idle(c));
    conn_free(t, c);
}

static void test_reuse_new_generation(void **state)
{
    struct conn_table *t = *state;
    struct conn *a = conn_alloc(t, 10);
    uint32_t slot = a->slot, gen = a->gen;
    uint64_t id = a->id;
    close_and_free(t, a);
    assert_int_equal(t->live, 0);
    assert_null(conn_get(t, slot, gen));          /* freed */
    struct conn *b = conn_alloc(t, 11);
    assert_int_equal(b->slot, slot);              /* reused */
    assert_int_not_equal(b->gen, gen);            /* but a new generation */
    assert_true(b->id > id);
    assert_null(conn_get(t, slot, gen));          /* late CQE: misses */
    assert_ptr_equal(conn_get(t, slot, b->gen), b);
    assert_null(conn_get(t, 3, b->gen));          /* never handed out */
    assert_null(conn_get(t, 1000, 1));
}

static void test_send_marks_dirty_once(void **state)
{
    struct conn_table *t = *state;
    struct conn *c = conn_alloc(t, 10);
    assert_int_equal(conn_send(t, c, "ab", 2), 0);
    assert_int_equal(conn_send(t, c, "cd", 2), 0);
    assert_int_equal(t->dirty.n, 1);
    assert_int_equal(t->dirty.v[0], c->slot);
    assert_true(c->flags & CF_DIRTY);
    assert_int_equal(sendq_pending(&c->q), 4);
}

static void test_close(void **state)
{
    struct conn_table *t = *state;
    struct conn *c = conn_alloc(t, 10);
    conn_close(t, c, REASON_CLOSED, false);
    assert_int_equal(c->state, CONN_CLOSING);
    assert_int_equal(c->reason, REASON_CLOSED);
    assert_false(c->flags & CF_ABORT);
    conn_close(t, c, REASON_ERROR, false);        /* no effect */
    assert_int_equal(c->reason, REASON_CLOSED);
    assert_int_equal(t->closing.n, 1);
    conn_close(t, c, REASON_RESET, true);         /* an abort still counts */
    assert_true(c->flags & CF_ABORT);
    assert_int_equal(t->closing.n, 1);
    assert_int_equal(c->reason, REASON_CLOSED);
    assert_int_equal(conn_send(t, c, "x", 1), -EPIPE);
}

static void test_reason_names(void **state)
{
    (void)state;
    assert_string_equal(conn_reason_name(REASON_EOF), "eof");
    assert_string_equal(conn_reason_name(REASON_RESET), "reset");
    assert_string_equal(conn_reason_name(REASON_TIMEOUT), "timeout");
    assert_string_equal(conn_reason_name(REASON_ERROR), "error");
    assert_string_equal(conn_reason_name(REASON_CLOSED), "closed");
    assert_string_equal(conn_reason_name(REASON_SHUTDOWN), "shutdown");
}

static void test_idle_needs_everything_done(void **state)
{
    struct conn_table *t = *state;
    struct conn *c = conn_alloc(t, 10);
    conn_close(t, c, REASON_EOF, false);
    c->flags |= CF_CLOSED | CF_RECV_ARMED;
    assert_false(conn_idle(c));                    /* a receive is out */
    c->flags &= ~CF_RECV_ARMED;
    const void *p;
    size_t n;
    assert_int_equal(sendq_append(&c->q, "x", 1), 0);
    assert_true(sendq_next(&c->q, &p, &n));
    assert_false(conn_idle(c));                    /* a send is out */
    sendq_done(&c->q, 1);
    assert_true(conn_idle(c));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_alloc_until_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reuse_new_generation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_marks_dirty_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close, setup, teardown),
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test_setup_teardown(test_idle_needs_everything_done, setup, teardown),
    };
    return cmocka_run_group_tests_name("conn", tests, NULL, NULL);
}
