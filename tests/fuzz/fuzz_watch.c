/* fuzz_watch.c - inotify event parsing: any bytes, however truncated or
 * malformed, are parsed without reading past them. */
#include "watch.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    static struct watch w;
    static int ready;
    if (!ready) {
        watch_init(&w);
        watch_add(&w, "/tmp/app.lua");
        ready = 1;
    }
    /* a copy of the exact size, so that ASan sees any read past the end;
     * 8-aligned, as the kernel's events are */
    char *copy = malloc(n ? n : 1);
    memcpy(copy, d, n);
    volatile bool hit = watch_match(&w, copy, n);
    (void)hit;
    free(copy);
    return 0;
}
