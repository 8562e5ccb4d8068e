/* transport.h - what sits between a connection's socket and its handler.
 *
 * A plain connection has none (conn.tp is NULL): received bytes go
 * straight to the handler's data event and sent bytes straight to the
 * send queue. A transport changes bytes on their way: TLS turns the
 * ciphertext the receive delivers into plaintext for the handler and the
 * handler's plaintext into ciphertext for the send queue, and sends on
 * its own (a handshake, an alert) without being asked. It never sees the
 * socket: bytes come in from the multishot receive and go out through
 * the send queue, so the ring stays the only way in or out.
 *
 * A listener carries the transport of the connections it accepts; an
 * outbound connection is given one (its state, made beforehand with
 * whatever that connection needs, such as a server name) by
 * core_connect. A connection's transport state is c->tp: the
 * transport's own struct, which begins with a struct transport_conn. */
#ifndef MR_TRANSPORT_H
#define MR_TRANSPORT_H

#include <stddef.h>

struct conn;
struct core;

struct transport;

struct transport_conn {
    const struct transport *ops;
};

struct transport {
    const char *name;
    /* c was accepted (c->tp is NULL: make its state and set c->tp) or
     * connected (c->tp is the state given to core_connect). Return 0
     * when the handler may be told at once that c is open, 1 when the
     * transport tells it later with core_ready() (after a handshake), or
     * a negative errno to close c. */
    int (*start)(struct core *k, struct conn *c);
    /* n bytes came from the socket. Hand the handler its bytes with
     * core_deliver(), queue bytes of its own with core_queue(). With n
     * 0 (p NULL), nothing came: the handler resumed reading, and what
     * the transport kept back while it was paused may go now. Returns
     * 0, or a negative errno that closes c: -ETIMEDOUT for "timeout"
     * (a deadline of its own, such as a handshake's), any other for an
     * error. */
    int (*recv)(struct core *k, struct conn *c, const char *p, size_t n);
    /* The handler sends n bytes: queue what goes on the wire with
     * core_queue(). For an outbound connection this may come before
     * start, while it connects: keep them until the transport is ready.
     * Returns 0 or a negative errno. */
    int (*send)(struct core *k, struct conn *c, const void *p, size_t n);
    /* The handler closes c gracefully: queue what ends the session (a
     * TLS close_notify) before the last bytes. Optional. */
    void (*shutdown)(struct core *k, struct conn *c);
    /* c is being freed, or the core torn down: free c->tp. */
    void (*release)(struct core *k, struct conn *c);
};

#endif
