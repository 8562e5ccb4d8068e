/* conn.c - the connection table and state transitions (no I/O here). */
#include "conn.h"
#include "ud.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const reason_names[] = {
    [REASON_NONE] = "none",   [REASON_EOF] = "eof",
    [REASON_RESET] = "reset", [REASON_TIMEOUT] = "timeout",
    [REASON_ERROR] = "error", [REASON_CLOSED] = "closed",
    [REASON_SHUTDOWN] = "shutdown",
};

const char *conn_reason_name(enum conn_reason r) { return reason_names[r]; }

int conn_table_init(struct conn_table *t, uint32_t max)
{
    memset(t, 0, sizeof *t);
    /* calloc: untouched pages of a big table cost no memory */
    t->c = calloc(max, sizeof *t->c);
    t->free = calloc(max, sizeof *t->free);
    if (!t->c || !t->free) {
        conn_table_destroy(t);
        return -ENOMEM;
    }
    t->max = max;
    t->next_id = 1;
    /* 64 KiB, as HAProxy's buffers and a little above Node's 16 KiB.
     * With 1 MiB, echoing 64 KiB messages four deep took 6 times the
     * CPU per message (each queue grew into fresh pages; on a VM a page
     * fault is dear), 1 and 4 MiB messages went 1.5 to 5 times slower,
     * and a ping waited 36-64 ms (p99) beside 80 clients that do not
     * read, against 6-10 ms. */
    t->high_water = 64 << 10;
    t->low_water = t->high_water / 4;
    return 0;
}

void conn_table_destroy(struct conn_table *t)
{
    /* called once the ring is gone: no send is in flight any more */
    for (uint32_t i = 0; t->c && i < t->used_hi; i++) {
        t->c[i].q.busy = false;
        sendq_free(&t->c[i].q);
        free(t->c[i].held); /* or aux: the same pointer */
    }
    free(t->c);
    free(t->free);
    free(t->dirty.v);
    free(t->closing.v);
    free(t->resumed.v);
    memset(t, 0, sizeof *t);
}

struct conn *conn_alloc(struct conn_table *t, int fd)
{
    uint32_t slot;
    if (t->live + t->reserved >= t->max)
        return NULL;
    if (t->nfree)
        slot = t->free[--t->nfree];
    else if (t->used_hi < t->max)
        slot = t->used_hi++;
    else
        return NULL;
    struct conn *c = &t->c[slot];
    uint32_t gen = c->gen ? c->gen : 1;
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->slot = slot;
    c->gen = gen;
    c->id = t->next_id++;
    c->state = CONN_OPEN;
    t->live++;
    return c;
}

void conn_free(struct conn_table *t, struct conn *c)
{
    assert(c->state == CONN_CLOSING);
    assert(conn_idle(c));
    sendq_free(&c->q);
    free(c->held); /* or aux: the same pointer */
    c->held = NULL;
    c->held_len = 0;
    c->state = CONN_FREE;
    c->flags = 0;
    c->fd = -1;
    /* late completions for the old connection now miss */
    c->gen = ud_next_gen(c->gen);
    t->free[t->nfree++] = c->slot;
    t->live--;
}

int slotvec_push(struct slotvec *s, uint32_t slot)
{
    if (s->n == s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 64;
        uint32_t *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = slot;
    return 0;
}

void conn_mark(struct conn_table *t, struct conn *c)
{
    if (c->flags & CF_DIRTY)
        return;
    /* A failed push leaves the flag clear, so the next mark retries. */
    if (slotvec_push(&t->dirty, c->slot) == 0)
        c->flags |= CF_DIRTY;
}

/* What conn_send and conn_give do once the bytes are queued. */
static int queued(struct conn_table *t, struct conn *c, int ret)
{
    if (ret)
        return ret;
    /* a peer that does not read cannot make us queue without bound:
     * stop reading from it until its output drains */
    if (sendq_held(&c->q) > t->high_water)
        c->flags |= CF_HWM;
    conn_mark(t, c);
    return 0;
}

int conn_send(struct conn_table *t, struct conn *c, const void *p, size_t n)
{
    if (c->state != CONN_OPEN && c->state != CONN_CONNECTING)
        return -EPIPE;
    return queued(t, c, sendq_append(&c->q, p, n));
}

int conn_give(struct conn_table *t, struct conn *c, void *buf, size_t cap,
              size_t n)
{
    if (c->state != CONN_OPEN && c->state != CONN_CONNECTING) {
        free(buf);
        return -EPIPE;
    }
    return queued(t, c, sendq_give(&c->q, buf, cap, n));
}

void conn_pause(struct conn_table *t, struct conn *c)
{
    c->flags |= CF_PAUSED;
    conn_mark(t, c);
}

void conn_wake(struct conn_table *t, struct conn *c)
{
    if (!(c->flags & CF_RESUMED) && slotvec_push(&t->resumed, c->slot) == 0)
        c->flags |= CF_RESUMED;
}

void conn_resume(struct conn_table *t, struct conn *c)
{
    if (!(c->flags & CF_PAUSED))
        return;
    c->flags &= ~CF_PAUSED;
    conn_wake(t, c);
}

void conn_close(struct conn_table *t, struct conn *c, enum conn_reason why,
                bool abort)
{
    if (c->state == CONN_CONNECTING)
        abort = true; /* nothing can be sent any more */
    if (c->state == CONN_OPEN || c->state == CONN_CONNECTING) {
        c->state = CONN_CLOSING;
        c->reason = (uint8_t)why;
        if (slotvec_push(&t->closing, c->slot))
            c->flags |= CF_NOTIFIED; /* out of memory: no closed event */
    }
    if (abort)
        c->flags |= CF_ABORT;
    conn_mark(t, c);
}
