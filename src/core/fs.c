/* fs.c - file requests on the ring (fs.h): one SQE per step, each
 * completion taking the request to its next step or to its end.
 *
 * Directory entries: io_uring has no getdents operation (one was
 * proposed for 5.x and not merged), so fs_list opens and closes the
 * directory through the ring and reads its entries with getdents64(2)
 * in the loop. That is a syscall on the loop's thread, but a bounded
 * one: entries come 32 KiB at a time, a directory that was opened a
 * moment ago has its inode and, for all usual sizes, its blocks in
 * memory, and no file's data is read. A directory on a cold disk can
 * still cost a seek; a handler that lists huge directories on slow
 * storage should cache the listing. */
#include "core_int.h"
#include "fs.h"
#include "log.h"
#include "ud.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_CHUNK (8u << 20)   /* bytes per read of fs_read_file */
#define WRITE_MAX  (1u << 30)   /* bytes per write SQE (the kernel caps at 2 GiB) */
#define LIST_CHUNK (32u << 10)  /* bytes of entries per getdents64 */
#define WF_STAT    6            /* write_file's first step: the old file's mode */

enum { SPLICE_IN = 1, SPLICE_OUT = 2 }; /* splice's completions to come */

enum kind {
    FK_OPEN, FK_READ, FK_WRITE, FK_FSYNC, FK_FSTAT, FK_STAT, FK_RENAME,
    FK_UNLINK, FK_MKDIR, FK_READ_FILE, FK_WRITE_FILE, FK_LIST, FK_SPLICE,
};

static void on_cqe(struct core *k, struct core_op *op,
                   const struct io_uring_cqe *cqe);

/* Completions nobody waits for (closes, the unlink of a failed
 * write_file's temporary file) come here, only when they fail. */
static void on_ignored(struct core *k, struct core_op *op,
                       const struct io_uring_cqe *cqe)
{
    (void)k, (void)op, (void)cqe;
}
static struct core_op ignored_op = { .done = on_ignored };

static int reserve(struct core *k, unsigned n)
{
    struct conn_table *t = &k->conns;
    if (t->live + t->reserved + n > t->max)
        return -EMFILE;
    t->reserved += n;
    k->fs_files += n;
    return 0;
}

static void release(struct core *k, unsigned n)
{
    k->conns.reserved -= n;
    k->fs_files -= n;
    if (k->accept_paused && k->loop.up)
        listener_on_retry(k); /* an fd is free again */
}

/* Close an fd of ours without waiting for it. */
static void close_fd(struct core *k, int fd)
{
    if (k->loop.up) {
        struct io_uring_sqe *sqe = core_op_sqe(k, &ignored_op);
        io_uring_prep_close(sqe, fd);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    } else {
        close(fd);
    }
    release(k, 1);
}

int fs_dup(struct core *k, int fd)
{
    int ret = reserve(k, 1);
    if (ret)
        return ret;
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0) {
        ret = -errno;
        release(k, 1);
        return ret;
    }
    return d;
}

int fs_pipe(struct core *k, int fds[2])
{
    int ret = reserve(k, 2);
    if (ret)
        return ret;
    if (pipe2(fds, O_CLOEXEC)) {
        ret = -errno;
        release(k, 2);
        return ret;
    }
    return 0;
}

void fs_fd_close(struct core *k, int fd)
{
    if (fd >= 0)
        close_fd(k, fd);
}

struct fs_req *fs_req_new(struct core *k, fs_done_fn done, void *data)
{
    (void)k;
    struct fs_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->op.done = on_cqe;
    r->done = done;
    r->data = data;
    r->fd = r->dirfd = -1;
    return r;
}

void fs_req_free(struct fs_req *r)
{
    if (!r)
        return;
    free(r->buf);
    free(r->path);
    free(r->path2);
    free(r);
}

static struct io_uring_sqe *sqe_of(struct core *k, struct fs_req *r)
{
    return core_op_sqe(k, &r->op);
}

/* The request is in flight from now: on the list, holding its file. */
static void started(struct core *k, struct fs_req *r, int kind,
                    struct fs_file *f)
{
    r->kind = kind;
    r->file = f;
    if (f)
        f->users++;
    r->next = k->fs_reqs;
    if (k->fs_reqs)
        k->fs_reqs->prev = r;
    k->fs_reqs = r;
}

static void unlist(struct core *k, struct fs_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        k->fs_reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void file_unuse(struct core *k, struct fs_file *f)
{
    if (--f->users == 0 && f->closing) {
        close_fd(k, f->fd);
        free(f);
    }
}

/* The request's end: its fds closed, done told, the request freed. */
static void finish(struct core *k, struct fs_req *r, int res)
{
    unlist(k, r);
    if (r->fd >= 0)
        close_fd(k, r->fd);
    if (r->dirfd >= 0)
        close_fd(k, r->dirfd);
    r->fd = r->dirfd = -1;
    r->done(k, r, res);
    if (r->kind != FK_OPEN && r->file)
        file_unuse(k, r->file);
    fs_req_free(r);
}

static char *dup_path(const char *p)
{
    return p ? strdup(p) : NULL;
}

/* --- open ---------------------------------------------------------- */

static void open_target(struct core *k, struct fs_req *r)
{
    struct io_uring_sqe *sqe = sqe_of(k, r);
    if (r->dirfd >= 0)
        io_uring_prep_openat2(sqe, r->dirfd, r->path, &r->how);
    else
        io_uring_prep_openat(sqe, AT_FDCWD, r->path, (int)r->how.flags,
                             (mode_t)r->how.mode);
    r->step = 1;
}

int fs_open(struct core *k, struct fs_req *r, const char *path, int flags,
            mode_t mode, const char *beneath)
{
    r->path = dup_path(path);
    r->path2 = dup_path(beneath);
    if (!r->path || (beneath && !r->path2))
        return -ENOMEM;
    int ret = reserve(k, beneath ? 2 : 1);
    if (ret)
        return ret;
    r->how.flags = (uint64_t)(flags | O_CLOEXEC);
    r->how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    r->how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    started(k, r, FK_OPEN, NULL);
    if (beneath) {
        io_uring_prep_openat(sqe_of(k, r), AT_FDCWD, r->path2,
                             O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
        r->step = 0;
    } else {
        open_target(k, r);
    }
    return 0;
}

static void open_step(struct core *k, struct fs_req *r, int res)
{
    if (r->step == 0) { /* the directory it must stay in */
        if (res < 0) {
            release(k, 2);
            finish(k, r, res);
            return;
        }
        r->dirfd = res;
        open_target(k, r);
        return;
    }
    if (res < 0) {
        release(k, 1);
        finish(k, r, res); /* closes dirfd, releasing its reservation */
        return;
    }
    struct fs_file *f = calloc(1, sizeof *f);
    if (!f) {
        r->fd = res; /* finish closes it */
        finish(k, r, -ENOMEM);
        return;
    }
    f->fd = res;
    r->file = f;
    finish(k, r, 0);
}

/* --- one-step requests on files and paths --------------------------- */

/* Reads first ask the page cache alone (RWF_NOWAIT: no I/O is started
 * and nothing waits, so the read completes within the submission), and
 * go to the kernel's io-wq threads (IOSQE_ASYNC) for what is not there.
 * A plain read of a cold file starts its readahead from the loop's own
 * thread, inside io_uring_enter, where reading 256 MiB in 1 MiB reads
 * stalled the loop 20-30 ms at a time (a ping's p99 of 20-46 ms); a
 * thread of io-wq waits for the disk instead. */
static void prep_read(struct core *k, struct fs_req *r, int fd)
{
    size_t n = r->n - r->got;
    if (n > READ_CHUNK && r->kind == FK_READ_FILE)
        n = READ_CHUNK;
    struct io_uring_sqe *sqe = sqe_of(k, r);
    io_uring_prep_read(sqe, fd, r->buf + r->got, (unsigned)n,
                       (uint64_t)(r->off + (int64_t)r->got));
    if (r->cold)
        sqe->flags |= IOSQE_ASYNC;
    else
        sqe->rw_flags = RWF_NOWAIT;
}

/* The page cache could not serve the read (or the file cannot be asked
 * without waiting): again, by a thread that may wait. */
static bool retry_cold(struct core *k, struct fs_req *r, int fd, int res)
{
    if (r->cold || (res != -EAGAIN && res != -EOPNOTSUPP))
        return false;
    r->cold = true;
    prep_read(k, r, fd);
    return true;
}

/* A read of fs_read's completed: true when the request is done, with
 * res its bytes or its error. What the cache held of the range comes
 * first and the rest follows; a thread's read is the kernel's answer
 * (short: at the end of the file, or all a pipe had). */
static bool read_more(struct core *k, struct fs_req *r, int fd, int *res)
{
    if (retry_cold(k, r, fd, *res))
        return false;
    if (*res > 0) {
        r->got += (size_t)*res;
        if (!r->cold && r->got < r->n) {
            prep_read(k, r, fd);
            return false;
        }
    }
    if (*res >= 0 || r->got)
        *res = (int)r->got;
    return true;
}

static int read_common(struct core *k, struct fs_req *r, struct fs_file *f,
                       size_t n, int64_t off)
{
    r->n = n;
    r->off = off;
    started(k, r, FK_READ, f);
    prep_read(k, r, f->fd);
    return 0;
}

/* A read returns what it can: the kernel caps one at about 2 GiB. */
int fs_read(struct core *k, struct fs_req *r, struct fs_file *f, size_t n,
            int64_t off)
{
    if (f->closing)
        return -EBADF;
    if (n > WRITE_MAX)
        n = WRITE_MAX;
    r->buf = malloc(n ? n : 1);
    if (!r->buf)
        return -ENOMEM;
    return read_common(k, r, f, n, off);
}

int fs_read_into(struct core *k, struct fs_req *r, struct fs_file *f,
                 void *buf, size_t n, int64_t off)
{
    if (f->closing)
        return -EBADF;
    if (n > WRITE_MAX)
        n = WRITE_MAX;
    r->buf = buf;
    r->borrowed = true;
    return read_common(k, r, f, n, off);
}

static void prep_write(struct core *k, struct fs_req *r, int fd)
{
    size_t n = r->n - r->got;
    if (n > WRITE_MAX)
        n = WRITE_MAX;
    io_uring_prep_write(sqe_of(k, r), fd, r->src + r->got, (unsigned)n,
                        r->off < 0 ? (uint64_t)-1 : (uint64_t)(r->off + (int64_t)r->got));
}

int fs_write(struct core *k, struct fs_req *r, struct fs_file *f,
             const void *p, size_t n, int64_t off)
{
    if (f->closing)
        return -EBADF;
    r->src = p;
    r->n = n;
    r->off = off;
    started(k, r, FK_WRITE, f);
    prep_write(k, r, f->fd);
    return 0;
}

/* One more write after a short one; true when all is written or it
 * failed (res set). */
static bool write_more(struct core *k, struct fs_req *r, int fd, int *res)
{
    if (*res < 0)
        return true;
    if (*res == 0 && r->n > r->got) {
        *res = -EIO;
        return true;
    }
    r->got += (size_t)*res;
    if (r->got >= r->n) {
        *res = (int)(r->n > INT32_MAX ? INT32_MAX : r->n);
        return true;
    }
    prep_write(k, r, fd);
    return false;
}

int fs_fsync(struct core *k, struct fs_req *r, struct fs_file *f)
{
    if (f->closing)
        return -EBADF;
    started(k, r, FK_FSYNC, f);
    io_uring_prep_fsync(sqe_of(k, r), f->fd, 0);
    return 0;
}

int fs_fstat(struct core *k, struct fs_req *r, struct fs_file *f)
{
    if (f->closing)
        return -EBADF;
    started(k, r, FK_FSTAT, f);
    io_uring_prep_statx(sqe_of(k, r), f->fd, "", AT_EMPTY_PATH,
                        STATX_BASIC_STATS, &r->stx);
    return 0;
}

int fs_stat(struct core *k, struct fs_req *r, const char *path, bool follow)
{
    if (!(r->path = dup_path(path)))
        return -ENOMEM;
    started(k, r, FK_STAT, NULL);
    io_uring_prep_statx(sqe_of(k, r), AT_FDCWD, r->path,
                        follow ? 0 : AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS,
                        &r->stx);
    return 0;
}

int fs_rename(struct core *k, struct fs_req *r, const char *from,
              const char *to)
{
    r->path = dup_path(from);
    r->path2 = dup_path(to);
    if (!r->path || !r->path2)
        return -ENOMEM;
    started(k, r, FK_RENAME, NULL);
    io_uring_prep_renameat(sqe_of(k, r), AT_FDCWD, r->path, AT_FDCWD,
                           r->path2, 0);
    return 0;
}

int fs_unlink(struct core *k, struct fs_req *r, const char *path, bool dir)
{
    if (!(r->path = dup_path(path)))
        return -ENOMEM;
    started(k, r, FK_UNLINK, NULL);
    io_uring_prep_unlinkat(sqe_of(k, r), AT_FDCWD, r->path,
                           dir ? AT_REMOVEDIR : 0);
    return 0;
}

int fs_mkdir(struct core *k, struct fs_req *r, const char *path, mode_t mode)
{
    if (!(r->path = dup_path(path)))
        return -ENOMEM;
    started(k, r, FK_MKDIR, NULL);
    io_uring_prep_mkdirat(sqe_of(k, r), AT_FDCWD, r->path, mode);
    return 0;
}

/* --- read_file: open, statx, reads, close ----------------------------- */

int fs_read_file(struct core *k, struct fs_req *r, const char *path)
{
    if (!(r->path = dup_path(path)))
        return -ENOMEM;
    int ret = reserve(k, 1);
    if (ret)
        return ret;
    started(k, r, FK_READ_FILE, NULL);
    io_uring_prep_openat(sqe_of(k, r), AT_FDCWD, r->path, O_RDONLY | O_CLOEXEC, 0);
    r->step = 0;
    return 0;
}

/* read_file's buffer: a big one in huge pages where the kernel has them
 * (transparent huge pages on madvise), so that filling it takes one page
 * fault per 2 MiB instead of per 4 KiB; a 128 MiB read_file took half
 * the time (0.62-1.04 s against 1.19-1.96 s, most of the rest being the
 * Lua string's own faults). */
static void *big_alloc(size_t n)
{
    if (n < (4u << 20))
        return malloc(n);
    void *p = NULL;
    if (posix_memalign(&p, 2u << 20, n))
        return NULL;
    madvise(p, n, MADV_HUGEPAGE);
    return p;
}

/* Room for more: a file whose size said 0 (as in /proc) grows by
 * doubling, so that reading it stays linear, up to FS_READ_FILE_MAX:
 * -EFBIG beyond (/dev/zero never ends). */
static int read_file_grow(struct fs_req *r)
{
    if (r->n >= FS_READ_FILE_MAX)
        return -EFBIG;
    size_t cap = r->n ? r->n * 2 : 64u << 10;
    if (cap > FS_READ_FILE_MAX)
        cap = FS_READ_FILE_MAX;
    char *b = realloc(r->buf, cap);
    if (!b)
        return -ENOMEM;
    r->buf = b;
    r->n = cap;
    return 0;
}

/* The statx told the size: the buffer for it, or for a first guess. */
static int read_file_size(struct fs_req *r)
{
    r->cap = r->stx.stx_size; /* 0: the size is unknown */
    if (r->stx.stx_size > FS_READ_FILE_MAX)
        return -EFBIG;
    if (!r->cap)
        return read_file_grow(r);
    r->n = r->cap;
    return (r->buf = big_alloc(r->n)) ? 0 : -ENOMEM;
}

static void read_file_step(struct core *k, struct fs_req *r, int res)
{
    if (r->step == 2 && retry_cold(k, r, r->fd, res))
        return;
    if (res < 0) {
        if (r->step == 0)
            release(k, 1);
        finish(k, r, res);
        return;
    }
    switch (r->step) {
    case 0:
        r->fd = res;
        r->step = 1;
        io_uring_prep_statx(sqe_of(k, r), r->fd, "", AT_EMPTY_PATH,
                            STATX_SIZE, &r->stx);
        return;
    case 1:
        if ((res = read_file_size(r)) < 0)
            break;
        r->step = 2;
        prep_read(k, r, r->fd);
        return;
    case 2:
        r->got += (size_t)res;
        r->cold = false; /* the next chunk may be in the cache */
        /* the end: a read of 0, or all the size said (a file that grew
         * meanwhile is read as it was) */
        if (res > 0 && (r->got < r->n || !r->cap)) {
            int grown = r->got == r->n ? read_file_grow(r) : 0;
            if (grown < 0) {
                res = grown;
                break;
            }
            prep_read(k, r, r->fd);
            return;
        }
        r->len = r->got;
        res = (int)r->got; /* at most FS_READ_FILE_MAX */
        break;
    }
    finish(k, r, res);
}

/* --- write_file: temporary file, write, fsync, rename, fsync the dir --- */

int fs_write_file(struct core *k, struct fs_req *r, const char *path,
                  const void *p, size_t n)
{
    static unsigned serial; /* names differ between calls of one process */
    size_t len = strlen(path);
    r->path = dup_path(path);
    r->path2 = malloc(len + 48);
    if (!r->path || !r->path2)
        return -ENOMEM;
    snprintf(r->path2, len + 48, "%s.tmp-%ld-%u", path, (long)getpid(), ++serial);
    int ret = reserve(k, 1);
    if (ret)
        return ret;
    r->src = p;
    r->n = n;
    r->off = 0;
    started(k, r, FK_WRITE_FILE, NULL);
    /* the old file's mode, for the new one: a file made private stays so */
    io_uring_prep_statx(sqe_of(k, r), AT_FDCWD, r->path, 0, STATX_MODE, &r->stx);
    r->step = WF_STAT;
    return 0;
}

/* The temporary file, with the old file's permissions (how.mode, set
 * exactly by fchmod at step 0, as open's mode passes through the
 * umask), or 0644 less the umask for a new one. */
static void open_temp(struct core *k, struct fs_req *r, int res)
{
    bool old = res == 0 && (r->stx.stx_mask & STATX_MODE);
    r->how.mode = old ? (r->stx.stx_mode & 07777) : 0644;
    r->how.flags = old; /* fchmod once open */
    io_uring_prep_openat(sqe_of(k, r), AT_FDCWD, r->path2,
                         O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                         (mode_t)r->how.mode);
    r->step = 0;
}

/* The directory of r->path, for its fsync. */
static void open_parent(struct core *k, struct fs_req *r)
{
    char *slash = strrchr(r->path, '/');
    if (slash == r->path)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        strcpy(r->path, ".");
    io_uring_prep_openat(sqe_of(k, r), AT_FDCWD, r->path,
                         O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
}

static void write_file_fail(struct core *k, struct fs_req *r, int res)
{
    if (r->step >= 1 && r->step <= 3) { /* the temporary file exists */
        struct io_uring_sqe *sqe = core_op_sqe(k, &ignored_op);
        io_uring_prep_unlinkat(sqe, AT_FDCWD, r->path2, 0);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        /* the kernel takes the path when it is submitted: now, on this
         * rare path, so that the request can go with its strings */
        io_uring_submit(&k->loop.ring);
    }
    if (r->step == 0 || r->step == 4)
        release(k, 1);
    finish(k, r, res);
}

/* The new content is in place (renamed): a failure to open or fsync the
 * directory only leaves the rename less durable, so the call succeeds
 * and the failure is logged. */
static void write_file_dir_failed(struct core *k, struct fs_req *r, int res)
{
    log_warn("write_file: fsync of the directory %s: %s", r->path,
             strerror(-res));
    if (r->step == 4)
        release(k, 1);
    finish(k, r, 0);
}

static void write_file_step(struct core *k, struct fs_req *r, int res)
{
    if (r->step == WF_STAT) {
        open_temp(k, r, res);
        return;
    }
    if (res < 0 && r->step >= 4) {
        write_file_dir_failed(k, r, res);
        return;
    }
    if (res < 0 && r->step != 1) {
        write_file_fail(k, r, res);
        return;
    }
    switch (r->step) {
    case 0: /* the temporary file is open */
        r->fd = res;
        /* a cheap syscall on the inode alone: io_uring has no fchmod */
        if (r->how.flags && fchmod(r->fd, (mode_t)r->how.mode) < 0) {
            r->step = 1;
            write_file_fail(k, r, -errno);
            return;
        }
        r->step = 1;
        if (r->n) {
            prep_write(k, r, r->fd);
            return;
        }
        res = 0; /* nothing to write */
        __attribute__((fallthrough));
    case 1:
        if (r->n && !write_more(k, r, r->fd, &res))
            return;
        if (res < 0) {
            write_file_fail(k, r, res);
            return;
        }
        r->step = 2;
        io_uring_prep_fsync(sqe_of(k, r), r->fd, 0);
        return;
    case 2:
        close_fd(k, r->fd);
        r->fd = -1;
        r->step = 3;
        io_uring_prep_renameat(sqe_of(k, r), AT_FDCWD, r->path2, AT_FDCWD,
                               r->path, 0);
        return;
    case 3: /* renamed: the new content is in place */
        if (reserve(k, 1)) { /* no fd for the directory's fsync */
            finish(k, r, 0);
            return;
        }
        r->step = 4;
        open_parent(k, r);
        return;
    case 4:
        r->dirfd = res;
        r->step = 5;
        io_uring_prep_fsync(sqe_of(k, r), r->dirfd, 0);
        return;
    case 5:
        finish(k, r, 0);
        return;
    }
}

/* --- list: open the directory, getdents64, close --------------------- */

int fs_list(struct core *k, struct fs_req *r, const char *path)
{
    if (!(r->path = dup_path(path)))
        return -ENOMEM;
    int ret = reserve(k, 1);
    if (ret)
        return ret;
    started(k, r, FK_LIST, NULL);
    io_uring_prep_openat(sqe_of(k, r), AT_FDCWD, r->path,
                         O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    return 0;
}

static int list_add(struct fs_req *r, const char *name)
{
    size_t n = strlen(name) + 1;
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4096;
        while (cap < r->len + n)
            cap *= 2;
        char *b = realloc(r->buf, cap);
        if (!b)
            return -ENOMEM;
        r->buf = b;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, name, n);
    r->len += n;
    return 0;
}

static int list_read(struct fs_req *r)
{
    char *chunk = malloc(LIST_CHUNK);
    int count = 0, err = 0;
    if (!chunk)
        return -ENOMEM;
    for (;;) {
        ssize_t got = getdents64(r->fd, chunk, LIST_CHUNK);
        if (got <= 0) {
            err = got < 0 ? -errno : 0;
            break;
        }
        for (ssize_t at = 0; at < got && !err;) {
            struct dirent64 *d = (struct dirent64 *)(void *)(chunk + at);
            at += d->d_reclen;
            if (strcmp(d->d_name, ".") && strcmp(d->d_name, "..")) {
                err = list_add(r, d->d_name);
                count++;
            }
        }
        if (err)
            break;
    }
    free(chunk);
    return err ? err : count;
}

static void list_step(struct core *k, struct fs_req *r, int res)
{
    if (res < 0) {
        release(k, 1);
        finish(k, r, res);
        return;
    }
    r->fd = res;
    finish(k, r, list_read(r));
}

/* --- splice: file -> pipe -> socket ------------------------------------ */

static void on_splice_out(struct core *k, struct core_op *op,
                          const struct io_uring_cqe *cqe);

/* The splice out of the pipe, on its own op: its completion is told
 * apart from the file's by where it comes, not by its order. */
static struct io_uring_sqe *splice_out(struct core *k, struct fs_req *r,
                                       size_t n)
{
    struct io_uring_sqe *sqe = core_op_sqe(k, &r->op_out);
    io_uring_prep_splice(sqe, (int)r->how.flags, -1, (int)r->cap, -1,
                         (unsigned)n, SPLICE_F_MOVE);
    return sqe;
}

int fs_splice(struct core *k, struct fs_req *r, struct fs_file *f, int64_t off,
              size_t n, int pipe_w, int pipe_r, int sock_fd)
{
    if (f->closing)
        return -EBADF;
    r->n = n;
    r->off = off;
    r->src = NULL;
    r->cap = (size_t)sock_fd;
    /* the pipe's ends are the caller's: kept in fields finish leaves alone */
    r->how.flags = (uint64_t)pipe_r;
    r->dirfd = -1;
    r->fd = -1;
    r->op_out.done = on_splice_out;
    /* a link must not be split by core_op_sqe() submitting between its
     * two SQEs: the first would go alone with its link dangling */
    if (io_uring_sq_space_left(&k->loop.ring) < 2)
        io_uring_submit(&k->loop.ring);
    started(k, r, FK_SPLICE, f);
    struct io_uring_sqe *sqe = sqe_of(k, r);
    io_uring_prep_splice(sqe, f->fd, off, pipe_w, -1, (unsigned)n, SPLICE_F_MOVE);
    sqe->flags |= IOSQE_IO_LINK;
    splice_out(k, r, n);
    r->step = SPLICE_IN | SPLICE_OUT; /* the completions still to come */
    return 0;
}

/* Both splices of the round have completed (r->got: the bytes in the
 * pipe, r->len: what reached the socket): the end, or a splice of what
 * the pipe still holds, after a short one. */
static void splice_round(struct core *k, struct fs_req *r)
{
    if (r->err || r->len >= r->got) {
        finish(k, r, r->err ? r->err : (int)r->len);
        return;
    }
    splice_out(k, r, r->got - r->len);
    r->step = SPLICE_OUT;
}

/* The file's splice into the pipe; the linked one out of it is
 * cancelled when this one was short. */
static void splice_in_done(struct core *k, struct fs_req *r, int res)
{
    r->step &= ~SPLICE_IN;
    if (res < 0)
        r->err = res;
    r->got = res > 0 ? (size_t)res : 0;
    if (!r->step)
        splice_round(k, r);
}

static void on_splice_out(struct core *k, struct core_op *op,
                          const struct io_uring_cqe *cqe)
{
    struct fs_req *r = core_op_owner(op, struct fs_req, op_out);
    int res = cqe->res;
    r->step &= ~SPLICE_OUT;
    if (res > 0)
        r->len += (size_t)res;
    else if (res < 0 && res != -ECANCELED && !r->err)
        r->err = res;
    else if (res == 0 && !r->err && r->len < r->got)
        r->err = -EPIPE; /* the socket took nothing: it will not */
    if (!r->step)
        splice_round(k, r);
}

/* --- completions ------------------------------------------------------ */

static void on_cqe(struct core *k, struct core_op *op,
                   const struct io_uring_cqe *cqe)
{
    struct fs_req *r = core_op_owner(op, struct fs_req, op);
    int res = cqe->res;
    switch (r->kind) {
    case FK_OPEN:       open_step(k, r, res); return;
    case FK_READ_FILE:  read_file_step(k, r, res); return;
    case FK_WRITE_FILE: write_file_step(k, r, res); return;
    case FK_LIST:       list_step(k, r, res); return;
    case FK_SPLICE:     splice_in_done(k, r, res); return;
    case FK_WRITE:
        if (!write_more(k, r, r->file->fd, &res))
            return;
        break;
    case FK_READ:
        if (!read_more(k, r, r->file->fd, &res))
            return;
        if (r->borrowed) /* the caller's buffer: not ours to free */
            r->buf = NULL;
        if (res > 0)
            r->len = (size_t)res;
        break;
    case FK_MKDIR: case FK_UNLINK: case FK_RENAME:
        if (res > 0)
            res = 0;
        break;
    default:
        break;
    }
    finish(k, r, res);
}

void fs_unhold(struct core *k, struct fs_file *f)
{
    file_unuse(k, f);
}

void fs_close(struct core *k, struct fs_file *f)
{
    if (!f || f->closing)
        return;
    f->closing = true;
    if (!f->users) {
        close_fd(k, f->fd);
        free(f);
    }
}

unsigned fs_open_files(const struct core *k) { return k->fs_files; }

/* The SQEs of r still with the kernel: one, or a splice's two. */
static unsigned pending(const struct fs_req *r)
{
    if (r->kind != FK_SPLICE)
        return 1;
    return (unsigned)__builtin_popcount((unsigned)r->step & (SPLICE_IN | SPLICE_OUT));
}

static bool is_ours(struct core *k, uint64_t ud)
{
    for (struct fs_req *r = k->fs_reqs; r; r = r->next)
        if (ud == ud_make_ptr(OP_TASK, &r->op) ||
            (r->kind == FK_SPLICE && ud == ud_make_ptr(OP_TASK, &r->op_out)))
            return true;
    return false;
}

/* Before the ring goes: cancel everything and wait (up to 2 s) for the
 * completions of the file requests, without running them. The ring's
 * exit does not wait for io-wq, whose threads could still write into a
 * request's buffer (a cold read) or its statx after fs_free freed them.
 * Returns whether all came; if not, fs_free leaks what is left rather
 * than free memory the kernel may still write. */
bool fs_quiesce(struct core *k)
{
    struct io_uring *ring = &k->loop.ring;
    unsigned left = 0;
    for (struct fs_req *r = k->fs_reqs; r; r = r->next)
        left += pending(r);
    if (!left || !k->loop.up)
        return !left;
    struct io_uring_sqe *sqe = loop_sqe(&k->loop);
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, 0);
    io_uring_submit(ring);
    for (int i = 0; i < 20 && left; i++) {
        struct __kernel_timespec ts = { .tv_nsec = 100000000 };
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe_timeout(ring, &cqe, &ts) < 0)
            continue;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(ring, head, cqe) {
            if (is_ours(k, cqe->user_data))
                left--;
            seen++;
        }
        io_uring_cq_advance(ring, seen);
    }
    k->fs_quiesced = !left;
    return !left;
}

void fs_free(struct core *k)
{
    if (k->fs_reqs && !k->fs_quiesced) {
        /* the kernel may still use them: a deliberate leak at exit */
        k->fs_reqs = NULL;
        return;
    }
    while (k->fs_reqs) {
        struct fs_req *r = k->fs_reqs;
        unlist(k, r);
        if (r->fd >= 0)
            close(r->fd);
        if (r->dirfd >= 0)
            close(r->dirfd);
        if (r->borrowed)
            r->buf = NULL;
        if (r->kind != FK_OPEN && r->file)
            file_unuse(k, r->file); /* closed by close(2) now */
        fs_req_free(r);
    }
}
