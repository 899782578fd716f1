/* Vector operations of the Llama layer math, shared by the device decoder
 * (one position at a time) and the host's sequence code (row by row). */
#ifndef TLM_CORE_OPS_H
#define TLM_CORE_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

/* out = weight * x / sqrt(mean(x^2) + eps); out may alias x. */
void tlm_rmsnorm(float *out, const float *x, const float *weight, uint32_t n, float eps);

/* The same over T rows of n (Y may alias X), keeping each row's
 * 1/sqrt(mean(x^2) + eps) in inv[t] for the backward pass below. */
void tlm_rmsnorm_rows(float *Y, float *inv, const float *X, const float *w, uint32_t T, uint32_t n, float eps);

/* Its backward pass, accumulating: dX += dL/dX and dw += dL/dw from dY
 * (the training step on a device and the host's trainer both use it). */
void tlm_rmsnorm_rows_back(float *dX, float *dw, const float *dY, const float *X, const float *inv, const float *w,
                           uint32_t T, uint32_t n);

/* In-place softmax over x[0..n). */
void tlm_softmax(float *x, uint32_t n);

/* Fills rope[2*j], rope[2*j+1] with cos, sin of pos * theta^(-2j/head_size),
 * j < head_size/2, computed in float as llama2.c's run.c does. */
void tlm_rope_table(float *rope, uint32_t pos, uint32_t head_size, float theta);

/* Rotates consecutive pairs of each head of v (n values, heads of
 * head_size) by the angles in rope. */
void tlm_rope_apply(float *v, uint32_t n, uint32_t head_size, const float *rope);

/* h[i] = silu(h[i]) * g[i] */
void tlm_swiglu(float *h, const float *g, uint32_t n);

/* Sequential dot product (summation in index order). */
float tlm_dot_f32(const float *a, const float *b, uint32_t n);

/* Exact int8 dot product (|a|, |b| <= 127: exact for n < 2^17); inline,
 * as attention calls it once per head and position on 8-wide heads. */
static inline int32_t tlm_dot_i8(const int8_t *a, const int8_t *b, uint32_t n)
{
    int32_t s = 0;
    uint32_t i = 0;
#if defined(__ARM_FEATURE_DSP) /* four products in two SMLADs: the same exact sum */
    for (; i + 4u <= n; i += 4u) {
        uint32_t x, y;
        memcpy(&x, a + i, 4);
        memcpy(&y, b + i, 4);
        s = __smlad((int16x2_t)__sxtb16((int8x4_t)x), (int16x2_t)__sxtb16((int8x4_t)y), s);
        s = __smlad((int16x2_t)__sxtb16((int8x4_t)((x >> 8) | (x << 24))),
                    (int16x2_t)__sxtb16((int8x4_t)((y >> 8) | (y << 24))), s);
    }
#endif
    for (; i < n; i++) s += (int32_t)a[i] * b[i];
    return s;
}

#endif
