/* Causal grouped-query attention over a whole sequence. Keys and values
 * are transposed into scratch (hs rows per kv head, the row stride padded
 * with zeros) so that scores, probabilities and their
 * gradients run along positions in whole 8-lane vectors; the lanes past the
 * causal limit are masked to probability 0.
 *
 * The forward pass keeps each row's log-sum-exp, so the backward pass
 * recomputes a probability with one exponential (no max or sum pass) instead
 * of storing T x T of them per head. Head dimensions go in chunks of up to 8
 * vector accumulators; hs = 8 (stories260K's heads) is compiled as its own
 * instance so that those loops unroll. */
#include <math.h>
#include <string.h>

#include "../simd.h"
#include "gemm.h"
#include "layers.h"

#define CH 8 /* head dimensions per chunk of accumulators */

/* Row stride of the transposed layout: whole vectors, plus 16 floats so that
 * rows are not 4 KiB apart (loads and stores a multiple of 4 KiB apart
 * falsely wait on each other on x86 cores). */
static uint32_t padded(uint32_t T) { return ((T + 7u) & ~7u) + 16u; }

size_t tlm_attention_scratch_floats(uint32_t T, uint32_t n_kv, uint32_t hs)
{
    const size_t Tp = padded(T);
    return 4u * Tp + 4u * Tp * n_kv * hs;
}

/* Lanes s0 + i < n are all ones, the rest zero. */
static inline tlm_v8i lanes_below(uint32_t s0, uint32_t n)
{
    const tlm_v8i idx = {0, 1, 2, 3, 4, 5, 6, 7};
    return idx + (int32_t)s0 < (int32_t)n;
}

static inline tlm_v8 v8_and(tlm_v8 v, tlm_v8i m)
{
    tlm_v8i b;
    memcpy(&b, &v, sizeof b);
    b &= m;
    memcpy(&v, &b, sizeof v);
    return v;
}

/* dst (cols x Tp) = src (T x cols) transposed, padding columns zeroed */
static void transpose_padded(float *dst, const float *src, uint32_t T, uint32_t Tp, uint32_t cols)
{
    tlm_transpose_ld(dst, Tp, src, T, cols);
    for (uint32_t c = 0; c < cols; c++) memset(dst + (size_t)c * Tp + T, 0, (Tp - T) * sizeof(float));
}

/* Where each buffer sits in the scratch: two rows of Tp per query row of a
 * pair (probabilities, then their gradients), then keys, values and their
 * gradients transposed (kw rows of Tp each). */
typedef struct { float *p, *dp, *kt, *vt, *dkt, *dvt; } att_scratch;

static att_scratch scratch_at(float *scratch, uint32_t Tp, uint32_t kw)
{
    const size_t plane = (size_t)Tp * kw;
    att_scratch a;
    a.p = scratch;
    a.dp = scratch + 2u * (size_t)Tp;
    a.kt = scratch + 4u * (size_t)Tp;
    a.vt = a.kt + plane;
    a.dkt = a.vt + plane;
    a.dvt = a.dkt + plane;
    return a;
}

/* sum_c coef[c] * rows[c][s..s+8) */
static inline __attribute__((always_inline)) tlm_v8 score_block(const float *coef, const float *rows, uint32_t hs,
                                                               uint32_t Tp, uint32_t s)
{
    tlm_v8 acc = v8_set1(0.0f);
    for (uint32_t c = 0; c < hs; c++) acc += v8_set1(coef[c]) * v8_load(rows + (size_t)c * Tp + s);
    return acc;
}

/* One query row: o = softmax(scale q . k_s) . v over s < n; returns the
 * row's log-sum-exp of the scaled scores. p: scratch of Tp floats. */
static inline __attribute__((always_inline)) float fwd_row(float *o, float *p, const float *q, const float *kt,
                                                          const float *vt, uint32_t hs, uint32_t Tp, uint32_t n,
                                                          float scale)
{
    const uint32_t nb = (n + 7u) / 8u, last = (nb - 1u) * 8u;
    const tlm_v8 vs = v8_set1(scale);
    tlm_v8 mx = v8_set1(-INFINITY);
    for (uint32_t s = 0; s < nb * 8u; s += 8) {
        tlm_v8 sc = score_block(q, kt, hs, Tp, s) * vs;
        if (s == last) {
            const tlm_v8i in = lanes_below(s, n);
            sc = v8_and(sc, in) + v8_and(v8_set1(-INFINITY), ~in);
        }
        v8_store(p + s, sc);
        mx = v8_max(mx, sc);
    }
    float m = mx[0];
    for (int i = 1; i < 8; i++) m = mx[i] > m ? mx[i] : m;
    tlm_v8 sum = v8_set1(0.0f);
    const tlm_v8 vm = v8_set1(m);
    for (uint32_t s = 0; s < nb * 8u; s += 8) {
        tlm_v8 e = v8_exp(v8_load(p + s) - vm);
        if (s == last) e = v8_and(e, lanes_below(s, n));
        v8_store(p + s, e);
        sum += e;
    }
    const float tot = v8_hsum(sum), inv = 1.0f / tot;
    for (uint32_t c0 = 0; c0 < hs; c0 += CH) {
        const uint32_t cw = hs - c0 < CH ? hs - c0 : CH;
        tlm_v8 acc[CH];
        for (uint32_t c = 0; c < cw; c++) acc[c] = v8_set1(0.0f);
        for (uint32_t s = 0; s < nb * 8u; s += 8) {
            const tlm_v8 e = v8_load(p + s);
            for (uint32_t c = 0; c < cw; c++) acc[c] += e * v8_load(vt + (size_t)(c0 + c) * Tp + s);
        }
        for (uint32_t c = 0; c < cw; c++) o[c0 + c] = v8_hsum(acc[c]) * inv;
    }
    return m + logf(tot);
}

/* The backward pass of R query rows (R = 1 or 2: heads that share a kv
 * head, at the same position, so the same n): accumulates into gq[r] (hs
 * each), gkt and gvt (hs rows of stride Tp, transposed). Sharing the rows
 * halves the loads of keys and values and the read-modify-writes of their
 * gradients. p, dp: scratch of R * Tp floats each. */
static inline __attribute__((always_inline)) void bwd_rows(uint32_t R, float *const *gq, float *gkt, float *gvt,
                                                          float *p, float *dp, const float *const *q,
                                                          const float *const *go, const float *lse, const float *kt,
                                                          const float *vt, uint32_t hs, uint32_t Tp, uint32_t n,
                                                          float scale)
{
    const uint32_t nb = (n + 7u) / 8u, last = (nb - 1u) * 8u;
    const tlm_v8 vs = v8_set1(scale);
    for (uint32_t r = 0; r < R; r++) {
        const tlm_v8 vl = v8_set1(lse[r]);
        float *pr = p + (size_t)r * Tp, *dpr = dp + (size_t)r * Tp;
        tlm_v8 dacc = v8_set1(0.0f);
        for (uint32_t s = 0; s < nb * 8u; s += 8) {
            tlm_v8 e = v8_exp(score_block(q[r], kt, hs, Tp, s) * vs - vl); /* P_s */
            if (s == last) e = v8_and(e, lanes_below(s, n));
            const tlm_v8 g = score_block(go[r], vt, hs, Tp, s);           /* dP_s = dO . v_s */
            v8_store(pr + s, e);
            v8_store(dpr + s, g);
            dacc += e * g;
        }
        const tlm_v8 d = v8_set1(v8_hsum(dacc));
        for (uint32_t s = 0; s < nb * 8u; s += 8)                          /* dScore_s, scaled */
            v8_store(dpr + s, v8_load(pr + s) * (v8_load(dpr + s) - d) * vs);
    }
    for (uint32_t c0 = 0; c0 < hs; c0 += CH) {
        const uint32_t cw = hs - c0 < CH ? hs - c0 : CH;
        tlm_v8 acc[2][CH], qc[2][CH], oc[2][CH];
        for (uint32_t r = 0; r < R; r++)
            for (uint32_t c = 0; c < cw; c++) {
                acc[r][c] = v8_set1(0.0f);
                qc[r][c] = v8_set1(q[r][c0 + c]);
                oc[r][c] = v8_set1(go[r][c0 + c]);
            }
        for (uint32_t s = 0; s < nb * 8u; s += 8) {
            tlm_v8 ds[2], pe[2];
            for (uint32_t r = 0; r < R; r++) {
                ds[r] = v8_load(dp + (size_t)r * Tp + s);
                pe[r] = v8_load(p + (size_t)r * Tp + s);
            }
            for (uint32_t c = 0; c < cw; c++) {
                const size_t at = (size_t)(c0 + c) * Tp + s;
                const tlm_v8 k = v8_load(kt + at);
                tlm_v8 gk = v8_load(gkt + at), gv = v8_load(gvt + at);
                for (uint32_t r = 0; r < R; r++) {
                    acc[r][c] += ds[r] * k;
                    gk += ds[r] * qc[r][c];
                    gv += pe[r] * oc[r][c];
                }
                v8_store(gkt + at, gk);
                v8_store(gvt + at, gv);
            }
        }
        for (uint32_t r = 0; r < R; r++)
            for (uint32_t c = 0; c < cw; c++) gq[r][c0 + c] += v8_hsum(acc[r][c]);
    }
}

static inline __attribute__((always_inline)) void fwd_all(float *O, float *lse, const float *Q, const float *kt, const float *vt, float *p, uint32_t T,
                    uint32_t n_heads, uint32_t group, uint32_t hs, uint32_t Tp, float scale)
{
    const uint32_t qw = n_heads * hs;
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t h = 0; h < n_heads; h++) {
            const size_t kvo = (size_t)(h / group) * hs * Tp, qo = (size_t)t * qw + (size_t)h * hs;
            const float l = fwd_row(O + qo, p, Q + qo, kt + kvo, vt + kvo, hs, Tp, t + 1u, scale);
            if (lse) lse[(size_t)t * n_heads + h] = l;
        }
}

static inline __attribute__((always_inline)) void bwd_all(float *dQ, float *dkt, float *dvt, const float *dO,
                                                         const float *Q, const float *lse, const float *kt,
                                                         const float *vt, float *p, float *dp, uint32_t T,
                                                         uint32_t n_heads, uint32_t group, uint32_t hs, uint32_t Tp,
                                                         float scale)
{
    const uint32_t qw = n_heads * hs, R = group % 2u == 0 ? 2u : 1u;
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t h = 0; h < n_heads; h += R) {
            const size_t kvo = (size_t)(h / group) * hs * Tp, qo = (size_t)t * qw + (size_t)h * hs;
            float *gq[2] = {dQ + qo, dQ + qo + hs};
            const float *q[2] = {Q + qo, Q + qo + hs}, *go[2] = {dO + qo, dO + qo + hs};
            if (R == 2)
                bwd_rows(2, gq, dkt + kvo, dvt + kvo, p, dp, q, go, lse + (size_t)t * n_heads + h, kt + kvo, vt + kvo,
                         hs, Tp, t + 1u, scale);
            else
                bwd_rows(1, gq, dkt + kvo, dvt + kvo, p, dp, q, go, lse + (size_t)t * n_heads + h, kt + kvo, vt + kvo,
                         hs, Tp, t + 1u, scale);
        }
}

/* Instances: hs = 8 with every loop bound known, and any hs. */
static void fwd_hs8(float *O, float *lse, const float *Q, const float *kt, const float *vt, float *p, uint32_t T,
                    uint32_t n_heads, uint32_t group, uint32_t Tp, float scale)
{
    fwd_all(O, lse, Q, kt, vt, p, T, n_heads, group, 8u, Tp, scale);
}

static void bwd_hs8(float *dQ, float *dkt, float *dvt, const float *dO, const float *Q, const float *lse,
                    const float *kt, const float *vt, float *p, float *dp, uint32_t T, uint32_t n_heads,
                    uint32_t group, uint32_t Tp, float scale)
{
    bwd_all(dQ, dkt, dvt, dO, Q, lse, kt, vt, p, dp, T, n_heads, group, 8u, Tp, scale);
}

void tlm_attention_fwd(float *O, float *lse, const float *Q, const float *K, const float *V, uint32_t T,
                       uint32_t n_heads, uint32_t n_kv, uint32_t hs, float *scratch)
{
    const uint32_t kw = n_kv * hs, group = n_heads / n_kv, Tp = padded(T);
    const float scale = 1.0f / sqrtf((float)hs);
    const att_scratch a = scratch_at(scratch, Tp, kw);
    transpose_padded(a.kt, K, T, Tp, kw);
    transpose_padded(a.vt, V, T, Tp, kw);
    if (hs == 8) fwd_hs8(O, lse, Q, a.kt, a.vt, a.p, T, n_heads, group, Tp, scale);
    else fwd_all(O, lse, Q, a.kt, a.vt, a.p, T, n_heads, group, hs, Tp, scale);
}

void tlm_attention_bwd(float *dQ, float *dK, float *dV, const float *dO, const float *Q, const float *K,
                       const float *V, const float *lse, uint32_t T, uint32_t n_heads, uint32_t n_kv, uint32_t hs,
                       float *scratch)
{
    const uint32_t kw = n_kv * hs, group = n_heads / n_kv, Tp = padded(T);
    const float scale = 1.0f / sqrtf((float)hs);
    const att_scratch a = scratch_at(scratch, Tp, kw);
    transpose_padded(a.kt, K, T, Tp, kw);
    transpose_padded(a.vt, V, T, Tp, kw);
    memset(a.dkt, 0, (size_t)Tp * kw * 2u * sizeof(float));
    if (hs == 8) bwd_hs8(dQ, a.dkt, a.dvt, dO, Q, lse, a.kt, a.vt, a.p, a.dp, T, n_heads, group, Tp, scale);
    else bwd_all(dQ, a.dkt, a.dvt, dO, Q, lse, a.kt, a.vt, a.p, a.dp, T, n_heads, group, hs, Tp, scale);
    /* back from the transposed layout, accumulating */
    for (uint32_t s = 0; s < T; s++)
        for (uint32_t c = 0; c < kw; c++) {
            dK[(size_t)s * kw + c] += a.dkt[(size_t)c * Tp + s];
            dV[(size_t)s * kw + c] += a.dvt[(size_t)c * Tp + s];
        }
}
