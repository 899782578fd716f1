#define _GNU_SOURCE
#include <errno.h>
#include <sys/random.h>

#include "csprng.h"

int tlm_host_entropy(void *ctx, uint8_t *buf, size_t n)
{
    (void)ctx;
    while (n) {
        const ssize_t k = getrandom(buf, n, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += k;
        n -= (size_t)k;
    }
    return 0;
}
