/* fuzz_cli.c - option parsing: any argv (NUL-separated input) parses or
 * fails with a message; what it accepts is within bounds. */
#include "cli.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n > 4096)
        return 0;
    char *buf = malloc(n + 1);
    memcpy(buf, d, n);
    buf[n] = 0;
    char *argv[66] = { "moonring" };
    int argc = 1;
    for (char *p = buf; p < buf + n && argc < 64; p += strlen(p) + 1)
        argv[argc++] = p;
    argv[argc] = NULL;
    struct cli_opts o;
    char err[256];
    err[0] = 0;
    enum cli_result r = cli_parse(argc, argv, &o, err, sizeof err);
    if (r == CLI_ERROR && !err[0])
        abort();
    if (r == CLI_RUN &&
        (o.port < 0 || o.port > 65535 || o.workers < 0 || o.buffers == 0 ||
         (o.buffers & (o.buffers - 1)) || o.buffer_size < 64 ||
         !(o.shutdown_timeout >= 0) || o.script_argc < 0))
        abort();
    free(buf);
    return 0;
}
