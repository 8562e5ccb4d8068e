/* test_watch.c - which saves concern the watched files. The events are
 * read here with read(2); moonring reads them through its ring. */
#include "watch.h"

#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

struct fixture {
    struct watch w;
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/moonring-watch-XXXXXX");
    if (!mkdtemp(f->dir) || watch_init(&f->w))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/app.lua", f->dir);
    FILE *fp = fopen(f->path, "w");
    fputs("return {}\n", fp);
    fclose(fp);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    watch_destroy(&f->w);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* Read the pending events (waiting briefly) and match them. */
static bool events_match(struct watch *w)
{
    struct pollfd pfd = { w->fd, POLLIN, 0 };
    if (poll(&pfd, 1, 1000) != 1)
        return false;
    ssize_t n = read(w->fd, w->buf, sizeof w->buf);
    assert_true(n > 0);
    return watch_match(w, w->buf, (size_t)n);
}

static void test_saves(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(watch_add(&f->w, f->path), 0);
    assert_int_equal(watch_add(&f->w, f->path), 0);   /* twice: no-op */
    assert_int_equal(f->w.nfiles, 1);
    assert_int_equal(f->w.ndirs, 1);

    write_file(f->path, "in place\n");                 /* truncate + write */
    assert_true(events_match(&f->w));

    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s/.app.lua.swp", f->dir);
    write_file(tmp, "renamed\n");
    assert_false(events_match(&f->w));                 /* another name */
    assert_int_equal(rename(tmp, f->path), 0);         /* vim, sed -i */
    assert_true(events_match(&f->w));

    assert_int_equal(unlink(f->path), 0);              /* delete, re-create */
    write_file(f->path, "again\n");
    assert_true(events_match(&f->w));

    char other[160];
    snprintf(other, sizeof other, "%s/other.lua", f->dir);
    write_file(other, "x\n");
    assert_false(events_match(&f->w));
    unlink(other);
    unlink(f->path);
    rmdir(f->dir);
}

static void test_missing_dir(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(watch_add(&f->w, "/nonexistent/dir/app.lua"), -ENOENT);
    assert_int_equal(f->w.nfiles, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_saves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_dir, setup, teardown),
    };
    return cmocka_run_group_tests_name("watch", tests, NULL, NULL);
}
