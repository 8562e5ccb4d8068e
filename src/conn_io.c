/* conn_io.c - the ring side of connections: receive, send, close.
 *
 * Completion handlers only record what happened and run Lua; the phases
 * after the batch (notify closes, flush) submit what follows from it, so
 * each connection gets at most one send per batch, with every byte its
 * handlers wrote during that batch. */
#include "log.h"
#include "lua_host.h"
#include "ud.h"
#include "worker.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

void conn_io_arm_recv(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = loop_sqe(&w->loop);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = w->bufs.bgid;
    io_uring_sqe_set_data64(sqe, ud_make(OP_RECV, c->gen, c->slot));
    c->flags |= CF_RECV_ARMED;
    c->flags &= ~CF_WANT_RECV;
}

/* Receive again after this batch, once its buffers are back (re-arming
 * into an empty ring only earns another ENOBUFS at once). */
static void want_recv(struct worker *w, struct conn *c)
{
    if (slotvec_push(&w->rearm, c->slot) == 0)
        c->flags |= CF_WANT_RECV;
    else
        conn_close(&w->conns, c, REASON_ERROR, true);
}

static enum conn_reason reason_for(int err)
{
    switch (err) {
    case -ECONNRESET: case -EPIPE: case -ETIMEDOUT: case -EHOSTUNREACH:
    case -ENETUNREACH: case -ENOTCONN:
        return REASON_RESET;
    default:
        return REASON_ERROR;
    }
}

static void io_error(struct worker *w, struct conn *c, const char *what, int res)
{
    enum conn_reason r = reason_for(res);
    if (r == REASON_ERROR)
        log_warn("connection %llu: %s: %s", (unsigned long long)c->id, what,
                 strerror(-res));
    conn_close(&w->conns, c, r, true);
}

void conn_io_on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
    bool more = cqe->flags & IORING_CQE_F_MORE;
    int res = cqe->res;
    if (!more)
        c->flags &= ~CF_RECV_ARMED;

    if (res > 0) {
        unsigned bid = bufring_cqe_bid(cqe->flags);
        unsigned char *p = bufring_take(&w->bufs, bid);
        w->stats.bytes_in += (unsigned)res;
        if (c->state == CONN_OPEN)
            lua_host_data(w->lua, c, (const char *)p, (size_t)res);
        bufring_put(&w->bufs, bid);
        /* a multishot receive may end after data too (e.g. CQ overflow) */
        if (!more && c->state == CONN_OPEN)
            want_recv(w, c);
    } else if (res == 0) {
        conn_close(&w->conns, c, REASON_EOF, false);
    } else if (res == -ENOBUFS) {
        /* the bytes wait in the socket; nothing is lost */
        w->stats.enobufs++;
        if (c->state == CONN_OPEN)
            want_recv(w, c);
    } else if (res != -ECANCELED) {
        io_error(w, c, "receive", res);
    }
    if (!more)
        conn_mark(&w->conns, c);
}

void conn_io_on_send(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
    int res = cqe->res;
    if (res >= 0) {
        w->stats.bytes_out += (unsigned)res;
        sendq_done(&c->q, (size_t)res);
    } else {
        sendq_done(&c->q, 0);
        if (res != -ECANCELED)
            io_error(w, c, "send", res);
    }
    conn_mark(&w->conns, c);
}

void conn_io_on_close(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
    if (cqe->res < 0)
        log_debug("connection %llu: close: %s", (unsigned long long)c->id,
                  strerror(-cqe->res));
    c->flags |= CF_CLOSED;
    c->fd = -1;
    conn_mark(&w->conns, c);
}

static void start_send(struct worker *w, struct conn *c)
{
    const void *p;
    size_t n;
    if (sendq_busy(&c->q) || !sendq_next(&c->q, &p, &n))
        return;
    struct io_uring_sqe *sqe = loop_sqe(&w->loop);
    io_uring_prep_send(sqe, c->fd, p, n, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud_make(OP_SEND, c->gen, c->slot));
}

/* Close through the ring: shutdown → close, hard-linked so that a failed
 * shutdown still leads to the close, and preceded by a cancel of whatever
 * is still in flight on the socket. When nothing is in flight, no CQE is
 * needed on success and the slot is freed at once: the chain touches no
 * memory of ours, and a failure's late CQE misses on the generation. When
 * something is, the close's CQE and the final CQEs of the cancelled
 * operations tell us when the slot is free. */
static void submit_close(struct worker *w, struct conn *c)
{
    bool busy = (c->flags & CF_RECV_ARMED) || sendq_busy(&c->q);
    uint64_t cancel_ud = ud_make(OP_CANCEL, c->gen, c->slot);
    struct io_uring *ring = &w->loop.ring;
    struct io_uring_sqe *sqe;
    /* a link chain must not be split by loop_sqe() submitting midway */
    if (io_uring_sq_space_left(ring) < 3)
        io_uring_submit(ring);

    if (busy) {
        sqe = loop_sqe(&w->loop);
        io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, cancel_ud);
        sqe->flags |= IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;
    }
    sqe = loop_sqe(&w->loop);
    io_uring_prep_shutdown(sqe, c->fd, SHUT_RDWR);
    io_uring_sqe_set_data64(sqe, cancel_ud);
    sqe->flags |= IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;

    sqe = loop_sqe(&w->loop);
    io_uring_prep_close(sqe, c->fd);
    io_uring_sqe_set_data64(sqe, ud_make(OP_CLOSE, c->gen, c->slot));
    c->flags |= CF_CLOSE_SENT;
    if (!busy) {
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        c->flags |= CF_CLOSED;
        c->fd = -1;
    }
}

/* Move one connection along: send, re-arm, close, free. */
static void progress(struct worker *w, struct conn *c)
{
    bool abort = c->flags & CF_ABORT;
    if (!abort && !(c->flags & CF_CLOSE_SENT))
        start_send(w, c);
    if (c->state == CONN_OPEN)
        return;
    if (!(c->flags & CF_NOTIFIED))
        return; /* on_close runs first; it marks c again */
    if (abort && !sendq_busy(&c->q))
        sendq_free(&c->q);
    if (!(c->flags & CF_CLOSE_SENT) &&
        (abort || (!sendq_busy(&c->q) && !sendq_pending(&c->q))))
        submit_close(w, c);
    if (conn_idle(c)) {
        conn_free(&w->conns, c);
        if (w->accept_paused)
            accept_on_retry(w); /* an fd is free again */
    }
}

void conn_io_flush(struct worker *w)
{
    struct slotvec *d = &w->conns.dirty;
    for (uint32_t i = 0; i < d->n; i++) {
        struct conn *c = &w->conns.c[d->v[i]];
        if (!(c->flags & CF_DIRTY))
            continue;
        c->flags &= ~CF_DIRTY;
        if (c->state != CONN_FREE)
            progress(w, c);
    }
    d->n = 0;
}

void conn_io_notify_closes(struct worker *w)
{
    struct slotvec *cl = &w->conns.closing;
    /* on_close may close other connections: n can grow as we go */
    for (uint32_t i = 0; i < cl->n; i++) {
        struct conn *c = &w->conns.c[cl->v[i]];
        if (c->state != CONN_CLOSING || (c->flags & CF_NOTIFIED))
            continue;
        c->flags |= CF_NOTIFIED;
        lua_host_close(w->lua, c);
        conn_mark(&w->conns, c);
    }
    cl->n = 0;
}

/* Re-arm receives that ended, at most as many as there are free buffers,
 * oldest first; the rest wait for buffers to come back. */
void conn_io_rearm(struct worker *w)
{
    struct slotvec *e = &w->rearm;
    uint32_t i = 0, budget = bufring_avail(&w->bufs);
    for (; i < e->n && budget; i++) {
        struct conn *c = &w->conns.c[e->v[i]];
        if (c->state != CONN_OPEN ||
            (c->flags & (CF_WANT_RECV | CF_RECV_ARMED)) != CF_WANT_RECV)
            continue;
        conn_io_arm_recv(w, c);
        budget--;
    }
    if (i) {
        memmove(e->v, e->v + i, (e->n - i) * sizeof *e->v);
        e->n -= i;
    }
}
