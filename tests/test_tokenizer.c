#define _GNU_SOURCE
/* Tokenizer: encode against a naive oracle written from the llama2.c
 * semantics (string concatenation, linear vocabulary search, full rescan
 * after each merge), and decode(encode(x)) == x over all of TinyStories. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/host/bpe_train.h"
#include "../src/host/fileio.h"
#include "../src/host/image_build.h"
#include "../src/host/stories.h"
#include "../src/host/train/params.h"
#include "testutil.h"
#include "tritlm/tokenizer.h"

/* ---- oracle ----
 * Lookups are linear over the vocabulary, or (for long texts) go through
 * tlm_token_lookup; the merge loop is always the naive full rescan. */
static const tlm_model *oracle_index;

static int find(const tlm_vocab *v, const uint8_t *s, size_t n)
{
    if (oracle_index) return tlm_token_lookup(oracle_index, s, n);
    for (uint32_t i = 0; i < v->n; i++)
        if (v->lens[i] == n && memcmp(v->strs[i], s, n) == 0) return (int)i;
    return -1;
}

static size_t oracle_encode(const tlm_vocab *v, const uint8_t *text, size_t len, uint32_t *out)
{
    size_t k = 0;
    out[k++] = 1;
    if (len) {
        int sp = find(v, (const uint8_t *)" ", 1);
        out[k++] = (uint32_t)(sp >= 0 ? sp : find(v, (const uint8_t *)"<0x20>", 6));
    }
    size_t i = 0;
    while (i < len) {
        size_t j = i + 1;
        while (j < len && (text[j] & 0xC0) == 0x80 && j - i < 4) j++;
        int id = find(v, text + i, j - i);
        if (id >= 0) out[k++] = (uint32_t)id;
        else
            for (size_t b = i; b < j; b++) {
                char name[8];
                snprintf(name, sizeof name, "<0x%02X>", text[b]);
                out[k++] = (uint32_t)find(v, (const uint8_t *)name, 6);
            }
        i = j;
    }
    for (;;) {
        int best = -1, best_id = -1;
        float best_score = 0;
        for (size_t p = 0; p + 1 < k; p++) {
            uint8_t buf[512];
            size_t na = v->lens[out[p]], nb = v->lens[out[p + 1]];
            memcpy(buf, v->strs[out[p]], na);
            memcpy(buf + na, v->strs[out[p + 1]], nb);
            int id = find(v, buf, na + nb);
            if (id >= 0 && (best < 0 || v->scores[id] > best_score)) {
                best = (int)p;
                best_id = id;
                best_score = v->scores[id];
            }
        }
        if (best < 0) break;
        out[best] = (uint32_t)best_id;
        memmove(out + best + 1, out + best + 2, (k - (size_t)best - 2) * sizeof *out);
        k--;
    }
    return k;
}

static void check_against_oracle(const tlm_model *m, const tlm_vocab *v, const uint8_t *text, size_t len)
{
    size_t cap = TLM_ENCODE_MAX_IDS(len);
    uint32_t *got = malloc(cap * sizeof *got), *want = malloc(cap * sizeof *want);
    int32_t *scratch = malloc(TLM_ENCODE_SCRATCH(cap) * sizeof *scratch);
    size_t n = 0;
    assert_int_equal(tlm_encode(m, (const char *)text, len, TLM_ENCODE_BOS, got, cap, scratch, &n), TLM_OK);
    size_t nw = oracle_encode(v, text, len, want);
    if (n != nw || memcmp(got, want, n * sizeof *got) != 0) fail_msg("encode differs from the oracle on %.*s", (int)len, text);
    free(got);
    free(want);
    free(scratch);
}

static void test_tiny_vocab_matches_oracle(void **state)
{
    (void)state;
    uint8_t *img;
    size_t bytes;
    tu_tiny cfg = {.dim = 8, .hidden = 8, .layers = 1, .heads = 2, .kv_heads = 1, .seq_len = 8, .n_merges = 400, .shared = 1};
    tu_build_tiny(&cfg, 3, &img, &bytes);
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, img, bytes, NULL), TLM_OK);
    tlm_vocab v;
    assert_int_equal(tlm_vocab_from_model(&m, &v, NULL), TLM_OK);
    static const char *pieces[] = {"a", "b", "c", "d", "e", "ab", " ", "\xC3\xA9", "\xE2\x82\xAC", "\x80", "\xFF", "z", "\xF0\x9F\x98\x80"};
    uint64_t rng = 11;
    for (int it = 0; it < 600; it++) {
        uint8_t text[1200];
        size_t len = 0;
        int parts = (int)(tu_rand(&rng) % (it < 300 ? 24 : 280));
        for (int p = 0; p < parts; p++) {
            const char *s = pieces[tu_rand(&rng) % (sizeof pieces / sizeof pieces[0])];
            size_t l = strlen(s);
            memcpy(text + len, s, l);
            len += l;
        }
        check_against_oracle(&m, &v, text, len);
    }
    tlm_vocab_free(&v);
    free(img);
}

static void test_edge_cases(void **state)
{
    (void)state;
    uint8_t *img;
    size_t bytes;
    tu_tiny cfg = {.dim = 8, .hidden = 8, .layers = 1, .heads = 2, .kv_heads = 1, .seq_len = 8, .n_merges = 40, .shared = 1};
    tu_build_tiny(&cfg, 5, &img, &bytes);
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, img, bytes, NULL), TLM_OK);
    uint32_t ids[16];
    int32_t scratch[TLM_ENCODE_SCRATCH(16)];
    size_t n = 99;
    assert_int_equal(tlm_encode(&m, "", 0, TLM_ENCODE_BOS, ids, 16, scratch, &n), TLM_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1);
    assert_int_equal(tlm_encode(&m, "", 0, TLM_ENCODE_BOS | TLM_ENCODE_EOS, ids, 16, scratch, &n), TLM_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1], 2);
    /* too little room */
    assert_int_equal(tlm_encode(&m, "abcdefghijklmnop", 16, 0, ids, 16, scratch, &n), TLM_ERR_ARG);
    /* the length, not a NUL, ends the text: NUL is a byte like any other and
     * comes back through its byte token */
    assert_int_equal(tlm_encode(&m, "a\0b", 3, TLM_ENCODE_BOS, ids, 16, scratch, &n), TLM_OK);
    {
        const int32_t nul = tlm_token_lookup(&m, "<0x00>", 6);
        assert_true(nul >= 0);
        int seen = 0;
        uint8_t back[8];
        size_t k = 0;
        for (size_t i = 1; i < n; i++) {
            const uint8_t *pc;
            const size_t len = tlm_decode_piece(&m, ids[i - 1], ids[i], &pc);
            assert_true(k + len <= sizeof back);
            memcpy(back + k, pc, len);
            k += len;
            seen += ids[i] == (uint32_t)nul;
        }
        assert_int_equal(seen, 1);
        assert_int_equal(k, 3);
        assert_memory_equal(back, "a\0b", 3);
    }
    /* a byte token decodes to its byte; a leading space after BOS is dropped */
    const uint8_t *piece;
    int32_t b = tlm_token_lookup(&m, "<0xE2>", 6);
    assert_true(b >= 0);
    assert_int_equal(tlm_decode_piece(&m, 5, (uint32_t)b, &piece), 1);
    assert_int_equal(piece[0], 0xE2);
    int32_t sp = tlm_token_lookup(&m, " ", 1);
    if (sp >= 0) {
        assert_int_equal(tlm_decode_piece(&m, 1, (uint32_t)sp, &piece), 0);
        assert_int_equal(tlm_decode_piece(&m, 7, (uint32_t)sp, &piece), 1);
    }
    free(img);
}

static uint8_t *s260;
static size_t s260_bytes;

static void test_stories260k_matches_oracle(void **state)
{
    (void)state;
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, s260, s260_bytes, NULL), TLM_OK);
    tlm_vocab v;
    assert_int_equal(tlm_vocab_from_model(&m, &v, NULL), TLM_OK);
    uint8_t *text;
    size_t len;
    assert_int_equal(tlm_read_file(tu_data("tinystories/dev.txt"), &text, &len, NULL), TLM_OK);
    tlm_stories st;
    assert_int_equal(tlm_stories_split((char *)text, len, &st, NULL), TLM_OK);
    for (size_t i = 0; i < 12 && i < st.n; i++)
        check_against_oracle(&m, &v, (const uint8_t *)st.items[i].text, st.items[i].len < 160 ? st.items[i].len : 160);
    /* whole stories, with indexed lookups in the oracle */
    oracle_index = &m;
    for (size_t i = 0; i < 120 && i < st.n; i++)
        check_against_oracle(&m, &v, (const uint8_t *)st.items[i].text, st.items[i].len);
    oracle_index = NULL;
    /* the mis-encoded bytes of TinyStories */
    check_against_oracle(&m, &v, (const uint8_t *)"He said \xC3\xA2\xE2\x82\xAC\xC5\x93hi\xC3\xA2\xE2\x82\xAC\x9D \x80\xFF!", 23);
    tlm_stories_free(&st);
    free(text);
    tlm_vocab_free(&v);
}

/* decode(encode(segment)) == segment for every raw segment of a file
 * (between separators, whitespace included), so the file comes back whole. */
static void round_trip_file(const tlm_model *m, const char *rel)
{
    uint8_t *text;
    size_t len;
    assert_int_equal(tlm_read_file(tu_data(rel), &text, &len, NULL), TLM_OK);
    size_t cap = TLM_ENCODE_MAX_IDS(len);
    uint32_t *ids = malloc(cap * sizeof *ids);
    int32_t *scratch = malloc(TLM_ENCODE_SCRATCH(cap) * sizeof *scratch);
    uint8_t *back = malloc(len + 1);
    size_t out = 0, segments = 0, tokens = 0;
    const char *sep = TLM_STORY_SEPARATOR;
    size_t sl = strlen(sep);
    for (size_t a = 0; a <= len;) {
        const uint8_t *hit = memmem(text + a, len - a, sep, sl);
        size_t b = hit ? (size_t)(hit - text) : len;
        size_t n = 0;
        assert_int_equal(tlm_encode(m, (const char *)text + a, b - a, TLM_ENCODE_BOS, ids, cap, scratch, &n), TLM_OK);
        for (size_t i = 1; i < n; i++) {
            const uint8_t *p;
            size_t pl = tlm_decode_piece(m, ids[i - 1], ids[i], &p);
            memcpy(back + out, p, pl);
            out += pl;
        }
        tokens += n;
        segments++;
        if (!hit) break;
        memcpy(back + out, sep, sl);
        out += sl;
        a = b + sl;
    }
    assert_int_equal(out, len);
    assert_memory_equal(back, text, len);
    print_message("%s: %zu segments, %zu tokens, %zu bytes round-tripped\n", rel, segments, tokens, len);
    free(ids);
    free(scratch);
    free(back);
    free(text);
}

static void test_round_trip_tinystories(void **state)
{
    (void)state;
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, s260, s260_bytes, NULL), TLM_OK);
    round_trip_file(&m, "tinystories/dev.txt");
    round_trip_file(&m, "tinystories/train.txt");
}

/* A model image (tiny zero weights) around vocabulary v; *img to free. */
static void open_with_vocab(const tlm_vocab *v, tlm_model *m, uint8_t **img)
{
    tlm_hparams hp = {.dim = 8, .hidden_dim = 8, .n_layers = 1, .n_heads = 1, .n_kv_heads = 1, .vocab_size = v->n,
                      .seq_len = 8, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .shared_classifier = 1};
    tlm_params p;
    assert_int_equal(tlm_params_alloc(&p, &hp, NULL), TLM_OK);
    size_t bytes;
    assert_int_equal(tlm_params_to_image(&p, v, 1, 2, img, &bytes, NULL), TLM_OK);
    tlm_params_free(&p);
    assert_int_equal(tlm_model_open(m, *img, bytes, NULL), TLM_OK);
}

/* decode(encode(text)) == text; the ids in *ids (n_ids) for the caller. */
static void assert_round_trip(const tlm_model *m, const char *text, size_t len, uint32_t *ids, size_t *n_ids)
{
    const size_t cap = TLM_ENCODE_MAX_IDS(len);
    int32_t *scratch = malloc(TLM_ENCODE_SCRATCH(cap) * sizeof *scratch);
    uint8_t *back = malloc(len + 1);
    size_t n = 0, k = 0;
    assert_int_equal(tlm_encode(m, text, len, TLM_ENCODE_BOS, ids, cap, scratch, &n), TLM_OK);
    for (size_t i = 1; i < n; i++) {
        const uint8_t *pc;
        const size_t pl = tlm_decode_piece(m, ids[i - 1], ids[i], &pc);
        assert_true(k + pl <= len);
        memcpy(back + k, pc, pl);
        k += pl;
    }
    if (k != len || memcmp(back, text, len)) fail_msg("'%.*s' came back as '%.*s'", (int)len, text, (int)k, back);
    *n_ids = n;
    free(scratch);
    free(back);
}

/* Text that spells a byte token's name stays text, and a fallback byte is
 * glued to no neighbour, even when the vocabulary has merges that would
 * (llama2.c's encoder merges by name: "<0x4" + "2>" is the byte token
 * <0x42>, and <0xE3> + "a" the piece "<0xE3>a"; found by scripts/fuzz.sh). */
static void test_byte_names_stay_text(void **state)
{
    (void)state;
    static const char *const extra[] = {" ", "<", "0", "x", "4", "2", ">", "a", "E", "3",      /* characters */
                                        "<0", "<0x", "<0x4", "2>", "<0xE3>a", " <0x4", "3>"}; /* merges */
    const uint32_t n_extra = sizeof extra / sizeof *extra, n = 259 + n_extra;
    tlm_vocab v = {.n = n, .max_token_length = 8};
    v.scores = calloc(n, sizeof *v.scores);
    v.lens = calloc(n, sizeof *v.lens);
    v.strs = calloc(n, sizeof *v.strs);
    for (uint32_t i = 0; i < n; i++) {
        char name[16];
        if (i < 3) snprintf(name, sizeof name, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
        else if (i < 259) snprintf(name, sizeof name, "<0x%02X>", i - 3);
        else snprintf(name, sizeof name, "%s", extra[i - 259]);
        v.lens[i] = (uint32_t)strlen(name);
        v.strs[i] = (uint8_t *)strdup(name);
        v.scores[i] = i < 269 ? 0.0f : 100.0f - (float)i; /* earlier merges first */
    }
    tlm_model m;
    uint8_t *img;
    open_with_vocab(&v, &m, &img);
    uint32_t ids[64];
    size_t k;
    assert_round_trip(&m, "<0x42>", 6, ids, &k);
    assert_round_trip(&m, "a <0x42> <0x43>", 15, ids, &k);
    assert_round_trip(&m, "\xE3" "a", 2, ids, &k);
    assert_int_equal(k, 4); /* BOS, " ", <0xE3>, "a" */
    assert_int_equal(ids[2], 3 + 0xE3);
    free(img);
    tlm_vocab_free(&v);

    /* a tokenizer trained on such text learns no merge that decodes as a
     * byte, and gives the text back */
    static const char text[] = "x <0x41> and <0xE3>a, \xE3" "a <0x42>; <0x41> again <0x41>\n<|endoftext|>\n"
                               " <0x41> <0x41> <0xE3>a <0xE3>a \xE3" "a \xE3" "a";
    const char *texts[] = {text};
    size_t lens[] = {sizeof text - 1};
    tlm_bpe_opts o = {.vocab_size = 320, .char_coverage = 0.9995};
    tlm_vocab t;
    assert_int_equal(tlm_bpe_train(texts, lens, 1, &o, &t, NULL), TLM_OK);
    for (uint32_t i = 259; i < t.n; i++)
        if (tlm_decodes_as_byte(t.strs[i], t.lens[i])) fail_msg("token %u is '%s'", i, (const char *)t.strs[i]);
    open_with_vocab(&t, &m, &img);
    uint32_t many[256];
    assert_round_trip(&m, text, sizeof text - 1, many, &k);
    assert_round_trip(&m, "<0x41>", 6, many, &k);
    free(img);
    tlm_vocab_free(&t);
}

/* Text without a single space (Japanese, say) still gets a space token:
 * the encoder's leading space must decode away after BOS, which it does not
 * as the byte token <0x20> (found by scripts/fuzz.sh). */
static void test_trained_without_spaces(void **state)
{
    (void)state;
    static const char text[] = "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87"
                               "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87\xE3\x80\x82";
    const char *texts[] = {text};
    size_t lens[] = {sizeof text - 1};
    tlm_bpe_opts o = {.vocab_size = 270, .char_coverage = 0.9995};
    tlm_vocab t;
    assert_int_equal(tlm_bpe_train(texts, lens, 1, &o, &t, NULL), TLM_OK);
    assert_int_equal(t.lens[259], 1);
    assert_int_equal(t.strs[259][0], ' ');
    tlm_model m;
    uint8_t *img;
    open_with_vocab(&t, &m, &img);
    uint32_t ids[64];
    size_t k;
    assert_round_trip(&m, text, sizeof text - 1, ids, &k);
    assert_round_trip(&m, "\xE6\x97\xA5", 3, ids, &k);
    free(img);
    tlm_vocab_free(&t);
}

int main(void)
{
    const struct CMUnitTest synthetic[] = {
        cmocka_unit_test(test_tiny_vocab_matches_oracle),
        cmocka_unit_test(test_edge_cases),
        cmocka_unit_test(test_byte_names_stay_text),
        cmocka_unit_test(test_trained_without_spaces),
    };
    int rc = cmocka_run_group_tests_name("tokenizer (synthetic vocabulary)", synthetic, NULL, NULL);
    if (rc) return rc;
    tu_import_stories260k(&s260, &s260_bytes);
    const struct CMUnitTest real[] = {
        cmocka_unit_test(test_stories260k_matches_oracle),
        cmocka_unit_test(test_round_trip_tinystories),
    };
    rc = cmocka_run_group_tests_name("tokenizer (stories260K vocabulary)", real, NULL, NULL);
    free(s260);
    return rc;
}
