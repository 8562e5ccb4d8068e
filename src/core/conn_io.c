/* conn_io.c - the ring side of connections: receive, send, close.
 *
 * Completion handlers only record what happened and report events; the
 * phases after the batch (notify closes, flush) submit what follows from
 * it, so each connection gets at most one send per batch, with every byte
 * its handlers wrote during that batch. */
#include "core_int.h"
#include "log.h"
#include "ud.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The most one send hands the kernel. A send copies its bytes into the
 * socket within the io_uring_enter that submits it: 80 connections
 * sending 1 MiB each made one enter last 20-50 ms, and every other
 * connection waited that long. The rest goes in the turns after. */
#define SEND_MAX (64u << 10)

/* What the send of c's flight carries, or carried: the rest of it, at
 * most SEND_MAX. */
static size_t send_size(const struct conn *c)
{
    size_t n = c->q.fl_len - c->q.fl_off;
    return n < SEND_MAX ? n : SEND_MAX;
}

/* What one multishot receive may take before it ends, to be re-armed
 * after the turn: the room below the high-water mark, and at least a
 * buffer. So one turn hands a connection about that much at most, and a
 * flood on one cannot stall the others; and what arrives after a pause,
 * which waits in c->held until reading resumes, is bounded by it too. */
static unsigned recv_budget(const struct core *k, const struct conn *c)
{
    size_t hw = k->conns.high_water, out = sendq_held(&c->q);
    size_t b = out < hw ? hw - out : 0;
    if (b < k->bufs.size)
        b = k->bufs.size;
    return b > UINT32_MAX ? UINT32_MAX : (unsigned)b;
}

static void arm_recv(struct core *k, struct conn *c)
{
    struct io_uring_sqe *sqe = loop_sqe(&k->loop);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = k->bufs.bgid;
    /* the receive's overall byte limit: sqe->optlen in newer headers,
     * the same field as file_index in liburing 2.3's */
    if (k->recv_limit)
        sqe->file_index = recv_budget(k, c);
    io_uring_sqe_set_data64(sqe, ud_make(OP_RECV, c->gen, c->slot));
    c->flags |= CF_RECV_ARMED;
    c->flags &= ~CF_WANT_RECV;
}

/* Receive again after this batch, once its buffers are back (re-arming
 * into an empty ring only earns another ENOBUFS at once). */
static void want_recv(struct core *k, struct conn *c)
{
    if (slotvec_push(&k->rearm, c->slot) == 0)
        c->flags |= CF_WANT_RECV;
    else
        conn_close(&k->conns, c, REASON_ERROR, true);
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

static void io_error(struct core *k, struct conn *c, const char *what, int res)
{
    enum conn_reason r = reason_for(res);
    if (r == REASON_ERROR)
        log_warn("connection %llu: %s: %s", (unsigned long long)c->id, what,
                 strerror(-res));
    conn_close(&k->conns, c, r, true);
}

/* Keep bytes that arrive while reading is paused (the receive was still
 * in flight when the pause came), in order, for when it resumes. At most
 * a receive's budget arrives after a pause (recv_budget). */
static void hold(struct core *k, struct conn *c, const char *p, size_t n)
{
    struct held *h = c->held;
    size_t len = c->held_len, off = h ? h->off : 0, cap = h ? h->cap : 0;
    if (off && off + len + n > cap) { /* reuse what was handed over */
        memmove(h->data, h->data + off, len);
        h->off = 0;
        off = 0;
    }
    if (len + n > UINT32_MAX - sizeof *h)
        goto fail;
    if (len + n > cap) {
        cap = cap + cap / 4 > len + n ? cap + cap / 4 : len + n; /* as sendq's */
        if (cap > UINT32_MAX - sizeof *h)
            cap = len + n;
        h = realloc(h, sizeof *h + cap);
        if (!h)
            goto fail;
        if (!c->held)
            h->off = 0;
        h->cap = (uint32_t)cap;
        c->held = h;
    }
    memcpy(h->data + off + len, p, n);
    c->held_len = (uint32_t)(len + n);
    if (!(c->flags & CF_READ_PAUSED))
        conn_wake(&k->conns, c);
    return;
fail:
    log_warn("connection %llu: out of memory for input held while paused",
             (unsigned long long)c->id);
    conn_close(&k->conns, c, REASON_ERROR, true);
}

/* Bytes from the socket, to the transport or straight to the handler. */
static void to_handler(struct core *k, struct conn *c, const char *p, size_t n)
{
    if (!c->tp) {
        k->ev->data(k->ev_ctx, c, p, n);
        return;
    }
    int ret = c->tp->ops->recv(k, c, p, n);
    if (ret == -ETIMEDOUT) /* its own deadline, such as a handshake's */
        conn_close(&k->conns, c, REASON_TIMEOUT, true);
    else if (ret < 0) {
        c->err = ret;
        conn_close(&k->conns, c, REASON_ERROR, true);
    }
}

/* A lingering close reads and drops; too much of it ends the close. */
static void drop(struct core *k, struct conn *c, size_t n)
{
    if (!(c->flags & CF_LINGER))
        return; /* output still draining: the send timeout watches it */
    c->active = k->now;
    c->dropped = n > UINT32_MAX - c->dropped ? UINT32_MAX : c->dropped + (uint32_t)n;
    if (c->dropped > k->linger_bytes)
        conn_close(&k->conns, c, (enum conn_reason)c->reason, true);
}

/* Bytes arrived: to the handler, or held while reading is paused. */
static void deliver(struct core *k, struct conn *c, const char *p, size_t n)
{
    if (c->state != CONN_OPEN) {
        drop(k, c, n); /* closing: nobody to read them */
        return;
    }
    c->active = k->now;
    if ((c->flags & CF_READ_PAUSED) || c->held_len)
        hold(k, c, p, n);
    else
        to_handler(k, c, p, n);
}

void core_deliver(struct core *k, struct conn *c, const char *p, size_t n)
{
    if (c->state == CONN_OPEN && (c->flags & CF_READY))
        k->ev->data(k->ev_ctx, c, p, n);
}

void core_ready(struct core *k, struct conn *c)
{
    if (c->state != CONN_OPEN || (c->flags & CF_READY))
        return;
    c->flags |= CF_KNOWN | CF_READY;
    if (c->origin == CONN_OUTBOUND)
        k->ev->connected(k->ev_ctx, c);
    else
        k->ev->opened(k->ev_ctx, c);
}

/* c was accepted, or its connect completed: start its transport, tell
 * the handler (now, or once the transport is ready), start reading. */
void conn_io_start(struct core *k, struct conn *c)
{
    const struct transport *t = c->tp ? c->tp->ops
        : c->origin != CONN_OUTBOUND ? k->lsn[c->origin].tp : NULL;
    int ret = t ? t->start(k, c) : 0;
    if (ret < 0) {
        c->err = ret;
        conn_close(&k->conns, c, REASON_ERROR, true);
        return;
    }
    if (ret == 0)
        core_ready(k, c);
    if (c->state == CONN_OPEN && !(c->flags & CF_READ_PAUSED))
        arm_recv(k, c);
}

void conn_io_on_recv(struct core *k, struct conn *c, struct io_uring_cqe *cqe)
{
    bool more = cqe->flags & IORING_CQE_F_MORE;
    int res = cqe->res;

    if (res > 0) {
        unsigned char *p = bufring_recv_data(&k->bufs, cqe->flags);
        k->stats.bytes_in += (unsigned)res;
        deliver(k, c, (const char *)p, (size_t)res);
        bufring_recv_done(&k->bufs, cqe->flags, (unsigned)res);
    } else if (res == 0) {
        if (c->state != CONN_OPEN)
            c->flags |= CF_EOF; /* closing: a lingering close may end */
        else if ((c->flags & CF_READY) && k->ev->eof && k->ev->eof(k->ev_ctx, c))
            c->flags |= CF_EOF; /* half-closed: sending goes on */
        else
            conn_close(&k->conns, c, REASON_EOF, false);
    } else if (res == -ENOBUFS) {
        k->stats.enobufs++; /* the bytes wait in the socket: nothing lost */
    } else if (res == -EINVAL && k->recv_limit) {
        /* a kernel before 6.17 takes no byte limit for a multishot
         * receive: without it, a turn hands a connection all it has */
        k->recv_limit = false;
        log_info("this kernel takes no byte limit on a multishot receive: "
                 "input held while paused is bounded only by the socket");
    } else if (res != -ECANCELED) {
        io_error(k, c, "receive", res);
    }
    if (more)
        return;
    /* the multishot receive is over: after an error or EOF (closing now),
     * an empty buffer ring, a pause, or for reasons of the kernel's own */
    c->flags &= ~(CF_RECV_ARMED | CF_CANCEL_SENT);
    if (c->state == CONN_OPEN && !(c->flags & (CF_READ_PAUSED | CF_EOF)))
        want_recv(k, c);
    conn_mark(&k->conns, c);
}

void conn_io_on_send(struct core *k, struct conn *c, struct io_uring_cqe *cqe)
{
    int res = cqe->res;
    if (res == -EAGAIN) { /* a quiet send found the socket full */
        log_debug("connection %llu: socket full, the next send waits for room",
                  (unsigned long long)c->id);
        res = 0;
    }
    if (res >= 0 && (size_t)res < send_size(c))
        c->flags |= CF_SEND_SHORT;
    else
        c->flags &= ~CF_SEND_SHORT;
    if (res >= 0) {
        k->stats.bytes_out += (unsigned)res;
        if (res > 0)
            c->active = k->now;
        sendq_done(&c->q, (size_t)res);
    } else {
        sendq_done(&c->q, 0);
        if (res != -ECANCELED)
            io_error(k, c, "send", res);
    }
    if ((c->flags & CF_HWM) && sendq_held(&c->q) <= k->conns.low_water) {
        c->flags &= ~CF_HWM;
        if (c->state == CONN_OPEN) {
            if (c->flags & CF_READY)
                k->ev->drained(k->ev_ctx, c);
            conn_wake(&k->conns, c);
        }
    }
    conn_mark(&k->conns, c);
}

void conn_io_on_connect(struct core *k, struct conn *c, struct io_uring_cqe *cqe)
{
    c->flags &= ~CF_CONNECT_OUT;
    free(c->aux);
    c->aux = NULL;
    if (c->state == CONN_CONNECTING) {
        if (cqe->res < 0) {
            /* -ECANCELED: the linked timeout cut it short */
            c->err = cqe->res == -ECANCELED ? -ETIMEDOUT : cqe->res;
            conn_close(&k->conns, c, cqe->res == -ECANCELED ? REASON_TIMEOUT
                                                            : REASON_ERROR, true);
        } else {
            c->state = CONN_OPEN;
            c->active = k->now;
            conn_io_start(k, c);
        }
    }
    conn_mark(&k->conns, c);
}

void conn_io_on_close(struct core *k, struct conn *c, struct io_uring_cqe *cqe)
{
    if (cqe->res < 0)
        log_debug("connection %llu: close: %s", (unsigned long long)c->id,
                  strerror(-cqe->res));
    c->flags |= CF_CLOSED;
    c->fd = -1;
    conn_mark(&k->conns, c);
}

/* A send can be quiet (see loop_quiet) when nothing waits on its
 * completion: no close queued behind it, no drained event to report. It goes
 * with MSG_DONTWAIT, so that it completes as it is submitted, with
 * -EAGAIN if the socket is full; then, and after a short send, the next
 * one waits for room the usual way. */
static bool send_is_quiet(const struct conn *c)
{
    return c->state == CONN_OPEN && !(c->flags & (CF_HWM | CF_SEND_SHORT));
}


static void start_send(struct core *k, struct conn *c)
{
    const void *p;
    size_t n;
    if ((c->flags & CF_CORK) && c->state == CONN_OPEN)
        return;
    if (sendq_busy(&c->q) || !sendq_next(&c->q, &p, &n))
        return;
    /* a send of part of the queue (capped, or with bytes queued behind
     * its buffer) is not quiet: its completion is what the next turn
     * waits for, to send the rest */
    n = send_size(c);
    bool quiet = send_is_quiet(c) && n == sendq_pending(&c->q);
    struct io_uring_sqe *sqe = loop_sqe(&k->loop);
    io_uring_prep_send(sqe, c->fd, p, n, MSG_NOSIGNAL | (quiet ? MSG_DONTWAIT : 0));
    io_uring_sqe_set_data64(sqe, ud_make(OP_SEND, c->gen, c->slot));
    if (quiet)
        loop_quiet(&k->loop);
}

/* Close through the ring: shutdown → close, hard-linked so that a failed
 * shutdown still leads to the close, and preceded by a cancel of whatever
 * is still in flight on the socket. When nothing is in flight, no CQE is
 * needed on success and the slot is freed at once: the chain touches no
 * memory of ours, and a failure's late CQE misses on the generation. When
 * something is, the close's CQE and the final CQEs of the cancelled
 * operations tell us when the slot is free. */
static void submit_close(struct core *k, struct conn *c)
{
    if (c->fd < 0) { /* never had a socket: closed before it connected */
        c->flags |= CF_CLOSE_SENT | CF_CLOSED;
        return;
    }
    bool busy = (c->flags & (CF_RECV_ARMED | CF_CONNECT_OUT)) ||
                sendq_busy(&c->q);
    uint64_t cancel_ud = ud_make(OP_CANCEL, c->gen, c->slot);
    struct io_uring *ring = &k->loop.ring;
    struct io_uring_sqe *sqe;
    /* a link chain must not be split by loop_sqe() submitting midway */
    if (io_uring_sq_space_left(ring) < 3)
        io_uring_submit(ring);

    if (busy) {
        sqe = loop_sqe(&k->loop);
        io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, cancel_ud);
        sqe->flags |= IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;
    }
    sqe = loop_sqe(&k->loop);
    io_uring_prep_shutdown(sqe, c->fd, SHUT_RDWR);
    io_uring_sqe_set_data64(sqe, cancel_ud);
    sqe->flags |= IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;

    sqe = loop_sqe(&k->loop);
    io_uring_prep_close(sqe, c->fd);
    io_uring_sqe_set_data64(sqe, ud_make(OP_CLOSE, c->gen, c->slot));
    c->flags |= CF_CLOSE_SENT;
    if (!busy) {
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        c->flags |= CF_CLOSED;
        c->fd = -1;
    }
}

/* Stop a receive in flight, for a pause; its last CQE says when. */
static void cancel_recv(struct core *k, struct conn *c)
{
    struct io_uring_sqe *sqe = loop_sqe(&k->loop);
    io_uring_prep_cancel64(sqe, ud_make(OP_RECV, c->gen, c->slot), 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_CANCEL, c->gen, c->slot));
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    c->flags |= CF_CANCEL_SENT;
}

static uint64_t conn_key(const struct conn *c)
{
    return (uint64_t)c->slot << 32 | c->gen;
}

static uint64_t ms_ns(unsigned ms) { return (uint64_t)ms * 1000000ull; }

/* A graceful close whose output makes no progress for the send timeout
 * is aborted (conn_io_close_timer): a peer that never reads would hold
 * the connection and its output for ever. */
static void drain_timer(struct core *k, struct conn *c)
{
    if (c->flags & CF_DRAIN_TIMER)
        return;
    c->active = k->now; /* the timeout counts from the close */
    if (timer_push(&k->timers, k->now + ms_ns(k->send_timeout_ms), TIMER_DRAIN,
                   conn_key(c)) == 0)
        c->flags |= CF_DRAIN_TIMER;
}

/* Linger after a close the handler asked for: the peer may still be
 * sending (a pipelined request, the rest of a body), and closing a socket
 * with unread input makes the kernel reset it, dropping the response it
 * has not sent yet. Not after the peer's EOF, an error, for connections
 * this worker made, or once the worker is stopping (core_shutdown also
 * ends the lingering closes under way). */
static bool linger_wanted(const struct core *k, const struct conn *c)
{
    return k->linger_ms && !k->stopping && c->fd >= 0 &&
           c->reason == REASON_CLOSED && c->origin != CONN_OUTBOUND &&
           !(c->flags & CF_EOF);
}

/* Shut down writing, so that the peer reads our last byte and then an
 * EOF; read and drop until its own EOF, or the limits. */
static void linger_start(struct core *k, struct conn *c)
{
    struct io_uring_sqe *sqe = loop_sqe(&k->loop);
    io_uring_prep_shutdown(sqe, c->fd, SHUT_WR);
    io_uring_sqe_set_data64(sqe, ud_make(OP_CANCEL, c->gen, c->slot));
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    free(c->held);
    c->held = NULL;
    c->dropped = 0;
    c->flags |= CF_LINGER;
    c->active = k->now;
    if (timer_push(&k->timers, k->now + ms_ns(k->linger_ms), TIMER_LINGER,
                   conn_key(c)) ||
        timer_push(&k->timers, k->now + ms_ns(k->linger_gap_ms),
                   TIMER_LINGER_GAP, conn_key(c)))
        c->flags |= CF_ABORT; /* no room for its timers: close now */
}

/* Move one connection along: send, pause, close, free. */
static void progress(struct core *k, struct conn *c)
{
    bool abort = c->flags & CF_ABORT;
    if (c->state == CONN_CONNECTING)
        return; /* sends wait for the connection */
    if (!abort && !(c->flags & CF_CLOSE_SENT))
        start_send(k, c);
    if (c->state == CONN_OPEN) {
        if ((c->flags & CF_READ_PAUSED) &&
            (c->flags & (CF_RECV_ARMED | CF_CANCEL_SENT)) == CF_RECV_ARMED)
            cancel_recv(k, c);
        return;
    }
    if (!(c->flags & CF_NOTIFIED))
        return; /* the closed event comes first; it marks c again */
    if (abort && !sendq_busy(&c->q))
        sendq_free(&c->q);
    bool drained = !sendq_busy(&c->q) && !sendq_pending(&c->q);
    if (!(c->flags & CF_CLOSE_SENT) && !abort) {
        if (!drained)
            drain_timer(k, c);
        else if (!(c->flags & CF_LINGER) && linger_wanted(k, c))
            linger_start(k, c);
        abort = c->flags & CF_ABORT;
    }
    bool lingering = (c->flags & CF_LINGER) && !(c->flags & CF_EOF);
    /* A graceful close reads on while its output drains, and while it
     * lingers, and drops what it reads (deliver): a peer blocked on its
     * own send, which reading had paused for, would otherwise never read
     * ours. */
    if (!abort && !(c->flags & (CF_CLOSE_SENT | CF_RECV_ARMED | CF_EOF)) &&
        (!drained || lingering) && bufring_avail(&k->bufs))
        arm_recv(k, c);
    if (!(c->flags & CF_CLOSE_SENT) && (abort || (drained && !lingering)))
        submit_close(k, c);
    if (conn_idle(c)) {
        if (c->tp)
            c->tp->ops->release(k, c);
        conn_free(&k->conns, c);
    }
}

void conn_io_flush(struct core *k)
{
    struct slotvec *d = &k->conns.dirty;
    for (uint32_t i = 0; i < d->n; i++) {
        struct conn *c = &k->conns.c[d->v[i]];
        if (!(c->flags & CF_DIRTY))
            continue;
        c->flags &= ~CF_DIRTY;
        if (c->state != CONN_FREE)
            progress(k, c);
    }
    d->n = 0;
}

/* Hand over what was held during a pause, a receive buffer's worth at a
 * time, as the socket would have: if the handler pauses again (its
 * output passed the high-water mark), the rest waits for the next
 * resume instead of growing its output without bound. */
static void release_held(struct core *k, struct conn *c)
{
    while (c->held_len && c->state == CONN_OPEN && !(c->flags & CF_READ_PAUSED)) {
        struct held *h = c->held;
        size_t n = c->held_len < k->bufs.size ? c->held_len : k->bufs.size;
        const char *p = h->data + h->off;
        h->off += (uint32_t)n;
        c->held_len -= (uint32_t)n;
        to_handler(k, c, p, n); /* h stays: only a completion adds to it */
    }
    if (!c->held_len && c->held) {
        free(c->held);
        c->held = NULL;
    }
}

/* Reading may go on for these: hand over what was held during the pause,
 * then receive again. */
void conn_io_resume(struct core *k)
{
    struct slotvec *r = &k->conns.resumed;
    for (uint32_t i = 0; i < r->n; i++) {
        struct conn *c = &k->conns.c[r->v[i]];
        if (!(c->flags & CF_RESUMED))
            continue;
        c->flags &= ~CF_RESUMED;
        if (c->state != CONN_OPEN || (c->flags & CF_READ_PAUSED))
            continue;
        if (c->held_len)
            release_held(k, c);
        else if (c->tp)
            to_handler(k, c, NULL, 0); /* what the transport kept, if any */
        if (c->state == CONN_OPEN &&
            !(c->flags & (CF_READ_PAUSED | CF_EOF | CF_RECV_ARMED | CF_WANT_RECV)))
            want_recv(k, c);
    }
    r->n = 0;
}

void conn_io_notify_closes(struct core *k)
{
    struct slotvec *cl = &k->conns.closing;
    /* a closed handler may close other connections: n can grow as we go */
    for (uint32_t i = 0; i < cl->n; i++) {
        struct conn *c = &k->conns.c[cl->v[i]];
        if (c->state != CONN_CLOSING || (c->flags & CF_NOTIFIED))
            continue;
        c->flags |= CF_NOTIFIED;
        if (c->flags & CF_KNOWN)
            k->ev->closed(k->ev_ctx, c);
        conn_mark(&k->conns, c);
    }
    cl->n = 0;
}

/* Re-arm receives that ended, at most as many as there are free buffers,
 * oldest first; the rest wait for buffers to come back. */
void conn_io_rearm(struct core *k)
{
    struct slotvec *e = &k->rearm;
    uint32_t i = 0, budget = bufring_avail(&k->bufs);
    for (; i < e->n && budget; i++) {
        struct conn *c = &k->conns.c[e->v[i]];
        if (c->state != CONN_OPEN || (c->flags & CF_READ_PAUSED)) {
            c->flags &= ~CF_WANT_RECV; /* resuming asks again */
            continue;
        }
        if ((c->flags & (CF_WANT_RECV | CF_RECV_ARMED)) != CF_WANT_RECV)
            continue;
        arm_recv(k, c);
        budget--;
    }
    if (i) {
        memmove(e->v, e->v + i, (e->n - i) * sizeof *e->v);
        e->n -= i;
    }
}

void conn_io_connect(struct core *k, struct conn *c, void *addr, unsigned len)
{
    struct io_uring *ring = &k->loop.ring;
    if (io_uring_sq_space_left(ring) < 2)
        io_uring_submit(ring); /* keep the connect and its timeout together */
    c->aux = addr;
    struct io_uring_sqe *sqe = loop_sqe(&k->loop);
    io_uring_prep_connect(sqe, c->fd, addr, len);
    io_uring_sqe_set_data64(sqe, ud_make(OP_CONNECT, c->gen, c->slot));
    sqe->flags |= IOSQE_IO_LINK;
    sqe = loop_sqe(&k->loop);
    io_uring_prep_link_timeout(sqe, &k->connect_ts, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_CANCEL, c->gen, c->slot));
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    c->flags |= CF_CONNECT_OUT;
}

static void idle_arm(struct core *k, struct conn *c)
{
    if (!c->idle_ms || (c->flags & CF_IDLE_QUEUED))
        return;
    uint64_t due = c->active + (uint64_t)c->idle_ms * 1000000ull;
    if (timer_push(&k->timers, due, TIMER_IDLE, conn_key(c)) == 0)
        c->flags |= CF_IDLE_QUEUED;
}

/* An idle-timeout entry is due: close the connection if it has really
 * been idle that long, else look again when it could be. */
void conn_io_idle_check(struct core *k, uint64_t key)
{
    struct conn *c = conn_get(&k->conns, (uint32_t)(key >> 32), (uint32_t)key);
    if (!c)
        return;
    c->flags &= ~CF_IDLE_QUEUED;
    if (c->state != CONN_OPEN || !c->idle_ms)
        return;
    if (k->now >= c->active + (uint64_t)c->idle_ms * 1000000ull)
        /* output still queued to an idle peer will not drain: drop it */
        conn_close(&k->conns, c, REASON_TIMEOUT, sendq_pending(&c->q) > 0);
    else
        idle_arm(k, c);
}

void conn_io_close_timer(struct core *k, unsigned kind, uint64_t key)
{
    struct conn *c = conn_get(&k->conns, (uint32_t)(key >> 32), (uint32_t)key);
    if (!c || c->state != CONN_CLOSING || (c->flags & (CF_CLOSE_SENT | CF_ABORT)))
        return;
    uint64_t due = 0;
    if (kind == TIMER_DRAIN) {
        c->flags &= ~CF_DRAIN_TIMER;
        if (!sendq_pending(&c->q))
            return;
        due = c->active + ms_ns(k->send_timeout_ms);
        if (k->now >= due)
            log_info("connection %llu: closing, but its output made no progress "
                     "for %.1f s: dropping the %zu bytes left",
                     (unsigned long long)c->id, k->send_timeout_ms / 1000.0,
                     sendq_pending(&c->q));
        else if (timer_push(&k->timers, due, TIMER_DRAIN, conn_key(c)) == 0)
            c->flags |= CF_DRAIN_TIMER;
        else
            due = 0; /* cannot watch it: drop it now */
    } else if (!(c->flags & CF_LINGER)) {
        return;
    } else if (kind == TIMER_LINGER_GAP) {
        due = c->active + ms_ns(k->linger_gap_ms);
        if (k->now < due && timer_push(&k->timers, due, TIMER_LINGER_GAP, conn_key(c)))
            due = 0;
    }
    if (k->now >= due)
        conn_close(&k->conns, c, (enum conn_reason)c->reason, true);
}

void core_set_idle(struct core *k, struct conn *c, uint32_t ms)
{
    c->idle_ms = ms;
    c->active = k->now;
    idle_arm(k, c);
}
