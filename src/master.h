/* master.h - several workers: start them, forward signals, restart the
 * ones that die. */
#ifndef MR_MASTER_H
#define MR_MASTER_H

#include "cli.h"

#include <stdbool.h>
#include <stdint.h>

/* A worker's whole life: load the script, serve on listen_fd, return
 * the exit status. `index` counts from 1; busy_since is where it tells
 * the watchdog since when it has been busy. Provided by main.c. */
int serve(const struct cli_opts *o, int listen_fd, int index, uint64_t *busy_since);

/* Is a worker that has been busy since `since` (monotonic ns) stuck? */
bool master_stuck(const struct cli_opts *o, uint64_t since, uint64_t now);

/* Run n workers, worker i on fds[i]; returns the exit status once they
 * have all stopped after SIGTERM or SIGINT. */
int master_run(const struct cli_opts *o, const int *fds, int n);

#endif
