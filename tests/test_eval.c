/* Story-level evaluation reproduces the reference figures of
 * ../shared/data/README.md (measured there with llama2.c's C code). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/host/eval.h"
#include "../src/host/fileio.h"
#include "../src/host/stories.h"
#include "testutil.h"
#include "tritlm/tokenizer.h"

static uint8_t *img, *text;
static size_t img_bytes, text_len;
static tlm_model m;

static void test_reference_figures(void **state)
{
    (void)state;
    tlm_eval_opts o = {0};
    tlm_eval_result r;
    tlm_error err;
    assert_int_equal(tlm_eval_text(&m, (const char *)text, text_len, &o, &r, &err), TLM_OK);
    print_message("loss %.5f ppl %.4f top1 %.5f tokens %llu stories %llu truncated %llu\n", r.loss, r.perplexity, r.top1,
                  (unsigned long long)r.tokens, (unsigned long long)r.stories, (unsigned long long)r.truncated);
    assert_int_equal(r.stories, 300);
    assert_int_equal(r.tokens, 108127);
    assert_int_equal(r.truncated, 50);
    assert_true(fabs(r.loss / 1.32746 - 1) < 1e-3);
    assert_true(fabs(r.perplexity / 3.7714 - 1) < 1e-3);
    assert_true(fabs(r.top1 / 0.64666 - 1) < 1e-3);
}

/* The first n stories of dev.txt, separators included. */
static size_t prefix_of_stories(size_t n)
{
    const char *p = (const char *)text;
    for (size_t i = 0; i < n; i++) {
        const char *s = strstr(p, TLM_STORY_SEPARATOR);
        if (!s) return text_len;
        p = s + strlen(TLM_STORY_SEPARATOR);
    }
    return (size_t)(p - (const char *)text);
}

static void test_paths_and_threads_agree(void **state)
{
    (void)state;
    size_t len = prefix_of_stories(30);
    tlm_eval_result seq1, seq2, tok1;
    tlm_eval_opts o = {.threads = 1};
    assert_int_equal(tlm_eval_text(&m, (const char *)text, len, &o, &seq1, NULL), TLM_OK);
    o.threads = 2;
    assert_int_equal(tlm_eval_text(&m, (const char *)text, len, &o, &seq2, NULL), TLM_OK);
    o.token_by_token = 1;
    assert_int_equal(tlm_eval_text(&m, (const char *)text, len, &o, &tok1, NULL), TLM_OK);
    assert_int_equal(seq1.stories, 30);
    assert_true(seq1.loss == seq2.loss); /* reduction in story order: bit-identical */
    assert_int_equal(seq1.tokens, tok1.tokens);
    assert_true(fabs(seq1.loss - tok1.loss) < 1e-5);
    assert_true(fabs(seq1.top1 - tok1.top1) < 2.0 / (double)seq1.tokens);
}

static void test_context_truncation(void **state)
{
    (void)state;
    size_t len = prefix_of_stories(20);
    tlm_eval_result r;
    tlm_eval_opts o = {.ctx = 64};
    assert_int_equal(tlm_eval_text(&m, (const char *)text, len, &o, &r, NULL), TLM_OK);
    /* Oracle: encode each story and count min(n, 64) - 1 predictions. */
    tlm_stories st;
    assert_int_equal(tlm_stories_split((const char *)text, len, &st, NULL), TLM_OK);
    uint64_t want_tokens = 0, want_trunc = 0;
    for (size_t i = 0; i < st.n; i++) {
        size_t cap = TLM_ENCODE_MAX_IDS(st.items[i].len), n = 0;
        uint32_t *ids = malloc(cap * 4);
        int32_t *scr = malloc(TLM_ENCODE_SCRATCH(cap) * 4);
        assert_int_equal(tlm_encode(&m, st.items[i].text, st.items[i].len, TLM_ENCODE_BOS, ids, cap, scr, &n), TLM_OK);
        want_tokens += (n > 64 ? 64 : n) - 1;
        want_trunc += n > 64;
        free(ids);
        free(scr);
    }
    assert_int_equal(r.tokens, want_tokens);
    assert_int_equal(r.truncated, want_trunc);
    tlm_stories_free(&st);
    tlm_error err;
    o.ctx = 513;
    assert_int_equal(tlm_eval_text(&m, (const char *)text, len, &o, &r, &err), TLM_ERR_ARG);
    o.ctx = 0;
    assert_int_equal(tlm_eval_text(&m, "  \n<|endoftext|>\n ", 18, &o, &r, &err), TLM_ERR_FORMAT);
}

int main(void)
{
    tu_import_stories260k(&img, &img_bytes);
    assert_int_equal(tlm_read_file(tu_data("tinystories/dev.txt"), &text, &text_len, NULL), TLM_OK);
    if (tlm_model_open(&m, img, img_bytes, NULL)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_figures),
        cmocka_unit_test(test_paths_and_threads_agree),
        cmocka_unit_test(test_context_truncation),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(img);
    free(text);
    return rc;
}
