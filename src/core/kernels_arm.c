/* Integer kernels for Arm cores with the DSP extension (Cortex-M4/M7/M33,
 * ARMv7E-M and later): SMLAD multiplies two int16 pairs and adds both
 * products in one instruction. Activations come widened to int16 in SMLAD
 * order (tlm_act_q8.q16); int8 weights are widened four at a time with
 * SXTB16, ternary t2 weights through a 256-entry table of int16 pairs.
 * Same group walk and exact sums as the reference, so bit-identical
 * results. Elsewhere this file provides only a function that says no. */
#include <string.h>

#include "kernels.h"
#include "ternary_lut.h"

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>

static inline uint32_t load32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
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
        const int16x2_t w02 = __sxtb16((int8x4_t)wv), w13 = __sxtb16((int8x4_t)((wv >> 8) | (wv << 24)));
        acc = __smlad(w02, (int16x2_t)load32(a->q16 + c), acc);
        acc = __smlad(w13, (int16x2_t)load32(a->q16 + c + 2), acc);
    }
    for (; c < c1; c++) acc += (int32_t)wr[c] * a->q[c];
    return acc;
}

static int32_t dot_t2(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0, uint32_t c1,
                      uint32_t *cursor)
{
    (void)w;
    (void)cursor;
    int32_t acc = 0;
    uint32_t c = c0;
    for (; c < c1 && (c & 3u); c++) acc += tlm_t2_at(row, c) * a->q[c];
    const int16_t *x = a->q16;
    for (; c + 16u <= c1; c += 16u) { /* four code bytes per load */
        const uint32_t codes = load32(row + (c >> 2));
        const uint32_t *p0 = tlm_t2_pairs[codes & 0xFFu], *p1 = tlm_t2_pairs[(codes >> 8) & 0xFFu];
        const uint32_t *p2 = tlm_t2_pairs[(codes >> 16) & 0xFFu], *p3 = tlm_t2_pairs[codes >> 24];
        acc = __smlad((int16x2_t)p0[0], (int16x2_t)load32(x + c), acc);
        acc = __smlad((int16x2_t)p0[1], (int16x2_t)load32(x + c + 2), acc);
        acc = __smlad((int16x2_t)p1[0], (int16x2_t)load32(x + c + 4), acc);
        acc = __smlad((int16x2_t)p1[1], (int16x2_t)load32(x + c + 6), acc);
        acc = __smlad((int16x2_t)p2[0], (int16x2_t)load32(x + c + 8), acc);
        acc = __smlad((int16x2_t)p2[1], (int16x2_t)load32(x + c + 10), acc);
        acc = __smlad((int16x2_t)p3[0], (int16x2_t)load32(x + c + 12), acc);
        acc = __smlad((int16x2_t)p3[1], (int16x2_t)load32(x + c + 14), acc);
    }
    for (; c + 4u <= c1; c += 4u) {
        const uint32_t *p = tlm_t2_pairs[row[c >> 2]];
        acc = __smlad((int16x2_t)p[0], (int16x2_t)load32(x + c), acc);
        acc = __smlad((int16x2_t)p[1], (int16x2_t)load32(x + c + 2), acc);
    }
    for (; c < c1; c++) acc += tlm_t2_at(row, c) * a->q[c];
    return acc;
}

static void mv_i8(float *out, const tlm_act_q8 *a, const tlm_tensor *w) { tlm_q8_drive(out, a, w, dot_i8); }
static void mv_t2(float *out, const tlm_act_q8 *a, const tlm_tensor *w) { tlm_q8_drive(out, a, w, dot_t2); }

tlm_matvec_q8_fn tlm_matvec_q8_dsp(uint32_t wtype)
{
    switch (wtype) {
    case TLM_WTYPE_I8: return mv_i8;
    case TLM_WTYPE_T2: return mv_t2;
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
