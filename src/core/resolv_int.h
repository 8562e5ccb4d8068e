/* resolv_int.h - what resolv.c and resolv_conf.c share: the resolver's
 * configuration, the hosts file, and addresses in their compact form. */
#ifndef MR_RESOLV_INT_H
#define MR_RESOLV_INT_H

#include "resolv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A lookup's addresses as they are kept (in the cache, in an answer
 * waiting to be given): 4 or 16 bytes each, the IPv4 ones first. */
struct resolv_addrs {
    uint8_t n, n4;                     /* addresses; the first n4 are IPv4 */
    uint32_t scope;                    /* of the IPv6 ones (a %scope literal) */
    uint8_t a[RESOLV_MAX_ADDRS][16];
};

/* Add an address of family (AF_INET or AF_INET6) after the others of
 * its family; when full, an IPv4 one takes the last IPv6 one's place. */
void resolv_addrs_add(struct resolv_addrs *a, int family, const void *addr);

/* A numeric address ("192.0.2.1", "2001:db8::1", "fe80::1%eth0") into
 * out; false if s is not one. */
bool resolv_literal(const char *s, struct resolv_addrs *out);

#define RESOLV_MAXNS 3

struct resolv_conf {
    struct sockaddr_storage ns[RESOLV_MAXNS];
    socklen_t nslen[RESOLV_MAXNS];
    unsigned nns;
    unsigned timeout_s;                /* a try's wait */
    unsigned attempts;                 /* rounds through the servers */
};

/* resolv.conf's text (n bytes, any content) into c, which it fills
 * with the defaults first. */
void resolv_conf_parse(struct resolv_conf *c, const char *text, size_t n);

/* The hosts file: an entry per name and address, in file order, and a
 * hash index over the names. */
struct hosts_entry {
    uint8_t *name;                     /* wire form, lowercased */
    uint8_t len, family;
    uint8_t addr[16];
    uint32_t next;                     /* the next of its bucket, or UINT32_MAX */
};

struct hosts {
    struct hosts_entry *v;
    uint32_t n, cap;
    uint32_t *bucket, mask;
};

/* The hosts file's text (n bytes, any content) into h (zeroed before).
 * Returns 0 or -ENOMEM (h then holds what fitted). */
int hosts_parse(struct hosts *h, const char *text, size_t n);

/* Add the addresses name (wire form) has in h to out; returns how many
 * out holds then. */
unsigned hosts_find(const struct hosts *h, const uint8_t *name, size_t len,
                    struct resolv_addrs *out);
void hosts_free(struct hosts *h);

/* A file's whole text into *text (malloc'd, NUL-terminated), *n bytes.
 * Returns 0 or a negative errno. */
int resolv_read_file(const char *path, char **text, size_t *n);

/* FNV-1a: the buckets of names. */
uint32_t resolv_hash(const uint8_t *p, size_t n);

#endif
