#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sodium.h>
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

/* ChaCha20 (IETF) from libsodium, which picks its SIMD implementation for
 * this CPU: each refill of the cache is one stream under the key with a
 * fresh nonce (the counter), so no keystream is ever used twice. */
static int sodium_fill(void *ctx, uint8_t *buf, size_t n)
{
    tlm_host_source *s = ctx;
    while (n) {
        if (!s->left) {
            uint8_t key[32], nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0};
            for (int i = 0; i < 8; i++)
                for (int b = 0; b < 4; b++) key[4 * i + b] = (uint8_t)(s->c.key[i] >> (8 * b));
            for (int b = 0; b < 8; b++) nonce[b] = (uint8_t)(s->c.counter >> (8 * b));
            s->c.counter++;
            const int rc = crypto_stream_chacha20_ietf(s->cache, sizeof s->cache, nonce, key);
            sodium_memzero(key, sizeof key);
            if (rc != 0) return -1;
            s->left = sizeof s->cache;
        }
        const size_t k = n < s->left ? n : s->left;
        uint8_t *from = s->cache + sizeof s->cache - s->left;
        memcpy(buf, from, k);
        sodium_memzero(from, k);
        s->left -= (uint32_t)k;
        buf += k;
        n -= k;
    }
    return 0;
}

int tlm_host_rand(tlm_rand *r, tlm_host_source *s)
{
    uint8_t key[32];
    const int bad = sodium_init() < 0 || tlm_host_entropy(NULL, key, sizeof key);
    tlm_chacha_key(&s->c, key);
    sodium_memzero(key, sizeof key);
    s->left = 0;
    tlm_rand_init(r, sodium_fill, s);
    if (bad) r->failed = 1;
    return bad ? -1 : 0;
}
