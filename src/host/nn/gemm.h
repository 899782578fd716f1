/* Dense matrix products for training and evaluation on the host. All
 * matrices are row-major float. */
#ifndef TLM_NN_GEMM_H
#define TLM_NN_GEMM_H

#include <stddef.h>
#include <stdint.h>

/* C[M x N] = (accumulate ? C : 0) + A[M x K] * B[K x N] */
void tlm_gemm(float *C, const float *A, const float *B, uint32_t M, uint32_t K, uint32_t N, int accumulate);

/* The same with C's rows ldc floats apart (C is a column block of a wider matrix). */
void tlm_gemm_ld(float *C, size_t ldc, const float *A, const float *B, uint32_t M, uint32_t K, uint32_t N,
                 int accumulate);

/* dst[cols x rows] = transpose of src[rows x cols] */
void tlm_transpose(float *dst, const float *src, uint32_t rows, uint32_t cols);
/* The same with dst's rows ld >= rows floats apart (the rest of each row untouched). */
void tlm_transpose_ld(float *dst, size_t ld, const float *src, uint32_t rows, uint32_t cols);

#endif
