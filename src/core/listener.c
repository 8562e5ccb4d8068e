/* listener.c - listening sockets: one multishot accept each, paused
 * while the process is out of fds. */
#include "core_int.h"
#include "log.h"
#include "ud.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long accepting pauses when the process is out of fds, unless a
 * connection closes first. */
#define ACCEPT_RETRY_NS (100 * 1000 * 1000)

void listener_arm(struct core *k, unsigned i)
{
    struct listener *l = &k->lsn[i];
    struct io_uring_sqe *sqe = loop_sqe(&k->loop);
    io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud_make(OP_ACCEPT, 0, i));
    l->armed = true;
}

int core_listen(struct core *k, int fd, const struct transport *tp)
{
    if (k->nlsn >= CONN_OUTBOUND)
        return -EMFILE;
    struct listener *v = realloc(k->lsn, (k->nlsn + 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    k->lsn = v;
    unsigned i = k->nlsn++;
    v[i] = (struct listener){ .fd = fd, .tp = tp };
    listener_arm(k, i);
    return (int)i;
}

/* Close an fd we cannot serve, through the ring. */
static void close_raw(struct core *k, int fd)
{
    struct io_uring_sqe *sqe = loop_sqe(&k->loop);
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data64(sqe, ud_make(OP_CLOSE_RAW, 0, 0));
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

/* Warn at most once a second about the same trouble. */
static bool warn_due(time_t *last)
{
    time_t now = time(NULL);
    if (now == *last)
        return false;
    *last = now;
    return true;
}

static void pause_accept(struct core *k, struct listener *l, int err)
{
    if (warn_due(&k->warned_accept))
        log_warn("accept: %s; pausing accepts until a connection closes",
                 strerror(-err));
    l->paused = true;
    k->accept_paused = true;
    if (k->accept_retry_armed)
        return;
    k->accept_retry_ts.tv_sec = 0;
    k->accept_retry_ts.tv_nsec = ACCEPT_RETRY_NS;
    struct io_uring_sqe *sqe = loop_sqe(&k->loop);
    io_uring_prep_timeout(sqe, &k->accept_retry_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_ACCEPT_RETRY, 0, 0));
    k->accept_retry_armed = true;
}

static void new_conn(struct core *k, unsigned i, int fd)
{
    struct conn *c = k->stopping ? NULL : conn_alloc(&k->conns, fd);
    if (!c) {
        if (!k->stopping && warn_due(&k->warned_full))
            log_warn("connection limit (%u) reached; refusing connections",
                     k->conns.max);
        close_raw(k, fd);
        return;
    }
    k->stats.accepted++;
    c->active = k->now;
    c->origin = (uint8_t)i;
    conn_io_start(k, c);
}

void listener_on_accept(struct core *k, unsigned i, struct io_uring_cqe *cqe)
{
    if (i >= k->nlsn)
        return;
    struct listener *l = &k->lsn[i];
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (!more)
        l->armed = false;
    if (cqe->res >= 0) {
        new_conn(k, i, cqe->res);
        l = &k->lsn[i]; /* the handler may have added a listener */
    } else if (cqe->res != -ECANCELED && !more && !k->stopping)
        /* EMFILE, ENFILE, ENOMEM...: re-arming at once would spin */
        pause_accept(k, l, cqe->res);
    if (!more && !l->armed && !l->paused && !k->stopping && l->fd >= 0)
        listener_arm(k, i);
}

void listener_on_retry(struct core *k)
{
    if (!k->accept_paused || k->stopping)
        return;
    k->accept_paused = false;
    for (unsigned i = 0; i < k->nlsn; i++) {
        struct listener *l = &k->lsn[i];
        if (!l->paused)
            continue;
        l->paused = false;
        if (!l->armed && l->fd >= 0)
            listener_arm(k, i);
    }
}

void listener_stop_all(struct core *k)
{
    for (unsigned i = 0; i < k->nlsn; i++) {
        struct listener *l = &k->lsn[i];
        if (l->armed) {
            struct io_uring_sqe *sqe = loop_sqe(&k->loop);
            io_uring_prep_cancel64(sqe, ud_make(OP_ACCEPT, 0, i), 0);
            io_uring_sqe_set_data64(sqe, ud_make(OP_CANCEL, 0, 0));
            sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        }
        l->paused = false;
        /* new clients get refused now rather than wait in the backlog */
        if (l->fd >= 0)
            close(l->fd);
        l->fd = -1;
    }
    k->accept_paused = false;
}
