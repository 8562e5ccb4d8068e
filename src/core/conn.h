/* conn.h - connections: the slot table, their state, their output.
 *
 * A connection lives in a slot of a fixed table (stable addresses, no
 * allocation per accept). Its life:
 *
 *   OPEN ──conn_close()──▶ CLOSING ──close CQE, nothing in flight──▶ FREE
 *
 * (an outbound connection starts as CONNECTING, and becomes OPEN when its
 * connect completes)
 * conn_close() only records the reason and queues the connection; the
 * core reports it closed (core_events.closed) after the current batch of
 * completions, sends what is queued (unless the close is an abort), then
 * closes the socket through the ring, and frees the slot once no
 * operation is in flight. This is bookkeeping only: the ring work lives
 * in conn_io.c. */
#ifndef MR_CONN_H
#define MR_CONN_H

#include "sendq.h"

struct transport_conn;

#include <stdbool.h>
#include <stdint.h>

enum conn_state { CONN_FREE = 0, CONN_CONNECTING, CONN_OPEN, CONN_CLOSING };

/* Why a connection closed; the names are what handlers see. */
enum conn_reason {
    REASON_NONE = 0, REASON_EOF, REASON_RESET, REASON_TIMEOUT, REASON_ERROR,
    REASON_CLOSED, REASON_SHUTDOWN,
};
const char *conn_reason_name(enum conn_reason r);

enum conn_flags {
    CF_RECV_ARMED  = 1 << 0,  /* a multishot receive is with the kernel */
    CF_WANT_RECV   = 1 << 1,  /* receive must be (re-)armed */
    CF_DIRTY       = 1 << 2,  /* on the dirty list */
    CF_ABORT       = 1 << 3,  /* closing without sending what is queued */
    CF_CLOSE_SENT  = 1 << 4,  /* the cancel/shutdown/close chain is submitted */
    CF_CLOSED      = 1 << 5,  /* the close completed: fd is gone */
    CF_NOTIFIED    = 1 << 6,  /* the closed event has been reported */
    CF_PAUSED      = 1 << 7,  /* the handler paused reading */
    CF_HWM         = 1 << 8,  /* output above the high-water mark: reading paused */
    CF_CANCEL_SENT = 1 << 9,  /* the receive is being cancelled (pause) */
    CF_IDLE_QUEUED = 1 << 10, /* an idle-timeout entry is in the timer heap */
    CF_CONNECT_OUT = 1 << 11, /* a connect is with the kernel */
    CF_KNOWN       = 1 << 12, /* the handler knows c: told it opened, or made it */
    CF_RESUMED     = 1 << 13, /* on the resumed list */
    CF_SEND_SHORT  = 1 << 14, /* the last send was short: the socket is full */
    CF_READY       = 1 << 15, /* told opened or connected: data may come */
    CF_EOF         = 1 << 16, /* the peer sends no more; c stays open to send */
    CF_LINGER      = 1 << 17, /* closing: output gone, writing shut down,
                                 reading and dropping until the peer closes */
    CF_DRAIN_TIMER = 1 << 18, /* closing: a send-timeout entry is queued */
    CF_CORK        = 1 << 19, /* open: the output waits for more (core_cork) */
};

#define CF_READ_PAUSED (CF_PAUSED | CF_HWM)

/* conn.origin of a connection this worker made (core_connect); accepted
 * ones carry the index of their listener. */
#define CONN_OUTBOUND 0xff

/* Bytes received while reading was paused, waiting for it to resume:
 * data[off, off + held_len) of cap bytes. */
struct held {
    uint32_t off, cap;
    char data[];
};

struct conn {
    struct sendq q;
    uint64_t id;              /* unique per worker, never reused */
    uint64_t active;          /* monotonic ns of the last byte in or out */
    union {                   /* one or the other, never both: */
        struct held *held;    /* open: bytes received after a pause */
        void *aux;            /* connecting: the address */
    };
    struct transport_conn *tp; /* between socket and handler; NULL: plain */
    union {
        uint32_t held_len;    /* open: bytes in held */
        uint32_t dropped;     /* lingering: bytes read and dropped */
    };
    uint32_t idle_ms;         /* idle timeout, 0 for none */
    int err;                  /* negative errno behind REASON_ERROR, or 0 */
    int fd;
    uint32_t slot;
    uint32_t gen;             /* bumped when the slot is freed */
    uint8_t state;            /* enum conn_state */
    uint8_t reason;           /* enum conn_reason, once CLOSING */
    uint8_t origin;           /* listener index, or CONN_OUTBOUND */
    uint8_t user;             /* bits of the layer above, zero at first */
    uint32_t flags;           /* enum conn_flags */
};

/* A growable list of slots. */
struct slotvec {
    uint32_t *v;
    uint32_t n, cap;
};

struct conn_table {
    struct conn *c;           /* max entries, zeroed until used */
    uint32_t max;
    uint32_t used_hi;         /* slots [0, used_hi) have been handed out once */
    uint32_t live;            /* slots not FREE */
    uint32_t reserved;        /* fds held besides connections (files), which
                                 count against max as well */
    uint32_t *free;           /* stack of freed slots */
    uint32_t nfree;
    uint64_t next_id;
    struct slotvec dirty;     /* connections the flush phase must look at */
    struct slotvec closing;   /* connections whose closed event is due */
    struct slotvec resumed;   /* connections whose held bytes are due */
    size_t high_water;        /* output bytes that pause reading */
    size_t low_water;         /* ... and that resume it, with drained */
};

int conn_table_init(struct conn_table *t, uint32_t max);
void conn_table_destroy(struct conn_table *t);

/* A new OPEN connection for fd, or NULL when the table is full (live
 * connections and reserved fds make max). */
struct conn *conn_alloc(struct conn_table *t, int fd);

/* Return the slot; the caller made sure nothing is in flight. */
void conn_free(struct conn_table *t, struct conn *c);

/* The connection a completion tag names, or NULL if that one is gone. */
static inline struct conn *conn_get(struct conn_table *t, uint32_t slot,
                                    uint32_t gen)
{
    if (slot >= t->used_hi)
        return NULL;
    struct conn *c = &t->c[slot];
    return (c->state != CONN_FREE && c->gen == gen) ? c : NULL;
}

/* Ask the flush phase to look at c. */
void conn_mark(struct conn_table *t, struct conn *c);

/* Queue bytes to send (also while connecting). Past the high-water mark
 * reading pauses. Returns 0, -EPIPE once closing, or -ENOMEM. */
int conn_send(struct conn_table *t, struct conn *c, const void *p, size_t n);
/* The same for the n bytes at the start of buf (malloc'd, cap bytes),
 * which c's queue takes over without a copy when it can (sendq_give);
 * buf is the queue's, or freed, whatever the result. */
int conn_give(struct conn_table *t, struct conn *c, void *buf, size_t cap,
              size_t n);

/* Begin closing c (no-op if already closing, except that an abort
 * overrides a graceful close). */
void conn_close(struct conn_table *t, struct conn *c, enum conn_reason why,
                bool abort);

/* Nothing of c is with the kernel any more: it may be freed. */
static inline bool conn_idle(const struct conn *c)
{
    return (c->flags & CF_CLOSED) &&
           !(c->flags & (CF_RECV_ARMED | CF_CONNECT_OUT)) && !sendq_busy(&c->q);
}

/* Pause or resume reading on the handler's behalf. */
void conn_pause(struct conn_table *t, struct conn *c);
void conn_resume(struct conn_table *t, struct conn *c);

/* Reading may go on: deliver held bytes and re-arm after this batch. */
void conn_wake(struct conn_table *t, struct conn *c);

int slotvec_push(struct slotvec *s, uint32_t slot);

#endif
