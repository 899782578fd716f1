/* The ternary table kernels: int8 activations times t2 or t3 weights
 * without a multiply. A code byte holds four (t2) or five (t3) weights, so
 * for each block of four or five activations the sums over every valid byte
 * value are computed once per vector (81 for t2, 243 for t3) and each row
 * then costs one table read and one addition per byte. The tables are
 * shared by every row and by every matrix that reads the same vector (q, k
 * and v; gate and up), which is what makes them pay off on narrow models:
 * for stories260K's 64-wide rows the build is a fifth (t2) to two fifths
 * (t3) of the work and the reads the rest.
 *
 * The sums are the reference's exact integers (|entry| <= 5 * 127 fits
 * int16, rows sum in int32), so results are bit-identical to it. These are
 * the t2 and t3 kernels of every target without AVX2 (Cortex-M, RISC-V,
 * Xtensa); on the Arm DSP extension the builds add two entries per
 * instruction. */
#include <string.h>

#include "kernels.h"

#define STRIDE TLM_T2_LUT_STRIDE
#define STRIDE3 TLM_T3_LUT_STRIDE

/* The row walks are specialized per type only if inlined with a constant
 * table stride (else the stride multiplies inside the inner loop). */
#define LUT_INLINE TLM_ALWAYS_INLINE

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

/* Byte values a + 16 b with both nibbles valid (no code 3) take a, b in
 * {0, 1, 2, 4, 5, 6, 8, 9, 10}; a nibble d0 + 4 d1 weighs its two
 * activations by the trits of d0 and d1 (code 1 is +1, 2 is -1). */
#if defined(__ARM_FEATURE_DSP)
static inline uint32_t dup16(int32_t v) { return (uint32_t)(uint16_t)v * 0x00010001u; }


#define SADD16(a, b) ((uint32_t)__sadd16((int16x2_t)(a), (int16x2_t)(b)))
#define SSUB16(a, b) ((uint32_t)__ssub16((int16x2_t)(a), (int16x2_t)(b)))

/* Entries a = 0..11 of one row b of a block: six int16 pairs p0..p5 (the
 * half table of the block's first two activations) plus h in both halves. */
static inline void block_row(uint32_t *d, uint32_t p0, uint32_t p1, uint32_t p2, uint32_t p3, uint32_t p4,
                             uint32_t p5, uint32_t h)
{
    d[0] = SADD16(p0, h);
    d[1] = SADD16(p1, h);
    d[2] = SADD16(p2, h);
    d[3] = SADD16(p3, h);
    d[4] = SADD16(p4, h);
    d[5] = SADD16(p5, h);
}

/* (entries 3, 7 and 11 of a row belong to invalid bytes: written, never read) */
static void build_block(int16_t *t, const int8_t *x)
{
    const int32_t x0 = x[0];
    const uint32_t d1 = dup16(x[1]), e2 = dup16(x[2]), e3 = dup16(x[3]);
    const uint32_t p0 = (uint32_t)(uint16_t)x0 << 16; /* a = 0, 1: 0, x0 */
    const uint32_t p1 = (uint32_t)(uint16_t)-x0;      /* a = 2, 3: -x0, (0) */
    const uint32_t p2 = SADD16(p0, d1), p3 = SADD16(p1, d1); /* x1, x1 + x0; x1 - x0, (x1) */
    const uint32_t p4 = SSUB16(p0, d1), p5 = SSUB16(p1, d1); /* -x1, x0 - x1; -x0 - x1, (-x1) */
    const uint32_t ne2 = SSUB16(0u, e2), ne3 = SSUB16(0u, e3);
    uint32_t *d = (uint32_t *)(void *)t; /* 32-byte aligned; row b at d + 8 b */
    block_row(d, p0, p1, p2, p3, p4, p5, 0u);
    block_row(d + 8, p0, p1, p2, p3, p4, p5, e2);
    block_row(d + 16, p0, p1, p2, p3, p4, p5, ne2);
    block_row(d + 32, p0, p1, p2, p3, p4, p5, e3);
    block_row(d + 40, p0, p1, p2, p3, p4, p5, SADD16(e3, e2));
    block_row(d + 48, p0, p1, p2, p3, p4, p5, SSUB16(e3, e2));
    block_row(d + 64, p0, p1, p2, p3, p4, p5, ne3);
    block_row(d + 72, p0, p1, p2, p3, p4, p5, SADD16(ne3, e2));
    block_row(d + 80, p0, p1, p2, p3, p4, p5, SSUB16(ne3, e2));
}
#else
static inline void block_row(int16_t *d, const int32_t lo[9], int32_t h)
{
    d[0] = (int16_t)(lo[0] + h);
    d[1] = (int16_t)(lo[1] + h);
    d[2] = (int16_t)(lo[2] + h);
    d[4] = (int16_t)(lo[3] + h);
    d[5] = (int16_t)(lo[4] + h);
    d[6] = (int16_t)(lo[5] + h);
    d[8] = (int16_t)(lo[6] + h);
    d[9] = (int16_t)(lo[7] + h);
    d[10] = (int16_t)(lo[8] + h);
}

static void build_block(int16_t *t, const int8_t *x)
{
    const int32_t x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
    const int32_t lo[9] = {0, x0, -x0, x1, x1 + x0, x1 - x0, -x1, x0 - x1, -x0 - x1};
    block_row(t, lo, 0);
    block_row(t + 16, lo, x2);
    block_row(t + 32, lo, -x2);
    block_row(t + 64, lo, x3);
    block_row(t + 80, lo, x3 + x2);
    block_row(t + 96, lo, x3 - x2);
    block_row(t + 128, lo, -x3);
    block_row(t + 144, lo, x2 - x3);
    block_row(t + 160, lo, -x2 - x3);
}
#endif

/* Tables for all ceil(n / 4) blocks (q is zero-padded past n). */
static void build_t2(const tlm_act_q8 *a)
{
    const uint32_t nb = (a->n + 3u) / 4u;
    for (uint32_t k = 0; k < nb; k++) build_block(a->lut + (size_t)k * STRIDE, a->q + 4u * k);
    *a->lut_kind = TLM_WTYPE_T2;
}

/* t3: entry c of a block is the sum over its five columns of trit_i(c) * x_i
 * (c = t0 + 3 t1 + 9 t2 + 27 t3 + 81 t4; trit 1 is +1, 2 is -1). The first
 * 3^k entries only involve x_0..x_{k-1}, so each power of three extends the
 * table: entries [3^k, 2 * 3^k) are the first 3^k plus x_k, the next 3^k
 * the first minus x_k. */
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_UNALIGNED)
/* Entries j and j + 1 of both new thirds: one SADD16 and one SSUB16. */
static inline void grow_pair(const int16_t *t, int16_t *plus, int16_t *minus, uint32_t j, uint32_t d)
{
    uint32_t v, p, q;
    memcpy(&v, t + j, 4);
    p = (uint32_t)__sadd16((int16x2_t)v, (int16x2_t)d);
    q = (uint32_t)__ssub16((int16x2_t)v, (int16x2_t)d);
    memcpy(plus + j, &p, 4);
    memcpy(minus + j, &q, 4);
}
#endif

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_UNALIGNED) && defined(__GNUC__)
/* Entries j..j + 7 of both new thirds, j even: t + j and minus + j (2m
 * entries in) are word-aligned, so loads and the minus stores pair up
 * (LDRD/STRD); plus + j (m odd) is not, and takes single stores. */
static inline void grow8(const int16_t *t, int16_t *plus, int16_t *minus, uint32_t j, uint32_t d)
{
    const int16_t *src = (const int16_t *)__builtin_assume_aligned(t + j, 4);
    int16_t *mi = (int16_t *)__builtin_assume_aligned(minus + j, 4), *pl = plus + j;
    uint32_t v0, v1, v2, v3;
    memcpy(&v0, src, 4);
    memcpy(&v1, src + 2, 4);
    memcpy(&v2, src + 4, 4);
    memcpy(&v3, src + 6, 4);
    const uint32_t p0 = SADD16(v0, d), p1 = SADD16(v1, d), p2 = SADD16(v2, d), p3 = SADD16(v3, d);
    const uint32_t q0 = SSUB16(v0, d), q1 = SSUB16(v1, d), q2 = SSUB16(v2, d), q3 = SSUB16(v3, d);
    memcpy(pl, &p0, 4);
    memcpy(pl + 2, &p1, 4);
    memcpy(pl + 4, &p2, 4);
    memcpy(pl + 6, &p3, 4);
    memcpy(mi, &q0, 4);
    memcpy(mi + 2, &q1, 4);
    memcpy(mi + 4, &q2, 4);
    memcpy(mi + 6, &q3, 4);
}
#endif

static LUT_INLINE void grow(int16_t *t, uint32_t m, int32_t x)
{
    int16_t *plus = t + m, *minus = t + 2u * m;
    uint32_t j = 0;
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_UNALIGNED)
    const uint32_t d = (uint32_t)(uint16_t)x * 0x00010001u; /* x in both halves */
#if defined(__GNUC__)
    for (; j + 8u <= m; j += 8u) grow8(t, plus, minus, j, d); /* t is 16-byte aligned (blocks of 496 bytes) */
#endif
    for (; j + 4u <= m; j += 4u) { /* two pairs per pass: the loop's own work shared */
        grow_pair(t, plus, minus, j, d);
        grow_pair(t, plus, minus, j + 2u, d);
    }
    if (j + 2u <= m) {
        grow_pair(t, plus, minus, j, d);
        j += 2u;
    }
#endif
    for (; j < m; j++) {
        plus[j] = (int16_t)(t[j] + x);
        minus[j] = (int16_t)(t[j] - x);
    }
}

static void build_t3(const tlm_act_q8 *a)
{
    const uint32_t nb = (a->n + 4u) / 5u;
    for (uint32_t k = 0; k < nb; k++) {
        int16_t *t = a->lut + (size_t)k * STRIDE3;
        const int8_t *x = a->q + 5u * k;
        t[0] = 0;
        t[1] = x[0];
        t[2] = (int16_t)-x[0];
        grow(t, 3u, x[1]);
        grow(t, 9u, x[2]);
        grow(t, 27u, x[3]);
        grow(t, 81u, x[4]);
    }
    *a->lut_kind = TLM_WTYPE_T3;
}

/* Four code bytes at once where unaligned word loads are cheap. */
#if defined(__ARM_FEATURE_UNALIGNED) || defined(__x86_64__)
#define CODES_BY_WORD 1
static inline uint32_t load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
#endif

/* Sum of four code bytes' entries; t0..t3 at the four blocks' tables. */
static inline int32_t lut4(const uint8_t *p, const int16_t *t0, const int16_t *t1, const int16_t *t2,
                           const int16_t *t3)
{
#ifdef CODES_BY_WORD
    const uint32_t w = load32(p);
    return t0[w & 0xFFu] + t1[(w >> 8) & 0xFFu] + t2[(w >> 16) & 0xFFu] + t3[w >> 24];
#else
    return t0[p[0]] + t1[p[1]] + t2[p[2]] + t3[p[3]];
#endif
}

/* Sum over n whole code bytes of one row, t at the first byte's table,
 * tables `st` entries apart (the n % 4 odd bytes first, so that the word
 * loop ends the function). */
static LUT_INLINE int32_t lut_sum(const uint8_t *p, const int16_t *t, uint32_t n, uint32_t st)
{
    int32_t acc = 0;
    for (uint32_t b = n & 3u; b; b--, p++, t += st) acc += t[*p];
    const uint8_t *end = p + (n & ~3u);
    for (; p < end; p += 4, t += 4u * st) acc += lut4(p, t, t + st, t + 2u * st, t + 3u * st);
    return acc;
}

/* The same for two rows (p and p + rb) at once: they share the table
 * walk, which is a fifth of the instructions when done for one row. */
static LUT_INLINE void lut_sum2(const uint8_t *p, size_t rb, const int16_t *t, uint32_t n, uint32_t st, int32_t *s0,
                            int32_t *s1)
{
    int32_t a0 = 0, a1 = 0;
    const uint8_t *q = p + rb;
    for (uint32_t b = n & 3u; b; b--, p++, q++, t += st) {
        a0 += t[*p];
        a1 += t[*q];
    }
    const uint8_t *end = p + (n & ~3u);
#if defined(__ARM_FEATURE_DSP) && defined(CODES_BY_WORD) && defined(__GNUC__)
    /* UXTAB extracts a code byte and adds its block's table offset in one
     * instruction, so a byte costs three (UXTAB, LDRSH, ADD) and the four
     * blocks of a word need no pointer of their own. */
    const uint32_t k1 = st, k2 = 2u * st, k3 = 3u * st;
    for (; p < end; p += 4, q += 4, t += 4u * st) {
        const uint32_t wa = load32(p), wb = load32(q);
        uint32_t i, v;
        __asm__("uxtb   %[i], %[wa]\n\t"
                "ldrsh  %[v], [%[t], %[i], lsl #1]\n\t"
                "add    %[a0], %[a0], %[v]\n\t"
                "uxtb   %[i], %[wb]\n\t"
                "ldrsh  %[v], [%[t], %[i], lsl #1]\n\t"
                "add    %[a1], %[a1], %[v]\n\t"
                "uxtab  %[i], %[k1], %[wa], ror #8\n\t"
                "ldrsh  %[v], [%[t], %[i], lsl #1]\n\t"
                "add    %[a0], %[a0], %[v]\n\t"
                "uxtab  %[i], %[k1], %[wb], ror #8\n\t"
                "ldrsh  %[v], [%[t], %[i], lsl #1]\n\t"
                "add    %[a1], %[a1], %[v]\n\t"
                "uxtab  %[i], %[k2], %[wa], ror #16\n\t"
                "ldrsh  %[v], [%[t], %[i], lsl #1]\n\t"
                "add    %[a0], %[a0], %[v]\n\t"
                "uxtab  %[i], %[k2], %[wb], ror #16\n\t"
                "ldrsh  %[v], [%[t], %[i], lsl #1]\n\t"
                "add    %[a1], %[a1], %[v]\n\t"
                "uxtab  %[i], %[k3], %[wa], ror #24\n\t"
                "ldrsh  %[v], [%[t], %[i], lsl #1]\n\t"
                "add    %[a0], %[a0], %[v]\n\t"
                "uxtab  %[i], %[k3], %[wb], ror #24\n\t"
                "ldrsh  %[v], [%[t], %[i], lsl #1]\n\t"
                "add    %[a1], %[a1], %[v]"
                : [a0] "+r"(a0), [a1] "+r"(a1), [i] "=&r"(i), [v] "=&r"(v)
                : [wa] "r"(wa), [wb] "r"(wb), [t] "r"(t), [k1] "r"(k1), [k2] "r"(k2), [k3] "r"(k3)
                : "memory");
    }
#else
    for (; p < end; p += 4, q += 4, t += 4u * st) {
        const int16_t *t1 = t + st, *t2 = t + 2u * st, *t3 = t + 3u * st;
        a0 += lut4(p, t, t1, t2, t3);
        a1 += lut4(q, t, t1, t2, t3);
    }
#endif
    *s0 = a0;
    *s1 = a1;
}

/* Columns [c0, c1): whole bytes through the tables, the rest one by one. */
static int32_t dot_t2_lut(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0, uint32_t c1,
                          uint32_t *cursor)
{
    (void)w;
    (void)cursor;
    int32_t acc = 0;
    uint32_t c = c0;
    for (; c < c1 && (c & 3u); c++) acc += tlm_t2_at(row, c) * a->q[c];
    const uint32_t b0 = c >> 2, b1 = c1 >> 2;
    if (c < c1 && b1 > b0) {
        acc += lut_sum(row + b0, a->lut + (size_t)b0 * STRIDE, b1 - b0, STRIDE);
        c = b1 * 4u;
    }
    for (; c < c1; c++) acc += tlm_t2_at(row, c) * a->q[c];
    return acc;
}

static int32_t dot_t3_lut(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0, uint32_t c1,
                          uint32_t *cursor)
{
    (void)w;
    (void)cursor;
    int32_t acc = 0;
    uint32_t c = c0;
    for (; c < c1 && c % 5u; c++) acc += tlm_t3_at(row, c) * a->q[c];
    const uint32_t b0 = c / 5u, b1 = c1 / 5u;
    if (c < c1 && b1 > b0) {
        acc += lut_sum(row + b0, a->lut + (size_t)b0 * STRIDE3, b1 - b0, STRIDE3);
        c = b1 * 5u;
    }
    for (; c < c1; c++) acc += tlm_t3_at(row, c) * a->q[c];
    return acc;
}

/* t2 columns [c0, cols) one by one (a row's last partial byte) */
static inline int32_t t2_tail(const uint8_t *row, const int8_t *x, uint32_t c0, uint32_t cols)
{
    int32_t acc = 0;
    for (uint32_t c = c0; c < cols; c++) acc += tlm_t2_at(row, c) * x[c];
    return acc;
}

/* One scale per row or per tensor: the drive's arithmetic, two rows at a
 * time over `whole` code bytes (tables `st` entries apart), plus t2
 * columns from tail_c0 on one by one. */
static LUT_INLINE void lut_rows(float *out, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t st, uint32_t whole,
                            uint32_t tail_c0)
{
    const size_t rb = (size_t)tlm_row_bytes_of(w);
    const int16_t *t = a->lut;
    const size_t sstep = w->scale_kind == TLM_SCALE_ROW ? 1u : 0u;
    const float *sc = w->scales;
    const float as = a->scale;
    const uint32_t cols = w->cols;
    const uint8_t *row = w->data;
    float *o = out, *oend = out + (w->rows & ~1u);
    for (; o < oend; o += 2, row += 2u * rb, sc += 2u * sstep) {
        int32_t s0, s1;
        lut_sum2(row, rb, t, whole, st, &s0, &s1);
        if (tail_c0 < cols) {
            s0 += t2_tail(row, a->q, tail_c0, cols);
            s1 += t2_tail(row + rb, a->q, tail_c0, cols);
        }
        o[0] = (float)s0 * sc[0] * as;
        o[1] = (float)s1 * sc[sstep] * as;
    }
    if (w->rows & 1u) o[0] = (float)(lut_sum(row, t, whole, st) + t2_tail(row, a->q, tail_c0, cols)) * sc[0] * as;
}

void tlm_matvec_q8_t2_lut(float *out, const tlm_act_q8 *a, const tlm_tensor *w)
{
    if (*a->lut_kind != TLM_WTYPE_T2) build_t2(a);
    if (w->scale_kind == TLM_SCALE_GROUP) {
        tlm_q8_drive(out, a, w, dot_t2_lut);
        return;
    }
    const uint32_t whole = w->cols >> 2;
    lut_rows(out, a, w, STRIDE, whole, whole * 4u); /* a last partial byte column by column */
}

void tlm_matvec_q8_t3_lut(float *out, const tlm_act_q8 *a, const tlm_tensor *w)
{
    if (*a->lut_kind != TLM_WTYPE_T3) build_t3(a);
    if (w->scale_kind == TLM_SCALE_GROUP) {
        tlm_q8_drive(out, a, w, dot_t3_lut);
        return;
    }
    /* every byte whole: the padding trits of a last partial byte meet the
     * zeros q is padded with, so the table sums stay exact */
    lut_rows(out, a, w, STRIDE3, (w->cols + 4u) / 5u, w->cols);
}
