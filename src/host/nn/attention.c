/* Causal grouped-query attention over a whole sequence. Keys and values
 * are transposed into scratch (hs rows of T per kv head) so that scores,
 * probabilities and their gradients run along positions, in vector lanes.
 * The backward pass recomputes each row of probabilities instead of
 * storing T x T of them per head. */
#include <math.h>
#include <string.h>

#include "../simd.h"
#include "gemm.h"
#include "layers.h"

size_t tlm_attention_scratch_floats(uint32_t T, uint32_t n_kv, uint32_t hs)
{
    return 2u * (size_t)T + 4u * (size_t)T * n_kv * hs;
}

/* out[s] = sum_c coef[c] * rows[c][s] for s < n (rows have stride T). */
static void mix_rows(float *out, const float *coef, const float *rows, uint32_t hs, uint32_t T, uint32_t n)
{
    uint32_t s = 0;
    for (; s + 8 <= n; s += 8) {
        tlm_v8 acc = v8_set1(0.0f);
        for (uint32_t c = 0; c < hs; c++) acc += v8_set1(coef[c]) * v8_load(rows + (size_t)c * T + s);
        v8_store(out + s, acc);
    }
    for (; s < n; s++) {
        float acc = 0.0f;
        for (uint32_t c = 0; c < hs; c++) acc += coef[c] * rows[(size_t)c * T + s];
        out[s] = acc;
    }
}

/* Softmax of scale * (q . k_s) over s <= t into p; returns nothing. */
static void probs(float *p, const float *q, const float *kt, uint32_t hs, uint32_t T, uint32_t n, float scale)
{
    mix_rows(p, q, kt, hs, T, n);
    for (uint32_t s = 0; s < n; s++) p[s] *= scale;
    const float inv = 1.0f / tlm_vexp_sum(p, n, tlm_vmax(p, n));
    for (uint32_t s = 0; s < n; s++) p[s] *= inv;
}

void tlm_attention_fwd(float *O, const float *Q, const float *K, const float *V, uint32_t T, uint32_t n_heads,
                       uint32_t n_kv, uint32_t hs, float *scratch)
{
    const uint32_t qw = n_heads * hs, kw = n_kv * hs, group = n_heads / n_kv;
    const float scale = 1.0f / sqrtf((float)hs);
    float *p = scratch, *kt = scratch + 2u * (size_t)T, *vt = kt + (size_t)T * kw;
    tlm_transpose(kt, K, T, kw);
    tlm_transpose(vt, V, T, kw);
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t h = 0; h < n_heads; h++) {
            const uint32_t kvo = (h / group) * hs;
            probs(p, Q + (size_t)t * qw + (size_t)h * hs, kt + (size_t)kvo * T, hs, T, t + 1u, scale);
            float *o = O + (size_t)t * qw + (size_t)h * hs;
            for (uint32_t c = 0; c < hs; c++) o[c] = tlm_dotv(p, vt + (size_t)(kvo + c) * T, t + 1u);
        }
}

void tlm_attention_bwd(float *dQ, float *dK, float *dV, const float *dO, const float *Q, const float *K,
                       const float *V, uint32_t T, uint32_t n_heads, uint32_t n_kv, uint32_t hs, float *scratch)
{
    const uint32_t qw = n_heads * hs, kw = n_kv * hs, group = n_heads / n_kv;
    const float scale = 1.0f / sqrtf((float)hs);
    float *p = scratch, *dp = scratch + T;
    float *kt = scratch + 2u * (size_t)T, *vt = kt + (size_t)T * kw, *dkt = vt + (size_t)T * kw, *dvt = dkt + (size_t)T * kw;
    tlm_transpose(kt, K, T, kw);
    tlm_transpose(vt, V, T, kw);
    memset(dkt, 0, (size_t)T * kw * 2u * sizeof(float));
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t h = 0; h < n_heads; h++) {
            const uint32_t kvo = (h / group) * hs, n = t + 1u;
            const float *q = Q + (size_t)t * qw + (size_t)h * hs, *go = dO + (size_t)t * qw + (size_t)h * hs;
            probs(p, q, kt + (size_t)kvo * T, hs, T, n, scale);
            mix_rows(dp, go, vt + (size_t)kvo * T, hs, T, n);        /* dP_s = dO_t . v_s */
            const float d = tlm_dotv(p, dp, n);                      /* sum_s P_s dP_s */
            for (uint32_t s = 0; s < n; s++) dp[s] = p[s] * (dp[s] - d) * scale; /* dScore_s, scaled */
            float *gq = dQ + (size_t)t * qw + (size_t)h * hs;
            for (uint32_t c = 0; c < hs; c++) {
                gq[c] += tlm_dotv(dp, kt + (size_t)(kvo + c) * T, n);
                float *gk = dkt + (size_t)(kvo + c) * T, *gv = dvt + (size_t)(kvo + c) * T;
                const float qc = q[c], oc = go[c];
                for (uint32_t s = 0; s < n; s++) {
                    gk[s] += dp[s] * qc;
                    gv[s] += p[s] * oc;
                }
            }
        }
    /* back from the transposed layout, accumulating */
    for (uint32_t s = 0; s < T; s++)
        for (uint32_t c = 0; c < kw; c++) {
            dK[(size_t)s * kw + c] += dkt[(size_t)c * T + s];
            dV[(size_t)s * kw + c] += dvt[(size_t)c * T + s];
        }
}
