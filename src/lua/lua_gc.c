/* lua_gc.c - pace the Lua garbage collector for a server's heap.
 *
 * LuaJIT starts a collection cycle when the heap reaches twice its live
 * size (pause 200%). A moonring script's live heap is small, often under
 * 100 KiB, while every request makes garbage (the data strings): with
 * the default, a full mark and sweep ran every few hundred requests and
 * took about a third of the user-space instructions of a pipelined echo,
 * half of a 4 KiB one (callgrind). Here the pause is set after every
 * cycle so that the next starts at twice the live heap or at GC_FLOOR,
 * whichever is larger: small heaps are collected rarely, large ones as
 * LuaJIT would. A script that sets its own pause keeps it: pacing stops.
 *
 * The floor is small on purpose. With 4 MiB, user-space instructions per
 * request were 10-25% lower still, but every cycle held the loop for 2-3
 * ms at once (64-byte echo: p999 2.9 ms against 1.2 ms, pipelined: p99
 * 1.0 ms against 0.55), most likely LuaJIT growing and rehashing its
 * string table, which holds every dead string until the sweep. With 512
 * KiB of garbage those pauses are gone and the throughput is the same.
 *
 * A cycle's end is seen by a sentinel: an unreachable userdata whose
 * finalizer runs once per cycle, sets the pause (LuaJIT computes the next
 * threshold from it just after finalizers run) and makes a new sentinel. */
#include "lua_int.h"

#include <lauxlib.h>

#define GC_FLOOR ((size_t)512 << 10) /* bytes */
#define GC_PAUSE_MIN 200             /* LuaJIT's default */
#define GC_PAUSE_MAX 100000

static const char SENTINEL_MT[] = "moonring.gc_sentinel";

/* The pause that puts the next cycle at max(2 x live, floor). */
static int pause_for(const struct lua_host *h)
{
    size_t floor = GC_FLOOR;
    if (h->mem_limit && floor > h->mem_limit / 4)
        floor = h->mem_limit / 4;
    size_t live = h->mem ? h->mem : 1;
    size_t p = floor / live * 100 + floor % live * 100 / live;
    if (p < GC_PAUSE_MIN)
        p = GC_PAUSE_MIN;
    return p > GC_PAUSE_MAX ? GC_PAUSE_MAX : (int)p;
}

static void new_sentinel(lua_State *L)
{
    lua_newuserdata(L, 1);
    luaL_getmetatable(L, SENTINEL_MT);
    lua_setmetatable(L, -2);
    lua_pop(L, 1); /* unreachable: collected, and finalized, next cycle */
}

static int on_cycle(lua_State *L)
{
    struct lua_host *h = lua_touserdata(L, lua_upvalueindex(1));
    if (h->closing)
        return 0;
    int want = pause_for(h);
    int was = lua_gc(L, LUA_GCSETPAUSE, want);
    if (was != h->gc_pause) { /* the script chose its own: leave it */
        lua_gc(L, LUA_GCSETPAUSE, was);
        return 0;
    }
    h->gc_pause = want;
    /* a cycle may end inside a handler that is at --lua-memory: the
     * sentinel's few bytes must not fail there, or pacing would stop */
    bool guarded = h->guarded;
    h->guarded = false;
    new_sentinel(L);
    h->guarded = guarded;
    return 0;
}

void lua_gc_pace(lua_State *L, struct lua_host *h)
{
    luaL_newmetatable(L, SENTINEL_MT);
    lua_pushlightuserdata(L, h);
    lua_pushcclosure(L, on_cycle, 1);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    h->gc_pause = pause_for(h);
    lua_gc(L, LUA_GCSETPAUSE, h->gc_pause);
    new_sentinel(L);
}
