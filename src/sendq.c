/* sendq.c - see sendq.h for the two-buffer scheme. */
#include "sendq.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SENDQ_MIN_CAP 512
#define SENDQ_POOL_MAX 1024

/* Buffers of the smallest size are kept for reuse rather than freed. A
 * request/response server takes one and gives it back per message, and
 * glibc's per-thread cache holds only 7 chunks of a size, so with many
 * connections nearly every one went through malloc's slow paths (about
 * 12% of a pipelined echo's instructions). Each worker is one thread of
 * its own process, so the pool needs no lock. Bounded: 512 KiB at most. */
static void *pool[SENDQ_POOL_MAX];
static unsigned pool_n;

static void *buf_get(size_t cap)
{
    if (cap == SENDQ_MIN_CAP && pool_n)
        return pool[--pool_n];
    return malloc(cap);
}

static void buf_put(void *p, size_t cap)
{
    if (p && cap == SENDQ_MIN_CAP && pool_n < SENDQ_POOL_MAX)
        pool[pool_n++] = p;
    else
        free(p);
}

int sendq_append(struct sendq *q, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    size_t need = q->pd_len + len;
    if (need < q->pd_len)
        return -ENOMEM;
    if (need > q->pd_cap) {
        size_t cap = q->pd_cap ? q->pd_cap : SENDQ_MIN_CAP;
        while (cap < need)
            cap = cap * 2 > cap ? cap * 2 : need;
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
