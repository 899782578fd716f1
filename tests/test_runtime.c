/* Decoder forward pass: against a naive double-precision reference written
 * from the Llama equations in this file, against the host's sequence path,
 * and (stories260K) against llama2.c's own greedy output. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/host/fileio.h"
#include "../src/host/seq.h"
#include "testutil.h"
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"
#include "tritlm/tokenizer.h"

static double w(const tlm_model *m, tlm_role role, uint32_t layer, uint32_t r, uint32_t c)
{
    tlm_tensor t;
    tlm_model_tensor(m, role, layer, &t);
    return ((const float *)(const void *)t.data)[(size_t)r * t.cols + c];
}

static void ref_matvec(const tlm_model *m, tlm_role role, uint32_t l, const double *x, double *out)
{
    tlm_tensor t;
    tlm_model_tensor(m, role, l, &t);
    for (uint32_t r = 0; r < t.rows; r++) {
        double s = 0;
        for (uint32_t c = 0; c < t.cols; c++) s += w(m, role, l, r, c) * x[c];
        out[r] = s;
    }
}

static void ref_rmsnorm(const tlm_model *m, tlm_role role, uint32_t l, const double *x, double *out)
{
    uint32_t n = m->hp.dim;
    double ss = 0;
    for (uint32_t i = 0; i < n; i++) ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + m->hp.norm_eps);
    for (uint32_t i = 0; i < n; i++) out[i] = x[i] * inv * w(m, role, l, 0, i);
}

/* Logits for every position of `tokens`, in double, with full recomputation
 * (no cache): x_t -> layers -> classifier. */
/* int8 rounding of n values with a power-of-two scale 2^-e, e the largest
 * integer with max|x| * 2^e < 128, half away from zero: how the int8 KV
 * cache stores keys and values (per kv head) and query heads */
static void ref_round_q8(double *x, uint32_t n)
{
    double amax = 0;
    for (uint32_t i = 0; i < n; i++) amax = fmax(amax, fabs(x[i]));
    if (amax == 0) return;
    int e = 0;
    while (amax * ldexp(1.0, e) >= 128.0) e--;
    while (amax * ldexp(1.0, e + 1) < 128.0) e++;
    const double s = ldexp(1.0, -e);
    for (uint32_t i = 0; i < n; i++) {
        double r = x[i] / s;
        r = r < 0 ? -floor(-r + 0.5) : floor(r + 0.5);
        x[i] = fmax(-127, fmin(127, r)) * s;
    }
}

static void ref_forward(const tlm_model *m, const uint32_t *tokens, uint32_t T, double *logits, int kv8)
{
    const tlm_hparams *hp = &m->hp;
    const uint32_t D = hp->dim, H = hp->hidden_dim, hs = D / hp->n_heads, kvd = tlm_hparams_kv_dim(hp);
    double *x = calloc((size_t)T * D, 8), *xn = calloc(D, 8), *q = calloc((size_t)T * D, 8);
    double *k = calloc((size_t)T * kvd, 8), *v = calloc((size_t)T * kvd, 8), *o = calloc((size_t)T * D, 8);
    double *tmp = calloc(D > H ? D : H, 8), *h1 = calloc(H, 8), *h3 = calloc(H, 8), *att = calloc(T, 8);
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t i = 0; i < D; i++) x[(size_t)t * D + i] = w(m, TLM_ROLE_TOK_EMBED, 0, tokens[t], i);
    for (uint32_t l = 0; l < hp->n_layers; l++) {
        for (uint32_t t = 0; t < T; t++) {
            ref_rmsnorm(m, TLM_ROLE_ATTN_NORM, l, x + (size_t)t * D, xn);
            ref_matvec(m, TLM_ROLE_WQ, l, xn, q + (size_t)t * D);
            ref_matvec(m, TLM_ROLE_WK, l, xn, k + (size_t)t * kvd);
            ref_matvec(m, TLM_ROLE_WV, l, xn, v + (size_t)t * kvd);
            /* rotate pairs (2j, 2j+1) of each head by t * theta^(-2j/hs) */
            for (uint32_t i = 0; i < D; i += 2) {
                uint32_t j = i % hs;
                double ang = t * pow(hp->rope_theta, -(double)j / hs), c = cos(ang), s = sin(ang);
                double *qq = q + (size_t)t * D + i;
                double a = qq[0], b = qq[1];
                qq[0] = a * c - b * s;
                qq[1] = a * s + b * c;
                if (i < kvd) {
                    double *kk = k + (size_t)t * kvd + i;
                    a = kk[0];
                    b = kk[1];
                    kk[0] = a * c - b * s;
                    kk[1] = a * s + b * c;
                }
            }
        }
        if (kv8)
            for (uint32_t t = 0; t < T; t++) {
                for (uint32_t h = 0; h < hp->n_kv_heads; h++) {
                    ref_round_q8(k + (size_t)t * kvd + h * hs, hs);
                    ref_round_q8(v + (size_t)t * kvd + h * hs, hs);
                }
                for (uint32_t h = 0; h < hp->n_heads; h++) ref_round_q8(q + (size_t)t * D + h * hs, hs);
            }
        for (uint32_t t = 0; t < T; t++)
            for (uint32_t h = 0; h < hp->n_heads; h++) {
                uint32_t kh = h / (hp->n_heads / hp->n_kv_heads);
                double mx = -1e300, sum = 0;
                for (uint32_t s = 0; s <= t; s++) {
                    double d = 0;
                    for (uint32_t i = 0; i < hs; i++) d += q[(size_t)t * D + h * hs + i] * k[(size_t)s * kvd + kh * hs + i];
                    att[s] = d / sqrt((double)hs);
                    mx = fmax(mx, att[s]);
                }
                for (uint32_t s = 0; s <= t; s++) sum += att[s] = exp(att[s] - mx);
                for (uint32_t i = 0; i < hs; i++) {
                    double acc = 0;
                    for (uint32_t s = 0; s <= t; s++) acc += att[s] / sum * v[(size_t)s * kvd + kh * hs + i];
                    o[(size_t)t * D + h * hs + i] = acc;
                }
            }
        for (uint32_t t = 0; t < T; t++) {
            double *xt = x + (size_t)t * D;
            ref_matvec(m, TLM_ROLE_WO, l, o + (size_t)t * D, tmp);
            for (uint32_t i = 0; i < D; i++) xt[i] += tmp[i];
            ref_rmsnorm(m, TLM_ROLE_FFN_NORM, l, xt, xn);
            ref_matvec(m, TLM_ROLE_W1, l, xn, h1);
            ref_matvec(m, TLM_ROLE_W3, l, xn, h3);
            for (uint32_t i = 0; i < H; i++) h1[i] = h1[i] / (1 + exp(-h1[i])) * h3[i];
            ref_matvec(m, TLM_ROLE_W2, l, h1, tmp);
            for (uint32_t i = 0; i < D; i++) xt[i] += tmp[i];
        }
    }
    for (uint32_t t = 0; t < T; t++) {
        ref_rmsnorm(m, TLM_ROLE_FINAL_NORM, 0, x + (size_t)t * D, xn);
        ref_matvec(m, TLM_ROLE_CLASSIFIER, 0, xn, logits + (size_t)t * hp->vocab_size);
    }
    free(x); free(xn); free(q); free(k); free(v); free(o); free(tmp); free(h1); free(h3); free(att);
}

static void check_model_against_reference(const tu_tiny *cfg, uint64_t seed)
{
    uint8_t *img;
    size_t bytes;
    tu_build_tiny(cfg, seed, &img, &bytes);
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, img, bytes, NULL), TLM_OK);
    const uint32_t T = cfg->seq_len, V = m.hp.vocab_size;
    uint32_t *tokens = malloc((size_t)T * sizeof *tokens);
    uint64_t rng = seed;
    for (uint32_t t = 0; t < T; t++) tokens[t] = (uint32_t)(tu_rand(&rng) % V);
    double *ref = malloc((size_t)T * V * sizeof *ref);
    ref_forward(&m, tokens, T, ref, 0);
    double *ref8 = malloc((size_t)T * V * sizeof *ref8);
    ref_forward(&m, tokens, T, ref8, 1);

    size_t ab = tlm_runtime_arena_size(&m, T);
    void *arena = malloc(ab);
    tlm_runtime rt;
    assert_int_equal(tlm_runtime_init(&rt, &m, T, arena, ab, NULL), TLM_OK);
    size_t ab8 = tlm_runtime_arena_size_flags(&m, T, TLM_RT_KV_INT8);
    assert_true(ab8 > 0);
    void *arena8 = malloc(ab8);
    tlm_runtime rt8;
    assert_int_equal(tlm_runtime_init_flags(&rt8, &m, T, TLM_RT_KV_INT8, arena8, ab8, NULL), TLM_OK);
    tlm_seq_ws ws;
    assert_int_equal(tlm_seq_ws_init(&ws, &m, T, NULL), TLM_OK);
    tlm_seq_forward(&m, tokens, T, &ws);
    double worst_rt = 0, worst_seq = 0, worst_8 = 0, moved_8 = 0;
    for (uint32_t t = 0; t < T; t++) {
        float *lg;
        assert_int_equal(tlm_runtime_forward(&rt8, tokens[t], t, &lg), TLM_OK);
        for (uint32_t i = 0; i < V; i++) {
            const double r8 = ref8[(size_t)t * V + i], r = ref[(size_t)t * V + i];
            worst_8 = fmax(worst_8, fabs(lg[i] - r8) / (1 + fabs(r8)));
            moved_8 = fmax(moved_8, fabs(lg[i] - r) / (1 + fabs(r)));
        }
        assert_int_equal(tlm_runtime_forward(&rt, tokens[t], t, &lg), TLM_OK);
        for (uint32_t i = 0; i < V; i++) {
            double r = ref[(size_t)t * V + i];
            worst_rt = fmax(worst_rt, fabs(lg[i] - r) / (1 + fabs(r)));
            worst_seq = fmax(worst_seq, fabs(ws.logits[(size_t)t * V + i] - r) / (1 + fabs(r)));
        }
    }
    print_message("dim %u layers %u heads %u/%u %s: worst error decoder %.2e, sequence %.2e\n", cfg->dim, cfg->layers,
                  cfg->heads, cfg->kv_heads, cfg->shared ? "shared" : "separate", worst_rt, worst_seq);
    print_message("  int8 KV cache: worst error against the int8-rounded reference %.2e (%.2e from the fp32 one)\n",
                  worst_8, moved_8);
    assert_true(worst_rt < 1e-4);
    assert_true(worst_seq < 1e-4);
    /* a value the float forward puts a hair on the other side of an int8
     * rounding boundary than the double reference moves a logit by ~1e-3:
     * allow that, but far below the int8 cache's own effect */
    assert_true(worst_8 < 3e-3);
    assert_true(worst_8 < moved_8 / 10);
    tlm_seq_ws_free(&ws);
    free(arena);
    free(arena8);
    free(ref8);
    free(ref);
    free(tokens);
    free(img);
}

static void test_forward_matches_reference(void **state)
{
    (void)state;
    tu_tiny a = {.dim = 16, .hidden = 40, .layers = 2, .heads = 4, .kv_heads = 2, .seq_len = 24, .n_merges = 20, .shared = 0};
    check_model_against_reference(&a, 1);
    tu_tiny b = {.dim = 24, .hidden = 36, .layers = 3, .heads = 3, .kv_heads = 3, .seq_len = 40, .n_merges = 5, .shared = 1};
    check_model_against_reference(&b, 2);
    tu_tiny c = {.dim = 32, .hidden = 20, .layers = 1, .heads = 8, .kv_heads = 1, .seq_len = 33, .n_merges = 0, .shared = 0};
    check_model_against_reference(&c, 3);
    /* past 512 positions the int8 cache's value sums go from int32 to int64 */
    tu_tiny d = {.dim = 16, .hidden = 16, .layers = 1, .heads = 2, .kv_heads = 1, .seq_len = 600, .n_merges = 0, .shared = 0};
    check_model_against_reference(&d, 4);
}

static void test_arena(void **state)
{
    (void)state;
    uint8_t *img;
    size_t bytes;
    tu_tiny a = {.dim = 16, .hidden = 40, .layers = 2, .heads = 4, .kv_heads = 2, .seq_len = 24, .n_merges = 20, .shared = 0};
    tu_build_tiny(&a, 9, &img, &bytes);
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, img, bytes, NULL), TLM_OK);
    assert_int_equal(tlm_runtime_arena_size(&m, 0), 0);
    assert_int_equal(tlm_runtime_arena_size(&m, 25), 0);
    size_t small = tlm_runtime_arena_size(&m, 4), big = tlm_runtime_arena_size(&m, 24);
    assert_true(small > 0 && big > small);
    /* KV cache: 2 layers * 2 (k, v) * ctx * kv_dim 8 floats, plus the rest */
    assert_true(big - small >= 2u * 2u * 20u * 8u * 4u);
    uint8_t *arena = malloc(big + 1);
    tlm_runtime rt;
    tlm_error err;
    assert_int_equal(tlm_runtime_init(&rt, &m, 24, arena + 1, big - 1, &err), TLM_ERR_ARENA);
    assert_non_null(strstr(err.msg, "needs"));
    assert_int_equal(tlm_runtime_init(&rt, &m, 24, arena + 1, big, &err), TLM_OK); /* any alignment */
    assert_int_equal(tlm_runtime_init_flags(&rt, &m, 24, 2u, arena + 1, big, &err), TLM_ERR_ARG); /* unknown flag */
    float *lg;
    assert_int_equal(tlm_runtime_forward(&rt, 0, 24, &lg), TLM_ERR_ARG);
    assert_int_equal(tlm_runtime_forward(&rt, m.hp.vocab_size, 0, &lg), TLM_ERR_ARG);
    free(arena);
    free(img);
}

/* In-process conformance: the decoder, tokenizer and greedy sampler give
 * llama2.c's reference text. */
static void test_stories260k_greedy(void **state)
{
    (void)state;
    uint8_t *img, *expect;
    size_t bytes, elen;
    tu_import_stories260k(&img, &bytes);
    assert_int_equal(tlm_read_file(tu_data("llama2c/stories260K_greedy_200steps_expected.txt"), &expect, &elen, NULL), TLM_OK);
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, img, bytes, NULL), TLM_OK);
    size_t ab = tlm_runtime_arena_size(&m, 200);
    /* the int8 cache: 1 byte per key and value element plus 2 bytes of
     * exponents per kv head, instead of 8 bytes per element pair */
    const size_t kv_elems = (size_t)m.hp.n_layers * 256u * tlm_hparams_kv_dim(&m.hp);
    const size_t kv_f32 = tlm_runtime_arena_size(&m, 256), kv_i8 = tlm_runtime_arena_size_flags(&m, 256, TLM_RT_KV_INT8);
    assert_true(kv_f32 - kv_i8 >= kv_elems * 6u - (size_t)m.hp.n_layers * 256u * m.hp.n_kv_heads * 2u - 4096u);
    void *arena = malloc(ab);
    tlm_runtime rt;
    assert_int_equal(tlm_runtime_init(&rt, &m, 200, arena, ab, NULL), TLM_OK);
    char *out = calloc(1, 8192);
    size_t n = 0;
    uint32_t tok = m.bos_id;
    for (uint32_t pos = 0; pos < 200; pos++) {
        float *lg;
        assert_int_equal(tlm_runtime_forward(&rt, tok, pos, &lg), TLM_OK);
        uint32_t next = tlm_argmax(lg, m.hp.vocab_size);
        if (next == m.bos_id) break;
        const uint8_t *p;
        size_t pl = tlm_decode_piece(&m, tok, next, &p);
        memcpy(out + n, p, pl);
        n += pl;
        tok = next;
    }
    out[n++] = '\n';
    assert_int_equal(n, elen);
    assert_memory_equal(out, expect, elen);
    free(out);
    free(arena);
    free(expect);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_arena),
        cmocka_unit_test(test_stories260k_greedy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
