/* Decoder forward pass for one position over a caller-provided arena. */
#include <math.h>
#include <string.h>

#include "exp2_q15.h"
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
    size_t x, xb, xb2, q, hb, hb2, att, rope, logits, kc, vc, ks, vs, attfx, atte, kbuf, vbuf, qq, scratch, actq, total;
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
        p->ks = reserve(&l, kv * hp->n_kv_heads, 1);
        p->vs = reserve(&l, kv * hp->n_kv_heads, 1);
        p->attfx = reserve(&l, ctx, 8);
        p->atte = reserve(&l, ctx, 4);
        p->kbuf = reserve(&l, kv_dim, 4);
        p->vbuf = reserve(&l, kv_dim, 4);
        p->qq = reserve(&l, hs, 1);
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
    if ((flags & TLM_RT_KV_INT8) && m->hp.dim / m->hp.n_heads > TLM_RT_MAX_HEAD)
        return tlm_fail(err, TLM_ERR_UNSUPPORTED, "the int8 KV cache takes head sizes up to %u, this model has %u",
                        TLM_RT_MAX_HEAD, m->hp.dim / m->hp.n_heads);
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
        rt->key_exp = (int8_t *)(void *)(base + p.ks);
        rt->value_exp = (int8_t *)(void *)(base + p.vs);
        rt->att_fx = (int64_t *)(void *)(base + p.attfx);
        rt->att_e = (uint32_t *)(void *)(base + p.atte);
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

/* ---- int8 KV cache: integer attention ----
 * Keys, values and each query head are stored as int8 times a power of two
 * (q * 2^-e), so that scores, the softmax and the weighted sum of values
 * run on integers alone (no float work per position, which matters on
 * cores without an FPU); only each head's outputs are scaled in float. */

/* 2^e as a float, for e in [-126, 127]. */
static float pow2f(int32_t e)
{
    const uint32_t bits = (uint32_t)(e + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* 2^e for exponents beyond one float's range, in steps of 2^+-63. */
static float pow2f_wide(int32_t e)
{
    float f = 1.0f;
    for (; e > 63; e -= 63) f *= pow2f(63);
    for (; e < -63; e += 63) f *= pow2f(-63);
    return f * pow2f(e);
}

/* x -> q * 2^-e with e the largest integer that keeps max|x| * 2^e below
 * 128 (rounded half away from zero, clamped to +-127); returns e. */
static int32_t quantize_pow2(int8_t *q, const float *x, uint32_t n)
{
    const float amax = tlm_absmax_f32(x, n);
    uint32_t bits;
    memcpy(&bits, &amax, sizeof bits);
    const int32_t biased = (int32_t)((bits >> 23) & 0xFFu);
    if (!(amax > 0.0f) || biased == 0xFF) { /* zero, NaN or infinite: nothing to keep */
        memset(q, 0, n);
        return 0;
    }
    int32_t e = 6 - (biased - 127); /* amax in [2^E, 2^(E+1)): amax * 2^e in [64, 128) */
    if (e > 100) e = 100;
    if (e < -100) e = -100;
    tlm_q8_round(q, x, n, pow2f_wide(e));
    return e;
}

/* floor(v * 2^-sh) for |v| < 2^60 (a bias keeps the shift unsigned);
 * left shifts saturate (|logits| that large are meaningless anyway). */
static inline int64_t shift_i64(int64_t v, int32_t sh)
{
    const int64_t lim = (int64_t)1 << 60;
    if (sh >= 0) {
        if (sh >= 62) return v < 0 ? -1 : 0;
        const uint64_t bias = (uint64_t)1 << 61;
        return (int64_t)(((uint64_t)v + bias) >> sh) - (int64_t)(bias >> sh);
    }
    const int32_t l = -sh > 16 ? 16 : -sh;
    if (v > (lim >> l)) return lim;
    if (v < -(lim >> l)) return -lim;
    return v * ((int64_t)1 << l);
}

/* 2^(-d / 65536) in Q30 for d >= 0 (the product of two Q15 tables). */
static uint32_t exp2neg_q30(int64_t d)
{
    if (d >= ((int64_t)31 << 16)) return 0;
    const uint32_t n = (uint32_t)(d >> 16), f = (uint32_t)d & 0xFFFFu;
    return ((uint32_t)tlm_exp2_hi[f >> 8] * tlm_exp2_lo[f & 0xFFu]) >> n;
}

static void attention_q8(tlm_runtime *rt, uint32_t layer, uint32_t pos)
{
    const tlm_hparams *hp = &rt->model->hp;
    const uint32_t hs = hp->dim / hp->n_heads, kv_dim = tlm_hparams_kv_dim(hp);
    const uint32_t group = hp->n_heads / hp->n_kv_heads;
    const int8_t *kc = rt->key_q8 + (size_t)layer * rt->ctx * kv_dim;
    const int8_t *vc = rt->value_q8 + (size_t)layer * rt->ctx * kv_dim;
    const uint32_t nkv = hp->n_kv_heads;
    const int8_t *ke = rt->key_exp + (size_t)layer * rt->ctx * nkv;
    const int8_t *ve = rt->value_exp + (size_t)layer * rt->ctx * nkv;
    int64_t *fx = rt->att_fx;
    /* log2(e) / sqrt(hs) in Q30: logits become base-2 exponents in Q16 */
    const int32_t kq = (int32_t)(1.4426950408889634f / sqrtf((float)hs) * 1073741824.0f + 0.5f);
    int32_t ev_lo = 127;
    for (uint32_t h = 0; h < hp->n_heads; h++) {
        const uint32_t kvh = h / group, kvo = kvh * hs;
        if (h % group == 0) { /* the coarsest value exponent of this kv head's positions */
            ev_lo = 127;
            for (uint32_t t = 0; t <= pos; t++)
                if (ve[(size_t)t * nkv + kvh] < ev_lo) ev_lo = ve[(size_t)t * nkv + kvh];
        }
        const int32_t eq = quantize_pow2(rt->q_q8, rt->q + (size_t)h * hs, hs);
        /* score_t * log2(e) * 2^16 = dot * kq * 2^-(14 + eq + ek_t) */
        int64_t top = INT64_MIN;
        for (uint32_t t = 0; t <= pos; t++) {
            const int32_t dot = tlm_dot_i8(rt->q_q8, kc + (size_t)t * kv_dim + kvo, hs);
            fx[t] = shift_i64((int64_t)dot * kq, 14 + eq + ke[(size_t)t * nkv + kvh]);
            if (fx[t] > top) top = fx[t];
        }
        uint32_t *ex = rt->att_e;
        uint64_t sum = 0;
        for (uint32_t t = 0; t <= pos; t++) {
            ex[t] = exp2neg_q30(top - fx[t]); /* softmax numerators, Q30; the top one is 2^30 */
            sum += ex[t];
        }
        /* weights normalized to sum to 2^22, so that the weighted sum of
         * int8 values stays in int32 accumulators */
        const uint64_t recip = ((uint64_t)1 << 52) / sum;
        int32_t acc[TLM_RT_MAX_HEAD];
        memset(acc, 0, hs * sizeof acc[0]);
        for (uint32_t t = 0; t <= pos; t++) {
            const int32_t sh = ve[(size_t)t * nkv + kvh] - ev_lo; /* to the coarsest value exponent */
            const int32_t w = sh >= 31 ? 0 : (int32_t)(((uint64_t)ex[t] * recip) >> (30 + sh));
            if (!w) continue;
            const int8_t *v = vc + (size_t)t * kv_dim + kvo;
            uint32_t i = 0;
            for (; i + 4u <= hs; i += 4u) {
                acc[i] += w * v[i];
                acc[i + 1] += w * v[i + 1];
                acc[i + 2] += w * v[i + 2];
                acc[i + 3] += w * v[i + 3];
            }
            for (; i < hs; i++) acc[i] += w * v[i];
        }
        const float scale = pow2f_wide(-22 - ev_lo); /* out = acc * 2^-22 * 2^-ev_lo */
        float *o = rt->xb + (size_t)h * hs;
        for (uint32_t i = 0; i < hs; i++) o[i] = (float)acc[i] * scale;
    }
}

/* Quantizes this position's key and value (kbuf, vbuf) into the cache. */
static void store_kv_q8(tlm_runtime *rt, uint32_t layer, uint32_t pos)
{
    const tlm_hparams *hp = &rt->model->hp;
    const uint32_t kv_dim = tlm_hparams_kv_dim(hp), nkv = hp->n_kv_heads, hs = hp->dim / hp->n_heads;
    const size_t at = (size_t)layer * rt->ctx + pos;
    for (uint32_t h = 0; h < nkv; h++) {
        rt->key_exp[at * nkv + h] = (int8_t)quantize_pow2(rt->key_q8 + at * kv_dim + h * hs, rt->kbuf + h * hs, hs);
        rt->value_exp[at * nkv + h] =
            (int8_t)quantize_pow2(rt->value_q8 + at * kv_dim + h * hs, rt->vbuf + h * hs, hs);
    }
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

    const int kv8 = (rt->flags & TLM_RT_KV_INT8) != 0;
    for (uint32_t l = 0; l < hp->n_layers; l++) {
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
