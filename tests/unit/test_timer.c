/* test_timer.c - the deadline heap. */
#include "timer.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

static void test_order(void **state)
{
    (void)state;
    struct timer_heap h = { 0 };
    struct timer_entry e;
    assert_null(timer_peek(&h));
    assert_false(timer_pop_due(&h, 1000, &e));
    static const uint64_t due[] = { 50, 10, 40, 10, 30, 20 };
    for (int i = 0; i < 6; i++)
        assert_int_equal(timer_push(&h, due[i], TIMER_USER, (uint64_t)i), 0);
    assert_int_equal(timer_peek(&h)->due, 10);
    assert_false(timer_pop_due(&h, 9, &e));        /* nothing due yet */
    uint64_t last = 0;
    int n = 0;
    while (timer_pop_due(&h, 45, &e)) {
        assert_true(e.due >= last);
        assert_true(e.due <= 45);
        last = e.due;
        n++;
    }
    assert_int_equal(n, 5);
    assert_int_equal(timer_peek(&h)->due, 50);
    assert_int_equal(timer_peek(&h)->key, 0);
    timer_heap_free(&h);
}

/* Many random deadlines come out sorted, with their keys. */
static void test_random(void **state)
{
    (void)state;
    struct timer_heap h = { 0 };
    unsigned seed = 7;
    for (uint64_t i = 0; i < 10000; i++) {
        seed = seed * 1103515245 + 12345;
        uint64_t due = seed % 100000;
        assert_int_equal(timer_push(&h, due, TIMER_IDLE, due * 3), 0);
    }
    struct timer_entry e;
    uint64_t last = 0;
    int n = 0;
    while (timer_pop_due(&h, UINT64_MAX, &e)) {
        assert_true(e.due >= last);
        assert_int_equal(e.key, e.due * 3);
        assert_int_equal(e.kind, TIMER_IDLE);
        last = e.due;
        n++;
    }
    assert_int_equal(n, 10000);
    timer_heap_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests_name("timer", tests, NULL, NULL);
}
