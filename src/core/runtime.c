/* Decoder forward pass for one position over a caller-provided arena. */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "ops.h"
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"

#define ARENA_ALIGN 64u

typedef struct {
    size_t off;
    int overflow;
} layout;

/* Reserves `count` elements of `elem` bytes, aligned; returns the offset. */
static size_t reserve(layout *l, size_t count, size_t elem)
{
    size_t start = (l->off + ARENA_ALIGN - 1u) & ~(size_t)(ARENA_ALIGN - 1u);
    if (start < l->off || (elem && count > (SIZE_MAX - start) / elem)) {
        l->overflow = 1;
        return 0;
    }
    l->off = start + count * elem;
    return start;
}

typedef struct {
    size_t x, xb, xb2, q, hb, hb2, att, rope, logits, kc, vc, ks, vs, kbuf, vbuf, qq, scratch, actq, total;
} arena_plan;

static int plan_arena(const tlm_model *m, uint32_t ctx, uint32_t flags, arena_plan *p)
{
    const tlm_hparams *hp = &m->hp;
    if (ctx == 0 || ctx > hp->seq_len) return 0;
    layout l = {0, 0};
    size_t kv = (size_t)hp->n_layers * ctx;
    size_t kv_dim = tlm_hparams_kv_dim(hp);
    if (kv_dim && kv > SIZE_MAX / kv_dim) return 0;
    p->x = reserve(&l, hp->dim, 4);
    p->xb = reserve(&l, hp->dim, 4);
    p->xb2 = reserve(&l, hp->dim, 4);
    p->q = reserve(&l, hp->dim, 4);
    p->hb = reserve(&l, hp->hidden_dim, 4);
    p->hb2 = reserve(&l, hp->hidden_dim, 4);
    p->att = reserve(&l, ctx, 4);
    p->rope = reserve(&l, hp->dim / hp->n_heads, 4);
    p->logits = reserve(&l, hp->vocab_size, 4);
    if (flags & TLM_RT_KV_INT8) {
        const size_t hs = hp->dim / hp->n_heads;
        p->kc = reserve(&l, kv * kv_dim, 1);
        p->vc = reserve(&l, kv * kv_dim, 1);
        p->ks = reserve(&l, kv, 4);
        p->vs = reserve(&l, kv, 4);
        p->kbuf = reserve(&l, kv_dim, 4);
        p->vbuf = reserve(&l, kv_dim, 4);
        p->qq = reserve(&l, hs + 4u, 1);
    } else {
        p->kc = reserve(&l, kv * kv_dim, 4);
        p->vc = reserve(&l, kv * kv_dim, 4);
    }
    p->scratch = reserve(&l, tlm_sampler_scratch_bytes(hp->vocab_size), 1);
    p->actq = reserve(&l, TLM_ACT_Q8_BYTES(hp->hidden_dim > hp->dim ? hp->hidden_dim : hp->dim), 1);
    if (l.overflow || l.off > SIZE_MAX - ARENA_ALIGN) return 0;
    p->total = l.off + ARENA_ALIGN; /* slack to align any arena address */
    return 1;
}

size_t tlm_runtime_arena_size_flags(const tlm_model *m, uint32_t ctx, uint32_t flags)
{
    arena_plan p;
    if (!m || !plan_arena(m, ctx, flags, &p)) return 0;
    return p.total;
}

size_t tlm_runtime_arena_size(const tlm_model *m, uint32_t ctx) { return tlm_runtime_arena_size_flags(m, ctx, 0); }

tlm_status tlm_runtime_init(tlm_runtime *rt, const tlm_model *m, uint32_t ctx, void *arena, size_t arena_bytes,
                            tlm_error *err)
{
    return tlm_runtime_init_flags(rt, m, ctx, 0, arena, arena_bytes, err);
}

tlm_status tlm_runtime_init_flags(tlm_runtime *rt, const tlm_model *m, uint32_t ctx, uint32_t flags, void *arena,
                                  size_t arena_bytes, tlm_error *err)
{
    tlm_error_clear(err);
    if (!rt || !m) return tlm_fail(err, TLM_ERR_ARG, "no runtime or no model");
    if (flags & ~(uint32_t)TLM_RT_KV_INT8) return tlm_fail(err, TLM_ERR_ARG, "unknown runtime flags 0x%x", flags);
    arena_plan p;
    if (!plan_arena(m, ctx, flags, &p))
        return tlm_fail(err, TLM_ERR_ARG, "context length %u must be between 1 and the model's seq_len %u", ctx,
                        m->hp.seq_len);
    if (!arena || arena_bytes < p.total)
        return tlm_fail(err, TLM_ERR_ARENA, "arena of %llu bytes; this model at context %u needs %llu",
                        (unsigned long long)arena_bytes, ctx, (unsigned long long)p.total);
    uintptr_t a = (uintptr_t)arena;
    uint8_t *base = (uint8_t *)arena + ((ARENA_ALIGN - (a % ARENA_ALIGN)) % ARENA_ALIGN);
    memset(rt, 0, sizeof *rt);
    rt->model = m;
    rt->ctx = ctx;
    rt->x = (float *)(void *)(base + p.x);
    rt->xb = (float *)(void *)(base + p.xb);
    rt->xb2 = (float *)(void *)(base + p.xb2);
    rt->q = (float *)(void *)(base + p.q);
    rt->hb = (float *)(void *)(base + p.hb);
    rt->hb2 = (float *)(void *)(base + p.hb2);
    rt->att = (float *)(void *)(base + p.att);
    rt->rope = (float *)(void *)(base + p.rope);
    rt->logits = (float *)(void *)(base + p.logits);
    rt->flags = flags;
    if (flags & TLM_RT_KV_INT8) {
        rt->key_q8 = (int8_t *)(void *)(base + p.kc);
        rt->value_q8 = (int8_t *)(void *)(base + p.vc);
        rt->key_scale = (float *)(void *)(base + p.ks);
        rt->value_scale = (float *)(void *)(base + p.vs);
        rt->kbuf = (float *)(void *)(base + p.kbuf);
        rt->vbuf = (float *)(void *)(base + p.vbuf);
        rt->q_q8 = (int8_t *)(void *)(base + p.qq);
    } else {
        rt->key_cache = (float *)(void *)(base + p.kc);
        rt->value_cache = (float *)(void *)(base + p.vc);
    }
    rt->sample_scratch = base + p.scratch;
    rt->act_q8 = (int8_t *)(void *)(base + p.actq);
    return TLM_OK;
}

/* f32 tensors take float activations; quantized ones take the input
 * quantized to int8 per vector (absmax) and run an integer kernel. The
 * quantized input is kept while the same vector feeds several products
 * (q, k, v; gate and up): rt->act_src says which vector it holds. */
static void matvec(tlm_runtime *rt, float *out, const float *x, tlm_role role, uint32_t layer)
{
    tlm_tensor t;
    tlm_model_tensor(rt->model, role, layer, &t);
    if (t.wtype == TLM_WTYPE_F32) {
        tlm_matvec_f32_f32(out, x, &t);
        return;
    }
    if (rt->act_src != x || rt->act.n != t.cols) {
        tlm_act_q8_quantize(&rt->act, x, t.cols, rt->act_q8);
        rt->act_src = x;
    }
    tlm_wtype_matvec_q8(t.wtype)(out, &rt->act, &t);
}

static const float *norm_weights(const tlm_model *m, tlm_role role, uint32_t layer)
{
    tlm_tensor t;
    tlm_model_tensor(m, role, layer, &t);
    return (const float *)(const void *)t.data;
}

/* Causal attention of one position over the cached keys and values. */
static void attention(tlm_runtime *rt, uint32_t layer, uint32_t pos)
{
    const tlm_hparams *hp = &rt->model->hp;
    const uint32_t hs = hp->dim / hp->n_heads, kv_dim = tlm_hparams_kv_dim(hp);
    const uint32_t group = hp->n_heads / hp->n_kv_heads;
    const float inv_sqrt = 1.0f / sqrtf((float)hs);
    const float *kc = rt->key_cache + (size_t)layer * rt->ctx * kv_dim;
    const float *vc = rt->value_cache + (size_t)layer * rt->ctx * kv_dim;
    for (uint32_t h = 0; h < hp->n_heads; h++) {
        const float *q = rt->q + (size_t)h * hs;
        const uint32_t kvo = (h / group) * hs;
        for (uint32_t t = 0; t <= pos; t++)
            rt->att[t] = tlm_dot_f32(q, kc + (size_t)t * kv_dim + kvo, hs) * inv_sqrt;
        tlm_softmax(rt->att, pos + 1u);
        float *o = rt->xb + (size_t)h * hs;
        memset(o, 0, hs * sizeof *o);
        for (uint32_t t = 0; t <= pos; t++) {
            const float *v = vc + (size_t)t * kv_dim + kvo;
            const float a = rt->att[t];
            for (uint32_t i = 0; i < hs; i++) o[i] += a * v[i];
        }
    }
}

/* The same over the int8 cache: score = (q8 . k8) * q_scale * k_scale /
 * sqrt(hs) with an exact int32 dot product, then the values weighted by
 * attention * v_scale. */
static void attention_q8(tlm_runtime *rt, uint32_t layer, uint32_t pos)
{
    const tlm_hparams *hp = &rt->model->hp;
    const uint32_t hs = hp->dim / hp->n_heads, kv_dim = tlm_hparams_kv_dim(hp);
    const uint32_t group = hp->n_heads / hp->n_kv_heads;
    const float inv_sqrt = 1.0f / sqrtf((float)hs);
    const int8_t *kc = rt->key_q8 + (size_t)layer * rt->ctx * kv_dim;
    const int8_t *vc = rt->value_q8 + (size_t)layer * rt->ctx * kv_dim;
    const float *ks = rt->key_scale + (size_t)layer * rt->ctx;
    const float *vs = rt->value_scale + (size_t)layer * rt->ctx;
    for (uint32_t h = 0; h < hp->n_heads; h++) {
        const uint32_t kvh = h / group, kvo = kvh * hs;
        const float qs = tlm_q8_quantize_row(rt->q_q8, rt->q + (size_t)h * hs, hs) * inv_sqrt;
        for (uint32_t t = 0; t <= pos; t++)
            rt->att[t] = (float)tlm_dot_i8(rt->q_q8, kc + (size_t)t * kv_dim + kvo, hs) * (qs * ks[t]);
        tlm_softmax(rt->att, pos + 1u);
        float *o = rt->xb + (size_t)h * hs;
        memset(o, 0, hs * sizeof *o);
        for (uint32_t t = 0; t <= pos; t++) {
            const int8_t *v = vc + (size_t)t * kv_dim + kvo;
            const float a = rt->att[t] * vs[t];
            for (uint32_t i = 0; i < hs; i++) o[i] += a * (float)v[i];
        }
    }
}

/* Quantizes this position's key and value (kbuf, vbuf) into the cache. */
static void store_kv_q8(tlm_runtime *rt, uint32_t layer, uint32_t pos)
{
    const tlm_hparams *hp = &rt->model->hp;
    const uint32_t kv_dim = tlm_hparams_kv_dim(hp);
    const size_t at = (size_t)layer * rt->ctx + pos;
    rt->key_scale[at] = tlm_q8_quantize_row(rt->key_q8 + at * kv_dim, rt->kbuf, kv_dim);
    rt->value_scale[at] = tlm_q8_quantize_row(rt->value_q8 + at * kv_dim, rt->vbuf, kv_dim);
}

tlm_status tlm_runtime_forward(tlm_runtime *rt, uint32_t token, uint32_t pos, float **logits)
{
    if (!rt || !rt->model || !logits) return TLM_ERR_ARG;
    const tlm_model *m = rt->model;
    const tlm_hparams *hp = &m->hp;
    if (token >= hp->vocab_size || pos >= rt->ctx) return TLM_ERR_ARG;
    const uint32_t dim = hp->dim, hidden = hp->hidden_dim, kv_dim = tlm_hparams_kv_dim(hp);
    const uint32_t hs = dim / hp->n_heads;

    tlm_tensor emb;
    tlm_model_tensor(m, TLM_ROLE_TOK_EMBED, 0, &emb);
    tlm_wtype_get(emb.wtype)->row_to_f32(rt->x, &emb, token);
    tlm_rope_table(rt->rope, pos, hs, hp->rope_theta);

    for (uint32_t l = 0; l < hp->n_layers; l++) {
        const int kv8 = (rt->flags & TLM_RT_KV_INT8) != 0;
        float *k = kv8 ? rt->kbuf : rt->key_cache + ((size_t)l * rt->ctx + pos) * kv_dim;
        float *v = kv8 ? rt->vbuf : rt->value_cache + ((size_t)l * rt->ctx + pos) * kv_dim;
        tlm_rmsnorm(rt->xb, rt->x, norm_weights(m, TLM_ROLE_ATTN_NORM, l), dim, hp->norm_eps);
        rt->act_src = NULL;
        matvec(rt, rt->q, rt->xb, TLM_ROLE_WQ, l);
        matvec(rt, k, rt->xb, TLM_ROLE_WK, l);
        matvec(rt, v, rt->xb, TLM_ROLE_WV, l);
        tlm_rope_apply(rt->q, dim, hs, rt->rope);
        tlm_rope_apply(k, kv_dim, hs, rt->rope);
        if (kv8) {
            store_kv_q8(rt, l, pos);
            attention_q8(rt, l, pos);
        } else {
            attention(rt, l, pos);
        }
        rt->act_src = NULL;
        matvec(rt, rt->xb2, rt->xb, TLM_ROLE_WO, l);
        for (uint32_t i = 0; i < dim; i++) rt->x[i] += rt->xb2[i];

        tlm_rmsnorm(rt->xb, rt->x, norm_weights(m, TLM_ROLE_FFN_NORM, l), dim, hp->norm_eps);
        rt->act_src = NULL;
        matvec(rt, rt->hb, rt->xb, TLM_ROLE_W1, l);
        matvec(rt, rt->hb2, rt->xb, TLM_ROLE_W3, l);
        tlm_swiglu(rt->hb, rt->hb2, hidden);
        rt->act_src = NULL;
        matvec(rt, rt->xb, rt->hb, TLM_ROLE_W2, l);
        for (uint32_t i = 0; i < dim; i++) rt->x[i] += rt->xb[i];
    }
    tlm_rmsnorm(rt->x, rt->x, norm_weights(m, TLM_ROLE_FINAL_NORM, 0), dim, hp->norm_eps);
    rt->act_src = NULL;
    matvec(rt, rt->logits, rt->x, TLM_ROLE_CLASSIFIER, 0);
    *logits = rt->logits;
    return TLM_OK;
}
