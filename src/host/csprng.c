#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
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

int tlm_host_rand(tlm_rand *r, tlm_chacha *c)
{
    uint8_t key[32];
    const int bad = tlm_host_entropy(NULL, key, sizeof key);
    tlm_chacha_key(c, key);
    memset(key, 0, sizeof key);
    tlm_rand_init(r, tlm_chacha_fill, c);
    if (bad) r->failed = 1;
    return bad ? -1 : 0;
}
