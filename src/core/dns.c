/* dns.c - DNS names, queries and answers on the wire (RFC 1035). */
#include "dns.h"

#include <errno.h>
#include <string.h>

/* Compression pointers one name may follow; a real name needs at most
 * one per label, and a packet that asks for more is not worth reading. */
#define MAX_JUMPS 64

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint8_t lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c; }

/* RFC 2181 section 8: a TTL with the top bit set is read as 0. */
static uint32_t ttl_of(uint32_t t) { return t > INT32_MAX ? 0 : t; }

static uint32_t min32(uint32_t a, uint32_t b) { return a < b ? a : b; }

int dns_name_encode(const char *name, uint8_t *out)
{
    size_t len = strnlen(name, DNS_NAME_MAX + 1);
    if (len && name[len - 1] == '.')
        len--;                      /* "example.com." is "example.com" */
    if (!len || len > DNS_NAME_MAX - 2 || name[len - 1] == '.')
        return -EINVAL;
    size_t o = 0;
    for (const char *s = name, *end = name + len; s <= end;) {
        const char *dot = memchr(s, '.', (size_t)(end - s));
        if (!dot)
            dot = end;
        size_t l = (size_t)(dot - s);
        if (l == 0 || l > 63)
            return -EINVAL;
        out[o++] = (uint8_t)l;
        for (; s < dot; s++) {
            uint8_t c = (uint8_t)*s;
            if (c <= ' ' || c == 0x7f)
                return -EINVAL;
            out[o++] = lower(c);
        }
        s = dot + 1;
    }
    out[o++] = 0;
    return (int)o;
}

int dns_query_build(uint8_t *buf, size_t cap, uint16_t id,
                    const uint8_t *qname, size_t qlen, uint16_t qtype)
{
    if (cap < DNS_HEADER + qlen + 4)
        return -ENOSPC;
    memset(buf, 0, DNS_HEADER);
    put16(buf, id);
    buf[2] = 0x01;                  /* RD: the server resolves for us */
    put16(buf + 4, 1);              /* one question */
    memcpy(buf + DNS_HEADER, qname, qlen);
    put16(buf + DNS_HEADER + qlen, qtype);
    put16(buf + DNS_HEADER + qlen + 2, DNS_CLASS_IN);
    return (int)(DNS_HEADER + qlen + 4);
}

int dns_packet_id(const uint8_t *p, size_t n)
{
    return n < DNS_HEADER ? -1 : get16(p);
}

/* Read the name at *off: into out (lowercased wire form, DNS_NAME_MAX
 * bytes; NULL to skip it), and move *off past it where it stands. A
 * pointer must go backwards: between two labels the position only
 * falls, and the labels are bounded by the name's length, so every
 * name ends. Returns the name's length, or -1 when malformed. */
static int name_read(const uint8_t *p, size_t n, size_t *off, uint8_t *out)
{
    uint8_t skip[DNS_NAME_MAX];
    size_t pos = *off, len = 0;
    int jumps = 0;
    if (!out)
        out = skip;
    for (;;) {
        if (pos >= n)
            return -1;
        uint8_t c = p[pos];
        if ((c & 0xc0) == 0xc0) {
            if (pos + 1 >= n || ++jumps > MAX_JUMPS)
                return -1;
            size_t to = (size_t)(c & 0x3f) << 8 | p[pos + 1];
            if (to >= pos)
                return -1;
            if (jumps == 1)
                *off = pos + 2;
            pos = to;
            continue;
        }
        if (c & 0xc0)
            return -1;              /* 0x40, 0x80: label types nobody uses */
        if (c == 0) {
            out[len++] = 0;
            if (!jumps)
                *off = pos + 1;
            return (int)len;
        }
        if (len + c + 2 > DNS_NAME_MAX || c > n - pos - 1)
            return -1;
        out[len++] = c;
        for (size_t i = 1; i <= c; i++)
            out[len++] = lower(p[pos + i]);
        pos += 1u + c;
    }
}

struct rr {
    uint16_t type, cls;
    uint32_t ttl;
    size_t rdata, rdlen;
};

/* Read the resource record at *off (its owner into owner, as name_read)
 * and move *off past it. Returns the owner's length, or -1. */
static int rr_read(const uint8_t *p, size_t n, size_t *off, uint8_t *owner,
                   struct rr *rr)
{
    int olen = name_read(p, n, off, owner);
    size_t o = *off;
    if (olen < 0 || n - o < 10)
        return -1;
    rr->type = get16(p + o);
    rr->cls = get16(p + o + 2);
    rr->ttl = ttl_of(get32(p + o + 4));
    rr->rdlen = get16(p + o + 8);
    rr->rdata = o + 10;
    if (n - rr->rdata < rr->rdlen)
        return -1;
    *off = rr->rdata + rr->rdlen;
    return olen;
}

static bool name_eq(const uint8_t *a, int alen, const uint8_t *b, size_t blen)
{
    return alen >= 0 && (size_t)alen == blen && memcmp(a, b, blen) == 0;
}

/* The answers: count records from start, all of them well formed. */
struct section {
    size_t start;
    unsigned count;
};

/* One CNAME hop: if the answers say that cur (clen bytes) is an alias,
 * cur becomes its target. Returns false when it is no alias. */
static bool cname_hop(const uint8_t *p, size_t n, struct section s,
                      uint8_t *cur, size_t *clen, uint32_t *ttl)
{
    uint8_t owner[DNS_NAME_MAX], target[DNS_NAME_MAX];
    size_t off = s.start;
    struct rr rr;
    for (unsigned i = 0; i < s.count; i++) {
        int olen = rr_read(p, n, &off, owner, &rr);
        if (rr.type != DNS_TYPE_CNAME || rr.cls != DNS_CLASS_IN ||
            !name_eq(owner, olen, cur, *clen))
            continue;
        size_t t = rr.rdata;
        int tlen = name_read(p, n, &t, target);
        if (tlen < 0 || t > rr.rdata + rr.rdlen)
            continue;
        memcpy(cur, target, (size_t)tlen);
        *clen = (size_t)tlen;
        *ttl = min32(*ttl, rr.ttl);
        return true;
    }
    return false;
}

/* The addresses of qtype that name has among the answers. */
static void collect(const uint8_t *p, size_t n, struct section s,
                    const uint8_t *name, size_t nlen, uint16_t qtype,
                    uint32_t ttl, struct dns_answer *out)
{
    size_t alen = qtype == DNS_TYPE_A ? 4 : qtype == DNS_TYPE_AAAA ? 16 : 0;
    uint8_t owner[DNS_NAME_MAX];
    size_t off = s.start;
    struct rr rr;
    for (unsigned i = 0; i < s.count && out->n < DNS_MAX_ADDRS; i++) {
        int olen = rr_read(p, n, &off, owner, &rr);
        if (rr.type != qtype || rr.cls != DNS_CLASS_IN || rr.rdlen != alen ||
            !alen || !name_eq(owner, olen, name, nlen))
            continue;
        memcpy(out->addr[out->n++], p + rr.rdata, alen);
        ttl = min32(ttl, rr.ttl);
    }
    if (out->n)
        out->ttl = ttl;
}

/* The negative TTL of the first SOA in the authority section at off;
 * a malformed section gives none (it only shortens a negative cache). */
static void soa_find(const uint8_t *p, size_t n, size_t off, unsigned count,
                     struct dns_answer *out)
{
    struct rr rr;
    for (unsigned i = 0; i < count; i++) {
        if (rr_read(p, n, &off, NULL, &rr) < 0)
            return;
        if (rr.type != DNS_TYPE_SOA || rr.cls != DNS_CLASS_IN)
            continue;
        size_t t = rr.rdata, end = rr.rdata + rr.rdlen;
        if (name_read(p, n, &t, NULL) < 0 || name_read(p, n, &t, NULL) < 0 ||
            t > end || end - t < 20)
            return;
        out->neg_ttl = min32(rr.ttl, ttl_of(get32(p + t + 16))); /* MINIMUM */
        out->has_soa = true;
        return;
    }
}

/* The header and the question: this is an answer to our query. Sets
 * *off past the question. */
static bool is_answer_to(const uint8_t *p, size_t n, uint16_t id,
                         const uint8_t *qname, size_t qlen, uint16_t qtype,
                         size_t *off)
{
    uint8_t name[DNS_NAME_MAX];
    if (n < DNS_HEADER || get16(p) != id || !(p[2] & 0x80) /* QR */ ||
        (p[2] >> 3 & 0x0f) /* opcode */ || get16(p + 4) != 1)
        return false;
    *off = DNS_HEADER;
    int len = name_read(p, n, off, name);
    if (!name_eq(name, len, qname, qlen) || n - *off < 4 ||
        get16(p + *off) != qtype || get16(p + *off + 2) != DNS_CLASS_IN)
        return false;
    *off += 4;
    return true;
}

int dns_answer_parse(const uint8_t *p, size_t n, uint16_t id,
                     const uint8_t *qname, size_t qlen, uint16_t qtype,
                     struct dns_answer *out)
{
    size_t off;
    memset(out, 0, sizeof *out);
    if (qlen > DNS_NAME_MAX || !is_answer_to(p, n, id, qname, qlen, qtype, &off))
        return -EBADMSG;
    out->rcode = p[3] & 0x0f;
    out->truncated = p[2] & 0x02;

    /* Check the answers once, so that the passes below can rely on them.
     * A truncated answer keeps the records it holds whole. */
    struct section an = { .start = off };
    unsigned ancount = get16(p + 6);
    struct rr rr;
    while (an.count < ancount && rr_read(p, n, &off, NULL, &rr) >= 0)
        an.count++;
    if (an.count < ancount && !out->truncated)
        return -EBADMSG;

    uint8_t cur[DNS_NAME_MAX];
    size_t clen = qlen;
    uint32_t ttl = UINT32_MAX;
    memcpy(cur, qname, qlen);
    for (int hop = 0; hop < DNS_MAX_CNAME && cname_hop(p, n, an, cur, &clen, &ttl); hop++)
        ;
    collect(p, n, an, cur, clen, qtype, ttl, out);
    if (an.count == ancount)
        soa_find(p, n, off, get16(p + 8), out);
    return 0;
}
