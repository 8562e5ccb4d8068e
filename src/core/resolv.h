/* resolv.h - looking names up without blocking the worker: for a script's
 * mr.resolve(name) and for the names given to outbound connects.
 *
 * A lookup answers from, in this order: a numeric address (IPv4, or IPv6
 * with an optional %scope), the hosts file, "localhost" and names under
 * it (127.0.0.1 and ::1), the cache, and else A and AAAA queries, both
 * sent at once, over UDP to the nameservers of resolv.conf, through the
 * core's ring.
 *
 * The files are read once, at a core's first lookup, and not again: a
 * change to them needs a new worker (a reload does not read them again).
 * The paths are $MOONRING_RESOLV_CONF and $MOONRING_HOSTS when set, else
 * /etc/resolv.conf and /etc/hosts. From resolv.conf: up to 3 nameserver
 * lines, which may carry a port ("nameserver 127.0.0.1:5353", "nameserver
 * [::1]:5353"; other resolvers do not take one), and options timeout:N
 * (seconds a try waits, 5 by default, at most 30) and attempts:N (rounds
 * through the servers, 2 by default, at most 5). Without a nameserver
 * line, 127.0.0.1. search, domain and ndots are ignored: a name is looked
 * up as given, as an absolute name. From the hosts file: "address name
 * [alias...]" lines, IPv4 and IPv6 (a line whose address has a %scope is
 * skipped), names in any case.
 *
 * Answers are cached by name for their TTL (the least TTL of the records
 * used, at most a day), NXDOMAIN and names without addresses for their
 * SOA's negative TTL (10 s when there is none, at most 60 s); at most
 * 1024 names, the oldest out first. Lookups of a name already under way
 * share its queries. Answers are plain DNS of at most 512 bytes (no
 * EDNS, no TCP): a truncated answer gives the addresses it holds in full,
 * and fails with -EMSGSIZE when it holds none. An answer counts only if
 * it comes from a configured nameserver's address and port, with the
 * query's random id and its question; the source port is the one the
 * kernel gave the socket, the same for every query. */
#ifndef MR_RESOLV_H
#define MR_RESOLV_H

#include <stdint.h>
#include <sys/socket.h>

struct core;

#define RESOLV_MAX_ADDRS 16

/* A lookup's addresses: the IPv4 ones first, each in the order of its
 * answer, and port 0 in all (the caller sets the port it connects to). */
struct resolv_result {
    int count;
    struct sockaddr_storage addr[RESOLV_MAX_ADDRS];
    socklen_t len[RESOLV_MAX_ADDRS];
    /* seconds the answer may be kept: what is left of its TTL; 0 for a
     * numeric address, the hosts file and localhost, which cost nothing
     * to look up again */
    uint32_t ttl;
};

/* err is 0, and r the addresses (valid only during the call), or err is
 * a negative errno and r is NULL:
 *   -ENOENT     no such name (NXDOMAIN)
 *   -ENODATA    the name exists but has no address
 *   -ETIMEDOUT  no nameserver answered
 *   -EIO        the nameservers failed (SERVFAIL, REFUSED...)
 *   -EMSGSIZE   the answer was truncated before any address
 *   -ENOMEM, or the errno of the sends when none could go out */
typedef void (*resolv_fn)(struct core *k, void *ctx, int err,
                          const struct resolv_result *r);

/* Look name up and call fn(k, ctx, ...) once, later: never from inside
 * this call (even for a numeric address or a cached answer), so callers
 * may set up what fn needs after it returns. Returns 0, or a negative
 * errno and fn is never called: -EINVAL for a name that cannot be one
 * (empty, a label empty or over 63 bytes, over 253 bytes, a space or a
 * control byte in it), -EAGAIN with 1024 names being looked up already,
 * -ENOMEM. A lookup still under way at core_destroy is dropped, its fn
 * never called. */
int core_resolve(struct core *k, const char *name, resolv_fn fn, void *ctx);

/* The same answer without waiting, when no query is needed (a numeric
 * address, the hosts file, localhost, a cached answer): 1 and *out, or
 * the negative errno that answer is (a cached NXDOMAIN: -ENOENT), or 0
 * when only core_resolve can tell. */
int core_resolve_known(struct core *k, const char *name,
                       struct resolv_result *out);

/* A message for a lookup's err: "no such name", "resolver timed out"...
 * (strerror's for the errnos that are not a resolver's own). */
const char *resolv_strerror(int err);

#endif
