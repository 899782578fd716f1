/* On-device fine-tuning of the RMSNorm gains (tritlm/tune.h).
 *
 * The forward pass keeps only each layer's input (the residual stream) for
 * the window, except the first layer's, which is the embeddings, decoded
 * again when the backward pass reaches it; the backward pass recomputes one
 * layer's activations from its input, then goes back through it. Matrices are read one row at a time,
 * decoded to float (row_to_f32 of the weight type), and each decoded row
 * serves every position of the window: forward Y[t][r] = row . X[t],
 * backward dX[t] += dY[t][r] row. The classifier never holds a window of
 * logits: one pass over its rows finds each position's log-sum-exp, a
 * second one forms dlogits row by row and sends them back. The feed-forward
 * block works on FFN_CHUNK positions at a time (it mixes nothing across
 * positions), so only that many rows of its hidden activations are held.
 * Buffers share room wherever their lives do not overlap (tune_plan). Only
 * gains (or adapters) get gradients; weights stay where they are.
 *
 * Adapters (rank R) of wq, wk, wv and wo add s B (A x) to each product in
 * the forward pass. Their backward pass needs each product's input again:
 * the normed input of q, k and v shares room with dq, so it is normed
 * again into the attention's spent room; Wo's input, the attention's
 * output, shared room with the feed-forward block, so the attention is run
 * again from q, k and v (one window of T^2 scores per layer). */
#include <math.h>
#include <string.h>

#include "tritlm/tune.h"
#include "ops.h"

#define TUNE_ALIGN 16u
#define FFN_CHUNK 8u /* positions of the feed-forward block at a time */

/* Where everything sits in the workspace, in floats from ws. xs holds the
 * inputs of layers 1 .. L-1 and the last layer's output (slot l: layer l's
 * output); layer 0 reads the embeddings from slot 0 and writes its output
 * over them (it reads its input only before it writes). a, b and dh hold
 * FFN_CHUNK positions. Shared rooms, by when each buffer lives within a
 * layer (forward, then the backward pass's recompute and its way back):
 * - xn (until q, k and v are made) and dq (attention backward on);
 * - xn2 and dxn (each chunk's rows written once their xn2 rows are spent);
 * - att (until Wo has read it), then the feed-forward block's a, b and dh,
 *   then datt, dk and dv (from the attention's backward pass on).
 * lse, the head's log-sum-exps, holds the attention backward pass's dp in
 * between. */
typedef struct {
    size_t xs, xn, inv, q, k, v, att, xmid, xn2, inv2, a, b;
    size_t dx, dxn, dq, datt, dk, dv, dh, row, p, rope, lse, lu, lt, total;
} tune_plan;

static size_t round4(size_t n) { return (n + 3u) & ~(size_t)3u; } /* 16-byte steps */

static int plan_ws(const tlm_hparams *hp, uint32_t T, uint32_t rank, tune_plan *p)
{
    const size_t D = hp->dim, H = hp->hidden_dim, L = hp->n_layers, KV = tlm_hparams_kv_dim(hp);
    const size_t hs = D / hp->n_heads, TD = round4((size_t)T * D);
    const size_t TH = round4((size_t)(T < FFN_CHUNK ? T : FFN_CHUNK) * H);
    const size_t TK = round4((size_t)T * KV), Tr = round4(T);
    if (T == 0 || D == 0 || L == 0 || D > ((size_t)1 << 20) || H > ((size_t)1 << 22) || L > 1024u || T > ((size_t)1 << 20))
        return 0;
    size_t at = 0;
#define TAKE(field, n) do { p->field = at; at += (n); } while (0)
    TAKE(xs, L * TD);
    TAKE(xn, TD); TAKE(inv, Tr); TAKE(q, TD); TAKE(k, TK); TAKE(v, TK); TAKE(xmid, TD);
    TAKE(xn2, TD); TAKE(inv2, Tr); TAKE(dx, TD);
    p->dq = p->xn;
    p->dxn = p->xn2;
    const size_t ffn = 3u * TH, attb = TD + 2u * TK; /* a, b, dh; datt, dk, dv */
    p->att = p->datt = p->a = at;
    p->b = at + TH;
    p->dh = at + 2u * TH;
    p->dk = at + TD;
    p->dv = at + TD + TK;
    at += ffn > attb ? ffn : attb;
    TAKE(row, round4(H > D ? H : D)); TAKE(p, Tr); TAKE(rope, round4(hs)); TAKE(lse, Tr);
    TAKE(lu, round4((size_t)T * rank)); TAKE(lt, round4((size_t)T * rank)); /* A X and B^T dY of one adapter */
#undef TAKE
    p->total = at;
    return 1;
}

/* The adapted matrices of a layer, in the order of the adapters' storage. */
static const tlm_role lora_roles[4] = {TLM_ROLE_WQ, TLM_ROLE_WK, TLM_ROLE_WV, TLM_ROLE_WO};

/* Floats of one layer's adapters (A and B of each adapted matrix). */
static size_t lora_layer_floats(const tlm_hparams *hp, uint32_t rank)
{
    size_t n = 0;
    for (uint32_t j = 0; j < 4u; j++) {
        uint32_t rows, cols;
        tlm_role_shape(hp, lora_roles[j], &rows, &cols);
        n += (size_t)rank * ((size_t)rows + cols);
    }
    return n;
}

/* The gains' share of the parameter vectors, then the adapters'. */
static size_t gains_stride(const tlm_hparams *hp) { return round4((2u * (size_t)hp->n_layers + 1u) * hp->dim); }

size_t tlm_tune_arena_size_lora(const tlm_model *m, uint32_t window, uint32_t rank)
{
    tune_plan p;
    if (!m || rank > TLM_TUNE_MAX_RANK || !plan_ws(&m->hp, window, rank, &p)) return 0;
    const size_t params = gains_stride(&m->hp) + round4((size_t)m->hp.n_layers * lora_layer_floats(&m->hp, rank));
    return (4u * params + p.total) * sizeof(float) + TUNE_ALIGN;
}

size_t tlm_tune_arena_size(const tlm_model *m, uint32_t window) { return tlm_tune_arena_size_lora(m, window, 0); }

/* Gains of norm k (2 l: layer l's attention norm, 2 l + 1: its feed-forward
 * norm, 2 L: the final norm). */
static float *gains_of(float *g, const tlm_hparams *hp, uint32_t k) { return g + (size_t)k * hp->dim; }

uint32_t tlm_tune_norm_index(const tlm_hparams *hp, uint32_t role, uint32_t layer)
{
    return role == TLM_ROLE_FINAL_NORM ? 2u * hp->n_layers : 2u * layer + (role == TLM_ROLE_FFN_NORM ? 1u : 0u);
}

tlm_role tlm_tune_norm_at(const tlm_hparams *hp, uint32_t k, uint32_t *layer)
{
    *layer = k == 2u * hp->n_layers ? 0u : k >> 1;
    return k == 2u * hp->n_layers ? TLM_ROLE_FINAL_NORM : ((k & 1u) ? TLM_ROLE_FFN_NORM : TLM_ROLE_ATTN_NORM);
}

static void norm_tensor(const tlm_model *m, uint32_t k, tlm_tensor *t)
{
    uint32_t layer;
    const tlm_role role = tlm_tune_norm_at(&m->hp, k, &layer);
    tlm_model_tensor(m, role, layer, t);
}

tlm_status tlm_tune_init(tlm_tune *tu, const tlm_model *m, uint32_t window, void *arena, size_t arena_bytes,
                         tlm_error *err)
{
    return tlm_tune_init_lora(tu, m, window, 0, 1.0f, 0, arena, arena_bytes, err);
}

tlm_status tlm_tune_init_lora(tlm_tune *tu, const tlm_model *m, uint32_t window, uint32_t rank, float alpha,
                              uint64_t seed, void *arena, size_t arena_bytes, tlm_error *err)
{
    tlm_error_clear(err);
    if (!tu || !m) return tlm_fail(err, TLM_ERR_ARG, "no tuner or no model");
    if (window == 0 || window >= m->hp.seq_len)
        return tlm_fail(err, TLM_ERR_ARG, "tuning window %u must be between 1 and the model's seq_len - 1 (%u)", window,
                        m->hp.seq_len - 1u);
    const uint32_t kv = tlm_hparams_kv_dim(&m->hp), side = kv < m->hp.dim ? kv : m->hp.dim;
    if (rank > TLM_TUNE_MAX_RANK || rank > side)
        return tlm_fail(err, TLM_ERR_ARG, "adapter rank %u: at most %u for this model", rank,
                        side < TLM_TUNE_MAX_RANK ? side : TLM_TUNE_MAX_RANK);
    if (rank && !(alpha > 0.0f && alpha < 1e30f)) return tlm_fail(err, TLM_ERR_ARG, "adapter alpha must be positive");
    const size_t need = tlm_tune_arena_size_lora(m, window, rank);
    if (need == 0) return tlm_fail(err, TLM_ERR_OVERFLOW, "the model's shapes overflow the tuning arena's size");
    if (!arena || arena_bytes < need)
        return tlm_fail(err, TLM_ERR_ARENA, "arena of %llu bytes; tuning this model over %u positions needs %llu",
                        (unsigned long long)arena_bytes, window, (unsigned long long)need);
    const uintptr_t a = (uintptr_t)arena;
    float *base = (float *)(void *)((uint8_t *)arena + ((TUNE_ALIGN - a % TUNE_ALIGN) % TUNE_ALIGN));
    const tlm_hparams *hp = &m->hp;
    const uint32_t n = (2u * hp->n_layers + 1u) * hp->dim;
    const size_t n_lora = (size_t)hp->n_layers * lora_layer_floats(hp, rank);
    const size_t gstride = gains_stride(hp) + round4(n_lora);
    memset(tu, 0, sizeof *tu);
    tu->model = m;
    tu->window = window;
    tu->n_gains = n;
    tu->gains = base;
    tu->grad = base + gstride;
    tu->m = base + 2u * gstride;
    tu->v = base + 3u * gstride;
    tu->ws = base + 4u * gstride;
    tu->lora_rank = rank;
    tu->lora_scale = rank ? alpha / (float)rank : 0.0f;
    tu->n_lora = (uint32_t)n_lora;
    tu->lora = base + gains_stride(hp);
    for (uint32_t k = 0; k <= 2u * hp->n_layers; k++) {
        tlm_tensor t;
        norm_tensor(m, k, &t);
        tlm_wtype_get(t.wtype)->row_to_f32(gains_of(tu->gains, hp, k), &t, 0);
    }
    memset(tu->grad, 0, 3u * gstride * sizeof(float));
    if (rank) { /* A uniform with variance 1 / cols, B zero */
        tlm_chacha cc;
        tlm_rand rnd;
        tlm_chacha_seed(&cc, seed);
        tlm_rand_init(&rnd, tlm_chacha_fill, &cc);
        memset(tu->lora, 0, n_lora * sizeof(float));
        float *at = tu->lora;
        for (uint32_t l = 0; l < hp->n_layers; l++)
            for (uint32_t j = 0; j < 4u; j++) {
                uint32_t rows, cols;
                tlm_role_shape(hp, lora_roles[j], &rows, &cols);
                const float bound = sqrtf(3.0f / (float)cols);
                for (size_t i = 0; i < (size_t)rank * cols; i++)
                    at[i] = ((float)(tlm_rand_u32(&rnd) >> 8) * (1.0f / 8388608.0f) - 1.0f) * bound;
                at += (size_t)rank * (rows + cols);
            }
    }
    return TLM_OK;
}

/* ---- adapters ---- */

typedef struct {
    float *a, *b, *ga, *gb; /* A (rank x cols), B (rows x rank), their gradients */
    uint32_t rows, cols, r;
    float s;
} lora_mat;

/* Adapter j (0 wq, 1 wk, 2 wv, 3 wo) of layer l. */
static lora_mat lora_at(const tlm_tune *tu, uint32_t l, uint32_t j)
{
    const tlm_hparams *hp = &tu->model->hp;
    lora_mat x;
    x.r = tu->lora_rank;
    x.s = tu->lora_scale;
    size_t off = (size_t)l * lora_layer_floats(hp, x.r);
    for (uint32_t i = 0; i < j; i++) {
        tlm_role_shape(hp, lora_roles[i], &x.rows, &x.cols);
        off += (size_t)x.r * (x.rows + x.cols);
    }
    tlm_role_shape(hp, lora_roles[j], &x.rows, &x.cols);
    x.a = tu->lora + off;
    x.b = x.a + (size_t)x.r * x.cols;
    x.ga = tu->grad + (tu->lora - tu->gains) + off;
    x.gb = x.ga + (size_t)x.r * x.cols;
    return x;
}

/* u[t] = A X[t] (T x r) */
static void lora_in(const lora_mat *x, const float *X, uint32_t T, float *u)
{
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t k = 0; k < x->r; k++)
            u[(size_t)t * x->r + k] = tlm_dot_f32(x->a + (size_t)k * x->cols, X + (size_t)t * x->cols, x->cols);
}

/* Y[t] += s B A X[t] (Y rows of ystride) */
static void lora_fwd(const tlm_tune *tu, const tune_plan *pl, uint32_t l, uint32_t j, float *Y, uint32_t ystride,
                     const float *X, uint32_t T)
{
    const lora_mat x = lora_at(tu, l, j);
    float *u = tu->ws + pl->lu;
    lora_in(&x, X, T, u);
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t i = 0; i < x.rows; i++)
            Y[(size_t)t * ystride + i] += x.s * tlm_dot_f32(x.b + (size_t)i * x.r, u + (size_t)t * x.r, x.r);
}

/* The gradients of adapter j from dY (T rows of dystride) and its input X:
 * gB += s sum_t dY[t] (A X[t])^T, gA += s sum_t (B^T dY[t]) X[t]^T; B^T dY
 * stays in lt for lora_dx. */
static void lora_grads(tlm_tune *tu, const tune_plan *pl, uint32_t l, uint32_t j, const float *dY, uint32_t dystride,
                       const float *X, uint32_t T)
{
    const lora_mat x = lora_at(tu, l, j);
    float *u = tu->ws + pl->lu, *lt = tu->ws + pl->lt;
    lora_in(&x, X, T, u);
    memset(lt, 0, (size_t)T * x.r * sizeof(float));
    for (uint32_t t = 0; t < T; t++) {
        const float *dy = dY + (size_t)t * dystride, *ut = u + (size_t)t * x.r;
        float *ltt = lt + (size_t)t * x.r;
        for (uint32_t i = 0; i < x.rows; i++) {
            const float g = dy[i];
            const float *bi = x.b + (size_t)i * x.r;
            float *gbi = x.gb + (size_t)i * x.r;
            for (uint32_t k = 0; k < x.r; k++) {
                gbi[k] += x.s * g * ut[k];
                ltt[k] += bi[k] * g;
            }
        }
        const float *xt = X + (size_t)t * x.cols;
        for (uint32_t k = 0; k < x.r; k++) {
            const float c = x.s * ltt[k];
            float *gak = x.ga + (size_t)k * x.cols;
            for (uint32_t i = 0; i < x.cols; i++) gak[i] += c * xt[i];
        }
    }
}

/* dX[t] += s A^T (B^T dY[t]), from lora_grads's lt (dX rows of cols) */
static void lora_dx(const tlm_tune *tu, const tune_plan *pl, uint32_t l, uint32_t j, float *dX, uint32_t T)
{
    const lora_mat x = lora_at(tu, l, j);
    const float *lt = tu->ws + pl->lt;
    for (uint32_t t = 0; t < T; t++) {
        float *dx = dX + (size_t)t * x.cols;
        for (uint32_t k = 0; k < x.r; k++) {
            const float c = x.s * lt[(size_t)t * x.r + k];
            const float *ak = x.a + (size_t)k * x.cols;
            for (uint32_t i = 0; i < x.cols; i++) dx[i] += c * ak[i];
        }
    }
}

/* ---- matrices, one decoded row at a time ---- */

/* Y[t][r] = W[r] . X[t] for t < T (X rows of cols, Y rows of ystride). */
static void mat_fwd(float *Y, uint32_t ystride, const float *X, uint32_t T, const tlm_tensor *w, float *row)
{
    const tlm_wtype_traits *tr = tlm_wtype_get(w->wtype);
    for (uint32_t r = 0; r < w->rows; r++) {
        tr->row_to_f32(row, w, r);
        for (uint32_t t = 0; t < T; t++) Y[(size_t)t * ystride + r] = tlm_dot_f32(row, X + (size_t)t * w->cols, w->cols);
    }
}

/* dX[t] += sum over r of dY[t][r] W[r] (dX rows of cols, dY rows of rows). */
static void mat_bwd(float *dX, const float *dY, uint32_t T, const tlm_tensor *w, float *row)
{
    const tlm_wtype_traits *tr = tlm_wtype_get(w->wtype);
    const uint32_t cols = w->cols;
    for (uint32_t r = 0; r < w->rows; r++) {
        tr->row_to_f32(row, w, r);
        for (uint32_t t = 0; t < T; t++) {
            const float g = dY[(size_t)t * w->rows + r];
            float *dx = dX + (size_t)t * cols;
            for (uint32_t i = 0; i < cols; i++) dx[i] += g * row[i];
        }
    }
}

/* ---- RoPE on T rows of width (row t at position t); back: the inverse
 * rotation, which is the transpose ---- */

static void rope_rows(float *X, uint32_t T, uint32_t width, uint32_t hs, float theta, float *rope, int back)
{
    for (uint32_t t = 0; t < T; t++) {
        tlm_rope_table(rope, t, hs, theta);
        if (back)
            for (uint32_t i = 1; i < hs; i += 2) rope[i] = -rope[i];
        tlm_rope_apply(X + (size_t)t * width, width, hs, rope);
    }
}

/* ---- causal grouped-query attention ----
 * Scores of query head h at position t against positions s <= t, softmax
 * probabilities into p (t + 1 of them); returns nothing, p is the result. */
static void attn_probs(float *p, const float *Q, const float *K, uint32_t t, uint32_t h, uint32_t D, uint32_t KV,
                       uint32_t hs, uint32_t group)
{
    const float *q = Q + (size_t)t * D + (size_t)h * hs;
    const uint32_t ko = (h / group) * hs;
    const float sc = 1.0f / sqrtf((float)hs);
    for (uint32_t s = 0; s <= t; s++) p[s] = tlm_dot_f32(q, K + (size_t)s * KV + ko, hs) * sc;
    tlm_softmax(p, t + 1u);
}

static void attn_fwd(float *O, const float *Q, const float *K, const float *V, uint32_t T, const tlm_hparams *hp,
                     float *p)
{
    const uint32_t D = hp->dim, KV = tlm_hparams_kv_dim(hp), hs = D / hp->n_heads;
    const uint32_t group = hp->n_heads / hp->n_kv_heads;
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t h = 0; h < hp->n_heads; h++) {
            attn_probs(p, Q, K, t, h, D, KV, hs, group);
            float *o = O + (size_t)t * D + (size_t)h * hs;
            const uint32_t vo = (h / group) * hs;
            memset(o, 0, hs * sizeof(float));
            for (uint32_t s = 0; s <= t; s++)
                for (uint32_t i = 0; i < hs; i++) o[i] += p[s] * V[(size_t)s * KV + vo + i];
        }
}

/* o = sum_s p_s v_s, p = softmax(q . k_s / sqrt(hs)):
 * dv_s += p_s do;  dp_s = do . v_s;  ds_s = p_s (dp_s - sum_u p_u dp_u);
 * dq += sum_s ds_s k_s / sqrt(hs);  dk_s += ds_s q / sqrt(hs).
 * p and dp: T floats of scratch each. */
static void attn_bwd(float *dQ, float *dK, float *dV, const float *dO, const float *Q, const float *K, const float *V,
                     uint32_t T, const tlm_hparams *hp, float *p, float *dp)
{
    const uint32_t D = hp->dim, KV = tlm_hparams_kv_dim(hp), hs = D / hp->n_heads;
    const uint32_t group = hp->n_heads / hp->n_kv_heads;
    const float sc = 1.0f / sqrtf((float)hs);
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t h = 0; h < hp->n_heads; h++) {
            attn_probs(p, Q, K, t, h, D, KV, hs, group);
            const float *dO_th = dO + (size_t)t * D + (size_t)h * hs, *q = Q + (size_t)t * D + (size_t)h * hs;
            float *dq = dQ + (size_t)t * D + (size_t)h * hs;
            const uint32_t ko = (h / group) * hs;
            float pdp = 0.0f;
            for (uint32_t s = 0; s <= t; s++) {
                dp[s] = tlm_dot_f32(dO_th, V + (size_t)s * KV + ko, hs);
                pdp += p[s] * dp[s];
            }
            for (uint32_t s = 0; s <= t; s++) {
                const float ds = p[s] * (dp[s] - pdp) * sc;
                float *dk = dK + (size_t)s * KV + ko, *dv = dV + (size_t)s * KV + ko;
                const float *k = K + (size_t)s * KV + ko;
                for (uint32_t i = 0; i < hs; i++) {
                    dv[i] += p[s] * dO_th[i];
                    dq[i] += ds * k[i];
                    dk[i] += ds * q[i];
                }
            }
        }
}

/* ---- one layer ---- */

typedef struct {
    tlm_tensor wq, wk, wv, wo, w1, w2, w3;
} layer_w;

static void layer_tensors(const tlm_model *m, uint32_t l, layer_w *w)
{
    tlm_model_tensor(m, TLM_ROLE_WQ, l, &w->wq);
    tlm_model_tensor(m, TLM_ROLE_WK, l, &w->wk);
    tlm_model_tensor(m, TLM_ROLE_WV, l, &w->wv);
    tlm_model_tensor(m, TLM_ROLE_WO, l, &w->wo);
    tlm_model_tensor(m, TLM_ROLE_W1, l, &w->w1);
    tlm_model_tensor(m, TLM_ROLE_W2, l, &w->w2);
    tlm_model_tensor(m, TLM_ROLE_W3, l, &w->w3);
}

/* Layer l's forward pass from X (T x D) with its activations left in the
 * workspace; with Xout, its output too. */
static void layer_fwd(tlm_tune *tu, const tune_plan *pl, uint32_t l, uint32_t T, const float *X, float *Xout)
{
    const tlm_hparams *hp = &tu->model->hp;
    const uint32_t D = hp->dim, H = hp->hidden_dim, KV = tlm_hparams_kv_dim(hp), hs = D / hp->n_heads;
    float *ws = tu->ws;
    layer_w w;
    layer_tensors(tu->model, l, &w);
    tlm_rmsnorm_rows(ws + pl->xn, ws + pl->inv, X, gains_of(tu->gains, hp, 2u * l), T, D, hp->norm_eps);
    mat_fwd(ws + pl->q, D, ws + pl->xn, T, &w.wq, ws + pl->row);
    mat_fwd(ws + pl->k, KV, ws + pl->xn, T, &w.wk, ws + pl->row);
    mat_fwd(ws + pl->v, KV, ws + pl->xn, T, &w.wv, ws + pl->row);
    if (tu->lora_rank) {
        lora_fwd(tu, pl, l, 0, ws + pl->q, D, ws + pl->xn, T);
        lora_fwd(tu, pl, l, 1, ws + pl->k, KV, ws + pl->xn, T);
        lora_fwd(tu, pl, l, 2, ws + pl->v, KV, ws + pl->xn, T);
    }
    rope_rows(ws + pl->q, T, D, hs, hp->rope_theta, ws + pl->rope, 0);
    rope_rows(ws + pl->k, T, KV, hs, hp->rope_theta, ws + pl->rope, 0);
    attn_fwd(ws + pl->att, ws + pl->q, ws + pl->k, ws + pl->v, T, hp, ws + pl->p);
    float *xmid = ws + pl->xmid;
    mat_fwd(xmid, D, ws + pl->att, T, &w.wo, ws + pl->row);
    if (tu->lora_rank) lora_fwd(tu, pl, l, 3, xmid, D, ws + pl->att, T);
    for (size_t i = 0; i < (size_t)T * D; i++) xmid[i] += X[i];
    tlm_rmsnorm_rows(ws + pl->xn2, ws + pl->inv2, xmid, gains_of(tu->gains, hp, 2u * l + 1u), T, D, hp->norm_eps);
    if (!Xout) return; /* the backward pass recomputes the feed-forward block chunk by chunk */
    float *a = ws + pl->a, *b = ws + pl->b;
    for (uint32_t t0 = 0; t0 < T; t0 += FFN_CHUNK) {
        const uint32_t n = T - t0 < FFN_CHUNK ? T - t0 : FFN_CHUNK;
        const float *xn2 = ws + pl->xn2 + (size_t)t0 * D;
        mat_fwd(a, H, xn2, n, &w.w1, ws + pl->row);
        mat_fwd(b, H, xn2, n, &w.w3, ws + pl->row);
        tlm_swiglu(a, b, n * H);
        float *out = Xout + (size_t)t0 * D;
        mat_fwd(out, D, a, n, &w.w2, ws + pl->row);
        for (size_t i = 0; i < (size_t)n * D; i++) out[i] += xmid[(size_t)t0 * D + i];
    }
}

/* From dx = d(layer output) to dx = d(layer input), with the gains'
 * gradients added; the layer's activations must be in the workspace. */
static void layer_bwd(tlm_tune *tu, const tune_plan *pl, uint32_t l, uint32_t T, const float *X)
{
    const tlm_hparams *hp = &tu->model->hp;
    const uint32_t D = hp->dim, H = hp->hidden_dim, KV = tlm_hparams_kv_dim(hp), hs = D / hp->n_heads;
    float *ws = tu->ws, *dx = ws + pl->dx, *dxn = ws + pl->dxn, *dh = ws + pl->dh, *a = ws + pl->a, *b = ws + pl->b;
    layer_w w;
    layer_tensors(tu->model, l, &w);
    /* feed-forward: out = xmid + W2 (silu(W1 xn2) * W3 xn2), a chunk of
     * positions at a time: its activations again, then back through it
     * (its xn2 rows are spent once its dxn rows are written over them) */
    for (uint32_t t0 = 0; t0 < T; t0 += FFN_CHUNK) {
        const uint32_t n = T - t0 < FFN_CHUNK ? T - t0 : FFN_CHUNK;
        const size_t nh = (size_t)n * H;
        mat_fwd(a, H, ws + pl->xn2 + (size_t)t0 * D, n, &w.w1, ws + pl->row);
        mat_fwd(b, H, ws + pl->xn2 + (size_t)t0 * D, n, &w.w3, ws + pl->row);
        memset(dh, 0, nh * sizeof(float));
        mat_bwd(dh, dx + (size_t)t0 * D, n, &w.w2, ws + pl->row);
        for (size_t i = 0; i < nh; i++) { /* dh becomes d(W1 xn2), b becomes d(W3 xn2) */
            const float g = dh[i], x = a[i], s = 1.0f / (1.0f + expf(-x));
            dh[i] = g * b[i] * s * (1.0f + x * (1.0f - s));
            b[i] = g * x * s;
        }
        float *dxc = dxn + (size_t)t0 * D;
        memset(dxc, 0, (size_t)n * D * sizeof(float));
        mat_bwd(dxc, dh, n, &w.w1, ws + pl->row);
        mat_bwd(dxc, b, n, &w.w3, ws + pl->row);
    }
    tlm_rmsnorm_rows_back(dx, gains_of(tu->grad, hp, 2u * l + 1u), dxn, ws + pl->xmid, ws + pl->inv2,
             gains_of(tu->gains, hp, 2u * l + 1u), T, D); /* dx: d xmid */
    /* attention: xmid = X + Wo attn(rope(Wq xn), rope(Wk xn), Wv xn) */
    float *datt = ws + pl->datt, *dq = ws + pl->dq, *dk = ws + pl->dk, *dv = ws + pl->dv;
    if (tu->lora_rank) { /* Wo's input again (its room went to the feed-forward block), then its adapter */
        attn_fwd(ws + pl->att, ws + pl->q, ws + pl->k, ws + pl->v, T, hp, ws + pl->p);
        lora_grads(tu, pl, l, 3, dx, D, ws + pl->att, T);
    }
    memset(datt, 0, (size_t)T * D * sizeof(float));
    mat_bwd(datt, dx, T, &w.wo, ws + pl->row);
    if (tu->lora_rank) lora_dx(tu, pl, l, 3, datt, T);
    memset(dq, 0, (size_t)T * D * sizeof(float));
    memset(dk, 0, (size_t)T * KV * sizeof(float));
    memset(dv, 0, (size_t)T * KV * sizeof(float));
    attn_bwd(dq, dk, dv, datt, ws + pl->q, ws + pl->k, ws + pl->v, T, hp, ws + pl->p, ws + pl->lse);
    rope_rows(dq, T, D, hs, hp->rope_theta, ws + pl->rope, 1);
    rope_rows(dk, T, KV, hs, hp->rope_theta, ws + pl->rope, 1);
    memset(dxn, 0, (size_t)T * D * sizeof(float));
    mat_bwd(dxn, dq, T, &w.wq, ws + pl->row);
    mat_bwd(dxn, dk, T, &w.wk, ws + pl->row);
    mat_bwd(dxn, dv, T, &w.wv, ws + pl->row);
    if (tu->lora_rank) { /* q, k and v's input again (dq took its room), into datt's spent room */
        float *xn = ws + pl->datt;
        tlm_rmsnorm_rows(xn, ws + pl->inv, X, gains_of(tu->gains, hp, 2u * l), T, D, hp->norm_eps);
        lora_grads(tu, pl, l, 0, dq, D, xn, T);
        lora_dx(tu, pl, l, 0, dxn, T);
        lora_grads(tu, pl, l, 1, dk, KV, xn, T);
        lora_dx(tu, pl, l, 1, dxn, T);
        lora_grads(tu, pl, l, 2, dv, KV, xn, T);
        lora_dx(tu, pl, l, 2, dxn, T);
    }
    tlm_rmsnorm_rows_back(dx, gains_of(tu->grad, hp, 2u * l), dxn, X, ws + pl->inv, gains_of(tu->gains, hp, 2u * l), T, D);
}

/* The embeddings of tokens[0..T) as T rows of D floats. */
static void embed_rows(const tlm_model *m, const uint32_t *tokens, uint32_t T, float *X)
{
    tlm_tensor e;
    tlm_model_tensor(m, TLM_ROLE_TOK_EMBED, 0, &e);
    for (uint32_t t = 0; t < T; t++) tlm_wtype_get(e.wtype)->row_to_f32(X + (size_t)t * m->hp.dim, &e, tokens[t]);
}

/* ---- the classifier and the loss ---- */

/* Mean cross-entropy of targets from the final normed states xn (T x D);
 * with back, dxn (T x D) = d(mean loss)/d xn. Two passes over the
 * classifier's rows: log-sum-exps (streamed: a running max and sum per
 * position), then dlogits = (softmax - onehot) / T row by row. */
static float head_loss(tlm_tune *tu, const tune_plan *pl, const float *xn, const uint32_t *targets, uint32_t T,
                       float *dxn, int back)
{
    const tlm_hparams *hp = &tu->model->hp;
    const uint32_t D = hp->dim;
    float *ws = tu->ws, *row = ws + pl->row, *mx = ws + pl->lse, *sum = ws + pl->p, *tl = ws + pl->inv2;
    tlm_tensor c;
    tlm_model_tensor(tu->model, TLM_ROLE_CLASSIFIER, 0, &c);
    const tlm_wtype_traits *tr = tlm_wtype_get(c.wtype);
    for (uint32_t t = 0; t < T; t++) {
        mx[t] = -INFINITY;
        sum[t] = 0.0f;
    }
    for (uint32_t r = 0; r < c.rows; r++) {
        tr->row_to_f32(row, &c, r);
        for (uint32_t t = 0; t < T; t++) {
            const float z = tlm_dot_f32(row, xn + (size_t)t * D, D);
            if (r == targets[t]) tl[t] = z;
            if (z > mx[t]) { /* rescale the running sum to the new max */
                sum[t] = sum[t] * expf(mx[t] - z) + 1.0f;
                mx[t] = z;
            } else {
                sum[t] += expf(z - mx[t]);
            }
        }
    }
    double loss = 0.0;
    for (uint32_t t = 0; t < T; t++) {
        mx[t] += logf(sum[t]); /* log-sum-exp */
        loss += (double)(mx[t] - tl[t]);
    }
    if (back) {
        memset(dxn, 0, (size_t)T * D * sizeof(float));
        const float scale = 1.0f / (float)T;
        for (uint32_t r = 0; r < c.rows; r++) {
            tr->row_to_f32(row, &c, r);
            for (uint32_t t = 0; t < T; t++) {
                const float z = tlm_dot_f32(row, xn + (size_t)t * D, D);
                const float g = (expf(z - mx[t]) - (r == targets[t] ? 1.0f : 0.0f)) * scale;
                float *d = dxn + (size_t)t * D;
                for (uint32_t i = 0; i < D; i++) d[i] += g * row[i];
            }
        }
    }
    return (float)(loss / T);
}

tlm_status tlm_tune_loss(tlm_tune *tu, const uint32_t *tokens, uint32_t n, int grad, float *loss, tlm_error *err)
{
    tlm_error_clear(err);
    if (!tu || !tu->model || !tokens || !loss) return tlm_fail(err, TLM_ERR_ARG, "no tuner, tokens or loss");
    const tlm_model *m = tu->model;
    const tlm_hparams *hp = &m->hp;
    if (n < 2u || n - 1u > tu->window)
        return tlm_fail(err, TLM_ERR_ARG, "%u tokens: tuning takes 2 to %u (its window + 1)", n, tu->window + 1u);
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] >= hp->vocab_size)
            return tlm_fail(err, TLM_ERR_ARG, "token %u at %u is outside the vocabulary (%u)", tokens[i], i,
                            hp->vocab_size);
    tune_plan pl;
    if (!plan_ws(hp, tu->window, tu->lora_rank, &pl)) /* (tlm_tune_init planned it) */
        return tlm_fail(err, TLM_ERR_ARG, "the tuner was not initialized");
    const uint32_t T = n - 1u, D = hp->dim, L = hp->n_layers;
    const size_t TD = round4((size_t)tu->window * D);
    float *ws = tu->ws, *xs = ws + pl.xs;
    /* embeddings into slot 0, then each layer's output into slot l (layer
     * l + 1's input); layer 0 writes its output over its input */
    embed_rows(m, tokens, T, xs);
    for (uint32_t l = 0; l < L; l++) layer_fwd(tu, &pl, l, T, xs + (l ? l - 1u : 0u) * TD, xs + l * TD);
    /* final norm and classifier: dx = d loss / d(last layer's output) */
    float *xfin = xs + (L - 1u) * TD, *xn = ws + pl.xn, *dxn = ws + pl.dxn, *dx = ws + pl.dx;
    float *gf = gains_of(tu->gains, hp, 2u * L);
    tlm_rmsnorm_rows(xn, ws + pl.inv, xfin, gf, T, D, hp->norm_eps);
    *loss = head_loss(tu, &pl, xn, tokens + 1, T, dxn, grad);
    if (!grad) return TLM_OK;
    memset(tu->grad, 0, ((size_t)(tu->lora - tu->gains) + tu->n_lora) * sizeof(float));
    memset(dx, 0, (size_t)T * D * sizeof(float));
    tlm_rmsnorm_rows_back(dx, gains_of(tu->grad, hp, 2u * L), dxn, xfin, ws + pl.inv, gf, T, D);
    for (uint32_t l = L; l-- > 0;) {
        float *X = xs + (l ? l - 1u : 0u) * TD;
        if (l == 0) embed_rows(m, tokens, T, X); /* slot 0, layer 1's input, is spent */
        layer_fwd(tu, &pl, l, T, X, NULL); /* recompute this layer's activations */
        layer_bwd(tu, &pl, l, T, X);
    }
    return TLM_OK;
}

void tlm_tune_adam(tlm_tune *tu, float lr)
{
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    tu->steps++;
    const float c1 = 1.0f - powf(b1, (float)tu->steps), c2 = 1.0f - powf(b2, (float)tu->steps);
    /* the gains, or the adapters */
    const size_t lo = tu->lora_rank ? (size_t)(tu->lora - tu->gains) : 0u, hi = tu->lora_rank ? lo + tu->n_lora : tu->n_gains;
    for (size_t i = lo; i < hi; i++) {
        const float g = tu->grad[i];
        tu->m[i] = b1 * tu->m[i] + (1.0f - b1) * g;
        tu->v[i] = b2 * tu->v[i] + (1.0f - b2) * g * g;
        tu->gains[i] -= lr * (tu->m[i] / c1) / (sqrtf(tu->v[i] / c2) + eps);
    }
}

tlm_status tlm_tune_run(tlm_tune *tu, const uint32_t *tokens, size_t n, uint32_t steps, float lr, size_t *cursor,
                        float *losses, tlm_error *err)
{
    tlm_error_clear(err);
    if (!tu || !tokens || !cursor) return tlm_fail(err, TLM_ERR_ARG, "no tuner, tokens or cursor");
    const size_t w = tu->window;
    if (n < w + 1u) return tlm_fail(err, TLM_ERR_ARG, "%llu tokens: a window needs %u", (unsigned long long)n, tu->window + 1u);
    for (uint32_t s = 0; s < steps; s++) {
        if (*cursor > n - (w + 1u)) *cursor = 0;
        float loss;
        const tlm_status st = tlm_tune_loss(tu, tokens + *cursor, tu->window + 1u, 1, &loss, err);
        if (st != TLM_OK) return st;
        tlm_tune_adam(tu, lr);
        if (losses) losses[s] = loss;
        *cursor += w;
    }
    return TLM_OK;
}

size_t tlm_tune_update_bytes(const tlm_tune *tu, tlm_fed_enc enc)
{
    const tlm_hparams *hp = &tu->model->hp;
    if (!tu->lora_rank) return (2u * (size_t)hp->n_layers + 1u) * tlm_fed_entry_bytes(enc, hp->dim);
    size_t n = 0;
    for (uint32_t j = 0; j < 4u; j++) {
        uint32_t rows, cols;
        tlm_role_shape(hp, lora_roles[j], &rows, &cols);
        n += tlm_fed_lowrank_entry_bytes(rows, cols, tu->lora_rank);
    }
    return n * hp->n_layers;
}

size_t tlm_tune_update_scratch(const tlm_tune *tu)
{
    const tlm_hparams *hp = &tu->model->hp;
    size_t n = tu->lora_rank ? 0u : hp->dim; /* a norm's delta, or an adapter's s B */
    for (uint32_t j = 0; tu->lora_rank && j < 4u; j++) {
        uint32_t rows, cols;
        tlm_role_shape(hp, lora_roles[j], &rows, &cols);
        if ((size_t)rows * tu->lora_rank > n) n = (size_t)rows * tu->lora_rank;
    }
    return n;
}

tlm_status tlm_tune_add_update(const tlm_tune *tu, tlm_fed_writer *w, tlm_fed_enc enc, tlm_rand *rng, tlm_error *err)
{
    tlm_error_clear(err);
    if (!tu || !tu->model || !w) return tlm_fail(err, TLM_ERR_ARG, "no tuner or no update");
    const tlm_hparams *hp = &tu->model->hp;
    const uint32_t D = hp->dim;
    float *delta = tu->ws; /* scratch between steps */
    if (tu->lora_rank) {
        if (enc != TLM_FED_I8 || !rng)
            return tlm_fail(err, TLM_ERR_ARG, "adapters go as int8 factors, rounded with a generator");
        for (uint32_t l = 0; l < hp->n_layers; l++)
            for (uint32_t j = 0; j < 4u; j++) {
                const lora_mat x = lora_at(tu, l, j);
                for (size_t i = 0; i < (size_t)x.rows * x.r; i++) delta[i] = x.s * x.b[i]; /* s B */
                const tlm_status st = tlm_fed_add_lowrank(w, lora_roles[j], l, delta, x.a, x.rows, x.cols, x.r, rng, err);
                if (st != TLM_OK) return st;
            }
        return TLM_OK;
    }
    for (uint32_t k = 0; k <= 2u * hp->n_layers; k++) {
        uint32_t layer;
        const tlm_role role = tlm_tune_norm_at(hp, k, &layer);
        tlm_tensor t;
        tlm_model_tensor(tu->model, role, layer, &t);
        tlm_wtype_get(t.wtype)->row_to_f32(delta, &t, 0);
        const float *g = gains_of(tu->gains, hp, k);
        for (uint32_t i = 0; i < D; i++) delta[i] = g[i] - delta[i];
        const tlm_status st = tlm_fed_add(w, role, layer, enc, delta, D, rng, err);
        if (st != TLM_OK) return st;
    }
    return TLM_OK;
}
