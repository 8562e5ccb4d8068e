/* lua_pool.h - free lists of small Lua heap blocks, by exact size. */
#ifndef LUA_POOL_H
#define LUA_POOL_H

#include <stddef.h>

#define LUA_POOL_MAX_SIZE  256            /* bytes: larger blocks are not kept */
#define LUA_POOL_MAX_BYTES ((size_t)1 << 20)

struct lua_pool_block { struct lua_pool_block *next; };

struct lua_pool {
    struct lua_pool_block *free[LUA_POOL_MAX_SIZE + 1];
    size_t bytes;                         /* kept in the lists */
};

/* A block of exactly n bytes freed earlier, or NULL. */
static inline void *lua_pool_get(struct lua_pool *p, size_t n)
{
    struct lua_pool_block *b;
    if (n > LUA_POOL_MAX_SIZE || !(b = p->free[n]))
        return NULL;
    p->free[n] = b->next;
    p->bytes -= n;
    return b;
}

/* Keeps block b of n bytes; false if it is not kept (the caller frees). */
static inline int lua_pool_put(struct lua_pool *p, void *b, size_t n)
{
    if (n < sizeof(struct lua_pool_block) || n > LUA_POOL_MAX_SIZE ||
        p->bytes + n > LUA_POOL_MAX_BYTES)
        return 0;
    struct lua_pool_block *k = b;
    k->next = p->free[n];
    p->free[n] = k;
    p->bytes += n;
    return 1;
}

#endif
