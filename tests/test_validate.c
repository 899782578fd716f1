/* Model image validation: every damaged or hostile image gives its error,
 * never a crash or an out-of-bounds read (this suite also runs under
 * AddressSanitizer, with images in buffers of their exact length). */
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/core/le.h"
#include "../src/host/image_build.h"
#include "testutil.h"

static uint8_t *img;
static size_t img_bytes;

static int setup(void **state)
{
    (void)state;
    tu_tiny cfg = {.dim = 16, .hidden = 24, .layers = 2, .heads = 4, .kv_heads = 2, .seq_len = 32, .n_merges = 60, .shared = 0};
    tu_build_tiny(&cfg, 42, &img, &img_bytes);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(img);
    return 0;
}

/* Opens a modified copy (checksum recomputed unless keep_crc). */
static tlm_status open_mod(void (*mod)(uint8_t *, size_t), int reseal, tlm_error *err)
{
    uint8_t *c = tu_exact_copy(img, img_bytes);
    mod(c, img_bytes);
    if (reseal) tlm_image_reseal(c, img_bytes);
    tlm_model m;
    tlm_status st = tlm_model_open(&m, c, img_bytes, err);
    free(c);
    return st;
}

static void test_valid_image_opens(void **state)
{
    (void)state;
    tlm_model m;
    tlm_error err;
    uint8_t *c = tu_exact_copy(img, img_bytes);
    assert_int_equal(tlm_model_open(&m, c, img_bytes, &err), TLM_OK);
    assert_int_equal(m.hp.dim, 16);
    assert_int_equal(m.hp.n_layers, 2);
    assert_int_equal(m.hp.vocab_size, 319);
    assert_int_equal(m.n_tensors, 2 + 18 + 1);
    tlm_tensor t;
    assert_int_equal(tlm_model_tensor(&m, TLM_ROLE_W2, 1, &t), 0);
    assert_int_equal(t.rows, 16);
    assert_int_equal(t.cols, 24);
    assert_int_equal(tlm_model_tensor(&m, TLM_ROLE_W2, 2, &t), -1);
    free(c);
}

/* The published check value of CRC-32/ISO-HDLC (zlib's crc32). */
static void test_crc32_check_value(void **state)
{
    (void)state;
    assert_int_equal(tlm_crc32(0, "123456789", 9), 0xCBF43926u);
    assert_int_equal(tlm_crc32(tlm_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
    assert_int_equal(tlm_crc32(0, "", 0), 0);
}

static void test_truncated_at_every_length(void **state)
{
    (void)state;
    for (size_t n = 0; n < img_bytes; n++) {
        uint8_t *c = tu_exact_copy(img, n);
        tlm_model m;
        tlm_error err;
        tlm_status st = tlm_model_open(&m, c, n, &err);
        if (st != TLM_ERR_TRUNCATED) fail_msg("length %zu: status %d (%s)", n, st, err.msg);
        free(c);
    }
}

static void test_misaligned_buffer(void **state)
{
    (void)state;
    uint8_t *c = malloc(img_bytes + 1);
    memcpy(c + 1, img, img_bytes);
    tlm_model m;
    tlm_error err;
    assert_int_equal(tlm_model_open(&m, c + 1, img_bytes, &err), TLM_ERR_ARG);
    free(c);
}

static void mod_magic(uint8_t *p, size_t n) { (void)n; p[0] = 'X'; }
static void mod_version(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_VERSION, 2); }
static void mod_flags(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_FLAGS, 0x80); }
static void mod_data_byte(uint8_t *p, size_t n) { p[n - 100] ^= 0x40; }
static void mod_reserved(uint8_t *p, size_t n) { (void)n; p[TLM_H_RESERVED + 3] = 1; }

static void test_header_errors(void **state)
{
    (void)state;
    tlm_error err;
    assert_int_equal(open_mod(mod_magic, 1, &err), TLM_ERR_MAGIC);
    assert_int_equal(open_mod(mod_version, 1, &err), TLM_ERR_VERSION);
    assert_non_null(strstr(err.msg, "version 2"));
    assert_int_equal(open_mod(mod_flags, 1, &err), TLM_ERR_UNSUPPORTED);
    assert_int_equal(open_mod(mod_reserved, 1, &err), TLM_ERR_HPARAM);
    /* Damage without a fresh checksum is caught by the checksum. */
    assert_int_equal(open_mod(mod_data_byte, 0, &err), TLM_ERR_CHECKSUM);
}

static void mod_zero_dim(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_DIM, 0); }
static void mod_zero_layers(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_N_LAYERS, 0); }
static void mod_zero_vocab(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_VOCAB_SIZE, 0); }
static void mod_huge_dim(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_DIM, 0x80000000u); }
static void mod_huge_layers(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_N_LAYERS, 0xFFFFFFFFu); }
static void mod_huge_seq(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_SEQ_LEN, 0xFFFFFFFFu); }
static void mod_heads_nodiv(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_N_HEADS, 3); }
static void mod_kv_nodiv(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_N_KV_HEADS, 3); }
static void mod_kv_more(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_N_KV_HEADS, 8); }
static void mod_eps_nan(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_NORM_EPS, 0x7FC00000u); }
static void mod_theta_inf(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_ROPE_THETA, 0x7F800000u); }

static void test_hparam_errors(void **state)
{
    (void)state;
    void (*mods[])(uint8_t *, size_t) = {mod_zero_dim,    mod_zero_layers, mod_zero_vocab, mod_huge_dim,
                                         mod_huge_layers, mod_huge_seq,    mod_heads_nodiv, mod_kv_nodiv,
                                         mod_kv_more,     mod_eps_nan,     mod_theta_inf};
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {
        tlm_error err;
        tlm_status st = open_mod(mods[i], 1, &err);
        if (st != TLM_ERR_HPARAM) fail_msg("mod %zu: status %d (%s)", i, st, err.msg);
        assert_true(strlen(err.msg) > 10);
    }
}

static uint8_t *entry(uint8_t *p, uint32_t i) { return p + tlm_rd64(p + TLM_H_TENSOR_TABLE_OFFSET) + 64u * i; }

static void mod_n_tensors_huge(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_N_TENSORS, 0xFFFFFFFFu); }
static void mod_table_past_end(uint8_t *p, size_t n) { tlm_wr64(p + TLM_H_TENSOR_TABLE_OFFSET, n - 64); }
static void mod_table_wrap(uint8_t *p, size_t n) { (void)n; tlm_wr64(p + TLM_H_TENSOR_TABLE_OFFSET, UINT64_MAX - 63); }
static void mod_data_off_past(uint8_t *p, size_t n) { tlm_wr64(entry(p, 3) + TLM_T_DATA_OFFSET, (n + 64) & ~(uint64_t)63); }
static void mod_data_off_wrap(uint8_t *p, size_t n) { (void)n; tlm_wr64(entry(p, 3) + TLM_T_DATA_OFFSET, UINT64_MAX - 63); }
static void mod_data_off_misaligned(uint8_t *p, size_t n) { (void)n; uint8_t *e = entry(p, 3); tlm_wr64(e + TLM_T_DATA_OFFSET, tlm_rd64(e + TLM_T_DATA_OFFSET) + 4); }
static void mod_data_bytes(uint8_t *p, size_t n) { (void)n; uint8_t *e = entry(p, 3); tlm_wr64(e + TLM_T_DATA_BYTES, tlm_rd64(e + TLM_T_DATA_BYTES) - 4); }
static void mod_shape(uint8_t *p, size_t n) { (void)n; tlm_wr32(entry(p, 2) + TLM_T_ROWS, 17); }
static void mod_shape_overflow(uint8_t *p, size_t n) { (void)n; tlm_wr32(entry(p, 2) + TLM_T_ROWS, 0xFFFFFFFFu); tlm_wr32(entry(p, 2) + TLM_T_COLS, 0xFFFFFFFFu); }
static void mod_role_order(uint8_t *p, size_t n) { (void)n; tlm_wr16(entry(p, 2) + TLM_T_ROLE, TLM_ROLE_WK); }
static void mod_layer(uint8_t *p, size_t n) { (void)n; tlm_wr16(entry(p, 2) + TLM_T_LAYER, 7); }
static void mod_wtype(uint8_t *p, size_t n) { (void)n; tlm_wr16(entry(p, 2) + TLM_T_WTYPE, 999); }
static void mod_scale_kind(uint8_t *p, size_t n) { (void)n; tlm_wr16(entry(p, 2) + TLM_T_SCALE_KIND, 2); }
static void mod_entry_reserved(uint8_t *p, size_t n) { (void)n; entry(p, 2)[TLM_T_RESERVED] = 1; }
static void mod_entry_size(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_TENSOR_ENTRY_BYTES, 32); }

static void test_tensor_errors(void **state)
{
    (void)state;
    struct {
        void (*mod)(uint8_t *, size_t);
        tlm_status want;
    } cases[] = {
        {mod_n_tensors_huge, TLM_ERR_TENSOR},  {mod_table_past_end, TLM_ERR_RANGE},
        {mod_table_wrap, TLM_ERR_RANGE},       {mod_data_off_past, TLM_ERR_RANGE},
        {mod_data_off_wrap, TLM_ERR_RANGE},    {mod_data_off_misaligned, TLM_ERR_RANGE},
        {mod_data_bytes, TLM_ERR_TENSOR},      {mod_shape, TLM_ERR_TENSOR},
        {mod_shape_overflow, TLM_ERR_TENSOR},  {mod_role_order, TLM_ERR_TENSOR},
        {mod_layer, TLM_ERR_TENSOR},           {mod_wtype, TLM_ERR_TENSOR},
        {mod_scale_kind, TLM_ERR_TENSOR},      {mod_entry_reserved, TLM_ERR_TENSOR},
        {mod_entry_size, TLM_ERR_TENSOR},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tlm_error err;
        tlm_status st = open_mod(cases[i].mod, 1, &err);
        if (st != cases[i].want) fail_msg("case %zu: status %d, expected %d (%s)", i, st, cases[i].want, err.msg);
    }
}

static uint8_t *vocab(uint8_t *p) { return p + tlm_rd64(p + TLM_H_VOCAB_OFFSET); }
static uint32_t V(uint8_t *p) { return tlm_rd32(p + TLM_H_VOCAB_SIZE); }

static void mod_vocab_past_end(uint8_t *p, size_t n) { tlm_wr64(p + TLM_H_VOCAB_BYTES, n); }
static void mod_vocab_wrap(uint8_t *p, size_t n) { (void)n; tlm_wr64(p + TLM_H_VOCAB_OFFSET, UINT64_MAX - 3); }
static void mod_vocab_small(uint8_t *p, size_t n) { (void)n; tlm_wr64(p + TLM_H_VOCAB_BYTES, 100); }
static void mod_str_past_pool(uint8_t *p, size_t n) { (void)n; tlm_wr32(vocab(p) + 4u * V(p) + 4u * 10, 0x7FFFFFF0u); }
static void mod_str_last_off(uint8_t *p, size_t n) { (void)n; uint8_t *o = vocab(p) + 4u * V(p) + 4u * V(p); tlm_wr32(o, tlm_rd32(o) + 1); }
static void mod_str_nul(uint8_t *p, size_t n) { (void)n; uint8_t *v = vocab(p); uint32_t o = tlm_rd32(v + 4u * V(p) + 4u); v[12u * V(p) + 4u + o - 1] = 'x'; }
static void mod_sorted_order(uint8_t *p, size_t n) { (void)n; uint8_t *s = vocab(p) + 8u * V(p) + 4u; uint32_t a = tlm_rd32(s), b = tlm_rd32(s + 4); tlm_wr32(s, b); tlm_wr32(s + 4, a); }
static void mod_sorted_range(uint8_t *p, size_t n) { (void)n; tlm_wr32(vocab(p) + 8u * V(p) + 4u, V(p)); }
static void mod_sorted_dup(uint8_t *p, size_t n) { (void)n; uint8_t *s = vocab(p) + 8u * V(p) + 4u; tlm_wr32(s + 4, tlm_rd32(s)); }
static void mod_score_nan(uint8_t *p, size_t n) { (void)n; tlm_wr32(vocab(p) + 8, 0x7FC00000u); }
static void mod_bos(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_BOS_ID, V(p)); }
static void mod_maxlen(uint8_t *p, size_t n) { (void)n; tlm_wr32(p + TLM_H_MAX_TOKEN_LEN, 3); }

static void test_vocab_errors(void **state)
{
    (void)state;
    struct {
        void (*mod)(uint8_t *, size_t);
        tlm_status want;
    } cases[] = {
        {mod_vocab_past_end, TLM_ERR_RANGE}, {mod_vocab_wrap, TLM_ERR_RANGE},   {mod_vocab_small, TLM_ERR_VOCAB},
        {mod_str_past_pool, TLM_ERR_VOCAB},  {mod_str_last_off, TLM_ERR_VOCAB}, {mod_str_nul, TLM_ERR_VOCAB},
        {mod_sorted_order, TLM_ERR_VOCAB},   {mod_sorted_range, TLM_ERR_VOCAB}, {mod_sorted_dup, TLM_ERR_VOCAB},
        {mod_score_nan, TLM_ERR_VOCAB},      {mod_bos, TLM_ERR_VOCAB},          {mod_maxlen, TLM_ERR_VOCAB},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tlm_error err;
        tlm_status st = open_mod(cases[i].mod, 1, &err);
        if (st != cases[i].want) fail_msg("case %zu: status %d, expected %d (%s)", i, st, cases[i].want, err.msg);
    }
}

/* Random damage to the header, table and tokenizer, resealed so that only
 * the structural checks stand between it and the reader. Whatever opens
 * must then be safe to run. */
static void test_random_damage(void **state)
{
    (void)state;
    uint64_t rng = 7;
    size_t first_data = (size_t)tlm_rd64(entry(img, 0) + TLM_T_DATA_OFFSET);
    int opened = 0;
    for (int it = 0; it < 3000; it++) {
        uint8_t *c = tu_exact_copy(img, img_bytes);
        int flips = 1 + (int)(tu_rand(&rng) % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = (size_t)(tu_rand(&rng) % first_data);
            if (at >= TLM_H_CRC32 && at < TLM_H_CRC32 + 4) continue;
            c[at] = (uint8_t)tu_rand(&rng);
        }
        tlm_image_reseal(c, img_bytes);
        tlm_model m;
        tlm_error err;
        if (tlm_model_open(&m, c, img_bytes, &err) == TLM_OK) {
            opened++;
            tlm_tensor t;
            for (uint32_t i = 0; i < m.n_tensors; i++) {
                tlm_model_tensor_at(&m, i, &t);
                volatile uint8_t sink = t.data[t.data_bytes - 1];
                (void)sink;
            }
        } else {
            assert_true(err.msg[0] != 0);
        }
        free(c);
    }
    print_message("%d of 3000 damaged images still valid (changes in scores or string bytes)\n", opened);
}

/* The core's message formatter against the C library's printf: the
 * integer conversions exactly, %g and %f to their precision (an exact
 * match for typical figures), and an unknown conversion reads no further
 * argument. */
static void test_error_messages(void **state)
{
    (void)state;
    tlm_error e;
    char want[256];
    tlm_fail(&e, TLM_ERR_ARG, "%s|%u|%d|%lu|%ld|%llu|%zu|%x|%%", "ab", 4000000000u, -7, 123456789ul, -42l,
             18446744073709551615ull, (size_t)77, 0xbeefu);
    snprintf(want, sizeof want, "%s|%u|%d|%lu|%ld|%llu|%zu|%x|%%", "ab", 4000000000u, -7, 123456789ul, -42l,
             18446744073709551615ull, (size_t)77, 0xbeefu);
    assert_string_equal(e.msg, want);
    const double typical[] = {0.5, 5.2215344450271424, 1e-06, 12345678.0, 0.000123, 3.0, 100.0, 1e20, -2.5, 0.0, 9.99999, 1234.5678, 0.1};
    const char *fmts[] = {"%g", "%.4g", "%.2f", "%f", "%.6g"};
    for (size_t i = 0; i < sizeof typical / sizeof typical[0]; i++)
        for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
            if (strchr(fmts[f], 'f') && fabs(typical[i]) >= 1e12) continue; /* %f of these falls back to %g */
            tlm_fail(&e, TLM_ERR_ARG, fmts[f], typical[i]);
            snprintf(want, sizeof want, fmts[f], typical[i]);
            assert_string_equal(e.msg, want);
        }
    /* any double: within the precision asked */
    uint64_t s = 99;
    for (int i = 0; i < 20000; i++) {
        const double v = (tu_uniform(&s) - 0.5) * pow(10.0, (double)(int)(tu_rand(&s) % 60) - 30);
        tlm_fail(&e, TLM_ERR_ARG, "%.5g", v);
        const double back = strtod(e.msg, NULL);
        assert_true(fabs(back - v) <= 1.01e-4 * fabs(v));
    }
    tlm_fail(&e, TLM_ERR_ARG, "%g %g", NAN, -INFINITY);
    assert_string_equal(e.msg, "nan -inf");
    /* %c is not understood: the rest is copied and the string after it never read */
    tlm_fail(&e, TLM_ERR_ARG, "a %c then %s", 'x', "zz");
    assert_string_equal(e.msg, "a ?c then %s");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32_check_value), cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_valid_image_opens), cmocka_unit_test(test_truncated_at_every_length),
        cmocka_unit_test(test_misaligned_buffer), cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_hparam_errors),     cmocka_unit_test(test_tensor_errors),
        cmocka_unit_test(test_vocab_errors),      cmocka_unit_test(test_random_damage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
