/* fs.h - files through the worker's ring: open, read, write, stat,
 * fsync, rename, unlink, mkdir and close are io_uring operations, so a
 * disk that takes its time stalls only the caller that waits for it,
 * never the loop (a read the page cache cannot serve goes to the
 * kernel's io-wq threads).
 *
 * Each call takes a request made by fs_req_new, submits it and returns
 * at once: 0, or a negative errno when it could not start (the request
 * is then still the caller's, to free with fs_req_free). A request that
 * started ends in its done callback, called from core_run with res (a
 * negative errno on failure); the core frees it when done returns.
 * Composite calls (fs_read_file, fs_write_file, fs_list, an open
 * `beneath` a directory) run their steps on the ring, one after the
 * other, and call done once.
 *
 * Every fd the module holds (open files, and the passing ones of the
 * composite calls) counts against the connection table's limit
 * (conns.reserved): an open beyond it fails with -EMFILE. */
#ifndef MR_FS_H
#define MR_FS_H

#include "core.h"

#include <linux/openat2.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* An open file. Closing it while requests on it are in flight closes the
 * fd once the last of them has completed, so that the fd number is never
 * reused under them. */
struct fs_file {
    int fd;
    unsigned users;            /* requests in flight on it */
    bool closing;              /* fs_close ran: close with the last user */
    uint64_t pos;              /* the caller's: a position it keeps */
};

struct fs_req;
typedef void (*fs_done_fn)(struct core *k, struct fs_req *r, int res);

struct fs_req {
    struct core_op op;
    struct core_op op_out;     /* fs_splice: the splice out of the pipe */
    fs_done_fn done;
    void *data;                /* the caller's */
    uint64_t tag;              /* the caller's */
    /* results */
    struct fs_file *file;      /* fs_open: the new file (res 0), the
                                  caller's; else the file worked on,
                                  valid during done */
    char *buf;                 /* fs_read, fs_read_file: res bytes; fs_list:
                                  res names of len bytes, each ending in a
                                  NUL. Freed with the request unless the
                                  caller takes it (sets it to NULL). */
    size_t len;
    struct statx stx;          /* fs_stat, fs_fstat */
    /* the steps' own state */
    struct fs_req *prev, *next; /* in flight, for core_destroy */
    int kind, step, err;
    int fd, dirfd;
    char *path, *path2;
    struct open_how how;
    const char *src;           /* fs_write: the bytes, the caller's */
    size_t n, got;             /* bytes wanted, bytes done */
    int64_t off;
    size_t cap;
    bool borrowed;             /* buf is the caller's (fs_read_into) */
    bool cold;                 /* the page cache could not serve the read */
};

/* A request whose end goes to done; NULL when out of memory. */
struct fs_req *fs_req_new(struct core *k, fs_done_fn done, void *data);
/* Free a request that did not start. */
void fs_req_free(struct fs_req *r);

/* Open path (open(2) flags; mode for O_CREAT). beneath, if not NULL:
 * resolve path inside that directory only (openat2 with RESOLVE_BENEATH
 * and RESOLVE_NO_MAGICLINKS): "..", absolute paths and symlinks that
 * leave it fail (-EXDEV). On success r->file is the file. */
int fs_open(struct core *k, struct fs_req *r, const char *path, int flags,
            mode_t mode, const char *beneath);

/* Read up to n bytes at off into r->buf (n bytes allocated); res is the
 * count, 0 at end of file. */
int fs_read(struct core *k, struct fs_req *r, struct fs_file *f, size_t n,
            int64_t off);
/* The same into the caller's buf, which must stay valid until done. */
int fs_read_into(struct core *k, struct fs_req *r, struct fs_file *f,
                 void *buf, size_t n, int64_t off);
/* Write all n bytes of p at off (-1: at the file position, which for
 * O_APPEND is the end), resubmitting after short writes; p must stay
 * valid until done. res is n, or a negative errno. */
int fs_write(struct core *k, struct fs_req *r, struct fs_file *f,
             const void *p, size_t n, int64_t off);
int fs_fsync(struct core *k, struct fs_req *r, struct fs_file *f);
/* Into r->stx (STATX_BASIC_STATS). */
int fs_fstat(struct core *k, struct fs_req *r, struct fs_file *f);
/* follow: of what a symlink points to, else of the link itself. */
int fs_stat(struct core *k, struct fs_req *r, const char *path, bool follow);
int fs_rename(struct core *k, struct fs_req *r, const char *from,
              const char *to);
/* A file, or (dir) an empty directory. */
int fs_unlink(struct core *k, struct fs_req *r, const char *path, bool dir);
int fs_mkdir(struct core *k, struct fs_req *r, const char *path, mode_t mode);

/* The whole of a file into r->buf: open, statx, reads of up to 8 MiB at
 * increasing offsets into one buffer of the file's size, close. res is
 * the byte count (what the size said, or less if it shrank). A file
 * whose size says 0 (as in /proc) is read until a read gives 0, in a
 * buffer that doubles. Beyond FS_READ_FILE_MAX bytes (what one Lua
 * string can hold, a little under 2 GiB): -EFBIG. */
#define FS_READ_FILE_MAX 0x7ffff000u

int fs_read_file(struct core *k, struct fs_req *r, const char *path);
/* Replace path with the n bytes of p, atomically: a new file beside it
 * (path.tmp-<pid>-<n>), write, fsync, rename over path, fsync the
 * directory. A reader sees the old content or the new, never a mix. p
 * must stay valid until done. */
int fs_write_file(struct core *k, struct fs_req *r, const char *path,
                  const void *p, size_t n);
/* The names in directory path, without "." and "..", into r->buf; res
 * is their count. The directory is opened and closed through the ring;
 * its entries are read with getdents64(2), in the loop, as io_uring has
 * no operation for that (see fs.c). */
int fs_list(struct core *k, struct fs_req *r, const char *path);

/* Move up to n bytes of f at off to the socket sock_fd without copying
 * them through user space: splice file -> pipe (pipe_w) linked with
 * splice pipe (pipe_r) -> socket, and a splice of the rest when either
 * was short. The pipe must be empty and hold n bytes (F_SETPIPE_SZ);
 * nothing else may write to the socket meanwhile. res: the bytes that
 * reached the socket, 0 at end of file.
 *
 * sock_fd is looked up by the kernel when each splice runs, so it must
 * stay the caller's until done: a fd of fs_dup's, not the connection's
 * own (which its close frees for the next accept, and the rest of a
 * short round would go to that new client). The connection's close
 * cancels the splices all the same: a cancel by fd finds the requests
 * on the same socket, whatever their fd number. */
int fs_splice(struct core *k, struct fs_req *r, struct fs_file *f, int64_t off,
              size_t n, int pipe_w, int pipe_r, int sock_fd);

/* fds of the caller's, counted against the connection table's limit as
 * files are: a dup of fd (the fd, or a negative errno: -EMFILE beyond
 * the limit), a pipe (0 or a negative errno). Closed by fs_fd_close,
 * through the ring (fd < 0: nothing). */
int fs_dup(struct core *k, int fd);
int fs_pipe(struct core *k, int fds[2]);
void fs_fd_close(struct core *k, int fd);

/* Keep f (a request of the caller's own, such as a send in several
 * steps): a close waits until fs_unhold. */
static inline void fs_hold(struct fs_file *f) { f->users++; }
void fs_unhold(struct core *k, struct fs_file *f);

/* Close f (and free it) through the ring, once no request uses it; at
 * once, by close(2), when the ring is gone (after core_destroy). */
void fs_close(struct core *k, struct fs_file *f);

/* Files open, and requests in flight. */
unsigned fs_open_files(const struct core *k);

#endif
