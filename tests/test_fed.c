/* Federated update messages: exact fp32 round trips, int8 and ternary
 * deltas unbiased (mean of many encodings against the analytic variance),
 * validation against a model's tensors, and every damaged or hostile
 * message refused. Low-rank entries: the factorization against a matrix
 * of known singular values, the decoded product unbiased, damage refused. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/host/fedavg.h"
#include "../src/host/lowrank.h"
#include "testutil.h"
#include "tritlm/fed.h"

static uint8_t *tiny_img;
static size_t tiny_bytes;
static tlm_model tiny;

static int setup(void **state)
{
    (void)state;
    tu_tiny cfg = {.dim = 16, .hidden = 24, .layers = 2, .heads = 2, .kv_heads = 1, .seq_len = 16, .n_merges = 10, .shared = 1};
    tu_build_tiny(&cfg, 3, &tiny_img, &tiny_bytes);
    return tlm_model_open(&tiny, tiny_img, tiny_bytes, NULL) == TLM_OK ? 0 : -1;
}
static int teardown(void **state)
{
    (void)state;
    free(tiny_img);
    return 0;
}

/* The format's checksum, computed here from its definition (CRC-32 of the
 * whole message with the CRC field as zero), to reseal hand-made damage. */
static void reseal(uint8_t *b, size_t n)
{
    uint8_t *c = malloc(n);
    memcpy(c, b, n);
    memset(c + 12, 0, 4);
    const uint32_t crc = tlm_crc32(0, c, n);
    for (int i = 0; i < 4; i++) b[12 + i] = (uint8_t)(crc >> (8 * i));
    free(c);
}

static tlm_rand seeded(tlm_chacha *cc, uint64_t seed)
{
    tlm_rand r;
    tlm_chacha_seed(cc, seed);
    tlm_rand_init(&r, tlm_chacha_fill, cc);
    return r;
}

/* An update of the tiny model: wq of layer 1 (fp32), the embedding (int8),
 * w2 of layer 0 (ternary). */
static size_t make_update(uint8_t *buf, size_t cap, float **vals, uint32_t *counts)
{
    static const tlm_role roles[3] = {TLM_ROLE_WQ, TLM_ROLE_TOK_EMBED, TLM_ROLE_W2};
    static const uint32_t layers[3] = {1, 0, 0};
    static const tlm_fed_enc encs[3] = {TLM_FED_F32, TLM_FED_I8, TLM_FED_T2};
    tlm_fed_header h = {7, 42, tlm_fed_model_id(&tiny), 1234};
    tlm_fed_writer w;
    tlm_chacha cc;
    tlm_rand r = seeded(&cc, 9);
    assert_int_equal(tlm_fed_begin(&w, buf, cap, &h, NULL), TLM_OK);
    uint64_t s = 5;
    for (int k = 0; k < 3; k++) {
        tlm_tensor t;
        assert_int_equal(tlm_model_tensor(&tiny, roles[k], layers[k], &t), 0);
        counts[k] = t.rows * t.cols;
        vals[k] = malloc(counts[k] * sizeof(float));
        for (uint32_t i = 0; i < counts[k]; i++) vals[k][i] = (float)(tu_rand(&s) % 2001) * 1e-3f - 1.0f;
        assert_int_equal(tlm_fed_add(&w, roles[k], layers[k], encs[k], vals[k], counts[k], &r, NULL), TLM_OK);
    }
    size_t n;
    assert_int_equal(tlm_fed_finish(&w, &n, NULL), TLM_OK);
    return n;
}

static void test_round_trip(void **state)
{
    (void)state;
    static uint8_t buf[1 << 16];
    float *v[3];
    uint32_t cnt[3];
    const size_t n = make_update(buf, sizeof buf, v, cnt);
    size_t want = TLM_FED_HEADER_BYTES;
    want += TLM_FED_ENTRY_BYTES + 4u * cnt[0];
    want += TLM_FED_ENTRY_BYTES + ((cnt[1] + 3u) & ~3u);
    want += TLM_FED_ENTRY_BYTES + (((cnt[2] + 3u) / 4u + 3u) & ~3u);
    assert_int_equal(n, want);
    tlm_fed_info info;
    tlm_error err;
    if (tlm_fed_validate(buf, n, &tiny, &info, &err)) fail_msg("%s", err.msg);
    assert_int_equal(info.h.round, 7);
    assert_int_equal(info.h.client, 42);
    assert_int_equal(info.h.n_examples, 1234);
    assert_int_equal(info.n_entries, 3);
    for (uint32_t k = 0; k < 3; k++) {
        tlm_fed_entry e;
        tlm_fed_entry_at(buf, k, &e);
        assert_int_equal(e.count, cnt[k]);
        float *out = malloc(e.count * sizeof(float));
        tlm_fed_entry_decode(&e, out);
        float amax = 0;
        for (uint32_t i = 0; i < e.count; i++) amax = fmaxf(amax, fabsf(v[k][i]));
        for (uint32_t i = 0; i < e.count; i++) {
            if (k == 0) assert_true(out[i] == v[k][i]); /* fp32: exact */
            /* int8: within one step of amax / 127; ternary: 0 or +-amax with x's sign */
            if (k == 1) assert_true(fabsf(out[i] - v[k][i]) <= amax / 127.0f * 1.0001f);
            if (k == 2) assert_true(out[i] == 0.0f || (out[i] == copysignf(amax, v[k][i])));
        }
        free(out);
        free(v[k]);
    }
    assert_int_equal(tlm_fed_validate(buf, n, NULL, NULL, NULL), TLM_OK); /* without a model: format only */
}

/* The mean of N independent encodings of x against x: each element's
 * z-score uses the analytic variance of its rounding (ternary s|x| - x^2;
 * int8 step^2 f (1 - f) for fractional part f). */
static void test_unbiased(void **state)
{
    (void)state;
    enum { C = 48, N = 3000 };
    float x[C];
    for (int i = 0; i < C; i++) x[i] = (float)((i * 37) % 23 - 11) * 0.013f + (i == 5 ? 0.5f : 0.0f);
    float amax = 0;
    for (int i = 0; i < C; i++) amax = fmaxf(amax, fabsf(x[i]));
    static uint8_t buf[1024];
    for (int enc = TLM_FED_I8; enc <= TLM_FED_T2; enc++) {
        double sum[C] = {0};
        tlm_chacha cc;
        tlm_rand r = seeded(&cc, 100 + (uint64_t)enc);
        for (int t = 0; t < N; t++) {
            tlm_fed_writer w;
            tlm_fed_header h = {0, 0, 0, 1};
            size_t n;
            assert_int_equal(tlm_fed_begin(&w, buf, sizeof buf, &h, NULL), TLM_OK);
            assert_int_equal(tlm_fed_add(&w, TLM_ROLE_WQ, 0, (tlm_fed_enc)enc, x, C, &r, NULL), TLM_OK);
            assert_int_equal(tlm_fed_finish(&w, &n, NULL), TLM_OK);
            tlm_fed_entry e;
            tlm_fed_entry_at(buf, 0, &e);
            float out[C];
            tlm_fed_entry_decode(&e, out);
            for (int i = 0; i < C; i++) sum[i] += out[i];
        }
        double worst = 0;
        for (int i = 0; i < C; i++) {
            double var;
            if (enc == TLM_FED_T2) {
                var = (double)amax * fabs(x[i]) - (double)x[i] * x[i];
            } else {
                const double step = amax / 127.0, v = x[i] / step, f = v - floor(v);
                var = step * step * f * (1 - f);
            }
            const double mean = sum[i] / N;
            if (var < 1e-12) {
                assert_true(fabs(mean - x[i]) < 1e-6); /* deterministic: exact */
                continue;
            }
            worst = fmax(worst, fabs(mean - x[i]) / sqrt(var / N));
        }
        print_message("%s: largest |z| of %d means over %d encodings: %.2f\n", enc == TLM_FED_I8 ? "int8" : "ternary", C, N,
                      worst);
        assert_true(worst < 4.5); /* 48 elements: P(any |z| > 4.5) < 4e-4 */
    }
}

static void test_validation_against_model(void **state)
{
    (void)state;
    static uint8_t buf[1 << 16];
    float v[64] = {0};
    tlm_fed_writer w;
    tlm_error err;
    size_t n;
    tlm_tensor t;
    assert_int_equal(tlm_model_tensor(&tiny, TLM_ROLE_WK, 0, &t), 0);
    enum { BIG = 1024 };
    assert_true((size_t)t.rows * t.cols <= BIG);
    float *big = calloc(BIG, sizeof(float)); /* values for every entry below */
    /* another model's update */
    tlm_fed_header h = {1, 1, tlm_fed_model_id(&tiny) ^ 1u, 1};
    assert_int_equal(tlm_fed_begin(&w, buf, sizeof buf, &h, NULL), TLM_OK);
    assert_int_equal(tlm_fed_finish(&w, &n, NULL), TLM_OK);
    assert_int_not_equal(tlm_fed_validate(buf, n, &tiny, NULL, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "another model"));
    h.base_crc = tlm_fed_model_id(&tiny);
    /* a tensor the model does not have, a wrong size, the same tensor twice */
    const struct {
        tlm_role role;
        uint32_t layer, count;
        int twice;
        const char *msg;
    } bad[] = {
        {TLM_ROLE_WQ, 2, 256, 0, "no tensor"},
        {TLM_ROLE_WK, 0, 64, 0, "values for a tensor"},
        {TLM_ROLE_WK, 0, 0, 1, "same tensor"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        const uint32_t count = bad[k].count ? bad[k].count : t.rows * t.cols;
        assert_int_equal(tlm_fed_begin(&w, buf, sizeof buf, &h, NULL), TLM_OK);
        for (int r = 0; r <= bad[k].twice; r++)
            assert_int_equal(tlm_fed_add(&w, bad[k].role, bad[k].layer, TLM_FED_F32, count <= 64 ? v : big, count, NULL, NULL),
                             TLM_OK);
        assert_int_equal(tlm_fed_finish(&w, &n, NULL), TLM_OK);
        assert_int_equal(tlm_fed_validate(buf, n, NULL, NULL, NULL), bad[k].twice ? TLM_ERR_TENSOR : TLM_OK);
        assert_int_equal(tlm_fed_validate(buf, n, &tiny, NULL, &err), TLM_ERR_TENSOR);
        assert_non_null(strstr(err.msg, bad[k].msg));
    }
    free(big);
    /* the writer's own refusals */
    uint8_t small[TLM_FED_HEADER_BYTES + 20];
    assert_int_equal(tlm_fed_begin(&w, small, sizeof small, &h, NULL), TLM_OK);
    assert_int_equal(tlm_fed_add(&w, TLM_ROLE_WQ, 0, TLM_FED_F32, v, 64, NULL, &err), TLM_ERR_TRUNCATED);
    assert_int_equal(tlm_fed_begin(&w, buf, sizeof buf, &h, NULL), TLM_OK);
    assert_int_equal(tlm_fed_add(&w, TLM_ROLE_WQ, 0, TLM_FED_T2, v, 64, NULL, &err), TLM_ERR_ARG); /* no random source */
    v[3] = NAN;
    assert_int_equal(tlm_fed_add(&w, TLM_ROLE_WQ, 0, TLM_FED_F32, v, 64, NULL, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "not finite"));
}

/* Every single-byte change and every truncation is refused; so is damage
 * with a valid checksum in each field the format constrains. */
static void test_damage_refused(void **state)
{
    (void)state;
    static uint8_t buf[1 << 16], copy[1 << 16];
    float *v[3];
    uint32_t cnt[3];
    const size_t n = make_update(buf, sizeof buf, v, cnt);
    for (int k = 0; k < 3; k++) free(v[k]);
    for (size_t i = 0; i < n; i++) {
        memcpy(copy, buf, n);
        copy[i] ^= (uint8_t)(1u + i % 255u);
        assert_int_not_equal(tlm_fed_validate(copy, n, &tiny, NULL, NULL), TLM_OK);
    }
    for (size_t len = 0; len < n; len += 1 + len / 16) assert_int_not_equal(tlm_fed_validate(buf, len, &tiny, NULL, NULL), TLM_OK);
    assert_int_not_equal(tlm_fed_validate(NULL, 0, NULL, NULL, NULL), TLM_OK);
    /* resealed: offsets of the entries (fp32 wq first, int8 embedding, ternary w2) */
    const size_t e0 = TLM_FED_HEADER_BYTES, e1 = e0 + TLM_FED_ENTRY_BYTES + 4u * cnt[0];
    const size_t e2 = e1 + TLM_FED_ENTRY_BYTES + ((cnt[1] + 3u) & ~3u);
    const struct {
        size_t at;
        uint8_t value;
        tlm_status st;
    } edits[] = {
        {4, 2, TLM_ERR_VERSION},                          /* version 2 */
        {36, 1, TLM_ERR_TENSOR},                          /* reserved header word */
        {e0 + 4, 7, TLM_ERR_TENSOR},                      /* unknown encoding */
        {e0 + 5, 1, TLM_ERR_TENSOR},                      /* reserved entry byte */
        {e0 + 0, 0, TLM_ERR_TENSOR},                      /* role 0 */
        {e0 + TLM_FED_ENTRY_BYTES + 3, 0x7F, TLM_ERR_TENSOR}, /* fp32 value: exponent all ones (NaN/inf) */
        {e1 + 15, 0xFF, TLM_ERR_TENSOR},                  /* int8 scale NaN */
        {e1 + 15, 0x80, TLM_ERR_TENSOR},                  /* int8 scale negative */
        {e1 + TLM_FED_ENTRY_BYTES, 0x80, TLM_ERR_TENSOR}, /* int8 -128 */
        {e2 + TLM_FED_ENTRY_BYTES, 0x03, TLM_ERR_TENSOR}, /* ternary code 3 */
        {e0 + 12, 1, TLM_ERR_TENSOR},                     /* an fp32 entry with a scale */
        {32, 9, TLM_ERR_RANGE},                           /* more entries than fit */
    };
    for (size_t k = 0; k < sizeof edits / sizeof edits[0]; k++) {
        memcpy(copy, buf, n);
        if (edits[k].at == e0 + TLM_FED_ENTRY_BYTES + 3) copy[edits[k].at - 1] |= 0x80; /* and the exponent's low bit */
        copy[edits[k].at] = edits[k].value;
        reseal(copy, n);
        tlm_error err;
        assert_int_equal(tlm_fed_validate(copy, n, &tiny, NULL, &err), edits[k].st);
        assert_true(strlen(err.msg) > 0);
    }
    /* an extra byte after the last entry (resealed, length updated) */
    memcpy(copy, buf, n);
    copy[n] = 0;
    for (int i = 0; i < 4; i++) copy[8 + i] = (uint8_t)((n + 1) >> (8 * i));
    reseal(copy, n + 1);
    assert_int_equal(tlm_fed_validate(copy, n + 1, &tiny, NULL, NULL), TLM_ERR_RANGE);
}

/* The server's average against one computed here in double: two fp32
 * updates weighted 100 and 300, an update of another model left out
 * without a trace, and clipping to an L2 norm. */
static void test_fedavg(void **state)
{
    (void)state;
    tlm_params g, l1, l2;
    assert_int_equal(tlm_params_from_model(&g, &tiny, NULL), TLM_OK);
    assert_int_equal(tlm_params_from_model(&l1, &tiny, NULL), TLM_OK);
    assert_int_equal(tlm_params_from_model(&l2, &tiny, NULL), TLM_OK);
    uint64_t s = 11;
    double n1 = 0;
    for (size_t i = 0; i < g.n; i++) {
        l1.data[i] += (float)((double)(tu_rand(&s) % 1001) * 1e-5 - 0.005);
        l2.data[i] += (float)((double)(tu_rand(&s) % 1001) * 1e-5 - 0.005);
        const double d = (double)l1.data[i] - g.data[i];
        n1 += d * d;
    }
    n1 = sqrt(n1);
    uint8_t *u1, *u2, *u3;
    size_t b1, b2, b3;
    tlm_fed_header h1 = {1, 1, 0, 100}, h2 = {1, 2, 0, 300};
    assert_int_equal(tlm_fed_make_update(&g, &tiny, &l1, NULL, TLM_FED_F32, &h1, NULL, &u1, &b1, NULL), TLM_OK);
    assert_int_equal(tlm_fed_make_update(&g, &tiny, &l2, NULL, TLM_FED_F32, &h2, NULL, &u2, &b2, NULL), TLM_OK);
    /* the same update claiming another base model: refused */
    assert_int_equal(tlm_fed_make_update(&g, &tiny, &l2, NULL, TLM_FED_F32, &h2, NULL, &u3, &b3, NULL), TLM_OK);
    u3[24] ^= 1u;
    reseal(u3, b3);

    tlm_fedavg a;
    tlm_error err;
    assert_int_equal(tlm_fedavg_init(&a, &tiny, 0.0, NULL), TLM_OK);
    assert_int_equal(tlm_fedavg_add(&a, u1, b1, NULL), TLM_OK);
    assert_int_not_equal(tlm_fedavg_add(&a, u3, b3, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "another model"));
    assert_int_equal(tlm_fedavg_add(&a, u2, b2, NULL), TLM_OK);
    assert_int_equal(a.accepted, 2);
    tlm_params out;
    assert_int_equal(tlm_params_from_model(&out, &tiny, NULL), TLM_OK);
    tlm_fedavg_apply(&a, &out, 1.0f);
    double worst = 0;
    for (size_t i = 0; i < g.n; i++) {
        const double want = g.data[i] + (100.0 * ((double)l1.data[i] - g.data[i]) + 300.0 * ((double)l2.data[i] - g.data[i])) / 400.0;
        worst = fmax(worst, fabs(out.data[i] - want));
    }
    assert_true(worst < 1e-6);
    tlm_fedavg_free(&a);

    /* clipped to half its norm: g + d1 / 2 */
    assert_int_equal(tlm_fedavg_init(&a, &tiny, n1 / 2, NULL), TLM_OK);
    assert_int_equal(tlm_fedavg_add(&a, u1, b1, NULL), TLM_OK);
    assert_int_equal(a.clipped, 1);
    memcpy(out.data, g.data, g.n * sizeof(float));
    tlm_fedavg_apply(&a, &out, 1.0f);
    worst = 0;
    for (size_t i = 0; i < g.n; i++) worst = fmax(worst, fabs(out.data[i] - (g.data[i] + 0.5 * ((double)l1.data[i] - g.data[i]))));
    assert_true(worst < 1e-6);
    tlm_fedavg_free(&a);
    free(u1);
    free(u2);
    free(u3);
    tlm_params_free(&out);
    tlm_params_free(&g);
    tlm_params_free(&l1);
    tlm_params_free(&l2);
}

/* Orthonormal columns: n x r from seed (Gram-Schmidt of Gaussian columns). */
static void orthonormal(double *Q, uint32_t n, uint32_t r, uint64_t seed)
{
    for (size_t i = 0; i < (size_t)n * r; i++) Q[i] = tu_uniform(&seed) - 0.5;
    for (uint32_t k = 0; k < r; k++) {
        for (int pass = 0; pass < 2; pass++)
            for (uint32_t p = 0; p < k; p++) {
                double d = 0;
                for (uint32_t i = 0; i < n; i++) d += Q[i * r + p] * Q[i * r + k];
                for (uint32_t i = 0; i < n; i++) Q[i * r + k] -= d * Q[i * r + p];
            }
        double nn = 0;
        for (uint32_t i = 0; i < n; i++) nn += Q[i * r + k] * Q[i * r + k];
        for (uint32_t i = 0; i < n; i++) Q[i * r + k] /= sqrt(nn);
    }
}

static void test_lowrank(void **state)
{
    (void)state;
    enum { R = 24, C = 40, K = 8 };
    /* D = U diag(s) V^T with known singular values: the best rank-3 part
     * leaves sqrt(sum of the others' squares) (Eckart-Young) */
    static const double sv[K] = {10, 6, 3, 1, 0.5, 0.25, 0.1, 0.05};
    double U[R * K], V[C * K];
    orthonormal(U, R, K, 5);
    orthonormal(V, C, K, 6);
    float D[R * C], B[R * 3], A[3 * C];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) {
            double x = 0;
            for (int k = 0; k < K; k++) x += U[i * K + k] * sv[k] * V[j * K + k];
            D[i * C + j] = (float)x;
        }
    assert_int_equal(tlm_lowrank_factor(D, R, C, 3, 1, B, A, NULL), TLM_OK);
    double res = 0, best = 0;
    for (int k = 3; k < K; k++) best += sv[k] * sv[k];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) {
            double x = 0;
            for (int k = 0; k < 3; k++) x += (double)B[i * 3 + k] * A[k * C + j];
            res += (x - D[i * C + j]) * (x - D[i * C + j]);
        }
    print_message("rank 3 of singular values 10 6 3 1 ...: residual %.5f, the best possible %.5f\n", sqrt(res), sqrt(best));
    assert_true(sqrt(res) < 1.01 * sqrt(best));
    /* a matrix of rank 3 comes back exactly (to float rounding) */
    float E[R * C];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) {
            double x = 0;
            for (int k = 0; k < 3; k++) x += U[i * K + k] * sv[k] * V[j * K + k];
            E[i * C + j] = (float)x;
        }
    assert_int_equal(tlm_lowrank_factor(E, R, C, 3, 2, B, A, NULL), TLM_OK);
    double worst = 0;
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) {
            double x = 0;
            for (int k = 0; k < 3; k++) x += (double)B[i * 3 + k] * A[k * C + j];
            worst = fmax(worst, fabs(x - E[i * C + j]));
        }
    assert_true(worst < 1e-5);
    /* encoded (int8 factors, stochastic rounding), decoded: the product B A
     * on average; each entry's mean within 5 standard errors of it */
    enum { N = 600 };
    static uint8_t buf[4096];
    double *sum = calloc(R * C, sizeof *sum), *sq = calloc(R * C, sizeof *sq);
    float out[R * C];
    tlm_chacha cc;
    tlm_rand rng = seeded(&cc, 77);
    const tlm_fed_header h = {1, 2, 3, 4};
    size_t n = 0;
    for (int t = 0; t < N; t++) {
        tlm_fed_writer w;
        assert_int_equal(tlm_fed_begin(&w, buf, sizeof buf, &h, NULL), TLM_OK);
        assert_int_equal(tlm_fed_add_lowrank(&w, TLM_ROLE_W1, 0, B, A, R, C, 3, &rng, NULL), TLM_OK);
        assert_int_equal(tlm_fed_finish(&w, &n, NULL), TLM_OK);
        tlm_fed_info info;
        assert_int_equal(tlm_fed_validate(buf, n, NULL, &info, NULL), TLM_OK);
        tlm_fed_entry e;
        tlm_fed_entry_at(buf, 0, &e);
        assert_int_equal(e.enc, TLM_FED_LOWRANK_I8);
        assert_int_equal(e.rank, 3);
        assert_int_equal(e.rows, R);
        assert_int_equal(e.count, R * C);
        tlm_fed_entry_decode(&e, out);
        for (int i = 0; i < R * C; i++) {
            sum[i] += out[i];
            sq[i] += (double)out[i] * out[i];
        }
    }
    assert_int_equal(n, tlm_fed_lowrank_entry_bytes(R, C, 3) + TLM_FED_HEADER_BYTES);
    assert_true(n < tlm_fed_entry_bytes(TLM_FED_I8, R * C) + TLM_FED_HEADER_BYTES);
    double zmax = 0;
    for (int i = 0; i < R * C; i++) {
        const double mean = sum[i] / N, var = sq[i] / N - mean * mean, se = sqrt(fmax(var, 1e-30) / N);
        zmax = fmax(zmax, fabs(mean - E[i]) / se);
    }
    print_message("low-rank int8: largest |z| of %d means over %d encodings: %.2f\n", R * C, N, zmax);
    assert_true(zmax < 5.0);
    free(sum);
    free(sq);

    /* against the tiny model: w1 of layer 0 is hidden x dim (24 x 16) */
    tlm_tensor t;
    assert_int_equal(tlm_model_tensor(&tiny, TLM_ROLE_W1, 0, &t), 0);
    float b2[24 * 2], a2[2 * 16];
    for (int i = 0; i < 24 * 2; i++) b2[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < 2 * 16; i++) a2[i] = (float)(i % 5) - 2.0f;
    tlm_fed_writer w;
    tlm_fed_header hm = h;
    hm.base_crc = tlm_fed_model_id(&tiny);
    assert_int_equal(tlm_fed_begin(&w, buf, sizeof buf, &hm, NULL), TLM_OK);
    assert_int_equal(tlm_fed_add_lowrank(&w, TLM_ROLE_W1, 0, b2, a2, t.rows, t.cols, 2, &rng, NULL), TLM_OK);
    assert_int_equal(tlm_fed_finish(&w, &n, NULL), TLM_OK);
    tlm_error err;
    assert_int_equal(tlm_fed_validate(buf, n, &tiny, NULL, &err), TLM_OK);
    /* hostile edits, resealed: rank 0, rank above the smaller side, rows that do not match the
     * tensor (but divide the count), rows that do not divide it, a -128 code, a NaN scale */
    static uint8_t copy[4096];
    const size_t e0 = TLM_FED_HEADER_BYTES, d0 = e0 + TLM_FED_ENTRY_BYTES;
    const struct {
        size_t at;
        uint8_t value;
        const char *says;
    } edits[] = {
        {e0 + 5, 0, "low-rank shape"},  {e0 + 5, 17, "low-rank shape"}, {e0 + 6, 16, "factors of 16 rows"},
        {e0 + 6, 7, "low-rank shape"},  {d0 + 4, 0x80, "-128"},         {d0 + 3, 0xFF, "bad scale"},
    };
    for (size_t k = 0; k < sizeof edits / sizeof edits[0]; k++) {
        memcpy(copy, buf, n);
        copy[edits[k].at] = edits[k].value;
        reseal(copy, n);
        assert_int_not_equal(tlm_fed_validate(copy, n, &tiny, NULL, &err), TLM_OK);
        assert_non_null(strstr(err.msg, edits[k].says));
    }
    for (size_t i = 0; i < n; i++) { /* any single byte changed, unsealed */
        memcpy(copy, buf, n);
        copy[i] ^= 0x41;
        assert_int_not_equal(tlm_fed_validate(copy, n, &tiny, NULL, NULL), TLM_OK);
    }
    /* the writer refuses shapes the format cannot hold */
    assert_int_equal(tlm_fed_begin(&w, buf, sizeof buf, &hm, NULL), TLM_OK);
    assert_int_equal(tlm_fed_add_lowrank(&w, TLM_ROLE_W1, 0, b2, a2, 24, 16, 0, &rng, &err), TLM_ERR_ARG);
    assert_int_equal(tlm_fed_add_lowrank(&w, TLM_ROLE_W1, 0, b2, a2, 24, 16, 300, &rng, &err), TLM_ERR_ARG);
    b2[0] = NAN;
    assert_int_equal(tlm_fed_add_lowrank(&w, TLM_ROLE_W1, 0, b2, a2, 24, 16, 2, &rng, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "not finite"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_unbiased),
        cmocka_unit_test(test_validation_against_model),
        cmocka_unit_test(test_damage_refused),
        cmocka_unit_test(test_fedavg),
        cmocka_unit_test(test_lowrank),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
