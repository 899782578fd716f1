#include <stdlib.h>
#include <string.h>

#include "../nn/layers.h"
#include "../seq.h"
#include "model_grad.h"
#include "rng.h"

typedef struct {
    float *x_in, *xn1, *inv1, *q, *k, *v, *lse, *att, *x_mid, *xn2, *inv2, *a, *b, *hh;
    int act_q8; /* fake int8 activations into this layer's matrices */
} layer_acts;

struct tlm_train_ws {
    uint32_t max_T, n_layers;
    int act_q8_classifier; /* fake int8 activations into the classifier */
    float dropout;         /* residual-branch dropout rate for the next fwd_bwd (0: none) */
    uint64_t drop_seed;
    int8_t *qrow;          /* one row of quantized activations */
    layer_acts *acts;
    float *x_fin, *xnf, *invf, *logits;
    float *dx, *dxn, *dq, *dk, *dv, *datt, *dh, *da, *db;
    float *wt, *dyt, *attn_scratch;
    float *block; /* one allocation holding all of the above */
};

tlm_status tlm_train_ws_new(tlm_train_ws **out, const tlm_hparams *hp, uint32_t max_T, tlm_error *err)
{
    const size_t T = max_T, D = hp->dim, H = hp->hidden_dim, V = hp->vocab_size, L = hp->n_layers;
    const size_t KV = tlm_hparams_kv_dim(hp), hs = D / hp->n_heads;
    const size_t widest = H > D ? H : D, wide_out = V > widest ? V : widest;
    const size_t per_layer = T * (D * 6 + KV * 2 + H * 3 + 2 + hp->n_heads);
    const size_t total = L * per_layer + T * (D * 2 + 1 + V) + T * (D * 4 + KV * 2 + H * 3) +
                         wide_out * D /* wt */ + wide_out * T /* dyt */ +
                         tlm_attention_scratch_floats(max_T, hp->n_kv_heads, (uint32_t)hs);
    tlm_train_ws *ws = calloc(1, sizeof *ws);
    if (!ws) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    ws->max_T = max_T;
    ws->n_layers = (uint32_t)L;
    ws->acts = calloc(L, sizeof *ws->acts);
    ws->block = malloc(total * sizeof(float));
    ws->qrow = malloc(wide_out + 64u);
    if (!ws->acts || !ws->block || !ws->qrow) {
        tlm_train_ws_free(ws);
        return tlm_fail(err, TLM_ERR_NOMEM, "cannot allocate %llu MB of training activations",
                        (unsigned long long)(total * 4 >> 20));
    }
    float *at = ws->block;
#define TAKE(ptr, n) do { (ptr) = at; at += (n); } while (0)
    for (size_t l = 0; l < L; l++) {
        layer_acts *a = &ws->acts[l];
        TAKE(a->x_in, T * D); TAKE(a->xn1, T * D); TAKE(a->inv1, T); TAKE(a->q, T * D);
        TAKE(a->k, T * KV); TAKE(a->v, T * KV); TAKE(a->lse, T * hp->n_heads); TAKE(a->att, T * D); TAKE(a->x_mid, T * D);
        TAKE(a->xn2, T * D); TAKE(a->inv2, T); TAKE(a->a, T * H); TAKE(a->b, T * H); TAKE(a->hh, T * H);
    }
    TAKE(ws->x_fin, T * D); TAKE(ws->xnf, T * D); TAKE(ws->invf, T); TAKE(ws->logits, T * V);
    TAKE(ws->dx, T * D); TAKE(ws->dxn, T * D); TAKE(ws->dq, T * D); TAKE(ws->datt, T * D);
    TAKE(ws->dk, T * KV); TAKE(ws->dv, T * KV); TAKE(ws->dh, T * H); TAKE(ws->da, T * H); TAKE(ws->db, T * H);
    TAKE(ws->wt, wide_out * D); TAKE(ws->dyt, wide_out * T);
    ws->attn_scratch = at;
#undef TAKE
    *out = ws;
    return TLM_OK;
}

void tlm_train_ws_set_act_q8(tlm_train_ws *ws, int blocks, int classifier)
{
    for (uint32_t l = 0; l < ws->n_layers; l++) ws->acts[l].act_q8 = blocks;
    ws->act_q8_classifier = classifier;
}

void tlm_train_ws_set_act_q8_layer(tlm_train_ws *ws, uint32_t layer, int on)
{
    if (layer < ws->n_layers) ws->acts[layer].act_q8 = on;
}

void tlm_train_ws_set_dropout(tlm_train_ws *ws, float rate, uint64_t seed)
{
    ws->dropout = rate;
    ws->drop_seed = seed;
}

/* Dropout mask of branch `branch` (2 per layer) element i: a hash of
 * (seed, branch, i), so backward recomputes it instead of storing it and
 * the result does not depend on which thread ran the sequence. Returns the
 * multiplier: 0 or 1 / (1 - rate). */
static float drop_mult(uint64_t seed, uint32_t branch, size_t i, uint32_t cut, float keep_scale)
{
    const uint64_t z = tlm_mix64(seed + ((uint64_t)branch << 40) + (uint64_t)i * 0x9E3779B97F4A7C15ull);
    return (uint32_t)(z >> 40) < cut ? 0.0f : keep_scale;
}

static void dropout_apply(const tlm_train_ws *ws, uint32_t branch, float *y, const float *x, size_t n)
{
    const uint32_t cut = (uint32_t)((double)ws->dropout * 16777216.0);
    const float keep = 1.0f / (1.0f - ws->dropout);
    for (size_t i = 0; i < n; i++) y[i] = x[i] * drop_mult(ws->drop_seed, branch, i, cut, keep);
}

/* The gradient reaching a branch's output: dx itself, or (with dropout)
 * dx through the branch's mask, written to `tmp`; the residual path keeps
 * the unmasked dx. */
static const float *branch_grad(const tlm_train_ws *ws, uint32_t branch, int drop, float *tmp, size_t n)
{
    if (!drop) return ws->dx;
    dropout_apply(ws, branch, tmp, ws->dx, n);
    return tmp;
}

const float *tlm_train_ws_logits(const tlm_train_ws *ws) { return ws->logits; }

void tlm_train_ws_free(tlm_train_ws *ws)
{
    if (!ws) return;
    free(ws->qrow);
    free(ws->acts);
    free(ws->block);
    free(ws);
}

static void add(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static void forward(const tlm_params *p, const uint32_t *in, uint32_t T, tlm_train_ws *ws, int drop)
{
    const tlm_hparams *hp = &p->hp;
    const uint32_t D = hp->dim, H = hp->hidden_dim, V = hp->vocab_size, L = hp->n_layers;
    const uint32_t KV = tlm_hparams_kv_dim(hp), hs = D / hp->n_heads, nh = hp->n_heads, nkv = hp->n_kv_heads;
    const size_t TD = (size_t)T * D, TH = (size_t)T * H;

    /* ---- forward ---- */
    tlm_embed_fwd(ws->acts[0].x_in, p->tok_embed, in, T, D);
    for (uint32_t l = 0; l < L; l++) {
        layer_acts *a = &ws->acts[l];
        const tlm_layer_params *w = &p->layers[l];
        const int q8 = a->act_q8;
        tlm_rmsnorm_fwd(a->xn1, a->inv1, a->x_in, w->attn_norm, T, D, hp->norm_eps);
        if (q8) tlm_seq_fake_q8(a->xn1, a->xn1, T, D, ws->qrow);
        tlm_linear_fwd(a->q, a->xn1, w->wq, T, D, D, ws->wt);
        tlm_linear_fwd(a->k, a->xn1, w->wk, T, D, KV, ws->wt);
        tlm_linear_fwd(a->v, a->xn1, w->wv, T, D, KV, ws->wt);
        tlm_rope_fwd(a->q, T, D, hs, hp->rope_theta);
        tlm_rope_fwd(a->k, T, KV, hs, hp->rope_theta);
        tlm_attention_fwd(a->att, a->lse, a->q, a->k, a->v, T, nh, nkv, hs, ws->attn_scratch);
        if (q8) tlm_seq_fake_q8(a->att, a->att, T, D, ws->qrow);
        tlm_linear_fwd(a->x_mid, a->att, w->wo, T, D, D, ws->wt);
        if (drop) dropout_apply(ws, 2 * l, a->x_mid, a->x_mid, TD);
        add(a->x_mid, a->x_in, TD);
        tlm_rmsnorm_fwd(a->xn2, a->inv2, a->x_mid, w->ffn_norm, T, D, hp->norm_eps);
        if (q8) tlm_seq_fake_q8(a->xn2, a->xn2, T, D, ws->qrow);
        tlm_linear_fwd(a->a, a->xn2, w->w1, T, D, H, ws->wt);
        tlm_linear_fwd(a->b, a->xn2, w->w3, T, D, H, ws->wt);
        tlm_swiglu_fwd(a->hh, a->a, a->b, TH);
        if (q8) tlm_seq_fake_q8(a->hh, a->hh, T, H, ws->qrow);
        float *next = l + 1 < L ? ws->acts[l + 1].x_in : ws->x_fin;
        tlm_linear_fwd(next, a->hh, w->w2, T, H, D, ws->wt);
        if (drop) dropout_apply(ws, 2 * l + 1, next, next, TD);
        add(next, a->x_mid, TD);
    }
    tlm_rmsnorm_fwd(ws->xnf, ws->invf, ws->x_fin, p->final_norm, T, D, hp->norm_eps);
    if (ws->act_q8_classifier) tlm_seq_fake_q8(ws->xnf, ws->xnf, T, D, ws->qrow);
    tlm_linear_fwd(ws->logits, ws->xnf, p->classifier, T, D, V, ws->wt);
}

void tlm_model_logits(const tlm_params *p, const uint32_t *in, uint32_t T, tlm_train_ws *ws) { forward(p, in, T, ws, 0); }

double tlm_model_fwd_bwd(const tlm_params *p, tlm_params *grad, const uint32_t *in, const uint32_t *targets,
                         uint32_t T, float scale, tlm_train_ws *ws)
{
    return tlm_model_fwd_bwd_distill(p, grad, in, targets, T, scale, NULL, 0.0f, ws);
}

double tlm_model_fwd_bwd_distill(const tlm_params *p, tlm_params *g, const uint32_t *in, const uint32_t *targets,
                                 uint32_t T, float scale, const float *teacher_probs, float alpha, tlm_train_ws *ws)
{
    const tlm_hparams *hp = &p->hp;
    const uint32_t D = hp->dim, H = hp->hidden_dim, V = hp->vocab_size, L = hp->n_layers;
    const uint32_t KV = tlm_hparams_kv_dim(hp), hs = D / hp->n_heads, nh = hp->n_heads, nkv = hp->n_kv_heads;
    const size_t TD = (size_t)T * D, TH = (size_t)T * H, TK = (size_t)T * KV;
    const int drop = ws->dropout > 0.0f;
    forward(p, in, T, ws, drop);
    /* logits now hold dlogits */
    const double loss = teacher_probs ? tlm_xent_distill_fwd_bwd(ws->logits, targets, teacher_probs, alpha, T, V, scale)
                                      : tlm_xent_fwd_bwd(ws->logits, targets, T, V, scale);
    if (!g) return loss;

    /* ---- backward ---- */
    memset(ws->dxn, 0, TD * sizeof(float));
    tlm_linear_bwd(ws->dxn, g->classifier, ws->logits, ws->xnf, p->classifier, T, D, V, ws->dyt);
    memset(ws->dx, 0, TD * sizeof(float));
    tlm_rmsnorm_bwd(ws->dx, g->final_norm, ws->dxn, ws->x_fin, ws->invf, p->final_norm, T, D);
    for (uint32_t l = L; l-- > 0;) {
        layer_acts *a = &ws->acts[l];
        const tlm_layer_params *w = &p->layers[l];
        tlm_layer_params *gw = &g->layers[l];
        /* feed-forward: next = x_mid + W2 (silu(W1 xn2) * W3 xn2) */
        memset(ws->dh, 0, TH * sizeof(float));
        tlm_linear_bwd(ws->dh, gw->w2, branch_grad(ws, 2 * l + 1, drop, ws->dq, TD), a->hh, w->w2, T, H, D, ws->dyt);
        memset(ws->da, 0, TH * sizeof(float));
        memset(ws->db, 0, TH * sizeof(float));
        tlm_swiglu_bwd(ws->da, ws->db, ws->dh, a->a, a->b, TH);
        memset(ws->dxn, 0, TD * sizeof(float));
        tlm_linear_bwd(ws->dxn, gw->w1, ws->da, a->xn2, w->w1, T, D, H, ws->dyt);
        tlm_linear_bwd(ws->dxn, gw->w3, ws->db, a->xn2, w->w3, T, D, H, ws->dyt);
        tlm_rmsnorm_bwd(ws->dx, gw->ffn_norm, ws->dxn, a->x_mid, a->inv2, w->ffn_norm, T, D); /* dx: d x_mid */
        /* attention: x_mid = x_in + Wo attn(rope(Wq xn1), rope(Wk xn1), Wv xn1) */
        memset(ws->datt, 0, TD * sizeof(float));
        tlm_linear_bwd(ws->datt, gw->wo, branch_grad(ws, 2 * l, drop, ws->dq, TD), a->att, w->wo, T, D, D, ws->dyt);
        memset(ws->dq, 0, TD * sizeof(float));
        memset(ws->dk, 0, TK * sizeof(float));
        memset(ws->dv, 0, TK * sizeof(float));
        tlm_attention_bwd(ws->dq, ws->dk, ws->dv, ws->datt, a->q, a->k, a->v, a->lse, T, nh, nkv, hs, ws->attn_scratch);
        tlm_rope_bwd(ws->dq, T, D, hs, hp->rope_theta);
        tlm_rope_bwd(ws->dk, T, KV, hs, hp->rope_theta);
        memset(ws->dxn, 0, TD * sizeof(float));
        tlm_linear_bwd(ws->dxn, gw->wq, ws->dq, a->xn1, w->wq, T, D, D, ws->dyt);
        tlm_linear_bwd(ws->dxn, gw->wk, ws->dk, a->xn1, w->wk, T, D, KV, ws->dyt);
        tlm_linear_bwd(ws->dxn, gw->wv, ws->dv, a->xn1, w->wv, T, D, KV, ws->dyt);
        tlm_rmsnorm_bwd(ws->dx, gw->attn_norm, ws->dxn, a->x_in, a->inv1, w->attn_norm, T, D); /* dx: d x_in */
    }
    tlm_embed_bwd(g->tok_embed, ws->dx, in, T, D);
    return loss;
}
