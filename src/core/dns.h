/* dns.h - the DNS wire format, as far as a stub resolver needs it: names,
 * one query, and the addresses an answer gives for it (RFC 1035).
 *
 * Pure functions over bytes: no allocation, no I/O, no state. The answer
 * parser is meant for packets from anyone: it never reads past the
 * packet, follows compression pointers only backwards (so a loop cannot
 * be built), and bounds every name, chain and count. */
#ifndef MR_DNS_H
#define MR_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    DNS_TYPE_A = 1,
    DNS_TYPE_CNAME = 5,
    DNS_TYPE_SOA = 6,
    DNS_TYPE_AAAA = 28,
    DNS_CLASS_IN = 1,
};

enum { DNS_RCODE_NOERROR = 0, DNS_RCODE_NXDOMAIN = 3 };

#define DNS_NAME_MAX   255   /* a name in wire form, root label included */
#define DNS_HEADER     12
#define DNS_QUERY_MAX  (DNS_HEADER + DNS_NAME_MAX + 4)
#define DNS_MAX_ADDRS  16    /* addresses kept from one answer */
#define DNS_MAX_CNAME  8     /* CNAME hops followed inside one answer */

/* What an answer says about its question. */
struct dns_answer {
    unsigned rcode;           /* DNS_RCODE_*, or another the server sent */
    bool truncated;           /* TC: the server cut the answer short */
    unsigned n;               /* addresses of the asked type ... */
    uint8_t addr[DNS_MAX_ADDRS][16]; /* ... 4 (A) or 16 (AAAA) bytes each */
    uint32_t ttl;             /* when n: the least TTL of the CNAMEs and
                                 addresses used, seconds */
    bool has_soa;             /* the authority section has a SOA ... */
    uint32_t neg_ttl;         /* ... and this is its negative TTL: the least
                                 of its own TTL and its MINIMUM (RFC 2308) */
};

/* name ("example.com" or "example.com.") in wire form, lowercased, into
 * out (DNS_NAME_MAX bytes). Returns its length, or -EINVAL for a name
 * that is empty, the root alone, has an empty label or one over 63
 * bytes, is too long, or holds a space or a control byte. */
int dns_name_encode(const char *name, uint8_t *out);

/* A query for qname (wire form, qlen bytes) of type qtype, with id and
 * recursion desired, into buf. Returns its length, or -ENOSPC. */
int dns_query_build(uint8_t *buf, size_t cap, uint16_t id,
                    const uint8_t *qname, size_t qlen, uint16_t qtype);

/* The id of a packet, or -1 when it is too short to have one. */
int dns_packet_id(const uint8_t *p, size_t n);

/* Parse p (n bytes) as the answer to the query (id, qname in lowercased
 * wire form, qtype, class IN): the addresses of qtype that qname has,
 * following the CNAME chain the answer holds from qname. A TC answer
 * gives what it holds in full. Returns 0, or -EBADMSG when p is not an
 * answer to that question (a stray or spoofed packet) or is malformed. */
int dns_answer_parse(const uint8_t *p, size_t n, uint16_t id,
                     const uint8_t *qname, size_t qlen, uint16_t qtype,
                     struct dns_answer *out);

#endif
