/* udp_echo.c - the C baseline for datagram echo: one UDP socket, each
 * batch of datagrams taken with one recvmmsg (blocking for the first,
 * then whatever has come, up to BATCH) and answered with one sendmmsg.
 * No io_uring: the classic fast path for a UDP server on Linux.
 *
 *   udp_echo PORT [ADDR]      (ADDR default 127.0.0.1) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define SIZE  2048

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: udp_echo PORT [ADDR]\n");
        return 2;
    }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])) };
    inet_pton(AF_INET, argc > 2 ? argv[2] : "127.0.0.1", &a.sin_addr);
    int fd = socket(AF_INET, SOCK_DGRAM, 0), big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a)) {
        perror("udp_echo: bind");
        return 1;
    }
    static char buf[BATCH][SIZE];
    static struct sockaddr_in from[BATCH];
    static struct iovec iov[BATCH];
    static struct mmsghdr msg[BATCH];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){ .iov_base = buf[i], .iov_len = SIZE };
            msg[i].msg_hdr = (struct msghdr){ .msg_name = &from[i], .msg_namelen = sizeof from[i],
                                              .msg_iov = &iov[i], .msg_iovlen = 1 };
        }
        int n = recvmmsg(fd, msg, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("udp_echo: recvmmsg");
            return 1;
        }
        for (int i = 0; i < n; i++)
            iov[i].iov_len = msg[i].msg_len;
        for (int off = 0; off < n;) {
            int s = sendmmsg(fd, msg + off, (unsigned)(n - off), 0);
            if (s <= 0)
                break; /* a full socket drops them, as the network may */
            off += s;
        }
    }
}
