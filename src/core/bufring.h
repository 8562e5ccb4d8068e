/* bufring.h - the receive buffer pool: one provided-buffer ring per worker.
 *
 * All connections of a worker receive into the same pool, so an idle
 * connection holds no receive memory. The kernel picks a buffer when data
 * arrives and names it in the CQE; moonring hands it back with
 * bufring_put() as soon as the handler that saw the bytes returns. */
#ifndef MR_BUFRING_H
#define MR_BUFRING_H

#include <liburing.h>
#include <stddef.h>
#include <stdint.h>

struct bufring {
    struct io_uring_buf_ring *br;  /* the ring the kernel reads from */
    size_t br_bytes;
    unsigned char *base;           /* count * size bytes of buffers */
    size_t base_bytes;
    unsigned size;                 /* bytes per buffer */
    unsigned count;                /* a power of two */
    int mask;                      /* io_uring_buf_ring_mask(count) */
    uint16_t bgid;                 /* buffer group id once registered */
    unsigned out;                  /* buffers delivered to us, not yet put back */
    uint32_t *off;                 /* incremental mode: bytes of each buffer
                                      already delivered; NULL otherwise */
};

/* Incremental consumption (Linux 6.12): the kernel fills a buffer from
 * where the last receive stopped, so small messages from all connections
 * pack one after another into the same warm buffer. A completion with
 * BUF_MORE leaves the buffer with the kernel. */
#define BUFRING_INC       2u          /* IOU_PBUF_RING_INC */
#define BUFRING_CQE_MORE  (1u << 4)   /* IORING_CQE_F_BUF_MORE */

/* Map the ring and the buffers and fill the ring with every buffer.
 * Returns 0 or a negative errno. */
int bufring_init(struct bufring *b, unsigned count, unsigned size);

/* Register the ring with the kernel as buffer group bgid, incremental
 * when the kernel can. */
int bufring_register(struct bufring *b, struct io_uring *ring, uint16_t bgid);

/* The same, always with whole buffers: for datagrams, each of which
 * must start a buffer of its own (the recvmsg header comes first). */
int bufring_register_whole(struct bufring *b, struct io_uring *ring,
                           uint16_t bgid);

void bufring_destroy(struct bufring *b);

/* A completion delivered buffer bid: account for it and return its bytes. */
static inline unsigned char *bufring_take(struct bufring *b, unsigned bid)
{
    b->out++;
    return b->base + (size_t)bid * b->size;
}

/* Give buffer bid back to the kernel. */
static inline void bufring_put(struct bufring *b, unsigned bid)
{
    io_uring_buf_ring_add(b->br, b->base + (size_t)bid * b->size, b->size,
                          (unsigned short)bid, b->mask, 0);
    io_uring_buf_ring_advance(b->br, 1);
    b->out--;
}

/* The buffer id carried in a receive CQE's flags. */
static inline unsigned bufring_cqe_bid(uint32_t cqe_flags)
{
    return cqe_flags >> IORING_CQE_BUFFER_SHIFT;
}

/* A receive completion (flags, res > 0): where its bytes are. */
static inline unsigned char *bufring_recv_data(struct bufring *b, uint32_t flags)
{
    unsigned bid = bufring_cqe_bid(flags);
    unsigned char *p = bufring_take(b, bid);
    return b->off ? p + b->off[bid] : p;
}

/* The bytes of that completion have been used: give the buffer back,
 * unless the kernel goes on filling it. */
static inline void bufring_recv_done(struct bufring *b, uint32_t flags, unsigned res)
{
    unsigned bid = bufring_cqe_bid(flags);
    if (b->off && (flags & BUFRING_CQE_MORE)) {
        b->off[bid] += res;
        b->out--;
        return;
    }
    if (b->off)
        b->off[bid] = 0;
    bufring_put(b, bid);
}

/* Buffers the kernel may still fill. */
static inline unsigned bufring_avail(const struct bufring *b)
{
    return b->count - b->out;
}

#endif
