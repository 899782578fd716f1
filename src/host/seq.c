#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/ops.h"
#include "nn/gemm.h"
#include "nn/layers.h"
#include "seq.h"
#include "simd.h"

tlm_status tlm_seq_ws_init(tlm_seq_ws *ws, const tlm_model *m, uint32_t max_T, tlm_error *err)
{
    const tlm_hparams *hp = &m->hp;
    const size_t T = max_T, kv = tlm_hparams_kv_dim(hp), hs = hp->dim / hp->n_heads;
    const size_t widest = hp->hidden_dim > hp->dim ? hp->hidden_dim : hp->dim;
    memset(ws, 0, sizeof *ws);
    ws->max_T = max_T;
    ws->x = malloc(T * hp->dim * 4);
    ws->xb = malloc(T * hp->dim * 4);
    ws->xb2 = malloc(T * hp->dim * 4);
    ws->q = malloc(T * hp->dim * 4);
    ws->k = malloc(T * kv * 4);
    ws->v = malloc(T * kv * 4);
    ws->hb = malloc(T * hp->hidden_dim * 4);
    ws->hb2 = malloc(T * hp->hidden_dim * 4);
    ws->att = malloc(tlm_attention_scratch_floats(max_T, hp->n_kv_heads, (uint32_t)hs) * 4);
    ws->wbuf = malloc((TLM_SEQ_WBUF_ROWS + 1) * widest * 4);
    ws->logits = malloc(T * hp->vocab_size * 4);
    ws->xq = malloc(T * widest * 4);
    ws->qrow = malloc(widest + 64);
    if (!ws->x || !ws->xb || !ws->xb2 || !ws->q || !ws->k || !ws->v || !ws->hb || !ws->hb2 || !ws->att || !ws->wbuf ||
        !ws->logits || !ws->xq || !ws->qrow) {
        tlm_seq_ws_free(ws);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory for a sequence of %u positions", max_T);
    }
    return TLM_OK;
}

void tlm_seq_ws_free(tlm_seq_ws *ws)
{
    free(ws->x); free(ws->xb); free(ws->xb2); free(ws->q); free(ws->k); free(ws->v);
    free(ws->hb); free(ws->hb2); free(ws->att); free(ws->wbuf); free(ws->logits);
    free(ws->xq); free(ws->qrow);
    memset(ws, 0, sizeof *ws);
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
        tlm_gemm_ld(out + r0, W->rows, X, wbuf, T, n, nr, 0);
    }
}

static const float *f32_of(const tlm_model *m, tlm_role role, uint32_t layer)
{
    tlm_tensor t;
    tlm_model_tensor(m, role, layer, &t);
    return (const float *)(const void *)t.data;
}

void tlm_seq_fake_q8(float *out, const float *X, uint32_t T, uint32_t n, int8_t *qrow)
{
    for (uint32_t t = 0; t < T; t++) {
        const float s = tlm_q8_quantize_row(qrow, X + (size_t)t * n, n);
        for (uint32_t i = 0; i < n; i++) out[(size_t)t * n + i] = (float)qrow[i] * s;
    }
}

static void matmul_role(float *out, const float *X, uint32_t T, const tlm_model *m, tlm_role role, uint32_t l,
                        tlm_seq_ws *ws)
{
    tlm_tensor t;
    tlm_model_tensor(m, role, l, &t);
    if (t.wtype != TLM_WTYPE_F32 && !ws->float_acts) {
        tlm_seq_fake_q8(ws->xq, X, T, t.cols, ws->qrow);
        X = ws->xq;
    }
    tlm_seq_matmul(out, X, T, &t, ws->wbuf);
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

    for (uint32_t l = 0; l < hp->n_layers; l++) {
        const float *an = f32_of(m, TLM_ROLE_ATTN_NORM, l);
        for (uint32_t t = 0; t < T; t++) tlm_rmsnorm(ws->xb + (size_t)t * dim, ws->x + (size_t)t * dim, an, dim, hp->norm_eps);
        matmul_role(ws->q, ws->xb, T, m, TLM_ROLE_WQ, l, ws);
        matmul_role(ws->k, ws->xb, T, m, TLM_ROLE_WK, l, ws);
        matmul_role(ws->v, ws->xb, T, m, TLM_ROLE_WV, l, ws);
        tlm_rope_fwd(ws->q, T, dim, hs, hp->rope_theta);
        tlm_rope_fwd(ws->k, T, kv_dim, hs, hp->rope_theta);
        tlm_attention_fwd(ws->xb, NULL, ws->q, ws->k, ws->v, T, hp->n_heads, hp->n_kv_heads, hs, ws->att);
        matmul_role(ws->xb2, ws->xb, T, m, TLM_ROLE_WO, l, ws);
        for (size_t i = 0; i < (size_t)T * dim; i++) ws->x[i] += ws->xb2[i];

        const float *fn = f32_of(m, TLM_ROLE_FFN_NORM, l);
        for (uint32_t t = 0; t < T; t++) tlm_rmsnorm(ws->xb + (size_t)t * dim, ws->x + (size_t)t * dim, fn, dim, hp->norm_eps);
        matmul_role(ws->hb, ws->xb, T, m, TLM_ROLE_W1, l, ws);
        matmul_role(ws->hb2, ws->xb, T, m, TLM_ROLE_W3, l, ws);
        tlm_swiglu_fwd(ws->hb, ws->hb, ws->hb2, (size_t)T * hidden);
        matmul_role(ws->xb, ws->hb, T, m, TLM_ROLE_W2, l, ws);
        for (size_t i = 0; i < (size_t)T * dim; i++) ws->x[i] += ws->xb[i];
    }
    const float *fin = f32_of(m, TLM_ROLE_FINAL_NORM, 0);
    for (uint32_t t = 0; t < T; t++) tlm_rmsnorm(ws->x + (size_t)t * dim, ws->x + (size_t)t * dim, fin, dim, hp->norm_eps);
    matmul_role(ws->logits, ws->x, T, m, TLM_ROLE_CLASSIFIER, 0, ws);
}
