/* core_int.h - what the files of the core share; not for the layers
 * above, which use core.h. */
#ifndef MR_CORE_INT_H
#define MR_CORE_INT_H

#include "core.h"

/* conn_io.c: the ring side of connections */
void conn_io_start(struct core *k, struct conn *c);
void conn_io_on_recv(struct core *k, struct conn *c, struct io_uring_cqe *cqe);
void conn_io_on_send(struct core *k, struct conn *c, struct io_uring_cqe *cqe);
void conn_io_on_close(struct core *k, struct conn *c, struct io_uring_cqe *cqe);
void conn_io_on_connect(struct core *k, struct conn *c, struct io_uring_cqe *cqe);
/* Start an outbound connection on c (CONNECTING) to addr; takes addr. */
void conn_io_connect(struct core *k, struct conn *c, void *addr, unsigned len);
void conn_io_idle_check(struct core *k, uint64_t key);
/* A closing connection's timer (TIMER_DRAIN, TIMER_LINGER*) is due. */
void conn_io_close_timer(struct core *k, unsigned kind, uint64_t key);
/* The phases after the completions of a turn, in this order; flush
 * frees the connections that are done. */
void conn_io_resume(struct core *k);
void conn_io_notify_closes(struct core *k);
void conn_io_flush(struct core *k);
void conn_io_rearm(struct core *k);

/* listener.c */
void listener_arm(struct core *k, unsigned i);
void listener_on_accept(struct core *k, unsigned i, struct io_uring_cqe *cqe);
/* The retry timeout fired, or a connection closed while paused. */
void listener_on_retry(struct core *k);
void listener_stop_all(struct core *k);

/* udp.c: re-arm the receives that ended, after the turn; stop the
 * listeners at shutdown; free everything once the ring is gone */
void udp_rearm(struct core *k);
void udp_stop_listeners(struct core *k);
void udp_free(struct core *k);
/* After the drain: the sends the last wait submitted are over. */
void udp_sent(struct core *k, struct udp_tx *list);

/* resolv.c: its timers' entries (TIMER_RESOLV), and its state, freed
 * once the ring is gone */
void resolv_on_timer(struct core *k, uint64_t key);
void resolv_free(struct core *k);

/* fs.c: before the ring goes, cancel the file requests in flight and
 * wait for their completions (fs_quiesce); once it is gone, free them
 * (fs_free), or leak those the kernel may still use. */
bool fs_quiesce(struct core *k);
void fs_free(struct core *k);

#endif
