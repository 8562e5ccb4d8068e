/* test_shdict.c - the shared dictionary: every operation, TTLs, LRU
 * eviction, its buddy allocator giving memory back, processes working on
 * it at once, and one killed by SIGKILL while it holds a shard's lock in
 * the middle of a change. */
#include "shdict.h"

#include <setjmp.h>
#include <stdbool.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

static char err[256];

static int dict_setup(void **state)
{
    *state = shdict_new("t", 4u << 20, err, sizeof err);
    return *state ? 0 : -1;
}

static int dict_teardown(void **state)
{
    shdict_free(*state);
    return 0;
}

#define K(s) s, strlen(s)

static int set_str(struct shdict *d, const char *k, const char *v, double ttl)
{
    struct shdict_val val = { .type = SHD_STRING, .str = v, .len = strlen(v) };
    return shdict_store(d, SHD_SET, K(k), &val, ttl, NULL);
}

/* The string under k, in buf, or NULL. */
static const char *get_str(struct shdict *d, const char *k, char *buf, size_t cap)
{
    struct shdict_val v;
    if (shdict_get(d, K(k), buf, cap - 1, &v) != SHD_OK || v.type != SHD_STRING)
        return NULL;
    buf[v.len] = 0;
    return buf;
}

static void test_types_and_flags(void **state)
{
    struct shdict *d = *state;
    char buf[64];
    struct shdict_val v, in = { .type = SHD_NUMBER, .num = 2.5, .flags = 7 };
    assert_int_equal(shdict_store(d, SHD_SET, K("n"), &in, 0, NULL), SHD_OK);
    assert_int_equal(shdict_get(d, K("n"), buf, sizeof buf, &v), SHD_OK);
    assert_int_equal(v.type, SHD_NUMBER);
    assert_true(v.num == 2.5);
    assert_int_equal(v.flags, 7);
    in = (struct shdict_val){ .type = SHD_BOOLEAN, .num = 1 };
    assert_int_equal(shdict_store(d, SHD_SET, K("n"), &in, 0, NULL), SHD_OK);
    assert_int_equal(shdict_get(d, K("n"), buf, sizeof buf, &v), SHD_OK);
    assert_int_equal(v.type, SHD_BOOLEAN);
    assert_true(v.num == 1);
    assert_int_equal(v.flags, 0);
    assert_int_equal(set_str(d, "s", "hello", 0), SHD_OK);
    assert_string_equal(get_str(d, "s", buf, sizeof buf), "hello");
    /* a buffer too small says how much is needed */
    assert_int_equal(shdict_get(d, K("s"), buf, 3, &v), SHD_SMALL_BUF);
    assert_int_equal(v.len, 5);
    assert_int_equal(shdict_get(d, K("nope"), buf, sizeof buf, &v), SHD_NOT_FOUND);
    assert_int_equal(shdict_get(d, "", 0, buf, sizeof buf, &v), SHD_BAD_KEY);
    struct shdict_stats st;
    shdict_stats(d, &st);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.entries, 2);
}

static void test_add_replace_delete(void **state)
{
    struct shdict *d = *state;
    char buf[64];
    struct shdict_val v = { .type = SHD_STRING, .str = "a", .len = 1 };
    assert_int_equal(shdict_store(d, SHD_REPLACE, K("k"), &v, 0, NULL), SHD_NOT_FOUND);
    assert_int_equal(shdict_store(d, SHD_ADD, K("k"), &v, 0, NULL), SHD_OK);
    v.str = "b";
    assert_int_equal(shdict_store(d, SHD_ADD, K("k"), &v, 0, NULL), SHD_EXISTS);
    assert_string_equal(get_str(d, "k", buf, sizeof buf), "a");
    v.str = "a longer value, in a block of another size than the first";
    v.len = strlen(v.str);
    assert_int_equal(shdict_store(d, SHD_REPLACE, K("k"), &v, 0, NULL), SHD_OK);
    assert_string_equal(get_str(d, "k", buf, sizeof buf), v.str);
    assert_int_equal(shdict_delete(d, K("k")), SHD_OK);
    assert_int_equal(shdict_delete(d, K("k")), SHD_NOT_FOUND);
    assert_null(get_str(d, "k", buf, sizeof buf));
}

static void test_incr(void **state)
{
    struct shdict *d = *state;
    double out, init = 10;
    assert_int_equal(shdict_incr(d, K("c"), 1, NULL, 0, &out), SHD_NOT_FOUND);
    assert_int_equal(shdict_incr(d, K("c"), 2, &init, 0, &out), SHD_OK);
    assert_true(out == 12);
    assert_int_equal(shdict_incr(d, K("c"), -5, &init, 0, &out), SHD_OK);
    assert_true(out == 7);
    assert_int_equal(set_str(d, "s", "x", 0), SHD_OK);
    assert_int_equal(shdict_incr(d, K("s"), 1, &init, 0, &out), SHD_NOT_NUMBER);
}

static void test_ttl(void **state)
{
    struct shdict *d = *state;
    char buf[64];
    double left;
    assert_int_equal(set_str(d, "t", "v", 0.05), SHD_OK);
    assert_int_equal(set_str(d, "forever", "v", 0), SHD_OK);
    assert_int_equal(shdict_ttl(d, K("t"), &left), SHD_OK);
    assert_true(left > 0.03 && left <= 0.05);
    assert_int_equal(shdict_ttl(d, K("forever"), &left), SHD_OK);
    assert_true(left == 0);
    assert_int_equal(shdict_ttl(d, K("none"), &left), SHD_NOT_FOUND);
    assert_int_equal(shdict_expire(d, K("forever"), 100), SHD_OK);
    assert_int_equal(shdict_ttl(d, K("forever"), &left), SHD_OK);
    assert_true(left > 99 && left <= 100);
    assert_int_equal(shdict_expire(d, K("forever"), 0), SHD_OK);
    assert_int_equal(shdict_ttl(d, K("forever"), &left), SHD_OK);
    assert_true(left == 0);
    nanosleep(&(struct timespec){ 0, 80 * 1000000 }, NULL);
    assert_null(get_str(d, "t", buf, sizeof buf));
    assert_int_equal(shdict_ttl(d, K("t"), &left), SHD_NOT_FOUND);
    /* an expired value is no obstacle to add, and a replace finds none */
    assert_int_equal(set_str(d, "t2", "v", 0.01), SHD_OK);
    nanosleep(&(struct timespec){ 0, 30 * 1000000 }, NULL);
    struct shdict_val v = { .type = SHD_STRING, .str = "w", .len = 1 };
    assert_int_equal(shdict_store(d, SHD_REPLACE, K("t2"), &v, 0, NULL), SHD_NOT_FOUND);
    assert_int_equal(shdict_store(d, SHD_ADD, K("t2"), &v, 0, NULL), SHD_OK);
    assert_string_equal(get_str(d, "t2", buf, sizeof buf), "w");
}

static void test_keys_and_flush(void **state)
{
    struct shdict *d = *state;
    char k[16], *buf;
    size_t len;
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "key%d", i);
        assert_int_equal(set_str(d, k, "v", 0), SHD_OK);
    }
    assert_int_equal(shdict_keys(d, 0, &buf, &len), 100);
    int seen = 0;
    for (size_t at = 0; at < len;) {
        uint16_t kl;
        memcpy(&kl, buf + at, 2);
        assert_true(kl >= 4 && memcmp(buf + at + 2, "key", 3) == 0);
        at += 2u + kl;
        seen++;
    }
    assert_int_equal(seen, 100);
    free(buf);
    assert_int_equal(shdict_keys(d, 10, &buf, &len), 10);
    free(buf);
    struct shdict_stats st;
    shdict_stats(d, &st);
    assert_true(shdict_free_space(d) < st.capacity);
    shdict_flush_all(d);
    assert_int_equal(shdict_keys(d, 0, &buf, &len), 0);
    free(buf);
    assert_int_equal(shdict_free_space(d), st.capacity);
}

/* A small dictionary (one shard) filled with 100-byte values: the least
 * recently used go first, a value read lately stays, and once everything
 * is deleted the blocks merge back so that the largest value fits. */
/* Sizes whose arena has more blocks than 1/65 of the shard (rounded
 * down) had marks for: the last block's mark landed on the arena's
 * first block header, and the allocator broke once it was used. Fill
 * each size past capacity, with gets marking every block. */
static void test_mark_room(void **state)
{
    (void)state;
    static const size_t kib[] = { 116, 248, 512, 520, 780, 1056 };
    char k[24], buf[64];
    for (size_t i = 0; i < sizeof kib / sizeof kib[0]; i++) {
        struct shdict *d = shdict_new("sizes", kib[i] << 10, err, sizeof err);
        assert_non_null(d);
        for (int n = 0; n < 30000; n++) {
            snprintf(k, sizeof k, "key%d", n);
            assert_int_equal(set_str(d, k, "v", 0), SHD_OK);
            get_str(d, k, buf, sizeof buf);
            if (n % 7 == 0)
                shdict_delete(d, k, strlen(k));
        }
        shdict_flush_all(d);
        struct shdict_stats st;
        shdict_stats(d, &st);
        assert_int_equal(shdict_free_space(d), st.capacity);
        shdict_free(d);
    }
}

static void test_lru_eviction(void **state)
{
    (void)state;
    struct shdict *d = shdict_new("small", 64u << 10, err, sizeof err);
    assert_non_null(d);
    char k[16], val[100], buf[128];
    memset(val, 'x', sizeof val - 1);
    val[sizeof val - 1] = 0;
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(set_str(d, k, val, 0), SHD_OK);
        assert_non_null(get_str(d, "k0", buf, sizeof buf)); /* keep k0 hot */
    }
    struct shdict_stats st;
    shdict_stats(d, &st);
    assert_true(st.evictions > 1000);
    assert_int_equal(st.entries + st.evictions, 2000);
    assert_non_null(get_str(d, "k0", buf, sizeof buf));
    assert_null(get_str(d, "k1", buf, sizeof buf));
    assert_non_null(get_str(d, "k1999", buf, sizeof buf));
    bool evicted;
    struct shdict_val v = { .type = SHD_STRING, .str = val, .len = sizeof val };
    assert_int_equal(shdict_store(d, SHD_SET, K("one more"), &v, 0, &evicted), SHD_OK);
    assert_true(evicted);

    /* too big for the dictionary, ever */
    size_t big = 64u << 10;
    char *huge = calloc(1, big);
    v.str = huge;
    v.len = big;
    assert_int_equal(shdict_store(d, SHD_SET, K("huge"), &v, 0, NULL), SHD_NO_MEMORY);
    /* the largest that fits takes the whole arena: everything goes */
    v.len = 30u << 10;
    assert_int_equal(shdict_store(d, SHD_SET, K("half"), &v, 0, NULL), SHD_OK);
    shdict_stats(d, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(shdict_delete(d, K("half")), SHD_OK);
    assert_int_equal(shdict_free_space(d), st.capacity);
    free(huge);
    shdict_free(d);
}

/* Processes at once: 4 of them add 1 to one key 20,000 times each, and
 * write and read values that say what they should hold. */
static void test_processes(void **state)
{
    struct shdict *d = *state;
    enum { PROCS = 4, N = 20000 };
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p])
            continue;
        double out, zero = 0;
        char k[16], v[64], buf[128];
        int bad = 0;
        for (int i = 0; i < N; i++) {
            if (shdict_incr(d, K("hits"), 1, &zero, 0, &out) != SHD_OK)
                bad++;
            snprintf(k, sizeof k, "w%d", i % 50);
            snprintf(v, sizeof v, "%s=%d", k, p * N + i);
            if (set_str(d, k, v, 0) != SHD_OK)
                bad++;
            const char *got = get_str(d, k, buf, sizeof buf);
            if (!got || strncmp(got, k, strlen(k)) || got[strlen(k)] != '=')
                bad++;
        }
        _exit(bad ? 1 : 0);
    }
    for (int p = 0; p < PROCS; p++) {
        int st;
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    char buf[16];
    struct shdict_val v;
    assert_int_equal(shdict_get(d, K("hits"), buf, sizeof buf, &v), SHD_OK);
    assert_true(v.num == PROCS * N);
}

/* A value of n bytes that says whether it was read whole: its length in
 * the first 4 bytes, then bytes that follow from it. */
static size_t make_value(char *v, unsigned n)
{
    n = 8 + n % 3000;
    memcpy(v, &n, 4);
    for (unsigned i = 4; i < n; i++)
        v[i] = (char)(n + i);
    return n;
}

static bool whole(const char *v, size_t len)
{
    unsigned n;
    if (len < 8)
        return false;
    memcpy(&n, v, 4);
    if (n != len)
        return false;
    for (unsigned i = 4; i < n; i++)
        if (v[i] != (char)(n + i))
            return false;
    return true;
}

/* Readers take no lock: while two processes rewrite 64 keys with values
 * of every size (blocks freed, merged, split, chains relinked, entries
 * evicted from a small dictionary), two others read them, and every
 * value they get is one that was written whole. */
static void test_readers_see_whole_values(void **state)
{
    (void)state;
    struct shdict *d = shdict_new("race", 256u << 10, err, sizeof err);
    assert_non_null(d);
    enum { PROCS = 4 };
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p])
            continue;
        char k[16], v[4096];
        long bad = 0, seen = 0;
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        srand((unsigned)p + 1);
        for (unsigned i = 0;; i++) {
            if ((i & 255) == 0) {
                clock_gettime(CLOCK_MONOTONIC, &t);
                if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > 300)
                    break;
            }
            snprintf(k, sizeof k, "key%d", rand() % 64);
            if (p < 2) {
                struct shdict_val val = { .type = SHD_STRING, .str = v,
                                          .len = make_value(v, (unsigned)rand()) };
                shdict_store(d, SHD_SET, K(k), &val, 0, NULL);
            } else {
                struct shdict_val val;
                if (shdict_get(d, K(k), v, sizeof v, &val) == SHD_OK) {
                    seen++;
                    bad += !whole(v, val.len);
                }
            }
        }
        _exit(bad ? 1 : p >= 2 && seen == 0 ? 2 : 0);
    }
    for (int p = 0; p < PROCS; p++) {
        int st;
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    shdict_free(d);
}

static void die(void) { raise(SIGKILL); }

/* A process killed inside a store, after taking a block and before
 * linking it: the next locker finds the lock's owner dead and the shard
 * half changed, wipes it (the others keep their entries), and all goes on. */
static void test_killed_holder(void **state)
{
    struct shdict *d = *state;
    char buf[64], k[16];
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof k, "keep%d", i);
        assert_int_equal(set_str(d, k, "v", 0), SHD_OK);
    }
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        shdict_test_hook(d, die);
        set_str(d, "victim", "never stored", 0);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    /* the same key's shard: this lock sees the owner dead */
    assert_null(get_str(d, "victim", buf, sizeof buf));
    struct shdict_stats s;
    shdict_stats(d, &s);
    assert_int_equal(s.wipes, 1);
    assert_true(s.entries > 0 && s.entries < 200); /* only that shard went */
    assert_int_equal(set_str(d, "victim", "stored now", 0), SHD_OK);
    assert_string_equal(get_str(d, "victim", buf, sizeof buf), "stored now");
    /* the wiped shard's memory is whole again: fill every shard over */
    char val[1000];
    memset(val, 'y', sizeof val - 1);
    val[sizeof val - 1] = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof k, "fill%d", i);
        assert_int_equal(set_str(d, k, val, 0), SHD_OK);
    }
    shdict_stats(d, &s);
    assert_true(s.evictions > 0);
    assert_int_equal(s.wipes, 1);
}

static void test_bad_new(void **state)
{
    (void)state;
    assert_null(shdict_new("x", 1000, err, sizeof err));
    assert_non_null(strstr(err, "x"));
}

#define T(f) cmocka_unit_test_setup_teardown(f, dict_setup, dict_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_types_and_flags),
        T(test_add_replace_delete),
        T(test_incr),
        T(test_ttl),
        T(test_keys_and_flush),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_mark_room),
        T(test_processes),
        cmocka_unit_test(test_readers_see_whole_values),
        T(test_killed_holder),
        cmocka_unit_test(test_bad_new),
    };
    return cmocka_run_group_tests_name("shdict", tests, NULL, NULL);
}
