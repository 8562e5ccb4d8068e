/* cli.c - parse the command line into struct cli_opts. */
#include "cli.h"
#include "log.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char cli_usage[] =
    "usage: moonring [options] [SCRIPT [ARGS...]]\n"
    "  SCRIPT defaults to the built-in echo handler; ARGS reach it as `arg`\n"
    "  -l, --listen URL         listen on tcp://ADDR:PORT, tls://ADDR:PORT,\n"
    "                           unix:/path or udp://ADDR:PORT (datagrams, for\n"
    "                           on_datagram); may be given several times\n"
    "                           (default tcp://127.0.0.1:7000)\n"
    "      --tls-cert FILE      PEM certificate chain for tls:// listeners, and\n"
    "      --tls-key FILE       its private key; several pairs: the certificate\n"
    "                           for a connection is chosen by SNI, the first\n"
    "                           when none matches\n"
    "      --tls-handshake-timeout S  a handshake not done this long after\n"
    "                           the connection came is dropped (default 10)\n"
    "      --tls-protocols LIST default \"TLSv1.2 TLSv1.3\"\n"
    "      --tls-ciphers LIST   OpenSSL cipher list for TLS 1.2 (default\n"
    "                           ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!SHA1)\n"
    "      --tls-alpn LIST      protocols to agree on, such as \"h2,http/1.1\"\n"
    "  -b, --bind ADDR          the shorthand for one listener: its address\n"
    "                           (default 127.0.0.1; \"::\" for IPv6, \"unix:/path\")\n"
    "  -p, --port N             ... and its TCP port (default 7000; 0: a free one)\n"
    "  -w, --workers N|auto     worker processes (default 1)\n"
    "  -t, --test               load the script, report errors, exit\n"
    "      --no-reload          do not watch the script for changes\n"
    "      --log-level L        error|warn|info|debug (default info)\n"
    "      --max-conns N        connections per worker (default: fd limit)\n"
    "      --buffers N          receive buffers per worker, a power of two\n"
    "                           (default 1024)\n"
    "      --buffer-size B      bytes per receive buffer (default 16384)\n"
    "      --shutdown-timeout S seconds to drain on SIGTERM (default 10)\n"
    "      --high-water B       queued output per connection that pauses\n"
    "                           its reading (default 65536)\n"
    "      --lua-memory MIB     Lua heap per worker (default 1024; 0: no limit)\n"
    "      --handler-timeout S  a worker that makes no progress this long (stuck\n"
    "                           in Lua or in the kernel, or stopped) is\n"
    "                           restarted (default 10; 0: never)\n"
    "      --send-timeout S     a closing connection whose output makes no\n"
    "                           progress this long is dropped (default 60)\n"
    "      --lingering-time S   after a close, read and drop the peer's input\n"
    "                           until it closes too, at most S seconds\n"
    "                           (default 30; 0: close at once)\n"
    "      --lingering-timeout S  ... and at most S seconds without input\n"
    "                           (default 5)\n"
    "      --lingering-bytes B  ... and at most B bytes (default 16777216)\n"
    "      --batch-wait USEC    wait up to USEC microseconds for more events\n"
    "                           before handling a batch: fewer wake-ups, more\n"
    "                           latency (default 0: off; Linux 6.12 or later)\n"
    "      --udp-buffers N      datagram buffers per worker, a power of two:\n"
    "                           also the most datagrams one turn handles\n"
    "                           (default 64)\n"
    "      --udp-buffer-size B  the longest datagram taken whole; longer ones\n"
    "                           arrive cut, marked truncated (default 65535)\n"
    "      --shared NAME:SIZE   a dictionary in memory shared by the workers,\n"
    "                           mr.shared.NAME; SIZE in bytes, or with k, m\n"
    "                           or g (64k to 32g); may be given several times\n"
    "      --user NAME          drop root after binding\n"
    "  -h, --help               show this help\n"
    "  -V, --version            show the version\n";

enum { O_NO_RELOAD = 256, O_LOG_LEVEL, O_MAX_CONNS, O_BUFFERS, O_BUFFER_SIZE,
       O_SHUTDOWN_TIMEOUT, O_USER, O_HIGH_WATER, O_LUA_MEMORY, O_HANDLER_TIMEOUT,
       O_BATCH_WAIT, O_SEND_TIMEOUT, O_LINGERING_TIME, O_LINGERING_TIMEOUT,
       O_LINGERING_BYTES, O_TLS_CERT, O_TLS_KEY, O_TLS_HANDSHAKE,
       O_TLS_PROTOCOLS, O_TLS_CIPHERS, O_TLS_ALPN, O_SHARED,
       O_UDP_BUFFERS = 400, O_UDP_BUFFER_SIZE };

static const struct option longopts[] = {
    { "listen", required_argument, NULL, 'l' },
    { "bind", required_argument, NULL, 'b' },
    { "port", required_argument, NULL, 'p' },
    { "workers", required_argument, NULL, 'w' },
    { "test", no_argument, NULL, 't' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { "no-reload", no_argument, NULL, O_NO_RELOAD },
    { "log-level", required_argument, NULL, O_LOG_LEVEL },
    { "max-conns", required_argument, NULL, O_MAX_CONNS },
    { "buffers", required_argument, NULL, O_BUFFERS },
    { "buffer-size", required_argument, NULL, O_BUFFER_SIZE },
    { "shutdown-timeout", required_argument, NULL, O_SHUTDOWN_TIMEOUT },
    { "user", required_argument, NULL, O_USER },
    { "high-water", required_argument, NULL, O_HIGH_WATER },
    { "lua-memory", required_argument, NULL, O_LUA_MEMORY },
    { "handler-timeout", required_argument, NULL, O_HANDLER_TIMEOUT },
    { "batch-wait", required_argument, NULL, O_BATCH_WAIT },
    { "send-timeout", required_argument, NULL, O_SEND_TIMEOUT },
    { "lingering-time", required_argument, NULL, O_LINGERING_TIME },
    { "lingering-timeout", required_argument, NULL, O_LINGERING_TIMEOUT },
    { "lingering-bytes", required_argument, NULL, O_LINGERING_BYTES },
    { "tls-cert", required_argument, NULL, O_TLS_CERT },
    { "tls-key", required_argument, NULL, O_TLS_KEY },
    { "tls-handshake-timeout", required_argument, NULL, O_TLS_HANDSHAKE },
    { "tls-protocols", required_argument, NULL, O_TLS_PROTOCOLS },
    { "tls-ciphers", required_argument, NULL, O_TLS_CIPHERS },
    { "tls-alpn", required_argument, NULL, O_TLS_ALPN },
    { "udp-buffers", required_argument, NULL, O_UDP_BUFFERS },
    { "udp-buffer-size", required_argument, NULL, O_UDP_BUFFER_SIZE },
    { "shared", required_argument, NULL, O_SHARED },
    { NULL, 0, NULL, 0 },
};

/* Strict decimal: the whole string, within [lo, hi]. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static const char *optname(int c)
{
    for (const struct option *o = longopts; o->name; o++)
        if (o->val == c)
            return o->name;
    return "?";
}

static int bad(int c, const char *a, char *err, size_t n)
{
    snprintf(err, n, "invalid value '%s' for --%s", a, optname(c));
    return -1;
}

/* One -l URL into *l: tcp://ADDR:PORT (ADDR in brackets for IPv6) or
 * unix:/path. Returns 0, or -1 with err. */
static int parse_listen(const char *url, struct cli_listen *l, char *err, size_t n)
{
    memset(l, 0, sizeof *l);
    l->url = url;
    if (strncmp(url, "unix:", 5) == 0) {
        if (!url[5] || strlen(url) >= sizeof l->addr)
            goto bad;
        snprintf(l->addr, sizeof l->addr, "%s", url);
        return 0;
    }
    l->tls = strncmp(url, "tls://", 6) == 0;
    l->udp = strncmp(url, "udp://", 6) == 0;
    if (strncmp(url, "tcp://", 6) != 0 && !l->tls && !l->udp)
        goto bad;
    const char *host = url + 6, *colon = strrchr(host, ':');
    long port;
    if (!colon || colon == host || parse_long(colon + 1, 0, 65535, &port))
        goto bad;
    size_t len = (size_t)(colon - host);
    if (host[0] == '[') { /* [::1]:80 */
        if (len < 3 || host[len - 1] != ']')
            goto bad;
        host++;
        len -= 2;
    } else if (memchr(host, ':', len)) {
        goto bad; /* an IPv6 address needs its brackets */
    }
    if (len >= sizeof l->addr)
        goto bad;
    memcpy(l->addr, host, len);
    l->addr[len] = 0;
    l->port = (int)port;
    return 0;
bad:
    snprintf(err, n, "--listen %s: expected tcp://ADDR:PORT, tls://ADDR:PORT, "
             "udp://ADDR:PORT or unix:/path", url);
    return -1;
}

/* --shared NAME:SIZE into the next of o->shared. NAME is a Lua name
 * (mr.shared.NAME), SIZE bytes with an optional k, m or g. */
static int parse_shared(const char *a, struct cli_opts *o, char *err, size_t n)
{
    const char *colon = strchr(a, ':');
    size_t len = colon ? (size_t)(colon - a) : 0;
    bool name_ok = len > 0 && len < sizeof o->shared[0].name &&
                   !(a[0] >= '0' && a[0] <= '9');
    for (size_t i = 0; name_ok && i < len; i++)
        name_ok = a[i] == '_' || (a[i] >= 'a' && a[i] <= 'z') ||
                  (a[i] >= 'A' && a[i] <= 'Z') || (a[i] >= '0' && a[i] <= '9');
    if (!name_ok) {
        snprintf(err, n, "--shared %s: expected NAME:SIZE, NAME made of letters, "
                 "digits and _ (not first a digit), at most 63", a);
        return -1;
    }
    const char *s = colon + 1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    }
    if (errno || end == s || *end || s[0] < '0' || s[0] > '9' || v > (32ull << 30) >> shift ||
        (v << shift) < (64u << 10) || (v << shift) > (32ull << 30)) {
        snprintf(err, n, "--shared %s: SIZE must be 64k to 32g (bytes, or with k, m, g)", a);
        return -1;
    }
    for (int i = 0; i < o->nshared; i++)
        if (strlen(o->shared[i].name) == len && strncmp(o->shared[i].name, a, len) == 0) {
            snprintf(err, n, "--shared %.*s: given twice", (int)len, a);
            return -1;
        }
    if (o->nshared == CLI_MAX_SHARED) {
        snprintf(err, n, "at most %d shared dictionaries", CLI_MAX_SHARED);
        return -1;
    }
    struct cli_shared *d = &o->shared[o->nshared++];
    memcpy(d->name, a, len);
    d->name[len] = 0;
    d->size = v << shift;
    return 0;
}

/* Seconds, within [lo, 86400]. */
static int parse_seconds(const char *s, double lo, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end || !(d >= lo && d <= 86400))
        return -1;
    *out = d;
    return 0;
}

/* The option's field of seconds, or NULL. */
static double *seconds_field(int c, struct cli_opts *o)
{
    switch (c) {
    case O_SHUTDOWN_TIMEOUT:  return &o->shutdown_timeout;
    case O_HANDLER_TIMEOUT:   return &o->handler_timeout;
    case O_SEND_TIMEOUT:      return &o->send_timeout;
    case O_LINGERING_TIME:    return &o->lingering_time;
    case O_LINGERING_TIMEOUT: return &o->lingering_timeout;
    case O_TLS_HANDSHAKE:     return &o->tls_handshake_timeout;
    default:                  return NULL;
    }
}

/* Apply one option with its argument; returns 0 or -1 with err filled. */
static int apply(int c, const char *a, struct cli_opts *o, char *err, size_t n)
{
    long v;
    double *secs = seconds_field(c, o);
    if (secs) /* a send timeout of 0 would drop every closing output */
        return parse_seconds(a, c == O_SEND_TIMEOUT ? 0.001 : 0, secs) ? bad(c, a, err, n) : 0;

    switch (c) {
    case 'l':
        if (o->nlisten == CLI_MAX_LISTEN) {
            snprintf(err, n, "at most %d listeners", CLI_MAX_LISTEN);
            return -1;
        }
        return parse_listen(a, &o->listen[o->nlisten++], err, n);
    case 'b':
        if (!*a)
            goto bad;
        o->bind = a;
        o->bind_given = 1;
        return 0;
    case 'p':
        if (parse_long(a, 0, 65535, &v))
            goto bad;
        o->port = (int)v;
        o->bind_given = 1;
        return 0;
    case 'w':
        if (strcmp(a, "auto") == 0) {
            o->workers = 0;
            return 0;
        }
        if (parse_long(a, 1, 1024, &v))
            goto bad;
        o->workers = (int)v;
        return 0;
    case O_LOG_LEVEL:
        if ((o->log_level = log_level_parse(a)) < 0)
            goto bad;
        return 0;
    case O_MAX_CONNS:
        if (parse_long(a, 1, 1 << 24, &v))
            goto bad;
        o->max_conns = (unsigned)v;
        return 0;
    case O_BUFFERS:
        /* the kernel's provided-buffer rings hold at most 32768 entries */
        if (parse_long(a, 1, 32768, &v) || (v & (v - 1)))
            goto bad;
        o->buffers = (unsigned)v;
        return 0;
    case O_BUFFER_SIZE:
        if (parse_long(a, 64, 1 << 24, &v))
            goto bad;
        o->buffer_size = (unsigned)v;
        return 0;
    case O_LUA_MEMORY:
        if (parse_long(a, 0, 1 << 20, &v))
            goto bad;
        o->lua_memory = (unsigned)v;
        return 0;
    case O_HIGH_WATER:
        if (parse_long(a, 1024, 1L << 40, &v))
            goto bad;
        o->high_water = (unsigned long)v;
        return 0;
    case O_LINGERING_BYTES:
        if (parse_long(a, 0, UINT32_MAX - 1L, &v))
            goto bad;
        o->lingering_bytes = (unsigned long)v;
        return 0;
    case O_BATCH_WAIT:
        if (parse_long(a, 0, 1000000, &v))
            goto bad;
        o->batch_wait_us = (unsigned)v;
        return 0;
    case O_UDP_BUFFERS:
        if (parse_long(a, 1, 32768, &v) || (v & (v - 1)))
            goto bad;
        o->udp_buffers = (unsigned)v;
        return 0;
    case O_UDP_BUFFER_SIZE:
        if (parse_long(a, 64, 65535, &v))
            goto bad;
        o->udp_buffer_size = (unsigned)v;
        return 0;
    case O_SHARED:
        return parse_shared(a, o, err, n);
    case O_USER:
        if (!*a)
            goto bad;
        o->user = a;
        return 0;
    case O_TLS_CERT:
    case O_TLS_KEY: {
        int *n = c == O_TLS_CERT ? &o->ntls_cert : &o->ntls_key;
        if (!*a || *n == CLI_MAX_CERTS)
            goto bad;
        (c == O_TLS_CERT ? o->tls_cert : o->tls_key)[(*n)++] = a;
        return 0;
    }
    case O_TLS_PROTOCOLS:
    case O_TLS_CIPHERS:
    case O_TLS_ALPN:
        if (!*a)
            goto bad;
        *(c == O_TLS_PROTOCOLS ? &o->tls_protocols
          : c == O_TLS_CIPHERS ? &o->tls_ciphers : &o->tls_alpn) = a;
        return 0;
    }
bad:
    return bad(c, a, err, n);
}

static void defaults(struct cli_opts *o)
{
    memset(o, 0, sizeof *o);
    o->bind = "127.0.0.1";
    o->port = 7000;
    o->workers = 1;
    o->log_level = LOG_INFO;
    o->buffers = 1024;
    o->buffer_size = 16384;
    o->shutdown_timeout = 10;
    o->handler_timeout = 10;
    o->send_timeout = 60;
    o->lingering_time = 30;
    o->lingering_timeout = 5;
    o->lingering_bytes = 16 << 20;
    o->tls_handshake_timeout = 10;
    o->lua_memory = 1024;
    o->udp_buffers = 64;
    o->udp_buffer_size = 65535;
}

enum cli_result cli_parse(int argc, char **argv, struct cli_opts *o,
                          char *err, size_t errlen)
{
    defaults(o);
    optind = 0; /* glibc: full re-initialisation, so tests can call us twice */
    opterr = 0;
    int c;
    /* '+': stop at the first non-option, which is the script; the rest
     * belongs to the script, like `lua script.lua -x` */
    while ((c = getopt_long(argc, argv, "+:l:b:p:w:thV", longopts, NULL)) != -1) {
        switch (c) {
        case 't': o->test_only = 1; break;
        case 'h': return CLI_HELP;
        case 'V': return CLI_VERSION;
        case O_NO_RELOAD: o->no_reload = 1; break;
        case ':':
            snprintf(err, errlen, "option '%s' needs a value", argv[optind - 1]);
            return CLI_ERROR;
        case '?':
            if (optopt)
                snprintf(err, errlen, "unknown option '-%c'", optopt);
            else
                snprintf(err, errlen, "unknown option '%s'", argv[optind - 1]);
            return CLI_ERROR;
        default:
            if (apply(c, optarg, o, err, errlen))
                return CLI_ERROR;
        }
    }
    if (o->nlisten && o->bind_given) {
        snprintf(err, errlen, "-l and -b/-p do not go together: give each listener as -l");
        return CLI_ERROR;
    }
    bool tls = false;
    for (int i = 0; i < o->nlisten; i++)
        tls |= o->listen[i].tls;
    if (tls && !o->ntls_cert) {
        snprintf(err, errlen, "a tls:// listener needs --tls-cert and --tls-key");
        return CLI_ERROR;
    }
    if (o->ntls_cert != o->ntls_key) {
        snprintf(err, errlen, "--tls-cert and --tls-key go in pairs: %d certificates, %d keys",
                 o->ntls_cert, o->ntls_key);
        return CLI_ERROR;
    }
    if (!o->nlisten) { /* -b/-p: the one listener */
        struct cli_listen *l = &o->listen[o->nlisten++];
        l->url = NULL; /* made from addr and port when asked */
        snprintf(l->addr, sizeof l->addr, "%s", o->bind);
        l->port = o->port;
        if (strlen(o->bind) >= sizeof l->addr) {
            snprintf(err, errlen, "invalid value '%s' for --bind", o->bind);
            return CLI_ERROR;
        }
    }
    if (optind < argc) {
        o->script = argv[optind];
        o->script_argc = argc - optind - 1;
        o->script_argv = argv + optind + 1;
    }
    return CLI_RUN;
}
