/* net.c - create the listening socket (anet-style helpers). */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define BACKLOG 4096

/* A socket file nobody listens on any more. */
static int unix_stale(const struct sockaddr_un *sun)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int stale = fd >= 0 && connect(fd, (const struct sockaddr *)sun, sizeof *sun) &&
                errno == ECONNREFUSED;
    if (fd >= 0)
        close(fd);
    errno = EADDRINUSE;
    return stale;
}

static int listen_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (!*path || strlen(path) >= sizeof sun.sun_path) {
        snprintf(err, errlen, "invalid Unix socket path '%s'", path);
        return -1;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    if (r && errno == EADDRINUSE && unix_stale(&sun)) {
        unlink(path); /* left by a server that is gone: take it over */
        r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    }
    if (r == 0 && listen(fd, BACKLOG) == 0)
        return fd;
fail:
    snprintf(err, errlen, "cannot listen on unix:%s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

static int listen_ai(const struct addrinfo *ai, int reuseport)
{
    int one = 1;
    bool dgram = ai->ai_socktype == SOCK_DGRAM;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return -1;
    /* A burst of datagrams waits in the socket while a turn handles the
     * last one's (at most --udp-buffers a turn): give it room, as much as
     * net.core.rmem_max allows (best effort: the default holds only some
     * 300 small datagrams). */
    int rcvbuf = 4 << 20;
    if (dgram)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    /* Accepted sockets inherit TCP_NODELAY from the listener, so no
     * per-connection setsockopt is needed. Without it a reply split in
     * two sends waits for the peer's delayed ACK. */
    /* Not on UDP: there SO_REUSEADDR lets a second server bind the same
     * port without a word, and take its datagrams */
    if ((!dgram && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one)) ||
        (!dgram && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one)) ||
        (reuseport &&
         setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) || (!dgram && listen(fd, BACKLOG))) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int bind_inet(const char *addr, int port, int reuseport, int socktype,
                     char *err, size_t errlen)
{
    /* accept "[::1]" as well as "::1" */
    char host[256];
    size_t n = strlen(addr);
    if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']' && n - 2 < sizeof host) {
        memcpy(host, addr + 1, n - 2);
        host[n - 2] = 0;
    } else {
        snprintf(host, sizeof host, "%s", addr);
    }
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = socktype;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, gai_strerror(gai));
        return -1;
    }
    int fd = listen_ai(res, reuseport);
    if (fd < 0)
        snprintf(err, errlen, "cannot listen on %s %sport %d: %s", addr,
                 socktype == SOCK_DGRAM ? "UDP " : "", port, strerror(errno));
    freeaddrinfo(res);
    return fd;
}

int net_listen(const char *addr, int port, int reuseport, char *err,
               size_t errlen)
{
    if (strncmp(addr, "unix:", 5) == 0)
        return listen_unix(addr + 5, err, errlen);
    return bind_inet(addr, port, reuseport, SOCK_STREAM, err, errlen);
}

int net_bind_udp(const char *addr, int port, int reuseport, char *err,
                 size_t errlen)
{
    return bind_inet(addr, port, reuseport, SOCK_DGRAM, err, errlen);
}

int net_addr_text(const struct sockaddr_storage *ss, socklen_t sl,
                  char *host, size_t hostlen, int *port)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)hostlen);
        *port = ntohs(in->sin_port);
        return 0;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)hostlen);
        *port = ntohs(in6->sin6_port);
        return 0;
    }
    if (ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)ss;
        size_t len = sl > offsetof(struct sockaddr_un, sun_path)
                         ? sl - offsetof(struct sockaddr_un, sun_path) : 0;
        snprintf(host, hostlen, "%.*s", (int)len, un->sun_path);
        *port = 0;
        return 0;
    }
    return -1;
}

void net_sockname(int fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN + 108];
    int port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) ||
        net_addr_text(&ss, sl, host, sizeof host, &port)) {
        snprintf(out, len, "?");
        return;
    }
    if (ss.ss_family == AF_UNIX)
        snprintf(out, len, "unix:%s", host);
    else if (ss.ss_family == AF_INET6)
        snprintf(out, len, "[%s]:%d", host, port);
    else
        snprintf(out, len, "%s:%d", host, port);
}

int net_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN + 108];
    int port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        net_addr_text(&ss, sl, host, sizeof host, &port);
    return port;
}

unsigned net_mss(int fd)
{
    int mss = 0;
    socklen_t len = sizeof mss;
    if (getsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, &len) || mss <= 0)
        return 0;
    return (unsigned)mss;
}
