/* net.h - listening sockets and address formatting. */
#ifndef MR_NET_H
#define MR_NET_H

#include <stddef.h>
#include <sys/socket.h>

/* Bind and listen on addr:port ("unix:/path" for a Unix socket).
 * Returns the fd, or -1 with one line in err. reuseport sets
 * SO_REUSEPORT so that several workers can share the port. */
int net_listen(const char *addr, int port, int reuseport, char *err,
               size_t errlen);

/* A UDP socket bound to addr:port, the same way. */
int net_bind_udp(const char *addr, int port, int reuseport, char *err,
                 size_t errlen);

/* The port a socket is bound to (0 for a Unix socket). */
int net_port(int fd);

/* A TCP socket's segment size (its MSS), or 0: not TCP, or unknown. */
unsigned net_mss(int fd);

/* "127.0.0.1:7000", "[::1]:7000" or "unix:/path" for a bound socket. */
void net_sockname(int fd, char *out, size_t len);

/* Split a socket address into text and port; returns 0 or -1. */
int net_addr_text(const struct sockaddr_storage *ss, socklen_t sl,
                  char *host, size_t hostlen, int *port);

#endif
