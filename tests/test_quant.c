/* Quantized weight types, kernels, activation rounding and quantizers,
 * against oracles written here: unpacking by the layouts of
 * docs/FORMAT.md, exact integer sums in 64 bits, sort-based sparsity.
 * (Whole quantized models: test_quant_models.c.) */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../src/core/kernels.h"
#include "../src/host/quant.h"
#include "testutil.h"
#include "tritlm/runtime.h"

static const uint32_t odd_cols[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 31, 32, 33, 40, 64, 77, 80, 81, 130, 161, 333};

static int8_t random_trit(uint64_t *s, double zero_frac)
{
    double u = tu_uniform(s);
    if (u < zero_frac) return 0;
    return (tu_rand(s) & 1u) ? 1 : -1;
}

/* Oracle decoders, written from the format description. */
static int8_t oracle_t2(const uint8_t *row, uint32_t c)
{
    unsigned code = (row[c / 4] >> (2 * (c % 4))) & 3u;
    return code == 1 ? 1 : code == 2 ? -1 : 0;
}
static int8_t oracle_t3(const uint8_t *row, uint32_t c)
{
    unsigned v = row[c / 5];
    for (uint32_t i = 0; i < c % 5; i++) v /= 3;
    v %= 3;
    return v == 1 ? 1 : v == 2 ? -1 : 0;
}

typedef struct {
    uint16_t type;
    uint32_t rows, cols, param;
    uint64_t row_bytes;
    int8_t *trits;
    uint8_t *packed;
} packed_matrix;

static void pack_matrix(packed_matrix *pm, uint16_t type, uint32_t rows, uint32_t cols, double zero_frac, uint64_t *s)
{
    pm->type = type;
    pm->rows = rows;
    pm->cols = cols;
    pm->trits = malloc((size_t)rows * cols);
    uint32_t kmax = 0;
    for (uint32_t r = 0; r < rows; r++) {
        uint32_t k = 0;
        for (uint32_t c = 0; c < cols; c++) {
            int8_t t = type == TLM_WTYPE_I8 ? (int8_t)((int)(tu_rand(s) % 255u) - 127) : random_trit(s, zero_frac);
            pm->trits[(size_t)r * cols + c] = t;
            k += t != 0;
        }
        if (k > kmax) kmax = k;
    }
    pm->param = type == TLM_WTYPE_TS ? kmax : 0;
    pm->row_bytes = tlm_wtype_row_bytes(type, cols, pm->param);
    pm->packed = malloc((size_t)(pm->row_bytes * rows) + 1);
    for (uint32_t r = 0; r < rows; r++) {
        uint8_t *dst = pm->packed + pm->row_bytes * r;
        const int8_t *t = pm->trits + (size_t)r * cols;
        if (type == TLM_WTYPE_T2) tlm_pack_t2(dst, t, cols);
        else if (type == TLM_WTYPE_T3) tlm_pack_t3(dst, t, cols);
        else if (type == TLM_WTYPE_TS) tlm_pack_ts(dst, t, cols, pm->param);
        else memcpy(dst, t, cols);
    }
}

static void free_matrix(packed_matrix *pm)
{
    free(pm->trits);
    free(pm->packed);
}

static tlm_tensor view(const packed_matrix *pm, uint16_t skind, uint32_t group, const float *scales)
{
    tlm_tensor t;
    memset(&t, 0, sizeof t);
    t.data = pm->packed;
    t.data_bytes = pm->row_bytes * pm->rows;
    t.rows = pm->rows;
    t.cols = pm->cols;
    t.param = pm->param;
    t.wtype = pm->type;
    t.scale_kind = skind;
    t.group = skind == TLM_SCALE_GROUP ? group : 0;
    t.scales = scales;
    return t;
}

static float *random_scales(uint32_t n, uint64_t *s)
{
    float *sc = malloc((n ? n : 1) * sizeof *sc);
    for (uint32_t i = 0; i < n; i++) sc[i] = (float)(0.01 + tu_uniform(s));
    return sc;
}

/* Pack then unpack: the layout oracle and the core's row decoder agree
 * with the original values, and validation accepts the data. */
static void test_pack_roundtrip(void **state)
{
    (void)state;
    uint64_t s = 11;
    const uint16_t types[] = {TLM_WTYPE_I8, TLM_WTYPE_T2, TLM_WTYPE_T3, TLM_WTYPE_TS};
    for (size_t ti = 0; ti < 4; ti++) {
        for (size_t ci = 0; ci < sizeof odd_cols / sizeof odd_cols[0]; ci++) {
            const uint32_t cols = odd_cols[ci], rows = 1 + (uint32_t)(tu_rand(&s) % 9u);
            packed_matrix pm;
            pack_matrix(&pm, types[ti], rows, cols, 0.3 + 0.6 * tu_uniform(&s), &s);
            const uint32_t group = 1 + (uint32_t)(tu_rand(&s) % cols);
            const uint32_t ng = (cols + group - 1) / group;
            float *sc = random_scales(rows * ng, &s);
            tlm_tensor t = view(&pm, TLM_SCALE_GROUP, group, sc);
            const tlm_wtype_traits *tr = tlm_wtype_get(types[ti]);
            assert_int_equal(tr->check_rows(&t), UINT32_MAX);
            float *row = malloc(cols * sizeof *row);
            for (uint32_t r = 0; r < rows; r++) {
                const uint8_t *pr = pm.packed + pm.row_bytes * r;
                tr->row_to_f32(row, &t, r);
                uint32_t k = 0;
                for (uint32_t c = 0; c < cols; c++) {
                    const int8_t want = pm.trits[(size_t)r * cols + c];
                    if (types[ti] == TLM_WTYPE_T2) assert_int_equal(oracle_t2(pr, c), want);
                    if (types[ti] == TLM_WTYPE_T3) assert_int_equal(oracle_t3(pr, c), want);
                    if (types[ti] == TLM_WTYPE_TS) {
                        const uint32_t mb = (cols + 7) / 8;
                        const int nz = (pr[c / 8] >> (c % 8)) & 1;
                        assert_int_equal(nz, want != 0);
                        if (nz) {
                            const int neg = (pr[mb + k / 8] >> (k % 8)) & 1;
                            assert_int_equal(neg ? -1 : 1, want);
                            k++;
                        }
                    }
                    assert_true(row[c] == (float)want * sc[(size_t)r * ng + c / group]);
                }
            }
            free(row);
            free(sc);
            free_matrix(&pm);
        }
    }
}

/* The sizes the format promises: 2 bits, 1.6 bits, bitmap + nonzeros. */
static void test_row_bytes(void **state)
{
    (void)state;
    assert_int_equal(tlm_wtype_row_bytes(TLM_WTYPE_T2, 13, 0), 4);
    assert_int_equal(tlm_wtype_row_bytes(TLM_WTYPE_T3, 13, 0), 3);
    assert_int_equal(tlm_wtype_row_bytes(TLM_WTYPE_T3, 15, 0), 3);
    assert_int_equal(tlm_wtype_row_bytes(TLM_WTYPE_TS, 64, 20), 8 + 3);
    assert_int_equal(tlm_wtype_row_bytes(TLM_WTYPE_I8, 7, 0), 7);
    assert_int_equal(tlm_wtype_row_bytes(TLM_WTYPE_T3, 1000, 0) * 8, 1600);
}

static void oracle_matvec(float *out, const packed_matrix *pm, const tlm_tensor *t, const tlm_act_q8 *a)
{
    const uint32_t cols = pm->cols;
    const uint32_t glen = t->scale_kind == TLM_SCALE_GROUP ? t->group : cols;
    const uint32_t ng = (cols + glen - 1) / glen;
    for (uint32_t r = 0; r < pm->rows; r++) {
        float sum = 0.0f;
        for (uint32_t g = 0; g < ng; g++) {
            int64_t acc = 0;
            for (uint32_t c = g * glen; c < cols && c < (g + 1) * glen; c++)
                acc += (int64_t)pm->trits[(size_t)r * cols + c] * a->q[c];
            assert_true(acc >= INT32_MIN && acc <= INT32_MAX);
            float sc = t->scale_kind == TLM_SCALE_GROUP ? t->scales[(size_t)r * ng + g]
                       : t->scale_kind == TLM_SCALE_ROW ? t->scales[r] : t->scales[0];
            if (t->scale_kind == TLM_SCALE_GROUP) sum += (float)acc * sc;
            else sum = (float)acc * sc;
        }
        out[r] = sum * a->scale;
    }
}

/* Reference kernels against exact sums; SIMD variants bit for bit against
 * the reference; every type, scale kind, odd shapes and groups. */
static void test_kernels(void **state)
{
    (void)state;
    uint64_t s = 12345;
    const uint16_t types[] = {TLM_WTYPE_I8, TLM_WTYPE_T2, TLM_WTYPE_T3, TLM_WTYPE_TS};
    const uint16_t kinds[] = {TLM_SCALE_TENSOR, TLM_SCALE_ROW, TLM_SCALE_GROUP};
    int simd_seen = 0;
    for (int iter = 0; iter < 400; iter++) {
        const uint16_t type = types[iter % 4], kind = kinds[(iter / 4) % 3];
        const uint32_t cols = iter < 200 ? odd_cols[tu_rand(&s) % (sizeof odd_cols / sizeof odd_cols[0])]
                                         : 1 + (uint32_t)(tu_rand(&s) % 700u);
        const uint32_t rows = 1 + (uint32_t)(tu_rand(&s) % 17u);
        packed_matrix pm;
        pack_matrix(&pm, type, rows, cols, tu_uniform(&s), &s);
        const uint32_t group = kind == TLM_SCALE_GROUP ? 1 + (uint32_t)(tu_rand(&s) % cols) : 0;
        const uint32_t ns = kind == TLM_SCALE_TENSOR ? 1 : kind == TLM_SCALE_ROW ? rows : rows * ((cols + group - 1) / group);
        float *sc = random_scales(ns, &s);
        tlm_tensor t = view(&pm, kind, group, sc);
        float *x = malloc(cols * sizeof *x);
        for (uint32_t c = 0; c < cols; c++) x[c] = (float)(tu_uniform(&s) * 8.0 - 4.0);
        if (iter % 7 == 0) x[tu_rand(&s) % cols] = 50.0f; /* an outlier */
        int8_t *buf = malloc(TLM_ACT_Q8_LUT_BYTES(cols));
        tlm_act_q8 a;
        tlm_act_q8_quantize(&a, x, cols, buf);
        float *want = malloc(rows * sizeof *want), *got = malloc(rows * sizeof *got);
        oracle_matvec(want, &pm, &t, &a);
        tlm_wtype_get(type)->matvec_q8_ref(got, &a, &t);
        assert_memory_equal(want, got, rows * sizeof *got);
        if (type == TLM_WTYPE_T2 || type == TLM_WTYPE_T3) { /* the table kernels of the targets without AVX2 */
            tlm_matvec_q8_fn lut = type == TLM_WTYPE_T2 ? tlm_matvec_q8_t2_lut : tlm_matvec_q8_t3_lut;
            memset(got, 0xA5, rows * sizeof *got);
            lut(got, &a, &t);
            assert_memory_equal(want, got, rows * sizeof *got);
            memset(got, 0xA5, rows * sizeof *got);
            lut(got, &a, &t); /* tables already built: reused */
            assert_memory_equal(want, got, rows * sizeof *got);
        }
        tlm_matvec_q8_fn simd = tlm_wtype_matvec_q8_simd(type);
        if (simd) {
            simd_seen = 1;
            memset(got, 0xA5, rows * sizeof *got);
            simd(got, &a, &t);
            assert_memory_equal(want, got, rows * sizeof *got);
        }
        free(want);
        free(got);
        free(buf);
        free(x);
        free(sc);
        free_matrix(&pm);
    }
    if (!simd_seen) print_message("note: no SIMD kernels on this CPU; reference only\n");
}

/* The table kernels keep per-vector tables in the activation buffer: a
 * second vector quantized into the same buffer must not see the first
 * one's tables, a t3 product after a t2 one on the same vector (and back)
 * must rebuild them, and entries never written (t2 bytes with a code 3)
 * must never be read. The buffer starts as garbage; rows of every width
 * 1..40, the extreme activations +-127 in every column. */
static void test_lut_reuse(void **state)
{
    (void)state;
    uint64_t s = 77;
    for (uint32_t cols = 1; cols <= 40; cols++) {
        const uint32_t rows = 5;
        packed_matrix p2, p3;
        pack_matrix(&p2, TLM_WTYPE_T2, rows, cols, 0.2, &s);
        pack_matrix(&p3, TLM_WTYPE_T3, rows, cols, 0.2, &s);
        float *sc = random_scales(rows, &s);
        tlm_tensor t2 = view(&p2, TLM_SCALE_ROW, 0, sc), t3 = view(&p3, TLM_SCALE_ROW, 0, sc);
        int8_t *buf = malloc(TLM_ACT_Q8_LUT_BYTES(cols));
        memset(buf, 0xA5, TLM_ACT_Q8_LUT_BYTES(cols));
        float x[40], want[5], got[5];
        for (int v = 0; v < 3; v++) {
            for (uint32_t c = 0; c < cols; c++)
                x[c] = v == 2 ? ((c & 1u) ? -1.0f : 1.0f) : (float)(tu_uniform(&s) * 2.0 - 1.0);
            tlm_act_q8 a;
            tlm_act_q8_quantize(&a, x, cols, buf);
            for (int k = 0; k < 3; k++) { /* t2, t3, t2 on the same vector */
                const int three = k == 1;
                oracle_matvec(want, three ? &p3 : &p2, three ? &t3 : &t2, &a);
                (three ? tlm_matvec_q8_t3_lut : tlm_matvec_q8_t2_lut)(got, &a, three ? &t3 : &t2);
                assert_memory_equal(want, got, sizeof got);
            }
        }
        free(buf);
        free(sc);
        free_matrix(&p2);
        free_matrix(&p3);
    }
}

/* int8 rounding against double arithmetic: half away from zero, clamped
 * to +-127, a quiet NaN to -127; every float within 3 ulps of each tie
 * k + 0.5 and of the clamp limits, random bit patterns, specials. absmax
 * against a plain loop, NaNs skipped. */
static int round_oracle(float v)
{
    if (v != v) return -127;
    const double a = floor(fabs((double)v) + 0.5), r = v < 0 ? -a : a;
    return r > 127 ? 127 : r < -127 ? -127 : (int)r;
}

static void test_q8_round_exact(void **state)
{
    (void)state;
    for (int k = -130; k <= 130; k++) {
        const float tie = (float)k + 0.5f, lims[2] = {tie, (float)k};
        for (int w = 0; w < 2; w++) {
            float v = lims[w];
            for (int j = 0; j < 3; j++) v = nextafterf(v, -INFINITY);
            for (int j = 0; j < 7; j++, v = nextafterf(v, INFINITY)) assert_int_equal(tlm_q8_round1(v), round_oracle(v));
        }
    }
    const float specials[] = {0.0f, -0.0f, 0.49999997f, -0.49999997f, 0.5f, -0.5f, 1e-40f, -1e-40f, 1e30f, -1e30f,
                              INFINITY, -INFINITY, NAN, -NAN, 127.49999f, 127.5f, -127.5f, 126.5f, -126.5f};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++)
        assert_int_equal(tlm_q8_round1(specials[i]), round_oracle(specials[i]));
    uint64_t s = 11;
    for (int i = 0; i < 1000000; i++) {
        const uint32_t b = (uint32_t)tu_rand(&s);
        float v;
        memcpy(&v, &b, sizeof v);
        if (v != v) v = NAN; /* arithmetic NaNs are quiet */
        if (fabsf(v) > 1e3f && (b & 1u)) v = ldexpf(v, -(int)(b % 200u)); /* plenty of values near the range */
        assert_int_equal(tlm_q8_round1(v), round_oracle(v));
    }
    for (int iter = 0; iter < 200; iter++) {
        const uint32_t n = (uint32_t)(tu_rand(&s) % 40u);
        float x[40];
        float want = 0.0f;
        for (uint32_t i = 0; i < n; i++) {
            const uint64_t r = tu_rand(&s);
            x[i] = r % 9u == 0 ? NAN : r % 17u == 0 ? -INFINITY : (float)(tu_uniform(&s) - 0.5) * 100.0f;
            if (x[i] == x[i] && fabsf(x[i]) > want) want = fabsf(x[i]);
        }
        const float got = tlm_absmax_f32(x, n);
        assert_true(got == want);
    }
}

/* Activation quantization: int8 within +-127, error at most half a step,
 * the largest magnitude maps to 127, zeros after the last value up to 32
 * bytes past the size rounded to 32 (the table kernels read whole blocks). */
static void test_act_quant(void **state)
{
    (void)state;
    uint64_t s = 5;
    for (int iter = 0; iter < 50; iter++) {
        const uint32_t n = 1 + (uint32_t)(tu_rand(&s) % 300u);
        float *x = malloc(n * sizeof *x);
        for (uint32_t i = 0; i < n; i++) x[i] = (float)((tu_uniform(&s) - 0.5) * 10.0);
        int8_t *buf = malloc(TLM_ACT_Q8_BYTES(n));
        memset(buf, 0x5A, TLM_ACT_Q8_BYTES(n));
        tlm_act_q8 a;
        tlm_act_q8_quantize(&a, x, n, buf);
        for (size_t i = n; i < TLM_ACT_Q8_ROUND32(n) + 32u; i++) assert_int_equal(a.q[i], 0);
        float amax = 0;
        for (uint32_t i = 0; i < n; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        assert_true(fabsf(a.scale - amax / 127.0f) <= 1e-6f * amax);
        int hit = 0;
        for (uint32_t i = 0; i < n; i++) {
            assert_true(a.q[i] >= -127 && a.q[i] <= 127);
            assert_true(fabsf(x[i] - a.q[i] * a.scale) <= 0.5f * a.scale * 1.0001f);
            hit |= a.q[i] == 127 || a.q[i] == -127;
        }
        assert_true(hit);
        free(buf);
        free(x);
    }
    float zero[3] = {0, 0, 0};
    int8_t buf[TLM_ACT_Q8_BYTES(3)];
    tlm_act_q8 a;
    tlm_act_q8_quantize(&a, zero, 3, buf);
    assert_true(a.scale == 0.0f && a.q[0] == 0 && a.q[2] == 0);
}

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* Quantizers against definitions: absmean scale = mean|w| and zero below
 * half of it; threshold scale = mean |w| of the kept weights; an exact
 * sparsity keeps the largest |w| of every row (oracle: sorting). */
static void test_quantizers(void **state)
{
    (void)state;
    uint64_t s = 99;
    const uint32_t rows = 7, cols = 45;
    float *w = malloc(rows * cols * sizeof *w), *deq = malloc(rows * cols * sizeof *deq);
    int8_t *t = malloc(rows * cols);
    float sc[64];
    for (uint32_t i = 0; i < rows * cols; i++) w[i] = (float)((tu_uniform(&s) - 0.5) * (1 + i % 3));
    tlm_quant_cfg c;
    tlm_quant_defaults(&c);
    tlm_ternarize(w, rows, cols, &c, t, sc, deq);
    for (uint32_t r = 0; r < rows; r++) {
        double m = 0;
        for (uint32_t j = 0; j < cols; j++) m += fabs(w[r * cols + j]);
        m /= cols;
        assert_true(fabs(sc[r] - m) < 1e-6);
        for (uint32_t j = 0; j < cols; j++) {
            const float v = w[r * cols + j];
            const int want = fabs(v) > 0.5 * m ? (v < 0 ? -1 : 1) : 0;
            if (fabs(fabs(v) - 0.5 * m) > 1e-6) assert_int_equal(t[r * cols + j], want);
            assert_true(deq[r * cols + j] == (float)t[r * cols + j] * sc[r]);
        }
    }
    c.method = TLM_QM_THRESHOLD;
    c.scale_kind = TLM_SCALE_TENSOR;
    tlm_ternarize(w, rows, cols, &c, t, sc, NULL);
    double m = 0, kept = 0, kc = 0;
    for (uint32_t i = 0; i < rows * cols; i++) m += fabs(w[i]);
    m /= rows * cols;
    for (uint32_t i = 0; i < rows * cols; i++) {
        if (fabs(w[i]) > 0.7 * m) {
            assert_int_equal(t[i], w[i] < 0 ? -1 : 1);
            kept += fabs(w[i]);
            kc++;
        } else {
            assert_int_equal(t[i], 0);
        }
    }
    assert_true(fabs(sc[0] - kept / kc) < 1e-6);
    /* exact sparsity, row and group scales */
    const float targets[] = {0.0f, 0.25f, 0.5f, 0.8f, 0.95f};
    for (size_t k = 0; k < 5; k++) {
        c.sparsity = targets[k];
        c.scale_kind = TLM_SCALE_ROW;
        tlm_ternarize(w, rows, cols, &c, t, sc, NULL);
        const uint32_t keep = cols - (uint32_t)lrint(targets[k] * cols);
        for (uint32_t r = 0; r < rows; r++) {
            float mags[64];
            uint32_t nz = 0;
            for (uint32_t j = 0; j < cols; j++) {
                mags[j] = fabsf(w[r * cols + j]);
                nz += t[r * cols + j] != 0;
            }
            assert_int_equal(nz, keep);
            qsort(mags, cols, sizeof mags[0], cmp_desc);
            for (uint32_t j = 0; j < cols; j++)
                if (t[r * cols + j]) assert_true(fabsf(w[r * cols + j]) >= mags[keep - 1]);
                else if (keep < cols) assert_true(fabsf(w[r * cols + j]) <= mags[keep]);
        }
    }
    free(w);
    free(deq);
    free(t);
}

/* Quantizing an already ternary tensor again keeps it exactly (the
 * packing can change without loss), at any granularity its scales divide;
 * at a coarser one, or with a sparsity asked for, it is quantized anew. */
static void test_requantize_ternary(void **state)
{
    (void)state;
    uint64_t s = 5;
    const uint32_t rows = 6, cols = 45;
    const size_t n = (size_t)rows * cols;
    float *w = malloc(n * sizeof *w), *deq = malloc(n * sizeof *deq);
    int8_t *t = malloc(n), *t2 = malloc(n);
    float sc[64], sc2[64];
    for (size_t i = 0; i < n; i++) w[i] = (float)(tu_uniform(&s) - 0.5) * (float)(1 + i % 5);
    const tlm_scale_kind kinds[] = {TLM_SCALE_TENSOR, TLM_SCALE_ROW, TLM_SCALE_GROUP};
    tlm_quant_cfg c;
    for (int method = 0; method < 2; method++)
        for (size_t k = 0; k < 3; k++) {
            tlm_quant_defaults(&c);
            c.method = method ? TLM_QM_THRESHOLD : TLM_QM_ABSMEAN;
            c.scale_kind = kinds[k];
            c.group = kinds[k] == TLM_SCALE_GROUP ? 8u : 0u; /* 45 = 5 x 8 + 5: a short last group */
            const uint32_t ns = (uint32_t)tlm_scale_count(c.scale_kind, rows, cols, c.group);
            assert_int_equal(tlm_ternary_keep(w, rows, cols, &c, t2, sc2), 0); /* fp32 weights are not ternary */
            tlm_ternarize(w, rows, cols, &c, t, sc, deq);
            memset(t2, 9, n);
            assert_int_equal(tlm_ternary_keep(deq, rows, cols, &c, t2, sc2), 1);
            assert_memory_equal(t, t2, n);
            for (uint32_t i = 0; i < ns; i++) assert_true(sc2[i] == sc[i]);
        }
    /* row scales asked for per tensor: the rows' magnitudes differ, so the
     * tensor is not kept and absmean applies (mean |w| from its definition) */
    tlm_quant_defaults(&c);
    tlm_ternarize(w, rows, cols, &c, t, sc, deq);
    c.scale_kind = TLM_SCALE_TENSOR;
    assert_int_equal(tlm_ternary_keep(deq, rows, cols, &c, t2, sc2), 0);
    tlm_ternarize(deq, rows, cols, &c, t2, sc2, NULL);
    double mean = 0;
    for (size_t i = 0; i < n; i++) mean += fabs((double)deq[i]);
    mean /= (double)n;
    assert_true(fabs(sc2[0] - mean) < 1e-6 * mean);
    /* row scales asked for per group of 9: each group lies within a row */
    c.scale_kind = TLM_SCALE_GROUP;
    c.group = 9;
    assert_int_equal(tlm_ternary_keep(deq, rows, cols, &c, t2, sc2), 1);
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t g = 0; g < 5; g++) assert_true(sc2[r * 5 + g] == sc[r]);
    /* an explicit sparsity re-selects the support */
    c.scale_kind = TLM_SCALE_ROW;
    c.sparsity = 0.8f;
    assert_int_equal(tlm_ternary_keep(deq, rows, cols, &c, t2, sc2), 0);
    free(w);
    free(deq);
    free(t);
    free(t2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_bytes),
        cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_kernels),
        cmocka_unit_test(test_lut_reuse),
        cmocka_unit_test(test_q8_round_exact),
        cmocka_unit_test(test_act_quant),
        cmocka_unit_test(test_quantizers),
        cmocka_unit_test(test_requantize_ternary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
