/* The classifier from the command line, the whole path a user takes:
 * tokenizer, 'train --label-loss' (also on privatized text), 'classify'
 * exact and greedy, --report and --confusion against counts made here,
 * --sweep against separate --min-confidence runs, and the refusals. The
 * core's search and the host's label files are tested in test_classify.c. */
#include <cjson/cJSON.h>
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
#include "testutil.h"

/* The keyword task: a line's label is set by one keyword among filler words. */
static const char *const key[][2] = {{"lamp", "lights"}, {"song", "music"}, {"rain", "weather"}, {"alarm", "timer"}};

/* The number after "KEY": in a JSON text (which must have it). */
static double json_number(const char *json, const char *name)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", name);
    const char *p = strstr(json, pat);
    assert_non_null(p);
    return strtod(p + strlen(pat), NULL);
}

/* The keyword task's model: STEPS steps of --label-loss on the training
 * lines tr (tokenizer tok), validated and classified on he, into model;
 * extra options after. */
static void train_keywords(char **out, char **err, const char *tr, const char *tok, const char *he, int steps, const char *model,
                           const char *extra)
{
    assert_int_equal(tu_run(out, err,
                            "train --data '%s' --split lines --label-loss --tokenizer '%s' --dim 32 --hidden 64 --layers 2 "
                            "--heads 4 --ctx 32 --batch 16 --steps %d --lr 3e-3 --eval-every 0 --threads 2 -o '%s' "
                            "--val '%s' --json %s",
                            tr, tok, steps, model, he, extra),
                     0);
}

/* --report and --confusion on a noisy model (near chance, so its
 * labels are confused) against counts made here from its predictions
 * and the held lines' labels */
static void check_report(const char *model, const char *tr, const char *he)
{
    char *out, *err;
    char csv[512];
    snprintf(csv, sizeof csv, "%s", tu_tmp("kw_confusion.csv"));
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --print --json --report --confusion '%s'",
                            model, tr, he, csv),
                     0);
    cJSON *o = cJSON_Parse(out);
    assert_non_null(o);
    const cJSON *preds = cJSON_GetObjectItem(o, "predictions"), *pl = cJSON_GetObjectItem(o, "per_label");
    assert_int_equal(cJSON_GetArraySize(preds), 120);
    uint8_t *ht;
    size_t hl;
    assert_int_equal(tlm_read_file(he, &ht, &hl, NULL), TLM_OK);
    size_t sup[4] = {0}, prd[4] = {0}, cor[4] = {0}, cm[4][4] = {{0}};
    const char *p = (const char *)ht;
    for (int i = 0; i < 120; i++) {
        const char *tab = strchr(p, '\t'), *nl = strchr(p, '\n');
        int g = -1, q = -1;
        for (int k = 0; k < 4; k++) {
            if ((size_t)(nl - tab - 1) == strlen(key[k][1]) && !memcmp(tab + 1, key[k][1], (size_t)(nl - tab - 1))) g = k;
            if (!strcmp(cJSON_GetArrayItem(preds, i)->valuestring, key[k][1])) q = k;
        }
        assert_true(g >= 0 && q >= 0);
        sup[g]++, prd[q]++, cor[g] += g == q, cm[g][q]++;
        p = nl + 1;
    }
    free(ht);
    double f1[4], macro = 0, last = -1;
    int with_lines = 0, confused = 0;
    for (int k = 0; k < 4; k++) {
        const double pr = prd[k] ? (double)cor[k] / (double)prd[k] : 0, re = sup[k] ? (double)cor[k] / (double)sup[k] : 0;
        f1[k] = pr + re > 0 ? 2 * pr * re / (pr + re) : 0;
        if (sup[k]) macro += f1[k], with_lines++;
        for (int q = 0; q < 4; q++) confused += q != k && cm[k][q];
    }
    assert_true(confused > 0); /* the check below sees real confusions */
    assert_true(fabs(cJSON_GetObjectItem(o, "macro_f1")->valuedouble - macro / with_lines) < 1e-12);
    int seen = 0;
    for (const cJSON *e = pl ? pl->child : NULL; e; e = e->next, seen++) {
        int k = 0;
        while (k < 4 && strcmp(cJSON_GetObjectItem(e, "label")->valuestring, key[k][1])) k++;
        assert_true(k < 4);
        assert_int_equal((size_t)cJSON_GetObjectItem(e, "lines")->valuedouble, sup[k]);
        assert_int_equal((size_t)cJSON_GetObjectItem(e, "predicted")->valuedouble, prd[k]);
        assert_int_equal((size_t)cJSON_GetObjectItem(e, "correct")->valuedouble, cor[k]);
        const double ef1 = cJSON_GetObjectItem(e, "f1")->valuedouble;
        assert_true(fabs(ef1 - f1[k]) < 1e-12);
        assert_true(ef1 >= last); /* worst first */
        last = ef1;
        /* the most frequent wrong label of this label's lines */
        size_t most = 0;
        for (int q = 0; q < 4; q++)
            if (q != k && cm[k][q] > most) most = cm[k][q];
        const cJSON *times = cJSON_GetObjectItem(e, "times");
        assert_int_equal(times ? (size_t)times->valuedouble : 0, most);
        if (times) {
            int q = 0;
            while (q < 4 && strcmp(cJSON_GetObjectItem(e, "most_often_given")->valuestring, key[q][1])) q++;
            assert_true(q < 4 && q != k && cm[k][q] == most);
        }
    }
    int occur = 0;
    for (int k = 0; k < 4; k++) occur += sup[k] || prd[k];
    assert_int_equal(seen, occur);
    cJSON_Delete(o);
    /* the CSV: one row per pair that occurred, the same counts */
    uint8_t *ct;
    size_t cl;
    assert_int_equal(tlm_read_file(csv, &ct, &cl, NULL), TLM_OK);
    assert_true(cl > 21 && !memcmp(ct, "gold,predicted,count\n", 21));
    size_t rows = 0, total = 0, pairs = 0;
    for (char *line = strtok((char *)ct + 21, "\n"); line; line = strtok(NULL, "\n"), rows++) {
        char gname[32], pname[32];
        size_t n;
        assert_int_equal(sscanf(line, "%31[^,],%31[^,],%zu", gname, pname, &n), 3);
        int g = 0, q = 0;
        while (g < 4 && strcmp(gname, key[g][1])) g++;
        while (q < 4 && strcmp(pname, key[q][1])) q++;
        assert_true(g < 4 && q < 4);
        assert_int_equal(n, cm[g][q]);
        total += n;
    }
    for (int g = 0; g < 4; g++)
        for (int q = 0; q < 4; q++) pairs += cm[g][q] > 0;
    assert_int_equal(rows, pairs);
    assert_int_equal(total, 120);
    free(ct);
    /* the text form: the table and the macro F1 after the summary */
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --report", model, tr, he), 0);
    assert_non_null(strstr(out, "most often given instead"));
    assert_non_null(strstr(out, "macro F1 "));
}

/* --sweep: each threshold's figures are those of a run with that
 * --min-confidence, and its rejections those counted here from the
 * confidences and predictions of a run without one; on a model
 * stopped early, whose confidences spread between the thresholds */
static void check_sweep(const char *tr, const char *tok, const char *he, const char *model)
{
    char *out, *err;
    char early[512];
    snprintf(early, sizeof early, "%s", tu_tmp("kw_early.tlm"));
    train_keywords(&out, &err, tr, tok, he, 200, early, "");
    const double early_f1 = json_number(out, "val_macro_f1");
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --oos music --sweep --print --json",
                            early, tr, he),
                     0);
    cJSON *o = cJSON_Parse(out);
    assert_non_null(o);
    const cJSON *sw = cJSON_GetObjectItem(o, "sweep"), *cf = cJSON_GetObjectItem(o, "confidences");
    const cJSON *preds = cJSON_GetObjectItem(o, "predictions");
    assert_int_equal(cJSON_GetArraySize(sw), 10);
    /* the training run's macro F1 is classify's, on a model that is not perfect */
    assert_true(early_f1 < 0.99 && cJSON_GetObjectItem(o, "macro_f1")->valuedouble == early_f1);
    size_t distinct = 0, prev = SIZE_MAX;
    for (int i = 0; i < 10; i++) {
        const cJSON *e = cJSON_GetArrayItem(sw, i);
        const size_t rej = (size_t)cJSON_GetObjectItem(e, "rejected")->valuedouble;
        size_t want = 0;
        for (int l = 0; l < 120; l++)
            want += cJSON_GetArrayItem(cf, l)->valuedouble < (float)(i / 10.0) &&
                    strcmp(cJSON_GetArrayItem(preds, l)->valuestring, "music");
        assert_int_equal(rej, want);
        distinct += rej != prev;
        prev = rej;
        if (i == 0) continue;
        char *o2, *e2;
        assert_int_equal(tu_run(&o2, &e2, "classify -m '%s' --labels '%s' --text '%s' --oos music --min-confidence 0.%d --json",
                                early, tr, he, i),
                         0);
        cJSON *one = cJSON_Parse(o2);
        assert_non_null(one);
        assert_int_equal((size_t)cJSON_GetObjectItem(one, "rejected")->valuedouble, rej);
        const char *f[] = {"accuracy", "in_scope_accuracy", "oos_recall"};
        for (int k = 0; k < 3; k++)
            assert_true(cJSON_GetObjectItem(one, f[k])->valuedouble == cJSON_GetObjectItem(e, f[k])->valuedouble);
        cJSON_Delete(one);
    }
    printf("sweep: %zu distinct rejection counts over 10 thresholds (%zu at 0.9)\n", distinct, prev);
    assert_true(distinct >= 3); /* the thresholds do differ on this model (6 of 10 here) */
    cJSON_Delete(o);
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --sweep", model, tr, he), 2);
    assert_non_null(strstr(err, "--sweep needs --oos"));
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --sweep --oos music --min-confidence 0.5", model, tr, he), 2);
}

/* The whole path a user takes: a model trained with --label-loss on lines
 * of the keyword task learns to classify lines it never saw (a 4-way task:
 * chance is 25%), and the exact search is at least as accurate as the
 * greedy one. */
static void test_train_and_classify(void **state)
{
    (void)state;
    static const char *fill[] = {"please", "now", "the", "my", "could", "you", "today", "a", "quick", "for", "me", "again"};
    uint64_t rng = 5;
    char *train = malloc(1 << 16), *held = malloc(1 << 14);
    size_t tn = 0, hn = 0;
    for (int i = 0; i < 760; i++) {
        const int cls = (int)(tu_rand(&rng) % 4), words = 2 + (int)(tu_rand(&rng) % 4), at = (int)(tu_rand(&rng) % (unsigned)words);
        char line[160] = "";
        for (int w = 0; w < words; w++) {
            if (w == at) snprintf(line + strlen(line), sizeof line - strlen(line), "%s ", key[cls][0]);
            snprintf(line + strlen(line), sizeof line - strlen(line), "%s ", fill[tu_rand(&rng) % 12]);
        }
        line[strlen(line) - 1] = '\0';
        if (i < 640) tn += (size_t)sprintf(train + tn, "%s\t%s\n", line, key[cls][1]);
        else hn += (size_t)sprintf(held + hn, "%s\t%s\n", line, key[cls][1]);
    }
    char tr[512], he[512], tok[512], model[512];
    snprintf(tr, sizeof tr, "%s", tu_tmp("kw_train.tsv"));
    snprintf(he, sizeof he, "%s", tu_tmp("kw_held.tsv"));
    snprintf(tok, sizeof tok, "%s", tu_tmp("kw_tok.bin"));
    snprintf(model, sizeof model, "%s", tu_tmp("kw.tlm"));
    assert_int_equal(tlm_write_file_atomic(tr, train, tn, NULL), TLM_OK);
    assert_int_equal(tlm_write_file_atomic(he, held, hn, NULL), TLM_OK);
    free(train);
    free(held);
    char *out, *err;
    assert_int_equal(tu_run(&out, &err, "tokenizer train --vocab 300 --split lines -o '%s' '%s'", tok, tr), 0);
    train_keywords(&out, &err, tr, tok, he, 300, model, "");
    /* the run classifies --val at its end, among the training text's labels */
    const double train_acc = json_number(out, "val_accuracy"), train_f1 = json_number(out, "val_macro_f1");
    assert_non_null(strstr(err, "(120 of 120 lines; 4 labels from"));
    double acc[2];
    for (int greedy = 0; greedy < 2; greedy++) {
        assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --json%s", model, tr, he,
                                greedy ? " --greedy" : ""),
                         0);
        acc[greedy] = json_number(out, "accuracy");
        assert_non_null(strstr(out, "\"labelled\":120,"));
        if (!greedy) assert_true(json_number(out, "macro_f1") == train_f1); /* the run's figure is classify's */
    }
    printf("keyword task: accuracy %.3f exact, %.3f greedy\n", acc[0], acc[1]);
    assert_true(train_acc == acc[0]);
    /* --privatize: at epsilon inf the inputs pass unchanged and the run is
     * the same run, bit for bit; at epsilon 0.05 randomized response
     * replaces nearly every text token with a uniform one: the keyword is
     * gone from what the model reads, in training (it learns no keyword:
     * near chance, 25%, on clean text too) and in validation; d_chi at
     * epsilon 0.05 (noise far beyond the embeddings' spread) alike */
    const char *mech[] = {"rr --epsilon inf", "rr --epsilon 0.05", "dx --epsilon 0.05"};
    for (int k = 0; k < 3; k++) {
        char noisy[512];
        snprintf(noisy, sizeof noisy, "%s", tu_tmp(k ? "kw_noisy.tlm" : "kw_rrinf.tlm"));
        char priv[64];
        snprintf(priv, sizeof priv, "--privatize %s", mech[k]);
        train_keywords(&out, &err, tr, tok, he, 300, noisy, priv);
        const double a = json_number(out, "val_accuracy");
        uint8_t *x, *y;
        size_t xn, yn;
        assert_int_equal(tlm_read_file(model, &x, &xn, NULL), TLM_OK);
        assert_int_equal(tlm_read_file(noisy, &y, &yn, NULL), TLM_OK);
        if (k == 0) {
            assert_true(a == train_acc);
            assert_true(xn == yn && memcmp(x, y, xn) == 0);
        } else {
            assert_true(a < 0.5);
            assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --json", noisy, tr, he), 0);
            const double clean = json_number(out, "accuracy");
            printf("keyword task trained through %s: accuracy %.3f (privatized text), %.3f (clean)\n", mech[k], a, clean);
            assert_true(clean < 0.5);
        }
        free(x);
        free(y);
    }
    assert_true(acc[0] >= 0.9);
    assert_true(acc[0] >= acc[1]);
    char near_chance[512]; /* the last model trained through --privatize above */
    snprintf(near_chance, sizeof near_chance, "%s", tu_tmp("kw_noisy.tlm"));
    check_report(near_chance, tr, he);
    check_sweep(tr, tok, he, model);
    /* a --val label the training text does not have, or a --val line without one, stops the run before any step */
    const char unseen[] = "my lamp now\tlights\nthe song\tradio\n", bare_val[] = "my lamp now\tlights\nthe song\n";
    const char *bad[] = {unseen, bare_val}, *why[] = {"line 2's label 'radio' is not among the 4 labels", "line 2 has no TAB"};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(tlm_write_file_atomic(he, bad[i], strlen(bad[i]), NULL), TLM_OK);
        assert_int_equal(tu_run(&out, &err, "train --data '%s' --val '%s' --split lines --label-loss --init '%s' --steps 5 -o '%s'",
                                tr, he, model, tu_tmp("kw_bad.tlm")),
                         1);
        assert_non_null(strstr(err, why[i]));
        assert_null(strstr(err, "step 1"));
    }
    /* the text alone, no labels: one prediction per line */
    const char bare[] = "my lamp now please\nthe rain today\n";
    assert_int_equal(tlm_write_file_atomic(he, bare, strlen(bare), NULL), TLM_OK);
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s'", model, tr, he), 0);
    assert_string_equal(out, "lights\nweather\n");
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --report", model, tr, he), 1);
    assert_non_null(strstr(err, "need lines TEXT<TAB>LABEL"));
    /* confidences with the predictions; a threshold needs the label rejected lines get */
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --print --json", model, tr, he), 0);
    const char *cf = strstr(out, "\"confidences\":[");
    assert_non_null(cf);
    char *next;
    const double c0 = strtod(cf + 15, &next), c1 = strtod(next + 1, NULL);
    assert_true(c0 > 0 && c0 <= 1 && c1 > 0 && c1 <= 1);
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --min-confidence 0.5", model, tr, he), 2);
    assert_non_null(strstr(err, "needs --oos"));
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --oos music --min-confidence 1.5", model, tr, he), 2);
    const double lo = c0 < c1 ? c0 : c1, p = (lo + 1) / 2; /* rejects the less sure line at least */
    assert_true(lo < 1);
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text '%s' --oos music --min-confidence %.9f", model, tr, he, p), 0);
    char want[64];
    snprintf(want, sizeof want, "%s\n%s\n", c0 < p ? "music" : "lights", c1 < p ? "music" : "weather");
    assert_string_equal(out, want);
    /* ... and from stdin */
    assert_int_equal(tu_run(&out, &err, "classify -m '%s' --labels '%s' --text - <'%s'", model, tr, he), 0);
    assert_string_equal(out, "lights\nweather\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_train_and_classify)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
