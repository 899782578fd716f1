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
#include "tritlm/runtime.h"
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

/* A story's token ids with BOS (malloc'd) and their count. */
static uint32_t *encode_story(const tlm_span *story, size_t *n)
{
    const size_t cap = TLM_ENCODE_MAX_IDS(story->len);
    uint32_t *ids = malloc(cap * 4);
    int32_t *scr = malloc(TLM_ENCODE_SCRATCH(cap) * 4);
    assert_int_equal(tlm_encode(&m, story->text, story->len, TLM_ENCODE_BOS, ids, cap, scr, n), TLM_OK);
    free(scr);
    return ids;
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
        size_t n = 0;
        free(encode_story(&st.items[i], &n));
        want_tokens += (n > 64 ? 64 : n) - 1;
        want_trunc += n > 64;
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

/* --windows: every token after BOS predicted once, with and without
 * overlap (--stride). Oracle: the device runtime, one position at a time,
 * restarted at position 0 for each window, scoring each target in the
 * window a closed form names, and the loss as a double log-sum-exp. With
 * a context longer than every story the windows change nothing, to the bit. */
static void test_windows(void **state)
{
    (void)state;
    const uint32_t ctx = 40;
    const size_t len = prefix_of_stories(6);
    tlm_stories st;
    assert_int_equal(tlm_stories_split((const char *)text, len, &st, NULL), TLM_OK);
    const size_t ab = tlm_runtime_arena_size(&m, ctx);
    void *arena = malloc(ab);
    tlm_runtime rt;
    assert_int_equal(tlm_runtime_init(&rt, &m, ctx, arena, ab, NULL), TLM_OK);
    const uint32_t V = m.hp.vocab_size;
    const uint32_t strides[2] = {0, 13}; /* 0: ctx - 1, windows that share one token */
    for (int c = 0; c < 2; c++) {
        const uint32_t S = strides[c] ? strides[c] : ctx - 1;
        tlm_eval_opts o = {.ctx = ctx, .windows = 1, .stride = strides[c], .per_story = 1, .threads = 2};
        tlm_eval_result r;
        assert_int_equal(tlm_eval_text(&m, (const char *)text, len, &o, &r, NULL), TLM_OK);
        assert_int_equal(r.stories, st.n);
        assert_int_equal(r.truncated, 0);
        uint64_t tokens = 0, windows = 0;
        for (size_t i = 0; i < st.n; i++) {
            size_t n = 0;
            uint32_t *ids = encode_story(&st.items[i], &n);
            assert_true(n > 2 * ctx); /* dev stories are long enough to need several windows at 40 */
            double loss = 0;
            uint32_t correct = 0;
            /* window k holds tokens k*S .. k*S + ctx - 1; target t is scored in
             * the first window that predicts it: k(t) = 0 below ctx, else
             * floor((t - ctx) / S) + 1 */
            for (size_t k = 0, a = 0; a + 1 < n; k++, a += S) {
                if (k > 0 && a - S + ctx >= n) break; /* the previous window reached the end */
                windows++;
                for (size_t p = 0; a + p + 1 < n && p + 1 < ctx; p++) {
                    float *logits = NULL;
                    tlm_runtime_forward(&rt, ids[a + p], (uint32_t)p, &logits);
                    const size_t t = a + p + 1;
                    if ((t < ctx ? 0 : (t - ctx) / S + 1) != k) continue;
                    double mx = logits[0];
                    uint32_t best = 0;
                    for (uint32_t v = 1; v < V; v++)
                        if (logits[v] > mx) mx = logits[best = v];
                    double z = 0;
                    for (uint32_t v = 0; v < V; v++) z += exp((double)logits[v] - mx);
                    loss += log(z) + mx - (double)logits[ids[t]];
                    correct += best == ids[t];
                }
            }
            assert_int_equal(r.story[i].predicted, n - 1);
            assert_true(fabs(r.story[i].loss - loss) < 1e-4 * (double)(n - 1));
            assert_true(abs((int)r.story[i].correct - (int)correct) <= 2);
            tokens += n - 1;
            free(ids);
        }
        assert_int_equal(r.tokens, tokens);
        assert_int_equal(r.windows, windows);
        tlm_eval_result_free(&r);
    }
    free(arena);
    tlm_stories_free(&st);
    tlm_eval_opts bad = {.ctx = ctx, .windows = 1, .stride = ctx};
    tlm_eval_result r;
    assert_int_equal(tlm_eval_text(&m, (const char *)text, len, &bad, &r, NULL), TLM_ERR_ARG);

    /* stories that fit the model's whole context: one window, the same bits */
    tlm_eval_result plain, win;
    tlm_eval_opts a = {.per_story = 1}, b = {.windows = 1, .per_story = 1};
    assert_int_equal(tlm_eval_text(&m, (const char *)text, len, &a, &plain, NULL), TLM_OK);
    assert_int_equal(tlm_eval_text(&m, (const char *)text, len, &b, &win, NULL), TLM_OK);
    size_t fit = 0;
    for (size_t i = 0; i < plain.stories; i++) {
        if (plain.story[i].predicted + 1 >= m.hp.seq_len) continue; /* (possibly cut) */
        fit++;
        assert_true(plain.story[i].loss == win.story[i].loss);
        assert_int_equal(plain.story[i].predicted, win.story[i].predicted);
        assert_int_equal(plain.story[i].correct, win.story[i].correct);
    }
    assert_true(fit >= 3);
    assert_int_equal(win.windows, win.stories + plain.truncated);
    tlm_eval_result_free(&plain);
    tlm_eval_result_free(&win);
}

/* --split lines: the same stories, one per line (CRLF and blank lines in
 * between), give the figures that <|endoftext|> separators give, story by
 * story and to the bit. */
static void test_split_lines(void **state)
{
    (void)state;
    tlm_stories st;
    assert_int_equal(tlm_stories_split((const char *)text, prefix_of_stories(8), &st, NULL), TLM_OK);
    size_t total = 0;
    for (size_t i = 0; i < st.n; i++) total += st.items[i].len + 32;
    char *lines = malloc(total), *seps = malloc(total);
    size_t nl = 0, ns = 0;
    for (size_t i = 0; i < st.n; i++) {
        for (size_t k = 0; k < st.items[i].len; k++) {
            const char c = st.items[i].text[k];
            lines[nl++] = seps[ns++] = c == '\n' || c == '\r' ? ' ' : c;
        }
        memcpy(lines + nl, "\r\n \n\t\n", 6);
        nl += 6;
        memcpy(seps + ns, "\n<|endoftext|>\n", 15);
        ns += 15;
    }
    tlm_eval_opts ol = {.separator = "\n", .per_story = 1, .ctx = 128}, os = {.per_story = 1, .ctx = 128};
    tlm_eval_result rl, rs;
    assert_int_equal(tlm_eval_text(&m, lines, nl, &ol, &rl, NULL), TLM_OK);
    assert_int_equal(tlm_eval_text(&m, seps, ns, &os, &rs, NULL), TLM_OK);
    assert_int_equal(rs.stories, st.n);
    assert_int_equal(rl.stories, st.n);
    assert_true(st.n >= 8);
    for (size_t i = 0; i < st.n; i++) {
        assert_true(rl.story[i].loss == rs.story[i].loss);
        assert_int_equal(rl.story[i].predicted, rs.story[i].predicted);
        assert_int_equal(rl.story[i].correct, rs.story[i].correct);
    }
    tlm_eval_result_free(&rl);
    tlm_eval_result_free(&rs);
    free(lines);
    free(seps);
    tlm_stories_free(&st);
}

/* Per-story figures add up to the totals; a model against itself differs
 * by exactly nothing; stories tokenized differently are refused. */
static void test_per_story_and_self_comparison(void **state)
{
    (void)state;
    size_t len = prefix_of_stories(40);
    tlm_eval_opts o = {.ctx = 128, .per_story = 1};
    tlm_eval_result r;
    assert_int_equal(tlm_eval_text(&m, (const char *)text, len, &o, &r, NULL), TLM_OK);
    assert_non_null(r.story);
    double loss = 0;
    uint64_t pred = 0, corr = 0;
    for (size_t i = 0; i < r.stories; i++) {
        loss += r.story[i].loss;
        pred += r.story[i].predicted;
        corr += r.story[i].correct;
    }
    assert_int_equal(pred, r.tokens);
    assert_true(fabs(loss / (double)pred - r.loss) < 1e-12);
    assert_true(fabs((double)corr / (double)pred - r.top1) < 1e-12);
    tlm_paired pc;
    assert_int_equal(tlm_eval_paired(r.story, r.story, r.stories, 500, 7, &pc, NULL), TLM_OK);
    assert_true(pc.loss_diff == 0 && pc.loss_lo == 0 && pc.loss_hi == 0);
    assert_true(pc.top1_diff == 0 && pc.top1_lo == 0 && pc.top1_hi == 0);
    assert_int_equal(pc.b_lower, 0);
    assert_int_equal(pc.a_lower, 0);
    assert_true(fabs(pc.loss_a - r.loss) < 1e-12);
    tlm_eval_story *other = malloc(r.stories * sizeof *other);
    memcpy(other, r.story, r.stories * sizeof *other);
    other[3].predicted++;
    tlm_error err;
    assert_int_equal(tlm_eval_paired(r.story, other, r.stories, 500, 7, &pc, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "tokenize differently"));
    assert_int_equal(tlm_eval_paired(r.story, r.story, r.stories, 10, 7, &pc, &err), TLM_ERR_ARG);
    free(other);
    tlm_eval_result_free(&r);
    assert_null(r.story);
}

/* Synthetic stories: p_i tokens, model B worse by delta per token plus
 * noise of variance sigma^2 p_i per story. */
static void synth(tlm_eval_story *a, tlm_eval_story *b, size_t n, double delta, double sigma, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++) {
        const uint32_t p = 20u + (uint32_t)(tu_rand(rng) % 200u);
        /* Box-Muller normal */
        const double u1 = tu_uniform(rng) + 1e-12, u2 = tu_uniform(rng);
        const double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        a[i] = (tlm_eval_story){1.5 * p, p, p / 2u};
        b[i] = (tlm_eval_story){1.5 * p + delta * p + sigma * sqrt((double)p) * z, p, p / 2u};
    }
}

/* The bootstrap interval against the delta method's normal interval for a
 * ratio of sums (an independent formula), and its coverage of the true
 * difference over repeated synthetic samples. */
static void test_paired_bootstrap_interval(void **state)
{
    (void)state;
    enum { N = 300 };
    tlm_eval_story *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    uint64_t rng = 99;
    synth(a, b, N, 0.02, 0.5, &rng);
    tlm_paired pc;
    assert_int_equal(tlm_eval_paired(a, b, N, 4000, 3, &pc, NULL), TLM_OK);
    double sd = 0, sp = 0;
    for (size_t i = 0; i < N; i++) {
        sd += b[i].loss - a[i].loss;
        sp += a[i].predicted;
    }
    const double D = sd / sp;
    double ss = 0;
    for (size_t i = 0; i < N; i++) {
        const double r = (b[i].loss - a[i].loss) - D * a[i].predicted;
        ss += r * r;
    }
    const double se = sqrt(ss * N / (N - 1.0)) / sp, half = 1.959964 * se;
    print_message("difference %.5f: bootstrap [%.5f, %.5f], delta method [%.5f, %.5f]\n", pc.loss_diff, pc.loss_lo,
                  pc.loss_hi, D - half, D + half);
    assert_true(fabs(pc.loss_diff - D) < 1e-12);
    assert_true(fabs(pc.loss_lo - (D - half)) < 0.1 * 2 * half);
    assert_true(fabs(pc.loss_hi - (D + half)) < 0.1 * 2 * half);
    assert_true(pc.top1_diff == 0); /* same hits in every story */

    int covered = 0;
    const int reps = 200;
    for (int k = 0; k < reps; k++) {
        synth(a, b, 120, 0.02, 0.5, &rng);
        assert_int_equal(tlm_eval_paired(a, b, 120, 400, (uint64_t)k, &pc, NULL), TLM_OK);
        covered += pc.loss_lo <= 0.02 && 0.02 <= pc.loss_hi;
    }
    /* nominal 95% (the percentile bootstrap undercovers a little at 120
     * stories): a count outside [180, 199] would mean it is not a 95% interval */
    print_message("coverage of the true difference: %d of %d\n", covered, reps);
    assert_true(covered >= 180 && covered <= 199);
    free(a);
    free(b);
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
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_split_lines),
        cmocka_unit_test(test_per_story_and_self_comparison),
        cmocka_unit_test(test_paired_bootstrap_interval),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(img);
    free(text);
    return rc;
}
