/* sendq.c - see sendq.h for the two-buffer scheme. */
#include "sendq.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SENDQ_MIN_CAP 512
#define POOL_CLASSES 6            /* 512 B, 1, 2, 4, 8 and 16 KiB */
#define POOL_CLASS_BYTES (512 << 10)
#define SENDQ_KEEP_CAP (SENDQ_MIN_CAP << (POOL_CLASSES - 1))

/* Buffers of up to 16 KiB are kept for reuse rather than freed, in one
 * pool per size (sizes are powers of two from 512). A request/response
 * server takes one and gives it back per message, and glibc's per-thread
 * cache holds only 7 chunks of a size, so with many connections nearly
 * every one went through malloc's slow paths: 12% of a pipelined echo's
 * user-space instructions when only 512-byte buffers were pooled, and 14%
 * again once its 1 KiB replies were too. Each worker is one thread of its
 * own process, so the pools need no lock. Bounded: 512 KiB per size. */
static struct pool {
    void *v[POOL_CLASS_BYTES / SENDQ_MIN_CAP];
    unsigned n;
} pools[POOL_CLASSES];

/* The pool for buffers of cap bytes, or NULL for sizes not pooled. */
static struct pool *pool_for(size_t cap)
{
    unsigned c = 0;
    for (size_t sz = SENDQ_MIN_CAP; c < POOL_CLASSES; sz <<= 1, c++)
        if (sz == cap)
            return &pools[c];
    return NULL;
}

static void *buf_get(size_t cap)
{
    struct pool *p = pool_for(cap);
    if (p && p->n)
        return p->v[--p->n];
    return malloc(cap);
}

static void buf_put(void *b, size_t cap)
{
    struct pool *p = b ? pool_for(cap) : NULL;
    if (p && p->n < POOL_CLASS_BYTES / cap)
        p->v[p->n++] = b;
    else
        free(b);
}

/* The capacity for need bytes, from cap: powers of two up to the largest
 * pooled size, then a quarter more each time, in whole pages. The
 * slack counts: malloc hands out memory that earlier buffers touched, so
 * all of a capacity is resident, and a peer that never reads holds both
 * buffers at their largest; doubling made that twice the high-water
 * mark. A quarter costs at most five copies of each byte as it grows.
 * Returns 0 on overflow. */
static size_t grow(size_t cap, size_t need)
{
    if (!cap)
        cap = SENDQ_MIN_CAP;
    while (cap < need && cap < SENDQ_KEEP_CAP)
        cap *= 2;
    if (cap >= need)
        return cap;
    size_t more = cap + cap / 4;
    if (more < cap)
        return 0;
    cap = more > need ? more : need;
    cap = (cap + 4095) & ~(size_t)4095;
    return cap >= need ? cap : 0;
}

int sendq_append(struct sendq *q, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    size_t need = q->pd_len + len;
    if (need < q->pd_len)
        return -ENOMEM;
    if (need > q->pd_cap) {
        size_t cap = grow(q->pd_cap, need);
        if (!cap)
            return -ENOMEM;
        char *p = q->pend ? realloc(q->pend, cap) : buf_get(cap);
        if (!p)
            return -ENOMEM;
        q->pend = p;
        q->pd_cap = cap;
    }
    memcpy(q->pend + q->pd_len, data, len);
    q->pd_len = need;
    return 0;
}

int sendq_give(struct sendq *q, void *buf, size_t cap, size_t len)
{
    if (q->pd_len || len == 0) {
        int ret = sendq_append(q, buf, len);
        free(buf);
        return ret;
    }
    buf_put(q->pend, q->pd_cap);
    q->pend = buf;
    q->pd_cap = cap;
    q->pd_len = len;
    return 0;
}

bool sendq_next(struct sendq *q, const void **data, size_t *len)
{
    assert(!q->busy);
    if (q->fl_off == q->fl_len) {
        if (q->pd_len == 0)
            return false;
        /* flight is drained: what was written meanwhile goes next, and
         * flight's storage collects the writes after that */
        char *buf = q->flight;
        size_t cap = q->fl_cap;
        if (cap > SENDQ_KEEP_CAP) {
            /* a big buffer is not kept for the writes to come: a peer
             * that once made us queue 1 MiB would otherwise keep 2 MiB
             * of ours (both buffers at their largest) while it stays busy */
            buf_put(buf, cap);
            buf = NULL;
            cap = 0;
        }
        size_t fit = (q->pd_len + 4095) & ~(size_t)4095;
        if (q->pd_cap > SENDQ_KEEP_CAP && fit < q->pd_cap) {
            /* nothing is added to a buffer in flight: give back its
             * slack (shrinking in place, without a copy) */
            char *p = realloc(q->pend, fit);
            if (p) {
                q->pend = p;
                q->pd_cap = fit;
            }
        }
        q->flight = q->pend;
        q->fl_cap = q->pd_cap;
        q->fl_off = 0;
        q->fl_len = q->pd_len;
        q->pend = buf;
        q->pd_cap = cap;
        q->pd_len = 0;
    }
    *data = q->flight + q->fl_off;
    *len = q->fl_len - q->fl_off;
    q->busy = true;
    return true;
}

void sendq_done(struct sendq *q, size_t n)
{
    assert(q->busy);
    assert(n <= q->fl_len - q->fl_off);
    q->busy = false;
    q->fl_off += n;
    if (q->fl_off == q->fl_len && q->pd_len == 0)
        sendq_free(q); /* an idle connection keeps no output memory */
}

void sendq_free(struct sendq *q)
{
    assert(!q->busy);
    buf_put(q->flight, q->fl_cap);
    buf_put(q->pend, q->pd_cap);
    memset(q, 0, sizeof *q);
}
