/* The host's cryptographic random source for the privacy mechanisms. */
#ifndef TLM_HOST_CSPRNG_H
#define TLM_HOST_CSPRNG_H

#include <stddef.h>
#include <stdint.h>

/* A tlm_entropy_fn reading getrandom(2) (ctx unused); 0 on success. */
int tlm_host_entropy(void *ctx, uint8_t *buf, size_t n);

#endif
