/* Integer kernels for Arm cores with the DSP extension (Cortex-M4/M7/M33,
 * ARMv7E-M and later): SMLAD multiplies two int16 pairs and adds both
 * products in one instruction. Activations come widened to int16 in SMLAD
 * order (tlm_act_q8.q16); int8 weights are widened four at a time with
 * SXTB16. (t2 weights go through the table kernel, kernels_lut.c.)
 * Same group walk and exact sums as the reference, so bit-identical
 * results. Elsewhere this file provides only a function that says no. */
#include <string.h>

#include "kernels.h"

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>

static inline uint32_t load32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* a->q16 from a->q on first use (q is zero past n up to the rounded size) */
static void widen_q16(const tlm_act_q8 *a)
{
    if (*a->q16_built) return;
    const uint32_t qn = (uint32_t)TLM_ACT_Q8_ROUND32(a->n);
    for (uint32_t i = 0; i < qn; i += 4u) {
        a->q16[i] = a->q[i];
        a->q16[i + 1u] = a->q[i + 2u];
        a->q16[i + 2u] = a->q[i + 1u];
        a->q16[i + 3u] = a->q[i + 3u];
    }
    *a->q16_built = 1;
}

static int32_t dot_i8(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0, uint32_t c1,
                      uint32_t *cursor)
{
    (void)w;
    (void)cursor;
    const int8_t *wr = (const int8_t *)(const void *)row;
    int32_t acc = 0;
    uint32_t c = c0;
    for (; c < c1 && (c & 3u); c++) acc += (int32_t)wr[c] * a->q[c];
    for (; c + 4u <= c1; c += 4u) {
        const uint32_t wv = load32(wr + c);
        const int16x2_t w02 = __sxtb16((int8x4_t)wv), w13 = tlm_sxtb16_ror8(wv);
        acc = __smlad(w02, (int16x2_t)load32(a->q16 + c), acc);
        acc = __smlad(w13, (int16x2_t)load32(a->q16 + c + 2), acc);
    }
    for (; c < c1; c++) acc += (int32_t)wr[c] * a->q[c];
    return acc;
}

/* Rows p and p + rb over columns [0, n4) (n4 a multiple of 4): the
 * activation pairs are loaded once for both rows. */
static inline void dot2_i8(const int8_t *p, size_t rb, const int16_t *x, uint32_t n4, int32_t *s0, int32_t *s1)
{
    int32_t a0 = 0, a1 = 0;
    const int8_t *end = p + n4, *q = p + rb;
    for (; p < end; p += 4, q += 4, x += 4) {
        const int16x2_t x02 = (int16x2_t)load32(x), x13 = (int16x2_t)load32(x + 2);
        const uint32_t u = load32(p), v = load32(q);
        a0 = __smlad(__sxtb16((int8x4_t)u), x02, a0);
        a0 = __smlad(tlm_sxtb16_ror8(u), x13, a0);
        a1 = __smlad(__sxtb16((int8x4_t)v), x02, a1);
        a1 = __smlad(tlm_sxtb16_ror8(v), x13, a1);
    }
    *s0 = a0;
    *s1 = a1;
}

/* Four int8 weights of one row times the four activations x02, x13
 * (SMLAD order) added to acc. */
#define DOT4_STEP(acc, u, x02, x13)                                   \
    do {                                                              \
        (acc) = __smlad(__sxtb16((int8x4_t)(u)), (x02), (acc));       \
        (acc) = __smlad(tlm_sxtb16_ror8(u), (x13), (acc));            \
    } while (0)

/* Rows p, p + rb, p + 2 rb and p + 3 rb over columns [0, n8) (n8 a
 * multiple of 8): each activation word is loaded once for four rows, and
 * the loop's own work is shared by eight columns. */
static TLM_NOINLINE void dot4_i8(const int8_t *p, size_t rb, const int16_t *x, uint32_t n8, int32_t s[4])
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    const int8_t *end = p + n8, *q = p + 2u * rb;
    for (; p < end; p += 8, q += 8, x += 8) {
        int16x2_t x02 = (int16x2_t)load32(x), x13 = (int16x2_t)load32(x + 2);
        DOT4_STEP(a0, load32(p), x02, x13);
        DOT4_STEP(a1, load32(p + rb), x02, x13);
        DOT4_STEP(a2, load32(q), x02, x13);
        DOT4_STEP(a3, load32(q + rb), x02, x13);
        x02 = (int16x2_t)load32(x + 4);
        x13 = (int16x2_t)load32(x + 6);
        DOT4_STEP(a0, load32(p + 4), x02, x13);
        DOT4_STEP(a1, load32(p + rb + 4), x02, x13);
        DOT4_STEP(a2, load32(q + 4), x02, x13);
        DOT4_STEP(a3, load32(q + rb + 4), x02, x13);
    }
    s[0] = a0;
    s[1] = a1;
    s[2] = a2;
    s[3] = a3;
}

static void mv_i8(float *out, const tlm_act_q8 *a, const tlm_tensor *w)
{
    widen_q16(a);
    if (w->scale_kind == TLM_SCALE_GROUP) {
        tlm_q8_drive(out, a, w, dot_i8);
        return;
    }
    /* one scale per row or per tensor: the drive's arithmetic, four rows at a time, then two, then one */
    const uint32_t cols = w->cols, n4 = cols & ~3u, rows = w->rows;
    const size_t rb = (size_t)tlm_row_bytes_of(w);
    const int per_row = w->scale_kind == TLM_SCALE_ROW;
    const float as = a->scale;
    const int8_t *row = (const int8_t *)(const void *)w->data;
    uint32_t r = 0;
    const uint32_t n8 = cols & ~7u;
    for (; r + 4u <= rows; r += 4u, row += 4u * rb) {
        int32_t s4[4];
        dot4_i8(row, rb, a->q16, n8, s4);
        if (n8 < cols)
            for (uint32_t j = 0; j < 4u; j++) s4[j] += dot_i8((const uint8_t *)(const void *)(row + j * rb), a, w, n8, cols, NULL);
        const float *sc = w->scales + (per_row ? r : 0u);
        out[r] = (float)s4[0] * sc[0] * as;
        out[r + 1u] = (float)s4[1] * sc[per_row] * as;
        out[r + 2u] = (float)s4[2] * sc[2 * per_row] * as;
        out[r + 3u] = (float)s4[3] * sc[3 * per_row] * as;
    }
    for (; r + 2u <= rows; r += 2u, row += 2u * rb) {
        int32_t s0, s1;
        dot2_i8(row, rb, a->q16, n4, &s0, &s1);
        for (uint32_t c = n4; c < cols; c++) {
            s0 += (int32_t)row[c] * a->q[c];
            s1 += (int32_t)row[rb + c] * a->q[c];
        }
        out[r] = (float)s0 * w->scales[per_row ? r : 0u] * as;
        out[r + 1u] = (float)s1 * w->scales[per_row ? r + 1u : 0u] * as;
    }
    if (r < rows) {
        uint32_t cursor = 0;
        const int32_t s0 = dot_i8((const uint8_t *)(const void *)row, a, w, 0, cols, &cursor);
        out[r] = (float)s0 * w->scales[per_row ? r : 0u] * as;
    }
}

tlm_matvec_q8_fn tlm_matvec_q8_dsp(uint32_t wtype)
{
    switch (wtype) {
    case TLM_WTYPE_I8: return mv_i8;
    default: return NULL;
    }
}

#else

tlm_matvec_q8_fn tlm_matvec_q8_dsp(uint32_t wtype)
{
    (void)wtype;
    return NULL;
}

#endif
