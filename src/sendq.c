/* sendq.c - see sendq.h for the two-buffer scheme. */
#include "sendq.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SENDQ_MIN_CAP 512

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
        char *p = realloc(q->pend, cap);
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
    free(q->flight);
    free(q->pend);
    memset(q, 0, sizeof *q);
}
