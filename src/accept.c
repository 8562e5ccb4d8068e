/* accept.c - the listener: one multishot accept, paused on fd shortage. */
#include "log.h"
#include "lua_host.h"
#include "ud.h"
#include "worker.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long accepting pauses when the process is out of fds, unless a
 * connection closes first. */
#define ACCEPT_RETRY_NS (100 * 1000 * 1000)

void accept_arm(struct worker *w)
{
    struct io_uring_sqe *sqe = loop_sqe(&w->loop);
    io_uring_prep_multishot_accept(sqe, w->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud_make(OP_ACCEPT, 0, 0));
    w->accept_armed = true;
}

/* Close an fd we cannot serve, through the ring. */
static void close_raw(struct worker *w, int fd)
{
    struct io_uring_sqe *sqe = loop_sqe(&w->loop);
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

static void pause_accept(struct worker *w, int err)
{
    if (warn_due(&w->warned_accept))
        log_warn("accept: %s; pausing accepts until a connection closes",
                 strerror(-err));
    w->accept_paused = true;
    if (w->accept_retry_armed)
        return;
    w->accept_retry_ts.tv_sec = 0;
    w->accept_retry_ts.tv_nsec = ACCEPT_RETRY_NS;
    struct io_uring_sqe *sqe = loop_sqe(&w->loop);
    io_uring_prep_timeout(sqe, &w->accept_retry_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_ACCEPT_RETRY, 0, 0));
    w->accept_retry_armed = true;
}

static void new_conn(struct worker *w, int fd)
{
    struct conn *c = w->stopping ? NULL : conn_alloc(&w->conns, fd);
    if (!c) {
        if (!w->stopping && warn_due(&w->warned_full))
            log_warn("connection limit (%u) reached; refusing connections",
                     w->conns.max);
        close_raw(w, fd);
        return;
    }
    w->stats.accepted++;
    c->active = w->now;
    lua_host_open(w->lua, c);
    if (c->state == CONN_OPEN)
        conn_io_arm_recv(w, c);
}

void accept_on_cqe(struct worker *w, struct io_uring_cqe *cqe)
{
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (!more)
        w->accept_armed = false;
    if (cqe->res >= 0)
        new_conn(w, cqe->res);
    else if (cqe->res != -ECANCELED && !more && !w->stopping)
        /* EMFILE, ENFILE, ENOMEM...: re-arming at once would spin */
        pause_accept(w, cqe->res);
    if (!more && !w->accept_armed && !w->accept_paused && !w->stopping)
        accept_arm(w);
}

/* The retry timeout fired, or a connection closed while paused. */
void accept_on_retry(struct worker *w)
{
    if (!w->accept_paused || w->stopping)
        return;
    w->accept_paused = false;
    if (!w->accept_armed)
        accept_arm(w);
}

void accept_stop(struct worker *w)
{
    if (w->accept_armed) {
        struct io_uring_sqe *sqe = loop_sqe(&w->loop);
        io_uring_prep_cancel64(sqe, ud_make(OP_ACCEPT, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, ud_make(OP_CANCEL, 0, 0));
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    }
    w->accept_paused = false;
    /* new clients get refused now rather than wait in the backlog */
    close(w->listen_fd);
    w->listen_fd = -1;
}
