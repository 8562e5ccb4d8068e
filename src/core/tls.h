/* tls.h - TLS as a transport (transport.h): OpenSSL 3 on memory BIOs.
 *
 * Ciphertext comes from the multishot receive and goes out through the
 * send queue like any other bytes; OpenSSL never sees the socket, so
 * there is no SSL_read or SSL_write on an fd and nothing blocks. A
 * handshake costs no syscall of its own: its records go out with the
 * turn's other sends. */
#ifndef MR_TLS_H
#define MR_TLS_H

#include "transport.h"

#include <stdbool.h>
#include <stddef.h>

struct conn;

#define TLS_MAX_CERTS 8

struct tls_server_config {
    const char *cert[TLS_MAX_CERTS], *key[TLS_MAX_CERTS]; /* PEM chains and keys:
                                  by SNI, the first when no name matches */
    int ncert;
    const char *protocols;     /* "TLSv1.2 TLSv1.3" (NULL: that) */
    const char *ciphers;       /* OpenSSL's cipher list for TLS 1.2, or NULL */
    const char *alpn;          /* "h2,http/1.1": what it agrees to, or NULL */
    unsigned handshake_ms;     /* a handshake without progress this long is
                                  dropped; 0: never */
};

/* The server side, for the connections of tls:// listeners. Returns 0,
 * or -1 with err. cfg's strings must outlive the server. */
int tls_server_init(const struct tls_server_config *cfg, char *err, size_t len);

/* Read the certificates and keys again (SIGHUP): new handshakes use
 * them, live connections go on. On failure the old ones stay, and err
 * says why. Returns 0 or -1; 0 too when there is no TLS server. */
int tls_server_reload(char *err, size_t len);
void tls_server_free(void);

extern const struct transport tls_server;

/* The client side, for a connection to a TLS backend. */
struct tls_client_opts {
    const char *server_name;   /* for SNI and the certificate's name, or NULL */
    bool verify;               /* check the certificate (the default) */
    const char *ca;            /* PEM file of trusted CAs; NULL: the system's */
};

/* The transport state for core_connect, or NULL with err. */
struct transport_conn *tls_client_new(const struct tls_client_opts *o, char *err,
                                      size_t len);

/* Why TLS closed c ("certificate verify failed: ..."), or NULL. Valid
 * until c is freed. */
const char *tls_error(const struct conn *c);

/* What conn:tls() reports; false for a connection without TLS. */
struct tls_info {
    const char *version;       /* "TLSv1.3" */
    const char *cipher;        /* "TLS_AES_256_GCM_SHA384" */
    const char *sni;           /* the server name the client asked for, or NULL */
    char alpn[64];             /* the protocol agreed on, or "" */
};
bool tls_info(const struct conn *c, struct tls_info *out);

#endif
