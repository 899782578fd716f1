/* Matrix-vector kernels, one family per weight type (see wtype.c), and the
 * group walk every integer kernel shares so that all variants round alike. */
#ifndef TLM_CORE_KERNELS_H
#define TLM_CORE_KERNELS_H

#include "tritlm/model.h"

/* f32 weights, f32 activations: rows summed in column order. */
void tlm_matvec_f32_f32(float *out, const float *x, const tlm_tensor *w);
void tlm_row_f32_f32(float *out, const tlm_tensor *w, uint32_t r);

/* Quantized types: reference kernels (kernels_q8.c). */
void tlm_matvec_q8_i8(float *out, const tlm_act_q8 *a, const tlm_tensor *w);
void tlm_matvec_q8_t2(float *out, const tlm_act_q8 *a, const tlm_tensor *w);
void tlm_matvec_q8_t3(float *out, const tlm_act_q8 *a, const tlm_tensor *w);
void tlm_matvec_q8_ts(float *out, const tlm_act_q8 *a, const tlm_tensor *w);
void tlm_row_f32_i8(float *out, const tlm_tensor *w, uint32_t r);
void tlm_row_f32_t2(float *out, const tlm_tensor *w, uint32_t r);
void tlm_row_f32_t3(float *out, const tlm_tensor *w, uint32_t r);
void tlm_row_f32_ts(float *out, const tlm_tensor *w, uint32_t r);
uint32_t tlm_check_rows_i8(const tlm_tensor *w);
uint32_t tlm_check_rows_t2(const tlm_tensor *w);
uint32_t tlm_check_rows_t3(const tlm_tensor *w);
uint32_t tlm_check_rows_ts(const tlm_tensor *w);

/* x86-64 AVX2 variants (kernels_x86.c); NULL elsewhere. */
tlm_matvec_q8_fn tlm_matvec_q8_avx2(uint32_t wtype);
/* Arm DSP-extension variants (kernels_arm.c); NULL elsewhere. */
tlm_matvec_q8_fn tlm_matvec_q8_dsp(uint32_t wtype);

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>

/* Bytes 1 and 3 of v widened to an int16 pair: SXTB16 with its rotate,
 * one instruction (GCC 12 does not fold a rotation into __sxtb16). */
static inline int16x2_t tlm_sxtb16_ror8(uint32_t v)
{
#if defined(__GNUC__)
    int16x2_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
#else
    return __sxtb16((int8x4_t)((v >> 8) | (v << 24)));
#endif
}
#endif

/* Largest |x[i]| (0 for an empty or all-zero vector; NaNs are skipped).
 * Eight running maxima (lane i % 8) so that the loop vectorizes; the
 * maximum does not depend on the order. */
static inline float tlm_absmax_f32(const float *x, uint32_t n)
{
    float m[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint32_t i = 0;
    for (; i + 8u <= n; i += 8u)
        for (uint32_t c = 0; c < 8u; c++) {
            const float v = x[i + c] < 0.0f ? -x[i + c] : x[i + c];
            m[c] = v > m[c] ? v : m[c];
        }
    for (; i < n; i++) {
        const float v = x[i] < 0.0f ? -x[i] : x[i];
        m[0] = v > m[0] ? v : m[0];
    }
    float amax = m[0];
    for (uint32_t c = 1; c < 8u; c++) amax = m[c] > amax ? m[c] : amax;
    return amax;
}

/* q[i] = x[i] * mul rounded half away from zero, clamped to [-127, 127]:
 * the one int8 rounding of activations and of the int8 KV cache. */
static inline void tlm_q8_round(int8_t *q, const float *x, uint32_t n, float mul)
{
    for (uint32_t i = 0; i < n; i++) {
        float v = x[i] * mul;
        v += v < 0.0f ? -0.5f : 0.5f;
        int32_t k = (int32_t)v; /* truncation after +-0.5: half away from zero */
        if (k > 127) k = 127;
        if (k < -127) k = -127;
        q[i] = (int8_t)k;
    }
}

/* Integer dot product of row `row` (packed) with activations over columns
 * [c0, c1); `cursor` carries per-row state between consecutive groups (the
 * TS sign-bit position), starting at 0 for each row. */
typedef int32_t (*tlm_q8_dot_fn)(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0,
                                 uint32_t c1, uint32_t *cursor);

/* One weight of a packed ternary row, by the layouts of docs/FORMAT.md
 * (codes 0, 1, 2 are 0, +1, -1). */
static inline int32_t tlm_t2_at(const uint8_t *row, uint32_t c)
{
    const uint32_t code = (row[c >> 2] >> ((c & 3u) * 2u)) & 3u;
    return (int32_t)(code & 1u) - (int32_t)(code >> 1);
}

static const uint8_t tlm_pow3[5] = {1, 3, 9, 27, 81};

static inline int32_t tlm_t3_at(const uint8_t *row, uint32_t c)
{
    const uint32_t trit = (uint32_t)(row[c / 5u] / tlm_pow3[c % 5u]) % 3u;
    return (int32_t)trit - 3 * (int32_t)(trit >> 1);
}

static inline uint64_t tlm_row_bytes_of(const tlm_tensor *w)
{
    return tlm_wtype_row_bytes(w->wtype, w->cols, w->param);
}

/* The shared walk: groups in column order, exact integer sums, then
 * float scaling in a fixed order. */
static inline void tlm_q8_drive(float *out, const tlm_act_q8 *a, const tlm_tensor *w, tlm_q8_dot_fn dot)
{
    const uint32_t cols = w->cols;
    const uint32_t glen = w->scale_kind == TLM_SCALE_GROUP ? w->group : cols;
    const uint32_t ng = (cols + glen - 1u) / glen;
    const size_t rb = (size_t)tlm_row_bytes_of(w); /* the tensor is in memory: fits */
    const uint8_t *row = w->data;
    for (uint32_t r = 0; r < w->rows; r++, row += rb) {
        uint32_t cursor = 0;
        float s;
        if (w->scale_kind == TLM_SCALE_GROUP) {
            const float *sc = w->scales + (size_t)r * ng;
            s = 0.0f;
            for (uint32_t g = 0; g < ng; g++) {
                const uint32_t c0 = g * glen, c1 = cols - c0 < glen ? cols : c0 + glen;
                s += (float)dot(row, a, w, c0, c1, &cursor) * sc[g];
            }
        } else {
            const float sc = w->scale_kind == TLM_SCALE_ROW ? w->scales[r] : w->scales[0];
            s = (float)dot(row, a, w, 0, cols, &cursor) * sc;
        }
        out[r] = s * a->scale;
    }
}

#endif
