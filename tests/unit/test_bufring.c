/* test_bufring.c - the receive buffer pool's bookkeeping (no kernel). */
#include "bufring.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

enum { COUNT = 8, SIZE = 64 };

static int setup(void **state)
{
    struct bufring *b = calloc(1, sizeof *b);
    if (!b || bufring_init(b, COUNT, SIZE))
        return -1;
    *state = b;
    return 0;
}

static int teardown(void **state)
{
    bufring_destroy(*state);
    free(*state);
    return 0;
}

static void test_init_fills_ring(void **state)
{
    struct bufring *b = *state;
    assert_int_equal(b->br->tail, COUNT);
    for (unsigned i = 0; i < COUNT; i++) {
        struct io_uring_buf *e = &b->br->bufs[i];
        assert_ptr_equal((void *)(uintptr_t)e->addr, b->base + i * SIZE);
        assert_int_equal(e->len, SIZE);
        assert_int_equal(e->bid, i);
    }
    assert_int_equal(bufring_avail(b), COUNT);
}

static void test_take_put(void **state)
{
    struct bufring *b = *state;
    unsigned char *p = bufring_take(b, 5);
    assert_ptr_equal(p, b->base + 5 * SIZE);
    bufring_take(b, 2);
    assert_int_equal(b->out, 2);
    assert_int_equal(bufring_avail(b), COUNT - 2);

    bufring_put(b, 5);
    assert_int_equal(b->br->tail, COUNT + 1);
    struct io_uring_buf *e = &b->br->bufs[(COUNT + 1 - 1) & (COUNT - 1)];
    assert_int_equal(e->bid, 5);
    assert_ptr_equal((void *)(uintptr_t)e->addr, b->base + 5 * SIZE);
    assert_int_equal(e->len, SIZE);
    assert_int_equal(bufring_avail(b), COUNT - 1);

    bufring_put(b, 2);
    e = &b->br->bufs[(COUNT + 2 - 1) & (COUNT - 1)];
    assert_int_equal(e->bid, 2);
    assert_int_equal(b->br->tail, COUNT + 2);
    assert_int_equal(bufring_avail(b), COUNT);
}

/* Incremental mode: completions with BUF_MORE point further into the
 * same buffer and leave it with the kernel; the last one gives it back
 * and the next use of that buffer starts at its beginning again. */
static void test_incremental(void **state)
{
    struct bufring *b = *state;
    b->off = calloc(COUNT, sizeof *b->off);
    assert_non_null(b->off);
    uint32_t tail = b->br->tail;
    uint32_t more = 3u << IORING_CQE_BUFFER_SHIFT | IORING_CQE_F_BUFFER | BUFRING_CQE_MORE;
    uint32_t last = 3u << IORING_CQE_BUFFER_SHIFT | IORING_CQE_F_BUFFER;
    unsigned char *start = b->base + 3 * SIZE;

    assert_ptr_equal(bufring_recv_data(b, more), start);
    bufring_recv_done(b, more, 10);
    assert_ptr_equal(bufring_recv_data(b, more), start + 10);
    bufring_recv_done(b, more, 20);
    assert_int_equal(b->br->tail, tail);           /* still the kernel's */
    assert_int_equal(bufring_avail(b), COUNT);

    assert_ptr_equal(bufring_recv_data(b, last), start + 30);
    assert_int_equal(bufring_avail(b), COUNT - 1); /* ours while used */
    bufring_recv_done(b, last, 34);
    assert_int_equal(b->br->tail, tail + 1);       /* given back, whole */
    struct io_uring_buf *e = &b->br->bufs[tail & (COUNT - 1)];
    assert_int_equal(e->bid, 3);
    assert_int_equal(e->len, SIZE);
    assert_int_equal(bufring_avail(b), COUNT);
    assert_ptr_equal(bufring_recv_data(b, more), start);
    bufring_recv_done(b, more, 1);
}

static void test_bad_counts(void **state)
{
    (void)state;
    struct bufring b;
    assert_int_equal(bufring_init(&b, 3, 64), -EINVAL);
    assert_int_equal(bufring_init(&b, 0, 64), -EINVAL);
    assert_int_equal(bufring_init(&b, 65536, 64), -EINVAL);
    assert_int_equal(bufring_init(&b, 8, 0), -EINVAL);
}

static void test_cqe_bid(void **state)
{
    (void)state;
    assert_int_equal(bufring_cqe_bid(7u << IORING_CQE_BUFFER_SHIFT | IORING_CQE_F_BUFFER), 7);
    assert_int_equal(bufring_cqe_bid(32767u << IORING_CQE_BUFFER_SHIFT | IORING_CQE_F_MORE | IORING_CQE_F_BUFFER), 32767);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_fills_ring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incremental, setup, teardown),
        cmocka_unit_test(test_bad_counts),
        cmocka_unit_test(test_cqe_bid),
    };
    return cmocka_run_group_tests_name("bufring", tests, NULL, NULL);
}
