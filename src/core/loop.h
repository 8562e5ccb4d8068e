/* loop.h - the io_uring of one worker: set-up, submission, draining. */
#ifndef MR_LOOP_H
#define MR_LOOP_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

struct loop {
    struct io_uring ring;
    bool up;                    /* the ring exists */
    unsigned setup_flags;       /* the flags the kernel accepted */
    uint64_t enters;            /* submit-and-wait calls */
    uint64_t cqes;              /* completions handled */
    unsigned features;          /* IORING_FEAT_* of the ring */
    unsigned batch_wait_us;     /* min-wait batching, 0: off */
    unsigned quiet;             /* quiet SQEs queued since the last wait */
};

/* Create the ring with a CQ of cq_entries, preferring SINGLE_ISSUER |
 * DEFER_TASKRUN and falling back when the kernel refuses them.
 * Returns 0 or a negative errno. */
int loop_init(struct loop *l, unsigned sq_entries, unsigned cq_entries);
void loop_destroy(struct loop *l);

/* Min-wait batching (Linux 6.12): each wait, once a completion is there,
 * goes on up to usec for more, unless LOOP_BATCH of them arrive first.
 * Fewer wake-ups under moderate load, up to usec more latency at low
 * load. Returns 0, or -EOPNOTSUPP when the kernel lacks it. */
int loop_set_batch_wait(struct loop *l, unsigned usec);
#define LOOP_BATCH 64

/* A free SQE; when the SQ is full, submit what is queued and retry.
 * Never returns NULL. */
struct io_uring_sqe *loop_sqe(struct loop *l);

/* The SQE just queued is quiet: it completes while it is submitted (it
 * never waits: a send with MSG_DONTWAIT), and its CQE can wait until
 * something else happens. The next wait then asks for one completion
 * more than the quiet ones, so a send completing inline does not end the
 * wait at once and cost a second io_uring_enter to wait for the next
 * request. Only for SQEs that cannot go async: the count must come true
 * without waiting. (With --batch-wait the wait asks for LOOP_BATCH.) */
static inline void loop_quiet(struct loop *l) { l->quiet++; }

/* Above this many quiet SQEs the wait asks for one completion, as if
 * none were quiet. Each wait runs as many pending completions as it asks
 * for (at least 20): asking for thousands, at 10,000 busy connections,
 * made one turn of the loop serve thousands of requests, with all their
 * output buffered at once (5 MB more RSS) and more latency. Capped like
 * --batch-wait's LOOP_BATCH; a turn with this many sends is a busy one,
 * and its wait returns at once anyway. */
#define LOOP_QUIET_MAX (LOOP_BATCH - 1)

/* Submit everything queued and wait for at least one completion besides
 * the quiet ones, in one io_uring_enter. ts may be NULL (wait as long as
 * it takes). Returns 0, -ETIME on timeout, or another negative errno
 * worth logging. */
int loop_wait(struct loop *l, struct __kernel_timespec *ts);

typedef void (*loop_handler)(void *ctx, struct io_uring_cqe *cqe);

/* Hand every ready completion to fn, then release them all at once.
 * Returns how many were handled. */
unsigned loop_drain(struct loop *l, loop_handler fn, void *ctx);

#endif
