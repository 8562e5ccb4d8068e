/* test_fsreq.c - file requests (fs.h) through the real ring, with C
 * callbacks, on files in a temporary directory: each step's result, the
 * composite calls, the fd limit shared with connections, closing while
 * a request is in flight, and requests left in flight at destroy. */
#include "core.h"
#include "fds.h"
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

struct t {
    struct core k;
    char dir[64];
    int fds;
};

/* What a done callback saw. */
struct seen {
    int calls, res;
    struct fs_file *file;
    char *buf;
    size_t len;
    struct statx stx;
};

static void on_done(struct core *k, struct fs_req *r, int res)
{
    (void)k;
    struct seen *s = r->data;
    s->calls++;
    s->res = res;
    s->file = r->file; /* fs_open's new file */
    free(s->buf);
    s->buf = r->buf; /* taken */
    s->len = r->len;
    r->buf = NULL;
    s->stx = r->stx;
}

/* Turn the loop until s has been told, within 5 s. */
static void wait_done(struct t *t, struct seen *s)
{
    for (int i = 0; i < 5000 && !s->calls; i++) {
        assert_int_equal(core_wait(&t->k), 0);
        core_run(&t->k);
    }
    assert_int_equal(s->calls, 1);
}

static struct fs_req *req(struct t *t, struct seen *s)
{
    free(s->buf);
    memset(s, 0, sizeof *s);
    struct fs_req *r = fs_req_new(&t->k, on_done, s);
    assert_non_null(r);
    return r;
}

static char *in_dir(struct t *t, const char *name)
{
    static char p[2][128];
    static int which;
    which ^= 1;
    snprintf(p[which], sizeof p[which], "%s/%s", t->dir, name);
    return p[which];
}

static int setup(void **state)
{
    struct t *t = calloc(1, sizeof *t);
    strcpy(t->dir, "/tmp/mr-fsu-XXXXXX");
    t->fds = count_fds();
    struct core_config cfg = { .max_conns = 4, .buffers = 8, .buffer_size = 4096,
                               .max_wait_ms = 1 };
    if (!mkdtemp(t->dir) || core_init(&t->k, &cfg))
        return -1;
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct t *t = *state;
    core_wait(&t->k); /* submit the last closes */
    core_run(&t->k);
    core_destroy(&t->k);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    int rc = system(cmd);
    int fds = count_fds();
    int before = t->fds;
    free(t);
    if (fds != before)
        fprintf(stderr, "fds: %d before, %d after\n", before, fds);
    return rc == 0 && fds == before ? 0 : -1;
}

static struct fs_file *open_ok(struct t *t, const char *path, int flags)
{
    struct seen s = { 0 };
    assert_int_equal(fs_open(&t->k, req(t, &s), path, flags, 0644, NULL), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 0);
    assert_non_null(s.file);
    return s.file;
}

/* open, write (at offsets and appending), read, fstat, fsync, close. */
static void test_file_ops(void **state)
{
    struct t *t = *state;
    struct seen s = { 0 };
    struct fs_file *f = open_ok(t, in_dir(t, "a"), O_RDWR | O_CREAT | O_TRUNC);
    assert_int_equal(fs_open_files(&t->k), 1);
    assert_int_equal(fs_write(&t->k, req(t, &s), f, "hello world", 11, 0), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 11);
    assert_int_equal(fs_write(&t->k, req(t, &s), f, "W", 1, 6), 0);
    wait_done(t, &s);
    assert_int_equal(fs_read(&t->k, req(t, &s), f, 100, 0), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 11);
    assert_memory_equal(s.buf, "hello World", 11);
    assert_int_equal(fs_read(&t->k, req(t, &s), f, 100, 11), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 0); /* end of file */
    char mine[4];
    assert_int_equal(fs_read_into(&t->k, req(t, &s), f, mine, 4, 2), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 4);
    assert_null(s.buf); /* the caller's buffer is not handed over */
    assert_memory_equal(mine, "llo ", 4);
    assert_int_equal(fs_fsync(&t->k, req(t, &s), f), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 0);
    assert_int_equal(fs_fstat(&t->k, req(t, &s), f), 0);
    wait_done(t, &s);
    assert_int_equal(s.stx.stx_size, 11);
    assert_true(S_ISREG(s.stx.stx_mode));
    fs_close(&t->k, f);
    assert_int_equal(fs_open_files(&t->k), 0);
    free(s.buf);
}

/* Paths: stat (following or not), rename, unlink, mkdir, rmdir. */
static void test_path_ops(void **state)
{
    struct t *t = *state;
    struct seen s = { 0 };
    assert_int_equal(fs_mkdir(&t->k, req(t, &s), in_dir(t, "d"), 0700), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 0);
    assert_int_equal(fs_mkdir(&t->k, req(t, &s), in_dir(t, "d"), 0700), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, -EEXIST);
    assert_int_equal(symlink("d", in_dir(t, "l")), 0);
    assert_int_equal(fs_stat(&t->k, req(t, &s), in_dir(t, "l"), true), 0);
    wait_done(t, &s);
    assert_true(S_ISDIR(s.stx.stx_mode));
    assert_int_equal(s.stx.stx_mode & 07777, 0700);
    assert_int_equal(fs_stat(&t->k, req(t, &s), in_dir(t, "l"), false), 0);
    wait_done(t, &s);
    assert_true(S_ISLNK(s.stx.stx_mode));
    assert_int_equal(fs_rename(&t->k, req(t, &s), in_dir(t, "l"), in_dir(t, "m")), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 0);
    assert_int_equal(fs_unlink(&t->k, req(t, &s), in_dir(t, "m"), false), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 0);
    assert_int_equal(fs_unlink(&t->k, req(t, &s), in_dir(t, "d"), false), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, -EISDIR);
    assert_int_equal(fs_unlink(&t->k, req(t, &s), in_dir(t, "d"), true), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 0);
    assert_int_equal(fs_stat(&t->k, req(t, &s), in_dir(t, "d"), true), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, -ENOENT);
    free(s.buf);
}

/* read_file of a file, of an empty one, of one whose size says 0
 * (/proc), of a missing one; write_file replaces and leaves nothing
 * behind; list names what is there. */
static void test_composites(void **state)
{
    struct t *t = *state;
    struct seen s = { 0 };
    static char big[3 << 20];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 7);
    assert_int_equal(fs_write_file(&t->k, req(t, &s), in_dir(t, "w"), big, sizeof big), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 0);
    assert_int_equal(fs_write_file(&t->k, req(t, &s), in_dir(t, "w"), "new", 3), 0);
    wait_done(t, &s);
    assert_int_equal(fs_read_file(&t->k, req(t, &s), in_dir(t, "w")), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 3);
    assert_memory_equal(s.buf, "new", 3);
    assert_int_equal(fs_write_file(&t->k, req(t, &s), in_dir(t, "w"), big, sizeof big), 0);
    wait_done(t, &s);
    assert_int_equal(fs_read_file(&t->k, req(t, &s), in_dir(t, "w")), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, (int)sizeof big);
    assert_memory_equal(s.buf, big, sizeof big);
    assert_int_equal(fs_write_file(&t->k, req(t, &s), in_dir(t, "e"), "", 0), 0);
    wait_done(t, &s);
    assert_int_equal(fs_read_file(&t->k, req(t, &s), in_dir(t, "e")), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 0);
    assert_int_equal(fs_read_file(&t->k, req(t, &s), "/proc/self/status"), 0);
    wait_done(t, &s);
    assert_true(s.res > 100);
    assert_non_null(memmem(s.buf, s.len, "Name:", 5));
    assert_int_equal(fs_read_file(&t->k, req(t, &s), in_dir(t, "nope")), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, -ENOENT);
    assert_int_equal(fs_write_file(&t->k, req(t, &s), in_dir(t, "no/x"), "x", 1), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, -ENOENT);
    assert_int_equal(fs_list(&t->k, req(t, &s), t->dir), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 2); /* "w" and "e": no temporary file left */
    assert_int_equal(s.len, 4);
    assert_true(!memcmp(s.buf, "w\0e\0", 4) || !memcmp(s.buf, "e\0w\0", 4));
    assert_int_equal(fs_list(&t->k, req(t, &s), in_dir(t, "w")), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, -ENOTDIR);
    assert_int_equal(fs_open_files(&t->k), 0);
    free(s.buf);
}

/* beneath: inside works, ".." and an outward symlink fail with EXDEV. */
static void test_beneath(void **state)
{
    struct t *t = *state;
    struct seen s = { 0 };
    mkdir(in_dir(t, "root"), 0755);
    close(open(in_dir(t, "root/in"), O_CREAT | O_WRONLY, 0644));
    close(open(in_dir(t, "out"), O_CREAT | O_WRONLY, 0644));
    assert_int_equal(symlink("../out", in_dir(t, "root/esc")), 0);
    const char *root = strdup(in_dir(t, "root"));
    assert_int_equal(fs_open(&t->k, req(t, &s), "in", O_RDONLY, 0, root), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 0);
    fs_close(&t->k, s.file);
    const char *bad[] = { "../out", "esc", "/etc/passwd" };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fs_open(&t->k, req(t, &s), bad[i], O_RDONLY, 0, root), 0);
        wait_done(t, &s);
        assert_int_equal(s.res, -EXDEV);
    }
    assert_int_equal(fs_open(&t->k, req(t, &s), "in", O_RDONLY, 0, in_dir(t, "nodir")), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, -ENOENT);
    assert_int_equal(fs_open_files(&t->k), 0);
    free((void *)root);
    free(s.buf);
}

/* The table has 4 slots: 4 files, then EMFILE (and no connection could
 * be made either, with the same error); a close frees a slot. */
static void test_limit(void **state)
{
    struct t *t = *state;
    struct seen s = { 0 };
    struct fs_file *f[4];
    for (int i = 0; i < 4; i++)
        f[i] = open_ok(t, in_dir(t, "lim"), O_RDWR | O_CREAT);
    struct fs_req *r = req(t, &s);
    assert_int_equal(fs_open(&t->k, r, in_dir(t, "lim"), O_RDONLY, 0, NULL), -EMFILE);
    fs_req_free(r);
    r = req(t, &s);
    assert_int_equal(fs_read_file(&t->k, r, in_dir(t, "lim")), -EMFILE);
    fs_req_free(r);
    struct conn *c;
    /* files hold the slots: the error says so, as a file's would */
    assert_int_equal(core_connect_new(&t->k, NULL, &c), -EMFILE);
    fs_close(&t->k, f[0]);
    f[0] = open_ok(t, in_dir(t, "lim"), O_RDONLY);
    for (int i = 0; i < 4; i++)
        fs_close(&t->k, f[i]);
    assert_int_equal(fs_open_files(&t->k), 0);
    free(s.buf);
}

/* A close while a read is in flight waits for it: the read completes
 * on the fd it was given, then the fd goes. */
static void test_close_in_flight(void **state)
{
    struct t *t = *state;
    struct seen s = { 0 };
    struct fs_file *f = open_ok(t, in_dir(t, "c"), O_RDWR | O_CREAT);
    assert_int_equal(fs_write(&t->k, req(t, &s), f, "abc", 3, 0), 0);
    wait_done(t, &s);
    int fds = count_fds();
    assert_int_equal(fs_read(&t->k, req(t, &s), f, 3, 0), 0);
    fs_close(&t->k, f); /* the read still holds it */
    assert_int_equal(fs_open_files(&t->k), 1);
    struct fs_req *r = fs_req_new(&t->k, on_done, &s);
    assert_int_equal(fs_read(&t->k, r, f, 3, 0), -EBADF); /* closing: no more */
    fs_req_free(r);
    wait_done(t, &s);
    assert_int_equal(s.res, 3);
    assert_memory_equal(s.buf, "abc", 3);
    assert_int_equal(fs_open_files(&t->k), 0);
    for (int i = 0; i < 10 && count_fds() >= fds; i++) { /* the close's turn */
        core_wait(&t->k);
        core_run(&t->k);
    }
    assert_int_equal(count_fds(), fds - 1);
    free(s.buf);
}

/* Requests still in flight when the core goes are freed with it (ASan
 * says whether anything leaks). */
static void test_destroy_in_flight(void **state)
{
    struct t *t = *state;
    struct seen s = { 0 };
    struct fs_file *f = open_ok(t, in_dir(t, "x"), O_RDWR | O_CREAT);
    assert_int_equal(fs_read(&t->k, req(t, &s), f, 1 << 20, 0), 0);
    struct seen s2 = { 0 };
    assert_int_equal(fs_stat(&t->k, req(t, &s2), "/proc/self/status", true), 0);
    core_destroy(&t->k);
    fs_close(&t->k, f); /* after the ring: close(2) at once */
    assert_int_equal(s.calls + s2.calls, 0);
    struct core_config cfg = { .max_conns = 4, .buffers = 8, .buffer_size = 4096,
                               .max_wait_ms = 1 };
    assert_int_equal(core_init(&t->k, &cfg), 0); /* for the teardown */
}

/* fs_splice: a file of 300,000 bytes asked 1 MiB at a time moves whole
 * (the linked splice is cancelled by the short first one, and the rest
 * of the pipe follows), then 0 at the end of the file. */
static void ignore_cqe(struct core *k, struct core_op *op,
                       const struct io_uring_cqe *cqe)
{
    (void)k, (void)op, (void)cqe;
}

static void test_splice(void **state)
{
    struct t *t = *state;
    struct seen s = { 0 };
    static char data[300000], got[300000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i * 13 + 1);
    int w = open(in_dir(t, "sp"), O_CREAT | O_WRONLY, 0644);
    assert_int_equal(write(w, data, sizeof data), (ssize_t)sizeof data);
    close(w);
    struct fs_file *f = open_ok(t, in_dir(t, "sp"), O_RDONLY);
    int p[2], sv[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_true(fcntl(p[1], F_SETPIPE_SZ, 1 << 20) >= (1 << 20));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int big = 4 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    assert_int_equal(fs_splice(&t->k, req(t, &s), f, 0, 1 << 20, p[1], p[0], sv[0]), 0);
    size_t have = 0;
    for (int i = 0; i < 5000 && !s.calls; i++) {
        assert_int_equal(core_wait(&t->k), 0);
        core_run(&t->k);
        ssize_t n;
        while ((n = recv(sv[1], got + have, sizeof got - have, MSG_DONTWAIT)) > 0)
            have += (size_t)n;
    }
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.res, (int)sizeof data);
    while (have < sizeof got) {
        ssize_t n = recv(sv[1], got + have, sizeof got - have, 0);
        assert_true(n > 0);
        have += (size_t)n;
    }
    assert_memory_equal(got, data, sizeof data);
    /* again with one free slot in the SQ: the linked pair goes in one
     * submission, not the first alone with its link dangling */
    static struct core_op nop_op = { .done = ignore_cqe };
    struct io_uring *ring = &t->k.loop.ring;
    while (io_uring_sq_space_left(ring) > 1)
        io_uring_prep_nop(core_op_sqe(&t->k, &nop_op));
    assert_int_equal(fs_splice(&t->k, req(t, &s), f, 0, 1 << 20, p[1], p[0], sv[0]), 0);
    memset(got, 0, sizeof got);
    have = 0;
    for (int i = 0; i < 5000 && (!s.calls || have < sizeof got); i++) {
        if (!s.calls) {
            assert_int_equal(core_wait(&t->k), 0);
            core_run(&t->k);
        }
        ssize_t n;
        while ((n = recv(sv[1], got + have, sizeof got - have, MSG_DONTWAIT)) > 0)
            have += (size_t)n;
    }
    assert_int_equal(s.res, (int)sizeof data);
    assert_int_equal(have, sizeof data);
    assert_memory_equal(got, data, sizeof data);
    assert_int_equal(fs_splice(&t->k, req(t, &s), f, sizeof data, 1 << 20, p[1], p[0], sv[0]), 0);
    wait_done(t, &s);
    assert_int_equal(s.res, 0);
    fs_close(&t->k, f);
    close(p[0]), close(p[1]), close(sv[0]), close(sv[1]);
    free(s.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_composites, setup, teardown),
        cmocka_unit_test_setup_teardown(test_beneath, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_splice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_in_flight, setup, teardown),
    };
    return cmocka_run_group_tests_name("fs", tests, NULL, NULL);
}
