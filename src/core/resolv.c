/* resolv.c - name lookups that never block the worker (resolv.h).
 *
 * Each name being looked up, or cached, is a resolv_name in one hash
 * table; while looked up it has two queries, A and AAAA, in flight, and
 * a list of the lookups waiting for it. Queries go out on one UDP socket
 * per address family (made when a nameserver of that family is first
 * used), as sendmsg operations on the ring, and answers come back by
 * recvmsg operations kept armed while any name is being looked up. An
 * answer is taken when its id, question and sender match a query.
 *
 * A try's timeout is a core timer of the core's own kind, TIMER_RESOLV,
 * keyed by the query's id and the try's serial number: it costs no SQE,
 * no cancel when the answer comes first (a stale entry finds another
 * serial, or no query, and does nothing), and no completion to wait for
 * at teardown, unlike an io_uring timeout per try. Answers that need no
 * query (numbers, hosts, cache) wait on a ready list for a timer due at
 * once, so that they too come later than core_resolve returns. */
#include "core_int.h"
#include "dns.h"
#include "log.h"
#include "resolv_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define CACHE_MAX     1024             /* names kept once looked up */
#define PENDING_MAX   1024             /* names being looked up at once */
#define NAME_BUCKETS  2048             /* CACHE_MAX + PENDING_MAX */
#define ID_BUCKETS    256
#define TTL_MAX       86400u           /* a day */
#define NEG_TTL       10u              /* a negative answer without a SOA */
#define NEG_TTL_MAX   60u
#define RECVS         2                /* both answers of a lookup in one turn */
#define RECV_BUF      2048             /* answers are 512 bytes without EDNS */
#define READY_KEY     UINT64_MAX       /* the ready list's timer (ids fit 16 bits) */
#define NS_PER_S      1000000000ull

struct resolv_wait {                   /* a lookup waiting for its answer */
    struct resolv_wait *next;
    resolv_fn fn;
    void *ctx;
    /* on the ready list, its answer */
    int err;
    uint32_t ttl;
    struct resolv_addrs addrs;
};

struct resolv_name;

struct resolv_query {                  /* one question of a name in flight */
    struct resolv_query *hnext;        /* in its id's bucket */
    struct resolv_name *name;
    uint16_t id, type;
    uint8_t tries;                     /* sends so far */
    bool done;
    bool server_failed;                /* a server answered SERVFAIL or the like */
    int send_err;                      /* the last failed send's */
    uint32_t serial;                   /* of its current try */
    /* once done */
    int err;                           /* 0, -ENOENT, -ENODATA, -ETIMEDOUT... */
    uint32_t ttl;                      /* of the addresses or of the negative answer */
    uint8_t n;
    uint8_t addr[DNS_MAX_ADDRS][16];
};

struct resolv_name {
    struct resolv_name *hnext;         /* in its bucket */
    struct resolv_name *older, *newer; /* in the cache, once looked up */
    struct resolv_query *q;            /* [2], A and AAAA, while looked up */
    struct resolv_wait *waiters, **wtail;
    int err;                           /* cached: 0, -ENOENT or -ENODATA */
    uint64_t expires;                  /* cached: monotonic ns */
    struct resolv_addrs addrs;
    uint8_t len;
    uint8_t wire[];                    /* the name, lowercased wire form */
};

struct resolv_sock;

struct resolv_recv {                   /* the kernel writes into it until its CQE */
    struct core_op op;
    struct resolv_sock *sock;
    bool armed;
    struct msghdr msg;
    struct iovec iov;
    struct sockaddr_storage from;
    uint8_t buf[RECV_BUF];
};

struct resolv_sock {
    int fd;                            /* -1 until a server of its family is used */
    struct resolv_recv rx[RECVS];
};

struct resolv_send {                   /* one query's packet, until its CQE */
    struct core_op op;
    struct resolv_send *prev, *next;   /* in flight */
    uint16_t id;
    uint32_t serial;
    struct msghdr msg;
    struct iovec iov;
    struct sockaddr_storage to;
    uint8_t pkt[DNS_QUERY_MAX];
};

struct resolver {
    struct resolv_conf conf;
    struct hosts hosts;
    struct resolv_sock sock[2];        /* IPv4, IPv6 */
    struct resolv_name *names[NAME_BUCKETS];
    struct resolv_query *ids[ID_BUCKETS];
    struct resolv_name *oldest, *newest; /* the cache */
    unsigned cached, pending;
    struct resolv_send *sends;
    struct resolv_wait *ready, **ready_tail;
    bool ready_armed;
    uint32_t serial;
    uint64_t rng;
};

static void on_recv(struct core *k, struct core_op *op, const struct io_uring_cqe *cqe);
static void query_next(struct core *k, struct resolver *r, struct resolv_query *q);

const char *resolv_strerror(int err)
{
    switch (err) {
    case 0:           return "ok";
    case -ENOENT:     return "no such name";
    case -ENODATA:    return "name has no address";
    case -ETIMEDOUT:  return "resolver timed out";
    case -EIO:        return "nameserver failure";
    case -EMSGSIZE:   return "answer truncated";
    case -EINVAL:     return "invalid name";
    case -EAGAIN:     return "too many lookups at once";
    default:          return strerror(err < 0 ? -err : err);
    }
}

/* xorshift64*, seeded from the kernel: query ids an off-path sender
 * cannot guess from the last one. */
static uint16_t next_id(struct resolver *r)
{
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return (uint16_t)((r->rng * 2685821657736338717ull) >> 48);
}

/* ---- the files, once ---- */

static const char *env_or(const char *var, const char *dflt)
{
    const char *v = getenv(var);
    return v && *v ? v : dflt;
}

static void load_files(struct resolver *r)
{
    const char *conf = env_or("MOONRING_RESOLV_CONF", "/etc/resolv.conf");
    const char *hosts = env_or("MOONRING_HOSTS", "/etc/hosts");
    char *text = NULL;
    size_t n = 0;
    int ret = resolv_read_file(conf, &text, &n);
    if (ret)
        log_debug("resolver: %s: %s", conf, strerror(-ret));
    resolv_conf_parse(&r->conf, text, n);
    free(text);
    text = NULL;
    if ((ret = resolv_read_file(hosts, &text, &n)))
        log_debug("resolver: %s: %s", hosts, strerror(-ret));
    else if ((ret = hosts_parse(&r->hosts, text, n)))
        log_warn("resolver: %s: %s: using part of it", hosts, strerror(-ret));
    free(text);
}

static struct resolver *resolver_get(struct core *k)
{
    if (k->resolv)
        return k->resolv;
    struct resolver *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    for (int i = 0; i < 2; i++) {
        r->sock[i].fd = -1;
        for (int j = 0; j < RECVS; j++) {
            r->sock[i].rx[j].sock = &r->sock[i];
            r->sock[i].rx[j].op.done = on_recv;
        }
    }
    r->ready_tail = &r->ready;
    if (getrandom(&r->rng, sizeof r->rng, GRND_NONBLOCK) != sizeof r->rng)
        r->rng = timer_now() ^ ((uint64_t)getpid() << 32);
    r->rng |= 1;                       /* xorshift never leaves 0 */
    load_files(r);
    k->resolv = r;
    return r;
}

/* ---- answers given to the lookups ---- */

static void result_fill(struct resolv_result *res, const struct resolv_addrs *a,
                        uint32_t ttl)
{
    memset(res, 0, sizeof *res);
    res->count = a->n;
    res->ttl = ttl;
    for (int i = 0; i < a->n; i++) {
        if (i < a->n4) {
            struct sockaddr_in *v4 = (struct sockaddr_in *)&res->addr[i];
            v4->sin_family = AF_INET;
            memcpy(&v4->sin_addr, a->a[i], 4);
            res->len[i] = sizeof *v4;
        } else {
            struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&res->addr[i];
            v6->sin6_family = AF_INET6;
            memcpy(&v6->sin6_addr, a->a[i], 16);
            v6->sin6_scope_id = a->scope;
            res->len[i] = sizeof *v6;
        }
    }
}

/* Give one answer to a list of lookups, freeing them. Touches nothing
 * of the resolver's: a callback may look names up, and so change it. */
static void notify(struct core *k, struct resolv_wait *w, int err, uint32_t ttl,
                   const struct resolv_addrs *a)
{
    struct resolv_result res;
    result_fill(&res, a, ttl);
    while (w) {
        struct resolv_wait *next = w->next;
        w->fn(k, w->ctx, err, err ? NULL : &res);
        free(w);
        w = next;
    }
}

static struct resolv_wait *wait_new(resolv_fn fn, void *ctx)
{
    struct resolv_wait *w = calloc(1, sizeof *w);
    if (w) {
        w->fn = fn;
        w->ctx = ctx;
    }
    return w;
}

/* An answer known now, given at the next turn: the ready timer is due
 * after k->now, so even a lookup made while timers run waits a turn. */
static int answer_later(struct core *k, struct resolver *r, resolv_fn fn,
                        void *ctx, int err, uint32_t ttl,
                        const struct resolv_addrs *a)
{
    struct resolv_wait *w = wait_new(fn, ctx);
    if (!w)
        return -ENOMEM;
    if (!r->ready_armed) {
        if (timer_push(&k->timers, k->now + 1, TIMER_RESOLV, READY_KEY)) {
            free(w);
            return -ENOMEM;
        }
        r->ready_armed = true;
    }
    w->err = err;
    w->ttl = ttl;
    w->addrs = *a;
    *r->ready_tail = w;
    r->ready_tail = &w->next;
    return 0;
}

/* The answers of the ready list; those the callbacks add wait a turn. */
static void run_ready(struct core *k, struct resolver *r)
{
    struct resolv_wait *w = r->ready;
    r->ready = NULL;
    r->ready_tail = &r->ready;
    r->ready_armed = false;
    while (w) {
        struct resolv_wait *next = w->next;
        w->next = NULL;
        notify(k, w, w->err, w->ttl, &w->addrs);
        w = next;
    }
}

/* ---- names: the table and the cache ---- */

static struct resolv_name **bucket_of(struct resolver *r, const uint8_t *wire,
                                      size_t len)
{
    return &r->names[resolv_hash(wire, len) & (NAME_BUCKETS - 1)];
}

static struct resolv_name *name_find(struct resolver *r, const uint8_t *wire,
                                     size_t len)
{
    for (struct resolv_name *e = *bucket_of(r, wire, len); e; e = e->hnext)
        if (e->len == len && !memcmp(e->wire, wire, len))
            return e;
    return NULL;
}

static struct resolv_name *name_new(struct resolver *r, const uint8_t *wire,
                                    size_t len)
{
    struct resolv_name *e = calloc(1, sizeof *e + len);
    if (!e)
        return NULL;
    memcpy(e->wire, wire, len);
    e->len = (uint8_t)len;
    e->wtail = &e->waiters;
    struct resolv_name **b = bucket_of(r, wire, len);
    e->hnext = *b;
    *b = e;
    return e;
}

/* Out of the table and freed; e has no queries and no waiters. */
static void name_drop(struct resolver *r, struct resolv_name *e)
{
    struct resolv_name **p = bucket_of(r, e->wire, e->len);
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    free(e);
}

static void cache_unlink(struct resolver *r, struct resolv_name *e)
{
    *(e->older ? &e->older->newer : &r->oldest) = e->newer;
    *(e->newer ? &e->newer->older : &r->newest) = e->older;
    e->older = e->newer = NULL;
    r->cached--;
}

static void cache_keep(struct resolver *r, struct resolv_name *e, uint32_t ttl)
{
    e->expires = timer_now() + ttl * NS_PER_S;
    e->older = r->newest;
    e->newer = NULL;
    *(r->newest ? &r->newest->newer : &r->oldest) = e;
    r->newest = e;
    if (++r->cached > CACHE_MAX) {
        struct resolv_name *old = r->oldest;
        cache_unlink(r, old);
        name_drop(r, old);
    }
}

static uint32_t ttl_left(const struct resolv_name *e, uint64_t now)
{
    return (uint32_t)((e->expires - now + NS_PER_S - 1) / NS_PER_S);
}

/* ---- queries: ids, sockets, sends ---- */

static struct resolv_query **id_bucket(struct resolver *r, uint16_t id)
{
    return &r->ids[id & (ID_BUCKETS - 1)];
}

static struct resolv_query *id_find(struct resolver *r, uint16_t id)
{
    for (struct resolv_query *q = *id_bucket(r, id); q; q = q->hnext)
        if (q->id == id)
            return q;
    return NULL;
}

/* A fresh id (PENDING_MAX * 2 of 65536 can be taken) for q, hashed. */
static void id_take(struct resolver *r, struct resolv_query *q)
{
    do
        q->id = next_id(r);
    while (id_find(r, q->id));
    struct resolv_query **b = id_bucket(r, q->id);
    q->hnext = *b;
    *b = q;
}

static void id_drop(struct resolver *r, struct resolv_query *q)
{
    struct resolv_query **p = id_bucket(r, q->id);
    while (*p && *p != q)
        p = &(*p)->hnext;
    if (*p)
        *p = q->hnext;
}

static void queries_free(struct resolver *r, struct resolv_name *e)
{
    id_drop(r, &e->q[0]);
    id_drop(r, &e->q[1]);
    free(e->q);
    e->q = NULL;
}

static int sock_get(struct resolver *r, int family, struct resolv_sock **out)
{
    struct resolv_sock *s = &r->sock[family == AF_INET6];
    if (s->fd < 0 &&
        (s->fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        return -errno;
    *out = s;
    return 0;
}

/* Every receive of s with the kernel, until answers stop being awaited. */
static void sock_arm(struct core *k, struct resolv_sock *s)
{
    for (int i = 0; i < RECVS; i++) {
        struct resolv_recv *rx = &s->rx[i];
        if (rx->armed)
            continue;
        rx->iov = (struct iovec){ rx->buf, sizeof rx->buf };
        rx->msg = (struct msghdr){
            .msg_name = &rx->from, .msg_namelen = sizeof rx->from,
            .msg_iov = &rx->iov, .msg_iovlen = 1,
        };
        io_uring_prep_recvmsg(core_op_sqe(k, &rx->op), s->fd, &rx->msg, 0);
        rx->armed = true;
    }
}

static void send_unlink(struct resolver *r, struct resolv_send *m)
{
    *(m->prev ? &m->prev->next : &r->sends) = m->next;
    if (m->next)
        m->next->prev = m->prev;
}

/* A send failed (no route, no such family...): the next server, now. */
static void on_sent(struct core *k, struct core_op *op, const struct io_uring_cqe *cqe)
{
    struct resolver *r = k->resolv;
    struct resolv_send *m = core_op_owner(op, struct resolv_send, op);
    uint16_t id = m->id;
    uint32_t serial = m->serial;
    send_unlink(r, m);
    free(m);
    if (cqe->res >= 0)
        return;
    struct resolv_query *q = id_find(r, id);
    log_debug("resolver: send: %s", strerror(-cqe->res));
    if (q && !q->done && q->serial == serial) {
        q->send_err = cqe->res;
        query_next(k, r, q);
    }
}

/* One try of q: its packet to ns, and its timeout. */
static int send_to(struct core *k, struct resolver *r, struct resolv_query *q,
                   unsigned ns)
{
    const struct sockaddr_storage *to = &r->conf.ns[ns];
    struct resolv_sock *s = NULL;
    struct resolv_send *m;
    int ret = sock_get(r, to->ss_family, &s);
    if (ret)
        return ret;
    if (!(m = calloc(1, sizeof *m)))
        return -ENOMEM;
    int len = dns_query_build(m->pkt, sizeof m->pkt, q->id, q->name->wire,
                              q->name->len, q->type);
    uint64_t due = timer_now() + r->conf.timeout_s * NS_PER_S;
    q->serial = ++r->serial;
    if (len < 0 || timer_push(&k->timers, due, TIMER_RESOLV,
                              (uint64_t)q->id << 32 | q->serial)) {
        free(m);
        return len < 0 ? len : -ENOMEM;
    }
    m->op.done = on_sent;
    m->id = q->id;
    m->serial = q->serial;
    m->to = *to;
    m->iov = (struct iovec){ m->pkt, (size_t)len };
    m->msg = (struct msghdr){
        .msg_name = &m->to, .msg_namelen = r->conf.nslen[ns],
        .msg_iov = &m->iov, .msg_iovlen = 1,
    };
    m->next = r->sends;
    if (r->sends)
        r->sends->prev = m;
    r->sends = m;
    io_uring_prep_sendmsg(core_op_sqe(k, &m->op), s->fd, &m->msg, 0);
    sock_arm(k, s);
    return 0;
}

/* The error of a query out of tries. */
static int give_up(const struct resolv_query *q)
{
    return q->server_failed ? -EIO : q->send_err ? q->send_err : -ETIMEDOUT;
}

/* q's next try, cycling through the servers attempts times. Returns 0
 * when one is on its way, else the error q ends with. */
static int query_send(struct core *k, struct resolver *r, struct resolv_query *q)
{
    unsigned tries = r->conf.attempts * r->conf.nns;
    while (q->tries < tries) {
        int ret = send_to(k, r, q, q->tries++ % r->conf.nns);
        if (!ret)
            return 0;
        if (ret == -ENOMEM)
            return ret;
        q->send_err = ret;
    }
    return give_up(q);
}

/* ---- a name's lookup ---- */

static bool settled(int err) { return err == 0 || err == -ENODATA; }

static void name_finish(struct core *k, struct resolver *r, struct resolv_name *e,
                        int err, uint32_t ttl, bool cache)
{
    struct resolv_wait *w = e->waiters;
    struct resolv_addrs a = e->addrs;
    e->waiters = NULL;
    e->wtail = &e->waiters;
    queries_free(r, e);
    r->pending--;
    e->err = err;
    if (cache && ttl)
        cache_keep(r, e, ttl);
    else
        name_drop(r, e);
    notify(k, w, err, ttl, &a);
}

/* Both answers in (or an NXDOMAIN, which holds for both): the name's. */
static void name_check(struct core *k, struct resolver *r, struct resolv_name *e)
{
    struct resolv_query *a = &e->q[0], *b = &e->q[1];
    for (int i = 0; i < 2; i++) {
        if (e->q[i].done && e->q[i].err == -ENOENT) {
            name_finish(k, r, e, -ENOENT, e->q[i].ttl, true);
            return;
        }
    }
    if (!a->done || !b->done)
        return;
    memset(&e->addrs, 0, sizeof e->addrs);
    uint32_t ttl = UINT32_MAX;
    for (int i = 0; i < 2; i++) {
        struct resolv_query *q = &e->q[i];
        for (int j = 0; j < q->n; j++)
            resolv_addrs_add(&e->addrs, q->type == DNS_TYPE_A ? AF_INET : AF_INET6,
                             q->addr[j]);
        if (q->n && q->ttl < ttl)
            ttl = q->ttl;
    }
    if (e->addrs.n)                    /* a failed half is not cached */
        name_finish(k, r, e, 0, ttl, settled(a->err) && settled(b->err));
    else if (a->err == -ENODATA && b->err == -ENODATA)
        name_finish(k, r, e, -ENODATA, a->ttl < b->ttl ? a->ttl : b->ttl, true);
    else
        name_finish(k, r, e, a->err != -ENODATA ? a->err : b->err, 0, false);
}

static void query_done(struct core *k, struct resolver *r, struct resolv_query *q,
                       int err, uint32_t ttl)
{
    q->done = true;
    q->err = err;
    q->ttl = ttl;
    name_check(k, r, q->name);
}

static void query_next(struct core *k, struct resolver *r, struct resolv_query *q)
{
    int ret = query_send(k, r, q);
    if (ret)
        query_done(k, r, q, ret, 0);
}

static uint32_t neg_ttl(const struct dns_answer *a)
{
    if (!a->has_soa)
        return NEG_TTL;
    return a->neg_ttl < NEG_TTL_MAX ? a->neg_ttl : NEG_TTL_MAX;
}

static void query_answered(struct core *k, struct resolver *r,
                           struct resolv_query *q, const struct dns_answer *a)
{
    if (a->rcode == DNS_RCODE_NXDOMAIN) {
        query_done(k, r, q, -ENOENT, neg_ttl(a));
    } else if (a->rcode != DNS_RCODE_NOERROR) {
        q->server_failed = true;       /* SERVFAIL, REFUSED: another may do */
        query_next(k, r, q);
    } else if (!a->n) {
        query_done(k, r, q, a->truncated ? -EMSGSIZE : -ENODATA, neg_ttl(a));
    } else {
        q->n = (uint8_t)a->n;
        memcpy(q->addr, a->addr, sizeof q->addr);
        query_done(k, r, q, 0, a->ttl < TTL_MAX ? a->ttl : TTL_MAX);
    }
}

/* ---- receiving ---- */

static bool from_server(const struct resolver *r, const struct sockaddr_storage *ss)
{
    for (unsigned i = 0; i < r->conf.nns; i++) {
        const struct sockaddr_storage *ns = &r->conf.ns[i];
        if (ns->ss_family != ss->ss_family)
            continue;
        if (ss->ss_family == AF_INET) {
            const struct sockaddr_in *a = (const void *)ns, *b = (const void *)ss;
            if (a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr)
                return true;
        } else {
            const struct sockaddr_in6 *a = (const void *)ns, *b = (const void *)ss;
            if (a->sin6_port == b->sin6_port &&
                !memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr))
                return true;
        }
    }
    return false;
}

/* A datagram: an answer to a query of ours, or ignored. */
static void on_packet(struct core *k, struct resolver *r, const struct resolv_recv *rx,
                      size_t n)
{
    struct dns_answer a;
    int id = dns_packet_id(rx->buf, n);
    struct resolv_query *q = id < 0 ? NULL : id_find(r, (uint16_t)id);
    if (!q || q->done || (rx->msg.msg_flags & MSG_TRUNC) || !from_server(r, &rx->from))
        return;
    if (dns_answer_parse(rx->buf, n, (uint16_t)id, q->name->wire, q->name->len,
                         q->type, &a)) {
        log_debug("resolver: a malformed or stray answer ignored");
        return;
    }
    query_answered(k, r, q, &a);
}

static void on_recv(struct core *k, struct core_op *op, const struct io_uring_cqe *cqe)
{
    struct resolver *r = k->resolv;
    struct resolv_recv *rx = core_op_owner(op, struct resolv_recv, op);
    rx->armed = false;
    if (cqe->res < 0) {
        /* not re-armed at once, so that an error that stays cannot spin
         * the loop: the next try re-arms */
        log_debug("resolver: receive: %s", strerror(-cqe->res));
        return;
    }
    on_packet(k, r, rx, (size_t)cqe->res);
    if (r->pending)
        sock_arm(k, rx->sock);
}

/* ---- timers, start, teardown ---- */

void resolv_on_timer(struct core *k, uint64_t key)
{
    struct resolver *r = k->resolv;
    if (!r)
        return;
    if (key == READY_KEY) {
        run_ready(k, r);
        return;
    }
    struct resolv_query *q = id_find(r, (uint16_t)(key >> 32));
    if (q && !q->done && q->serial == (uint32_t)key)
        query_next(k, r, q);           /* no answer in time */
}

/* Send e's two queries; on failure e is as it was, without queries. */
static int queries_start(struct core *k, struct resolver *r, struct resolv_name *e)
{
    static const uint16_t types[2] = { DNS_TYPE_A, DNS_TYPE_AAAA };
    if (!(e->q = calloc(2, sizeof *e->q)))
        return -ENOMEM;
    for (int i = 0; i < 2; i++) {
        e->q[i].name = e;
        e->q[i].type = types[i];
        id_take(r, &e->q[i]);
    }
    for (int i = 0; i < 2; i++) {
        int ret = query_send(k, r, &e->q[i]);
        if (ret) {
            queries_free(r, e);        /* a packet already sent finds no query */
            return ret;
        }
    }
    return 0;
}

/* Look up the name e (cached but expired), or wire (not known yet). */
static int lookup_start(struct core *k, struct resolver *r, struct resolv_name **ep,
                        const uint8_t *wire, size_t len)
{
    struct resolv_name *e = *ep;
    if (r->pending >= PENDING_MAX)
        return -EAGAIN;
    if (e)
        cache_unlink(r, e);
    else if (!(e = name_new(r, wire, len)))
        return -ENOMEM;
    int ret = queries_start(k, r, e);
    if (ret) {
        name_drop(r, e);
        *ep = NULL;
        return ret;
    }
    r->pending++;
    *ep = e;
    return 0;
}

static int lookup(struct core *k, struct resolver *r, const uint8_t *wire,
                  size_t len, resolv_fn fn, void *ctx)
{
    struct resolv_name *e = name_find(r, wire, len);
    struct resolv_wait *w = wait_new(fn, ctx);
    if (!w)
        return -ENOMEM;
    int ret = e && e->q ? 0 : lookup_start(k, r, &e, wire, len);
    if (ret) {
        free(w);
        return ret;
    }
    *e->wtail = w;
    e->wtail = &w->next;
    return 0;
}

/* localhost and the names under it (RFC 6761): the loopback. The length
 * byte cannot be part of a label (encoding refuses control bytes), so a
 * match of the bytes is a match of whole labels. */
static bool localhost(const uint8_t *wire, size_t len, struct resolv_addrs *a)
{
    static const uint8_t lh[] = "\x09localhost";  /* and its NUL: the root */
    static const uint8_t v4[4] = { 127, 0, 0, 1 };
    static const uint8_t v6[16] = { [15] = 1 };
    if (len < sizeof lh || memcmp(wire + len - sizeof lh, lh, sizeof lh))
        return false;
    resolv_addrs_add(a, AF_INET, v4);
    resolv_addrs_add(a, AF_INET6, v6);
    return true;
}

/* What is known of name without a query: 1 and *a (numeric, hosts file,
 * localhost, or a fresh cache entry: *err and *ttl then say what it
 * holds), 0 when it must be looked up (wire and *len are its encoding),
 * or a negative errno for a name that cannot be one. */
static int known(struct resolver *r, const char *name, uint8_t *wire,
                 int *len, struct resolv_addrs *a, int *err, uint32_t *ttl)
{
    *err = 0;
    *ttl = 0;
    if (resolv_literal(name, a))
        return 1;
    *len = dns_name_encode(name, wire);
    if (*len < 0)
        return *len;
    if (hosts_find(&r->hosts, wire, (size_t)*len, a) ||
        localhost(wire, (size_t)*len, a))
        return 1;
    uint64_t now = timer_now();
    struct resolv_name *e = name_find(r, wire, (size_t)*len);
    if (!e || e->q || now >= e->expires)
        return 0;
    *err = e->err;
    *ttl = ttl_left(e, now);
    *a = e->addrs;
    return 1;
}

int core_resolve(struct core *k, const char *name, resolv_fn fn, void *ctx)
{
    struct resolv_addrs a = { 0 };
    uint8_t wire[DNS_NAME_MAX];
    int len = 0, err;
    uint32_t ttl;
    if (!name || !fn)
        return -EINVAL;
    struct resolver *r = resolver_get(k);
    if (!r)
        return -ENOMEM;
    int ret = known(r, name, wire, &len, &a, &err, &ttl);
    if (ret < 0)
        return ret;
    if (ret)
        return answer_later(k, r, fn, ctx, err, ttl, &a);
    return lookup(k, r, wire, (size_t)len, fn, ctx);
}

int core_resolve_known(struct core *k, const char *name,
                       struct resolv_result *out)
{
    struct resolv_addrs a = { 0 };
    uint8_t wire[DNS_NAME_MAX];
    int len = 0, err;
    uint32_t ttl;
    if (!name)
        return -EINVAL;
    struct resolver *r = resolver_get(k);
    if (!r)
        return -ENOMEM;
    int ret = known(r, name, wire, &len, &a, &err, &ttl);
    if (ret <= 0)
        return ret;
    if (err)
        return err;
    result_fill(out, &a, ttl);
    return 1;
}

static void waits_free(struct resolv_wait *w)
{
    while (w) {
        struct resolv_wait *next = w->next;
        free(w);
        w = next;
    }
}

/* After the ring: the kernel writes into no receive buffer any more. */
void resolv_free(struct core *k)
{
    struct resolver *r = k->resolv;
    if (!r)
        return;
    for (int i = 0; i < 2; i++)
        if (r->sock[i].fd >= 0)
            close(r->sock[i].fd);
    while (r->sends) {
        struct resolv_send *m = r->sends;
        r->sends = m->next;
        free(m);
    }
    waits_free(r->ready);
    for (int i = 0; i < NAME_BUCKETS; i++) {
        while (r->names[i]) {
            struct resolv_name *e = r->names[i];
            r->names[i] = e->hnext;
            waits_free(e->waiters);
            free(e->q);
            free(e);
        }
    }
    hosts_free(&r->hosts);
    free(r);
    k->resolv = NULL;
}
