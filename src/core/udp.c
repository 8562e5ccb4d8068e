/* udp.c - datagram sockets: listeners of -l udp:// and connected
 * sockets the layer above makes.
 *
 * Receiving is one multishot recvmsg per socket into a provided-buffer
 * group of the datagram sockets' own (the stream buffers are filled
 * incrementally, and a datagram must start a buffer: the kernel writes
 * a struct io_uring_recvmsg_out, the sender's address, then the
 * payload). Each buffer holds one datagram of up to udp_buffer_size
 * bytes: a longer one comes cut, with MSG_TRUNC, and is reported so.
 *
 * The group's size bounds how many datagrams one turn of the loop
 * handles: buffers go back to the kernel only between two waits, so one
 * wait can deliver at most that many, and a flood waits in the socket
 * (the receive ends with ENOBUFS and is made again after the turn)
 * while the turn's other completions, the TCP connections', are served.
 *
 * Sending is one send per datagram, with the peer's address, from a
 * copy of its bytes (IORING_OP_SEND with the address in the SQE, which
 * spares the kernel copying a msghdr and an iovec; a kernel that refuses
 * the address fails the first such send with EINVAL, and sendmsg is used
 * from then on); several may be in flight on one socket (datagrams
 * have no order to keep). MSG_DONTWAIT: a send completes while it is
 * submitted, and a socket whose buffer is full drops the datagram, as
 * the network may. A send that succeeds posts no completion
 * (IOSQE_CQE_SKIP_SUCCESS): its buffer is given back once the wait that
 * submitted it is over and its failure, if any, has been drained. The bytes with the kernel are bounded (UDP_QUEUE_MAX):
 * past that core_sendto refuses, and the drop is counted. */
#include "core_int.h"
#include "log.h"
#include "ud.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UDP_GROUP      2
#define UDP_BUFFERS    64
#define UDP_PAYLOAD    65535
#define UDP_QUEUE_MAX  (4u << 20)   /* bytes of datagrams with the kernel */
#define UDP_SPARE_SIZE 512          /* sends this small reuse their buffer */
#define UDP_SPARE_MAX  256

struct udp_tx {                     /* one datagram, until its send is over */
    struct udp_tx *next;            /* sending, or among the spares */
    struct core_udp *u;
    struct msghdr msg;
    struct iovec iov;
    struct sockaddr_in6 to;         /* room for either family */
    size_t cap, len;
    char data[];
};

static void on_recv(struct core *k, struct core_op *op, const struct io_uring_cqe *cqe);

/* The buffer group, with the first datagram socket: a server without
 * one pays nothing. */
static int ensure_bufs(struct core *k)
{
    if (k->ubufs.br)
        return 0;
    size_t head = sizeof(struct io_uring_recvmsg_out) + sizeof(struct sockaddr_in6);
    size_t size = (head + k->udp_buffer_size + 63) & ~(size_t)63;
    int ret = bufring_init(&k->ubufs, k->udp_buffers, (unsigned)size);
    if (!ret)
        ret = bufring_register_whole(&k->ubufs, &k->loop.ring, UDP_GROUP);
    if (ret) {
        log_error("datagram buffers: %s", strerror(-ret));
        bufring_destroy(&k->ubufs);
    }
    return ret;
}

static void arm(struct core *k, struct core_udp *u)
{
    struct io_uring_sqe *sqe = core_op_sqe(k, &u->rx_op);
    io_uring_prep_recvmsg_multishot(sqe, u->fd, &u->msg, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = UDP_GROUP;
    u->armed = true;
}

/* A free index in k->udp. */
static int slot(struct core *k)
{
    for (unsigned i = 0; i < k->nudp; i++)
        if (!k->udp[i])
            return (int)i;
    if (k->nudp == k->udp_cap) {
        unsigned cap = k->udp_cap ? 2 * k->udp_cap : 8;
        struct core_udp **v = realloc(k->udp, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        k->udp = v;
        k->udp_cap = cap;
    }
    k->udp[k->nudp] = NULL;
    return (int)k->nudp++;
}

static struct core_udp *add(struct core *k, int fd, bool listener, int *err)
{
    struct core_udp *u = NULL;
    int i = -ENOMEM;
    if ((*err = ensure_bufs(k)) || (i = slot(k)) < 0 ||
        !(u = calloc(1, sizeof *u))) {
        if (!*err)
            *err = i < 0 ? i : -ENOMEM;
        close(fd);
        return NULL;
    }
    u->k = k;
    u->fd = fd;
    u->index = (unsigned)i;
    u->listener = listener;
    u->rx_op.done = on_recv;
    u->msg.msg_namelen = sizeof(struct sockaddr_in6);
    k->udp[i] = u;
    arm(k, u);
    return u;
}

struct core_udp *core_udp_listen(struct core *k, int fd, int *err)
{
    return add(k, fd, true, err);
}

struct core_udp *core_udp_connect(struct core *k, const struct sockaddr *addr,
                                  socklen_t len, int *err)
{
    if (k->stopping) {
        *err = -ESHUTDOWN;
        return NULL;
    }
    /* connect on UDP sets the peer and returns: nothing to wait for */
    int fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, addr, len)) {
        *err = -errno;
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    return add(k, fd, false, err);
}

/* u is done with once nothing of it is with the kernel: a listener
 * keeps its struct (the layer above names it) until udp_free. */
static void maybe_free(struct core *k, struct core_udp *u)
{
    if (!u->closing || u->armed || u->inflight)
        return;
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    if (u->listener)
        return;
    k->udp[u->index] = NULL;
    free(u);
}

static void cancel_recv(struct core *k, struct core_udp *u)
{
    struct io_uring_sqe *sqe = loop_sqe(&k->loop);
    io_uring_prep_cancel64(sqe, ud_make_ptr(OP_TASK, &u->rx_op), 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_CANCEL, 0, 0));
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

void core_udp_close(struct core *k, struct core_udp *u)
{
    if (u->closing)
        return;
    u->closing = true;
    if (u->armed)
        cancel_recv(k, u);
    k->udp_rearm = true; /* frees it after the turn if nothing is in flight */
}

void udp_stop_listeners(struct core *k)
{
    for (unsigned i = 0; i < k->nudp; i++)
        if (k->udp[i] && k->udp[i]->listener)
            core_udp_close(k, k->udp[i]);
}

/* One datagram in buffer p (res bytes): to the layer above. */
static void deliver(struct core *k, struct core_udp *u, unsigned char *p, int res)
{
    struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(p, res, &u->msg);
    if (!o || o->namelen > u->msg.msg_namelen)
        return;
    const char *data = io_uring_recvmsg_payload(o, &u->msg);
    size_t n = io_uring_recvmsg_payload_length(o, res, &u->msg);
    unsigned flags = 0;
    if (n > k->udp_buffer_size) /* the buffer's rounding left room */
        n = k->udp_buffer_size, o->flags |= MSG_TRUNC;
    if (o->flags & MSG_TRUNC) {
        flags |= CORE_DGRAM_TRUNC;
        k->stats.dgrams_truncated++;
    }
    k->stats.dgrams_in++;
    k->stats.bytes_in += n;
    k->udp_turn++;
    if (k->ev->datagram)
        k->ev->datagram(k->ev_ctx, u, io_uring_recvmsg_name(o), o->namelen,
                        data, n, flags);
}

/* Errors a socket reports and goes on after: an ICMP error for an
 * earlier send. Any other ends its receiving. */
static bool transient(int err)
{
    return err == -ECONNREFUSED || err == -EHOSTUNREACH || err == -ENETUNREACH ||
           err == -EINTR;
}

static void on_recv(struct core *k, struct core_op *op, const struct io_uring_cqe *cqe)
{
    struct core_udp *u = core_op_owner(op, struct core_udp, rx_op);
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (!more) {
        u->armed = false;
        k->udp_rearm = true;
    }
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = bufring_cqe_bid(cqe->flags);
        unsigned char *p = bufring_take(&k->ubufs, bid);
        if (cqe->res > 0 && !u->closing)
            deliver(k, u, p, cqe->res);
        bufring_put(&k->ubufs, bid);
    } else if (cqe->res == -ENOBUFS) {
        k->stats.enobufs++; /* the datagrams wait in the socket */
    } else if (cqe->res < 0 && cqe->res != -ECANCELED && !u->closing) {
        u->err = cqe->res;
        if (u->listener) {
            /* a listener serves many peers: one's error is no reason to
             * stop, nor a datagram for the handler; it is re-armed */
            uint64_t sec = k->now / 1000000000ull;
            if (sec != u->warned_s) {
                u->warned_s = sec;
                log_warn("udp receive: %s", strerror(-cqe->res));
            }
            if (!transient(cqe->res))
                u->failed = true; /* again a second later (udp_rearm) */
        } else {
            if (!transient(cqe->res)) {
                log_warn("udp receive: %s; this socket receives no more",
                         strerror(-cqe->res));
                u->failed = true;
            }
            if (k->ev->datagram)
                k->ev->datagram(k->ev_ctx, u, NULL, 0, NULL, 0, 0);
        }
    }
    maybe_free(k, u);
}

/* A send failed (a success posts no completion): count it. The tx is
 * not touched here: it is released with the others of its turn. */
static void on_send_error(struct core *k, struct core_op *op,
                          const struct io_uring_cqe *cqe)
{
    (void)op;
    if (!k->udp_sendmsg && (cqe->res == -EINVAL || cqe->res == -EDESTADDRREQ)) {
        k->udp_sendmsg = true; /* a kernel before send with an address */
        log_debug("udp send: %s; using sendmsg", strerror(-cqe->res));
    }
    k->stats.dgrams_dropped++;
    k->stats.dgrams_out--;
    log_debug("udp send: %s", strerror(-cqe->res));
}

/* The sends submitted by the last wait are over: with MSG_DONTWAIT a
 * UDP sendmsg completes while it is submitted, its bytes copied into the
 * socket, and an error is posted then (and handled by the drain that
 * came just before this). Give their buffers back. */
void udp_sent(struct core *k, struct udp_tx *list)
{
    while (list) {
        struct udp_tx *t = list;
        list = t->next;
        struct core_udp *u = t->u;
        k->udp_queued -= t->len;
        u->inflight--;
        if (t->cap == UDP_SPARE_SIZE && k->udp_nspare < UDP_SPARE_MAX) {
            t->next = k->udp_spare;
            k->udp_spare = t;
            k->udp_nspare++;
        } else {
            free(t);
        }
        maybe_free(k, u);
    }
}

static struct udp_tx *tx_get(struct core *k, size_t n)
{
    if (n <= UDP_SPARE_SIZE && k->udp_spare) {
        struct udp_tx *t = k->udp_spare;
        k->udp_spare = t->next;
        k->udp_nspare--;
        return t;
    }
    size_t cap = n <= UDP_SPARE_SIZE ? UDP_SPARE_SIZE : n;
    struct udp_tx *t = malloc(sizeof *t + cap);
    if (t)
        t->cap = cap;
    return t;
}

int core_sendto(struct core *k, struct core_udp *u, const struct sockaddr *addr,
                socklen_t alen, const void *p, size_t n)
{
    if (u->closing || u->fd < 0)
        return -EPIPE;
    if (n > UDP_PAYLOAD || (addr && alen > sizeof(struct sockaddr_in6)))
        return addr && alen > sizeof(struct sockaddr_in6) ? -EINVAL : -EMSGSIZE;
    if (k->udp_queued + n > UDP_QUEUE_MAX) {
        k->stats.dgrams_dropped++;
        return -ENOBUFS;
    }
    struct udp_tx *t = tx_get(k, n);
    if (!t)
        return -ENOMEM;
    t->u = u;
    t->len = n;
    memcpy(t->data, p, n);
    if (addr)
        memcpy(&t->to, addr, alen);
    /* no completion on success: half the CQEs of an echo; the buffer
     * goes back after the next wait (udp_sent) */
    k->udp_send_op.done = on_send_error;
    struct io_uring_sqe *sqe = core_op_sqe(k, &k->udp_send_op);
    if (!k->udp_sendmsg) {
        /* a send with the address: the kernel copies no msghdr */
        io_uring_prep_send(sqe, u->fd, t->data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (addr)
            io_uring_prep_send_set_addr(sqe, (struct sockaddr *)&t->to,
                                        (__u16)alen);
    } else {
        t->iov = (struct iovec){ .iov_base = t->data, .iov_len = n };
        t->msg = (struct msghdr){ .msg_iov = &t->iov, .msg_iovlen = 1 };
        if (addr) {
            t->msg.msg_name = &t->to;
            t->msg.msg_namelen = alen;
        }
        io_uring_prep_sendmsg(sqe, u->fd, &t->msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    t->next = k->udp_sending;
    k->udp_sending = t;
    u->inflight++;
    k->udp_queued += n;
    k->stats.dgrams_out++;
    k->stats.bytes_out += n;
    return 0;
}

void udp_rearm(struct core *k)
{
    if (k->udp_turn >= k->udp_buffers)
        k->stats.dgram_turns_full++;
    k->udp_turn = 0;
    if (!k->udp_rearm)
        return;
    k->udp_rearm = false;
    for (unsigned i = 0; i < k->nudp; i++) {
        struct core_udp *u = k->udp[i];
        if (!u)
            continue;
        if (u->failed && u->listener && u->fd >= 0 && !u->closing) {
            if (k->now / 1000000000ull <= u->warned_s) {
                k->udp_rearm = true; /* not yet: look again next turn */
                continue;
            }
            u->failed = false;
        }
        if (u->closing)
            maybe_free(k, u);
        else if (!u->armed && !u->failed && u->fd >= 0)
            arm(k, u);
    }
}

void udp_free(struct core *k)
{
    /* the ring is gone: nothing is in flight. The sends of the last turn
     * go first, and without udp_sent, which would touch their sockets */
    while (k->udp_sending) {
        struct udp_tx *t = k->udp_sending;
        k->udp_sending = t->next;
        free(t);
    }
    for (unsigned i = 0; i < k->nudp; i++) {
        struct core_udp *u = k->udp[i];
        if (!u)
            continue;
        if (u->fd >= 0)
            close(u->fd);
        free(u);
    }
    free(k->udp);
    k->udp = NULL;
    k->nudp = k->udp_cap = 0;
    while (k->udp_spare) {
        struct udp_tx *t = k->udp_spare;
        k->udp_spare = t->next;
        free(t);
    }
    k->udp_nspare = 0;
    bufring_destroy(&k->ubufs);
}
