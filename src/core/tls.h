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

/* The server side, for the connections of tls:// listeners: load the
 * PEM certificate chain and its key; a handshake that makes no progress
 * for handshake_ms is dropped. Returns 0, or -1 with err. */
int tls_server_init(const char *cert, const char *key, unsigned handshake_ms,
                    char *err, size_t len);
void tls_server_free(void);

extern const struct transport tls_server;

/* What conn:tls() reports; false for a connection without TLS. */
struct tls_info {
    const char *version;       /* "TLSv1.3" */
    const char *cipher;        /* "TLS_AES_256_GCM_SHA384" */
    const char *sni;           /* the server name the client asked for, or NULL */
};
bool tls_info(const struct conn *c, struct tls_info *out);

#endif
