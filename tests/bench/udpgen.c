/* udpgen.c - datagram load for moonring's udp:// listeners and their
 * peers.
 *
 *   udpgen -p PORT [-H ADDR] [-c SOCKETS] [-w WINDOW] [-s SIZE] [-d SECS]
 *          [-W WARMUP_SECS] [-S SERVER_PID] [--dns]
 *
 * SOCKETS connected UDP sockets (8), each keeping WINDOW datagrams in
 * flight (16): sent with sendmmsg, answers taken with recvmmsg, a new
 * datagram for each answer. An echo's answer must be the datagram sent,
 * byte for byte (each carries its socket, sequence number and send time,
 * which gives the round trip). With --dns the datagrams are DNS queries
 * (A, AAAA and TXT for examples/dns.lua's names, and one that does not
 * exist) and an answer must carry its query's id, QR and the rcode
 * expected. A socket that hears nothing for 200 ms counts what it had in
 * flight as lost and starts again. With -S, the server's CPU time over
 * the measured interval is divided by the answers.
 *
 * Output, one line: dgrams N dgrams/s R p50_us A p99_us B lost L errors E
 * [server_cpu_us_per_req C] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXW  256
#define BATCH 64

static struct {
    const char *host;
    int port, socks, window, size, pid, dns;
    double secs, warmup;
} opt = { "127.0.0.1", 0, 8, 16, 64, 0, 0, 5, 1 };

struct sock {
    int fd;
    int inflight;
    uint32_t seq;
    uint64_t last;             /* when it last heard an answer */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_secs(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(buf, sizeof buf, f)) {
        if (f)
            fclose(f);
        return 0;
    }
    fclose(f);
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p)
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- what a datagram holds ---- */

struct stamp {
    uint32_t sock, seq;
    uint64_t sent;
};

static const char *const names[] = { "www.example.test", "example.test",
                                     "txt.example.test", "nope.example.test" };
static const int types[] = { 1, 28, 16, 1 };
static const int rcodes[] = { 0, 0, 0, 3 };

/* A DNS query for question q % 4 with id, into p; its length. */
static size_t dns_query(unsigned char *p, uint16_t id, unsigned q)
{
    size_t n = 0;
    p[n++] = (unsigned char)(id >> 8);
    p[n++] = (unsigned char)id;
    p[n++] = 1, p[n++] = 0;               /* RD */
    p[n++] = 0, p[n++] = 1;               /* one question */
    memset(p + n, 0, 6);
    n += 6;
    const char *name = names[q % 4];
    while (*name) {
        size_t l = strcspn(name, ".");
        p[n++] = (unsigned char)l;
        memcpy(p + n, name, l);
        n += l;
        name += l + (name[l] == '.');
    }
    p[n++] = 0;
    p[n++] = 0, p[n++] = (unsigned char)types[q % 4];
    p[n++] = 0, p[n++] = 1;
    return n;
}

static size_t make(unsigned char *p, unsigned s, uint32_t seq)
{
    if (opt.dns) /* the id: the socket's low bits and the sequence's */
        return dns_query(p, (uint16_t)((s << 12) | (seq & 0xfff)), seq);
    struct stamp st = { s, seq, now_ns() };
    for (int i = 0; i < opt.size; i++)
        p[i] = (unsigned char)(seq * 31 + (unsigned)i);
    memcpy(p, &st, (size_t)opt.size < sizeof st ? (size_t)opt.size : sizeof st);
    return (size_t)opt.size;
}

static uint64_t *lat;
static size_t nlat, caplat;
static uint64_t errors, lost;

/* Check an answer on socket s; its round trip in ns, 0 if unknown. */
static uint64_t check(const unsigned char *p, size_t n, unsigned s)
{
    if (opt.dns) {
        if (n < 12 || !(p[2] & 0x80) || (p[0] >> 4) != (s & 15)) {
            errors++;
            return 0;
        }
        unsigned seq = ((p[0] & 15u) << 8 | p[1]) & 0xfff;
        if ((p[3] & 15) != rcodes[seq % 4])
            errors++;
        return 0;
    }
    struct stamp st;
    if (n != (size_t)opt.size || n < sizeof st) {
        errors += n != (size_t)opt.size;
        return 0;
    }
    memcpy(&st, p, sizeof st);
    for (size_t i = sizeof st; i < n; i++)
        if (p[i] != (unsigned char)(st.seq * 31 + (unsigned)i)) {
            errors++;
            return 0;
        }
    if (st.sock != s)
        errors++;
    return now_ns() - st.sent;
}

static void note_lat(uint64_t ns)
{
    if (nlat == caplat) {
        caplat = caplat ? 2 * caplat : 1 << 16;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat)
            exit(1);
    }
    lat[nlat++] = ns;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- the loop ---- */

static void fill(struct sock *k, unsigned s)
{
    static unsigned char buf[BATCH][2048];
    static struct iovec iov[BATCH];
    static struct mmsghdr m[BATCH];
    int want = opt.window - k->inflight;
    if (want > BATCH)
        want = BATCH;
    for (int i = 0; i < want; i++) {
        iov[i].iov_base = buf[i];
        iov[i].iov_len = make(buf[i], s, k->seq + (uint32_t)i);
        memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
    }
    if (want <= 0)
        return;
    int n = sendmmsg(k->fd, m, (unsigned)want, MSG_DONTWAIT);
    if (n > 0) {
        k->inflight += n;
        k->seq += (uint32_t)n;
    }
}

/* Answers waiting on socket s; how many. */
static int drain(struct sock *k, unsigned s, int measuring)
{
    static unsigned char buf[BATCH][2048];
    static struct iovec iov[BATCH];
    static struct mmsghdr m[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i] = (struct iovec){ .iov_base = buf[i], .iov_len = sizeof buf[i] };
        memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(k->fd, m, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0)
        return 0;
    for (int i = 0; i < n; i++) {
        uint64_t rtt = check(buf[i], m[i].msg_len, s);
        if (measuring && rtt)
            note_lat(rtt);
    }
    k->inflight -= n;
    if (k->inflight < 0)
        k->inflight = 0;
    k->last = now_ns();
    return n;
}

static int usage(void)
{
    fprintf(stderr, "usage: udpgen -p PORT [-H ADDR] [-c SOCKETS] [-w WINDOW] [-s SIZE] "
                    "[-d SECS] [-W WARMUP] [-S PID] [--dns]\n");
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = { { "dns", no_argument, NULL, 'D' }, { 0, 0, 0, 0 } };
    int c;
    while ((c = getopt_long(argc, argv, "p:H:c:w:s:d:W:S:", lo, NULL)) != -1) {
        switch (c) {
        case 'p': opt.port = atoi(optarg); break;
        case 'H': opt.host = optarg; break;
        case 'c': opt.socks = atoi(optarg); break;
        case 'w': opt.window = atoi(optarg); break;
        case 's': opt.size = atoi(optarg); break;
        case 'd': opt.secs = atof(optarg); break;
        case 'W': opt.warmup = atof(optarg); break;
        case 'S': opt.pid = atoi(optarg); break;
        case 'D': opt.dns = 1; break;
        default: return usage();
        }
    }
    if (!opt.port || opt.socks < 1 || opt.socks > 4096 || opt.window < 1 ||
        opt.window > MAXW || opt.size < 1 || opt.size > 2048)
        return usage();
    if (opt.dns && opt.socks > 16) {
        fprintf(stderr, "udpgen: --dns takes at most 16 sockets\n");
        return 2;
    }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port) };
    if (inet_pton(AF_INET, opt.host, &a.sin_addr) != 1)
        return usage();
    struct sock *k = calloc((size_t)opt.socks, sizeof *k);
    struct pollfd *pf = calloc((size_t)opt.socks, sizeof *pf);
    for (int s = 0; s < opt.socks; s++) {
        int big = 1 << 20;
        k[s].fd = socket(AF_INET, SOCK_DGRAM, 0);
        setsockopt(k[s].fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        if (connect(k[s].fd, (struct sockaddr *)&a, sizeof a)) {
            perror("udpgen: connect");
            return 1;
        }
        pf[s] = (struct pollfd){ .fd = k[s].fd, .events = POLLIN };
        k[s].last = now_ns();
    }
    uint64_t t0 = now_ns(), start = t0 + (uint64_t)(opt.warmup * 1e9);
    uint64_t end = start + (uint64_t)(opt.secs * 1e9);
    uint64_t count = 0;
    double cpu0 = 0;
    int measuring = 0;
    for (;;) {
        uint64_t t = now_ns();
        if (!measuring && t >= start) {
            measuring = 1;
            count = 0;
            nlat = 0;
            lost = errors = 0;
            cpu0 = opt.pid ? cpu_secs(opt.pid) : 0;
        }
        if (t >= end)
            break;
        int got = 0;
        for (int s = 0; s < opt.socks; s++) {
            fill(&k[s], (unsigned)s);
            int n = drain(&k[s], (unsigned)s, measuring);
            got += n;
            if (!n && k[s].inflight && t - k[s].last > 200000000ull) {
                lost += (uint64_t)k[s].inflight; /* dropped somewhere */
                k[s].inflight = 0;
                k[s].last = t;
            }
        }
        count += (uint64_t)got;
        if (!got)
            poll(pf, (nfds_t)opt.socks, 1);
    }
    double secs = (double)(now_ns() - start) / 1e9;
    qsort(lat, nlat, sizeof *lat, cmp);
    double p50 = nlat ? (double)lat[nlat / 2] / 1e3 : 0;
    double p99 = nlat ? (double)lat[nlat * 99 / 100] / 1e3 : 0;
    printf("dgrams %llu dgrams/s %.0f p50_us %.1f p99_us %.1f lost %llu errors %llu",
           (unsigned long long)count, (double)count / secs, p50, p99,
           (unsigned long long)lost, (unsigned long long)errors);
    if (opt.pid && count)
        printf(" server_cpu_us_per_req %.3f", (cpu_secs(opt.pid) - cpu0) * 1e6 / (double)count);
    printf("\n");
    return 0;
}
