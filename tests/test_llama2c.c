/* llama2.c interoperability: byte-identical round trips, separate
 * classifiers, export.py's version-1 and version-2 (Q8_0) files written here
 * from their documented layout, and clear errors for damaged checkpoints
 * and tokenizers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/core/le.h"
#include "../src/host/eval.h"
#include "../src/host/fileio.h"
#include "../src/host/llama2c.h"
#include "testutil.h"
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"
#include "tritlm/wtype.h"

static const char *ckpt, *tok;

static void write_file(const char *path, const void *data, size_t n)
{
    assert_int_equal(tlm_write_file_atomic(path, data, n, NULL), TLM_OK);
}

static void assert_same_file(const char *a, const char *b)
{
    uint8_t *x, *y;
    size_t nx, ny;
    assert_int_equal(tlm_read_file(a, &x, &nx, NULL), TLM_OK);
    assert_int_equal(tlm_read_file(b, &y, &ny, NULL), TLM_OK);
    assert_int_equal(nx, ny);
    assert_memory_equal(x, y, nx);
    free(x);
    free(y);
}

static void test_round_trip_is_byte_identical(void **state)
{
    (void)state;
    uint8_t *img;
    size_t bytes;
    tlm_error err;
    assert_int_equal(tlm_llama2c_import(ckpt, tok, &img, &bytes, &err), TLM_OK);
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, img, bytes, NULL), TLM_OK);
    assert_true(m.hp.shared_classifier);
    assert_int_equal(m.hp.dim, 64);
    assert_int_equal(m.hp.hidden_dim, 172);
    assert_int_equal(m.hp.n_kv_heads, 4);
    assert_int_equal(tlm_llama2c_export(&m, tu_tmp("rt.bin"), tu_tmp("rt_tok.bin"), &err), TLM_OK);
    assert_same_file(tu_tmp("rt.bin"), ckpt);
    assert_same_file(tu_tmp("rt_tok.bin"), tok);
    free(img);
}

static uint32_t greedy_hash(const tlm_model *m, int steps)
{
    size_t ab = tlm_runtime_arena_size(m, (uint32_t)steps);
    void *arena = malloc(ab);
    tlm_runtime rt;
    assert_int_equal(tlm_runtime_init(&rt, m, (uint32_t)steps, arena, ab, NULL), TLM_OK);
    uint32_t tok_id = m->bos_id, h = 2166136261u;
    for (int pos = 0; pos < steps; pos++) {
        float *lg;
        tlm_runtime_forward(&rt, tok_id, (uint32_t)pos, &lg);
        tok_id = tlm_argmax(lg, m->hp.vocab_size);
        h = (h ^ tok_id) * 16777619u;
    }
    free(arena);
    return h;
}

/* A checkpoint with a separate classifier (negative vocab_size) equal to
 * the embedding must decode exactly as the shared one, and round-trip. */
static void test_separate_classifier(void **state)
{
    (void)state;
    uint8_t *raw;
    size_t n;
    assert_int_equal(tlm_read_file(ckpt, &raw, &n, NULL), TLM_OK);
    const size_t emb = 512u * 64u * 4u;
    uint8_t *sep = malloc(n + emb);
    memcpy(sep, raw, n);
    memcpy(sep + n, raw + 28, emb);
    tlm_wr32(sep + 20, (uint32_t)-512);
    write_file(tu_tmp("sep.bin"), sep, n + emb);
    uint8_t *a, *b;
    size_t na, nb;
    assert_int_equal(tlm_llama2c_import(ckpt, tok, &a, &na, NULL), TLM_OK);
    assert_int_equal(tlm_llama2c_import(tu_tmp("sep.bin"), tok, &b, &nb, NULL), TLM_OK);
    tlm_model ma, mb;
    assert_int_equal(tlm_model_open(&ma, a, na, NULL), TLM_OK);
    assert_int_equal(tlm_model_open(&mb, b, nb, NULL), TLM_OK);
    assert_false(mb.hp.shared_classifier);
    assert_int_equal(mb.n_tensors, ma.n_tensors + 1);
    assert_int_equal(greedy_hash(&ma, 60), greedy_hash(&mb, 60));
    assert_int_equal(tlm_llama2c_export(&mb, tu_tmp("sep_rt.bin"), NULL, NULL), TLM_OK);
    assert_same_file(tu_tmp("sep_rt.bin"), tu_tmp("sep.bin"));
    free(a);
    free(b);
    free(sep);
    free(raw);
}

static tlm_status import_bytes(const uint8_t *data, size_t n, const char *tok_path, tlm_error *err);

/* Growing byte buffer for the writers below. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf_t;

static void put(buf_t *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2u;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put32(buf_t *b, uint32_t v)
{
    uint8_t le[4];
    tlm_wr32(le, v);
    put(b, le, 4);
}

static const float *f32_of(const tlm_model *m, tlm_role role, uint32_t layer, size_t *count)
{
    tlm_tensor t;
    assert_int_equal(tlm_model_tensor(m, role, layer, &t), 0);
    assert_int_equal(t.wtype, TLM_WTYPE_F32);
    *count = (size_t)t.rows * t.cols;
    return (const float *)t.data;
}

/* Imports a llama2.c checkpoint (with the shared tokenizer) and opens it. */
static uint8_t *import_open(const char *path, tlm_model *m)
{
    uint8_t *img;
    size_t n;
    tlm_error err;
    assert_int_equal(tlm_llama2c_import(path, tok, &img, &n, &err), TLM_OK);
    assert_int_equal(tlm_model_open(m, img, n, NULL), TLM_OK);
    return img;
}

/* export.py's quantize_q80 on one tensor: per group of gs consecutive
 * weights, scale = max|w| / 127 and q = round-half-even(w / scale), all in
 * float32 as torch computes them. */
static void q80(const float *w, size_t n, uint32_t gs, int8_t *q, float *s)
{
    for (size_t g = 0; g < n / gs; g++) {
        float wmax = 0.0f;
        for (size_t i = 0; i < gs; i++) wmax = fmaxf(wmax, fabsf(w[g * gs + i]));
        s[g] = wmax / 127.0f;
        for (size_t i = 0; i < gs; i++) q[g * gs + i] = (int8_t)nearbyintf(w[g * gs + i] / s[g]);
    }
}

/* The layout llama2.c's export.py writes for version 1 (fp32) and 2
 * (Q8_0): a 256-byte header (magic 0x616b3432, version, dim, hidden_dim,
 * n_layers, n_heads, n_kv_heads, vocab_size, seq_len, a shared-classifier
 * byte, for version 2 the group size as int32 right after it), the norms
 * (attention norms of every layer, then FFN norms, then the final norm) in
 * fp32, then the token embedding, wq, wk, wv, wo, w1, w2, w3 (each for every
 * layer) in fp32 or as int8 values followed by their fp32 scales. */
static void write_v12(const tlm_model *m, int version, uint32_t gs, buf_t *b)
{
    const tlm_hparams *hp = &m->hp;
    put32(b, 0x616b3432u);
    put32(b, (uint32_t)version);
    const uint32_t dims[7] = {hp->dim, hp->hidden_dim, hp->n_layers, hp->n_heads, hp->n_kv_heads, hp->vocab_size, hp->seq_len};
    for (int i = 0; i < 7; i++) put32(b, dims[i]);
    const uint8_t shared = 1;
    put(b, &shared, 1);
    if (version == 2) put32(b, gs);
    static const uint8_t zeros[256];
    put(b, zeros, 256u - b->n);
    size_t n;
    const float *w;
    for (uint32_t l = 0; l < hp->n_layers; l++) {
        w = f32_of(m, TLM_ROLE_ATTN_NORM, l, &n);
        put(b, w, n * 4u);
    }
    for (uint32_t l = 0; l < hp->n_layers; l++) {
        w = f32_of(m, TLM_ROLE_FFN_NORM, l, &n);
        put(b, w, n * 4u);
    }
    w = f32_of(m, TLM_ROLE_FINAL_NORM, 0, &n);
    put(b, w, n * 4u);
    static const tlm_role mats[] = {TLM_ROLE_TOK_EMBED, TLM_ROLE_WQ, TLM_ROLE_WK, TLM_ROLE_WV,
                                    TLM_ROLE_WO,        TLM_ROLE_W1, TLM_ROLE_W2, TLM_ROLE_W3};
    for (size_t k = 0; k < 8; k++)
        for (uint32_t l = 0; l < (k == 0 ? 1u : hp->n_layers); l++) {
            w = f32_of(m, mats[k], l, &n);
            if (version == 1) {
                put(b, w, n * 4u);
                continue;
            }
            int8_t *q = malloc(n);
            float *sc = malloc(n / gs * 4u);
            q80(w, n, gs, q, sc);
            put(b, q, n);
            put(b, sc, n / gs * 4u);
            free(q);
            free(sc);
        }
}

/* Version 1 holds the same fp32 weights as version 0 (without RoPE tables):
 * every tensor equal, the same greedy tokens (the version-0 import's are
 * llama2.c's reference text, test_runtime). */
static void test_version1(void **state)
{
    (void)state;
    tlm_model ma, mb;
    uint8_t *a = import_open(ckpt, &ma);
    buf_t f = {0};
    write_v12(&ma, 1, 0, &f);
    write_file(tu_tmp("v1.bin"), f.p, f.n);
    uint8_t *b = import_open(tu_tmp("v1.bin"), &mb);
    tlm_error err;
    assert_int_equal(mb.n_tensors, ma.n_tensors - 2); /* no RoPE tables */
    for (uint32_t i = 0; i < mb.n_tensors; i++) {
        tlm_tensor x, y;
        tlm_model_tensor_at(&ma, i, &x);
        tlm_model_tensor_at(&mb, i, &y);
        assert_int_equal(x.role, y.role);
        assert_int_equal(y.wtype, TLM_WTYPE_F32);
        assert_memory_equal(x.data, y.data, (size_t)x.rows * x.cols * 4u);
    }
    assert_int_equal(greedy_hash(&ma, 200), greedy_hash(&mb, 200));
    /* damaged: truncated, trailing bytes, an unknown version, a bad flag */
    assert_int_equal(import_bytes(f.p, f.n - 4, tok, &err), TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "truncated"));
    assert_int_equal(import_bytes(f.p, 200, tok, &err), TLM_ERR_FORMAT);
    put32(&f, 0);
    assert_int_equal(import_bytes(f.p, f.n, tok, &err), TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "trailing"));
    f.n -= 4;
    tlm_wr32(f.p + 4, 3);
    assert_int_equal(import_bytes(f.p, f.n, tok, &err), TLM_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "version 3"));
    tlm_wr32(f.p + 4, 1);
    f.p[36] = 2;
    assert_int_equal(import_bytes(f.p, f.n, tok, &err), TLM_ERR_FORMAT);
    free(f.p);
    free(a);
    free(b);
}

/* Version 2 (Q8_0): each tensor imports as exactly q * s of the file (the
 * quantizer above, export.py's); tensors whose rows hold whole groups stay
 * int8 with group scales, w2 (rows of 172, groups across rows) is expanded
 * to fp32. */
static void test_version2(void **state)
{
    (void)state;
    tlm_model ma, mb;
    uint8_t *a = import_open(ckpt, &ma);
    uint8_t *text;
    size_t text_len;
    assert_int_equal(tlm_read_file(tu_data("tinystories/dev.txt"), &text, &text_len, NULL), TLM_OK);
    const char *dev = (const char *)text;
    const char *end = dev; /* the first 40 stories, each ended by an <|endoftext|> line */
    for (int stories = 0; stories < 40; stories++) {
        end = strstr(end, "<|endoftext|>");
        assert_non_null(end);
        end += 13;
    }
    const size_t dev_len = (size_t)(end - dev);
    const uint32_t sizes[] = {64, 32};
    for (size_t gi = 0; gi < 2; gi++) {
        const uint32_t gs = sizes[gi];
        buf_t f = {0};
        write_v12(&ma, 2, gs, &f);
        write_file(tu_tmp("v2.bin"), f.p, f.n);
        uint8_t *b = import_open(tu_tmp("v2.bin"), &mb);
        tlm_error err;
        assert_true(mb.image_bytes < ma.image_bytes / 2);
        for (uint32_t i = 0; i < mb.n_tensors; i++) {
            tlm_tensor x, y;
            tlm_model_tensor_at(&ma, i, &x);
            tlm_model_tensor_at(&mb, i, &y);
            assert_int_equal(x.role, y.role);
            const size_t n = (size_t)x.rows * x.cols;
            float *want = malloc(n * 4u), *got = malloc(n * 4u);
            int8_t *q = malloc(n);
            float *sc = malloc(n * 4u);
            const int norm = x.role == TLM_ROLE_ATTN_NORM || x.role == TLM_ROLE_FFN_NORM || x.role == TLM_ROLE_FINAL_NORM;
            if (norm) {
                memcpy(want, x.data, n * 4u);
                assert_int_equal(y.wtype, TLM_WTYPE_F32);
            } else {
                q80((const float *)x.data, n, gs, q, sc);
                for (size_t k = 0; k < n; k++) want[k] = (float)q[k] * sc[k / gs];
                assert_int_equal(y.wtype, x.cols % gs == 0 ? TLM_WTYPE_I8 : TLM_WTYPE_F32);
            }
            for (uint32_t r = 0; r < y.rows; r++) tlm_wtype_get(y.wtype)->row_to_f32(got + (size_t)r * y.cols, &y, r);
            assert_memory_equal(got, want, n * 4u);
            free(want);
            free(got);
            free(q);
            free(sc);
        }
        /* and it predicts as well as the fp32 weights on the first 40 dev
         * stories (int8 weights cost stories260K 0.1% of dev loss) */
        tlm_eval_opts eo = {0};
        eo.threads = 1;
        tlm_eval_result ra, rb;
        assert_int_equal(tlm_eval_text(&ma, dev, dev_len, &eo, &ra, NULL), TLM_OK);
        assert_int_equal(tlm_eval_text(&mb, dev, dev_len, &eo, &rb, NULL), TLM_OK);
        assert_true(rb.tokens == ra.tokens && ra.tokens > 5000);
        assert_true(fabs(rb.loss - ra.loss) < 0.01 * ra.loss);
        assert_true(fabs(rb.top1 - ra.top1) < 0.01);
        free(b);
        if (gi == 0) {
            /* damaged: a group size that does not divide dim, a scale that is not finite */
            tlm_wr32(f.p + 37, 48);
            assert_int_equal(import_bytes(f.p, f.n, tok, &err), TLM_ERR_FORMAT);
            assert_non_null(strstr(err.msg, "group size"));
            tlm_wr32(f.p + 37, 64);
            const size_t norms = (2u * 5u + 1u) * 64u * 4u, emb = 512u * 64u;
            tlm_wr32(f.p + 256 + norms + emb, 0x7FC00000u); /* the embedding's first scale: NaN */
            assert_int_equal(import_bytes(f.p, f.n, tok, &err), TLM_ERR_FORMAT);
            assert_non_null(strstr(err.msg, "not finite"));
        }
        free(f.p);
    }
    free(text);
    free(a);
}

static tlm_status import_bytes(const uint8_t *data, size_t n, const char *tok_path, tlm_error *err)
{
    write_file(tu_tmp("bad.bin"), data, n);
    uint8_t *img = NULL;
    size_t bytes;
    tlm_status st = tlm_llama2c_import(tu_tmp("bad.bin"), tok_path, &img, &bytes, err);
    free(img);
    return st;
}

static void test_damaged_checkpoints(void **state)
{
    (void)state;
    uint8_t *raw;
    size_t n;
    assert_int_equal(tlm_read_file(ckpt, &raw, &n, NULL), TLM_OK);
    tlm_error err;
    assert_int_equal(import_bytes(raw, n - 1, tok, &err), TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "truncated"));
    assert_int_equal(import_bytes(raw, n / 2, tok, &err), TLM_ERR_FORMAT);
    assert_int_equal(import_bytes(raw, 10, tok, &err), TLM_ERR_FORMAT);
    assert_int_equal(import_bytes(raw, 0, tok, &err), TLM_ERR_FORMAT);
    uint8_t *big = malloc(n + 4);
    memcpy(big, raw, n);
    memset(big + n, 0, 4);
    assert_int_equal(import_bytes(big, n + 4, tok, &err), TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "trailing"));
    uint8_t *c = malloc(n);
    memcpy(c, raw, n);
    tlm_wr32(c, 0);
    assert_int_equal(import_bytes(c, n, tok, &err), TLM_ERR_FORMAT); /* dim 0 */
    memcpy(c, raw, n);
    tlm_wr32(c + 12, 7);
    assert_int_equal(import_bytes(c, n, tok, &err), TLM_ERR_FORMAT); /* heads do not divide dim */
    memcpy(c, raw, n);
    tlm_wr32(c + 8, 0x7FFFFFFF);
    assert_int_equal(import_bytes(c, n, tok, &err), TLM_ERR_FORMAT); /* absurd layers */
    tlm_wr32(c, 0x616b3432u); /* export.py's magic, with version 0x40 (= dim 64 as read) */
    assert_int_equal(import_bytes(c, n, tok, &err), TLM_ERR_UNSUPPORTED);
    assert_int_equal(import_bytes(raw, n, tu_tmp("missing-tokenizer.bin"), &err), TLM_ERR_IO);
    free(c);
    free(big);
    free(raw);
}

static void test_damaged_tokenizers(void **state)
{
    (void)state;
    uint8_t *t;
    size_t n;
    assert_int_equal(tlm_read_file(tok, &t, &n, NULL), TLM_OK);
    tlm_vocab v;
    tlm_error err;
    write_file(tu_tmp("tok_short.bin"), t, n - 3);
    assert_int_equal(tlm_llama2c_read_tokenizer(tu_tmp("tok_short.bin"), 512, &v, &err), TLM_ERR_FORMAT);
    assert_int_equal(tlm_llama2c_read_tokenizer(tok, 511, &v, &err), TLM_ERR_FORMAT); /* bytes left over */
    assert_int_equal(tlm_llama2c_read_tokenizer(tok, 513, &v, &err), TLM_ERR_FORMAT); /* ends early */
    uint8_t *c = malloc(n);
    memcpy(c, t, n);
    tlm_wr32(c + 8, 0x7FFFFFFF); /* first token's length */
    write_file(tu_tmp("tok_len.bin"), c, n);
    assert_int_equal(tlm_llama2c_read_tokenizer(tu_tmp("tok_len.bin"), 512, &v, &err), TLM_ERR_FORMAT);
    memcpy(c, t, n);
    tlm_wr32(c, 0);
    write_file(tu_tmp("tok_max.bin"), c, n);
    assert_int_equal(tlm_llama2c_read_tokenizer(tu_tmp("tok_max.bin"), 512, &v, &err), TLM_ERR_FORMAT);
    assert_int_equal(tlm_llama2c_read_tokenizer(tok, 512, &v, &err), TLM_OK);
    tlm_vocab_free(&v);
    free(c);
    free(t);
}

int main(void)
{
    ckpt = tu_data("llama2c/stories260K.bin");
    tok = tu_data("llama2c/tok512.bin");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_is_byte_identical),
        cmocka_unit_test(test_separate_classifier),
        cmocka_unit_test(test_version1),
        cmocka_unit_test(test_version2),
        cmocka_unit_test(test_damaged_checkpoints),
        cmocka_unit_test(test_damaged_tokenizers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
