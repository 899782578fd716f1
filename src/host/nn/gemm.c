/* A 4 x 16 register tile (two 8-lane vectors per row) swept over K; edge
 * tiles take a scalar path. Each output element is summed in k order, so
 * results do not depend on tiling or threads. */
#include <string.h>

#include "../simd.h"
#include "gemm.h"

#define TM 4
#define TN 16

static void tile_full(float *C, size_t ldc, const float *A, const float *B, uint32_t K, uint32_t N, uint32_t i,
                      uint32_t j, int accumulate)
{
    tlm_v8 acc[TM][2];
    for (int r = 0; r < TM; r++) {
        if (accumulate) {
            acc[r][0] = v8_load(C + (size_t)(i + r) * ldc + j);
            acc[r][1] = v8_load(C + (size_t)(i + r) * ldc + j + 8);
        } else {
            acc[r][0] = acc[r][1] = v8_set1(0.0f);
        }
    }
    const float *a = A + (size_t)i * K;
    for (uint32_t k = 0; k < K; k++) {
        const float *b = B + (size_t)k * N + j;
        const tlm_v8 b0 = v8_load(b), b1 = v8_load(b + 8);
        for (int r = 0; r < TM; r++) {
            const tlm_v8 av = v8_set1(a[(size_t)r * K + k]);
            acc[r][0] += av * b0;
            acc[r][1] += av * b1;
        }
    }
    for (int r = 0; r < TM; r++) {
        v8_store(C + (size_t)(i + r) * ldc + j, acc[r][0]);
        v8_store(C + (size_t)(i + r) * ldc + j + 8, acc[r][1]);
    }
}

static void tile_edge(float *C, size_t ldc, const float *A, const float *B, uint32_t K, uint32_t N, uint32_t i,
                      uint32_t j, uint32_t mi, uint32_t nj, int accumulate)
{
    float acc[TM][TN];
    for (uint32_t r = 0; r < mi; r++)
        for (uint32_t c = 0; c < nj; c++) acc[r][c] = accumulate ? C[(size_t)(i + r) * ldc + j + c] : 0.0f;
    for (uint32_t k = 0; k < K; k++) {
        const float *b = B + (size_t)k * N + j;
        for (uint32_t r = 0; r < mi; r++) {
            const float av = A[(size_t)(i + r) * K + k];
            for (uint32_t c = 0; c < nj; c++) acc[r][c] += av * b[c];
        }
    }
    for (uint32_t r = 0; r < mi; r++) memcpy(C + (size_t)(i + r) * ldc + j, acc[r], nj * sizeof(float));
}

void tlm_gemm(float *C, const float *A, const float *B, uint32_t M, uint32_t K, uint32_t N, int accumulate)
{
    tlm_gemm_ld(C, N, A, B, M, K, N, accumulate);
}

void tlm_gemm_ld(float *C, size_t ldc, const float *A, const float *B, uint32_t M, uint32_t K, uint32_t N,
                 int accumulate)
{
    for (uint32_t i = 0; i < M; i += TM) {
        const uint32_t mi = M - i < TM ? M - i : TM;
        for (uint32_t j = 0; j < N; j += TN) {
            const uint32_t nj = N - j < TN ? N - j : TN;
            if (mi == TM && nj == TN) tile_full(C, ldc, A, B, K, N, i, j, accumulate);
            else tile_edge(C, ldc, A, B, K, N, i, j, mi, nj, accumulate);
        }
    }
}

void tlm_transpose(float *dst, const float *src, uint32_t rows, uint32_t cols)
{
    const uint32_t blk = 16;
    for (uint32_t r0 = 0; r0 < rows; r0 += blk)
        for (uint32_t c0 = 0; c0 < cols; c0 += blk) {
            const uint32_t r1 = r0 + blk < rows ? r0 + blk : rows, c1 = c0 + blk < cols ? c0 + blk : cols;
            for (uint32_t r = r0; r < r1; r++)
                for (uint32_t c = c0; c < c1; c++) dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
        }
}
