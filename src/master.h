/* master.h - several workers: start them, forward signals, restart the
 * ones that die. */
#ifndef MR_MASTER_H
#define MR_MASTER_H

#include "cli.h"

/* A worker's whole life: load the script, serve on listen_fd, return
 * the exit status. `index` counts from 1. Provided by main.c. */
int serve(const struct cli_opts *o, int listen_fd, int index);

/* Run n workers, worker i on fds[i]; returns the exit status once they
 * have all stopped after SIGTERM or SIGINT. */
int master_run(const struct cli_opts *o, const int *fds, int n);

#endif
