/* core.c - the engine's state and its turn: wait, dispatch every
 * completion by its tag, run timers, then the phases that submit what
 * the batch asked for. */
#include "core_int.h"
#include "log.h"
#include "ud.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUF_GROUP 1
#define CONNECT_TIMEOUT_S 10

static void no_conn(void *ctx, struct conn *c) { (void)ctx, (void)c; }
static void no_data(void *ctx, struct conn *c, const char *p, size_t n)
{
    (void)ctx, (void)c, (void)p, (void)n;
}
static void no_timer(void *ctx, uint64_t key, uint64_t due)
{
    (void)ctx, (void)key, (void)due;
}

static const struct core_events no_events = {
    .opened = no_conn, .connected = no_conn, .data = no_data,
    .drained = no_conn, .closed = no_conn, .timer = no_timer,
};

static unsigned pow2_at_least(unsigned n)
{
    unsigned p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

int core_init(struct core *k, const struct core_config *cfg)
{
    int ret;
    memset(k, 0, sizeof *k);
    k->ev = &no_events;
    k->now = timer_now();
    k->connect_ts.tv_sec = CONNECT_TIMEOUT_S;
    k->max_wait_ns = (uint64_t)cfg->max_wait_ms * 1000000ull;

    /* room for a receive and a send CQE per connection plus one per
     * buffer (datagram buffers too), so that a full batch cannot
     * overflow the CQ */
    unsigned cq = pow2_at_least(2 * cfg->max_conns + cfg->buffers +
                                (cfg->udp_buffers ? cfg->udp_buffers : 64) + 64);
    if (cq > 65536)
        cq = 65536;
    if (cq < 4096)
        cq = 4096;
    if ((ret = loop_init(&k->loop, 4096, cq))) {
        log_error("io_uring setup failed: %s", strerror(-ret));
        return -1;
    }
    if (loop_set_batch_wait(&k->loop, cfg->batch_wait_us))
        log_warn("--batch-wait needs Linux 6.12 or later: not batching");
    if ((ret = bufring_init(&k->bufs, cfg->buffers, cfg->buffer_size)) ||
        (ret = bufring_register(&k->bufs, &k->loop.ring, BUF_GROUP))) {
        log_error("receive buffer ring: %s", strerror(-ret));
        return -1;
    }
    if ((ret = conn_table_init(&k->conns, cfg->max_conns))) {
        log_error("connection table: %s", strerror(-ret));
        return -1;
    }
    if (cfg->high_water) {
        k->conns.high_water = cfg->high_water;
        k->conns.low_water = cfg->high_water / 4;
    }
    k->recv_limit = true; /* until the kernel says otherwise */
    k->send_timeout_ms = cfg->send_timeout_ms ? cfg->send_timeout_ms : 60000;
    k->linger_ms = cfg->linger_ms;
    k->linger_gap_ms = cfg->linger_gap_ms;
    k->linger_bytes = cfg->linger_bytes;
    k->udp_buffers = cfg->udp_buffers ? cfg->udp_buffers : 64;
    k->udp_buffer_size = cfg->udp_buffer_size ? cfg->udp_buffer_size : 65535;
    return 0;
}

void core_destroy(struct core *k)
{
    /* the ring first: after it, the kernel holds no send or receive
     * buffer of ours, even of connections a shutdown timeout cut off */
    fs_quiesce(k);  /* the io-wq threads done with the file requests */
    loop_destroy(&k->loop);
    resolv_free(k); /* its receive buffers were the kernel's until now */
    udp_free(k);    /* and so were the datagram sockets' */
    fs_free(k);     /* and so were the file requests' buffers */
    for (uint32_t i = 0; k->conns.c && i < k->conns.used_hi; i++) {
        struct conn *c = &k->conns.c[i];
        if (c->state != CONN_FREE && c->tp)
            c->tp->ops->release(k, c);
    }
    conn_table_destroy(&k->conns);
    bufring_destroy(&k->bufs);
    timer_heap_free(&k->timers);
    free(k->rearm.v);
    for (unsigned i = 0; i < k->nlsn; i++)
        if (k->lsn[i].fd >= 0)
            close(k->lsn[i].fd);
    free(k->lsn);
    k->lsn = NULL;
    k->nlsn = 0;
}

void core_set_events(struct core *k, const struct core_events *ev, void *ctx)
{
    k->ev = ev ? ev : &no_events;
    k->ev_ctx = ctx;
}

struct io_uring_sqe *core_op_sqe(struct core *k, struct core_op *op)
{
    struct io_uring_sqe *sqe = loop_sqe(&k->loop);
    io_uring_sqe_set_data64(sqe, ud_make_ptr(OP_TASK, op));
    return sqe;
}

int core_timer_add(struct core *k, uint64_t due, uint64_t key)
{
    return timer_push(&k->timers, due, TIMER_USER, key);
}

static void dispatch(void *ctx, struct io_uring_cqe *cqe)
{
    struct core *k = ctx;
    uint64_t ud = cqe->user_data;
    enum ud_op op = ud_op(ud);
    struct conn *c = NULL;

    if (op == OP_RECV || op == OP_SEND || op == OP_CLOSE || op == OP_CANCEL ||
        op == OP_CONNECT) {
        c = conn_get(&k->conns, ud_slot(ud), ud_gen(ud));
        if (!c)
            return; /* late completion for a freed connection */
    }
    switch (op) {
    case OP_ACCEPT:       listener_on_accept(k, ud_slot(ud), cqe); break;
    case OP_ACCEPT_RETRY:
        k->accept_retry_armed = false;
        listener_on_retry(k);
        break;
    case OP_RECV:         conn_io_on_recv(k, c, cqe); break;
    case OP_SEND:         conn_io_on_send(k, c, cqe); break;
    case OP_CLOSE:        conn_io_on_close(k, c, cqe); break;
    case OP_CONNECT:      conn_io_on_connect(k, c, cqe); break;
    case OP_CANCEL:       /* only failures post; the close that follows matters */
        break;
    case OP_CLOSE_RAW:
        log_debug("close: %s", strerror(-cqe->res));
        break;
    case OP_TASK: {
        struct core_op *o = ud_ptr(ud);
        o->done(k, o, cqe);
        break;
    }
    default:
        log_error("completion with unknown user_data 0x%llx (res %d)",
                  (unsigned long long)ud, cqe->res);
    }
}

/* Wait no longer than the earliest timer, nor than max_wait: the wait's
 * own timeout, so timers and the owner's wake-ups cost no SQE and no
 * extra syscall. */
static struct __kernel_timespec *wait_limit(struct core *k,
                                            struct __kernel_timespec *ts)
{
    const struct timer_entry *e = timer_peek(&k->timers);
    uint64_t d = k->max_wait_ns;
    if (e) {
        uint64_t now = timer_now();
        uint64_t due = e->due > now ? e->due - now : 0;
        if (!d || due < d)
            d = due;
    } else if (!d) {
        return NULL;
    }
    ts->tv_sec = (long long)(d / 1000000000ull);
    ts->tv_nsec = (long long)(d % 1000000000ull);
    return ts;
}

int core_wait(struct core *k)
{
    struct __kernel_timespec ts;
    int ret = loop_wait(&k->loop, wait_limit(k, &ts));
    k->now = timer_now();
    return ret == -ETIME ? 0 : ret;
}

static void run_timers(struct core *k)
{
    struct timer_entry e;
    while (timer_pop_due(&k->timers, k->now, &e)) {
        if (e.kind == TIMER_IDLE)
            conn_io_idle_check(k, e.key);
        else if (e.kind == TIMER_RESOLV)
            resolv_on_timer(k, e.key);
        else if (e.kind == TIMER_DRAIN || e.kind == TIMER_LINGER ||
                 e.kind == TIMER_LINGER_GAP)
            conn_io_close_timer(k, e.kind, e.key);
        else
            k->ev->timer(k->ev_ctx, e.key, e.due);
    }
}

void core_run(struct core *k)
{
    struct udp_tx *sent = k->udp_sending; /* submitted by the last wait */
    k->udp_sending = NULL;
    loop_drain(&k->loop, dispatch, k);
    udp_sent(k, sent);
    run_timers(k);
    conn_io_resume(k);
    conn_io_notify_closes(k);
    uint32_t live = k->conns.live;
    conn_io_flush(k); /* frees the connections that are done */
    if (k->accept_paused && k->conns.live < live)
        listener_on_retry(k); /* an fd is free again */
    conn_io_rearm(k);
    udp_rearm(k);
}

void core_shutdown(struct core *k)
{
    k->stopping = true;
    listener_stop_all(k);
    udp_stop_listeners(k);
    for (uint32_t i = 0; i < k->conns.used_hi; i++) {
        struct conn *c = &k->conns.c[i];
        if (c->state == CONN_OPEN)
            conn_close(&k->conns, c, REASON_SHUTDOWN, false);
        else if (c->state == CONN_CLOSING && (c->flags & CF_LINGER))
            conn_close(&k->conns, c, (enum conn_reason)c->reason, true);
    }
}

static bool accepting(const struct core *k)
{
    for (unsigned i = 0; i < k->nlsn; i++)
        if (k->lsn[i].armed)
            return true;
    for (unsigned i = 0; i < k->nudp; i++) /* a receive holds its socket too */
        if (k->udp[i] && k->udp[i]->listener && k->udp[i]->armed)
            return true;
    return false;
}

/* Until its last completion a multishot accept (or a datagram
 * listener's receive) holds the listening socket open, even after we
 * exit (the ring is torn down asynchronously), and a restart would find
 * the port in use. */
void core_finish(struct core *k)
{
    struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 50 * 1000 * 1000 };
    for (int i = 0; i < 20 && accepting(k); i++) {
        int ret = loop_wait(&k->loop, &ts);
        if (ret < 0 && ret != -ETIME)
            break;
        loop_drain(&k->loop, dispatch, k);
    }
    /* submit, and run the completions DEFER_TASKRUN holds for the next
     * wait, such as the later links of a close chain */
    io_uring_submit(&k->loop.ring);
    io_uring_get_events(&k->loop.ring);
}

int core_connect_new(struct core *k, struct transport_conn *tp,
                     struct conn **out)
{
    if (k->stopping)
        return -ESHUTDOWN;
    struct conn *c = conn_alloc(&k->conns, -1);
    if (!c) /* with files (fs.h) among the fds, say so */
        return k->conns.reserved ? -EMFILE : -ENOSPC;
    c->state = CONN_CONNECTING;
    c->origin = CONN_OUTBOUND;
    c->flags |= CF_KNOWN;
    c->tp = tp;
    c->active = k->now;
    *out = c;
    return 0;
}

int core_connect_to(struct core *k, struct conn *c, const struct sockaddr *addr,
                    socklen_t len)
{
    int fd = c->state == CONN_CONNECTING && c->fd < 0
        ? socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
    void *copy = fd >= 0 ? malloc(len) : NULL;
    if (!copy) {
        int err = fd >= 0 ? -ENOMEM : c->state != CONN_CONNECTING ? -EPIPE : -errno;
        if (fd >= 0)
            close(fd);
        c->err = err;
        conn_close(&k->conns, c, REASON_ERROR, true);
        return err;
    }
    if (addr->sa_family == AF_INET || addr->sa_family == AF_INET6) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    memcpy(copy, addr, len);
    c->fd = fd;
    conn_io_connect(k, c, copy, len);
    return 0;
}

int core_connect(struct core *k, const struct sockaddr *addr, socklen_t len,
                 struct transport_conn *tp, struct conn **out)
{
    int ret = core_connect_new(k, tp, out);
    if (ret)
        return ret;
    ret = core_connect_to(k, *out, addr, len);
    if (ret) { /* the caller hears of it from here, not by an event */
        (*out)->tp = NULL; /* stays the caller's */
        (*out)->flags &= ~CF_KNOWN;
        *out = NULL;
    }
    return ret;
}
