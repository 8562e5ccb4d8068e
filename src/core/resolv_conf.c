/* resolv_conf.c - the resolver's files: resolv.conf's nameservers and
 * options, the hosts file's names. Parsing works on text already read,
 * and takes any bytes: a line it does not understand is skipped. */
#include "dns.h"
#include "resolv_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TIMEOUT_DEFAULT  5
#define TIMEOUT_MAX      30
#define ATTEMPTS_DEFAULT 2
#define ATTEMPTS_MAX     5
#define DNS_PORT         53
#define FILE_MAX         (64u << 20) /* a hosts file past this is cut */
#define TOKEN_MAX        256

void resolv_addrs_add(struct resolv_addrs *a, int family, const void *addr)
{
    if (family == AF_INET6) {
        if (a->n < RESOLV_MAX_ADDRS)
            memcpy(a->a[a->n++], addr, 16);
        return;
    }
    if (a->n4 == RESOLV_MAX_ADDRS)
        return;
    if (a->n == RESOLV_MAX_ADDRS)
        a->n--;                        /* the last IPv6 one makes room */
    memmove(a->a[a->n4 + 1], a->a[a->n4], (size_t)(a->n - a->n4) * 16);
    memcpy(a->a[a->n4], addr, 4);
    a->n4++;
    a->n++;
}

uint32_t resolv_hash(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

/* The next whitespace-separated token of [*s, end) into out, NUL-ended;
 * false at the end of the line. A token too long for out is skipped. */
static bool token(const char **s, const char *end, char out[TOKEN_MAX])
{
    for (;;) {
        while (*s < end && is_space(**s))
            (*s)++;
        if (*s == end)
            return false;
        const char *t = *s;
        while (*s < end && !is_space(**s))
            (*s)++;
        size_t len = (size_t)(*s - t);
        if (len < TOKEN_MAX) {
            memcpy(out, t, len);
            out[len] = 0;
            return true;
        }
    }
}

/* Call fn on each line of text, without its newline. */
static int each_line(const char *text, size_t n, void *ctx,
                     int (*fn)(void *ctx, const char *s, const char *end))
{
    const char *s = text, *end = text + n;
    while (s < end) {
        const char *eol = memchr(s, '\n', (size_t)(end - s));
        if (!eol)
            eol = end;
        int ret = fn(ctx, s, eol);
        if (ret)
            return ret;
        s = eol + 1;
    }
    return 0;
}

/* "53" into *port (1..65535); false if it is not one. */
static bool parse_port(const char *s, unsigned *port)
{
    char *end;
    if (*s < '0' || *s > '9')
        return false;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v == 0 || v > 65535)
        return false;
    *port = (unsigned)v;
    return true;
}

/* An IPv6 address with an optional %scope (a number or an interface). */
static bool parse_v6(char *s, struct sockaddr_in6 *sa)
{
    char *pct = strchr(s, '%');
    if (pct)
        *pct++ = 0;
    if (inet_pton(AF_INET6, s, &sa->sin6_addr) != 1)
        return false;
    if (pct) {
        char *end;
        unsigned long id = strtoul(pct, &end, 10);
        if (*pct >= '0' && *pct <= '9' && !*end)
            sa->sin6_scope_id = (uint32_t)id;
        else if (!(sa->sin6_scope_id = if_nametoindex(pct)))
            return false;
    }
    sa->sin6_family = AF_INET6;
    return true;
}

/* A nameserver: "192.0.2.1", "192.0.2.1:5353", "2001:db8::1",
 * "fe80::1%eth0" or "[2001:db8::1]:5353". */
static bool parse_server(char *tok, struct sockaddr_storage *ss, socklen_t *len)
{
    unsigned port = DNS_PORT;
    char *host = tok, *colon = strchr(tok, ':');
    if (tok[0] == '[') {
        char *close = strchr(tok, ']');
        if (!close || (close[1] && (close[1] != ':' || !parse_port(close + 2, &port))))
            return false;
        *close = 0;
        host = tok + 1;
    } else if (colon && !strchr(colon + 1, ':')) {
        *colon = 0;                    /* one colon: IPv4 and a port */
        if (!parse_port(colon + 1, &port))
            return false;
    }
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
        return true;
    }
    if (!parse_v6(host, v6))
        return false;
    v6->sin6_port = htons((uint16_t)port);
    *len = sizeof *v6;
    return true;
}

/* "timeout:N" or "attempts:N" into *v, within 1..max. */
static void parse_option(const char *tok, const char *name, unsigned max,
                         unsigned *v)
{
    size_t n = strlen(name);
    if (strncmp(tok, name, n) || tok[n] != ':' || tok[n + 1] < '0' || tok[n + 1] > '9')
        return;
    unsigned long x = strtoul(tok + n + 1, NULL, 10);
    *v = x < 1 ? 1 : x > max ? max : (unsigned)x;
}

static int conf_line(void *ctx, const char *s, const char *end)
{
    struct resolv_conf *c = ctx;
    char key[TOKEN_MAX], tok[TOKEN_MAX];
    if (!token(&s, end, key) || key[0] == '#' || key[0] == ';')
        return 0;
    if (!strcmp(key, "nameserver")) {
        if (c->nns < RESOLV_MAXNS && token(&s, end, tok) &&
            parse_server(tok, &c->ns[c->nns], &c->nslen[c->nns]))
            c->nns++;
    } else if (!strcmp(key, "options")) {
        while (token(&s, end, tok)) {
            parse_option(tok, "timeout", TIMEOUT_MAX, &c->timeout_s);
            parse_option(tok, "attempts", ATTEMPTS_MAX, &c->attempts);
        }
    }
    /* search and domain lists are not used: names are absolute */
    return 0;
}

void resolv_conf_parse(struct resolv_conf *c, const char *text, size_t n)
{
    memset(c, 0, sizeof *c);
    c->timeout_s = TIMEOUT_DEFAULT;
    c->attempts = ATTEMPTS_DEFAULT;
    if (text)
        each_line(text, n, c, conf_line);
    if (!c->nns) {                     /* as the C library does */
        struct sockaddr_in *v4 = (struct sockaddr_in *)&c->ns[0];
        v4->sin_family = AF_INET;
        v4->sin_port = htons(DNS_PORT);
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        c->nslen[0] = sizeof *v4;
        c->nns = 1;
    }
}

static int hosts_add(struct hosts *h, const uint8_t *name, int len,
                     int family, const uint8_t *addr)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 32;
        struct hosts_entry *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    struct hosts_entry *e = &h->v[h->n];
    if (!(e->name = malloc((size_t)len)))
        return -ENOMEM;
    memcpy(e->name, name, (size_t)len);
    e->len = (uint8_t)len;
    e->family = (uint8_t)family;
    memcpy(e->addr, addr, family == AF_INET ? 4 : 16);
    h->n++;
    return 0;
}

/* "address name [alias...]", a comment from '#' on. */
static int hosts_line(void *ctx, const char *s, const char *end)
{
    struct hosts *h = ctx;
    char tok[TOKEN_MAX];
    uint8_t addr[16], wire[DNS_NAME_MAX];
    const char *hash = memchr(s, '#', (size_t)(end - s));
    if (hash)
        end = hash;
    if (!token(&s, end, tok))
        return 0;
    int family = inet_pton(AF_INET, tok, addr) == 1 ? AF_INET
               : inet_pton(AF_INET6, tok, addr) == 1 ? AF_INET6 : 0;
    while (family && token(&s, end, tok)) {
        int len = dns_name_encode(tok, wire);
        if (len > 0 && hosts_add(h, wire, len, family, addr))
            return -ENOMEM;
    }
    return 0;
}

/* Chain the entries into buckets, each chain in file order. */
static int hosts_index(struct hosts *h)
{
    uint32_t nb = 16;
    while (nb < h->n)
        nb <<= 1;
    if (!(h->bucket = malloc(nb * sizeof *h->bucket)))
        return -ENOMEM;
    h->mask = nb - 1;
    memset(h->bucket, 0xff, nb * sizeof *h->bucket);
    for (uint32_t i = h->n; i-- > 0;) {
        struct hosts_entry *e = &h->v[i];
        uint32_t b = resolv_hash(e->name, e->len) & h->mask;
        e->next = h->bucket[b];
        h->bucket[b] = i;
    }
    return 0;
}

int hosts_parse(struct hosts *h, const char *text, size_t n)
{
    int ret = each_line(text, n, h, hosts_line);
    int idx = hosts_index(h);
    return ret ? ret : idx;
}

unsigned hosts_find(const struct hosts *h, const uint8_t *name, size_t len,
                    struct resolv_addrs *out)
{
    if (!h->bucket)
        return out->n;
    for (uint32_t i = h->bucket[resolv_hash(name, len) & h->mask]; i != UINT32_MAX;
         i = h->v[i].next) {
        const struct hosts_entry *e = &h->v[i];
        if (e->len == len && !memcmp(e->name, name, len))
            resolv_addrs_add(out, e->family, e->addr);
    }
    return out->n;
}

void hosts_free(struct hosts *h)
{
    for (uint32_t i = 0; i < h->n; i++)
        free(h->v[i].name);
    free(h->v);
    free(h->bucket);
    memset(h, 0, sizeof *h);
}

int resolv_read_file(const char *path, char **text, size_t *n)
{
    int ret = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t cap = 4096, len = 0;
    char *buf = NULL;
    if (fd < 0)
        return -errno;
    if (!(buf = malloc(cap + 1)))
        goto nomem;
    for (;;) {
        if (len == cap) {
            if (cap >= FILE_MAX)
                break;
            char *more = realloc(buf, cap * 2 + 1);
            if (!more)
                goto nomem;
            buf = more;
            cap *= 2;
        }
        ssize_t got = read(fd, buf + len, cap - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            ret = -errno;
            goto cleanup;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    buf[len] = 0;
    *text = buf;
    *n = len;
    close(fd);
    return 0;
nomem:
    ret = -ENOMEM;
cleanup:
    free(buf);
    close(fd);
    return ret;
}

bool resolv_literal(const char *s, struct resolv_addrs *out)
{
    char buf[TOKEN_MAX];
    struct in_addr v4;
    struct sockaddr_in6 v6 = { 0 };
    size_t n = strnlen(s, sizeof buf);
    if (n == sizeof buf)
        return false;
    memcpy(buf, s, n + 1);
    if (inet_pton(AF_INET, buf, &v4) == 1) {
        resolv_addrs_add(out, AF_INET, &v4);
        return true;
    }
    if (!parse_v6(buf, &v6))
        return false;
    resolv_addrs_add(out, AF_INET6, &v6.sin6_addr);
    out->scope = v6.sin6_scope_id;
    return true;
}
