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
    size_t x, xb, xb2, q, hb, hb2, att, rope, logits, kc, vc, ks, vs, atts, attacc, kbuf, vbuf, qq, scratch, actq, total;
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
        p->atts = reserve(&l, 2u * (size_t)ctx, 4);
        p->attacc = reserve(&l, 2u * hs, 4);
        p->kbuf = reserve(&l, kv_dim, 4);
        p->vbuf = reserve(&l, kv_dim, 4);
        p->qq = reserve(&l, 2u * hs, 1);
    } else {
        p->kc = reserve(&l, kv * kv_dim, 4);
        p->vc = reserve(&l, kv * kv_dim, 4);
    }
    p->scratch = reserve(&l, tlm_sampler_scratch_bytes(hp->vocab_size), 1);
    /* room for the table kernels' tables only where a t2 or t3 tensor needs them */
    int tables = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        tlm_tensor t;
        tlm_model_tensor_at(m, i, &t);
        tables |= t.wtype == TLM_WTYPE_T2 || t.wtype == TLM_WTYPE_T3;
    }
    const uint32_t widest = hp->hidden_dim > hp->dim ? hp->hidden_dim : hp->dim;
    p->actq = reserve(&l, tables ? TLM_ACT_Q8_LUT_BYTES(widest) : TLM_ACT_Q8_BYTES(widest), 1);
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
    if ((flags & TLM_RT_KV_INT8) && ctx > 32768u)
        return tlm_fail(err, TLM_ERR_UNSUPPORTED, "the int8 KV cache takes contexts up to 32768, not %u", ctx);
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
        rt->att_s = (int32_t *)(void *)(base + p.atts);
        rt->att_acc = (int32_t *)(void *)(base + p.attacc);
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

#if defined(__ARM_FEATURE_DSP)
static inline uint32_t load_u32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

#endif

/* Key scale of position t relative to the coarsest key exponent: its
 * exact dot product times 2^(8 - d_t), with 8 fractional bits kept
 * (|dot| < 2^21 for heads up to 128 wide, so the result fits int32). */
static inline int32_t key_align(int32_t dot, int32_t d)
{
    if (d <= 8) return (int32_t)((uint32_t)dot << (8 - d)); /* exact */
    return d >= 39 ? (dot < 0 ? -1 : 0) : dot >> (d - 8);
}

/* Scores of one int8 query head against the keys of positions 0..n-1 in
 * units of 2^-8 of the coarsest key's: s[t]. Returns the largest. */
static int32_t attn_scores(int32_t *s, const int8_t *q, uint32_t hs, const int8_t *k, uint32_t kstride,
                           const int8_t *ke, int32_t ek_lo, uint32_t n)
{
    int32_t top = INT32_MIN;
#if defined(__ARM_FEATURE_DSP)
    if (hs == 8u) { /* stories260K's head size: the query stays in registers */
        const uint32_t a0 = load_u32(q), a1 = load_u32(q + 4);
        const int16x2_t q0 = __sxtb16((int8x4_t)a0), q1 = tlm_sxtb16_ror8(a0);
        const int16x2_t q2 = __sxtb16((int8x4_t)a1), q3 = tlm_sxtb16_ror8(a1);
        for (uint32_t t = 0; t < n; t++, k += kstride) {
            const uint32_t w0 = load_u32(k), w1 = load_u32(k + 4);
            int32_t d = __smuad(q0, __sxtb16((int8x4_t)w0));
            d = __smlad(q1, tlm_sxtb16_ror8(w0), d);
            d = __smlad(q2, __sxtb16((int8x4_t)w1), d);
            d = __smlad(q3, tlm_sxtb16_ror8(w1), d);
            const int32_t v = key_align(d, ke[t] - ek_lo);
            s[t] = v;
            top = v > top ? v : top;
        }
        return top;
    }
#endif
    for (uint32_t t = 0; t < n; t++, k += kstride) {
        const int32_t v = key_align(tlm_dot_i8(q, k, hs), ke[t] - ek_lo);
        s[t] = v;
        top = v > top ? v : top;
    }
    return top;
}

/* 2^(-a / 65536) in Q22 for 0 <= a < 23 * 2^16 (two Q15 tables). */
static inline uint32_t exp2neg_q22(uint32_t a)
{
    return ((uint32_t)tlm_exp2_hi[(a >> 8) & 0xFFu] * tlm_exp2_lo[a & 0xFFu]) >> ((a >> 16) + 8u);
}

/* Softmax numerators of one head in place: s[t] <- 2^22 * 2^-a_t with
 * a_t = (top - s[t]) * kq / 2^sh in Q16 (0 once a_t reaches 23, where the
 * Q22 value would round to 0 anyway); returns their sum (>= 2^22: the top
 * one is 2^22). */
static uint64_t attn_softmax(int32_t *s, uint32_t n, int32_t top, uint32_t kq, int32_t sh)
{
    const uint32_t stop = 23u << 16; /* a_t from here on gives 0 in Q22 */
    uint64_t sum = 0;
    if (sh >= 32) { /* the usual case: the high word of diff * kq (< 2^60) alone */
        const uint32_t r = sh - 32 > 31 ? 31u : (uint32_t)sh - 32u;
        for (uint32_t t = 0; t < n; t++) {
            const uint32_t a = (uint32_t)(((uint64_t)(uint32_t)(top - s[t]) * kq) >> 32) >> r;
            const uint32_t e = a < stop ? exp2neg_q22(a) : 0u;
            s[t] = (int32_t)e;
            sum += e;
        }
    } else {
        const uint32_t r = sh < 0 ? 0u : (uint32_t)sh;
        for (uint32_t t = 0; t < n; t++) {
            const uint32_t diff = (uint32_t)(top - s[t]);
            /* sh < 0: any difference at all is past the stop */
            const uint64_t a = sh < 0 && diff ? UINT64_MAX : ((uint64_t)diff * kq) >> r;
            const uint32_t e = a < stop ? exp2neg_q22((uint32_t)a) : 0u;
            s[t] = (int32_t)e;
            sum += e;
        }
    }
    return sum;
}

/* acc[i] (+ acc[hs + i]) = sum over t of w[t] * v_t[i] (+ w[ctx + t] * v_t[i]),
 * four columns of both heads in registers over all positions. */
static void attn_values(int32_t *acc, const int32_t *w, uint32_t ctx, uint32_t nh, uint32_t hs, const int8_t *v,
                        uint32_t vstride, uint32_t n)
{
    const int32_t *w1 = w + (nh == 2u ? ctx : 0u); /* one head: a second, ignored pass over the same weights */
    uint32_t i = 0;
    for (; i + 4u <= hs; i += 4u) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
        const int8_t *vp = v + i;
        for (uint32_t t = 0; t < n; t++, vp += vstride) {
            const int32_t x0 = vp[0], x1 = vp[1], x2 = vp[2], x3 = vp[3], p = w[t], r = w1[t];
            a0 += p * x0;
            a1 += p * x1;
            a2 += p * x2;
            a3 += p * x3;
            b0 += r * x0;
            b1 += r * x1;
            b2 += r * x2;
            b3 += r * x3;
        }
        acc[i] = a0;
        acc[i + 1u] = a1;
        acc[i + 2u] = a2;
        acc[i + 3u] = a3;
        acc[hs + i] = b0;
        acc[hs + i + 1u] = b1;
        acc[hs + i + 2u] = b2;
        acc[hs + i + 3u] = b3;
    }
    for (; i < hs; i++) {
        int32_t a = 0, b = 0;
        const int8_t *vp = v + i;
        for (uint32_t t = 0; t < n; t++, vp += vstride) {
            a += w[t] * vp[0];
            b += w1[t] * vp[0];
        }
        acc[i] = a;
        acc[hs + i] = b;
    }
}

static void attention_q8(tlm_runtime *rt, uint32_t layer, uint32_t pos)
{
    const tlm_hparams *hp = &rt->model->hp;
    const uint32_t hs = hp->dim / hp->n_heads, kv_dim = tlm_hparams_kv_dim(hp);
    const uint32_t group = hp->n_heads / hp->n_kv_heads, n = pos + 1u, ctx = rt->ctx;
    const int8_t *kc = rt->key_q8 + (size_t)layer * ctx * kv_dim;
    const int8_t *vc = rt->value_q8 + (size_t)layer * ctx * kv_dim;
    const uint32_t nkv = hp->n_kv_heads;
    /* exponents: one run of ctx positions per layer and kv head */
    const int8_t *ke = rt->key_exp + (size_t)layer * ctx * nkv;
    const int8_t *ve = rt->value_exp + (size_t)layer * ctx * nkv;
    int32_t *s = rt->att_s, *acc = rt->att_acc;
    /* log2(e) / sqrt(hs) in Q30: score units become base-2 exponents */
    const int32_t kq = (int32_t)(1.4426950408889634f / sqrtf((float)hs) * 1073741824.0f + 0.5f);
    for (uint32_t g = 0; g < nkv; g++) {
        const uint32_t kvo = g * hs;
        const int8_t *keg = ke + (size_t)g * ctx, *veg = ve + (size_t)g * ctx;
        int32_t ek_lo = 127, ev_lo = 127; /* coarsest exponents of this kv head's keys and values */
        for (uint32_t t = 0; t < n; t++) {
            const int32_t a = keg[t], b = veg[t];
            ek_lo = a < ek_lo ? a : ek_lo;
            ev_lo = b < ev_lo ? b : ev_lo;
        }
        for (uint32_t h = g * group; h < (g + 1u) * group; h += 2u) {
            const uint32_t nh = (g + 1u) * group - h >= 2u ? 2u : 1u;
            for (uint32_t j = 0; j < nh; j++) {
                int8_t *qj = rt->q_q8 + j * hs;
                int32_t *sj = s + (size_t)j * ctx;
                const int32_t eq = quantize_pow2(qj, rt->q + (size_t)(h + j) * hs, hs);
                const int32_t top = attn_scores(sj, qj, hs, kc + kvo, kv_dim, keg, ek_lo, n);
                /* a score unit (2^-8 of the coarsest key's) is kq * 2^-(38 + eq + ek_lo)
                 * in base 2, i.e. kq * 2^-(22 + eq + ek_lo) in Q16 */
                const uint64_t sum = attn_softmax(sj, n, top, (uint32_t)kq, 22 + eq + ek_lo);
                /* weights in Q22 (e * 2^22 / sum): round(e * recip / 2^32) with
                 * recip = 2^54 / sum (below 2^32 but for a lone top, clamped),
                 * then brought to the coarsest value exponent (rounded). recip
                 * by a float division: IEEE-exact on every core, where a 64-bit
                 * integer division is a slow library call on 32-bit ones. */
                const float rf = 18014398509481984.0f / (float)sum; /* 2^54 / sum */
                const uint32_t recip = rf >= 4294967040.0f ? 4294967040u : (uint32_t)rf;
                for (uint32_t t = 0; t < n; t++) {
                    const uint32_t vsh = (uint32_t)(veg[t] - ev_lo);
                    const uint32_t w = (uint32_t)(((uint64_t)(uint32_t)sj[t] * recip + 0x80000000u) >> 32);
                    sj[t] = vsh >= 32u ? 0 : (int32_t)((w + ((1u << vsh) >> 1)) >> vsh);
                }
            }
            attn_values(acc, s, ctx, nh, hs, vc + kvo, kv_dim, n);
            const float scale = pow2f_wide(-22 - ev_lo); /* out = acc * 2^-22 * 2^-ev_lo */
            for (uint32_t j = 0; j < nh; j++) {
                float *o = rt->xb + (size_t)(h + j) * hs;
                for (uint32_t i = 0; i < hs; i++) o[i] = (float)acc[j * hs + i] * scale;
            }
        }
    }
}

/* Quantizes this position's key and value (kbuf, vbuf) into the cache. */
static void store_kv_q8(tlm_runtime *rt, uint32_t layer, uint32_t pos)
{
    const tlm_hparams *hp = &rt->model->hp;
    const uint32_t kv_dim = tlm_hparams_kv_dim(hp), nkv = hp->n_kv_heads, hs = hp->dim / hp->n_heads;
    const size_t at = (size_t)layer * rt->ctx + pos;
    for (uint32_t h = 0; h < nkv; h++) {
        const size_t ex = ((size_t)layer * nkv + h) * rt->ctx + pos;
        rt->key_exp[ex] = (int8_t)quantize_pow2(rt->key_q8 + at * kv_dim + h * hs, rt->kbuf + h * hs, hs);
        rt->value_exp[ex] = (int8_t)quantize_pow2(rt->value_q8 + at * kv_dim + h * hs, rt->vbuf + h * hs, hs);
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
