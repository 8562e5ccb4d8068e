/* shdict.h - a dictionary in memory shared by processes: what
 * `--shared NAME:SIZE` makes before the workers fork, so that every
 * worker sees the same keys and the data outlives any one of them.
 *
 * One mapping (MAP_SHARED | MAP_ANONYMOUS) holds everything, addressed
 * by offsets, never pointers. It is cut into shards, each with its own
 * robust process-shared mutex, hash table, LRU list and buddy allocator.
 * A shard whose lock holder died in the middle of a change is wiped by
 * the next locker, with a warning, so that nothing half-written is ever
 * read. A write locks one shard briefly; a get takes no lock (a seqlock,
 * see shdict.c); nothing waits otherwise. */
#ifndef MR_SHDICT_H
#define MR_SHDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHDICT_NAME_MAX 63
#define SHDICT_KEY_MAX 65535
#define SHDICT_MIN_SIZE (64u << 10)
#define SHDICT_MAX_SIZE (32ull << 30)

struct shdict;

enum shdict_type { SHD_NIL = 0, SHD_STRING, SHD_NUMBER, SHD_BOOLEAN };

/* Errors are negative; shdict_strerror names them as Lua sees them. */
enum {
    SHD_OK = 0,
    SHD_NOT_FOUND = -1,
    SHD_EXISTS = -2,
    SHD_NO_MEMORY = -3,      /* bigger than a shard can ever hold */
    SHD_NOT_NUMBER = -4,
    SHD_BAD_KEY = -5,        /* empty, or longer than SHDICT_KEY_MAX */
    SHD_SMALL_BUF = -6,      /* shdict_get: the value needs val->len bytes */
};

/* A value. For a string, str/len; a number in num; a boolean in num (0
 * or 1). flags is the caller's own 32 bits. */
struct shdict_val {
    enum shdict_type type;
    uint32_t flags;
    double num;
    const char *str;
    size_t len;
};

enum shdict_mode { SHD_SET, SHD_ADD, SHD_REPLACE };

struct shdict_stats {
    uint64_t hits, misses;   /* this process's get()s that found a live value, or not */
    uint64_t evictions;      /* live entries dropped to make room */
    uint64_t entries;        /* in the dictionary now, expired or not */
    uint64_t used;           /* bytes of blocks holding entries */
    uint64_t capacity;       /* bytes entries may take in all */
    uint64_t wipes;          /* shards wiped after a holder died mid-change */
};

/* Map and initialise a dictionary of `size` bytes in all. NULL with one
 * line in err when it cannot be mapped. */
struct shdict *shdict_new(const char *name, size_t size, char *err, size_t len);
void shdict_free(struct shdict *d);
const char *shdict_name(const struct shdict *d);

/* Copy the value of key into *v, its string part into buf (cap bytes):
 * SHD_OK, SHD_NOT_FOUND (or expired), or SHD_SMALL_BUF with v->len
 * saying how much room it needs (call again with that much). */
int shdict_get(struct shdict *d, const char *key, size_t klen, char *buf,
               size_t cap, struct shdict_val *v);

/* Store v under key, with ttl seconds to live (0: for ever). SHD_ADD
 * fails with SHD_EXISTS if a live value is there, SHD_REPLACE with
 * SHD_NOT_FOUND if none is. Least recently used entries of the shard go
 * to make room: *evicted (if not NULL) says whether live ones went. */
int shdict_store(struct shdict *d, enum shdict_mode mode, const char *key,
                 size_t klen, const struct shdict_val *v, double ttl,
                 bool *evicted);

/* Add `by` to the number under key; *out gets the sum. With no value
 * there: SHD_NOT_FOUND, or when init is given, store *init + by with
 * init_ttl. SHD_NOT_NUMBER for a value of another type. */
int shdict_incr(struct shdict *d, const char *key, size_t klen, double by,
                const double *init, double init_ttl, double *out);

/* SHD_OK or SHD_NOT_FOUND. */
int shdict_delete(struct shdict *d, const char *key, size_t klen);

/* Seconds left to live in *left (0: for ever), or SHD_NOT_FOUND. */
int shdict_ttl(struct shdict *d, const char *key, size_t klen, double *left);

/* Set the time to live of a live value (0: for ever), or SHD_NOT_FOUND. */
int shdict_expire(struct shdict *d, const char *key, size_t klen, double ttl);

/* Up to max live keys (0: all), most recently stored first within each
 * shard, into a buffer the caller frees: each is its length (2 bytes,
 * native order) and its bytes. Returns how many, or -1 out of memory. */
long shdict_keys(struct shdict *d, size_t max, char **buf, size_t *len);

/* Remove every entry. */
void shdict_flush_all(struct shdict *d);

void shdict_stats(struct shdict *d, struct shdict_stats *out);
/* Bytes of blocks free for entries, in all the shards. */
uint64_t shdict_free_space(struct shdict *d);

const char *shdict_strerror(int err);

/* Tests only: called inside the critical section of a store, between
 * two halves of a change, so that a test can die there for certain. */
void shdict_test_hook(struct shdict *d, void (*fn)(void));

#endif
