/* reload.h - hot reload, the worker's side: watch the script's files
 * through the ring, let a burst of saves settle, then have the Lua
 * binding reload between two turns of the core. */
#ifndef MR_RELOAD_H
#define MR_RELOAD_H

#include "core.h"
#include "lua_host.h"
#include "watch.h"

#include <stdbool.h>
#include <stdint.h>

struct reloader {
    struct core *k;
    struct lua_host *lua;
    struct watch watch;        /* the script's files; fd -1 when off */
    struct core_op read_op;    /* the read of the inotify fd */
    struct core_op timer_op;   /* a burst of saves has settled */
    bool pending;              /* reload between this turn and the next */
    bool timer_armed;
    uint64_t at;               /* monotonic ns: when the saves have settled */
    struct __kernel_timespec ts;
};

/* Watch the script's files when `watch` is true (else reload on
 * request only). */
void reload_init(struct reloader *r, struct core *k, struct lua_host *lua,
                 bool watch);
void reload_destroy(struct reloader *r);

/* SIGHUP: reload after this turn. */
static inline void reload_request(struct reloader *r) { r->pending = true; }

/* Is a reload due after this turn? */
static inline bool reload_pending(const struct reloader *r) { return r->pending; }

/* Reload if one is due; only between two turns of the core. */
void reload_run(struct reloader *r);

#endif
