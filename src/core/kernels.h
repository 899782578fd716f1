/* Matrix-vector kernels, one family per weight type (see wtype.c), and the
 * group walk every integer kernel shares so that all variants round alike. */
#ifndef TLM_CORE_KERNELS_H
#define TLM_CORE_KERNELS_H

#include <string.h>

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

/* Where the compiler's inlining choice matters for speed: forced one way. */
#if defined(__GNUC__)
#define TLM_ALWAYS_INLINE inline __attribute__((always_inline))
#define TLM_NOINLINE __attribute__((noinline))
#else
#define TLM_ALWAYS_INLINE inline
#define TLM_NOINLINE
#endif

/* Cores whose FPU has VMAXNM and VRINTA (Armv8, and the Cortex-M7's FPv5,
 * told apart from the M4's FPv4 by its double precision): absmax and the
 * int8 rounding below in two and five float instructions per value. The
 * other branch computes the same values from the float's bits, which costs
 * no library call on cores without an FPU (RISC-V, Xtensa). (Armv7-A's
 * double-precision VFP has neither instruction, hence the M profile.) */
#if defined(__GNUC__) && defined(__ARM_FP) && \
    (__ARM_ARCH >= 8 || (defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M' && (__ARM_FP & 8)))
#define TLM_FP_MAXNM_RINTA 1 /* the builtins: single instructions even with -ffreestanding */
#endif

/* Largest |x[i]| (0 for an empty or all-zero vector; NaNs are skipped). */
static inline float tlm_absmax_f32(const float *x, uint32_t n)
{
#ifdef TLM_FP_MAXNM_RINTA
    /* fmaxf skips a NaN operand, as the spec above asks */
    float m0 = 0.0f, m1 = 0.0f, m2 = 0.0f, m3 = 0.0f;
    uint32_t i = 0;
    for (; i + 4u <= n; i += 4u) {
        m0 = __builtin_fmaxf(m0, __builtin_fabsf(x[i]));
        m1 = __builtin_fmaxf(m1, __builtin_fabsf(x[i + 1u]));
        m2 = __builtin_fmaxf(m2, __builtin_fabsf(x[i + 2u]));
        m3 = __builtin_fmaxf(m3, __builtin_fabsf(x[i + 3u]));
    }
    for (; i < n; i++) m0 = __builtin_fmaxf(m0, __builtin_fabsf(x[i]));
    return __builtin_fmaxf(__builtin_fmaxf(m0, m1), __builtin_fmaxf(m2, m3));
#else
    /* |x| without its sign bit orders as an unsigned integer (infinity
     * included); a NaN's magnitude lies above infinity's and counts as 0.
     * Eight running maxima (lane i % 8) so that the loop vectorizes. */
    uint32_t m[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint32_t i = 0;
    for (; i + 8u <= n; i += 8u)
        for (uint32_t c = 0; c < 8u; c++) {
            uint32_t b;
            memcpy(&b, x + i + c, sizeof b);
            b &= 0x7FFFFFFFu;
            b = b > 0x7F800000u ? 0u : b;
            m[c] = b > m[c] ? b : m[c];
        }
    for (; i < n; i++) {
        uint32_t b;
        memcpy(&b, x + i, sizeof b);
        b &= 0x7FFFFFFFu;
        b = b > 0x7F800000u ? 0u : b;
        m[0] = b > m[0] ? b : m[0];
    }
    for (uint32_t c = 1; c < 8u; c++) m[0] = m[c] > m[0] ? m[c] : m[0];
    float amax;
    memcpy(&amax, &m[0], sizeof amax);
    return amax;
#endif
}

/* v rounded half away from zero and clamped to [-127, 127] (a NaN gives
 * -127; v comes from arithmetic, so a NaN is a quiet one): the one int8
 * rounding of activations and of the int8 KV cache. */
static inline int8_t tlm_q8_round1(float v)
{
#ifdef TLM_FP_MAXNM_RINTA
    return (int8_t)(int32_t)__builtin_roundf(__builtin_fminf(__builtin_fmaxf(v, -127.0f), 127.0f));
#else
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    const uint32_t mag = b & 0x7FFFFFFFu;
    if (mag > 0x7F800000u) return -127;              /* NaN */
    if (mag < 0x3F000000u) return 0;                 /* |v| < 0.5 */
    int32_t k = 127;
    if (mag < 0x43000000u) {                         /* |v| < 128: m * 2^-sh with sh in 17..24 */
        const uint32_t m = (mag & 0x7FFFFFu) | 0x800000u, sh = 150u - (mag >> 23);
        k = (int32_t)(((m >> (sh - 1u)) + 1u) >> 1); /* floor(2|v|) + 1, halved: ties go up */
        k = k > 127 ? 127 : k;
    }
    return (int8_t)(b >> 31 ? -k : k);
#endif
}

/* q[i] = x[i] * mul rounded by tlm_q8_round1. */
static inline void tlm_q8_round(int8_t *q, const float *x, uint32_t n, float mul)
{
    for (uint32_t i = 0; i < n; i++) q[i] = tlm_q8_round1(x[i] * mul);
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
