/* test_ud.c - user_data tags. */
#include "ud.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static void test_round_trip(void **state)
{
    (void)state;
    for (int op = OP_NONE; op < OP_MAX; op++) {
        uint64_t ud = ud_make((enum ud_op)op, 0xabcdef, 0xdeadbeef);
        assert_int_equal(ud_op(ud), op);
        assert_int_equal(ud_gen(ud), 0xabcdef);
        assert_int_equal(ud_slot(ud), 0xdeadbeef);
    }
}

static void test_limits(void **state)
{
    (void)state;
    uint64_t ud = ud_make(OP_SEND, UD_GEN_MASK, UINT32_MAX);
    assert_int_equal(ud_op(ud), OP_SEND);
    assert_int_equal(ud_gen(ud), UD_GEN_MASK);
    assert_int_equal(ud_slot(ud), UINT32_MAX);
    /* a generation wider than 24 bits is masked, never spills into op */
    ud = ud_make(OP_RECV, 0xff000001, 5);
    assert_int_equal(ud_op(ud), OP_RECV);
    assert_int_equal(ud_gen(ud), 1);
}

static void test_next_gen(void **state)
{
    (void)state;
    assert_int_equal(ud_next_gen(1), 2);
    assert_int_equal(ud_next_gen(UD_GEN_MASK - 1), UD_GEN_MASK);
    assert_int_equal(ud_next_gen(UD_GEN_MASK), 1); /* wraps past 0 */
    assert_int_equal(ud_next_gen(0), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_next_gen),
    };
    return cmocka_run_group_tests_name("ud", tests, NULL, NULL);
}
