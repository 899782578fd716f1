/* Decoder forward pass: against a naive double-precision reference written
 * from the Llama equations in this file, against the host's sequence path,
 * and (stories260K) against llama2.c's own greedy output; decoding with an
 * adapter (a low-rank update applied on the fly) against the reference run
 * on the merged weights. */
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
#include "../src/host/image_build.h"
#include "../src/host/quant.h"
#include "../src/host/seq.h"
#include "../src/host/train/params.h"
#include "testutil.h"
#include "tritlm/fed.h"
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"
#include "tritlm/tokenizer.h"

static double w(const tlm_model *m, tlm_role role, uint32_t layer, uint32_t r, uint32_t c)
{
    tlm_tensor t;
    tlm_model_tensor(m, role, layer, &t);
    return ((const float *)(const void *)t.data)[(size_t)r * t.cols + c];
}

/* Dense changes the reference adds to the model's matrices (tests of
 * adapters), by table index; NULL: none. */
#define REF_MAX_TENSORS 64u
static float *ref_delta[REF_MAX_TENSORS];

/* Row r of a matrix of any weight type, as floats, plus its change if any. */
static void ref_row(const tlm_model *m, tlm_role role, uint32_t l, uint32_t r, float *row)
{
    tlm_tensor t;
    uint32_t idx;
    tlm_model_tensor(m, role, l, &t);
    assert_int_equal(tlm_model_tensor_index(m, role, l, &idx), 0);
    tlm_wtype_get(t.wtype)->row_to_f32(row, &t, r);
    if (idx < REF_MAX_TENSORS && ref_delta[idx])
        for (uint32_t c = 0; c < t.cols; c++) row[c] += ref_delta[idx][(size_t)r * t.cols + c];
}

static void ref_matvec(const tlm_model *m, tlm_role role, uint32_t l, const double *x, double *out)
{
    tlm_tensor t;
    tlm_model_tensor(m, role, l, &t);
    float *row = malloc(t.cols * sizeof *row);
    for (uint32_t r = 0; r < t.rows; r++) {
        ref_row(m, role, l, r, row);
        double s = 0;
        for (uint32_t c = 0; c < t.cols; c++) s += (double)row[c] * x[c];
        out[r] = s;
    }
    free(row);
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
    float *erow = malloc(D * sizeof *erow);
    for (uint32_t t = 0; t < T; t++) {
        ref_row(m, TLM_ROLE_TOK_EMBED, 0, tokens[t], erow);
        for (uint32_t i = 0; i < D; i++) x[(size_t)t * D + i] = erow[i];
    }
    free(erow);
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
    assert_int_equal(tlm_runtime_init_flags(&rt, &m, 24, 4u, arena + 1, big, &err), TLM_ERR_ARG); /* unknown flag */
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

/* ---- adapters ---- */

static tlm_rand seeded(tlm_chacha *cc, uint64_t seed)
{
    tlm_rand r;
    tlm_chacha_seed(cc, seed);
    tlm_rand_init(&r, tlm_chacha_fill, cc);
    return r;
}

/* A low-rank update of m: rank-r changes of wq (layer 0), w1 (layer 0), w2
 * (the last layer), wv (the last layer), and the embedding, plus the
 * classifier when it is a matrix of its own, each about `size` times the
 * typical weight; written with the core's writer (int8 factors,
 * stochastic rounding). Sets ref_delta[] to the decoded dense changes.
 * Returns the message's size in *n (malloc'd). */
static uint8_t *make_adapter(const tlm_model *m, uint32_t rank, float size, uint64_t seed, size_t *n)
{
    const tlm_hparams *hp = &m->hp;
    const uint32_t L = hp->n_layers - 1u;
    const struct { tlm_role role; uint32_t layer; } which[] = {
        {TLM_ROLE_WQ, 0}, {TLM_ROLE_W1, 0}, {TLM_ROLE_W2, L}, {TLM_ROLE_WV, L}, {TLM_ROLE_TOK_EMBED, 0},
        {TLM_ROLE_CLASSIFIER, 0}};
    const size_t cap = 1u << 20;
    uint8_t *buf = malloc(cap);
    tlm_fed_writer w;
    tlm_fed_header h = {.round = 1, .client = 2, .base_crc = tlm_fed_model_id(m), .n_examples = 10};
    assert_int_equal(tlm_fed_begin(&w, buf, cap, &h, NULL), TLM_OK);
    uint64_t rs = seed;
    tlm_chacha cc;
    tlm_rand rng = seeded(&cc, seed);
    for (size_t k = 0; k < sizeof which / sizeof *which; k++) {
        if (which[k].role == TLM_ROLE_CLASSIFIER && hp->shared_classifier) continue;
        tlm_tensor t;
        tlm_model_tensor(m, which[k].role, which[k].layer, &t);
        float *b = malloc((size_t)t.rows * rank * sizeof *b), *a = malloc((size_t)rank * t.cols * sizeof *a);
        /* B A's entries have standard deviation about size * 0.1 (tu_build_tiny's weights are ~0.1) */
        const double sd = sqrt(size * 0.1 / sqrt((double)rank)) * sqrt(3.0);
        for (size_t i = 0; i < (size_t)t.rows * rank; i++) b[i] = (float)((2 * tu_uniform(&rs) - 1) * sd);
        for (size_t i = 0; i < (size_t)rank * t.cols; i++) a[i] = (float)((2 * tu_uniform(&rs) - 1) * sd);
        assert_int_equal(tlm_fed_add_lowrank(&w, which[k].role, which[k].layer, b, a, t.rows, t.cols, rank, &rng, NULL),
                         TLM_OK);
        free(b);
        free(a);
    }
    assert_int_equal(tlm_fed_finish(&w, n, NULL), TLM_OK);
    tlm_fed_info info;
    assert_int_equal(tlm_fed_validate(buf, *n, m, &info, NULL), TLM_OK);
    for (uint32_t i = 0; i < info.n_entries; i++) {
        tlm_fed_entry e;
        uint32_t idx;
        tlm_fed_entry_at(buf, i, &e);
        assert_int_equal(tlm_model_tensor_index(m, e.role, e.layer, &idx), 0);
        ref_delta[idx] = malloc((size_t)e.count * sizeof(float));
        tlm_fed_entry_decode(&e, ref_delta[idx]);
    }
    return buf;
}

static void free_deltas(void)
{
    for (uint32_t i = 0; i < REF_MAX_TENSORS; i++) {
        free(ref_delta[i]);
        ref_delta[i] = NULL;
    }
}

/* Logits of tokens[0..T) through the runtime (flags; with the adapter if
 * given), into out (T x V). */
static void run_tokens(const tlm_model *m, uint32_t flags, const uint8_t *ad, size_t an, const uint32_t *tokens,
                       uint32_t T, float *out)
{
    const size_t ab = tlm_runtime_arena_size_flags(m, T, flags);
    void *arena = malloc(ab);
    tlm_runtime rt;
    assert_int_equal(tlm_runtime_init_flags(&rt, m, T, flags, arena, ab, NULL), TLM_OK);
    if (ad) assert_int_equal(tlm_runtime_use_adapter(&rt, ad, an, NULL), TLM_OK);
    for (uint32_t t = 0; t < T; t++) {
        float *lg;
        assert_int_equal(tlm_runtime_forward(&rt, tokens[t], t, &lg), TLM_OK);
        memcpy(out + (size_t)t * m->hp.vocab_size, lg, m->hp.vocab_size * sizeof *lg);
    }
    free(arena);
}

/* fp32 models: decoding with an adapter gives the reference's logits for
 * the merged weights (W + the decoded B A), on the float path and with the
 * int8 KV cache, with a shared and a separate classifier (the embedding's
 * change then reaches the logits too). */
static void test_adapter_matches_merged(void **state)
{
    (void)state;
    const tu_tiny cfgs[] = {
        {.dim = 16, .hidden = 40, .layers = 2, .heads = 4, .kv_heads = 2, .seq_len = 24, .n_merges = 20, .shared = 0},
        {.dim = 24, .hidden = 36, .layers = 3, .heads = 3, .kv_heads = 3, .seq_len = 20, .n_merges = 5, .shared = 1}};
    for (size_t c = 0; c < 2; c++) {
        uint8_t *img;
        size_t bytes, an;
        tu_build_tiny(&cfgs[c], 40 + c, &img, &bytes);
        tlm_model m;
        assert_int_equal(tlm_model_open(&m, img, bytes, NULL), TLM_OK);
        const uint32_t T = cfgs[c].seq_len, V = m.hp.vocab_size;
        uint32_t tokens[64];
        uint64_t rs = 7 + c;
        for (uint32_t t = 0; t < T; t++) tokens[t] = (uint32_t)(tu_rand(&rs) % V);
        double *base = malloc((size_t)T * V * sizeof *base), *ref = malloc((size_t)T * V * sizeof *ref);
        double *ref8 = malloc((size_t)T * V * sizeof *ref8);
        ref_forward(&m, tokens, T, base, 0);
        uint8_t *ad = make_adapter(&m, 3, 0.5f, 100 + c, &an);
        ref_forward(&m, tokens, T, ref, 0);
        ref_forward(&m, tokens, T, ref8, 1);
        free_deltas();
        float *lg = malloc((size_t)T * V * sizeof *lg), *lg8 = malloc((size_t)T * V * sizeof *lg8);
        run_tokens(&m, TLM_RT_ADAPTER, ad, an, tokens, T, lg);
        run_tokens(&m, TLM_RT_ADAPTER | TLM_RT_KV_INT8, ad, an, tokens, T, lg8);
        double worst = 0, worst8 = 0, moved = 0, moved8 = 0;
        for (size_t i = 0; i < (size_t)T * V; i++) {
            worst = fmax(worst, fabs(lg[i] - ref[i]) / (1 + fabs(ref[i])));
            worst8 = fmax(worst8, fabs(lg8[i] - ref8[i]) / (1 + fabs(ref8[i])));
            moved8 = fmax(moved8, fabs(ref8[i] - ref[i]) / (1 + fabs(ref[i])));
            moved = fmax(moved, fabs(ref[i] - base[i]));
        }
        print_message("adapter on fp32 (%s classifier): logits moved by up to %.3f; worst error against the merged "
                      "reference %.2e, with the int8 KV cache %.2e (%.2e from the fp32 one)\n",
                      cfgs[c].shared ? "shared" : "separate", moved, worst, worst8, moved8);
        assert_true(moved > 0.5); /* the adapter does change the model */
        assert_true(worst < 1e-4);
        /* as above: a value on the other side of an int8 rounding boundary
         * moves a logit; larger logits here, so the bound is relative */
        assert_true(worst8 < 1e-2 && worst8 < moved8 / 3);
        free(lg);
        free(lg8);
        free(ad);
        free(base);
        free(ref);
        free(ref8);
        free(img);
    }
}

/* A ternary (t2) model: the integer path applies the adapter from the
 * int8 activations. Its effect on the logits (with minus without) must be
 * the reference's effect for the dequantized weights, up to what int8
 * activations change; detaching it gives the plain model's logits bit for
 * bit. */
static void test_adapter_on_ternary(void **state)
{
    (void)state;
    const tu_tiny cfg = {.dim = 32, .hidden = 48, .layers = 2, .heads = 4, .kv_heads = 2, .seq_len = 20, .n_merges = 8,
                         .shared = 0};
    uint8_t *img, *qimg;
    size_t bytes, qbytes, an;
    tu_build_tiny(&cfg, 51, &img, &bytes);
    tlm_model fm, m;
    assert_int_equal(tlm_model_open(&fm, img, bytes, NULL), TLM_OK);
    tlm_params p;
    tlm_vocab v;
    tlm_quant_cfg qc;
    tlm_quant_defaults(&qc);
    qc.pack = TLM_WTYPE_T2;
    assert_int_equal(tlm_params_from_model(&p, &fm, NULL), TLM_OK);
    assert_int_equal(tlm_vocab_from_model(&fm, &v, NULL), TLM_OK);
    assert_int_equal(tlm_quant_image(&p, &qc, &v, fm.bos_id, fm.eos_id, &qimg, &qbytes, NULL), TLM_OK);
    tlm_params_free(&p);
    tlm_vocab_free(&v);
    assert_int_equal(tlm_model_open(&m, qimg, qbytes, NULL), TLM_OK);
    tlm_tensor t;
    tlm_model_tensor(&m, TLM_ROLE_WQ, 0, &t);
    assert_int_equal(t.wtype, TLM_WTYPE_T2);
    const uint32_t T = cfg.seq_len, V = m.hp.vocab_size;
    uint32_t tokens[64];
    uint64_t rs = 3;
    for (uint32_t k = 0; k < T; k++) tokens[k] = (uint32_t)(tu_rand(&rs) % V);
    double *base = malloc((size_t)T * V * sizeof *base), *ref = malloc((size_t)T * V * sizeof *ref);
    ref_forward(&m, tokens, T, base, 0);
    uint8_t *ad = make_adapter(&m, 2, 0.5f, 77, &an);
    ref_forward(&m, tokens, T, ref, 0);
    free_deltas();
    float *plain = malloc((size_t)T * V * sizeof *plain), *with = malloc((size_t)T * V * sizeof *with);
    run_tokens(&m, 0, NULL, 0, tokens, T, plain);
    run_tokens(&m, TLM_RT_ADAPTER, ad, an, tokens, T, with);
    double moved = 0, off = 0;
    for (size_t i = 0; i < (size_t)T * V; i++) {
        moved = fmax(moved, fabs(ref[i] - base[i]));
        off = fmax(off, fabs((with[i] - plain[i]) - (ref[i] - base[i])));
    }
    print_message("adapter on t2: logits moved by up to %.3f; the integer path's move differs from the "
                  "reference's by at most %.4f\n", moved, off);
    assert_true(moved > 0.5);
    assert_true(off < 0.05 * moved);

    /* attach, fail to attach a damaged copy (the first stays), detach */
    const size_t ab = tlm_runtime_arena_size_flags(&m, T, TLM_RT_ADAPTER);
    void *arena = malloc(ab);
    tlm_runtime rt;
    assert_int_equal(tlm_runtime_init_flags(&rt, &m, T, TLM_RT_ADAPTER, arena, ab, NULL), TLM_OK);
    assert_int_equal(tlm_runtime_use_adapter(&rt, ad, an, NULL), TLM_OK);
    uint8_t *bad = malloc(an);
    memcpy(bad, ad, an);
    bad[an / 2] ^= 0x10;
    tlm_error err;
    assert_int_not_equal(tlm_runtime_use_adapter(&rt, bad, an, &err), TLM_OK);
    assert_int_not_equal(tlm_runtime_use_adapter(&rt, ad, an - 1, &err), TLM_OK); /* truncated */
    for (uint32_t k = 0; k < T; k++) {
        float *lg;
        assert_int_equal(tlm_runtime_forward(&rt, tokens[k], k, &lg), TLM_OK);
        assert_memory_equal(lg, with + (size_t)k * V, V * sizeof *lg);
    }
    assert_int_equal(tlm_runtime_use_adapter(&rt, NULL, 0, NULL), TLM_OK);
    for (uint32_t k = 0; k < T; k++) {
        float *lg;
        assert_int_equal(tlm_runtime_forward(&rt, tokens[k], k, &lg), TLM_OK);
        assert_memory_equal(lg, plain + (size_t)k * V, V * sizeof *lg);
    }
    /* made for the fp32 parent, not this image */
    free(ad);
    ad = make_adapter(&fm, 2, 0.5f, 78, &an);
    free_deltas();
    assert_int_not_equal(tlm_runtime_use_adapter(&rt, ad, an, &err), TLM_OK);
    print_message("refused, made for another model: %s\n", err.msg);
    free(bad);
    free(arena);
    free(ad);
    free(plain);
    free(with);
    free(base);
    free(ref);
    free(qimg);
    free(img);
}

/* What an adapter must be: room reserved at init, low-rank entries of
 * matrices only, ranks up to TLM_RT_MAX_ADAPTER_RANK. */
static void test_adapter_refused(void **state)
{
    (void)state;
    const tu_tiny cfg = {.dim = 72, .hidden = 80, .layers = 1, .heads = 4, .kv_heads = 4, .seq_len = 8, .n_merges = 0,
                         .shared = 1};
    uint8_t *img;
    size_t bytes, an;
    tu_build_tiny(&cfg, 61, &img, &bytes);
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, img, bytes, NULL), TLM_OK);
    uint8_t *ad = make_adapter(&m, 2, 0.5f, 9, &an);
    free_deltas();
    tlm_error err;
    const size_t ab = tlm_runtime_arena_size_flags(&m, 8, TLM_RT_ADAPTER);
    assert_true(ab >= tlm_runtime_arena_size(&m, 8) + 4u * m.n_tensors);
    void *arena = malloc(ab);
    tlm_runtime rt;
    assert_int_equal(tlm_runtime_init(&rt, &m, 8, arena, ab, NULL), TLM_OK);
    assert_int_equal(tlm_runtime_use_adapter(&rt, ad, an, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "TLM_RT_ADAPTER"));
    assert_int_equal(tlm_runtime_init_flags(&rt, &m, 8, TLM_RT_ADAPTER, arena, ab, NULL), TLM_OK);
    assert_int_equal(tlm_runtime_use_adapter(&rt, ad, an, &err), TLM_OK);

    uint8_t buf[1u << 16];
    tlm_fed_writer w;
    tlm_fed_header h = {.base_crc = tlm_fed_model_id(&m), .n_examples = 1};
    size_t n;
    tlm_chacha cc;
    tlm_rand rng = seeded(&cc, 5);
    /* a dense entry (the attention norm's gains, fp32) */
    float gains[72];
    for (int i = 0; i < 72; i++) gains[i] = 0.01f * (float)i;
    assert_int_equal(tlm_fed_begin(&w, buf, sizeof buf, &h, NULL), TLM_OK);
    assert_int_equal(tlm_fed_add(&w, TLM_ROLE_ATTN_NORM, 0, TLM_FED_F32, gains, 72, NULL, NULL), TLM_OK);
    assert_int_equal(tlm_fed_finish(&w, &n, NULL), TLM_OK);
    assert_int_equal(tlm_runtime_use_adapter(&rt, buf, n, &err), TLM_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "not a low-rank change"));
    assert_int_equal(tlm_runtime_adapter_check(&m, buf, n, &err), TLM_ERR_UNSUPPORTED);
    /* rank 65 of a 72 x 72 matrix: a valid update, above the runtime's limit */
    const uint32_t r = TLM_RT_MAX_ADAPTER_RANK + 1u;
    float *b = calloc((size_t)72 * r, sizeof *b), *a = calloc((size_t)r * 72, sizeof *a);
    for (uint32_t i = 0; i < 72 * r; i++) b[i] = a[i] = (float)((i * 37u) % 11u) - 5.0f;
    assert_int_equal(tlm_fed_begin(&w, buf, sizeof buf, &h, NULL), TLM_OK);
    assert_int_equal(tlm_fed_add_lowrank(&w, TLM_ROLE_WO, 0, b, a, 72, 72, r, &rng, NULL), TLM_OK);
    assert_int_equal(tlm_fed_finish(&w, &n, NULL), TLM_OK);
    assert_int_equal(tlm_fed_validate(buf, n, &m, NULL, NULL), TLM_OK);
    assert_int_equal(tlm_runtime_use_adapter(&rt, buf, n, &err), TLM_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "rank 65"));
    /* the shared classifier named besides the embedding: one matrix changed twice */
    {
        float *eb = calloc((size_t)m.hp.vocab_size * 2u, sizeof *eb), *ea = calloc(2u * 72u, sizeof *ea);
        for (uint32_t i = 0; i < m.hp.vocab_size * 2u; i++) eb[i] = 0.01f * (float)(i % 7u);
        for (uint32_t i = 0; i < 2u * 72u; i++) ea[i] = 0.01f * (float)(i % 5u);
        assert_int_equal(tlm_fed_begin(&w, buf, sizeof buf, &h, NULL), TLM_OK);
        assert_int_equal(tlm_fed_add_lowrank(&w, TLM_ROLE_TOK_EMBED, 0, eb, ea, m.hp.vocab_size, 72, 2, &rng, NULL),
                         TLM_OK);
        assert_int_equal(tlm_fed_add_lowrank(&w, TLM_ROLE_CLASSIFIER, 0, eb, ea, m.hp.vocab_size, 72, 2, &rng, NULL),
                         TLM_OK);
        assert_int_equal(tlm_fed_finish(&w, &n, NULL), TLM_OK);
        assert_int_equal(tlm_fed_validate(buf, n, &m, NULL, NULL), TLM_OK); /* the message format allows it */
        assert_int_equal(tlm_runtime_use_adapter(&rt, buf, n, &err), TLM_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "the same matrix"));
        free(eb);
        free(ea);
    }
    /* an update with no entry */
    assert_int_equal(tlm_fed_begin(&w, buf, sizeof buf, &h, NULL), TLM_OK);
    assert_int_equal(tlm_fed_finish(&w, &n, NULL), TLM_OK);
    assert_int_not_equal(tlm_runtime_use_adapter(&rt, buf, n, &err), TLM_OK);
    free(a);
    free(b);
    free(arena);
    free(ad);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_arena),
        cmocka_unit_test(test_stories260k_greedy),
        cmocka_unit_test(test_adapter_matches_merged),
        cmocka_unit_test(test_adapter_on_ternary),
        cmocka_unit_test(test_adapter_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
