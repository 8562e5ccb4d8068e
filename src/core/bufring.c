/* bufring.c - set up and tear down the provided-buffer ring.
 * liburing 2.3 has no io_uring_setup_buf_ring(): we mmap a page-aligned
 * ring ourselves, initialise it and register it. */
#include "bufring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int bufring_init(struct bufring *b, unsigned count, unsigned size)
{
    memset(b, 0, sizeof *b);
    if (!count || (count & (count - 1)) || count > 32768 || !size)
        return -EINVAL;
    b->count = count;
    b->size = size;
    b->mask = io_uring_buf_ring_mask(count);
    b->br_bytes = (size_t)count * sizeof(struct io_uring_buf);
    b->base_bytes = (size_t)count * size;
    /* The buffers are not touched here: pages become resident only as
     * the kernel fills them, so an unused pool costs address space only. */
    b->br = map(b->br_bytes);
    b->base = map(b->base_bytes);
    if (!b->br || !b->base) {
        bufring_destroy(b);
        return -ENOMEM;
    }
    io_uring_buf_ring_init(b->br);
    for (unsigned i = 0; i < count; i++)
        io_uring_buf_ring_add(b->br, b->base + (size_t)i * size, size,
                              (unsigned short)i, b->mask, (int)i);
    io_uring_buf_ring_advance(b->br, (int)count);
    return 0;
}

int bufring_register(struct bufring *b, struct io_uring *ring, uint16_t bgid)
{
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (unsigned long)b->br;
    reg.ring_entries = b->count;
    reg.bgid = bgid;
    reg.pad = BUFRING_INC; /* the kernel's flags field, later than liburing 2.3 */
    b->bgid = bgid;
    b->off = calloc(b->count, sizeof *b->off);
    if (b->off && io_uring_register_buf_ring(ring, &reg, 0) == 0)
        return 0;
    free(b->off); /* before 6.12: whole buffers */
    b->off = NULL;
    reg.pad = 0;
    return io_uring_register_buf_ring(ring, &reg, 0);
}

int bufring_register_whole(struct bufring *b, struct io_uring *ring,
                           uint16_t bgid)
{
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (unsigned long)b->br;
    reg.ring_entries = b->count;
    reg.bgid = bgid;
    b->bgid = bgid;
    return io_uring_register_buf_ring(ring, &reg, 0);
}

void bufring_destroy(struct bufring *b)
{
    if (b->br)
        munmap(b->br, b->br_bytes);
    if (b->base)
        munmap(b->base, b->base_bytes);
    free(b->off);
    b->br = NULL;
    b->base = NULL;
    b->off = NULL;
}
