/* master.h - supervising workers: several as child processes of a
 * master, or one in this process with a watchdog thread. */
#ifndef MR_MASTER_H
#define MR_MASTER_H

#include "cli.h"

/* Run n workers, worker i on fds[i]; returns the exit status once they
 * have all stopped after SIGTERM or SIGINT. */
int master_run(const struct cli_opts *o, const int *fds, int n);

/* Run one worker on fd in this process, with no master: a thread ends
 * the process when the worker makes no progress for --handler-timeout (a
 * handler or the script's top-level code that never returns, a wait
 * stuck in the kernel), so that a supervisor such as systemd starts it
 * again rather than it hanging. */
int master_run_one(const struct cli_opts *o, const int *fds);

#endif
