/* fuzz_resolv.c - DNS answer parsing: any packet, however truncated,
 * looping or lying, is parsed without reading past it, and what it
 * gives is within bounds. The first byte picks the question's type; the
 * question is example.com, and the id is the packet's own, so that the
 * parser gets past the header. */
#include "dns.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    static const uint8_t qname[] = "\7example\3com";
    if (n < 1)
        return 0;
    uint16_t qtype = d[0] & 1 ? DNS_TYPE_AAAA : DNS_TYPE_A;
    d++;
    n--;
    /* a copy of the exact size, so that ASan sees any read past the end */
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, d, n);
    int id = dns_packet_id(copy, n);
    struct dns_answer a;
    int ret = dns_answer_parse(copy, n, (uint16_t)(id < 0 ? 0 : id), qname,
                               sizeof qname, qtype, &a);
    if (ret == 0 && (a.n > DNS_MAX_ADDRS || a.rcode > 15 || (a.n && a.ttl > INT32_MAX) ||
                     (a.has_soa && a.neg_ttl > INT32_MAX)))
        abort();
    if (ret != 0 && ret != -EBADMSG)
        abort();
    free(copy);
    return 0;
}
