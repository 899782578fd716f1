/* Deterministic generator for training (initialization, data windows):
 * splitmix64. Its whole state is one integer, saved in checkpoints. */
#ifndef TLM_TRAIN_RNG_H
#define TLM_TRAIN_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct tlm_rng {
    uint64_t state;
} tlm_rng;

static inline void tlm_rng_seed(tlm_rng *r, uint64_t seed) { r->state = seed ^ 0x5DEECE66Dull; }

/* splitmix64's output function: a bijective 64-bit mix. */
static inline uint64_t tlm_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t tlm_rng_next(tlm_rng *r) { return tlm_mix64(r->state += 0x9E3779B97F4A7C15ull); }

/* Uniform in [0, n), n > 0 (multiply-shift; bias below 2^-32 for n < 2^32). */
static inline uint64_t tlm_rng_below(tlm_rng *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)tlm_rng_next(r) * n) >> 64);
}

/* Standard normal (Box-Muller on two 53-bit uniforms). */
static inline double tlm_rng_normal(tlm_rng *r)
{
    double u1 = ((double)(tlm_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(tlm_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
