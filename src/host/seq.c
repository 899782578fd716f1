#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/ops.h"
#include "seq.h"
#include "simd.h"

tlm_status tlm_seq_ws_init(tlm_seq_ws *ws, const tlm_model *m, uint32_t max_T, tlm_error *err)
{
    const tlm_hparams *hp = &m->hp;
    const size_t T = max_T, kv = tlm_hparams_kv_dim(hp);
    const size_t widest = hp->hidden_dim > hp->dim ? hp->hidden_dim : hp->dim;
    memset(ws, 0, sizeof *ws);
    ws->max_T = max_T;
    ws->x = malloc(T * hp->dim * 4);
    ws->xb = malloc(T * hp->dim * 4);
    ws->xb2 = malloc(T * hp->dim * 4);
    ws->q = malloc(T * hp->dim * 4);
    ws->k = malloc(T * kv * 4);
    ws->v = malloc(T * kv * 4);
    ws->kt = malloc(T * kv * 4);
    ws->vt = malloc(T * kv * 4);
    ws->hb = malloc(T * hp->hidden_dim * 4);
    ws->hb2 = malloc(T * hp->hidden_dim * 4);
    ws->att = malloc(T * 4 + widest * 4);
    ws->wbuf = malloc((TLM_SEQ_WBUF_ROWS + 1) * widest * 4);
    ws->logits = malloc(T * hp->vocab_size * 4);
    if (!ws->x || !ws->xb || !ws->xb2 || !ws->q || !ws->k || !ws->v || !ws->kt || !ws->vt || !ws->hb || !ws->hb2 || !ws->att || !ws->wbuf ||
        !ws->logits) {
        tlm_seq_ws_free(ws);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory for a sequence of %u positions", max_T);
    }
    return TLM_OK;
}

void tlm_seq_ws_free(tlm_seq_ws *ws)
{
    free(ws->x); free(ws->xb); free(ws->xb2); free(ws->q); free(ws->k); free(ws->v); free(ws->kt); free(ws->vt);
    free(ws->hb); free(ws->hb2); free(ws->att); free(ws->wbuf); free(ws->logits);
    memset(ws, 0, sizeof *ws);
}

/* Register-blocked product over a transposed weight block: Wt holds
 * columns c of rows [r0, r0+nr) as Wt[c * nr + j]. Each step adds
 * X[t][c] * Wt[c][j..j+16) into a 4 x 16 tile of outputs, which the
 * compiler keeps in SIMD registers. */
#define TILE_T 4
#define TILE_R 16
static void tile_product(float *out, const float *X, uint32_t T, const float *Wt, uint32_t r0, uint32_t nr,
                         uint32_t rows, uint32_t n)
{
    for (uint32_t t = 0; t < T; t += TILE_T) {
        const uint32_t nt = T - t < TILE_T ? T - t : TILE_T;
        for (uint32_t j = 0; j < nr; j += TILE_R) {
            const uint32_t nj = nr - j < TILE_R ? nr - j : TILE_R;
            if (nt == TILE_T && nj == TILE_R) {
                tlm_v8 acc[TILE_T][2];
                for (int i = 0; i < TILE_T; i++) acc[i][0] = acc[i][1] = v8_set1(0.0f);
                const float *x0 = X + (size_t)t * n;
                for (uint32_t c = 0; c < n; c++) {
                    const float *w = Wt + (size_t)c * nr + j;
                    const tlm_v8 wa = v8_load(w), wb = v8_load(w + 8);
                    for (int i = 0; i < TILE_T; i++) {
                        const tlm_v8 xv = v8_set1(x0[(size_t)i * n + c]);
                        acc[i][0] += xv * wa;
                        acc[i][1] += xv * wb;
                    }
                }
                for (int i = 0; i < TILE_T; i++) {
                    float *o = out + (size_t)(t + i) * rows + r0 + j;
                    v8_store(o, acc[i][0]);
                    v8_store(o + 8, acc[i][1]);
                }
            } else {
                float acc[TILE_T][TILE_R] = {{0}};
                for (uint32_t c = 0; c < n; c++) {
                    const float *w = Wt + (size_t)c * nr + j;
                    for (uint32_t i = 0; i < nt; i++) {
                        const float xv = X[(size_t)(t + i) * n + c];
                        for (uint32_t k = 0; k < nj; k++) acc[i][k] += xv * w[k];
                    }
                }
                for (uint32_t i = 0; i < nt; i++) memcpy(out + (size_t)(t + i) * rows + r0 + j, acc[i], nj * sizeof(float));
            }
        }
    }
}

void tlm_seq_matmul(float *out, const float *X, uint32_t T, const tlm_tensor *W, float *wbuf)
{
    const tlm_wtype_traits *tr = tlm_wtype_get(W->wtype);
    const uint32_t n = W->cols;
    float *row = wbuf + (size_t)TLM_SEQ_WBUF_ROWS * n;
    for (uint32_t r0 = 0; r0 < W->rows; r0 += TLM_SEQ_WBUF_ROWS) {
        const uint32_t nr = W->rows - r0 < TLM_SEQ_WBUF_ROWS ? W->rows - r0 : TLM_SEQ_WBUF_ROWS;
        for (uint32_t i = 0; i < nr; i++) {
            tr->row_to_f32(row, W, r0 + i);
            for (uint32_t c = 0; c < n; c++) wbuf[(size_t)c * nr + i] = row[c];
        }
        tile_product(out, X, T, wbuf, r0, nr, W->rows, n);
    }
}

static const float *f32_of(const tlm_model *m, tlm_role role, uint32_t layer)
{
    tlm_tensor t;
    tlm_model_tensor(m, role, layer, &t);
    return (const float *)(const void *)t.data;
}

static void matmul_role(float *out, const float *X, uint32_t T, const tlm_model *m, tlm_role role, uint32_t l,
                        float *wbuf)
{
    tlm_tensor t;
    tlm_model_tensor(m, role, l, &t);
    tlm_seq_matmul(out, X, T, &t, wbuf);
}

/* Reductions and maps over positions, eight lanes at a time. */
float tlm_seq_max(const float *x, uint32_t n)
{
    float m = x[0];
    uint32_t s = 0;
    if (n >= 8) {
        tlm_v8 v = v8_load(x);
        for (s = 8; s + 8 <= n; s += 8) v = v8_max(v, v8_load(x + s));
        for (int k = 0; k < 8; k++) m = v[k] > m ? v[k] : m;
    }
    for (; s < n; s++) m = x[s] > m ? x[s] : m;
    return m;
}

/* x[s] = exp(x[s] - mx); returns the sum. */
float tlm_seq_exp_sum(float *x, uint32_t n, float mx)
{
    tlm_v8 acc = v8_set1(0.0f), vm = v8_set1(mx);
    uint32_t s = 0;
    for (; s + 8 <= n; s += 8) {
        tlm_v8 e = v8_exp(v8_load(x + s) - vm);
        v8_store(x + s, e);
        acc += e;
    }
    float tot = v8_hsum(acc);
    if (s < n) {
        float tail[8] = {0};
        for (uint32_t k = 0; k < n - s; k++) tail[k] = x[s + k] - mx;
        tlm_v8 e = v8_exp(v8_load(tail));
        for (uint32_t k = 0; k < n - s; k++) {
            x[s + k] = e[k];
            tot += e[k];
        }
    }
    return tot;
}

/* Dot product with four independent vector sums. */
static float lane_dot(const float *a, const float *b, uint32_t n)
{
    tlm_v8 a0 = v8_set1(0.0f), a1 = a0, a2 = a0, a3 = a0;
    uint32_t s = 0;
    for (; s + 32 <= n; s += 32) {
        a0 += v8_load(a + s) * v8_load(b + s);
        a1 += v8_load(a + s + 8) * v8_load(b + s + 8);
        a2 += v8_load(a + s + 16) * v8_load(b + s + 16);
        a3 += v8_load(a + s + 24) * v8_load(b + s + 24);
    }
    for (; s + 8 <= n; s += 8) a0 += v8_load(a + s) * v8_load(b + s);
    float tot = v8_hsum((a0 + a1) + (a2 + a3));
    for (; s < n; s++) tot += a[s] * b[s];
    return tot;
}

/* Causal attention for all positions; writes head outputs into ws->xb.
 * Keys and values are first transposed (ws->kt, ws->vt: kv_dim x T) so
 * that scores and weighted sums run along positions, in SIMD lanes. */
static void seq_attention(const tlm_hparams *hp, uint32_t T, tlm_seq_ws *ws)
{
    const uint32_t dim = hp->dim, hs = dim / hp->n_heads, kv_dim = tlm_hparams_kv_dim(hp);
    const uint32_t group = hp->n_heads / hp->n_kv_heads;
    const float scale = 1.0f / sqrtf((float)hs);
    for (uint32_t s = 0; s < T; s++)
        for (uint32_t c = 0; c < kv_dim; c++) {
            ws->kt[(size_t)c * T + s] = ws->k[(size_t)s * kv_dim + c];
            ws->vt[(size_t)c * T + s] = ws->v[(size_t)s * kv_dim + c];
        }
    float *att = ws->att;
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t h = 0; h < hp->n_heads; h++) {
            const float *q = ws->q + (size_t)t * dim + (size_t)h * hs;
            const uint32_t kvo = (h / group) * hs, n = t + 1u;
            const float *kt = ws->kt + (size_t)kvo * T;
            uint32_t s = 0;
            for (; s + 8 <= n; s += 8) {
                tlm_v8 acc = v8_set1(0.0f);
                for (uint32_t c = 0; c < hs; c++) acc += v8_set1(q[c]) * v8_load(kt + (size_t)c * T + s);
                v8_store(att + s, acc * scale);
            }
            for (; s < n; s++) {
                float acc = 0.0f;
                for (uint32_t c = 0; c < hs; c++) acc += q[c] * kt[(size_t)c * T + s];
                att[s] = acc * scale;
            }
            const float inv = 1.0f / tlm_seq_exp_sum(att, n, tlm_seq_max(att, n));
            float *o = ws->xb + (size_t)t * dim + (size_t)h * hs;
            for (uint32_t c = 0; c < hs; c++) {
                const float *vr = ws->vt + (size_t)(kvo + c) * T;
                o[c] = lane_dot(att, vr, n) * inv;
            }
        }
}

/* h = silu(h) * g, vectorized (the core's tlm_swiglu is the scalar form). */
static void seq_swiglu(float *h, const float *g, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        tlm_v8 v = v8_load(h + i);
        v8_store(h + i, v / (1.0f + v8_exp(-v)) * v8_load(g + i));
    }
    for (; i < n; i++) h[i] = h[i] / (1.0f + expf(-h[i])) * g[i];
}

void tlm_seq_forward(const tlm_model *m, const uint32_t *tokens, uint32_t T, tlm_seq_ws *ws)
{
    const tlm_hparams *hp = &m->hp;
    const uint32_t dim = hp->dim, hidden = hp->hidden_dim, kv_dim = tlm_hparams_kv_dim(hp);
    const uint32_t hs = dim / hp->n_heads;
    tlm_tensor emb;
    tlm_model_tensor(m, TLM_ROLE_TOK_EMBED, 0, &emb);
    const tlm_wtype_traits *etr = tlm_wtype_get(emb.wtype);
    for (uint32_t t = 0; t < T; t++) etr->row_to_f32(ws->x + (size_t)t * dim, &emb, tokens[t]);
    float *rope = ws->att + ws->max_T; /* head_size floats past the scores */

    for (uint32_t l = 0; l < hp->n_layers; l++) {
        const float *an = f32_of(m, TLM_ROLE_ATTN_NORM, l);
        for (uint32_t t = 0; t < T; t++) tlm_rmsnorm(ws->xb + (size_t)t * dim, ws->x + (size_t)t * dim, an, dim, hp->norm_eps);
        matmul_role(ws->q, ws->xb, T, m, TLM_ROLE_WQ, l, ws->wbuf);
        matmul_role(ws->k, ws->xb, T, m, TLM_ROLE_WK, l, ws->wbuf);
        matmul_role(ws->v, ws->xb, T, m, TLM_ROLE_WV, l, ws->wbuf);
        for (uint32_t t = 0; t < T; t++) {
            tlm_rope_table(rope, t, hs, hp->rope_theta);
            tlm_rope_apply(ws->q + (size_t)t * dim, dim, hs, rope);
            tlm_rope_apply(ws->k + (size_t)t * kv_dim, kv_dim, hs, rope);
        }
        seq_attention(hp, T, ws);
        matmul_role(ws->xb2, ws->xb, T, m, TLM_ROLE_WO, l, ws->wbuf);
        for (size_t i = 0; i < (size_t)T * dim; i++) ws->x[i] += ws->xb2[i];

        const float *fn = f32_of(m, TLM_ROLE_FFN_NORM, l);
        for (uint32_t t = 0; t < T; t++) tlm_rmsnorm(ws->xb + (size_t)t * dim, ws->x + (size_t)t * dim, fn, dim, hp->norm_eps);
        matmul_role(ws->hb, ws->xb, T, m, TLM_ROLE_W1, l, ws->wbuf);
        matmul_role(ws->hb2, ws->xb, T, m, TLM_ROLE_W3, l, ws->wbuf);
        seq_swiglu(ws->hb, ws->hb2, (size_t)T * hidden);
        matmul_role(ws->xb, ws->hb, T, m, TLM_ROLE_W2, l, ws->wbuf);
        for (size_t i = 0; i < (size_t)T * dim; i++) ws->x[i] += ws->xb[i];
    }
    const float *fin = f32_of(m, TLM_ROLE_FINAL_NORM, 0);
    for (uint32_t t = 0; t < T; t++) tlm_rmsnorm(ws->x + (size_t)t * dim, ws->x + (size_t)t * dim, fin, dim, hp->norm_eps);
    matmul_role(ws->logits, ws->x, T, m, TLM_ROLE_CLASSIFIER, 0, ws->wbuf);
}
