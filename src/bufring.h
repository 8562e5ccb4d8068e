/* bufring.h - the receive buffer pool: one provided-buffer ring per worker.
 *
 * All connections of a worker receive into the same pool, so an idle
 * connection holds no receive memory. The kernel picks a buffer when data
 * arrives and names it in the CQE; moonring hands it back with
 * bufring_put() as soon as the Lua callback that saw the bytes returns. */
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
};

/* Map the ring and the buffers and fill the ring with every buffer.
 * Returns 0 or a negative errno. */
int bufring_init(struct bufring *b, unsigned count, unsigned size);

/* Register the ring with the kernel as buffer group bgid. */
int bufring_register(struct bufring *b, struct io_uring *ring, uint16_t bgid);

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

/* Buffers the kernel may still fill. */
static inline unsigned bufring_avail(const struct bufring *b)
{
    return b->count - b->out;
}

/* The buffer id carried in a receive CQE's flags. */
static inline unsigned bufring_cqe_bid(uint32_t cqe_flags)
{
    return cqe_flags >> IORING_CQE_BUFFER_SHIFT;
}

#endif
