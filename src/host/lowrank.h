/* A matrix as a product of two thin factors, for federated updates whose
 * change to a matrix has a low rank (fine-tuning with adapters). */
#ifndef TLM_HOST_LOWRANK_H
#define TLM_HOST_LOWRANK_H

#include <stdint.h>

#include "tritlm/status.h"

/* D (rows x cols) ~ B A with B (rows x rank, orthonormal columns) and
 * A = B^T D (rank x cols): B spans the range of D Omega for a Gaussian
 * Omega (cols x rank, from seed) after two power iterations, by modified
 * Gram-Schmidt in double precision. Exact up to rounding when D has rank
 * at most `rank`; otherwise close to D's best rank-`rank` part. */
tlm_status tlm_lowrank_factor(const float *D, uint32_t rows, uint32_t cols, uint32_t rank, uint64_t seed, float *B,
                              float *A, tlm_error *err);

#endif
