/* test_resolv.c - the resolver through the real ring, against DNS
 * servers of the test's own on 127.0.0.1: UDP sockets the test polls
 * after each turn of the core, which answer from a small zone, fail,
 * stay silent, or send garbage first. resolv.conf and the hosts file are
 * temporary files named by MOONRING_RESOLV_CONF and MOONRING_HOSTS, and
 * name their servers with ports (nameserver 127.0.0.1:PORT). */
#include "core.h"
#include "fds.h"
#include "dns.h"
#include "resolv.h"
#include "resolv_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#define TICK_KEY  0xfffffffful
#define TURN_MS   5
#define WAIT_MS   5000
#define MAXQ      256              /* queries a server holds in one poll */

enum server_mode { SERVE, QUIET, SERVFAIL };

struct server {
    int fd, port;
    enum server_mode mode;
    int packets;                   /* queries received */
    int nq;
    uint8_t q[MAXQ][512];
    size_t qlen[MAXQ];
    struct sockaddr_in from[MAXQ];
};

struct t {
    struct core k;
    char dir[64], conf[96], hosts[96];
    struct server ok, quiet, fail;
    int spoof;                     /* sends from a port no server has */
};

static int fds_before;

/* ---- the zone ---- */

struct rec {
    const char *name;
    uint16_t type;
    const char *data;              /* an address, or a CNAME's target */
    uint32_t ttl;
};

static const struct rec zone[] = {
    { "dual.test",   DNS_TYPE_A,     "192.0.2.1",    300 },
    { "dual.test",   DNS_TYPE_A,     "192.0.2.2",    200 },
    { "dual.test",   DNS_TYPE_AAAA,  "2001:db8::1",  100 },
    { "alias.test",  DNS_TYPE_CNAME, "mid.test",      50 },
    { "mid.test",    DNS_TYPE_CNAME, "real.test",     40 },
    { "real.test",   DNS_TYPE_A,     "198.51.100.7", 300 },
    { "loopa.test",  DNS_TYPE_CNAME, "loopb.test",    60 },
    { "loopb.test",  DNS_TYPE_CNAME, "loopa.test",    60 },
    { "short.test",  DNS_TYPE_A,     "192.0.2.9",      1 },
    { "myhost",      DNS_TYPE_A,     "203.0.113.1",  300 },
    { "junk.test",   DNS_TYPE_A,     "192.0.2.66",   300 },
    { "tcpart.test", DNS_TYPE_A,     "192.0.2.70",   300 },
    { "tcpart.test", DNS_TYPE_A,     "192.0.2.71",   300 },
    { "nodata.test", 16 /* TXT */,   "",             300 },
};
#define NZONE (sizeof zone / sizeof zone[0])

struct pkt {
    uint8_t b[2048];
    size_t n;
};

static void put8(struct pkt *p, unsigned v) { p->b[p->n++] = (uint8_t)v; }
static void put16(struct pkt *p, unsigned v) { put8(p, v >> 8); put8(p, v); }
static void put32(struct pkt *p, uint32_t v) { put16(p, v >> 16); put16(p, v & 0xffff); }

static void put_name(struct pkt *p, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        put8(p, (unsigned)l);
        memcpy(p->b + p->n, name, l);
        p->n += l;
        name += l + (dot != NULL);
    }
    put8(p, 0);
}

/* The question's name as text, and the offset past the question. */
static size_t question(const uint8_t *q, size_t n, char *name, uint16_t *type)
{
    size_t off = 12, o = 0;
    while (off < n && q[off]) {
        if (o)
            name[o++] = '.';
        memcpy(name + o, q + off + 1, q[off]);
        o += q[off];
        off += 1u + q[off];
    }
    name[o] = 0;
    *type = (uint16_t)(q[off + 1] << 8 | q[off + 2]);
    return off + 5;
}

/* The header and question of an answer to q, no records yet. */
static void answer_start(struct pkt *p, const uint8_t *q, size_t qend, unsigned rcode)
{
    p->n = 0;
    memcpy(p->b, q, qend);
    p->n = qend;
    p->b[2] = 0x81;                /* QR, RD */
    p->b[3] = (uint8_t)(0x80 | rcode); /* RA */
    memset(p->b + 6, 0, 6);
}

static void set_count(struct pkt *p, int at, unsigned n)
{
    p->b[at] = (uint8_t)(n >> 8);
    p->b[at + 1] = (uint8_t)n;
}

/* A record: the owner by a pointer to the question when it is the
 * question's name, else in full. */
static void put_rr(struct pkt *p, const char *owner, const char *qname,
                   uint16_t type, uint32_t ttl, const char *data)
{
    if (!strcmp(owner, qname))
        put16(p, 0xc00c);
    else
        put_name(p, owner);
    put16(p, type);
    put16(p, DNS_CLASS_IN);
    put32(p, ttl);
    if (type == DNS_TYPE_CNAME) {
        size_t at = p->n;
        put16(p, 0);
        put_name(p, data);
        set_count(p, (int)at, (unsigned)(p->n - at - 2));
    } else {
        uint8_t a[16];
        int fam = type == DNS_TYPE_A ? AF_INET : AF_INET6;
        size_t len = type == DNS_TYPE_A ? 4 : type == DNS_TYPE_AAAA ? 16 : 1;
        if (len > 1)
            assert_int_equal(inet_pton(fam, data, a), 1);
        else
            a[0] = 0;
        put16(p, (unsigned)len);
        memcpy(p->b + p->n, a, len);
        p->n += len;
    }
}

static bool name_exists(const char *name)
{
    for (size_t i = 0; i < NZONE; i++)
        if (!strcmp(zone[i].name, name))
            return true;
    return !strcmp(name, "many.test") || strstr(name, ".bulk.test") != NULL;
}

/* Records of a name that has them in code, not in the zone. */
static unsigned generated(struct pkt *p, const char *name, const char *qname,
                          uint16_t type)
{
    char a[32];
    unsigned n = 0;
    if (type != DNS_TYPE_A)
        return 0;
    if (!strcmp(name, "many.test")) {
        for (n = 0; n < 20; n++) {
            snprintf(a, sizeof a, "10.9.0.%u", n);
            put_rr(p, name, qname, DNS_TYPE_A, 300, a);
        }
    } else if (strstr(name, ".bulk.test")) {
        int i = atoi(name + 1);
        snprintf(a, sizeof a, "10.8.%d.%d", i >> 8, i & 255);
        put_rr(p, name, qname, DNS_TYPE_A, 300, a);
        n = 1;
    }
    return n;
}

/* The answer the zone gives: the CNAME chain from the question's name
 * (at most 10 hops), then the records of the asked type. */
static void answer(struct pkt *p, const uint8_t *q, size_t qlen)
{
    char qname[256], cur[256];
    uint16_t type;
    size_t qend = question(q, qlen, qname, &type);
    unsigned an = 0;
    answer_start(p, q, qend, name_exists(qname) ? 0 : DNS_RCODE_NXDOMAIN);
    strcpy(cur, qname);
    for (int hop = 0, found = 1; found && hop < 10; hop++) {
        found = 0;
        for (size_t i = 0; i < NZONE && !found; i++) {
            if (zone[i].type == DNS_TYPE_CNAME && !strcmp(zone[i].name, cur)) {
                put_rr(p, cur, qname, DNS_TYPE_CNAME, zone[i].ttl, zone[i].data);
                strcpy(cur, zone[i].data);
                an++;
                found = 1;
            }
        }
    }
    for (size_t i = 0; i < NZONE; i++) {
        if (zone[i].type == type && !strcmp(zone[i].name, cur)) {
            put_rr(p, cur, qname, type, zone[i].ttl, zone[i].data);
            an++;
        }
    }
    an += generated(p, cur, qname, type);
    set_count(p, 6, an);
    if (!strcmp(qname, "nodata.test")) {   /* a SOA: its negative TTL */
        size_t at;
        put16(p, 0xc00c + 5);              /* "test", inside the question */
        put16(p, DNS_TYPE_SOA);
        put16(p, DNS_CLASS_IN);
        put32(p, 3600);
        at = p->n;
        put16(p, 0);
        put_name(p, "ns.test");
        put_name(p, "admin.test");
        for (int i = 0; i < 4; i++)
            put32(p, 1000);
        put32(p, 30);                      /* MINIMUM */
        set_count(p, (int)at, (unsigned)(p->n - at - 2));
        set_count(p, 8, 1);
    }
}

static void send_pkt(int fd, const struct sockaddr_in *to, const void *b, size_t n)
{
    assert_int_equal(sendto(fd, b, n, 0, (const struct sockaddr *)to, sizeof *to),
                     (ssize_t)n);
}

/* Garbage with the query's id, from the server, before the answer. */
static void send_junk(struct t *t, const uint8_t *q, size_t qlen,
                      const struct sockaddr_in *to)
{
    struct pkt p;
    int fd = t->ok.fd;
    char qname[256];
    uint16_t type;
    size_t qend = question(q, qlen, qname, &type);

    send_pkt(fd, to, q, 3);                          /* shorter than a header */
    answer_start(&p, q, 12, 0);                      /* no question */
    send_pkt(fd, to, p.b, p.n);
    answer_start(&p, q, qend, 0);                    /* a record past the end */
    set_count(&p, 6, 1);
    put16(&p, 0xc00c);
    put16(&p, type);
    put16(&p, DNS_CLASS_IN);
    put32(&p, 60);
    put16(&p, 200);
    put32(&p, 0x01020304);
    send_pkt(fd, to, p.b, p.n);
    answer_start(&p, q, qend, 0);                    /* a name pointing at itself */
    set_count(&p, 6, 1);
    put16(&p, 0xc000 | (unsigned)p.n);
    send_pkt(fd, to, p.b, p.n);
    answer_start(&p, q, qend, 0);                    /* an extended label type */
    p.b[12] = 0x41;
    send_pkt(fd, to, p.b, p.n);
    answer_start(&p, q, qend, 0);                    /* not a response */
    p.b[2] = 0x01;
    send_pkt(fd, to, p.b, p.n);
    answer(&p, q, qlen);                             /* another question's type */
    p.b[qend - 3] ^= 0x1c;
    send_pkt(fd, to, p.b, p.n);
    answer(&p, q, qlen);                             /* another id */
    p.b[1] ^= 0x5a;
    send_pkt(fd, to, p.b, p.n);
    if (type == DNS_TYPE_A) {                        /* a spoof, from elsewhere */
        answer_start(&p, q, qend, 0);
        put_rr(&p, qname, qname, DNS_TYPE_A, 300, "192.0.2.99");
        set_count(&p, 6, 1);
        send_pkt(t->spoof, to, p.b, p.n);
    }
}

static void serve_one(struct t *t, struct server *s, const uint8_t *q, size_t n,
                      const struct sockaddr_in *from)
{
    struct pkt p;
    char qname[256];
    uint16_t type;
    size_t qend = question(q, n, qname, &type);
    if (s->mode == SERVFAIL) {
        answer_start(&p, q, qend, 2);
    } else if (!strcmp(qname, "tc.test")) {
        answer_start(&p, q, qend, 0);
        p.b[2] |= 0x02;
    } else {
        if (!strcmp(qname, "junk.test"))
            send_junk(t, q, n, from);
        answer(&p, q, n);
        if (!strcmp(qname, "tcpart.test")) {
            p.b[2] |= 0x02;                /* cut inside the last record */
            if (type == DNS_TYPE_A)
                p.n -= 3;
        }
    }
    send_pkt(s->fd, from, p.b, p.n);
}

/* Read every query waiting, then answer them last first, so that the
 * AAAA answer usually comes before the A one. */
static void server_poll(struct t *t, struct server *s)
{
    socklen_t fl = sizeof s->from[0];
    ssize_t n;
    s->nq = 0;
    while (s->nq < MAXQ &&
           (n = recvfrom(s->fd, s->q[s->nq], sizeof s->q[0], MSG_DONTWAIT,
                         (struct sockaddr *)&s->from[s->nq], &fl)) > 0) {
        s->packets++;
        s->qlen[s->nq++] = (size_t)n;
        fl = sizeof s->from[0];
    }
    if (s->mode == QUIET)
        return;
    while (s->nq-- > 0)
        serve_one(t, s, s->q[s->nq], s->qlen[s->nq], &s->from[s->nq]);
}

static void server_open(struct server *s, enum server_mode mode)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof sa;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->mode = mode;
    s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(s->fd >= 0);
    assert_int_equal(bind(s->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sa, &len), 0);
    s->port = ntohs(sa.sin_port);
}

/* ---- the test's turns ---- */

static void one_turn(struct t *t)
{
    core_timer_add(&t->k, timer_now() + TURN_MS * 1000000ull, TICK_KEY);
    assert_int_equal(core_wait(&t->k), 0);
    core_run(&t->k);
    server_poll(t, &t->ok);
    server_poll(t, &t->quiet);
    server_poll(t, &t->fail);
}

static void turn_until(struct t *t, const int *flag, int want, int ms)
{
    uint64_t end = timer_now() + (uint64_t)ms * 1000000;
    while ((!flag || *flag < want) && timer_now() < end)
        one_turn(t);
    if (flag && *flag < want)
        fail_msg("waited %d ms for %d answers, got %d", ms, want, *flag);
}

static void write_file(const char *path, const char *fmt, ...)
{
    FILE *f = fopen(path, "w");
    va_list ap;
    assert_non_null(f);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
}

/* resolv.conf with the given servers (ports), timeout:1 attempts:1. */
static void servers(struct t *t, const struct server *a, const struct server *b)
{
    char line[64] = "";
    if (b)
        snprintf(line, sizeof line, "nameserver 127.0.0.1:%d\n", b->port);
    write_file(t->conf, "# test\nsearch example.org\nnameserver 127.0.0.1:%d\n%s"
               "options ndots:2 timeout:1 attempts:1\n", a->port, line);
}

static int setup(void **state)
{
    struct core_config cfg = { .max_conns = 16, .buffers = 16, .buffer_size = 2048 };
    fds_before = count_fds();
    struct t *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    strcpy(t->dir, "/tmp/test_resolv.XXXXXX");
    if (!mkdtemp(t->dir) || core_init(&t->k, &cfg)) {
        core_destroy(&t->k);
        free(t);
        return -1;
    }
    snprintf(t->conf, sizeof t->conf, "%s/resolv.conf", t->dir);
    snprintf(t->hosts, sizeof t->hosts, "%s/hosts", t->dir);
    server_open(&t->ok, SERVE);
    server_open(&t->quiet, QUIET);
    server_open(&t->fail, SERVFAIL);
    t->spoof = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    servers(t, &t->ok, NULL);
    write_file(t->hosts, "# none\n");
    setenv("MOONRING_RESOLV_CONF", t->conf, 1);
    setenv("MOONRING_HOSTS", t->hosts, 1);
    *state = t;
    return 0;
}

/* Everything is freed (ASan tells), every fd closed, even with lookups
 * still waiting for an answer. */
static int teardown(void **state)
{
    struct t *t = *state;
    core_finish(&t->k);
    core_destroy(&t->k);
    close(t->ok.fd);
    close(t->quiet.fd);
    close(t->fail.fd);
    close(t->spoof);
    unlink(t->conf);
    unlink(t->hosts);
    rmdir(t->dir);
    free(t);
    int fds = count_fds();
    if (fds != fds_before) {
        print_error("%d fds before the test, %d after\n", fds_before, fds);
        return -1;
    }
    return 0;
}

/* ---- lookups ---- */

struct got {
    int calls, err;
    struct resolv_result r;
};

static int in_resolve;             /* fn must never run inside core_resolve */

static void got_fn(struct core *k, void *ctx, int err, const struct resolv_result *r)
{
    struct got *g = ctx;
    (void)k;
    assert_false(in_resolve);
    g->calls++;
    g->err = err;
    if (err)
        assert_null(r);
    else
        g->r = *r;
}

static int resolve(struct t *t, const char *name, resolv_fn fn, void *ctx)
{
    in_resolve = 1;
    int ret = core_resolve(&t->k, name, fn, ctx);
    in_resolve = 0;
    return ret;
}

/* Look name up and wait for the answer, which comes after the call. */
static void lookup(struct t *t, const char *name, struct got *g)
{
    memset(g, 0, sizeof *g);
    assert_int_equal(resolve(t, name, got_fn, g), 0);
    assert_int_equal(g->calls, 0);
    turn_until(t, &g->calls, 1, WAIT_MS);
    assert_int_equal(g->calls, 1);
}

static void assert_addr(const struct resolv_result *r, int i, const char *text)
{
    char buf[INET6_ADDRSTRLEN];
    const struct sockaddr_storage *ss = &r->addr[i];
    assert_true(i < r->count);
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const void *)ss;
        assert_int_equal(r->len[i], sizeof *v4);
        assert_int_equal(v4->sin_port, 0);
        inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    } else {
        const struct sockaddr_in6 *v6 = (const void *)ss;
        assert_int_equal(ss->ss_family, AF_INET6);
        assert_int_equal(r->len[i], sizeof *v6);
        assert_int_equal(v6->sin6_port, 0);
        inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    }
    assert_string_equal(buf, text);
}

static double since(uint64_t t0) { return (double)(timer_now() - t0) / 1e9; }

/* A and AAAA both asked at once; IPv4 first, in answer order, though
 * the AAAA answer came first; the TTL is the least. */
static void test_a_and_aaaa(void **state)
{
    struct t *t = *state;
    struct got g;
    lookup(t, "dual.test", &g);
    assert_int_equal(g.err, 0);
    assert_int_equal(g.r.count, 3);
    assert_addr(&g.r, 0, "192.0.2.1");
    assert_addr(&g.r, 1, "192.0.2.2");
    assert_addr(&g.r, 2, "2001:db8::1");
    assert_int_equal(g.r.ttl, 100);
    assert_int_equal(t->ok.packets, 2);
}

/* NXDOMAIN, cached: the second lookup sends nothing. */
static void test_nxdomain(void **state)
{
    struct t *t = *state;
    struct got g;
    lookup(t, "nx.test", &g);
    assert_int_equal(g.err, -ENOENT);
    assert_string_equal(resolv_strerror(g.err), "no such name");
    lookup(t, "NX.test.", &g);
    assert_int_equal(g.err, -ENOENT);
    assert_int_equal(t->ok.packets, 2);
}

/* A name with no address: both answers empty, with a SOA. */
static void test_nodata(void **state)
{
    struct t *t = *state;
    struct got g;
    lookup(t, "nodata.test", &g);
    assert_int_equal(g.err, -ENODATA);
    assert_int_equal(g.r.count, 0);
    lookup(t, "nodata.test", &g);              /* cached for 30 s */
    assert_int_equal(g.err, -ENODATA);
    assert_int_equal(t->ok.packets, 2);
}

static void test_timeout(void **state)
{
    struct t *t = *state;
    struct got g;
    servers(t, &t->quiet, NULL);
    uint64_t t0 = timer_now();
    lookup(t, "dual.test", &g);
    assert_int_equal(g.err, -ETIMEDOUT);
    assert_string_equal(resolv_strerror(g.err), "resolver timed out");
    assert_true(since(t0) >= 0.95 && since(t0) < 2.5);
    assert_int_equal(t->quiet.packets, 2);
    memset(&g, 0, sizeof g);                   /* a timeout is not cached */
    assert_int_equal(resolve(t, "dual.test", got_fn, &g), 0);
    turn_until(t, &t->quiet.packets, 4, WAIT_MS);
}

/* The first server never answers: the second does, after the timeout. */
static void test_second_server(void **state)
{
    struct t *t = *state;
    struct got g;
    servers(t, &t->quiet, &t->ok);
    uint64_t t0 = timer_now();
    lookup(t, "dual.test", &g);
    assert_int_equal(g.err, 0);
    assert_int_equal(g.r.count, 3);
    assert_true(since(t0) >= 0.95 && since(t0) < 2.5);
    assert_int_equal(t->quiet.packets, 2);
    assert_int_equal(t->ok.packets, 2);
}

/* SERVFAIL moves on to the next server at once; from the only one, it
 * is the lookup's error. */
static void test_servfail(void **state)
{
    struct t *t = *state;
    struct got g;
    servers(t, &t->fail, &t->ok);
    uint64_t t0 = timer_now();
    lookup(t, "dual.test", &g);
    assert_int_equal(g.err, 0);
    assert_true(since(t0) < 0.5);
    assert_int_equal(t->fail.packets, 2);
    lookup(t, "nowhere.test", &g);
    assert_int_equal(g.err, -ENOENT);
}

static void test_servfail_only(void **state)
{
    struct t *t = *state;
    struct got g;
    servers(t, &t->fail, NULL);
    lookup(t, "dual.test", &g);
    assert_int_equal(g.err, -EIO);
    assert_string_equal(resolv_strerror(g.err), "nameserver failure");
}

/* A cached answer sends nothing and still comes later; a TTL of 1 s
 * expires. */
static void test_cache(void **state)
{
    struct t *t = *state;
    struct got g;
    lookup(t, "dual.test", &g);
    lookup(t, "Dual.Test.", &g);
    assert_int_equal(g.err, 0);
    assert_int_equal(g.r.count, 3);
    assert_addr(&g.r, 0, "192.0.2.1");
    assert_true(g.r.ttl >= 99 && g.r.ttl <= 100);
    assert_int_equal(t->ok.packets, 2);

    lookup(t, "short.test", &g);
    assert_int_equal(g.r.ttl, 1);
    assert_int_equal(g.r.count, 1);
    lookup(t, "short.test", &g);
    assert_int_equal(t->ok.packets, 4);
    turn_until(t, NULL, 0, 1100);
    lookup(t, "short.test", &g);
    assert_int_equal(g.err, 0);
    assert_addr(&g.r, 0, "192.0.2.9");
    assert_int_equal(t->ok.packets, 6);
}

/* The hosts file beats DNS: names, aliases, both families, any case. */
static void test_hosts(void **state)
{
    struct t *t = *state;
    struct got g;
    write_file(t->hosts, "127.0.0.1 localhost\n"
               "# 10.0.0.9 myhost\n"
               "10.0.0.5\tmyhost myalias   # the test's\n"
               "fd00::5 myhost\n"
               "bogus-address myhost\n"
               "10.0.0.6 MyHost\n");
    lookup(t, "MyHost.", &g);
    assert_int_equal(g.err, 0);
    assert_int_equal(g.r.count, 3);
    assert_addr(&g.r, 0, "10.0.0.5");
    assert_addr(&g.r, 1, "10.0.0.6");
    assert_addr(&g.r, 2, "fd00::5");
    assert_int_equal(g.r.ttl, 0);
    lookup(t, "myalias", &g);
    assert_int_equal(g.r.count, 1);
    assert_addr(&g.r, 0, "10.0.0.5");
    lookup(t, "localhost", &g);                /* the file's, not the built-in */
    assert_int_equal(g.r.count, 1);
    assert_int_equal(t->ok.packets, 0);
}

/* Numbers and localhost need no query, and still answer later. */
static void test_no_query(void **state)
{
    struct t *t = *state;
    struct got g;
    lookup(t, "192.0.2.77", &g);
    assert_int_equal(g.r.count, 1);
    assert_addr(&g.r, 0, "192.0.2.77");
    lookup(t, "2001:db8::77", &g);
    assert_int_equal(g.r.count, 1);
    assert_addr(&g.r, 0, "2001:db8::77");
    lookup(t, "fe80::1%1", &g);
    assert_int_equal(((struct sockaddr_in6 *)&g.r.addr[0])->sin6_scope_id, 1);
    lookup(t, "localhost", &g);
    assert_int_equal(g.r.count, 2);
    assert_addr(&g.r, 0, "127.0.0.1");
    assert_addr(&g.r, 1, "::1");
    lookup(t, "app.LOCALHOST.", &g);
    assert_int_equal(g.r.count, 2);
    assert_int_equal(t->ok.packets, 0);
}

/* Lookups of one name share its queries. */
static void test_shared(void **state)
{
    struct t *t = *state;
    struct got g[3] = { 0 };
    for (int i = 0; i < 3; i++)
        assert_int_equal(resolve(t, i == 1 ? "DUAL.test" : "dual.test", got_fn, &g[i]), 0);
    turn_until(t, &g[2].calls, 1, WAIT_MS);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].err, 0);
        assert_int_equal(g[i].r.count, 3);
    }
    assert_int_equal(t->ok.packets, 2);
}

/* A CNAME chain inside the answer; a CNAME loop ends, with no address. */
static void test_cname(void **state)
{
    struct t *t = *state;
    struct got g;
    lookup(t, "alias.test", &g);
    assert_int_equal(g.err, 0);
    assert_int_equal(g.r.count, 1);
    assert_addr(&g.r, 0, "198.51.100.7");
    assert_int_equal(g.r.ttl, 40);
    lookup(t, "loopa.test", &g);
    assert_int_equal(g.err, -ENODATA);
}

/* Malformed and stray packets before the answer are ignored, and so is
 * an answer from a port that is no server's. */
static void test_malformed(void **state)
{
    struct t *t = *state;
    struct got g;
    lookup(t, "junk.test", &g);
    assert_int_equal(g.err, 0);
    assert_int_equal(g.r.count, 1);
    assert_addr(&g.r, 0, "192.0.2.66");
}

/* TC: the records the answer holds in full; none is an error. */
static void test_truncated(void **state)
{
    struct t *t = *state;
    struct got g;
    lookup(t, "tc.test", &g);
    assert_int_equal(g.err, -EMSGSIZE);
    assert_string_equal(resolv_strerror(g.err), "answer truncated");
    lookup(t, "tcpart.test", &g);
    assert_int_equal(g.err, 0);
    assert_int_equal(g.r.count, 1);
    assert_addr(&g.r, 0, "192.0.2.70");
    lookup(t, "tcpart.test", &g);              /* half failed: not cached */
    assert_int_equal(t->ok.packets, 6);
}

static void test_many(void **state)
{
    struct t *t = *state;
    struct got g;
    lookup(t, "many.test", &g);
    assert_int_equal(g.r.count, RESOLV_MAX_ADDRS);
    assert_addr(&g.r, 15, "10.9.0.15");
}

static void test_invalid(void **state)
{
    struct t *t = *state;
    struct got g = { 0 };
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    static const char *bad[] = { "", ".", "a..b", ".a", "a b", "a\tb", "x\x7f" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(resolve(t, bad[i], got_fn, &g), -EINVAL);
    assert_int_equal(resolve(t, longname, got_fn, &g), -EINVAL);
    memset(longname, 'a', 64);
    strcpy(longname + 64, ".test");
    assert_int_equal(resolve(t, longname, got_fn, &g), -EINVAL);
    assert_int_equal(resolve(t, NULL, got_fn, &g), -EINVAL);
    turn_until(t, NULL, 0, 20);
    assert_int_equal(g.calls, 0);
    assert_int_equal(t->ok.packets, 0);
}

/* Lookups under way when the core goes: dropped, nothing leaks. */
static void test_destroy_pending(void **state)
{
    struct t *t = *state;
    struct got g = { 0 }, h = { 0 };
    servers(t, &t->quiet, NULL);
    assert_int_equal(resolve(t, "dual.test", got_fn, &g), 0);
    assert_int_equal(resolve(t, "192.0.2.1", got_fn, &h), 0);
    turn_until(t, &h.calls, 1, WAIT_MS);
    assert_int_equal(resolve(t, "10.0.0.1", got_fn, &h), 0); /* on the ready list */
    assert_int_equal(t->quiet.packets, 2);
    assert_int_equal(g.calls, 0);
}

static void count_fn(struct core *k, void *ctx, int err, const struct resolv_result *r)
{
    (void)k, (void)r;
    assert_int_equal(err, 0);
    (*(int *)ctx)++;
}

/* At most 1024 names are kept, the oldest out first. */
static void test_cache_bound(void **state)
{
    struct t *t = *state;
    enum { NAMES = 1100, BATCH = 50 };
    char name[64];
    int done = 0;
    for (int i = 0; i < NAMES; i += BATCH) {
        for (int j = i; j < i + BATCH; j++) {
            snprintf(name, sizeof name, "n%d.bulk.test", j);
            assert_int_equal(resolve(t, name, count_fn, &done), 0);
        }
        turn_until(t, &done, i + BATCH, WAIT_MS);
    }
    struct got g;
    int sent = t->ok.packets;
    lookup(t, "n1099.bulk.test", &g);
    assert_addr(&g.r, 0, "10.8.4.75");
    assert_int_equal(t->ok.packets, sent);
    lookup(t, "n0.bulk.test", &g);
    assert_addr(&g.r, 0, "10.8.0.0");
    assert_int_equal(t->ok.packets, sent + 2);
}

/* ---- the parts, without the ring ---- */

static void test_conf_parse(void **state)
{
    (void)state;
    struct resolv_conf c;
    static const char text[] =
        "; comment\n"
        "domain example.org\n"
        "nameserver 10.0.0.1\n"
        "nameserver   [::1]:5353  \r\n"
        "nameserver 300.1.1.1\n"
        "nameserver 192.0.2.53:5300\n"
        "nameserver 192.0.2.54\n"
        "options rotate timeout:3 attempts:9\n"
        "options timeout:x\n";
    resolv_conf_parse(&c, text, sizeof text - 1);
    assert_int_equal(c.nns, 3);
    const struct sockaddr_in *a = (const void *)&c.ns[0], *d = (const void *)&c.ns[2];
    const struct sockaddr_in6 *b = (const void *)&c.ns[1];
    assert_int_equal(a->sin_family, AF_INET);
    assert_int_equal(ntohs(a->sin_port), 53);
    assert_int_equal(ntohl(a->sin_addr.s_addr), 0x0a000001);
    assert_int_equal(b->sin6_family, AF_INET6);
    assert_int_equal(ntohs(b->sin6_port), 5353);
    assert_int_equal(c.nslen[1], sizeof *b);
    assert_int_equal(ntohs(d->sin_port), 5300);
    assert_int_equal(c.timeout_s, 3);
    assert_int_equal(c.attempts, 5);

    resolv_conf_parse(&c, "", 0);              /* the defaults */
    assert_int_equal(c.nns, 1);
    assert_int_equal(ntohl(a->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(a->sin_port), 53);
    assert_int_equal(c.timeout_s, 5);
    assert_int_equal(c.attempts, 2);
    static const char bad[] = "nameserver 1.2.3.4:0\nnameserver [::1\nnameserver\n";
    resolv_conf_parse(&c, bad, sizeof bad - 1);
    assert_int_equal(c.nns, 1);                /* none taken: the default */
}

static void test_name_encode(void **state)
{
    (void)state;
    uint8_t w[DNS_NAME_MAX];
    assert_int_equal(dns_name_encode("Www.Example.COM.", w), 17);
    assert_memory_equal(w, "\3www\7example\3com", 17);
    char name[300];
    memset(name, 'a', 253);                    /* labels of 63 and a dot */
    for (int i = 63; i < 253; i += 64)
        name[i] = '.';
    name[253] = 0;
    assert_int_equal(dns_name_encode(name, w), 255);
    name[253] = '.';
    name[254] = 0;
    assert_int_equal(dns_name_encode(name, w), 255);
    name[253] = 'a';
    assert_int_equal(dns_name_encode(name, w), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_parse),
        cmocka_unit_test(test_name_encode),
        cmocka_unit_test_setup_teardown(test_a_and_aaaa, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nxdomain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nodata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_servfail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_servfail_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hosts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cname, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_bound, setup, teardown),
    };
    return cmocka_run_group_tests_name("resolv", tests, NULL, NULL);
}
