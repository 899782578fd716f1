/* Closed-set classification (tlm_classify): every candidate's score
 * against an independent oracle that runs each candidate alone through the
 * host's whole-sequence forward pass (no KV cache, no rewinding) and sums
 * log-softmax in double; the greedy walk against a brute-force greedy walk
 * on that oracle; forward passes against the count of distinct prefixes;
 * bad arguments; and the host's label files and line classification (the
 * command line's classifier is tested in test_classify_cli.c). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/host/classify.h"
#include "../src/host/eval.h"
#include "../src/host/privacy.h"
#include "../src/host/fileio.h"
#include "../src/host/nn/layers.h"
#include "../src/host/seq.h"
#include "../src/host/train/corpus.h"
#include "testutil.h"
#include "tritlm/classify.h"
#include "tritlm/runtime.h"
#include "tritlm/tokenizer.h"

#define NC 14
#define MAXL 16

typedef struct {
    uint8_t *img;
    tlm_model m;
    tlm_seq_ws ws;
} fixture;

static fixture *make_model(uint64_t seed)
{
    fixture *f = calloc(1, sizeof *f);
    const tu_tiny cfg = {.dim = 32, .hidden = 64, .layers = 2, .heads = 4, .kv_heads = 2, .seq_len = 32, .n_merges = 40, .shared = 1};
    size_t bytes;
    tu_build_tiny(&cfg, seed, &f->img, &bytes);
    assert_int_equal(tlm_model_open(&f->m, f->img, bytes, NULL), TLM_OK);
    assert_int_equal(tlm_seq_ws_init(&f->ws, &f->m, 32, NULL), TLM_OK);
    return f;
}

static void free_model(fixture *f)
{
    tlm_seq_ws_free(&f->ws);
    free(f->img);
    free(f);
}

/* A runtime for f's model at context 32 over a fresh arena (*arena: free it). */
static void start_runtime(fixture *f, uint32_t flags, tlm_runtime *rt, void **arena)
{
    const size_t ab = tlm_runtime_arena_size_flags(&f->m, 32, flags);
    *arena = malloc(ab);
    assert_int_equal(tlm_runtime_init_flags(rt, &f->m, 32, flags, *arena, ab, NULL), TLM_OK);
}

/* log p(next | tokens[0..T)) from one whole-sequence pass, in double */
static double oracle_logp(fixture *f, const uint32_t *tokens, uint32_t T, uint32_t next)
{
    const uint32_t V = f->m.hp.vocab_size;
    tlm_seq_forward(&f->m, tokens, T, &f->ws);
    const float *row = f->ws.logits + (size_t)(T - 1) * V;
    double mx = -1e300, s = 0;
    for (uint32_t i = 0; i < V; i++) mx = fmax(mx, row[i]);
    for (uint32_t i = 0; i < V; i++) s += exp((double)row[i] - mx);
    return (double)row[next] - mx - log(s);
}

/* A candidate's score: every token after the first, then `end`. */
static double oracle_score(fixture *f, const uint32_t *c, uint32_t len, uint32_t end)
{
    double s = 0;
    for (uint32_t t = 1; t <= len; t++) s += oracle_logp(f, c, t, t < len ? c[t] : end);
    return s;
}

/* Random candidates that share a prefix (BOS, some "text") and then take
 * label tokens from a small alphabet, so that labels share prefixes, one
 * is a prefix of another, and two are equal. */
static void make_cands(uint64_t *rng, uint32_t V, uint32_t *ids, uint32_t *off)
{
    uint32_t text[6], tl = 1 + (uint32_t)(tu_rand(rng) % 5);
    text[0] = 1;
    for (uint32_t t = 1; t < tl; t++) text[t] = 3 + (uint32_t)(tu_rand(rng) % (V - 3));
    off[0] = 0;
    for (uint32_t i = 0; i < NC; i++) {
        uint32_t *c = ids + off[i], len = tl;
        memcpy(c, text, tl * sizeof *c);
        if (i == 5) { /* equal to candidate 2 */
            len = off[3] - off[2];
            memcpy(c, ids + off[2], len * sizeof *c);
        } else if (i == 7) { /* candidate 4 plus one token */
            len = off[5] - off[4];
            memcpy(c, ids + off[4], len * sizeof *c);
            c[len++] = 3;
        } else {
            const uint32_t extra = (uint32_t)(tu_rand(rng) % 5);
            for (uint32_t k = 0; k < extra; k++) c[len++] = 3 + (uint32_t)(tu_rand(rng) % 4);
        }
        off[i + 1] = off[i] + len;
    }
}

/* Distinct non-empty prefixes among the candidates: the forward passes an
 * exact walk of their prefix tree needs. */
static uint32_t distinct_prefixes(const uint32_t *ids, const uint32_t *off)
{
    uint32_t count = 0;
    for (uint32_t i = 0; i < NC; i++)
        for (uint32_t p = 1; p <= off[i + 1] - off[i]; p++) {
            int seen = 0;
            for (uint32_t j = 0; j < i && !seen; j++)
                seen = off[j + 1] - off[j] >= p && !memcmp(ids + off[i], ids + off[j], p * sizeof *ids);
            count += !seen;
        }
    return count;
}

/* How many tokens every candidate has in common at its start. */
static uint32_t shared_depth(const uint32_t *ids, const uint32_t *off)
{
    uint32_t depth = off[1];
    for (uint32_t i = 1; i < NC; i++) {
        uint32_t k = 0;
        while (k < depth && k < off[i + 1] - off[i] && ids[off[i] + k] == ids[k]) k++;
        depth = k;
    }
    return depth;
}

/* The same through a fresh runtime per candidate, fed from position 0. */
static double runtime_score(fixture *f, uint32_t flags, const uint32_t *c, uint32_t len, uint32_t end)
{
    const uint32_t V = f->m.hp.vocab_size;
    void *arena;
    tlm_runtime rt;
    start_runtime(f, flags, &rt, &arena);
    double s = 0;
    for (uint32_t t = 0; t < len; t++) {
        float *lg;
        assert_int_equal(tlm_runtime_forward(&rt, c[t], t, &lg), TLM_OK);
        double mx = -1e300, z = 0;
        for (uint32_t i = 0; i < V; i++) mx = fmax(mx, lg[i]);
        for (uint32_t i = 0; i < V; i++) z += exp((double)lg[i] - mx);
        s += (double)lg[t + 1 < len ? c[t + 1] : end] - mx - log(z);
    }
    free(arena);
    return s;
}

/* tlm_classify on the candidates as they are, or (split) with the tokens
 * they all share given once as the prefix and each one's rest after it. */
static void classify_split(tlm_runtime *rt, const uint32_t *ids, const uint32_t *off, uint32_t end, tlm_classify_mode mode,
                           int split, uint32_t *order, float *scores, tlm_classify_result *r)
{
    if (!split) {
        assert_int_equal(tlm_classify(rt, NULL, 0, ids, off, NC, end, mode, order, scores, r), TLM_OK);
        return;
    }
    uint32_t np = off[1], sids[NC * MAXL], soff[NC + 1];
    for (uint32_t i = 1; i < NC; i++) {
        uint32_t k = 0;
        while (k < np && k < off[i + 1] - off[i] && ids[off[i] + k] == ids[k]) k++;
        np = k;
    }
    assert_true(np >= 1);
    soff[0] = 0;
    for (uint32_t i = 0; i < NC; i++) {
        const uint32_t n = off[i + 1] - off[i] - np;
        memcpy(sids + soff[i], ids + off[i] + np, n * sizeof *sids);
        soff[i + 1] = soff[i] + n;
    }
    assert_int_equal(tlm_classify(rt, ids, np, sids, soff, NC, end, mode, order, scores, r), TLM_OK);
}

static void run_exact(uint32_t flags, double tol)
{
    uint32_t cut_somewhere = 0;
    for (uint64_t seed = 1; seed <= 6; seed++) {
        fixture *f = make_model(seed);
        const uint32_t V = f->m.hp.vocab_size, end = f->m.bos_id;
        uint32_t ids[NC * MAXL], off[NC + 1], order[NC];
        float scores[NC];
        uint64_t rng = seed * 77;
        make_cands(&rng, V, ids, off);
        void *arena;
        tlm_runtime rt;
        start_runtime(f, flags, &rt, &arena);
        tlm_classify_result r;
        classify_split(&rt, ids, off, end, TLM_CLASSIFY_ALL, seed % 2 == 0, order, scores, &r);
        double ref[NC];
        uint32_t best = 0;
        for (uint32_t i = 0; i < NC; i++) {
            ref[i] = flags ? runtime_score(f, flags, ids + off[i], off[i + 1] - off[i], end)
                           : oracle_score(f, ids + off[i], off[i + 1] - off[i], end);
            assert_true(fabs(ref[i] - scores[i]) <= tol * (1 + fabs(ref[i])));
            if (ref[i] > ref[best]) best = i;
        }
        /* equal candidates score alike; the first of them is the answer */
        assert_true(scores[2] == scores[5]);
        assert_true(r.best == best || fabs(ref[r.best] - ref[best]) <= 2 * tol * (1 + fabs(ref[best])));
        assert_true(r.best != 5);
        assert_true(r.score == scores[r.best]);
        assert_int_equal(r.forwards, distinct_prefixes(ids, off));
        /* the shared score: the tokens every candidate has at its start, as
         * one candidate ending where they end; the candidates' own parts
         * (distinct ones: 5 repeats 2) are disjoint events given them */
        const uint32_t depth = shared_depth(ids, off);
        const double ref_shared = depth < 2 ? 0.0
                                  : flags ? runtime_score(f, flags, ids, depth - 1, ids[depth - 1])
                                          : oracle_score(f, ids, depth - 1, ids[depth - 1]);
        assert_true(fabs(ref_shared - r.shared) <= tol * (1 + fabs(ref_shared)));
        double mass = 0;
        for (uint32_t i = 0; i < NC; i++)
            if (i != 5) mass += exp((double)scores[i] - (double)r.shared);
        assert_true(mass <= 1.0 + 1e-4);
        assert_true(mass > 0.0);
        /* the order is lexicographic */
        for (uint32_t k = 1; k < NC; k++) {
            const uint32_t a = order[k - 1], b = order[k], la = off[a + 1] - off[a], lb = off[b + 1] - off[b];
            uint32_t p = 0;
            while (p < la && p < lb && ids[off[a] + p] == ids[off[b] + p]) p++;
            assert_true(p == la ? (la < lb || a < b) : (p < lb && ids[off[a] + p] < ids[off[b] + p]));
        }
        /* the exact search leaves out what cannot win: the same answer and
         * score, the same scores where it finished a candidate, fewer passes */
        float cut[NC];
        tlm_classify_result e;
        classify_split(&rt, ids, off, end, TLM_CLASSIFY_EXACT, seed % 2 == 1, order, cut, &e);
        assert_int_equal(e.best, r.best);
        assert_true(e.score == r.score);
        assert_true(e.shared == r.shared);
        assert_true(e.forwards <= r.forwards);
        cut_somewhere += e.forwards < r.forwards;
        for (uint32_t i = 0; i < NC; i++) assert_true(cut[i] == scores[i] || (isinf(cut[i]) && cut[i] < 0 && scores[i] < r.score));
        free(arena);
        free_model(f);
    }
    assert_true(cut_somewhere > 0); /* (the cut was exercised) */
}

static void test_exact_matches_oracle(void **state)
{
    (void)state;
    run_exact(0, 2e-4);
}

/* The int8 KV cache is rewound like the float one, its per-position
 * scales too: the scores are those of a fresh int8 runtime per candidate. */
static void test_exact_int8_kv(void **state)
{
    (void)state;
    run_exact(TLM_RT_KV_INT8, 1e-5);
}

static void test_greedy_matches_oracle(void **state)
{
    (void)state;
    for (uint64_t seed = 11; seed <= 18; seed++) {
        fixture *f = make_model(seed);
        const uint32_t V = f->m.hp.vocab_size, end = f->m.bos_id;
        uint32_t ids[NC * MAXL], off[NC + 1], order[NC];
        float scores[NC];
        uint64_t rng = seed * 31;
        make_cands(&rng, V, ids, off);
        void *arena;
        tlm_runtime rt;
        start_runtime(f, 0, &rt, &arena);
        tlm_classify_result r;
        classify_split(&rt, ids, off, end, TLM_CLASSIFY_GREEDY, seed % 2 == 0, order, scores, &r);

        /* brute force: at each depth, the next token (or end) with the highest
         * log-probability among the candidates still on the path */
        int alive[NC];
        for (uint32_t i = 0; i < NC; i++) alive[i] = 1;
        uint32_t path[MAXL] = {ids[0]}, depth = 1, chosen = NC;
        const uint32_t sd = shared_depth(ids, off);
        double score = 0, shared = 0;
        while (chosen == NC) {
            double best_lp = -1e300;
            uint32_t best_tok = 0;
            int best_end = 0;
            for (uint32_t i = 0; i < NC; i++) {
                if (!alive[i]) continue;
                const uint32_t len = off[i + 1] - off[i], tok = depth < len ? ids[off[i] + depth] : end;
                const double lp = oracle_logp(f, path, depth, tok);
                if (lp > best_lp + 1e-9) {
                    best_lp = lp;
                    best_tok = tok;
                    best_end = depth == len;
                }
            }
            score += best_lp;
            if (depth + 1 == sd) shared = score;
            for (uint32_t i = 0; i < NC; i++) {
                const uint32_t len = off[i + 1] - off[i];
                if (!alive[i]) continue;
                if (best_end ? depth != len : (depth >= len || ids[off[i] + depth] != best_tok)) alive[i] = 0;
                else if (best_end && chosen == NC) chosen = i; /* the first of equal candidates */
            }
            path[depth++] = best_tok;
        }
        assert_int_equal(r.best, chosen);
        assert_true(fabs(score - r.score) <= 2e-4 * (1 + fabs(score)));
        assert_true(fabs(shared - r.shared) <= 2e-4 * (1 + fabs(shared)));
        assert_int_equal(r.forwards, off[chosen + 1] - off[chosen]);
        for (uint32_t i = 0; i < NC; i++) assert_true(i == chosen ? scores[i] == r.score : isinf(scores[i]) && scores[i] < 0);
        free(arena);
        free_model(f);
    }
}

static void test_bad_arguments(void **state)
{
    (void)state;
    fixture *f = make_model(3);
    const uint32_t V = f->m.hp.vocab_size;
    const size_t ab = tlm_runtime_arena_size(&f->m, 8);
    void *arena = malloc(ab);
    tlm_runtime rt;
    assert_int_equal(tlm_runtime_init(&rt, &f->m, 8, arena, ab, NULL), TLM_OK);
    uint32_t order[3];
    float scores[3];
    tlm_classify_result r;
    const uint32_t ids[] = {1, 5, 6, 1, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    const uint32_t ok[] = {0, 3, 5}, empty[] = {0, 3, 3}, long9[] = {0, 3, 14}, other[] = {0, 2, 5};
    assert_int_equal(tlm_classify(&rt, NULL, 0, ids, ok, 2, 1, TLM_CLASSIFY_EXACT, order, scores, &r), TLM_OK);
    assert_int_equal(tlm_classify(&rt, NULL, 0, ids, ok, 0, 1, TLM_CLASSIFY_EXACT, order, scores, &r), TLM_ERR_ARG);
    assert_int_equal(tlm_classify(&rt, NULL, 0, ids, empty, 2, 1, TLM_CLASSIFY_EXACT, order, scores, &r), TLM_ERR_ARG);
    assert_int_equal(tlm_classify(&rt, NULL, 0, ids, long9, 2, 1, TLM_CLASSIFY_GREEDY, order, scores, &r), TLM_ERR_ARG);
    assert_int_equal(tlm_classify(&rt, NULL, 0, ids, other, 2, 1, TLM_CLASSIFY_EXACT, order, scores, &r), TLM_ERR_ARG); /* 1 vs 6 first */
    assert_int_equal(tlm_classify(&rt, NULL, 0, ids, ok, 2, V, TLM_CLASSIFY_EXACT, order, scores, &r), TLM_ERR_ARG);
    assert_int_equal(tlm_classify(&rt, NULL, 0, ids, ok, 2, 1, (tlm_classify_mode)7, order, scores, &r), TLM_ERR_ARG);
    assert_int_equal(tlm_classify(&rt, NULL, 0, ids, ok, 2, 1, TLM_CLASSIFY_EXACT, order, NULL, &r), TLM_ERR_ARG);
    const uint32_t big[] = {1, V};
    const uint32_t bo[] = {0, 1, 2};
    assert_int_equal(tlm_classify(&rt, NULL, 0, big, bo, 2, 1, TLM_CLASSIFY_EXACT, order, scores, &r), TLM_ERR_ARG);
    /* with a prefix: empty suffixes are fine, a bad prefix token is not */
    const uint32_t none[] = {0, 0, 1};
    assert_int_equal(tlm_classify(&rt, ids, 3, ids + 3, none, 2, 1, TLM_CLASSIFY_EXACT, order, scores, &r), TLM_OK);
    assert_int_equal(r.best, 0); /* the prefix alone, then the prefix and one token: both valid */
    assert_int_equal(tlm_classify(&rt, big, 2, ids, none, 2, 1, TLM_CLASSIFY_EXACT, order, scores, &r), TLM_ERR_ARG);
    assert_int_equal(tlm_classify(&rt, NULL, 0, ids, none, 2, 1, TLM_CLASSIFY_EXACT, order, scores, &r), TLM_ERR_ARG);
    free(arena);
    free_model(f);
}

static void test_labels_parse(void **state)
{
    (void)state;
    tlm_labels l;
    tlm_error err;
    const char tsv[] = "book a flight to rome\tbook_flight\r\nwhat's 2+2\tcalculator \n\n  flights to oslo\tbook_flight\nplain\n";
    assert_int_equal(tlm_labels_parse(tsv, strlen(tsv), &l, &err), TLM_OK);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.name[0], "book_flight");
    assert_string_equal(l.name[1], "calculator");
    assert_string_equal(l.name[2], "plain"); /* a line without a TAB is a label itself */
    tlm_labels_free(&l);
    const char one[] = "a\tx\nb\tx\n";
    assert_int_equal(tlm_labels_parse(one, strlen(one), &l, &err), TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "at least 2"));
    const char bad[] = "a\tx\nb\t \n";
    assert_int_equal(tlm_labels_parse(bad, strlen(bad), &l, &err), TLM_OK); /* "b\t " strips to "b": a label */
    tlm_labels_free(&l);
}

/* Per-label figures against a confusion worked out by hand: labels A B C D,
 * lines (gold, predicted) AA AA AB AC BB BA CB, one unlabelled line, AB BD.
 * A: 5 lines, 2 right, given B twice and C once; B: 3 lines, 1 right, given
 * A and D once each (the tie goes to A, the lower index); C: 1 line, given
 * B; D: no line, predicted once. Predicted: A 3, B 4, C 1, D 1. Precision
 * 2/3, 1/4, 0, 0; recall 2/5, 1/3, 0, 0; F1 1/2, 2/7, 0, 0; macro F1 over
 * A, B, C (D has no line) = (1/2 + 2/7) / 3 = 11/42. */
static void test_report(void **state)
{
    (void)state;
    uint32_t pred[] = {0, 0, 1, 2, 1, 0, 1, 0, 1, 3};
    int32_t gold[] = {0, 0, 0, 0, 1, 1, 2, -1, 0, 1};
    tlm_cls_result r = {.samples = 10, .pred = pred, .gold = gold};
    tlm_cls_label_stats s[4];
    size_t cm[16];
    double macro = -1;
    tlm_error err;
    assert_int_equal(tlm_cls_report(&r, 4, s, cm, &macro, &err), TLM_OK);
    const size_t support[] = {5, 3, 1, 0}, predicted[] = {3, 4, 1, 1}, correct[] = {2, 1, 0, 0}, confused[] = {2, 1, 1, 0};
    const uint32_t with[] = {1, 0, 1, UINT32_MAX};
    const double prec[] = {2.0 / 3, 0.25, 0, 0}, rec[] = {0.4, 1.0 / 3, 0, 0}, f1[] = {0.5, 2.0 / 7, 0, 0};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(s[k].support, support[k]);
        assert_int_equal(s[k].predicted, predicted[k]);
        assert_int_equal(s[k].correct, correct[k]);
        assert_int_equal(s[k].confused, confused[k]);
        assert_int_equal(s[k].confused_with, with[k]);
        assert_true(fabs(s[k].precision - prec[k]) < 1e-12);
        assert_true(fabs(s[k].recall - rec[k]) < 1e-12);
        assert_true(fabs(s[k].f1 - f1[k]) < 1e-12);
    }
    assert_true(fabs(macro - 11.0 / 42) < 1e-12);
    const size_t want_cm[16] = {2, 2, 1, 0, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(cm, want_cm, sizeof cm);
    /* without the matrix, the same figures; with no labelled line, macro F1 0 */
    tlm_cls_label_stats s2[4];
    assert_int_equal(tlm_cls_report(&r, 4, s2, NULL, &macro, &err), TLM_OK);
    assert_memory_equal(s, s2, sizeof s);
    int32_t none[10];
    for (int i = 0; i < 10; i++) none[i] = -1;
    r.gold = none;
    assert_int_equal(tlm_cls_report(&r, 4, s2, NULL, &macro, &err), TLM_OK);
    assert_true(macro == 0 && s2[0].support == 0 && s2[0].predicted == 0);
}

/* The host's line classification agrees with tlm_classify on each line's
 * candidates built by hand, and checks its input. */
static void test_classify_text(void **state)
{
    (void)state;
    fixture *f = make_model(5);
    const char labels_txt[] = "yes\nno\nmaybe\nnot sure\n";
    tlm_labels l;
    tlm_error err;
    assert_int_equal(tlm_labels_parse(labels_txt, strlen(labels_txt), &l, &err), TLM_OK);
    const char text[] = "is it raining\tno\ncan you hear me\tyes\nwhat do you think\n";
    tlm_cls_opts o = {.threads = 2};
    tlm_cls_result r;
    assert_int_equal(tlm_classify_text(&f->m, &l, text, strlen(text), &o, &r, &err), TLM_OK);
    assert_int_equal(r.samples, 3);
    assert_int_equal(r.n.labelled, 2);
    assert_int_equal(r.gold[0], 1);
    assert_int_equal(r.gold[1], 0);
    assert_int_equal(r.gold[2], -1);
    /* by hand: each label's line encoded whole, scored by the oracle */
    const char *lines[] = {"is it raining", "can you hear me", "what do you think"};
    size_t correct = 0;
    for (int s = 0; s < 3; s++) {
        double best = -1e300;
        uint32_t arg = 0, ids[4][140], depth = 140;
        for (uint32_t i = 0; i < l.n; i++) {
            char buf[128];
            const int n = snprintf(buf, sizeof buf, "%s\t%s", lines[s], l.name[i]);
            int32_t scratch[TLM_ENCODE_SCRATCH(140)];
            size_t ni;
            assert_int_equal(tlm_encode(&f->m, buf, (size_t)n, TLM_ENCODE_BOS, ids[i], 140, scratch, &ni), TLM_OK);
            const double sc = oracle_score(f, ids[i], (uint32_t)ni, f->m.bos_id);
            if (sc > best) best = sc, arg = i;
            uint32_t k = 0;
            while (k < depth && k < ni && ids[i][k] == ids[0][k]) k++;
            depth = i ? k : (uint32_t)ni;
        }
        assert_int_equal(r.pred[s], arg);
        /* the confidence: the label's probability given the tokens all four share */
        const double shared = oracle_score(f, ids[0], depth - 1, ids[0][depth - 1]), conf = exp(best - shared);
        assert_true(depth > 3);
        assert_true(fabs(r.conf[s] - conf) <= 1e-3 * conf);
        correct += s < 2 && (int32_t)arg == r.gold[s];
    }
    assert_int_equal(r.n.correct, correct);
    /* below --min-confidence, a line gets the --oos label instead */
    float conf[3];
    memcpy(conf, r.conf, sizeof conf);
    const uint32_t pred0[3] = {r.pred[0], r.pred[1], r.pred[2]};
    tlm_cls_result_free(&r);
    tlm_cls_opts rej = {.threads = 2, .oos = "not sure", .min_confidence = conf[1] + 1e-6f};
    assert_int_equal(tlm_classify_text(&f->m, &l, text, strlen(text), &rej, &r, &err), TLM_OK);
    size_t want_rejected = 0;
    for (int s = 0; s < 3; s++) {
        const int below = conf[s] < rej.min_confidence && pred0[s] != 3;
        want_rejected += (size_t)below;
        assert_int_equal(r.pred[s], below ? 3 : pred0[s]);
    }
    assert_true(want_rejected >= 1);
    assert_int_equal(r.n.rejected, want_rejected);
    tlm_cls_result_free(&r);
    tlm_cls_opts no_oos = {.threads = 1, .min_confidence = 0.5f};
    assert_int_equal(tlm_classify_text(&f->m, &l, text, strlen(text), &no_oos, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "--min-confidence needs --oos"));

    /* privatized with epsilon inf: the text comes through unchanged */
    tlm_privatizer priv;
    assert_int_equal(tlm_privatizer_init(&priv, &f->m, TLM_MECH_RR, INFINITY, &err), TLM_OK);
    tlm_cls_opts op = {.threads = 1, .priv = &priv, .priv_seeded = 1, .priv_seed = 9};
    tlm_cls_result rp;
    assert_int_equal(tlm_classify_text(&f->m, &l, text, strlen(text), &op, &rp, &err), TLM_OK);
    assert_true(rp.privatized > 10);
    assert_int_equal(rp.unchanged, rp.privatized);
    tlm_cls_result rr;
    assert_int_equal(tlm_classify_text(&f->m, &l, text, strlen(text), &o, &rr, &err), TLM_OK);
    assert_memory_equal(rp.pred, rr.pred, 3 * sizeof *rp.pred);
    tlm_cls_result_free(&rp);
    tlm_cls_result_free(&rr);

    const char unknown[] = "fine\tyes\nhello there\tperhaps\n";
    assert_int_equal(tlm_classify_text(&f->m, &l, unknown, strlen(unknown), &o, &r, &err), TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "line 2"));
    assert_non_null(strstr(err.msg, "perhaps"));
    /* a line longer than the context keeps its last tokens: the same
     * prediction as a model shown only the cut candidates */
    tlm_cls_opts shortctx = {.threads = 1, .ctx = 16};
    const char longline[] = "a line far longer than sixteen tokens of context, surely\tyes\nok\tno\n";
    assert_int_equal(tlm_classify_text(&f->m, &l, longline, strlen(longline), &shortctx, &r, &err), TLM_OK);
    assert_int_equal(r.truncated, 1);
    {
        double best = -1e300;
        uint32_t arg = 0, cand[4][80], len[4], longest = 0;
        for (uint32_t i = 0; i < l.n; i++) {
            char buf[128];
            const int n = snprintf(buf, sizeof buf, "a line far longer than sixteen tokens of context, surely\t%s", l.name[i]);
            int32_t scratch[TLM_ENCODE_SCRATCH(80)];
            size_t ni;
            assert_int_equal(tlm_encode(&f->m, buf, (size_t)n, TLM_ENCODE_BOS, cand[i], 80, scratch, &ni), TLM_OK);
            len[i] = (uint32_t)ni;
            if (len[i] > longest) longest = len[i];
        }
        assert_true(longest > 16);
        for (uint32_t i = 0; i < l.n; i++) {
            const double sc = oracle_score(f, cand[i] + (longest - 16), len[i] - (longest - 16), f->m.bos_id);
            if (sc > best) best = sc, arg = i;
        }
        assert_int_equal(r.pred[0], arg);
    }
    tlm_cls_result_free(&r);
    tlm_labels ll;
    const char long_labels[] = "yes\na label far too long to fit in sixteen tokens of context\n";
    assert_int_equal(tlm_labels_parse(long_labels, strlen(long_labels), &ll, &err), TLM_OK);
    assert_int_equal(tlm_classify_text(&f->m, &ll, "hello\n", 6, &shortctx, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "a label alone is longer than the context"));
    tlm_labels_free(&ll);
    tlm_cls_opts bad_oos = {.threads = 1, .oos = "oos"};
    assert_int_equal(tlm_classify_text(&f->m, &l, text, strlen(text), &bad_oos, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "--oos"));
    tlm_labels_free(&l);
    free_model(f);
}

/* --label-loss's targets: in each line only the tokens from the TAB on,
 * which spell "\t" + LABEL, and the BOS that ends the line before. */
static void test_label_targets(void **state)
{
    (void)state;
    fixture *f = make_model(21);
    const char *lines[][2] = {{"turn the lights on", "lights_on"}, {"what is the time", "time"}, {"play some jazz", "play_music"}};
    char text[256] = "";
    for (int i = 0; i < 3; i++) snprintf(text + strlen(text), sizeof text - strlen(text), "%s\t%s\n", lines[i][0], lines[i][1]);
    const char *path = tu_tmp("labels.tsv");
    assert_int_equal(tlm_write_file_atomic(path, text, strlen(text), NULL), TLM_OK);
    tlm_corpus c;
    tlm_error err;
    assert_int_equal(tlm_corpus_load(&c, &f->m, path, "\n", 1, &err), TLM_OK);
    assert_non_null(c.targets);
    size_t k = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c.tokens[k], f->m.bos_id);
        assert_true(c.targets[k] == (i ? f->m.bos_id : TLM_NO_TARGET));
        k++;
        char spelled[2][64] = {"", ""}; /* the text's tokens, then the targets' */
        for (; k < c.n && c.tokens[k] != f->m.bos_id; k++) {
            const uint8_t *str;
            size_t sl = tlm_token_str(&f->m, c.tokens[k], &str);
            char piece[16];
            if (tlm_decodes_as_byte(str, sl)) {
                piece[0] = (char)strtol((const char *)str + (str[0] == ' ' ? 4 : 3), NULL, 16);
                sl = 1;
            } else {
                memcpy(piece, str, sl);
            }
            const int is_target = c.targets[k] != TLM_NO_TARGET;
            if (is_target) assert_int_equal(c.targets[k], c.tokens[k]);
            strncat(spelled[is_target], piece, sl);
        }
        char want_text[64], want_label[64];
        snprintf(want_text, sizeof want_text, " %s", lines[i][0]);
        snprintf(want_label, sizeof want_label, "\t%s", lines[i][1]);
        assert_string_equal(spelled[0], want_text);
        assert_string_equal(spelled[1], want_label);
    }
    assert_int_equal(k, c.n);
    tlm_corpus_free(&c);
    const char notab[] = "no tab here\nturn it on\tlights_on\n";
    assert_int_equal(tlm_write_file_atomic(path, notab, strlen(notab), NULL), TLM_OK);
    assert_int_equal(tlm_corpus_load(&c, &f->m, path, "\n", 1, &err), TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "line 1 has no TAB"));
    free_model(f);
}

/* Validation of a --label-loss run (tlm_eval_text with label_only): the
 * loss and top-1 over the tokens the training targets (test_label_targets
 * spells them back) and each line's end, against the oracle's log-softmax
 * in double; a line longer than the context loses its first tokens, so its
 * label is still scored; lines without a TAB are refused. */
static void test_label_eval(void **state)
{
    (void)state;
    fixture *f = make_model(23);
    const char text[] = "turn the lights on\tlights_on\nwhat is the time\ttime\n"
                        "the quick brown fox jumps over the lazy dog while it rains all day\tweather\n";
    const char *path = tu_tmp("label_eval.tsv");
    assert_int_equal(tlm_write_file_atomic(path, text, strlen(text), NULL), TLM_OK);
    tlm_corpus c;
    tlm_error err;
    assert_int_equal(tlm_corpus_load(&c, &f->m, path, "\n", 1, &err), TLM_OK);
    const uint32_t V = f->m.hp.vocab_size, ctx = 32;
    double want_loss = 0;
    uint64_t want_n = 0, want_hits = 0, cut_lines = 0, text_tokens = 0;
    for (size_t a = 0; a < c.n;) {
        size_t b = a + 1;
        while (b < c.n && c.tokens[b] != f->m.bos_id) b++;
        /* the line, its end (the BOS the next line starts with), and each token's target */
        uint32_t seq[128], tgt[128] = {0}, T = 0;
        for (size_t k = a; k < b; k++, T++) {
            seq[T] = c.tokens[k];
            tgt[T] = k > a ? c.targets[k] : TLM_NO_TARGET;
        }
        seq[T] = tgt[T] = f->m.bos_id;
        T++;
        if (T > ctx) { /* BOS and the last ctx - 1 */
            memmove(seq + 1, seq + 1 + (T - ctx), (ctx - 1) * sizeof *seq);
            memmove(tgt + 1, tgt + 1 + (T - ctx), (ctx - 1) * sizeof *tgt);
            T = ctx;
            cut_lines++;
        }
        uint32_t first = 1;
        while (first < T && tgt[first] == TLM_NO_TARGET) first++;
        text_tokens += first - 1; /* the inputs after BOS before the label's first token */
        for (uint32_t t = 1; t < T; t++) {
            if (tgt[t] == TLM_NO_TARGET) continue;
            want_loss -= oracle_logp(f, seq, t, tgt[t]);
            want_n++;
            const float *row = f->ws.logits + (size_t)(t - 1) * V; /* left by oracle_logp */
            uint32_t best = 0;
            for (uint32_t i = 1; i < V; i++)
                if (row[i] > row[best]) best = i;
            want_hits += best == tgt[t];
        }
        a = b;
    }
    tlm_corpus_free(&c);
    assert_int_equal(cut_lines, 1);
    tlm_eval_opts eo = {.separator = "\n", .label_only = 1, .threads = 2, .ctx = ctx};
    tlm_eval_result r;
    assert_int_equal(tlm_eval_text(&f->m, text, strlen(text), &eo, &r, &err), TLM_OK);
    assert_int_equal(r.tokens, want_n);
    assert_int_equal(r.truncated, 1);
    assert_true(fabs(r.loss - want_loss / (double)want_n) < 1e-5 * (1 + want_loss / (double)want_n));
    assert_true(fabs(r.top1 - (double)want_hits / (double)want_n) < 1e-12);
    /* plain evaluation scores every token (and not the end): another figure */
    tlm_eval_opts all = {.separator = "\n", .threads = 2, .ctx = ctx};
    tlm_eval_result ra;
    assert_int_equal(tlm_eval_text(&f->m, text, strlen(text), &all, &ra, &err), TLM_OK);
    assert_true(ra.tokens > r.tokens);
    /* read privatized, only the text's tokens go through the mechanism, not the label's */
    tlm_privatizer priv;
    assert_int_equal(tlm_privatizer_init(&priv, &f->m, TLM_MECH_RR, 1.0f, &err), TLM_OK);
    tlm_eval_opts ep = eo;
    ep.priv = &priv;
    ep.priv_seeded = 1;
    assert_int_equal(tlm_eval_text(&f->m, text, strlen(text), &ep, &ra, &err), TLM_OK);
    assert_int_equal(ra.privatized, text_tokens);
    assert_true(ra.unchanged < ra.privatized);
    assert_int_equal(ra.tokens, want_n);
    const char notab[] = "a\tb\nno tab here\n";
    assert_int_equal(tlm_eval_text(&f->m, notab, strlen(notab), &eo, &r, &err), TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "line 2 has no TAB"));
    eo.windows = 1;
    assert_int_equal(tlm_eval_text(&f->m, text, strlen(text), &eo, &r, &err), TLM_ERR_ARG);
    free_model(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_matches_oracle), cmocka_unit_test(test_exact_int8_kv),
        cmocka_unit_test(test_greedy_matches_oracle), cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_labels_parse),  cmocka_unit_test(test_report),         cmocka_unit_test(test_classify_text),
        cmocka_unit_test(test_label_targets),        cmocka_unit_test(test_label_eval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
