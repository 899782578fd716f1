/* The host's cryptographic random source for the privacy mechanisms. */
#ifndef TLM_HOST_CSPRNG_H
#define TLM_HOST_CSPRNG_H

#include <stddef.h>
#include <stdint.h>

/* A tlm_entropy_fn reading getrandom(2) (ctx unused); 0 on success. */
int tlm_host_entropy(void *ctx, uint8_t *buf, size_t n);

#include "tritlm/dp.h"

/* The state behind the host's random source: the key and stream counter,
 * and 2 KB of keystream generated at once (libsodium's SIMD ChaCha20 costs
 * 0.8 ns a byte in 256-byte calls, 0.5 in 1 KB and larger ones) and handed
 * to the core's 256-byte buffer in pieces, each byte once and wiped when
 * handed out. */
typedef struct tlm_host_source {
    tlm_chacha c;
    uint32_t left; /* unread bytes at the end of cache */
    uint8_t cache[2048];
} tlm_host_source;

/* The host's random source for privatization: ChaCha20 (libsodium's)
 * keyed with 32 bytes from getrandom(2). Returns 0, or -1 if the system has no entropy
 * to give (then r is a failed source: every privatization refuses). */
int tlm_host_rand(tlm_rand *r, tlm_host_source *s);

#endif
