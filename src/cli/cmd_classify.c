/* tritlm classify: closed-set classification (intents, commands) with a
 * language model trained on TEXT<TAB>LABEL lines. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/classify.h"
#include "../host/fileio.h"
#include "../host/model_file.h"
#include "../host/privacy.h"
#include "cli.h"
#include "tritlm/runtime.h"

static const char help[] =
    "usage: tritlm classify -m MODEL --labels FILE --text FILE [--greedy] [--oos LABEL [--min-confidence P | --sweep]]\n"
    "                       [--print] [--report] [--confusion FILE.csv] [--ctx N] [--threads N] [--kv-int8]\n"
    "                       [--privatize dx|rr --epsilon E [--seed S]] [--json]\n"
    "\n"
    "Gives each line of --text the label whose line 'TEXT<TAB>LABEL' the model finds the\n"
    "most probable (followed by BOS, as 'tritlm train --split lines' trains on such lines;\n"
    "a label that is a prefix of another is scored as complete). Lines 'TEXT<TAB>LABEL'\n"
    "are scored against their label: accuracy, and with --oos, in-scope accuracy and\n"
    "out-of-scope recall. Lines with no TAB are only classified (see --print).\n"
    "\n"
    "  -m, --model FILE     model image (.tlm), trained on TEXT<TAB>LABEL lines\n"
    "      --labels FILE    the label set: on each line the part after its last TAB, or\n"
    "                       the whole line (so the training file itself will do)\n"
    "      --text FILE      lines to classify ('-': stdin)\n"
    "      --greedy         follow the likeliest next token among the labels' instead of\n"
    "                       scoring every label (a few forward passes per line instead of\n"
    "                       one per node of the labels' token tree; may miss the best)\n"
    "      --oos LABEL      the label meaning 'none of these' (CLINC150's 'oos'): reported apart\n"
    "      --min-confidence P  a line whose label gets a confidence below P (0..1) gets --oos\n"
    "                       instead: the label's probability given the text, exp(its score -\n"
    "                       the score of the tokens all candidates share), at most 1 summed\n"
    "                       over the labels (rejecting what the model is unsure of)\n"
    "      --print          print each line's predicted label on stdout (the default when\n"
    "                       no line has a label); figures then go to stderr\n"
    "      --report         per label: lines, predictions, precision, recall, F1 and the\n"
    "                       label its lines were most often given instead, worst F1 first,\n"
    "                       and the F1 averaged over the labels (macro F1)\n"
    "      --confusion FILE.csv  write the confusion matrix: gold,predicted,count for each\n"
    "                       pair of labels that occurred (the diagonal is the correct lines)\n"
    "      --sweep          with --oos: the figures at --min-confidence 0.1, 0.2, ... 0.9,\n"
    "                       from this one classification (to choose a threshold)\n"
    "      --ctx N          context (default: the model's seq_len); a longer line loses its\n"
    "                       first tokens, as in training windows\n"
    "      --threads N      worker threads (default: all cores)\n"
    "      --kv-int8        decode with the int8 KV cache (as a device would)\n"
    "      --privatize M    the model reads each text privatized by mechanism M (see 'tritlm\n"
    "                       privatize'); --epsilon E per token, --seed S for reproducible noise\n"
    "      --json           one JSON object on stdout (with --print: 'predictions' and\n"
    "                       'confidences' in it)\n"
    "  -h, --help           this text\n";

static double ratio(size_t a, size_t b) { return b ? (double)a / (double)b : 0.0; }

typedef struct {
    double f1;
    size_t k;
} ranked;

static int worst_first(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->f1 != y->f1) return x->f1 < y->f1 ? -1 : 1;
    return x->k < y->k ? -1 : x->k > y->k;
}

/* The labels that occur (as gold or predicted), worst F1 first; returns how many. */
static size_t rank_labels(const tlm_cls_label_stats *st, size_t n, ranked *out)
{
    size_t m = 0;
    for (size_t k = 0; k < n; k++)
        if (st[k].support || st[k].predicted) out[m++] = (ranked){st[k].f1, k};
    qsort(out, m, sizeof *out, worst_first);
    return m;
}

static void print_report(FILE *f, const tlm_labels *l, const tlm_cls_label_stats *st, const ranked *rk, size_t m, double macro_f1)
{
    int w = 5;
    for (size_t i = 0; i < m; i++) {
        const size_t len = strlen(l->name[rk[i].k]);
        if ((int)len > w) w = len > 40 ? 40 : (int)len;
    }
    fprintf(f, "%-*s  %7s  %9s  %7s  %9s  %6s  %6s  %s\n", w, "label", "lines", "predicted", "correct", "precision", "recall", "F1",
            "most often given instead");
    for (size_t i = 0; i < m; i++) {
        const tlm_cls_label_stats *s = &st[rk[i].k];
        fprintf(f, "%-*s  %7zu  %9zu  %7zu  %9.4f  %6.4f  %6.4f", w, l->name[rk[i].k], s->support, s->predicted, s->correct,
                s->precision, s->recall, s->f1);
        if (s->confused_with != UINT32_MAX) fprintf(f, "  %s (%zu)", l->name[s->confused_with], s->confused);
        fputc('\n', f);
    }
    size_t with_lines = 0;
    for (size_t i = 0; i < m; i++) with_lines += st[rk[i].k].support > 0;
    fprintf(f, "macro F1 %.4f over the %zu labels with lines\n", macro_f1, with_lines);
}

/* One CSV field, quoted when it holds a comma, a quote or a line break. */
static void csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static tlm_status write_confusion(const char *path, const tlm_labels *l, const size_t *cm, tlm_error *err)
{
    tlm_atomic_file af;
    tlm_status st = tlm_atomic_open(&af, path, err);
    if (st) return st;
    fputs("gold,predicted,count\n", af.f);
    for (size_t g = 0; g < l->n; g++)
        for (size_t p = 0; p < l->n; p++) {
            if (!cm[g * l->n + p]) continue;
            csv_field(af.f, l->name[g]);
            fputc(',', af.f);
            csv_field(af.f, l->name[p]);
            fprintf(af.f, ",%zu\n", cm[g * l->n + p]);
        }
    return tlm_atomic_commit(&af, err);
}

int cmd_classify(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},  {"labels", required_argument, 0, 'l'},
        {"text", required_argument, 0, 'x'},   {"greedy", no_argument, 0, 'g'},
        {"oos", required_argument, 0, 'o'},    {"print", no_argument, 0, 'p'},
        {"ctx", required_argument, 0, 'c'},    {"threads", required_argument, 0, 'T'},
        {"kv-int8", no_argument, 0, 'K'},      {"privatize", required_argument, 0, 'P'},
        {"epsilon", required_argument, 0, 'E'}, {"seed", required_argument, 0, 'S'},
        {"json", no_argument, 0, 'j'},         {"help", no_argument, 0, 'h'},
        {"min-confidence", required_argument, 0, 'C'}, {"report", no_argument, 0, 'R'},
        {"confusion", required_argument, 0, 'X'}, {"sweep", no_argument, 0, 'W'},
        {0, 0, 0, 0}};
    const char *model_path = NULL, *labels_path = NULL, *text_path = NULL, *confusion_path = NULL;
    tlm_cls_opts co = {0};
    int json = 0, print = 0, report = 0, sweep = 0, c;
    uint32_t u;
    cli_priv pv = {0};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'l': labels_path = optarg; break;
        case 'x': text_path = optarg; break;
        case 'g': co.mode = TLM_CLASSIFY_GREEDY; break;
        case 'o': co.oos = optarg; break;
        case 'p': print = 1; break;
        case 'c':
            if (!cli_parse_u32(optarg, 2, 1u << 20, &co.ctx)) return cli_usage_error("classify", "--ctx expects an integer >= 2, got '%s'", optarg);
            break;
        case 'T':
            if (!cli_parse_u32(optarg, 1, 1024, &u)) return cli_usage_error("classify", "--threads expects 1..1024, got '%s'", optarg);
            co.threads = (int)u;
            break;
        case 'K': co.rt_flags |= TLM_RT_KV_INT8; break;
        case 'C':
            if (cli_parse_confidence("classify", optarg, &co.min_confidence)) return TLM_EXIT_USAGE;
            break;
        case 'P':
        case 'E':
        case 'S':
            if (cli_priv_option("classify", c, optarg, &pv)) return TLM_EXIT_USAGE;
            break;
        case 'j': json = 1; break;
        case 'R': report = 1; break;
        case 'W': sweep = 1; break;
        case 'X': confusion_path = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_bad_option("classify", argv, c);
        }
    }
    if (optind != argc) return cli_usage_error("classify", "unexpected argument '%s'", argv[optind]);
    if (cli_priv_check("classify", &pv)) return TLM_EXIT_USAGE;
    const tlm_mech mech = (tlm_mech)pv.mech;
    const float eps = pv.eps;
    co.priv_seed = pv.seed;
    co.priv_seeded = pv.seeded;
    if (!model_path) return cli_usage_error("classify", "missing -m MODEL");
    if (!labels_path) return cli_usage_error("classify", "missing --labels FILE");
    if (!text_path) return cli_usage_error("classify", "missing --text FILE");
    if (co.priv_seeded && !mech) return cli_usage_error("classify", "--seed goes with --privatize");
    if (co.min_confidence > 0 && !co.oos)
        return cli_usage_error("classify", "--min-confidence needs --oos LABEL, the label a rejected line gets");
    if (sweep && !co.oos) return cli_usage_error("classify", "--sweep needs --oos LABEL, the label a rejected line gets");
    if (sweep && co.min_confidence > 0)
        return cli_usage_error("classify", "--sweep tries the thresholds itself: leave out --min-confidence");
    co.progress = isatty(2);

    tlm_error err;
    tlm_model_file mf;
    if (tlm_model_file_open(&mf, model_path, &err)) return cli_fail("classify", &err);
    uint8_t *ltext = NULL, *text = NULL;
    size_t llen, len;
    tlm_labels labels = {0};
    tlm_cls_result r = {0};
    tlm_privatizer priv;
    void *index = NULL;
    tlm_status st = tlm_read_text(labels_path, &ltext, &llen, &err);
    if (!st) st = tlm_labels_parse((const char *)ltext, llen, &labels, &err);
    if (!st) st = strcmp(text_path, "-") ? tlm_read_text(text_path, &text, &len, &err)
                                         : tlm_read_stream(stdin, "stdin", &text, &len, &err);
    if (!st && (report || confusion_path || sweep) && !memchr(text, '\t', len))
        st = tlm_fail(&err, TLM_ERR_ARG, "--report, --confusion and --sweep need lines TEXT<TAB>LABEL in --text (their gold labels)");
    if (!st && mech) {
        st = tlm_privatizer_init(&priv, &mf.model, mech, eps, &err);
        if (!st) st = tlm_privatizer_index_alloc(&priv, &index, &err);
        co.priv = &priv;
    }
    if (!st) st = tlm_classify_text(&mf.model, &labels, (const char *)text, len, &co, &r, &err);
    free(index);
    free(ltext);
    free(text);
    tlm_model_file_close(&mf);
    if (st) {
        tlm_labels_free(&labels);
        return cli_fail("classify", &err);
    }
    if (!r.n.labelled) print = 1;
    /* per-label figures (the macro F1 always, when lines have labels) */
    tlm_cls_label_stats *stats = NULL;
    size_t *cm = NULL, nrank = 0;
    ranked *rk = NULL;
    double macro_f1 = 0;
    if (r.n.labelled) {
        stats = calloc(labels.n, sizeof *stats);
        rk = calloc(labels.n, sizeof *rk);
        if (confusion_path) /* (else tlm_cls_report keeps its matrix to itself) */
            cm = labels.n <= SIZE_MAX / sizeof *cm / labels.n ? calloc(labels.n * labels.n, sizeof *cm) : NULL;
        st = stats && rk && (cm || !confusion_path) ? tlm_cls_report(&r, labels.n, stats, cm, &macro_f1, &err)
                                                    : tlm_fail(&err, TLM_ERR_NOMEM, "out of memory");
        if (!st) nrank = rank_labels(stats, labels.n, rk);
        if (!st && confusion_path) st = write_confusion(confusion_path, &labels, cm, &err);
        if (st) goto done;
    }
    const double fw = ratio((size_t)r.forwards, r.samples);
    tlm_cls_counts sw[10];
    static const float sweep_p[10] = {0, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f};
    for (int i = 0; sweep && i < 10; i++) tlm_cls_count(&r, tlm_labels_index(&labels, co.oos), sweep_p[i], &sw[i]);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "lines", (double)r.samples);
        cJSON_AddNumberToObject(o, "labels", (double)labels.n);
        cJSON_AddNumberToObject(o, "labelled", (double)r.n.labelled);
        cJSON_AddNumberToObject(o, "correct", (double)r.n.correct);
        cJSON_AddNumberToObject(o, "accuracy", ratio(r.n.correct, r.n.labelled));
        if (r.n.labelled) cJSON_AddNumberToObject(o, "macro_f1", macro_f1);
        if (sweep) {
            cJSON *a = cJSON_AddArrayToObject(o, "sweep");
            for (int i = 0; i < 10; i++) {
                cJSON *e = cJSON_CreateObject();
                cJSON_AddNumberToObject(e, "min_confidence", i / 10.0);
                cJSON_AddNumberToObject(e, "rejected", (double)sw[i].rejected);
                cJSON_AddNumberToObject(e, "accuracy", ratio(sw[i].correct, sw[i].labelled));
                cJSON_AddNumberToObject(e, "in_scope_accuracy", ratio(sw[i].in_scope_correct, sw[i].in_scope));
                cJSON_AddNumberToObject(e, "oos_recall", ratio(sw[i].oos_correct, sw[i].oos));
                cJSON_AddItemToArray(a, e);
            }
        }
        if (report) {
            cJSON *pl = cJSON_AddArrayToObject(o, "per_label");
            for (size_t i = 0; i < nrank; i++) {
                const tlm_cls_label_stats *s = &stats[rk[i].k];
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "label", labels.name[rk[i].k]);
                cJSON_AddNumberToObject(e, "lines", (double)s->support);
                cJSON_AddNumberToObject(e, "predicted", (double)s->predicted);
                cJSON_AddNumberToObject(e, "correct", (double)s->correct);
                cJSON_AddNumberToObject(e, "precision", s->precision);
                cJSON_AddNumberToObject(e, "recall", s->recall);
                cJSON_AddNumberToObject(e, "f1", s->f1);
                if (s->confused_with != UINT32_MAX) {
                    cJSON_AddStringToObject(e, "most_often_given", labels.name[s->confused_with]);
                    cJSON_AddNumberToObject(e, "times", (double)s->confused);
                }
                cJSON_AddItemToArray(pl, e);
            }
        }
        if (co.oos) {
            cJSON_AddNumberToObject(o, "in_scope_accuracy", ratio(r.n.in_scope_correct, r.n.in_scope));
            cJSON_AddNumberToObject(o, "oos_recall", ratio(r.n.oos_correct, r.n.oos));
            cJSON_AddNumberToObject(o, "oos_predicted", (double)r.n.oos_predicted);
        }
        if (co.min_confidence > 0) {
            cJSON_AddNumberToObject(o, "min_confidence", co.min_confidence);
            cJSON_AddNumberToObject(o, "rejected", (double)r.n.rejected);
        }
        cJSON_AddNumberToObject(o, "truncated", (double)r.truncated);
        cJSON_AddStringToObject(o, "search", co.mode == TLM_CLASSIFY_GREEDY ? "greedy" : "exact");
        cJSON_AddNumberToObject(o, "forwards_per_line", fw);
        cJSON_AddNumberToObject(o, "seconds", r.seconds);
        if (mech) {
            cJSON_AddStringToObject(o, "mechanism", tlm_mech_name(mech));
            cJSON_AddNumberToObject(o, "epsilon", isinf(eps) ? -1 : eps);
            cJSON_AddNumberToObject(o, "privatized", (double)r.privatized);
            cJSON_AddNumberToObject(o, "unchanged", (double)r.unchanged);
        }
        if (print) {
            cJSON *a = cJSON_AddArrayToObject(o, "predictions");
            for (size_t i = 0; i < r.samples; i++) cJSON_AddItemToArray(a, cJSON_CreateString(labels.name[r.pred[i]]));
            cJSON *cf = cJSON_AddArrayToObject(o, "confidences");
            for (size_t i = 0; i < r.samples; i++) cJSON_AddItemToArray(cf, cJSON_CreateNumber(r.conf[i]));
        }
        cli_json_emit(o);
    } else {
        if (print)
            for (size_t i = 0; i < r.samples; i++) puts(labels.name[r.pred[i]]);
        FILE *f = print ? stderr : stdout;
        fprintf(f, "lines %zu  labels %zu", r.samples, labels.n);
        if (r.n.labelled) fprintf(f, "  accuracy %.4f (%zu of %zu)", ratio(r.n.correct, r.n.labelled), r.n.correct, r.n.labelled);
        if (co.oos && r.n.labelled)
            fprintf(f, "  in-scope %.4f (%zu of %zu)  oos recall %.4f (%zu of %zu)", ratio(r.n.in_scope_correct, r.n.in_scope),
                    r.n.in_scope_correct, r.n.in_scope, ratio(r.n.oos_correct, r.n.oos), r.n.oos_correct, r.n.oos);
        if (co.min_confidence > 0) fprintf(f, "  rejected %zu (confidence below %g)", r.n.rejected, co.min_confidence);
        fputc('\n', f);
        if (sweep) {
            fprintf(f, "min-confidence  rejected  accuracy  in-scope accuracy  oos recall\n");
            for (int i = 0; i < 10; i++)
                fprintf(f, "%14.1f  %8zu  %8.4f  %17.4f  %10.4f\n", sweep_p[i], sw[i].rejected, ratio(sw[i].correct, sw[i].labelled),
                        ratio(sw[i].in_scope_correct, sw[i].in_scope), ratio(sw[i].oos_correct, sw[i].oos));
        }
        if (report) print_report(f, &labels, stats, rk, nrank, macro_f1);
        fflush(stdout);
        fprintf(stderr, "%s search, %.1f forward passes per line, %.2f s", co.mode == TLM_CLASSIFY_GREEDY ? "greedy" : "exact", fw,
                r.seconds);
        if (mech) fprintf(stderr, ", %llu of %llu text tokens changed by the noise", (unsigned long long)(r.privatized - r.unchanged),
                          (unsigned long long)r.privatized);
        fputc('\n', stderr);
    }
    if (r.truncated)
        fprintf(stderr, "classify: note: %zu of %zu lines were longer than the context with their labels and lost their first tokens\n",
                r.truncated, r.samples);
done:
    free(stats);
    free(rk);
    free(cm);
    tlm_cls_result_free(&r);
    tlm_labels_free(&labels);
    return st ? cli_fail("classify", &err) : 0;
}
