/* llama2.c interoperability: byte-identical round trips, separate
 * classifiers, and clear errors for damaged checkpoints and tokenizers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/core/le.h"
#include "../src/host/fileio.h"
#include "../src/host/llama2c.h"
#include "testutil.h"
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"

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
    memcpy(c, "ak42", 4);
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
        cmocka_unit_test(test_damaged_checkpoints),
        cmocka_unit_test(test_damaged_tokenizers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
