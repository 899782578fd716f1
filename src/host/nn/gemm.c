/* A 6 x 16 register tile (two 8-lane vectors per row: 12 accumulators,
 * the two B vectors loaded once per k and one broadcast) swept over K; the
 * last rows take the same tile with fewer rows, the last columns one
 * vector, then a scalar path. Each output element is summed in k order, so results do not depend
 * on tiling or threads. */
#include <string.h>

#include "../simd.h"
#include "gemm.h"

#define TM 6
#define TN 16

/* TR rows (1..TM) by NV vectors (1 or 2) of columns */
static inline __attribute__((always_inline)) void tile_rows(float *C, size_t ldc, const float *A, const float *B,
                                                            uint32_t K, uint32_t N, uint32_t i, uint32_t j,
                                                            int accumulate, const int TR, const int NV)
{
    tlm_v8 acc[TM][2];
    for (int r = 0; r < TR; r++)
        for (int v = 0; v < NV; v++)
            acc[r][v] = accumulate ? v8_load(C + (size_t)(i + r) * ldc + j + 8u * (uint32_t)v) : v8_set1(0.0f);
    const float *a = A + (size_t)i * K;
    for (uint32_t k = 0; k < K; k++) {
        const float *b = B + (size_t)k * N + j;
        tlm_v8 bv[2];
        for (int v = 0; v < NV; v++) bv[v] = v8_load(b + 8 * v);
        for (int r = 0; r < TR; r++) {
            const tlm_v8 av = v8_set1(a[(size_t)r * K + k]);
            for (int v = 0; v < NV; v++) acc[r][v] += av * bv[v];
        }
    }
    for (int r = 0; r < TR; r++)
        for (int v = 0; v < NV; v++) v8_store(C + (size_t)(i + r) * ldc + j + 8u * (uint32_t)v, acc[r][v]);
}

static void tile_vec(float *C, size_t ldc, const float *A, const float *B, uint32_t K, uint32_t N, uint32_t i,
                     uint32_t j, uint32_t mi, int accumulate, const int NV)
{
    switch (mi) {
    case 6: tile_rows(C, ldc, A, B, K, N, i, j, accumulate, 6, NV); break;
    case 5: tile_rows(C, ldc, A, B, K, N, i, j, accumulate, 5, NV); break;
    case 4: tile_rows(C, ldc, A, B, K, N, i, j, accumulate, 4, NV); break;
    case 3: tile_rows(C, ldc, A, B, K, N, i, j, accumulate, 3, NV); break;
    case 2: tile_rows(C, ldc, A, B, K, N, i, j, accumulate, 2, NV); break;
    default: tile_rows(C, ldc, A, B, K, N, i, j, accumulate, 1, NV); break;
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
        uint32_t j = 0;
        for (; j + TN <= N; j += TN) tile_vec(C, ldc, A, B, K, N, i, j, mi, accumulate, 2);
        if (j + 8 <= N) {
            tile_vec(C, ldc, A, B, K, N, i, j, mi, accumulate, 1);
            j += 8;
        }
        if (j < N) tile_edge(C, ldc, A, B, K, N, i, j, mi, N - j, accumulate);
    }
}

void tlm_transpose(float *dst, const float *src, uint32_t rows, uint32_t cols)
{
    tlm_transpose_ld(dst, rows, src, rows, cols);
}

void tlm_transpose_ld(float *dst, size_t ld, const float *src, uint32_t rows, uint32_t cols)
{
    const uint32_t blk = 16;
    for (uint32_t r0 = 0; r0 < rows; r0 += blk)
        for (uint32_t c0 = 0; c0 < cols; c0 += blk) {
            const uint32_t r1 = r0 + blk < rows ? r0 + blk : rows, c1 = c0 + blk < cols ? c0 + blk : cols;
            for (uint32_t r = r0; r < r1; r++)
                for (uint32_t c = c0; c < c1; c++) dst[(size_t)c * ld + r] = src[(size_t)r * cols + c];
        }
}
