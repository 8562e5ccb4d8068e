/* loop.c - ring set-up with flag fallback, SQE supply, batched draining. */
#include "loop.h"
#include "log.h"

#include <errno.h>
#include <string.h>

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

int loop_wait(struct loop *l, struct __kernel_timespec *ts)
{
    struct io_uring_cqe *cqe;
    l->enters++;
    int ret = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, ts, NULL);
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
