/* sendq.h - a connection's output queue.
 *
 * Two buffers: `flight` holds the bytes of the one send in flight (the
 * kernel reads them, so they must not move), `pend` collects everything
 * written meanwhile. When the send completes, a short send resumes from
 * where the kernel stopped; once flight is empty the buffers swap, so all
 * small writes made during one send go out together in the next one.
 * Order is preserved, there is never more than one send in flight, and
 * each byte is copied once, from the caller into pend. Pure bookkeeping:
 * no I/O, so it is unit-tested on its own. */
#ifndef MR_SENDQ_H
#define MR_SENDQ_H

#include <stdbool.h>
#include <stddef.h>

struct sendq {
    char *flight;
    size_t fl_off, fl_len, fl_cap;
    char *pend;
    size_t pd_len, pd_cap;
    bool busy;                 /* a send of flight is with the kernel */
};

/* Queue len bytes (copied). Returns 0 or -ENOMEM. */
int sendq_append(struct sendq *q, const void *data, size_t len);

/* Queue the len bytes at the start of buf, a malloc'd block of cap
 * bytes, which the queue takes over: with nothing else pending, buf
 * itself becomes the buffer they go out from (no copy); else they are
 * copied after what is pending, and buf is freed. Either way the caller
 * no longer owns buf, even on failure. Returns 0 or -ENOMEM. */
int sendq_give(struct sendq *q, void *buf, size_t cap, size_t len);

/* Bytes queued and not yet acknowledged by a send completion. */
static inline size_t sendq_pending(const struct sendq *q)
{
    return q->fl_len - q->fl_off + q->pd_len;
}

/* Bytes the queue keeps in memory: the unsent ones, and while a send is
 * unfinished, the part of its buffer already sent, which cannot move
 * until the rest has gone. The high-water mark counts these. */
static inline size_t sendq_held(const struct sendq *q)
{
    return (q->fl_off < q->fl_len ? q->fl_len : 0) + q->pd_len;
}

static inline bool sendq_busy(const struct sendq *q) { return q->busy; }

/* With no send in flight, give the next bytes to send and mark the queue
 * busy. Returns false, and stays idle, when there is nothing to send. */
bool sendq_next(struct sendq *q, const void **data, size_t *len);

/* The send in flight completed having sent n bytes (n may be short). */
void sendq_done(struct sendq *q, size_t n);

/* Drop everything queued. Only when not busy: the kernel may be reading. */
void sendq_free(struct sendq *q);

#endif
