/* timer.h - a min-heap of deadlines (monotonic nanoseconds).
 *
 * The loop waits no longer than the earliest deadline (the wait timeout
 * of its one io_uring_enter), then pops what is due. Entries are never
 * removed from the middle: a cancelled timer or a connection that went
 * away is recognised, and skipped, when its entry is popped. */
#ifndef MR_TIMER_H
#define MR_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* the layer above's; the core's own: idle timeouts, the resolver's, and
 * those of closing connections: output that makes no progress, a
 * lingering close's whole time and its silence */
enum timer_kind {
    TIMER_USER = 1, TIMER_IDLE, TIMER_RESOLV, TIMER_DRAIN, TIMER_LINGER,
    TIMER_LINGER_GAP,
};

struct timer_entry {
    uint64_t due;          /* monotonic ns */
    uint64_t key;          /* TIMER_USER: its owner's key; a connection's
                              (TIMER_IDLE, _DRAIN, _LINGER*): slot << 32 | gen;
                              TIMER_RESOLV: the resolver's (resolv.c) */
    uint32_t kind;
};

struct timer_heap {
    struct timer_entry *v;
    uint32_t n, cap;
};

/* Returns 0 or -ENOMEM. */
int timer_push(struct timer_heap *h, uint64_t due, uint32_t kind, uint64_t key);

/* The earliest entry, or NULL when empty. */
static inline const struct timer_entry *timer_peek(const struct timer_heap *h)
{
    return h->n ? &h->v[0] : NULL;
}

/* Remove the earliest entry into *out if it is due at now; false if not. */
bool timer_pop_due(struct timer_heap *h, uint64_t now, struct timer_entry *out);

void timer_heap_free(struct timer_heap *h);

uint64_t timer_now(void);

#endif
