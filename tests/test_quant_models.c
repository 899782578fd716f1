/* Whole quantized models against oracles written here: repacking and
 * quantization-aware starts that keep a ternary image's weights, packed
 * data no quantizer writes, the integer runtime against a double-precision
 * reference of the dequantized model, evaluation, and the shipped pair.
 * (Weight types, kernels and quantizers: test_quant.c.) */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../src/host/eval.h"
#include "../src/host/fileio.h"
#include "../src/host/model_file.h"
#include "../src/host/image_build.h"
#include "../src/host/quant.h"
#include "../src/host/train/params.h"
#include "testutil.h"
#include "tritlm/runtime.h"

static void quantized_tiny(const tlm_quant_cfg *c, uint8_t **img, size_t *bytes, tlm_model *m);

/* The default quantizer with packing `pack`, row scales or (group != 0)
 * scales per group of `group` weights. */
static tlm_quant_cfg pack_cfg(uint16_t pack, uint32_t group)
{
    tlm_quant_cfg c;
    tlm_quant_defaults(&c);
    c.pack = pack;
    if (group) {
        c.scale_kind = TLM_SCALE_GROUP;
        c.group = group;
    }
    return c;
}

/* The image of model m quantized with c (expanded to fp32, then quantized
 * as tritlm quantize does). */
static void quantize_model(const tlm_model *m, const tlm_quant_cfg *c, uint8_t **img, size_t *bytes)
{
    tlm_params p;
    tlm_vocab v;
    assert_int_equal(tlm_params_from_model(&p, m, NULL), TLM_OK);
    assert_int_equal(tlm_vocab_from_model(m, &v, NULL), TLM_OK);
    tlm_error err;
    if (tlm_quant_image(&p, c, &v, m->bos_id, m->eos_id, img, bytes, &err)) fail_msg("%s", err.msg);
    tlm_params_free(&p);
    tlm_vocab_free(&v);
}

/* A t3 image expanded and packed again as t2 gives the same logits bit for
 * bit: the same trits and scales through the same integer sums. */
static void test_repack_image(void **state)
{
    (void)state;
    tlm_quant_cfg c = pack_cfg(TLM_WTYPE_T3, 0);
    uint8_t *img, *img2;
    size_t bytes, bytes2;
    tlm_model m, m2;
    quantized_tiny(&c, &img, &bytes, &m);
    c.pack = TLM_WTYPE_T2;
    c.keep_ternary = 1; /* as tritlm quantize does without --qat */
    quantize_model(&m, &c, &img2, &bytes2);
    assert_int_equal(tlm_model_open(&m2, img2, bytes2, NULL), TLM_OK);
    uint32_t n_t2 = 0;
    for (uint32_t i = 0; i < m2.n_tensors; i++) {
        tlm_tensor t;
        tlm_model_tensor_at(&m2, i, &t);
        n_t2 += t.wtype == TLM_WTYPE_T2;
    }
    assert_int_equal(n_t2, 7u * m.hp.n_layers);
    const uint32_t T = 12, V = m.hp.vocab_size;
    const size_t ab = tlm_runtime_arena_size(&m, T), ab2 = tlm_runtime_arena_size(&m2, T);
    void *a1 = malloc(ab), *a2 = malloc(ab2);
    tlm_runtime r1, r2;
    assert_int_equal(tlm_runtime_init(&r1, &m, T, a1, ab, NULL), TLM_OK);
    assert_int_equal(tlm_runtime_init(&r2, &m2, T, a2, ab2, NULL), TLM_OK);
    uint64_t s = 17;
    for (uint32_t pos = 0; pos < T; pos++) {
        const uint32_t tok = (uint32_t)(tu_rand(&s) % V);
        float *l1, *l2;
        assert_int_equal(tlm_runtime_forward(&r1, tok, pos, &l1), TLM_OK);
        assert_int_equal(tlm_runtime_forward(&r2, tok, pos, &l2), TLM_OK);
        assert_memory_equal(l1, l2, V * sizeof *l1);
    }
    free(a1);
    free(a2);
    free(img);
    free(img2);
}

/* QAT from a ternary image: latent weights whose quantization (what the
 * training forward pass uses) is the image's own weights, for absmean at
 * row and group scales (absmean alone would rescale to mean |w|). */
static void test_qat_latent_init(void **state)
{
    (void)state;
    for (int k = 0; k < 2; k++) {
        const tlm_quant_cfg c = pack_cfg(TLM_WTYPE_T3, k ? 16u : 0u);
        uint8_t *img;
        size_t bytes;
        tlm_model m;
        quantized_tiny(&c, &img, &bytes, &m);
        tlm_params deq, lat, fake;
        assert_int_equal(tlm_params_from_model(&deq, &m, NULL), TLM_OK);
        assert_int_equal(tlm_params_from_model(&lat, &m, NULL), TLM_OK);
        assert_int_equal(tlm_params_from_model(&fake, &m, NULL), TLM_OK);
        tlm_quant_fake(&deq, &fake, &c); /* without the init: absmean rescales */
        double worst_plain = 0, worst = 0;
        tlm_quant_latent_init(&lat, &c);
        for (uint32_t pass = 0; pass < 2; pass++) {
            if (pass) tlm_quant_fake(&lat, &fake, &c);
            for (uint32_t i = 0; i < tlm_params_count(&deq); i++) {
                tlm_param_tensor a, b;
                tlm_params_tensor(&deq, i, &a);
                tlm_params_tensor(&fake, i, &b);
                for (size_t j = 0; j < (size_t)a.rows * a.cols; j++) {
                    const double e = fabs((double)b.data[j] - a.data[j]) / (fabs((double)a.data[j]) + 1e-30);
                    if (a.data[j] != 0.0f || b.data[j] != 0.0f) {
                        if (pass) worst = e > worst ? e : worst;
                        else worst_plain = e > worst_plain ? e : worst_plain;
                    }
                }
            }
        }
        assert_true(worst < 1e-6);       /* a scale rounded at most an ulp or two */
        assert_true(worst_plain > 0.1);  /* the oracle can tell: absmean of the image is far off */
        tlm_params_free(&deq);
        tlm_params_free(&lat);
        tlm_params_free(&fake);
        free(img);
    }
}

/* Builds a quantized image of a tiny random model, and opens it as *m
 * unless m is NULL. */
static void quantized_tiny(const tlm_quant_cfg *c, uint8_t **img, size_t *bytes, tlm_model *m)
{
    tu_tiny cfg = {.dim = 40, .hidden = 70, .layers = 2, .heads = 4, .kv_heads = 2, .seq_len = 32, .n_merges = 20, .shared = 0};
    uint8_t *fp;
    size_t fb;
    tu_build_tiny(&cfg, 7, &fp, &fb);
    tlm_model fm;
    assert_int_equal(tlm_model_open(&fm, fp, fb, NULL), TLM_OK);
    quantize_model(&fm, c, img, bytes);
    free(fp);
    if (m) assert_int_equal(tlm_model_open(m, *img, *bytes, NULL), TLM_OK);
}

static int find_tensor(const tlm_model *m, uint16_t wtype, tlm_tensor *t, uint32_t *index)
{
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        tlm_model_tensor_at(m, i, t);
        if (t->wtype == wtype) {
            *index = i;
            return 1;
        }
    }
    return 0;
}

/* Packed data that no quantizer writes is refused by validation. */
static void test_corrupt_packed(void **state)
{
    (void)state;
    const uint16_t packs[] = {TLM_WTYPE_T2, TLM_WTYPE_T3, TLM_WTYPE_TS};
    for (size_t k = 0; k < 3; k++) {
        tlm_quant_cfg c = pack_cfg(packs[k], 0);
        c.sparsity = 0.5f;
        uint8_t *img;
        size_t bytes;
        tlm_model m;
        tlm_error err;
        quantized_tiny(&c, &img, &bytes, &m);
        for (int damage = 0; damage < 3; damage++) {
            uint8_t *copy = tu_exact_copy(img, bytes);
            tlm_model mm;
            assert_int_equal(tlm_model_open(&mm, copy, bytes, NULL), TLM_OK);
            tlm_tensor t;
            uint32_t idx;
            assert_true(find_tensor(&mm, packs[k], &t, &idx));
            uint8_t *d = copy + (t.data - copy);
            const uint64_t rb = tlm_wtype_row_bytes(t.wtype, t.cols, t.param);
            if (damage == 2) {
                float nan = NAN;
                memcpy(copy + ((const uint8_t *)t.scales - copy), &nan, 4);
            } else if (packs[k] == TLM_WTYPE_T2) {
                d[damage ? rb - 1 : 0] |= damage ? 0xC0 : 0x03; /* code 3; padding (cols 40: no pad -> code 3 too) */
            } else if (packs[k] == TLM_WTYPE_T3) {
                d[damage ? rb - 1 : 0] = damage ? 250 : 243;
            } else {
                /* one more nonzero than the type parameter allows / a stray sign bit */
                if (damage == 0) memset(d, 0xFF, (t.cols + 7) / 8);
                else d[rb - 1] |= 0x80;
            }
            tlm_image_reseal(copy, bytes);
            tlm_status st = tlm_model_open(&mm, copy, bytes, &err);
            if (damage == 1 && packs[k] == TLM_WTYPE_TS && st == TLM_OK) {
                /* the last sign byte may legitimately use bit 7 when a row is full */
            } else {
                assert_int_equal(st, TLM_ERR_TENSOR);
                assert_non_null(strstr(err.msg, damage == 2 ? "not finite" : "invalid"));
            }
            free(copy);
        }
        free(img);
    }
    /* int8 -128 */
    tlm_quant_cfg c;
    tlm_quant_defaults(&c);
    uint8_t *img;
    size_t bytes;
    tlm_model m;
    quantized_tiny(&c, &img, &bytes, &m);
    tlm_tensor t;
    uint32_t idx;
    assert_true(find_tensor(&m, TLM_WTYPE_I8, &t, &idx));
    img[t.data - img + 3] = 0x80;
    tlm_image_reseal(img, bytes);
    tlm_error err;
    assert_int_equal(tlm_model_open(&m, img, bytes, &err), TLM_ERR_TENSOR);
    free(img);
}

/* Double-precision reference forward of a quantized model: weights
 * dequantized, every quantized product's input rounded to int8 as the
 * integer path does; the runtime's logits must match closely. */
static void test_runtime_quantized(void **state)
{
    (void)state;
    /* the last two: per-layer plans (hardware-aware quantization), one
     * layer fp32 (float activations) beside a ternary one, int8 beside t2 */
    const uint16_t packs[] = {TLM_WTYPE_T2, TLM_WTYPE_T3, TLM_WTYPE_TS, TLM_WTYPE_T2, TLM_WTYPE_T2};
    const uint16_t embeds[] = {TLM_WTYPE_I8, TLM_PACK_AUTO, TLM_WTYPE_F32, TLM_WTYPE_I8, TLM_WTYPE_F32};
    const uint8_t plans[5][2] = {{0}, {0}, {0}, {TLM_WTYPE_F32, TLM_WTYPE_T3}, {TLM_WTYPE_I8, TLM_WTYPE_T2}};
    for (size_t k = 0; k < 5; k++) {
        tlm_quant_cfg c = pack_cfg(packs[k], k == 1 ? 16u : 0u);
        c.embed = embeds[k];
        if (k >= 3) {
            c.n_plan = 2;
            memcpy(c.plan, plans[k], 2);
        }
        uint8_t *img;
        size_t bytes;
        tlm_model m;
        quantized_tiny(&c, &img, &bytes, &m);
        for (uint32_t l = 0; l < m.hp.n_layers; l++)
            for (uint32_t role = TLM_ROLE_WQ; role <= TLM_ROLE_W3; role++) {
                if (role == TLM_ROLE_FFN_NORM) continue;
                tlm_tensor t;
                tlm_model_tensor(&m, (tlm_role)role, l, &t);
                assert_int_equal(t.wtype, k >= 3 ? plans[k][l] : packs[k]);
            }
        /* The sequence path with fake-quantized activations computes the
         * same function with float sums: compare per position. */
        const uint32_t T = 20;
        uint32_t tokens[20];
        uint64_t s = 3 + k;
        for (uint32_t i = 0; i < T; i++) tokens[i] = (uint32_t)(tu_rand(&s) % m.hp.vocab_size);
        size_t ab = tlm_runtime_arena_size(&m, T);
        void *arena = malloc(ab);
        tlm_runtime rt;
        assert_int_equal(tlm_runtime_init(&rt, &m, T, arena, ab, NULL), TLM_OK);
        tlm_params p;
        assert_int_equal(tlm_params_from_model(&p, &m, NULL), TLM_OK);
        /* oracle: double forward over dequantized weights */
        const uint32_t D = m.hp.dim, H = m.hp.hidden_dim, V = m.hp.vocab_size, KV = tlm_hparams_kv_dim(&m.hp);
        const uint32_t hs = D / m.hp.n_heads;
        double *kc = calloc((size_t)m.hp.n_layers * T * KV, sizeof(double));
        double *vc = calloc((size_t)m.hp.n_layers * T * KV, sizeof(double));
        double x[64], xb[64], q[64], att[64], hb[128], hb2[128], logits[600];
        for (uint32_t pos = 0; pos < T; pos++) {
            float *lg;
            assert_int_equal(tlm_runtime_forward(&rt, tokens[pos], pos, &lg), TLM_OK);
            for (uint32_t i = 0; i < D; i++) x[i] = p.tok_embed[(size_t)tokens[pos] * D + i];
            /* quantized matvec in double: input rounded to int8 like the kernels */
#define QMV(out, in, W, R, C, quant)                                                       \
    do {                                                                                   \
        double in_q[128];                                                                  \
        float tmpf[128];                                                                   \
        int8_t qq[128];                                                                    \
        for (uint32_t i_ = 0; i_ < (C); i_++) tmpf[i_] = (float)(in)[i_];                 \
        if (quant) {                                                                       \
            float sc_ = tlm_q8_quantize_row(qq, tmpf, (C));                               \
            for (uint32_t i_ = 0; i_ < (C); i_++) in_q[i_] = (double)qq[i_] * sc_;         \
        } else                                                                             \
            for (uint32_t i_ = 0; i_ < (C); i_++) in_q[i_] = tmpf[i_];                     \
        for (uint32_t r_ = 0; r_ < (R); r_++) {                                            \
            double acc_ = 0;                                                               \
            for (uint32_t i_ = 0; i_ < (C); i_++) acc_ += (double)(W)[(size_t)r_ * (C) + i_] * in_q[i_]; \
            (out)[r_] = acc_;                                                              \
        }                                                                                  \
    } while (0)
            for (uint32_t l = 0; l < m.hp.n_layers; l++) {
                const tlm_layer_params *w = &p.layers[l];
                const int lq = k < 3 || plans[k][l] != TLM_WTYPE_F32; /* int8 inputs into this layer */
                double ss = 0;
                for (uint32_t i = 0; i < D; i++) ss += x[i] * x[i];
                double inv = 1.0 / sqrt(ss / D + m.hp.norm_eps);
                for (uint32_t i = 0; i < D; i++) xb[i] = x[i] * inv * w->attn_norm[i];
                double *kr = kc + ((size_t)l * T + pos) * KV, *vr = vc + ((size_t)l * T + pos) * KV;
                QMV(q, xb, w->wq, D, D, lq);
                QMV(kr, xb, w->wk, KV, D, lq);
                QMV(vr, xb, w->wv, KV, D, lq);
                for (uint32_t i = 0; i < D; i += 2) {
                    double f = 1.0 / pow(m.hp.rope_theta, (double)(i % hs) / hs), a = pos * f;
                    double c0 = cos(a), s0 = sin(a), q0 = q[i], q1 = q[i + 1];
                    q[i] = q0 * c0 - q1 * s0;
                    q[i + 1] = q0 * s0 + q1 * c0;
                    if (i < KV) {
                        double k0 = kr[i], k1 = kr[i + 1];
                        kr[i] = k0 * c0 - k1 * s0;
                        kr[i + 1] = k0 * s0 + k1 * c0;
                    }
                }
                const uint32_t grp = m.hp.n_heads / m.hp.n_kv_heads;
                for (uint32_t h = 0; h < m.hp.n_heads; h++) {
                    double sc[32], mx = -1e300, sum = 0;
                    for (uint32_t t2 = 0; t2 <= pos; t2++) {
                        double d = 0;
                        for (uint32_t i = 0; i < hs; i++) d += q[h * hs + i] * kc[((size_t)l * T + t2) * KV + (h / grp) * hs + i];
                        sc[t2] = d / sqrt((double)hs);
                        mx = sc[t2] > mx ? sc[t2] : mx;
                    }
                    for (uint32_t t2 = 0; t2 <= pos; t2++) sum += sc[t2] = exp(sc[t2] - mx);
                    for (uint32_t i = 0; i < hs; i++) {
                        double o = 0;
                        for (uint32_t t2 = 0; t2 <= pos; t2++) o += sc[t2] / sum * vc[((size_t)l * T + t2) * KV + (h / grp) * hs + i];
                        att[h * hs + i] = o;
                    }
                }
                double tmp[64];
                QMV(tmp, att, w->wo, D, D, lq);
                for (uint32_t i = 0; i < D; i++) x[i] += tmp[i];
                ss = 0;
                for (uint32_t i = 0; i < D; i++) ss += x[i] * x[i];
                inv = 1.0 / sqrt(ss / D + m.hp.norm_eps);
                for (uint32_t i = 0; i < D; i++) xb[i] = x[i] * inv * w->ffn_norm[i];
                QMV(hb, xb, w->w1, H, D, lq);
                QMV(hb2, xb, w->w3, H, D, lq);
                for (uint32_t i = 0; i < H; i++) hb[i] = hb[i] / (1.0 + exp(-hb[i])) * hb2[i];
                QMV(tmp, hb, w->w2, D, H, lq);
                for (uint32_t i = 0; i < D; i++) x[i] += tmp[i];
            }
            double ss = 0;
            for (uint32_t i = 0; i < D; i++) ss += x[i] * x[i];
            double inv = 1.0 / sqrt(ss / D + m.hp.norm_eps);
            for (uint32_t i = 0; i < D; i++) xb[i] = x[i] * inv * p.final_norm[i];
            QMV(logits, xb, p.classifier, V, D, c.embed != TLM_WTYPE_F32);
            double worst = 0, mag = 0;
            for (uint32_t i = 0; i < V; i++) {
                worst = fmax(worst, fabs(logits[i] - lg[i]));
                mag = fmax(mag, fabs(logits[i]));
            }
            /* int8 rounding can flip when float and double land on either
             * side of a half step; such flips are rare and small */
            assert_true(worst <= 2e-3 * (mag + 1e-3));
        }
#undef QMV
        free(kc);
        free(vc);
        free(arena);
        tlm_params_free(&p);
        free(img);
    }
}

/* stories260K quantized: the integer decoder (token by token) scores the
 * dev stories like the sequence path, and like dequantize-then-fp32
 * within the effect of int8 activations. */
static void test_eval_quantized_stories(void **state)
{
    (void)state;
    uint8_t *fp;
    size_t fb;
    tu_import_stories260k(&fp, &fb);
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, fp, fb, NULL), TLM_OK);
    tlm_quant_cfg c = pack_cfg(TLM_WTYPE_T2, 0);
    c.embed = TLM_WTYPE_I8;
    uint8_t *img;
    size_t bytes;
    quantize_model(&m, &c, &img, &bytes);
    tlm_model qm;
    assert_int_equal(tlm_model_open(&qm, img, bytes, NULL), TLM_OK);
    uint8_t *text;
    size_t len;
    assert_int_equal(tlm_read_file(tu_data("tinystories/dev.txt"), &text, &len, NULL), TLM_OK);
    size_t cut = len < 40000 ? len : 40000; /* ~50 stories */
    tlm_eval_opts seq = {.threads = 2}, tbt = {.threads = 2, .token_by_token = 1}, flt = {.threads = 2, .float_acts = 1};
    tlm_eval_result rs, rt, rf;
    assert_int_equal(tlm_eval_text(&qm, (const char *)text, cut, &seq, &rs, NULL), TLM_OK);
    assert_int_equal(tlm_eval_text(&qm, (const char *)text, cut, &tbt, &rt, NULL), TLM_OK);
    assert_int_equal(tlm_eval_text(&qm, (const char *)text, cut, &flt, &rf, NULL), TLM_OK);
    print_message("quantized stories260K: seq %.5f, integer %.5f, dequantized fp32 %.5f\n", rs.loss, rt.loss, rf.loss);
    assert_int_equal(rs.tokens, rt.tokens);
    assert_true(fabs(rs.loss - rt.loss) <= 1e-3 * rs.loss);
    assert_true(fabs(rs.top1 - rt.top1) <= 2e-3);
    assert_true(fabs(rf.loss - rt.loss) <= 0.05 * rf.loss);
    free(text);
    free(img);
    free(fp);
}

/* The model pair shipped in models/: both images valid, the ternary one
 * at least 12x smaller with only ternary matrices, and on the dev stories
 * its loss close to its fp32 parent's (the parent is the reference). */
static void test_shipped_models(void **state)
{
    (void)state;
    char fp_path[1024], tq_path[1024];
    snprintf(fp_path, sizeof fp_path, "%s/models/tinystories-d128-fp32.tlm", TLM_SOURCE_DIR);
    snprintf(tq_path, sizeof tq_path, "%s/models/tinystories-d128-ternary.tlm", TLM_SOURCE_DIR);
    tlm_model_file fp, tq;
    tlm_error err;
    if (tlm_model_file_open(&fp, fp_path, &err)) fail_msg("%s", err.msg);
    if (tlm_model_file_open(&tq, tq_path, &err)) fail_msg("%s", err.msg);
    assert_true((double)fp.model.image_bytes / (double)tq.model.image_bytes >= 12.0);
    for (uint32_t i = 0; i < tq.model.n_tensors; i++) {
        tlm_tensor t;
        tlm_model_tensor_at(&tq.model, i, &t);
        if (t.rows > 1 && t.role != TLM_ROLE_TOK_EMBED && t.role != TLM_ROLE_CLASSIFIER)
            assert_true(t.wtype == TLM_WTYPE_T2 || t.wtype == TLM_WTYPE_T3 || t.wtype == TLM_WTYPE_TS);
    }
    uint8_t *text;
    size_t len;
    assert_int_equal(tlm_read_file(tu_data("tinystories/dev.txt"), &text, &len, NULL), TLM_OK);
    tlm_eval_opts eo = {.threads = 2};
    tlm_eval_result rf, rq;
    assert_int_equal(tlm_eval_text(&fp.model, (const char *)text, len, &eo, &rf, NULL), TLM_OK);
    assert_int_equal(tlm_eval_text(&tq.model, (const char *)text, len, &eo, &rq, NULL), TLM_OK);
    print_message("shipped models on dev: fp32 loss %.4f top-1 %.4f; ternary loss %.4f top-1 %.4f (%.1f%%)\n", rf.loss,
                  rf.top1, rq.loss, rq.top1, 100 * rq.top1 / rf.top1);
    assert_true(rq.loss <= 1.05 * rf.loss);   /* the targets: loss within +5%, */
    assert_true(rq.top1 >= 0.97 * rf.top1);   /* top-1 at least 97% of fp32 (98.9% measured) */
    free(text);
    tlm_model_file_close(&fp);
    tlm_model_file_close(&tq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repack_image),
        cmocka_unit_test(test_qat_latent_init),
        cmocka_unit_test(test_corrupt_packed),
        cmocka_unit_test(test_runtime_quantized),
        cmocka_unit_test(test_eval_quantized_stories),
        cmocka_unit_test(test_shipped_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
