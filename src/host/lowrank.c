#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lowrank.h"
#include "train/rng.h"

/* Y (n x r, row-major) = M (n x m) X (m x r), or M^T X when trans (M is m x n then). */
static void mul(double *Y, const float *M, const double *X, uint32_t n, uint32_t m, uint32_t r, int trans)
{
    memset(Y, 0, (size_t)n * r * sizeof *Y);
    if (!trans) {
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < m; j++) {
                const double v = M[(size_t)i * m + j];
                for (uint32_t k = 0; k < r; k++) Y[(size_t)i * r + k] += v * X[(size_t)j * r + k];
            }
    } else {
        for (uint32_t j = 0; j < m; j++)
            for (uint32_t i = 0; i < n; i++) {
                const double v = M[(size_t)j * n + i];
                for (uint32_t k = 0; k < r; k++) Y[(size_t)i * r + k] += v * X[(size_t)j * r + k];
            }
    }
}

/* The columns of Y (n x r) made orthonormal in place, twice-projected
 * Gram-Schmidt; a column with nothing left of its own becomes zero. */
static void orthonormalize(double *Y, uint32_t n, uint32_t r)
{
    for (uint32_t k = 0; k < r; k++) {
        double before = 0;
        for (uint32_t i = 0; i < n; i++) before += Y[(size_t)i * r + k] * Y[(size_t)i * r + k];
        for (int pass = 0; pass < 2; pass++)
            for (uint32_t p = 0; p < k; p++) {
                double dot = 0;
                for (uint32_t i = 0; i < n; i++) dot += Y[(size_t)i * r + p] * Y[(size_t)i * r + k];
                for (uint32_t i = 0; i < n; i++) Y[(size_t)i * r + k] -= dot * Y[(size_t)i * r + p];
            }
        double norm = 0;
        for (uint32_t i = 0; i < n; i++) norm += Y[(size_t)i * r + k] * Y[(size_t)i * r + k];
        const double f = norm > 1e-20 * before && norm > 0 ? 1.0 / sqrt(norm) : 0.0;
        for (uint32_t i = 0; i < n; i++) Y[(size_t)i * r + k] *= f;
    }
}

tlm_status tlm_lowrank_factor(const float *D, uint32_t rows, uint32_t cols, uint32_t rank, uint64_t seed, float *B,
                              float *A, tlm_error *err)
{
    if (rank == 0 || rank > rows || rank > cols)
        return tlm_fail(err, TLM_ERR_ARG, "rank %u for a %u x %u matrix", rank, rows, cols);
    double *Y = malloc((size_t)rows * rank * sizeof *Y), *Z = malloc((size_t)cols * rank * sizeof *Z);
    if (!Y || !Z) {
        free(Y);
        free(Z);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory for a rank-%u factorization", rank);
    }
    tlm_rng g;
    tlm_rng_seed(&g, seed);
    for (size_t i = 0; i < (size_t)cols * rank; i++) Z[i] = tlm_rng_normal(&g);
    mul(Y, D, Z, rows, cols, rank, 0); /* D Omega */
    orthonormalize(Y, rows, rank);
    for (int it = 0; it < 2; it++) { /* power iterations: the leading directions stand out */
        mul(Z, D, Y, cols, rows, rank, 1); /* D^T Q */
        orthonormalize(Z, cols, rank);
        mul(Y, D, Z, rows, cols, rank, 0);
        orthonormalize(Y, rows, rank);
    }
    mul(Z, D, Y, cols, rows, rank, 1); /* (Q^T D)^T */
    for (uint32_t i = 0; i < rows; i++)
        for (uint32_t k = 0; k < rank; k++) B[(size_t)i * rank + k] = (float)Y[(size_t)i * rank + k];
    for (uint32_t k = 0; k < rank; k++)
        for (uint32_t j = 0; j < cols; j++) A[(size_t)k * cols + j] = (float)Z[(size_t)j * rank + k];
    free(Y);
    free(Z);
    return TLM_OK;
}
