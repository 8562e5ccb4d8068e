/* core.h - one worker's engine: its ring, receive buffers, listeners,
 * connections and timers, and the one interface through which it tells
 * the layer above what happened. Nothing under src/core/ knows of Lua:
 * the Lua binding implements struct core_events, and the core's tests
 * implement it with a few C functions.
 *
 * One turn of the engine, driven by its owner (the worker):
 *
 *   core_wait()   submit everything queued and wait, in one io_uring_enter
 *   core_run()    drain every completion (events go up as they come),
 *                 run due timers, hand over bytes held while paused,
 *                 report closes, send what the handlers wrote, re-arm
 *                 receives
 *
 * Every event handler may call back into the core (send, close, pause,
 * connect, timers); what that asks of the kernel is queued and goes out
 * with the next wait. */
#ifndef MR_CORE_H
#define MR_CORE_H

#include "bufring.h"
#include "conn.h"
#include "loop.h"
#include "timer.h"
#include "transport.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

struct core;
struct resolver;
struct core_udp;
struct udp_tx;

/* Flags of a datagram event */
#define CORE_DGRAM_TRUNC 1u   /* longer than the buffer: p holds its start */

/* What the core reports, each with the ctx given to core_set_events. A
 * connection's events come in this order: opened or connected, then any
 * number of data and drained, then closed, once, as its last. */
struct core_events {
    /* c was accepted on listener c->origin (and its transport, if any,
     * is ready). */
    void (*opened)(void *ctx, struct conn *c);
    /* c, made by core_connect, is connected (and its transport ready). */
    void (*connected)(void *ctx, struct conn *c);
    /* n bytes for the handler arrived on c: plaintext, after the
     * transport. They are valid only during the call. */
    void (*data)(void *ctx, struct conn *c, const char *p, size_t n);
    /* c's output went above the high-water mark (reading paused) and has
     * fallen to the low-water mark (reading goes on). */
    void (*drained)(void *ctx, struct conn *c);
    /* c is closing: c->reason says why, c->err holds the errno behind an
     * error. Reported after the batch in which it happened; c is freed
     * later, once nothing of it is with the kernel. A connection that
     * core_connect made is reported closed even if it never connected. */
    void (*closed)(void *ctx, struct conn *c);
    /* A timer set with core_timer_add is due. */
    void (*timer)(void *ctx, uint64_t key, uint64_t due);
    /* The peer of c will send nothing more (it shut down its side).
     * Return true to keep c open for what the handler still sends
     * (CF_EOF; it closes c when done), false to close it now, as when
     * this is NULL. */
    bool (*eof)(void *ctx, struct conn *c);
    /* A datagram of n bytes came on u from peer (plen bytes; for a
     * connected socket, its peer); valid only during the call. flags:
     * CORE_DGRAM_TRUNC. With p NULL, the socket reported an error
     * instead (u->err: an ICMP port unreachable on a connected socket,
     * -ECONNREFUSED). May be NULL: datagrams are dropped. */
    void (*datagram)(void *ctx, struct core_udp *u, const struct sockaddr *peer,
                     socklen_t plen, const char *p, size_t n, unsigned flags);
};

/* An operation on the ring that is not a connection's (a signal read, a
 * timeout, a name lookup's datagrams; later a file read): whoever
 * submits it embeds a core_op and gets its completion in done. The op
 * must stay valid until then. */
struct core_op;
typedef void (*core_op_fn)(struct core *k, struct core_op *op,
                           const struct io_uring_cqe *cqe);
struct core_op {
    core_op_fn done;
};

/* The struct that embeds a core_op, from the op done was given. */
#define core_op_owner(op, type, member) \
    ((type *)(void *)((char *)(op) - offsetof(type, member)))

struct core_config {
    unsigned max_conns;        /* connection slots */
    unsigned buffers;          /* receive buffers, a power of two */
    unsigned buffer_size;      /* bytes each */
    size_t high_water;         /* output bytes that pause reading; 0: 1 MiB */
    unsigned batch_wait_us;    /* min-wait batching, 0: off */
    /* Closing: a graceful close whose output makes no progress for this
     * long is aborted (0: 60 s) */
    unsigned send_timeout_ms;
    /* Lingering close (0 ms: off): once a connection the handler closed
     * has sent everything, writing is shut down and input is read and
     * dropped until the peer closes, for at most linger_ms in all, at
     * most linger_gap_ms without input, and at most linger_bytes. */
    unsigned linger_ms, linger_gap_ms;
    size_t linger_bytes;
    /* The longest one wait may last, 0: as long as it takes. For an
     * owner that must see the loop turn now and then even when nothing
     * happens (a heartbeat); it costs no SQE, only the wake-up. */
    unsigned max_wait_ms;
    /* Datagram sockets (udp.c): their receive buffers, a group of their
     * own made with the first such socket. udp_buffers (a power of two;
     * 0: 64) is also how many datagrams one turn handles at most;
     * udp_buffer_size the longest payload taken whole (0: 65535, any UDP
     * datagram). */
    unsigned udp_buffers, udp_buffer_size;
};

struct core_stats {
    uint64_t accepted;
    uint64_t bytes_in, bytes_out;
    uint64_t enobufs;
    /* datagrams */
    uint64_t dgrams_in, dgrams_out;
    uint64_t dgrams_truncated;   /* longer than --udp-buffer-size */
    uint64_t dgrams_dropped;     /* not sent: the send queue was full, or the
                                    socket's buffer (EAGAIN) */
    uint64_t dgram_turns_full;   /* turns that used every datagram buffer */
};

/* A listening socket; the connections it accepts carry its index. */
struct listener {
    int fd;                    /* -1 once stopped */
    const struct transport *tp; /* of the connections it accepts */
    bool armed;                /* a multishot accept is with the kernel */
    bool paused;               /* out of fds: waiting for one */
};

struct core {
    struct loop loop;
    struct bufring bufs;
    struct conn_table conns;
    struct timer_heap timers;  /* the layer above's timers, idle timeouts */
    struct core_stats stats;
    uint64_t now;              /* monotonic ns, read once per turn */
    uint64_t max_wait_ns;      /* core_config.max_wait_ms; 0: none */
    const struct core_events *ev;
    void *ev_ctx;

    struct listener *lsn;
    unsigned nlsn;
    bool accept_paused;        /* some listener waits for fds */
    bool accept_retry_armed;   /* the retry timeout is in flight */
    struct __kernel_timespec accept_retry_ts;
    struct __kernel_timespec connect_ts; /* timeout of outbound connects */
    time_t warned_accept, warned_full;   /* rate-limit repeated warnings */

    struct slotvec rearm;      /* connections whose receive must be re-armed */
    bool recv_limit;           /* the kernel ends a multishot receive after
                                  a given number of bytes (Linux 6.17) */
    unsigned send_timeout_ms, linger_ms, linger_gap_ms; /* see core_config */
    size_t linger_bytes;
    bool stopping;             /* core_shutdown ran: no new connections */
    struct resolver *resolv;   /* name lookups (resolv.h): made by the first */
    struct fs_req *fs_reqs;    /* file requests in flight (fs.h) */
    unsigned fs_files;         /* fds the file module holds */
    bool fs_quiesced;          /* core_destroy saw their completions come */

    /* datagram sockets (udp.c) */
    struct core_udp **udp;     /* by index; NULL once freed */
    unsigned nudp, udp_cap;
    struct bufring ubufs;      /* their receive buffers, once the first is made */
    unsigned udp_buffers, udp_buffer_size;
    size_t udp_queued;         /* bytes of datagrams with the kernel */
    bool udp_rearm;            /* some receive ended: re-arm after the turn */
    unsigned udp_turn;         /* datagrams this turn */
    struct udp_tx *udp_sending; /* sends queued since the last wait */
    struct core_op udp_send_op; /* where a failed send's completion goes */
    struct udp_tx *udp_spare;  /* send buffers of small datagrams, for reuse */
    unsigned udp_nspare;
    bool udp_sendmsg;          /* the kernel's send takes no address: sendmsg */
};

/* A datagram socket: a listener of -l udp://, or one the layer above
 * made (core_udp_connect), connected to one peer. Its datagrams come
 * through one multishot recvmsg into the core's datagram buffers; its
 * sends are sendmsg operations, several in flight, each from a copy. */
struct core_udp {
    struct core_op rx_op;      /* the multishot recvmsg */
    struct core *k;
    int fd;                    /* -1 once closed */
    unsigned index;            /* in k->udp: listeners come first, in order */
    bool listener;             /* from core_udp_listen */
    bool armed;                /* the receive is with the kernel */
    bool closing;              /* core_udp_close ran: freed when idle */
    bool failed;               /* its receive failed for good: not re-armed */
    uint64_t warned_s;         /* a listener: the second of its last receive warning */
    unsigned inflight;         /* sends with the kernel */
    int err;                   /* the error of the last error event */
    uint64_t user;             /* the layer above's */
    struct msghdr msg;         /* what the recvmsg keeps: name room */
};

/* Set up the ring, buffers and connection table. Returns 0, or -1 with
 * the reason logged. core_destroy is safe after a failure. */
int core_init(struct core *k, const struct core_config *cfg);
void core_destroy(struct core *k);

/* Where events go. Until this is called they go nowhere. */
void core_set_events(struct core *k, const struct core_events *ev, void *ctx);

/* Accept connections on fd (bound and listening), each with transport tp
 * (NULL: plain). The core owns fd from now on. Returns the listener's
 * index, or a negative errno. */
int core_listen(struct core *k, int fd, const struct transport *tp);

/* Datagrams on fd, a bound UDP socket (the core owns it from now on).
 * Returns the socket, or NULL and *err a negative errno. */
struct core_udp *core_udp_listen(struct core *k, int fd, int *err);

/* A UDP socket connected to addr (made here: connect on UDP only sets
 * the peer, it does not wait), whose datagrams from other senders the
 * kernel drops. Returns it, or NULL and *err: -ESHUTDOWN once
 * core_shutdown ran, or the socket's errno. */
struct core_udp *core_udp_connect(struct core *k, const struct sockaddr *addr,
                                  socklen_t len, int *err);

/* Send n bytes as one datagram on u, to addr (NULL on a connected
 * socket), copied once: they may go at once. Returns 0; -ENOBUFS when
 * the datagrams with the kernel hold 4 MiB already (dropped, counted in
 * dgrams_dropped), -EMSGSIZE past 65535 bytes, -EPIPE once u is closing
 * or stopped, -ENOMEM. */
int core_sendto(struct core *k, struct core_udp *u, const struct sockaddr *addr,
                socklen_t alen, const void *p, size_t n);

/* No more datagrams for u: it is closed and freed once nothing of it is
 * with the kernel. u must not be used after this. */
void core_udp_close(struct core *k, struct core_udp *u);

/* Submit what is queued and wait for completions, the earliest timer or
 * max_wait_ms, in one io_uring_enter; sets k->now. Returns 0 or a
 * negative errno worth giving up for. */
int core_wait(struct core *k);

/* Handle everything that is ready: completions, due timers, closes, the
 * sends the handlers queued, receives to re-arm. */
void core_run(struct core *k);

/* Stop accepting, and close every open connection (reason "shutdown")
 * once its output is sent. The owner goes on turning until core_live()
 * is 0 or it gives up. */
void core_shutdown(struct core *k);

/* Before exiting: submit the last closes and wait, briefly, for the
 * accepts to end, so that the port is free when the process is gone. */
void core_finish(struct core *k);

static inline unsigned core_live(const struct core *k) { return k->conns.live; }

/* A free SQE whose completion goes to op->done; prepare it with any
 * io_uring_prep_* helper (they leave its tag alone). */
struct io_uring_sqe *core_op_sqe(struct core *k, struct core_op *op);

/* Report `key` through the timer event at monotonic time `due` (ns).
 * Returns 0 or -ENOMEM. */
int core_timer_add(struct core *k, uint64_t due, uint64_t key);

/* Connect to addr without waiting: *out is a new connection, CONNECTING,
 * known to the handler at once (it gets connected, or closed with c->err
 * set). What it is sent meanwhile waits for the connection. tp, the
 * connection's transport state, may be NULL; on success the connection
 * owns it. Returns 0, or a negative errno: -ENOSPC when the connection
 * table is full (-EMFILE when files of fs.h hold some of its slots),
 * -ESHUTDOWN once core_shutdown ran. */
int core_connect(struct core *k, const struct sockaddr *addr, socklen_t len,
                 struct transport_conn *tp, struct conn **out);

/* The same in two steps, for when the address comes later (a name being
 * looked up): core_connect_new makes the connection, CONNECTING with no
 * socket yet, known to the handler and able to queue what it is sent;
 * core_connect_to connects it to addr. If that fails (or c was closed
 * meanwhile), c is closed with c->err set, and the error returned. */
int core_connect_new(struct core *k, struct transport_conn *tp,
                     struct conn **out);
int core_connect_to(struct core *k, struct conn *c, const struct sockaddr *addr,
                    socklen_t len);

/* Queue bytes for c's socket, bypassing the transport (the transport's
 * own way out). Returns 0, -EPIPE once closing, or -ENOMEM. */
static inline int core_queue(struct core *k, struct conn *c, const void *p,
                             size_t n)
{
    return conn_send(&k->conns, c, p, n);
}

/* The handler sends bytes on c: through its transport, if it has one.
 * Past the high-water mark reading pauses (CF_HWM) until drained.
 * Returns 0, -EPIPE once closing, or -ENOMEM. */
static inline int core_send(struct core *k, struct conn *c, const void *p,
                            size_t n)
{
    if (c->tp) {
        if (c->state != CONN_OPEN && c->state != CONN_CONNECTING)
            return -EPIPE;
        return c->tp->ops->send(k, c, p, n);
    }
    return conn_send(&k->conns, c, p, n);
}

/* core_send of the n bytes at the start of buf, a malloc'd block of cap
 * bytes that the core takes over: on a plain connection they are sent
 * from buf itself when nothing else waits (no copy), through the
 * transport otherwise. buf is the core's whatever the result. */
static inline int core_give(struct core *k, struct conn *c, void *buf,
                            size_t cap, size_t n)
{
    if (c->tp) {
        int ret = core_send(k, c, buf, n);
        free(buf);
        return ret;
    }
    return conn_give(&k->conns, c, buf, cap, n);
}

/* Hold c's output back (on), as TCP_CORK would, for more that is about
 * to come: a response's head waits for the first part of its body, so
 * that both go in one send and the peer is not woken for the head
 * alone. Off sends what waits. A close sends it too. */
static inline void core_cork(struct core *k, struct conn *c, bool on)
{
    if (on) {
        c->flags |= CF_CORK;
    } else if (c->flags & CF_CORK) {
        c->flags &= ~CF_CORK;
        conn_mark(&k->conns, c);
    }
}

/* Close c after its output is sent, or at once (abort). */
static inline void core_close(struct core *k, struct conn *c,
                              enum conn_reason why, bool abort)
{
    if (!abort && c->tp && c->tp->ops->shutdown && c->state == CONN_OPEN)
        c->tp->ops->shutdown(k, c);
    conn_close(&k->conns, c, why, abort);
}

/* Stop and restart reading from c on the handler's behalf. Bytes already
 * on their way when it pauses are held for when it resumes. */
static inline void core_pause(struct core *k, struct conn *c) { conn_pause(&k->conns, c); }
static inline void core_resume(struct core *k, struct conn *c) { conn_resume(&k->conns, c); }

/* Close c (reason "timeout") once no byte has gone in or out for ms
 * milliseconds; 0 turns it off. */
void core_set_idle(struct core *k, struct conn *c, uint32_t ms);

/* For transports: hand the handler n bytes of c (its data event; none
 * before core_ready), and tell it that c is open or connected (after
 * start returned 1). The core holds the socket's bytes while the handler
 * has paused reading, not these: a transport that makes more than one
 * delivery of one receive stops early when c->flags has CF_READ_PAUSED,
 * keeps the rest, and delivers it when recv is called with nothing. */
void core_deliver(struct core *k, struct conn *c, const char *p, size_t n);
void core_ready(struct core *k, struct conn *c);

#endif
