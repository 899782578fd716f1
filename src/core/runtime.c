/* Decoder forward pass for one position over a caller-provided arena. */
#include <math.h>
#include <string.h>

#include "exp2_q15.h"
#include "kernels.h"
#include "ops.h"
#include "le.h"
#include "tritlm/fed.h"
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"
#include "tritlm/tune.h"

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
    size_t x, xb, xb2, q, hb, hb2, att, rope, logits, kc, vc, ks, vs, atts, attw, kbuf, vbuf, qq, scratch, actq, adapter,
        total;
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
        const size_t ctx4 = ((size_t)ctx + 3u) & ~(size_t)3u;
        p->kc = reserve(&l, kv * kv_dim, 1);
        p->vc = reserve(&l, (size_t)hp->n_layers * ctx4 * kv_dim, 1); /* transposed, rows of ctx4 positions */
        p->ks = reserve(&l, kv * hp->n_kv_heads, 1);
        p->vs = reserve(&l, kv * hp->n_kv_heads, 1);
        p->atts = reserve(&l, ctx, 4);
        p->attw = reserve(&l, 2u * ctx4, 2);
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
    p->adapter = (flags & TLM_RT_ADAPTER) ? reserve(&l, m->n_tensors, 4) : 0;
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
    if (flags & ~(uint32_t)(TLM_RT_KV_INT8 | TLM_RT_ADAPTER))
        return tlm_fail(err, TLM_ERR_ARG, "unknown runtime flags 0x%x", flags);
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
        rt->att_w = (int16_t *)(void *)(base + p.attw);
        rt->kbuf = (float *)(void *)(base + p.kbuf);
        rt->vbuf = (float *)(void *)(base + p.vbuf);
        rt->q_q8 = (int8_t *)(void *)(base + p.qq);
    } else {
        rt->key_cache = (float *)(void *)(base + p.kc);
        rt->value_cache = (float *)(void *)(base + p.vc);
    }
    rt->sample_scratch = base + p.scratch;
    rt->act_q8 = (int8_t *)(void *)(base + p.actq);
    if (flags & TLM_RT_ADAPTER) {
        rt->adapter_at = (uint32_t *)(void *)(base + p.adapter);
        for (uint32_t i = 0; i < m->n_tensors; i++) rt->adapter_at[i] = 0;
    }
    return TLM_OK;
}

/* ---- adapters: low-rank updates applied while decoding ---- */

/* tlm_runtime_adapter_check, and the number of entries. */
static tlm_status adapter_check(const tlm_model *m, const void *update, size_t bytes, uint32_t *n_entries,
                                tlm_error *err)
{
    tlm_error_clear(err);
    if (!m || !update) return tlm_fail(err, TLM_ERR_ARG, "no model or no adapter");
    tlm_fed_info info;
    tlm_status st = tlm_fed_validate(update, bytes, m, &info, err);
    if (st) return st;
    *n_entries = info.n_entries;
    if (info.n_entries == 0) return tlm_fail(err, TLM_ERR_FORMAT, "the adapter changes no tensor");
    for (uint32_t i = 0; i < info.n_entries; i++) {
        tlm_fed_entry e;
        tlm_fed_entry_at(update, i, &e);
        const int matrix = e.role == TLM_ROLE_TOK_EMBED || e.role == TLM_ROLE_CLASSIFIER ||
                           (e.role >= TLM_ROLE_WQ && e.role <= TLM_ROLE_W3 && e.role != TLM_ROLE_FFN_NORM);
        if (e.enc != TLM_FED_LOWRANK_I8 || !matrix)
            return tlm_fail(err, TLM_ERR_UNSUPPORTED,
                            "entry %u (%s, layer %u) is not a low-rank change of a matrix: only those apply while "
                            "decoding (make the update with --lora R --rank R, or fold it into the model with "
                            "'tritlm fed aggregate')",
                            (unsigned)i, tlm_role_name(e.role), (unsigned)e.layer);
        if (e.rank > TLM_RT_MAX_ADAPTER_RANK)
            return tlm_fail(err, TLM_ERR_UNSUPPORTED, "entry %u (%s, layer %u) has rank %u; adapters take up to %u",
                            (unsigned)i, tlm_role_name(e.role), (unsigned)e.layer, (unsigned)e.rank,
                            TLM_RT_MAX_ADAPTER_RANK);
        /* two names of one matrix (the shared classifier is the embedding) would add twice */
        uint32_t idx, jdx;
        (void)tlm_model_tensor_index(m, e.role, e.layer, &idx); /* (validated: it exists) */
        for (uint32_t j = 0; j < i; j++) {
            tlm_fed_entry f;
            tlm_fed_entry_at(update, j, &f);
            (void)tlm_model_tensor_index(m, f.role, f.layer, &jdx);
            if (jdx == idx)
                return tlm_fail(err, TLM_ERR_FORMAT, "entries %u and %u change the same matrix", (unsigned)j,
                                (unsigned)i);
        }
    }
    return TLM_OK;
}

tlm_status tlm_runtime_adapter_check(const tlm_model *m, const void *update, size_t bytes, tlm_error *err)
{
    uint32_t n;
    return adapter_check(m, update, bytes, &n, err);
}

tlm_status tlm_runtime_use_adapter(tlm_runtime *rt, const void *update, size_t bytes, tlm_error *err)
{
    tlm_error_clear(err);
    if (!rt || !rt->model) return tlm_fail(err, TLM_ERR_ARG, "no runtime");
    if (!rt->adapter_at)
        return tlm_fail(err, TLM_ERR_ARG, "the runtime was initialized without TLM_RT_ADAPTER: no room for an adapter");
    const tlm_model *m = rt->model;
    uint32_t n = 0;
    if (update) {
        tlm_status st = adapter_check(m, update, bytes, &n, err);
        if (st) return st;
    }
    for (uint32_t i = 0; i < m->n_tensors; i++) rt->adapter_at[i] = 0;
    for (uint32_t i = 0; i < n; i++) {
        tlm_fed_entry e;
        uint32_t idx;
        tlm_fed_entry_at(update, i, &e);
        if (tlm_model_tensor_index(m, e.role, e.layer, &idx) == 0)
            rt->adapter_at[idx] = (uint32_t)(e.data - TLM_FED_ENTRY_BYTES - (const uint8_t *)update);
    }
    rt->adapter = update;
    return TLM_OK;
}

/* out (rows) += B (A x) for the low-rank entry at `head`. From the int8
 * activations `act` the product is integer but for one scale per row:
 * u = A q exactly in int32, brought to int16 by a rounding shift (2^-15 of
 * the largest, far below the factors' own int8 rounding), then each row's
 * B u exactly in int32 (|B u| < 127 * 2^15 * 64 < 2^31), so cores without
 * an FPU do one float multiply and add per row, and the Arm DSP path takes
 * two ranks per SMLAD. With act NULL, from the float x. */
static TLM_NOINLINE void adapter_matvec(float *out, const uint8_t *head, const float *x, const tlm_act_q8 *act)
{
    tlm_fed_entry e;
    tlm_fed_entry_read(head, &e);
    const uint32_t rows = e.rows, cols = e.count / rows, r = e.rank;
    const float scale_b = tlm_rdf32(e.data);
    const int8_t *b = (const int8_t *)(const void *)(e.data + 4), *a = b + (size_t)rows * r;
    if (act) {
        int32_t u[TLM_RT_MAX_ADAPTER_RANK];
        uint32_t umax = 0;
        for (uint32_t k = 0; k < r; k++, a += cols) {
            u[k] = tlm_dot_i8(a, act->q, cols); /* |u| <= 127 * 127 * cols: fits */
            const uint32_t m = u[k] < 0 ? 0u - (uint32_t)u[k] : (uint32_t)u[k];
            umax = m > umax ? m : umax;
        }
        uint32_t sh = 0;
        while ((umax >> sh) > 32000u) sh++; /* (with rounding, |u| >> sh stays below 2^15) */
        int16_t u16[TLM_RT_MAX_ADAPTER_RANK];
        for (uint32_t k = 0; k < r; k++) u16[k] = (int16_t)(sh ? (u[k] + (1 << (sh - 1u))) >> sh : u[k]);
        const float s = scale_b * e.scale * act->scale * (float)(1u << sh);
#if defined(__ARM_FEATURE_DSP)
        if ((r & 3u) == 0) {
            /* pairs in SXTB16's order: (u[4m], u[4m+2]) and (u[4m+1], u[4m+3]) */
            uint32_t pk[TLM_RT_MAX_ADAPTER_RANK / 2u];
            for (uint32_t k = 0; k < r; k += 4u) {
                pk[k / 2u] = (uint16_t)u16[k] | (uint32_t)(uint16_t)u16[k + 2u] << 16;
                pk[k / 2u + 1u] = (uint16_t)u16[k + 1u] | (uint32_t)(uint16_t)u16[k + 3u] << 16;
            }
            for (uint32_t i = 0; i < rows; i++, b += r) {
                int32_t acc = 0;
                for (uint32_t k = 0; k < r; k += 4u) {
                    uint32_t w;
                    memcpy(&w, b + k, 4);
                    acc = __smlad(__sxtb16((int8x4_t)w), (int16x2_t)pk[k / 2u], acc);
                    acc = __smlad(tlm_sxtb16_ror8(w), (int16x2_t)pk[k / 2u + 1u], acc);
                }
                out[i] += (float)acc * s;
            }
            return;
        }
#endif
        for (uint32_t i = 0; i < rows; i++, b += r) {
            int32_t acc = 0;
            for (uint32_t k = 0; k < r; k++) acc += (int32_t)b[k] * u16[k];
            out[i] += (float)acc * s;
        }
        return;
    }
    float u[TLM_RT_MAX_ADAPTER_RANK];
    for (uint32_t k = 0; k < r; k++, a += cols) {
        float s = 0.0f;
        for (uint32_t j = 0; j < cols; j++) s += (float)a[j] * x[j];
        u[k] = s * e.scale;
    }
    for (uint32_t i = 0; i < rows; i++, b += r) {
        float s = 0.0f;
        for (uint32_t k = 0; k < r; k++) s += (float)b[k] * u[k];
        out[i] += s * scale_b;
    }
}

/* x (cols) += row `row` of B A for the low-rank entry at `head`, decoded
 * into scratch (cols floats). */
static TLM_NOINLINE void adapter_row(float *x, const uint8_t *head, uint32_t row, float *scratch)
{
    tlm_fed_entry e;
    tlm_fed_entry_read(head, &e);
    tlm_fed_lowrank_row(&e, row, scratch);
    for (uint32_t j = 0, cols = e.count / e.rows; j < cols; j++) x[j] += scratch[j];
}

/* The adapter's entry for the image's tensor idx, NULL if none. */
static inline const uint8_t *adapter_entry(const tlm_runtime *rt, uint32_t idx)
{
    return rt->adapter && rt->adapter_at[idx] ? (const uint8_t *)rt->adapter + rt->adapter_at[idx] : NULL;
}

/* f32 tensors take float activations; quantized ones take the input
 * quantized to int8 per vector (absmax) and run an integer kernel. The
 * quantized input is kept while the same vector feeds several products
 * (q, k, v; gate and up): rt->act_src says which vector it holds. */
static void matvec(tlm_runtime *rt, float *out, const float *x, tlm_role role, uint32_t layer)
{
    uint32_t idx = 0;
    tlm_tensor t;
    (void)tlm_model_tensor_index(rt->model, role, layer, &idx); /* (every role the forward pass asks for exists) */
    tlm_model_tensor_at(rt->model, idx, &t);
    const tlm_act_q8 *act = NULL; /* f32: the adapter takes the float input too */
    if (t.wtype == TLM_WTYPE_F32) {
        tlm_matvec_f32_f32(out, x, &t);
    } else {
        if (rt->act_src != x || rt->act.n != t.cols) {
            tlm_act_q8_quantize(&rt->act, x, t.cols, rt->act_q8);
            rt->act_src = x;
        }
        act = &rt->act;
        tlm_wtype_matvec_q8(t.wtype)(out, act, &t);
    }
    const uint8_t *e = adapter_entry(rt, idx);
    if (e) adapter_matvec(out, e, x, act);
}

/* The gains of a norm: the caller's (tlm_runtime_use_gains) or the image's. */
static const float *norm_weights(const tlm_runtime *rt, tlm_role role, uint32_t layer)
{
    const tlm_hparams *hp = &rt->model->hp;
    if (rt->gains) return rt->gains + (size_t)tlm_tune_norm_index(hp, role, layer) * hp->dim;
    tlm_tensor t;
    tlm_model_tensor(rt->model, role, layer, &t);
    return (const float *)(const void *)t.data;
}

void tlm_runtime_use_gains(tlm_runtime *rt, const float *gains) { rt->gains = gains; }

/* Causal attention of one position over the cached keys and values. (Both
 * attentions stay out of the forward pass: inlined, each would change the
 * other's register allocation there, and so the fp32 build's instruction
 * count with every change to the int8 one.) */
static TLM_NOINLINE void attention(tlm_runtime *rt, uint32_t layer, uint32_t pos)
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

/* min(max(x, 0), 2^bits - 1) for a constant `bits`: one USAT on Arm. */
#if defined(__ARM_FEATURE_DSP) /* (arm_acle.h comes with kernels.h there) */
#define ATTN_USAT(x, bits) ((uint32_t)__usat((int32_t)(x), bits))
#else
#define ATTN_USAT(x, bits) \
    ((int32_t)(x) < 0 ? 0u : (uint32_t)(x) > (1u << (bits)) - 1u ? (1u << (bits)) - 1u : (uint32_t)(x))
#endif

/* Key scale of position t relative to the coarsest key exponent: its
 * exact dot product times 2^(8 - d_t), with 8 fractional bits kept,
 * i.e. floor(dot * 256 / 2^d): exact up to d = 8 and rounded down beyond
 * (|dot| < 2^21 for heads up to 128, so dot * 256 fits int32, and any
 * d >= 31 leaves its sign alone). dot256 is dot * 256. */
static inline int32_t key_align(int32_t dot256, int32_t d)
{
    return dot256 >> ATTN_USAT(d, 5); /* d >= 0: min(d, 31); an arithmetic shift */
}

/* Scores of one int8 query head against the keys of positions 0..n-1 in
 * units of 2^-8 of the coarsest key's: s[t]. Returns the largest. */
static TLM_NOINLINE int32_t attn_scores(int32_t *s, const int8_t *q, uint32_t hs, const int8_t *k, uint32_t kstride,
                           const int8_t *ke, int32_t ek_lo, uint32_t n)
{
    int32_t top = INT32_MIN;
#if defined(__ARM_FEATURE_DSP)
    if (hs == 8u) { /* stories260K's head size: the query, times 256, stays in registers */
        const uint32_t a0 = load_u32(q), a1 = load_u32(q + 4);
        const int16x2_t q0 = (int16x2_t)((a0 << 8) & 0xFF00FF00u), q1 = (int16x2_t)(a0 & 0xFF00FF00u);
        const int16x2_t q2 = (int16x2_t)((a1 << 8) & 0xFF00FF00u), q3 = (int16x2_t)(a1 & 0xFF00FF00u);
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
        const int32_t v = key_align(tlm_dot_i8(q, k, hs) * 256, ke[t] - ek_lo);
        s[t] = v;
        top = v > top ? v : top;
    }
    return top;
}

/* 2^(-a / 65536) in Q15 for 0 <= a < 16 * 2^16 (two Q15 tables), at most
 * 32767 so that it fits an int16 lane. */
static inline uint32_t exp2neg_q15(uint32_t a)
{
    const uint16_t(*t)[256] = tlm_exp2_q15;
    return ATTN_USAT(((uint32_t)t[0][(a >> 8) & 0xFFu] * t[1][a & 0xFFu]) >> ((a >> 16) + 15u), 15);
}

/* Softmax numerators in Q15: 2^-a for a score `diff` below the top one
 * (in score units), a = floor(diff * kq / 2^sh) in Q16, and 0 once a
 * reaches 16 (where the Q15 value rounds to 0 anyway). a is the high word
 * of (d << c) * kq shifted right by r (c = 32 - sh below sh = 32, r =
 * sh - 32 above) with d = min(diff, dlim): every d >= dlim has a >= 16, and
 * d <= dlim keeps d << c below 2^26 (kq >= 2^27 for heads up to 128), so
 * the result is exact with one 32x32-bit multiply at any sh. */
typedef struct {
    uint32_t kq, dlim, c, r;
} attn_exp;

static attn_exp attn_exp_of(uint32_t kq, int32_t sh)
{
    attn_exp x = {kq, 1u, 31u, 0u}; /* sh <= 0: any difference at all reaches the stop */
    if (sh >= 7) x.dlim = sh - 7 >= 32 ? UINT32_MAX : 1u << (sh - 7);
    if (sh >= 32) {
        x.c = 0;
        x.r = sh - 32 > 31 ? 31u : (uint32_t)(sh - 32);
    } else if (sh > 0) {
        x.c = 32u - (uint32_t)sh;
    }
    return x;
}

/* wide: sh >= 32 (c = 0); else r = 0. A constant in every caller, so that
 * each loop keeps one shift and one register fewer. */
static TLM_ALWAYS_INLINE uint32_t attn_numerator(uint32_t diff, const attn_exp *x, int wide)
{
    const uint32_t d = diff < x->dlim ? diff : x->dlim;
    const uint32_t a = wide ? (uint32_t)(((uint64_t)d * x->kq) >> 32) >> x->r
                            : (uint32_t)(((uint64_t)(d << x->c) * x->kq) >> 32); /* < 2^31 */
    return exp2neg_q15(ATTN_USAT(a, 20)); /* a past 2^20 - 1 (16 - 2^-16): 0 in Q15 as well */
}

/* The weight a value row is summed with: numerator e brought from the
 * value's exponent to the coarsest one (vsh = the difference), rounded
 * half up: ((2e >> vsh) + 1) >> 1, which is e itself for vsh = 0. */
static inline int16_t attn_weight(uint32_t e, uint32_t vsh)
{
    vsh = ATTN_USAT(vsh, 5); /* vsh >= 0: min(vsh, 31) */
    return (int16_t)((((e << 1) >> vsh) + 1u) >> 1);
}

/* One query head's softmax over positions 0..n-1: its numerators' sum
 * (the top one's is 32767, so >= 32767), and their weights w[t]. */
static TLM_ALWAYS_INLINE uint32_t attn_weights_run(int16_t *w, const int32_t *s, uint32_t n, int32_t top,
                                                   const attn_exp *x, const int8_t *ve, int32_t ev_lo, int wide)
{
    uint32_t sum = 0;
    for (uint32_t t = 0; t < n; t++) {
        const uint32_t e = attn_numerator((uint32_t)(top - s[t]), x, wide);
        sum += e;
        w[t] = attn_weight(e, (uint32_t)(ve[t] - ev_lo));
    }
    return sum;
}

/* (not inlined: its loop wants every register) */
static TLM_NOINLINE uint32_t attn_weights(int16_t *w, const int32_t *s, uint32_t n, int32_t top, uint32_t kq,
                                          int32_t sh, const int8_t *ve, int32_t ev_lo)
{
    const attn_exp x = attn_exp_of(kq, sh);
    if (x.c == 0) return attn_weights_run(w, s, n, top, &x, ve, ev_lo, 1);
    return attn_weights_run(w, s, n, top, &x, ve, ev_lo, 0);
}

/* Where position t's value byte sits in its transposed row: blocks of four
 * positions in the order 0, 2, 1, 3, so that SXTB16 of a block's word gives
 * the pairs (t, t + 1) and (t + 2, t + 3), matching the weights' pairs. */
static inline size_t value_slot(uint32_t t) { return (t & ~3u) | (uint32_t)((t & 1u) << 1) | ((t >> 1) & 1u); }

/* Sums of two heads' weights (w0, w1) times one transposed value row over
 * blocks [b0, b1), at most 128 blocks (512 positions: |w| < 2^15 and
 * |v| < 2^7, so int32 holds them). */
static inline void values_row(int32_t *s0, int32_t *s1, const int16_t *w0, const int16_t *w1, const int8_t *v,
                              uint32_t b0, uint32_t b1)
{
    int32_t a0 = 0, a1 = 0;
#if defined(__ARM_FEATURE_DSP)
    for (uint32_t b = b0; b < b1; b++) {
        const uint32_t x = load_u32(v + 4u * b);
        const int16x2_t x01 = __sxtb16((int8x4_t)x), x23 = tlm_sxtb16_ror8(x);
        a0 = __smlad(x01, (int16x2_t)load_u32(w0 + 4u * b), a0);
        a0 = __smlad(x23, (int16x2_t)load_u32(w0 + 4u * b + 2u), a0);
        a1 = __smlad(x01, (int16x2_t)load_u32(w1 + 4u * b), a1);
        a1 = __smlad(x23, (int16x2_t)load_u32(w1 + 4u * b + 2u), a1);
    }
#else
    for (uint32_t b = b0; b < b1; b++) {
        const int8_t *x = v + 4u * b;
        const int16_t *p = w0 + 4u * b, *q = w1 + 4u * b;
        a0 += p[0] * x[0] + p[1] * x[2] + p[2] * x[1] + p[3] * x[3];
        a1 += q[0] * x[0] + q[1] * x[2] + q[2] * x[1] + q[3] * x[3];
    }
#endif
    *s0 = a0;
    *s1 = a1;
}

/* Two query heads' outputs from their weights (w0, w1; nb blocks of four
 * positions) and the values, transposed (row i: dimension i of every
 * position, ctx4 apart): o_j[i] = scale_j * sum over t of w_j[t] * v_t[i],
 * summed in int32 up to 512 positions and in int64 beyond. */
static void attn_values(float *o0, float *o1, float scale0, float scale1, const int16_t *w0, const int16_t *w1,
                        const int8_t *v, uint32_t ctx4, uint32_t hs, uint32_t nb)
{
    for (uint32_t i = 0; i < hs; i++, v += ctx4) {
        int32_t a0, a1;
        if (nb <= 128u) {
            values_row(&a0, &a1, w0, w1, v, 0, nb);
            o0[i] = (float)a0 * scale0;
            if (o1) o1[i] = (float)a1 * scale1;
            continue;
        }
        int64_t s0 = 0, s1 = 0;
        for (uint32_t b0 = 0; b0 < nb; b0 += 128u) {
            values_row(&a0, &a1, w0, w1, v, b0, nb - b0 > 128u ? b0 + 128u : nb);
            s0 += a0;
            s1 += a1;
        }
        o0[i] = (float)s0 * scale0;
        if (o1) o1[i] = (float)s1 * scale1;
    }
}

static TLM_NOINLINE void attention_q8(tlm_runtime *rt, uint32_t layer, uint32_t pos)
{
    const tlm_hparams *hp = &rt->model->hp;
    const uint32_t hs = hp->dim / hp->n_heads, kv_dim = tlm_hparams_kv_dim(hp);
    const uint32_t group = hp->n_heads / hp->n_kv_heads, n = pos + 1u, ctx = rt->ctx, ctx4 = (ctx + 3u) & ~3u;
    const uint32_t nb = (n + 3u) / 4u;
    const int8_t *kc = rt->key_q8 + (size_t)layer * ctx * kv_dim;
    const int8_t *vc = rt->value_q8 + (size_t)layer * ctx4 * kv_dim; /* transposed: kv_dim rows of ctx4 */
    const uint32_t nkv = hp->n_kv_heads;
    /* exponents: one run of ctx positions per layer and kv head */
    const int8_t *ke = rt->key_exp + (size_t)layer * ctx * nkv;
    const int8_t *ve = rt->value_exp + (size_t)layer * ctx * nkv;
    int32_t *s = rt->att_s;
    int16_t *w = rt->att_w;
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
            float scale[2] = {0.0f, 0.0f};
            for (uint32_t j = 0; j < nh; j++) {
                int8_t *qj = rt->q_q8 + j * hs;
                const int32_t eq = quantize_pow2(qj, rt->q + (size_t)(h + j) * hs, hs);
                const int32_t top = attn_scores(s, qj, hs, kc + kvo, kv_dim, keg, ek_lo, n);
                /* a score unit (2^-8 of the coarsest key's) is kq * 2^-(38 + eq + ek_lo)
                 * in base 2, i.e. kq * 2^-(22 + eq + ek_lo) in Q16 */
                const uint32_t sum = attn_weights(w + (size_t)j * ctx4, s, n, top, (uint32_t)kq, 22 + eq + ek_lo, veg, ev_lo);
                /* out = sum_t (e_t / sum) * v_t = 2^-ev_lo / sum * (weighted sum at the coarsest exponent) */
                scale[j] = pow2f_wide(-ev_lo) / (float)sum;
            }
            /* the last block's positions past n, and a lone head's partner, weigh 0 */
            for (uint32_t t = n; t < 4u * nb; t++) w[t] = w[ctx4 + t] = 0;
            if (nh == 1u) memset(w + ctx4, 0, 4u * nb * sizeof *w);
            attn_values(rt->xb + (size_t)h * hs, nh == 2u ? rt->xb + (size_t)(h + 1u) * hs : NULL, scale[0], scale[1], w,
                        w + ctx4, vc + (size_t)kvo * ctx4, ctx4, hs, nb);
        }
    }
}

/* Quantizes this position's key and value (kbuf, vbuf) into the cache;
 * values go to their transposed rows (one per dimension, ctx4 positions). */
static void store_kv_q8(tlm_runtime *rt, uint32_t layer, uint32_t pos)
{
    const tlm_hparams *hp = &rt->model->hp;
    const uint32_t kv_dim = tlm_hparams_kv_dim(hp), nkv = hp->n_kv_heads, hs = hp->dim / hp->n_heads;
    const uint32_t ctx4 = (rt->ctx + 3u) & ~3u;
    const size_t at = (size_t)layer * rt->ctx + pos;
    int8_t vq[TLM_RT_MAX_HEAD];
    for (uint32_t h = 0; h < nkv; h++) {
        const size_t ex = ((size_t)layer * nkv + h) * rt->ctx + pos;
        rt->key_exp[ex] = (int8_t)quantize_pow2(rt->key_q8 + at * kv_dim + h * hs, rt->kbuf + h * hs, hs);
        rt->value_exp[ex] = (int8_t)quantize_pow2(vq, rt->vbuf + h * hs, hs);
        int8_t *vrow = rt->value_q8 + ((size_t)layer * kv_dim + (size_t)h * hs) * ctx4 + value_slot(pos);
        for (uint32_t i = 0; i < hs; i++) vrow[(size_t)i * ctx4] = vq[i];
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
    uint32_t emb_idx = 0;
    (void)tlm_model_tensor_index(m, TLM_ROLE_TOK_EMBED, 0, &emb_idx);
    tlm_model_tensor_at(m, emb_idx, &emb);
    tlm_wtype_get(emb.wtype)->row_to_f32(rt->x, &emb, token);
    const uint8_t *e = adapter_entry(rt, emb_idx);
    if (e) adapter_row(rt->x, e, token, rt->xb);
    tlm_rope_table(rt->rope, pos, hs, hp->rope_theta);

    const int kv8 = (rt->flags & TLM_RT_KV_INT8) != 0;
    for (uint32_t l = 0; l < hp->n_layers; l++) {
        float *k = kv8 ? rt->kbuf : rt->key_cache + ((size_t)l * rt->ctx + pos) * kv_dim;
        float *v = kv8 ? rt->vbuf : rt->value_cache + ((size_t)l * rt->ctx + pos) * kv_dim;
        tlm_rmsnorm(rt->xb, rt->x, norm_weights(rt, TLM_ROLE_ATTN_NORM, l), dim, hp->norm_eps);
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

        tlm_rmsnorm(rt->xb, rt->x, norm_weights(rt, TLM_ROLE_FFN_NORM, l), dim, hp->norm_eps);
        rt->act_src = NULL;
        matvec(rt, rt->hb, rt->xb, TLM_ROLE_W1, l);
        matvec(rt, rt->hb2, rt->xb, TLM_ROLE_W3, l);
        tlm_swiglu(rt->hb, rt->hb2, hidden);
        rt->act_src = NULL;
        matvec(rt, rt->xb, rt->hb, TLM_ROLE_W2, l);
        for (uint32_t i = 0; i < dim; i++) rt->x[i] += rt->xb[i];
    }
    tlm_rmsnorm(rt->x, rt->x, norm_weights(rt, TLM_ROLE_FINAL_NORM, 0), dim, hp->norm_eps);
    rt->act_src = NULL;
    matvec(rt, rt->logits, rt->x, TLM_ROLE_CLASSIFIER, 0);
    *logits = rt->logits;
    return TLM_OK;
}
