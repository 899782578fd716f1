/* The host's cryptographic random source for the privacy mechanisms. */
#ifndef TLM_HOST_CSPRNG_H
#define TLM_HOST_CSPRNG_H

#include <stddef.h>
#include <stdint.h>

/* A tlm_entropy_fn reading getrandom(2) (ctx unused); 0 on success. */
int tlm_host_entropy(void *ctx, uint8_t *buf, size_t n);

#include "tritlm/dp.h"

/* The host's random source for privatization: ChaCha20 (libsodium's)
 * keyed with 32 bytes from getrandom(2). Returns 0, or -1 if the system has no entropy
 * to give (then r is a failed source: every privatization refuses). */
int tlm_host_rand(tlm_rand *r, tlm_chacha *c);

#endif
