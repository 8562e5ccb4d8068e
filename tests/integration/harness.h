/* harness.h - what the integration tests share: start the real binary on
 * an ephemeral loopback port, talk to it over real sockets, stop it by
 * its PID. Every wait is bounded. */
#ifndef MR_HARNESS_H
#define MR_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define H_WAIT_MS 10000   /* generous: the sanitizer build is slow */

struct h_server {
    pid_t pid;
    int port;
    int err_fd;           /* where the server's stderr is read */
    bool is_file;         /* a file (servers), else a pipe (h_run, h_exec) */
    char *log;            /* everything read from stderr so far */
    size_t log_len, log_cap;
};

/* Start moonring (MOONRING_BIN, default ./moonring) with argv (NULL-
 * terminated, without the program name) plus "-p 0" unless argv has -l
 * (then the port is the first listener's); wait until it logs
 * "listening on ..." and parse the port. Fails the test otherwise. */
void h_start(struct h_server *s, const char *const *argv);

/* When not 0, the next servers start with this fd limit (soft and hard). */
extern unsigned h_nofile;

/* Write text as app.lua in a fresh temp directory and start moonring
 * with opts before the script and args after it (either may be NULL).
 * Returns the script's path. */
char *h_serve(struct h_server *s, const char *text, const char *const *opts,
              const char *const *args);

/* Stop with SIGTERM, expecting exit status 0, and free the server's log
 * and path (which may be NULL). */
void h_finish(struct h_server *s, char *path);

/* The resident memory of pid, in KiB. */
long h_rss_kib(pid_t pid);

/* One line from fd, without its newline, read within ms ("" if none);
 * the buffer is static. */
char *h_line(int fd, int ms);

/* Read what the server wrote to stderr so far (waiting up to ms for
 * `want` to appear when it is not NULL). Returns true if want is there. */
bool h_log_wait(struct h_server *s, const char *want, int ms);

/* How many times needle occurs in the log. */
int h_log_count(struct h_server *s, const char *needle);

/* Send sig (0: none, just wait), wait up to H_WAIT_MS for exit (then
 * SIGKILL); returns the exit status (or 128 + signal). Safe to call
 * twice. */
int h_stop(struct h_server *s, int sig);

/* Run moonring with argv to completion (killed after H_WAIT_MS); returns
 * its exit status and its stderr in *err (malloc'd). */
int h_run(const char *const *argv, char **err);

/* Run another program (a client or a peer: curl, redis-cli...) with
 * input on its stdin (may be NULL); its stdout (and stderr, if
 * with_stderr) into *out (malloc'd). Killed after ms. Returns its exit
 * status, or -1 if it is not installed. */
int h_exec(const char *const *argv, const char *input, char **out, int ms,
           bool with_stderr);

/* The same for a client the test needs: its stdout, which must come
 * with exit status 0 (else the test fails, saying so, and whether the
 * program is missing). */
char *h_client(const char *const *argv, const char *input);

/* Fail the test unless out contains needle. */
void h_contains(const char *out, const char *needle);

/* Start another program in the background, output to /dev/null; stop it
 * with h_kill. */
pid_t h_spawn(const char *const *argv);
void h_kill(pid_t pid);

/* A redis-server of the test's own on 127.0.0.1:port, persistence off,
 * accepting when this returns; stop it with h_kill. */
pid_t h_redis(int port);

/* A numeric field of that redis-server's INFO, -1 when absent. */
long h_redis_info(int port, const char *field);

/* Wait until something accepts on 127.0.0.1:port (true) or ms pass. */
bool h_wait_port(int port, int ms);

/* A free TCP port on 127.0.0.1 (bound and released at once). */
int h_free_port(void);

/* A socket of the test's own listening on 127.0.0.1, on a port the
 * kernel picks (into *port), with this backlog. */
int h_listen(int backlog, int *port);

/* A TCP connection to 127.0.0.1 (or ::1 when v6) with TCP_NODELAY. */
int h_connect(int port, bool v6);

void h_send_all(int fd, const void *p, size_t n);

/* Read exactly n bytes within ms; returns the count read (< n on EOF,
 * error or timeout). */
size_t h_recv_exact(int fd, void *p, size_t n, int ms);

/* Wait up to ms for EOF or reset: true if the peer closed. */
bool h_wait_closed(int fd, int ms);

/* Send n bytes and read n back at the same time (so that large payloads
 * cannot deadlock); returns bytes received, into out. */
size_t h_echo(int fd, const void *in, void *out, size_t n, int ms);

/* Write text to a file in a fresh temp directory (or in dir if not NULL);
 * returns the malloc'd path. */
char *h_write_file(const char *dir, const char *name, const char *text);

/* The directory part of path (malloc'd). */
char *h_dirname(const char *path);

/* Save like an editor: "inplace" (truncate and write), "rename" (write a
 * temporary file and rename it over), or "recreate" (delete, create). */
void h_save(const char *path, const char *text, const char *how);

void h_fill_random(void *p, size_t n, unsigned seed);
void h_sleep_ms(int ms);

#endif
