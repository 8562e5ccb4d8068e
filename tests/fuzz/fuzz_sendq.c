/* fuzz_sendq.c - the send queue against a reference byte stream: any
 * sequence of writes and (short) send completions must send exactly
 * what was written, in order. */
#include "sendq.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX (1 << 20)
static unsigned char ref[MAX], sent[MAX];

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    struct sendq q;
    memset(&q, 0, sizeof q);
    size_t nin = 0, nout = 0, i = 0;
    const void *p = NULL;
    size_t len = 0;
    while (i < n) {
        uint8_t op = d[i++];
        if (op < 128) {                         /* write op bytes of input */
            size_t k = op;
            if (k > n - i)
                k = n - i;
            if (nin + k > MAX)
                break;
            memcpy(ref + nin, d + i, k);
            if (sendq_append(&q, d + i, k))
                abort();
            nin += k;
            i += k;
        } else if (sendq_busy(&q)) {            /* a send completes, maybe short */
            size_t k = len ? (size_t)(op - 128) * len / 127 : 0;
            memcpy(sent + nout, p, k);
            nout += k;
            sendq_done(&q, k);
        } else if (sendq_next(&q, &p, &len) && len == 0) {
            abort();                            /* never an empty send */
        }
        if (sendq_pending(&q) != nin - nout)
            abort();
    }
    if (sendq_busy(&q)) {
        memcpy(sent + nout, p, len);
        nout += len;
        sendq_done(&q, len);
    }
    while (sendq_next(&q, &p, &len)) {
        memcpy(sent + nout, p, len);
        nout += len;
        sendq_done(&q, len);
    }
    if (nout != nin || memcmp(ref, sent, nin) || q.flight || q.pend)
        abort();
    return 0;
}
