/* test_sendq.c - the output queue: order, coalescing, short sends. */
#include "sendq.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static int setup(void **state)
{
    *state = calloc(1, sizeof(struct sendq));
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    struct sendq *q = *state;
    if (!sendq_busy(q))
        sendq_free(q);
    free(q);
    return 0;
}

static void test_empty(void **state)
{
    struct sendq *q = *state;
    const void *p;
    size_t n;
    assert_false(sendq_next(q, &p, &n));
    assert_false(sendq_busy(q));
    assert_int_equal(sendq_pending(q), 0);
    assert_int_equal(sendq_append(q, "", 0), 0);
    assert_false(sendq_next(q, &p, &n));
}

/* Writes made before a send go out together, in order. */
static void test_coalesce(void **state)
{
    struct sendq *q = *state;
    const void *p;
    size_t n;
    assert_int_equal(sendq_append(q, "one ", 4), 0);
    assert_int_equal(sendq_append(q, "two ", 4), 0);
    assert_int_equal(sendq_append(q, "three", 5), 0);
    assert_int_equal(sendq_pending(q), 13);
    assert_true(sendq_next(q, &p, &n));
    assert_true(sendq_busy(q));
    assert_int_equal(n, 13);
    assert_memory_equal(p, "one two three", 13);
    sendq_done(q, 13);
    assert_false(sendq_busy(q));
    assert_int_equal(sendq_pending(q), 0);
    /* an idle queue holds no memory */
    assert_null(q->flight);
    assert_null(q->pend);
}

/* Writes made during a send never touch the bytes the kernel reads. */
static void test_append_while_busy(void **state)
{
    struct sendq *q = *state;
    const void *p, *p2;
    size_t n, n2;
    assert_int_equal(sendq_append(q, "first", 5), 0);
    assert_true(sendq_next(q, &p, &n));
    char *big = malloc(1 << 20);
    memset(big, 'x', 1 << 20);
    for (int i = 0; i < 8; i++)
        assert_int_equal(sendq_append(q, big, 1 << 20), 0);
    assert_int_equal(sendq_append(q, "last", 4), 0);
    /* the in-flight region stayed where it was, with its bytes */
    assert_ptr_equal(p, q->flight + q->fl_off);
    assert_memory_equal(p, "first", 5);
    assert_int_equal(sendq_pending(q), 5 + 8 * (1 << 20) + 4);
    sendq_done(q, 5);
    assert_true(sendq_next(q, &p2, &n2));
    assert_int_equal(n2, 8 * (1 << 20) + 4);
    assert_memory_equal(p2, big, 1 << 20);
    assert_memory_equal((const char *)p2 + n2 - 4, "last", 4);
    sendq_done(q, n2);
    free(big);
}

/* A given buffer is sent from where it is when nothing waits before it
 * (no copy); behind queued bytes it is copied after them, in order; and
 * the appends after it go behind it. */
static void test_give(void **state)
{
    struct sendq *q = *state;
    const void *p;
    size_t n;
    char *a = malloc(65536);
    memset(a, 'a', 65536);
    assert_int_equal(sendq_give(q, a, 65536, 65532), 0);
    assert_int_equal(sendq_append(q, "tail", 4), 0);
    assert_true(sendq_next(q, &p, &n));
    assert_ptr_equal(p, a); /* the bytes were not moved */
    assert_int_equal(n, 65536);
    assert_memory_equal((const char *)p + 65532, "tail", 4);
    char *b = malloc(4096);
    memset(b, 'b', 4096);
    assert_int_equal(sendq_append(q, "head", 4), 0);
    assert_int_equal(sendq_give(q, b, 4096, 4096), 0); /* b is freed */
    assert_int_equal(sendq_pending(q), 65536 + 4 + 4096);
    sendq_done(q, n);
    assert_true(sendq_next(q, &p, &n));
    assert_int_equal(n, 4 + 4096);
    assert_memory_equal(p, "head", 4);
    for (size_t i = 4; i < n; i++)
        assert_int_equal(((const char *)p)[i], 'b');
    sendq_done(q, n);
    assert_int_equal(sendq_give(q, malloc(16), 16, 0), 0); /* nothing */
    assert_int_equal(sendq_pending(q), 0);
}

/* A short send resumes from the next unsent byte. */
static void test_short_sends(void **state)
{
    struct sendq *q = *state;
    const void *p;
    size_t n;
    assert_int_equal(sendq_append(q, "abcdefghij", 10), 0);
    assert_true(sendq_next(q, &p, &n));
    sendq_done(q, 3);
    assert_int_equal(sendq_pending(q), 7);
    assert_int_equal(sendq_append(q, "XY", 2), 0);
    assert_true(sendq_next(q, &p, &n));
    assert_int_equal(n, 7);                     /* the rest comes first */
    assert_memory_equal(p, "defghij", 7);
    sendq_done(q, 0);                           /* nothing sent at all */
    assert_true(sendq_next(q, &p, &n));
    assert_memory_equal(p, "defghij", 7);
    sendq_done(q, 7);
    assert_true(sendq_next(q, &p, &n));
    assert_int_equal(n, 2);
    assert_memory_equal(p, "XY", 2);
    sendq_done(q, 2);
    assert_int_equal(sendq_pending(q), 0);
}

/* Random writes and random short sends against a reference stream. */
/* Capacity beyond 16 KiB grows by a quarter, not by doubling, and a big
 * buffer that has been sent is not kept for the writes after it: a peer
 * that never reads holds both buffers at their largest. */
static void test_capacity(void **state)
{
    struct sendq *q = *state;
    static char chunk[16384];
    for (int i = 0; i < 64; i++) /* 1 MiB in 16 KiB writes */
        assert_int_equal(sendq_append(q, chunk, sizeof chunk), 0);
    assert_true(q->pd_cap >= (1u << 20));
    assert_true(q->pd_cap <= (1u << 20) + (1u << 18) + 4096);
    const void *p;
    size_t n;
    assert_true(sendq_next(q, &p, &n));
    assert_int_equal(n, 1u << 20);
    assert_int_equal(sendq_append(q, chunk, 100), 0);
    sendq_done(q, n - 1); /* short: one byte left */
    assert_int_equal(sendq_held(q), (1u << 20) + 100); /* the buffer stays */
    assert_int_equal(sendq_pending(q), 101);
    assert_true(sendq_next(q, &p, &n));
    assert_int_equal(n, 1);
    sendq_done(q, 1);
    assert_int_equal(sendq_held(q), 100);
    assert_true(sendq_next(q, &p, &n)); /* swap: the 1 MiB buffer goes */
    assert_int_equal(n, 100);
    assert_int_equal(q->pd_cap, 0);
    sendq_done(q, 100);
}

static void test_model(void **state)
{
    struct sendq *q = *state;
    enum { MAX = 1 << 22 };
    unsigned char *in = malloc(MAX), *out = malloc(MAX);
    size_t nin = 0, nout = 0;
    unsigned seed = 12345;
    const void *p = NULL;
    size_t n = 0;
    for (int step = 0; step < 20000; step++) {
        seed = seed * 1103515245 + 12345;
        unsigned r = seed >> 8;
        if (r % 3 && nin < MAX - 5000) {
            size_t len = r % 3000;
            for (size_t i = 0; i < len; i++)
                in[nin + i] = (unsigned char)(nin + i + (nin + i) / 251);
            assert_int_equal(sendq_append(q, in + nin, len), 0);
            nin += len;
        } else if (sendq_busy(q)) {
            size_t sent = n ? (r / 3) % (n + 1) : 0;
            memcpy(out + nout, p, sent);
            nout += sent;
            sendq_done(q, sent);
        } else if (sendq_next(q, &p, &n)) {
            assert_true(n > 0);
        }
        assert_int_equal(sendq_pending(q), nin - nout);
    }
    if (sendq_busy(q)) {
        memcpy(out + nout, p, n);
        nout += n;
        sendq_done(q, n);
    }
    while (sendq_next(q, &p, &n)) {
        memcpy(out + nout, p, n);
        nout += n;
        sendq_done(q, n);
    }
    assert_int_equal(nout, nin);
    assert_memory_equal(in, out, nin);
    assert_null(q->flight);
    free(in);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coalesce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_while_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_give, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_sends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model, setup, teardown),
    };
    return cmocka_run_group_tests_name("sendq", tests, NULL, NULL);
}
