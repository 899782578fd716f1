/* Choosing the next token from logits: greedy, temperature, top-p.
 * Seedable and deterministic. (This PRNG is for sampling only; privacy
 * noise uses the CSPRNG interface.) */
#ifndef TRITLM_SAMPLER_H
#define TRITLM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tlm_sampler {
    float temperature; /* 0: greedy */
    float top_p;       /* in (0,1): nucleus sampling; otherwise the full distribution */
    uint64_t state;    /* PCG32 state */
    uint64_t inc;      /* PCG32 stream */
} tlm_sampler;

void tlm_sampler_init(tlm_sampler *s, float temperature, float top_p, uint64_t seed);

/* Bytes of scratch tlm_sample needs for n logits. */
size_t tlm_sampler_scratch_bytes(uint32_t n);

/* Picks a token from logits[0..n). The logits are overwritten (with
 * probabilities) unless sampling is greedy. */
uint32_t tlm_sample(tlm_sampler *s, float *logits, uint32_t n, void *scratch);

/* Index of the first largest value. */
uint32_t tlm_argmax(const float *v, uint32_t n);

/* Uniform 32-bit value from the sampler's generator. */
uint32_t tlm_sampler_next_u32(tlm_sampler *s);

#ifdef __cplusplus
}
#endif
#endif
