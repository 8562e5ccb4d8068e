/* epoll_echo.c - the baseline moonring is measured against: a one-thread,
 * edge-triggered epoll echo server in C, TCP_NODELAY, written as well as
 * we can (read until EAGAIN, write back at once, keep what the socket
 * does not take and finish it on EPOLLOUT).
 *
 *   epoll_echo PORT */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct client {
    int fd;
    char *pend;              /* bytes the socket did not take yet */
    size_t len, cap;
};

static void drop(int ep, struct client *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pend);
    free(c);
}

/* Write p (after anything pending); keep the rest. -1 on error. */
static int out(struct client *c, const char *p, size_t n)
{
    if (!c->len) {
        while (n) {
            ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
            if (w < 0)
                break;
            p += w;
            n -= (size_t)w;
        }
        if (!n)
            return 0;
        if (errno != EAGAIN)
            return -1;
    }
    if (c->len + n > c->cap) {
        c->cap = (c->len + n) * 2;
        c->pend = realloc(c->pend, c->cap);
    }
    memcpy(c->pend + c->len, p, n);
    c->len += n;
    return 0;
}

static int flush(struct client *c)
{
    size_t off = 0;
    while (off < c->len) {
        ssize_t w = send(c->fd, c->pend + off, c->len - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN)
                return -1;
            break;
        }
        off += (size_t)w;
    }
    memmove(c->pend, c->pend + off, c->len - off);
    c->len -= off;
    return 0;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 7001, one = 1;
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 4096)) {
        perror("epoll_echo: listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event evs[512];
    static char buf[65536];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        for (int i = 0; i < n; i++) {
            struct client *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event ce = { .events = EPOLLIN | EPOLLOUT | EPOLLET,
                                              .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            if ((evs[i].events & EPOLLOUT) && c->len && flush(c) < 0) {
                drop(ep, c);
                continue;
            }
            if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                continue;
            for (;;) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r > 0) {
                    if (out(c, buf, (size_t)r) < 0) {
                        drop(ep, c);
                        break;
                    }
                    continue;
                }
                if (r == 0 || errno != EAGAIN)
                    drop(ep, c);
                break;
            }
        }
    }
}
