/* cli.h - command-line options. Parsing is pure: no I/O, no exit. */
#ifndef MR_CLI_H
#define MR_CLI_H

#include <stddef.h>

/* A listener of -l (or the one of -b/-p). */
struct cli_listen {
    const char *url;           /* as given: what conn:listener() returns */
    char addr[256];            /* "127.0.0.1", "::1", or "unix:/path" */
    int port;                  /* TCP; 0 lets the kernel choose */
    int tls;                   /* tls://: TLS over TCP */
    int udp;                   /* udp://: datagrams, for on_datagram */
};

#define CLI_MAX_LISTEN 16
#define CLI_MAX_CERTS 8
#define CLI_MAX_SHARED 32

struct shdict;

/* A dictionary of --shared NAME:SIZE. */
struct cli_shared {
    char name[64];             /* a Lua name: mr.shared.NAME */
    unsigned long long size;   /* bytes */
    struct shdict *dict;       /* made by main before the workers fork */
};

struct cli_opts {
    const char *bind;          /* address, default "127.0.0.1" */
    int port;                  /* 0 lets the kernel choose */
    int workers;               /* 0 means auto (one per CPU) */
    int test_only;             /* -t: load the script and exit */
    int no_reload;
    int log_level;             /* enum log_level */
    unsigned max_conns;        /* 0: derived from RLIMIT_NOFILE */
    unsigned buffers;          /* receive buffers, a power of two */
    unsigned buffer_size;      /* bytes per receive buffer */
    double shutdown_timeout;   /* seconds */
    unsigned long high_water;  /* output bytes per connection that pause
                                  reading; 0: the default (64 KiB) */
    const char *user;          /* drop root to this user */
    double handler_timeout;    /* seconds a batch of handlers may run; 0: no limit */
    unsigned lua_memory;       /* MiB of Lua heap per worker; 0: no limit */
    unsigned batch_wait_us;    /* min-wait batching; 0: off */
    double send_timeout;       /* seconds a closing connection's output may
                                  make no progress */
    double lingering_time;     /* seconds a lingering close lasts at most; 0: off */
    double lingering_timeout;  /* ... and may wait for input */
    unsigned long lingering_bytes; /* ... and bytes it reads and drops */
    struct cli_listen listen[CLI_MAX_LISTEN];
    int nlisten;               /* at least 1 once parsed */
    int bind_given;            /* -b or -p was given */
    const char *tls_cert[CLI_MAX_CERTS]; /* PEM certificate chains, for tls:// */
    const char *tls_key[CLI_MAX_CERTS];  /* ... and a key for each */
    int ntls_cert, ntls_key;
    double tls_handshake_timeout; /* seconds without progress; 0: none */
    const char *tls_protocols; /* "TLSv1.2 TLSv1.3" */
    const char *tls_ciphers;   /* for TLS 1.2; NULL: OpenSSL's default */
    const char *tls_alpn;      /* "h2,http/1.1", or NULL */
    unsigned udp_buffers;      /* datagram buffers per worker (a power of
                                  two): also the most datagrams a turn takes */
    unsigned udp_buffer_size;  /* the longest datagram taken whole */
    struct cli_shared shared[CLI_MAX_SHARED]; /* --shared */
    int nshared;
    const char *script;        /* NULL: built-in echo */
    int script_argc;           /* arguments after the script */
    char **script_argv;
};

enum cli_result { CLI_RUN, CLI_HELP, CLI_VERSION, CLI_ERROR };

/* Fill *o from argv. On CLI_ERROR, err holds one line explaining why. */
enum cli_result cli_parse(int argc, char **argv, struct cli_opts *o,
                          char *err, size_t errlen);

extern const char cli_usage[];

#endif
