/* timer.c - binary min-heap on due time. */
#include "timer.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

uint64_t timer_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int timer_push(struct timer_heap *h, uint64_t due, uint32_t kind, uint64_t key)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 64;
        struct timer_entry *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    uint32_t i = h->n++;
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->v[parent].due <= due)
            break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = (struct timer_entry){ due, key, kind };
    return 0;
}

bool timer_pop_due(struct timer_heap *h, uint64_t now, struct timer_entry *out)
{
    if (!h->n || h->v[0].due > now)
        return false;
    *out = h->v[0];
    struct timer_entry last = h->v[--h->n];
    uint32_t i = 0;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1].due < h->v[c].due)
            c++;
        if (last.due <= h->v[c].due)
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n)
        h->v[i] = last;
    return true;
}

void timer_heap_free(struct timer_heap *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}
