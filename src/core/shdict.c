/* shdict.c - the shared dictionary of shdict.h.
 *
 * The mapping: a page of header, then nshards equal regions. A region
 * starts with its shard (lock, counters, LRU ends, free lists), then its
 * hash buckets, then its arena. Every reference is a uint32_t offset
 * from the region's start, 0 meaning none, so the mapping means the same
 * at any address. The arena is managed as a buddy allocator (blocks of
 * 2^k bytes, split on demand, merged with their buddy when freed): no
 * size class keeps memory that another size needs, which a slab
 * allocator without page reclaim would. An entry is one block: its
 * header, its key, its value.
 *
 * Reads take no lock: each shard has a sequence number, odd while a
 * change is under way (a seqlock). A reader notes it, looks the key up
 * checking every offset it follows against the arena's bounds, copies
 * the value, and keeps what it read only if the number did not move;
 * else it tries again, and then takes the lock. So a get costs no atomic
 * operation, and readers never write to an entry: they mark it used in a
 * side array of one byte per 64-byte block, which eviction reads (CLOCK:
 * the tail entry of the LRU list goes unless it was read since it was
 * put there; then it goes back to the head once). A stale mark there
 * costs one second chance, nothing more.
 *
 * Death of a lock holder: a robust mutex hands the next locker
 * EOWNERDEAD; if the dead one was in the middle of a change (the
 * sequence number is odd), the shard may hold a half-linked entry, and
 * it is wiped (logged). */
#include "shdict.h"
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#define HEAD_SIZE 4096
#define MIN_ORDER 6             /* 64-byte blocks: an entry header and a bit */
#define MAX_ORDER 31
#define MAX_SHARDS 16
#define SHARD_MIN (1u << 20)    /* shards are at least this big, but for one */
#define BLK_USED 0xA5
#define BLK_FREE 0x5A
#define MAGIC 0x6d72736864637431ull /* "mrshdct1" */

struct shd_head {
    uint64_t magic;
    uint64_t seed;               /* of the hash: keys chosen to collide
                                    cannot be guessed */
    uint32_t nshards, shard_size;
};

struct shd_shard {
    pthread_mutex_t lock;
    uint32_t seq;                /* odd while a change is half made */
    uint32_t nbuckets;           /* a power of two */
    uint32_t buckets;            /* offset of uint32_t[nbuckets] */
    uint32_t refs;               /* offset of uint8_t[arena_size / 64]:
                                    read since it was last moved */
    uint32_t arena, arena_size;  /* offset and bytes of the arena */
    uint32_t top_order;          /* the largest block */
    uint32_t lru_head, lru_tail; /* most recently stored (or spared) at the head */
    uint32_t free[MAX_ORDER + 1];
    uint64_t evictions, entries, used, free_bytes, wipes;
};

struct shd_free {                /* a free block */
    uint8_t order, state;
    uint16_t pad;
    uint32_t next, prev;
};

struct shd_entry {               /* a used block */
    uint8_t order, state, type, pad;
    uint32_t hash;               /* its low bits */
    uint32_t chain;              /* next in its bucket */
    uint32_t lru_prev, lru_next;
    uint32_t flags;
    uint32_t vlen;
    uint16_t klen, pad2;
    uint64_t expires;            /* CLOCK_MONOTONIC ns; 0: never */
    char data[];                 /* key, then value */
};

struct shdict {
    char name[SHDICT_NAME_MAX + 1];
    struct shd_head *head;
    size_t size;
    unsigned shard_shift;        /* 64 - log2(nshards): shard from the top bits */
    uint64_t seed;               /* the header's, at hand */
    uint64_t hits, misses;       /* this process's gets: no shared line */
    void (*hook)(void);
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t expiry(double ttl)
{
    return ttl > 0 ? now_ns() + (uint64_t)(ttl * 1e9) : 0;
}

/* A 64-bit hash of the key, seeded. Whole words, and the tail in one
 * or two loads that may overlap: no loop over bytes. */
static uint64_t hash(uint64_t seed, const char *p, size_t n)
{
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ull), w = 0;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + n - 4, 4);
        w = (uint64_t)a << 32 | b;
    } else if (n) {
        const unsigned char *u = (const unsigned char *)p;
        w = (uint64_t)u[0] << 16 | (uint64_t)u[n >> 1] << 8 | u[n - 1];
    } else {
        w = 0;
    }
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 32);
}

/* ---- regions and blocks ---------------------------------------------- */

#define AT(s, off) ((void *)((char *)(s) + (off)))
#define ENT(s, off) ((struct shd_entry *)AT(s, off))
#define FREE(s, off) ((struct shd_free *)AT(s, off))
#define BUCKETS(s) ((uint32_t *)AT(s, (s)->buckets))
#define REF(s, off) (((uint8_t *)AT(s, (s)->refs))[((off) - (s)->arena) >> MIN_ORDER])
/* One read of a field that a writer may be changing: the compiler must
 * not read it twice (once to check it, once to use it). */
#define RD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static struct shd_shard *shard_at(const struct shdict *d, unsigned i)
{
    return (struct shd_shard *)((char *)d->head + HEAD_SIZE +
                                (size_t)i * d->head->shard_size);
}

static void free_push(struct shd_shard *s, uint32_t off, unsigned order)
{
    struct shd_free *f = FREE(s, off);
    f->order = (uint8_t)order;
    f->state = BLK_FREE;
    f->prev = 0;
    f->next = s->free[order];
    if (f->next)
        FREE(s, f->next)->prev = off;
    s->free[order] = off;
}

static void free_unlink(struct shd_shard *s, uint32_t off)
{
    struct shd_free *f = FREE(s, off);
    if (f->prev)
        FREE(s, f->prev)->next = f->next;
    else
        s->free[f->order] = f->next;
    if (f->next)
        FREE(s, f->next)->prev = f->prev;
}

/* A block of 2^order bytes, or 0. */
static uint32_t block_alloc(struct shd_shard *s, unsigned order)
{
    unsigned j = order;
    while (j <= s->top_order && !s->free[j])
        j++;
    if (j > s->top_order)
        return 0;
    uint32_t off = s->free[j];
    free_unlink(s, off);
    while (j > order) { /* keep the lower half, free the upper */
        j--;
        free_push(s, off + (1u << j), j);
    }
    struct shd_entry *e = ENT(s, off); /* no longer free, whatever it becomes */
    e->order = (uint8_t)order;
    e->state = BLK_USED;
    s->used += 1u << order;
    s->free_bytes -= 1u << order;
    return off;
}

/* Free a block, merging it with its buddy while that is free and whole.
 * A buddy past the arena's end does not exist: the arena's tail is cut
 * into blocks aligned to their size, none of which has one. */
static void block_free(struct shd_shard *s, uint32_t off, unsigned order)
{
    s->used -= 1u << order;
    s->free_bytes += 1u << order;
    uint32_t rel = off - s->arena;
    while (order < s->top_order) {
        uint32_t brel = rel ^ (1u << order);
        if ((uint64_t)brel + (1u << order) > s->arena_size)
            break;
        struct shd_free *b = FREE(s, s->arena + brel);
        if (b->state != BLK_FREE || b->order != order)
            break;
        free_unlink(s, s->arena + brel);
        rel &= ~(1u << order);
        order++;
    }
    free_push(s, s->arena + rel, order);
}

static unsigned order_for(size_t bytes)
{
    unsigned o = MIN_ORDER;
    while (o <= MAX_ORDER && ((size_t)1 << o) < bytes)
        o++;
    return o;
}

/* Empty the shard: free lists over the whole arena, no entries. The
 * buckets of a new mapping are zero already: clearing them would make
 * every page of them resident for nothing. */
static void shard_reset(struct shd_shard *s, bool clear)
{
    if (clear)
        memset(BUCKETS(s), 0, (size_t)s->nbuckets * sizeof(uint32_t));
    memset(s->free, 0, sizeof s->free);
    s->lru_head = s->lru_tail = 0;
    s->entries = s->used = 0;
    uint32_t rel = 0;
    for (int o = (int)s->top_order; o >= MIN_ORDER; o--)
        if (s->arena_size - rel >= (1u << o)) {
            free_push(s, s->arena + rel, (unsigned)o);
            rel += 1u << o;
        }
    s->free_bytes = rel;
}

static int shard_init(struct shd_shard *s, uint32_t size)
{
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a))
        return -1;
    int r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) ||
            pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) ||
            pthread_mutex_init(&s->lock, &a);
    pthread_mutexattr_destroy(&a);
    if (r)
        return -1;
    uint32_t nb = 16;
    while (nb < size / 256)
        nb <<= 1;
    s->nbuckets = nb;
    s->buckets = (uint32_t)((sizeof *s + 63) & ~63ul);
    s->refs = s->buckets + nb * 4;
    /* the arena and its marks: 65 bytes for each 64, a mark a block. Round
     * the marks up: rounded down, some sizes got one block more than
     * marks, and its mark fell on the arena's first block header. */
    uint32_t rest = size - s->refs;
    s->arena = (s->refs + (rest + 64) / 65 + 63) & ~63u;
    s->arena_size = (size - s->arena) & ~63u;
    assert(s->arena_size / 64 <= s->arena - s->refs);
    s->top_order = MIN_ORDER;
    while (s->top_order < MAX_ORDER && (2u << s->top_order) <= s->arena_size)
        s->top_order++;
    shard_reset(s, false);
    return 0;
}

/* ---- locking ------------------------------------------------------ */

/* Lock shard i. A holder that died in the middle of a change left it
 * unknown: wipe it, and say so. */
static struct shd_shard *lock(struct shdict *d, unsigned i)
{
    struct shd_shard *s = shard_at(d, i);
    int r = pthread_mutex_lock(&s->lock);
    if (r == EOWNERDEAD) {
        if (s->seq & 1) {
            log_warn("shared dictionary %s: a process died while changing "
                     "shard %u: its %llu entries are dropped", d->name, i,
                     (unsigned long long)s->entries);
            shard_reset(s, true);
            s->wipes++;
            __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELEASE);
        }
        pthread_mutex_consistent(&s->lock);
    } else if (r) { /* ENOTRECOVERABLE cannot be: every owner is made consistent */
        log_error("shared dictionary %s: lock: %s", d->name, strerror(r));
        abort();
    }
    return s;
}

/* Mark the locked shard as being changed, until unlock(): its sequence
 * number goes odd, before any store of the change (the release fence,
 * which also keeps the compiler from moving them: a SIGKILL can land
 * between any two instructions). */
static void writing(struct shd_shard *s)
{
    uint32_t q = s->seq;
    if (q & 1)
        return;
    __atomic_store_n(&s->seq, q + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void unlock(struct shd_shard *s)
{
    uint32_t q = s->seq;
    if (q & 1) /* even again, after every store of the change */
        __atomic_store_n(&s->seq, q + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&s->lock);
}

/* ---- entries -------------------------------------------------------- */

static void lru_unlink(struct shd_shard *s, struct shd_entry *e)
{
    if (e->lru_prev)
        ENT(s, e->lru_prev)->lru_next = e->lru_next;
    else
        s->lru_head = e->lru_next;
    if (e->lru_next)
        ENT(s, e->lru_next)->lru_prev = e->lru_prev;
    else
        s->lru_tail = e->lru_prev;
}

static void lru_push(struct shd_shard *s, struct shd_entry *e, uint32_t off)
{
    e->lru_prev = 0;
    e->lru_next = s->lru_head;
    if (s->lru_head)
        ENT(s, s->lru_head)->lru_prev = off;
    else
        s->lru_tail = off;
    s->lru_head = off;
}

static void lru_touch(struct shd_shard *s, struct shd_entry *e, uint32_t off)
{
    if (s->lru_head == off)
        return;
    lru_unlink(s, e);
    lru_push(s, e, off);
}

struct where {                   /* a key's place */
    struct shd_shard *s;
    unsigned shard;
    uint32_t h, bucket;
};

static void locate(struct shdict *d, const char *key, size_t klen, struct where *w)
{
    uint64_t h = hash(d->seed, key, klen);
    w->shard = d->shard_shift < 64 ? (unsigned)(h >> d->shard_shift) : 0;
    w->h = (uint32_t)h;
}

/* a == b for n bytes; short keys without a call */
static bool same(const char *a, const char *b, size_t n)
{
    if (n > 16 || n < 4)
        return memcmp(a, b, n) == 0;
    uint64_t x, y, u, v;
    if (n >= 8) {
        memcpy(&x, a, 8), memcpy(&y, b, 8);
        memcpy(&u, a + n - 8, 8), memcpy(&v, b + n - 8, 8);
        return ((x ^ y) | (u ^ v)) == 0;
    }
    uint32_t p, q, r, t;
    memcpy(&p, a, 4), memcpy(&q, b, 4);
    memcpy(&r, a + n - 4, 4), memcpy(&t, b + n - 4, 4);
    return ((p ^ q) | (r ^ t)) == 0;
}

/* The entry of key in the locked shard, or 0; *link gets the reference
 * that points at it, for unlinking. */
static uint32_t find(struct where *w, const char *key, size_t klen, uint32_t **link)
{
    struct shd_shard *s = w->s;
    w->bucket = w->h & (s->nbuckets - 1);
    uint32_t *l = &BUCKETS(s)[w->bucket];
    for (uint32_t off = *l; off; l = &ENT(s, off)->chain, off = *l) {
        struct shd_entry *e = ENT(s, off);
        if (e->hash == w->h && e->klen == klen && same(e->data, key, klen)) {
            if (link)
                *link = l;
            return off;
        }
    }
    return 0;
}

static void entry_remove(struct shd_shard *s, uint32_t *link, uint32_t off)
{
    struct shd_entry *e = ENT(s, off);
    *link = e->chain;
    lru_unlink(s, e);
    e->state = 0;
    s->entries--;
    block_free(s, off, e->order);
}

/* Remove the entry at off wherever it is in its chain. */
static void entry_drop(struct shd_shard *s, uint32_t off)
{
    struct shd_entry *e = ENT(s, off);
    uint32_t *l = &BUCKETS(s)[e->hash & (s->nbuckets - 1)];
    while (*l != off)
        l = &ENT(s, *l)->chain;
    entry_remove(s, l, off);
}

static bool expired(const struct shd_entry *e, uint64_t *now)
{
    if (!e->expires)
        return false;
    if (!*now)
        *now = now_ns();
    return e->expires <= *now;
}

/* The live entry of key, or 0, removing it if it expired. Writes. */
static uint32_t find_live(struct where *w, const char *key, size_t klen, uint64_t *now)
{
    uint32_t *link, off = find(w, key, klen, &link);
    if (off && expired(ENT(w->s, off), now)) {
        writing(w->s);
        entry_remove(w->s, link, off);
        return 0;
    }
    return off;
}

/* A block for an entry of `bytes`, evicting from the LRU tail for room:
 * a tail entry read since it was put at the head goes back there once
 * (at most as many times as there are entries: readers may mark them
 * again meanwhile). */
static uint32_t entry_alloc(struct shd_shard *s, unsigned order, bool *evicted)
{
    uint64_t now = 0, chances = s->entries;
    for (;;) {
        uint32_t off = block_alloc(s, order);
        if (off || !s->lru_tail)
            return off;
        uint32_t victim = s->lru_tail;
        if (chances && RD(REF(s, victim)) && !expired(ENT(s, victim), &now)) {
            chances--;
            __atomic_store_n(&REF(s, victim), 0, __ATOMIC_RELAXED);
            lru_touch(s, ENT(s, victim), victim);
            continue;
        }
        if (!expired(ENT(s, victim), &now)) {
            s->evictions++;
            if (evicted)
                *evicted = true;
        }
        entry_drop(s, victim);
    }
}

static size_t val_bytes(const struct shdict_val *v)
{
    switch (v->type) {
    case SHD_STRING:  return v->len;
    case SHD_NUMBER:  return sizeof(double);
    default:          return 1;
    }
}

static void val_write(struct shd_entry *e, const struct shdict_val *v)
{
    char *p = e->data + e->klen;
    e->type = (uint8_t)v->type;
    e->flags = v->flags;
    e->vlen = (uint32_t)val_bytes(v);
    if (v->type == SHD_STRING)
        memcpy(p, v->str, v->len);
    else if (v->type == SHD_NUMBER)
        memcpy(p, &v->num, sizeof v->num);
    else
        *p = v->num != 0;
}

static int check_key(size_t klen)
{
    return klen == 0 || klen > SHDICT_KEY_MAX ? SHD_BAD_KEY : 0;
}

/* Where key lives, its shard locked: what every change starts with.
 * SHD_BAD_KEY (nothing locked) for a key of no or too many bytes. */
static int lock_key(struct shdict *d, const char *key, size_t klen, struct where *w)
{
    if (check_key(klen))
        return SHD_BAD_KEY;
    locate(d, key, klen, w);
    w->s = lock(d, w->shard);
    return SHD_OK;
}

/* ---- the API ---------------------------------------------------------- */

enum { RETRY = -100 };          /* what a reader saw was being changed */

/* Copy the value of entry e into v and buf; SHD_SMALL_BUF when it does
 * not fit. klen, type and vlen are what the caller read (and checked):
 * a reader without the lock must not read them again. */
static int copy_out(const struct shd_entry *e, size_t klen, unsigned type,
                    uint32_t vlen, char *buf, size_t cap, struct shdict_val *v)
{
    const char *p = e->data + klen;
    v->type = (enum shdict_type)type;
    v->flags = RD(e->flags);
    if (type == SHD_STRING) {
        v->len = vlen;
        v->str = buf;
        if (vlen > cap)
            return SHD_SMALL_BUF;
        memcpy(buf, p, vlen);
    } else if (type == SHD_NUMBER) {
        memcpy(&v->num, p, sizeof v->num);
    } else {
        v->num = RD(*p);
    }
    return SHD_OK;
}

/* shdict_get without the lock: SHD_OK (*at: the entry), SHD_NOT_FOUND,
 * SHD_SMALL_BUF, or RETRY when an offset or a length it read cannot be
 * right (a writer is at work). Whatever it returns stands only if the
 * shard's sequence number has not moved meanwhile. */
static int get_unlocked(struct shd_shard *s, const struct where *w, const char *key,
                        size_t klen, char *buf, size_t cap, struct shdict_val *v,
                        uint32_t *at)
{
    uint64_t end = (uint64_t)s->arena + s->arena_size, now = 0;
    uint32_t off = RD(BUCKETS(s)[w->h & (s->nbuckets - 1)]);
    for (int steps = 0; off; steps++) {
        if (steps > 64 || off < s->arena || off + sizeof(struct shd_entry) > end ||
            ((off - s->arena) & 63))
            return RETRY;
        struct shd_entry *e = ENT(s, off);
        if (RD(e->hash) == w->h && RD(e->klen) == klen) {
            if (off + sizeof *e + klen > end)
                return RETRY;
            if (same(e->data, key, klen)) {
                unsigned type = RD(e->type);
                uint32_t vlen = RD(e->vlen);
                uint64_t x = RD(e->expires);
                if (type < SHD_STRING || type > SHD_BOOLEAN ||
                    off + sizeof *e + klen + vlen > end ||
                    (type == SHD_NUMBER && vlen != sizeof(double)))
                    return RETRY;
                if (x && x <= (now ? now : (now = now_ns())))
                    return SHD_NOT_FOUND;
                *at = off;
                return copy_out(e, klen, type, vlen, buf, cap, v);
            }
        }
        off = RD(e->chain);
    }
    return SHD_NOT_FOUND;
}

/* The same under the lock, when readers keep meeting writers. */
static int get_locked(struct shdict *d, struct where *w, const char *key,
                      size_t klen, char *buf, size_t cap, struct shdict_val *v)
{
    w->s = lock(d, w->shard);
    uint64_t now = 0;
    int ret = SHD_NOT_FOUND;
    uint32_t off = find_live(w, key, klen, &now);
    if (off) {
        struct shd_entry *e = ENT(w->s, off);
        ret = copy_out(e, klen, e->type, e->vlen, buf, cap, v);
        if (ret == SHD_OK)
            __atomic_store_n(&REF(w->s, off), 1, __ATOMIC_RELAXED);
    }
    unlock(w->s);
    return ret;
}

int shdict_get(struct shdict *d, const char *key, size_t klen, char *buf,
               size_t cap, struct shdict_val *v)
{
    if (check_key(klen))
        return SHD_BAD_KEY;
    struct where w;
    locate(d, key, klen, &w);
    struct shd_shard *s = w.s = shard_at(d, w.shard);
    int ret = RETRY;
    for (int tries = 0; tries < 4 && ret == RETRY; tries++) {
        uint32_t q = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE), at = 0;
        if (q & 1)
            break;
        ret = get_unlocked(s, &w, key, klen, buf, cap, v, &at);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) != q)
            ret = RETRY;
        else if (ret == SHD_OK && !RD(REF(s, at))) /* used: spare it once */
            __atomic_store_n(&REF(s, at), 1, __ATOMIC_RELAXED);
    }
    if (ret == RETRY)
        ret = get_locked(d, &w, key, klen, buf, cap, v);
    if (ret == SHD_OK)
        d->hits++;
    else if (ret == SHD_NOT_FOUND)
        d->misses++;
    return ret;
}

/* shdict_store's work, in the locked shard of w. */
static int store_locked(struct shdict *d, struct where *w, enum shdict_mode mode,
                        const char *key, size_t klen, const struct shdict_val *v,
                        double ttl, bool *evicted)
{
    struct shd_shard *s = w->s;
    unsigned order = order_for(sizeof(struct shd_entry) + klen + val_bytes(v));
    uint64_t now = 0;
    uint32_t *link, off = find(w, key, klen, &link);
    bool live = off && !expired(ENT(s, off), &now);
    if ((mode == SHD_ADD && live) || (mode == SHD_REPLACE && !live))
        return live ? SHD_EXISTS : SHD_NOT_FOUND;
    if (order > s->top_order)
        return SHD_NO_MEMORY;
    writing(s);
    struct shd_entry *e;
    if (off && ENT(s, off)->order == order) { /* the same block will do */
        e = ENT(s, off);
        lru_touch(s, e, off);
    } else {
        if (off)
            entry_remove(s, link, off);
        off = entry_alloc(s, order, evicted);
        if (!off) /* cannot be: the shard emptied holds a top block */
            return SHD_NO_MEMORY;
        e = ENT(s, off);
        __atomic_store_n(&REF(s, off), 0, __ATOMIC_RELAXED);
        e->hash = w->h;
        e->klen = (uint16_t)klen;
        memcpy(e->data, key, klen);
        if (d->hook)
            d->hook();
        uint32_t *bucket = &BUCKETS(s)[w->h & (s->nbuckets - 1)];
        e->chain = *bucket;
        *bucket = off;
        lru_push(s, e, off);
        s->entries++;
    }
    val_write(e, v);
    e->expires = expiry(ttl);
    return SHD_OK;
}

int shdict_store(struct shdict *d, enum shdict_mode mode, const char *key,
                 size_t klen, const struct shdict_val *v, double ttl,
                 bool *evicted)
{
    if (evicted)
        *evicted = false;
    struct where w;
    if (lock_key(d, key, klen, &w))
        return SHD_BAD_KEY;
    int ret = store_locked(d, &w, mode, key, klen, v, ttl, evicted);
    unlock(w.s);
    return ret;
}

int shdict_incr(struct shdict *d, const char *key, size_t klen, double by,
                const double *init, double init_ttl, double *out)
{
    struct where w;
    if (lock_key(d, key, klen, &w))
        return SHD_BAD_KEY;
    uint64_t now = 0;
    uint32_t off = find_live(&w, key, klen, &now);
    if (!off) {
        int ret = SHD_NOT_FOUND;
        if (init) {
            struct shdict_val v = { .type = SHD_NUMBER, .num = *init + by };
            ret = store_locked(d, &w, SHD_SET, key, klen, &v, init_ttl, NULL);
            *out = v.num;
        }
        unlock(w.s);
        return ret;
    }
    struct shd_entry *e = ENT(w.s, off);
    int ret = SHD_OK;
    if (e->type != SHD_NUMBER) {
        ret = SHD_NOT_NUMBER;
    } else {
        double n;
        memcpy(&n, e->data + e->klen, sizeof n);
        n += by;
        writing(w.s);
        memcpy(e->data + e->klen, &n, sizeof n);
        lru_touch(w.s, e, off);
        *out = n;
    }
    unlock(w.s);
    return ret;
}

int shdict_delete(struct shdict *d, const char *key, size_t klen)
{
    struct where w;
    if (lock_key(d, key, klen, &w))
        return SHD_BAD_KEY;
    uint64_t now = 0;
    uint32_t *link, off = find(&w, key, klen, &link);
    bool live = off && !expired(ENT(w.s, off), &now);
    if (off) {
        writing(w.s);
        entry_remove(w.s, link, off);
    }
    unlock(w.s);
    return live ? SHD_OK : SHD_NOT_FOUND;
}

int shdict_ttl(struct shdict *d, const char *key, size_t klen, double *left)
{
    struct where w;
    if (lock_key(d, key, klen, &w))
        return SHD_BAD_KEY;
    uint64_t now = 0;
    uint32_t off = find_live(&w, key, klen, &now);
    if (off) {
        uint64_t x = ENT(w.s, off)->expires;
        *left = x ? (double)(x - now) / 1e9 : 0;
    }
    unlock(w.s);
    return off ? SHD_OK : SHD_NOT_FOUND;
}

int shdict_expire(struct shdict *d, const char *key, size_t klen, double ttl)
{
    struct where w;
    if (lock_key(d, key, klen, &w))
        return SHD_BAD_KEY;
    uint64_t now = 0;
    uint32_t off = find_live(&w, key, klen, &now);
    if (off) {
        writing(w.s);
        ENT(w.s, off)->expires = expiry(ttl);
    }
    unlock(w.s);
    return off ? SHD_OK : SHD_NOT_FOUND;
}

/* Append a key to the growing buffer; -1 out of memory. */
static int keys_add(char **buf, size_t *len, size_t *cap, const struct shd_entry *e)
{
    if (*len + 2 + e->klen > *cap) {
        size_t n = *cap ? *cap * 2 : 4096;
        while (n < *len + 2 + e->klen)
            n *= 2;
        char *p = realloc(*buf, n);
        if (!p)
            return -1;
        *buf = p;
        *cap = n;
    }
    uint16_t kl = e->klen;
    memcpy(*buf + *len, &kl, 2);
    memcpy(*buf + *len + 2, e->data, kl);
    *len += 2u + kl;
    return 0;
}

long shdict_keys(struct shdict *d, size_t max, char **buf, size_t *len)
{
    size_t cap = 0, n = 0;
    uint64_t now = 0;
    *buf = NULL;
    *len = 0;
    for (unsigned i = 0; i < d->head->nshards && (!max || n < max); i++) {
        struct shd_shard *s = lock(d, i);
        for (uint32_t off = s->lru_head; off && (!max || n < max);
             off = ENT(s, off)->lru_next) {
            if (expired(ENT(s, off), &now))
                continue;
            if (keys_add(buf, len, &cap, ENT(s, off))) {
                unlock(s);
                free(*buf);
                *buf = NULL;
                return -1;
            }
            n++;
        }
        unlock(s);
    }
    return (long)n;
}

void shdict_flush_all(struct shdict *d)
{
    for (unsigned i = 0; i < d->head->nshards; i++) {
        struct shd_shard *s = lock(d, i);
        writing(s);
        shard_reset(s, true);
        unlock(s);
    }
}

void shdict_stats(struct shdict *d, struct shdict_stats *o)
{
    memset(o, 0, sizeof *o);
    o->hits = d->hits;
    o->misses = d->misses;
    for (unsigned i = 0; i < d->head->nshards; i++) {
        struct shd_shard *s = lock(d, i);
        o->evictions += s->evictions;
        o->entries += s->entries;
        o->used += s->used;
        o->capacity += s->used + s->free_bytes;
        o->wipes += s->wipes;
        unlock(s);
    }
}

uint64_t shdict_free_space(struct shdict *d)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < d->head->nshards; i++) {
        struct shd_shard *s = lock(d, i);
        n += s->free_bytes;
        unlock(s);
    }
    return n;
}

const char *shdict_strerror(int err)
{
    switch (err) {
    case SHD_OK:         return "ok";
    case SHD_NOT_FOUND:  return "not found";
    case SHD_EXISTS:     return "exists";
    case SHD_NO_MEMORY:  return "no memory";
    case SHD_NOT_NUMBER: return "not a number";
    case SHD_BAD_KEY:    return "bad key";
    default:             return "unknown error";
    }
}

const char *shdict_name(const struct shdict *d) { return d->name; }

void shdict_test_hook(struct shdict *d, void (*fn)(void)) { d->hook = fn; }

/* ---- making one ----------------------------------------------------- */

struct shdict *shdict_new(const char *name, size_t size, char *err, size_t len)
{
    if (size < SHDICT_MIN_SIZE || size > SHDICT_MAX_SIZE || strlen(name) > SHDICT_NAME_MAX) {
        snprintf(err, len, "shared dictionary %s: bad size or name", name);
        return NULL;
    }
    struct shdict *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, len, "shared dictionary %s: out of memory", name);
        return NULL;
    }
    snprintf(d->name, sizeof d->name, "%s", name);
    d->size = size;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(err, len, "shared dictionary %s: cannot map %zu bytes: %s", name,
                 size, strerror(errno));
        free(d);
        return NULL;
    }
    d->head = p;
    unsigned n = 1;
    while (n < MAX_SHARDS && (size - HEAD_SIZE) / (n * 2) >= SHARD_MIN)
        n *= 2;
    d->head->magic = MAGIC;
    if (getrandom(&d->head->seed, sizeof d->head->seed, 0) != sizeof d->head->seed)
        d->head->seed = now_ns() * 0x9e3779b97f4a7c15ull;
    d->head->nshards = n;
    d->seed = d->head->seed;
    size_t per = ((size - HEAD_SIZE) / n) & ~(size_t)4095;
    if (per > (1ull << 31))
        per = 1ull << 31;
    d->head->shard_size = (uint32_t)per;
    d->shard_shift = 64;
    for (unsigned b = n; b > 1; b >>= 1)
        d->shard_shift--;
    for (unsigned i = 0; i < n; i++)
        if (shard_init(shard_at(d, i), (uint32_t)per)) {
            snprintf(err, len, "shared dictionary %s: cannot make its locks", name);
            shdict_free(d);
            return NULL;
        }
    return d;
}

void shdict_free(struct shdict *d)
{
    if (!d)
        return;
    munmap(d->head, d->size);
    free(d);
}
