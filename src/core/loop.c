/* loop.c - ring set-up with flag fallback, SQE supply, batched draining. */
#include "loop.h"
#include "log.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int loop_init(struct loop *l, unsigned sq_entries, unsigned cq_entries)
{
    /* Most wanted first. DEFER_TASKRUN runs completions only when we
     * enter the kernel to wait, so they arrive in batches; it needs
     * SINGLE_ISSUER (6.1). COOP_TASKRUN (5.19) is the next best. */
    static const unsigned tries[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int ret = -EINVAL;
    memset(l, 0, sizeof *l);
    for (unsigned i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = tries[i] | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
        p.cq_entries = cq_entries;
        ret = io_uring_queue_init_params(sq_entries, &l->ring, &p);
        if (ret == 0) {
            l->up = true;
            l->setup_flags = p.flags;
            l->features = p.features;
            break;
        }
        if (ret != -EINVAL)
            return ret;
        log_debug("io_uring refused setup flags 0x%x, trying fewer", p.flags);
    }
    if (ret)
        return ret;
    if (!(l->setup_flags & IORING_SETUP_DEFER_TASKRUN))
        log_warn("kernel refused DEFER_TASKRUN: completions will be less batched");
    /* A registered ring fd saves a file lookup on every io_uring_enter;
     * it is only an optimisation, so failure is fine. */
    if (io_uring_register_ring_fd(&l->ring) < 0)
        log_debug("io_uring_register_ring_fd failed; using the plain fd");
    return 0;
}

void loop_destroy(struct loop *l)
{
    if (l->up)
        io_uring_queue_exit(&l->ring);
    l->up = false;
}

struct io_uring_sqe *loop_sqe(struct loop *l)
{
    struct io_uring_sqe *sqe;
    while (!(sqe = io_uring_get_sqe(&l->ring))) {
        int ret = io_uring_submit(&l->ring);
        if (ret == -EBUSY || ret == -EAGAIN)
            io_uring_get_events(&l->ring); /* flush CQ overflow first */
        else if (ret < 0)
            log_error("io_uring_submit: %s", strerror(-ret));
    }
    return sqe;
}

/* IORING_FEAT_MIN_TIMEOUT and the min_wait_usec field of the wait
 * argument (the pad of liburing 2.3's struct) come with Linux 6.12. */
#define FEAT_MIN_TIMEOUT (1U << 15)

int loop_set_batch_wait(struct loop *l, unsigned usec)
{
    if (usec && !(l->features & FEAT_MIN_TIMEOUT))
        return -EOPNOTSUPP;
    l->batch_wait_us = usec;
    return 0;
}

/* Publish the queued SQEs to the kernel without entering it (liburing
 * 2.3 keeps its own version private); returns how many are pending. */
static unsigned flush_sq(struct io_uring *ring)
{
    struct io_uring_sq *sq = &ring->sq;
    unsigned tail = sq->sqe_tail;
    if (sq->sqe_head != tail) {
        sq->sqe_head = tail;
        io_uring_smp_store_release(sq->ktail, tail);
    }
    return tail - IO_URING_READ_ONCE(*sq->khead);
}

/* Submit and wait with min_wait_usec set: one io_uring_enter, as
 * io_uring_submit_and_wait_timeout would make. */
static int submit_and_batch(struct loop *l, struct __kernel_timespec *ts)
{
    /* Without an overall timeout the kernel ends the wait at min_wait
     * even with nothing to show: give it one that never comes first. */
    static struct __kernel_timespec far = { .tv_sec = 3600 };
    if (!ts)
        ts = &far;
    struct io_uring *ring = &l->ring;
    struct io_uring_getevents_arg arg = {
        .pad = l->batch_wait_us, /* min_wait_usec */
        .ts = (uint64_t)(uintptr_t)ts,
    };
    unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
    int fd = ring->ring_fd;
    if (ring->enter_ring_fd != ring->ring_fd) { /* registered */
        fd = ring->enter_ring_fd;
        flags |= IORING_ENTER_REGISTERED_RING;
    }
    long ret = syscall(__NR_io_uring_enter, fd, flush_sq(ring), LOOP_BATCH,
                       flags, &arg, sizeof arg);
    return ret < 0 ? -errno : (int)ret;
}

int loop_wait(struct loop *l, struct __kernel_timespec *ts)
{
    struct io_uring_cqe *cqe;
    unsigned want = 1 + (l->quiet > LOOP_QUIET_MAX ? 0 : l->quiet);
    l->quiet = 0;
    l->enters++;
    int ret = l->batch_wait_us
        ? submit_and_batch(l, ts)
        : io_uring_submit_and_wait_timeout(&l->ring, &cqe, want, ts, NULL);
    if (ret == -EINTR || ret == -EAGAIN)
        return 0;
    if (ret == -EBUSY) {
        /* the CQ overflowed: reap, and the next wait submits */
        io_uring_get_events(&l->ring);
        return 0;
    }
    return ret < 0 ? ret : 0;
}

unsigned loop_drain(struct loop *l, loop_handler fn, void *ctx)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&l->ring, head, cqe) {
        fn(ctx, cqe);
        n++;
    }
    io_uring_cq_advance(&l->ring, n);
    l->cqes += n;
    /* Completions that did not fit in the CQ wait in the kernel's
     * overflow list: bring them in for the next round. */
    if (io_uring_cq_has_overflow(&l->ring))
        io_uring_get_events(&l->ring);
    return n;
}
