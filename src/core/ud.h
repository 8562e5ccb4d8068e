/* ud.h - user_data tags for io_uring operations.
 *
 * Every SQE moonring submits carries a 64-bit tag:
 *
 *   bits 63..56  operation kind (enum ud_op)
 *   bits 55..32  generation of the owning slot (24 bits)
 *   bits 31..0   slot index of the owner (connection, listener...)
 *
 * or, for OP_TASK (an operation that is not a connection's: a signal
 * read, a timeout, later a file read), the kind in bits 63..56 and a
 * pointer to its struct core_op below them.
 *
 * A completion whose generation no longer matches its slot belongs to a
 * connection that has since been freed (and maybe reused): it is late and
 * must be dropped. */
#ifndef MR_UD_H
#define MR_UD_H

#include <stdint.h>

enum ud_op {
    OP_NONE = 0,
    OP_ACCEPT,        /* multishot accept on listener `slot` */
    OP_ACCEPT_RETRY,  /* timeout: re-arm accepts after EMFILE/ENFILE */
    OP_RECV,          /* multishot receive on a connection */
    OP_SEND,          /* the one send in flight on a connection */
    OP_CANCEL,        /* cancel/shutdown in a close chain: errors only */
    OP_CLOSE,         /* close of a connection's fd: the last CQE */
    OP_CLOSE_RAW,     /* close of an fd that never became a connection */
    OP_CONNECT,       /* an outbound connection's connect */
    OP_TASK,          /* any other operation: the tag holds its core_op */
    OP_MAX
};

#define UD_GEN_BITS 24
#define UD_GEN_MASK ((1u << UD_GEN_BITS) - 1)

static inline uint64_t ud_make(enum ud_op op, uint32_t gen, uint32_t slot)
{
    return ((uint64_t)op << 56) | ((uint64_t)(gen & UD_GEN_MASK) << 32) | slot;
}

static inline enum ud_op ud_op(uint64_t ud) { return (enum ud_op)(ud >> 56); }
static inline uint32_t ud_gen(uint64_t ud) { return (uint32_t)(ud >> 32) & UD_GEN_MASK; }
static inline uint32_t ud_slot(uint64_t ud) { return (uint32_t)ud; }

/* User-space pointers fit in 56 bits (47 with 4-level paging). */
#define UD_PTR_MASK ((1ull << 56) - 1)

static inline uint64_t ud_make_ptr(enum ud_op op, const void *p)
{
    return ((uint64_t)op << 56) | ((uint64_t)(uintptr_t)p & UD_PTR_MASK);
}

static inline void *ud_ptr(uint64_t ud) { return (void *)(uintptr_t)(ud & UD_PTR_MASK); }

/* Next generation for a slot; never 0, so a zeroed tag never matches. */
static inline uint32_t ud_next_gen(uint32_t gen)
{
    gen = (gen + 1) & UD_GEN_MASK;
    return gen ? gen : 1;
}

#endif
