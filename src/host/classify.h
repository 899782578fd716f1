/* Closed-set classification of text lines with a language model trained on
 * "TEXT<TAB>LABEL" lines (tritlm train --split lines): each line of a file
 * is scored against every label with the core's tlm_classify, in threads. */
#ifndef TLM_HOST_CLASSIFY_H
#define TLM_HOST_CLASSIFY_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/classify.h"
#include "tritlm/dp.h"
#include "tritlm/model.h"

/* The label set: distinct labels in order of first appearance. */
typedef struct tlm_labels {
    char **name;
    size_t n;
} tlm_labels;

/* Labels from a text: on each non-empty line, what follows its last TAB
 * (or the whole line when it has none), white space trimmed. So a
 * training file of TEXT<TAB>LABEL lines and a list of labels both work. */
tlm_status tlm_labels_parse(const char *text, size_t len, tlm_labels *out, tlm_error *err);
void tlm_labels_free(tlm_labels *l);
/* The index of the label named `name`, or -1. */
int32_t tlm_labels_index(const tlm_labels *l, const char *name);

/* Every non-empty line of `text` is TEXT<TAB>LABEL with LABEL one of `l`
 * (`what` names the text in the error, e.g. "--val"). */
tlm_status tlm_labels_check_lines(const tlm_labels *l, const char *text, size_t len, const char *what, tlm_error *err);

typedef struct tlm_cls_opts {
    uint32_t ctx;             /* 0: the model's seq_len */
    int threads;              /* <= 0: all online cores */
    tlm_classify_mode mode;
    uint32_t rt_flags;        /* TLM_RT_KV_INT8 */
    const char *oos;          /* a label that means "none of the others" (counted apart), or NULL */
    float min_confidence;     /* > 0 (needs oos): a line whose chosen label's confidence is below it
                                 gets oos instead (rejected) */
    const tlm_privatizer *priv; /* the model reads the text's tokens privatized */
    int priv_seeded;          /* line i's noise from ChaCha20 seeded with (priv_seed, i); else the host CSPRNG */
    uint64_t priv_seed;
    int progress;
} tlm_cls_opts;

/* The counts of a classification over its lines with a gold label. */
typedef struct tlm_cls_counts {
    size_t labelled, correct;          /* lines with a gold label, and those predicted right */
    size_t in_scope, in_scope_correct; /* labelled lines whose gold label is not opts.oos */
    size_t oos, oos_correct;           /* ... whose gold label is opts.oos */
    size_t oos_predicted;              /* lines predicted as opts.oos */
    size_t rejected;                   /* lines given oos for a confidence below min_confidence */
} tlm_cls_counts;

typedef struct tlm_cls_result {
    size_t samples;           /* non-empty lines */
    tlm_cls_counts n;         /* (with opts.min_confidence: after the rejections) */
    uint64_t forwards;        /* decoder calls */
    uint64_t privatized, unchanged;
    size_t truncated;         /* lines longer than the context, cut at the front */
    double seconds;
    uint32_t *pred;           /* per line, the predicted label's index */
    float *conf;              /* per line, the chosen label's confidence exp(score - shared)
                                 (tlm_classify_result; before any rejection) */
    int32_t *gold;            /* per line, the gold label's index or -1 */
} tlm_cls_result;

/* Lines of `text`: "TEXT<TAB>LABEL" (LABEL must be one of `labels`) or
 * just TEXT. */
tlm_status tlm_classify_text(const tlm_model *m, const tlm_labels *labels, const char *text, size_t len,
                             const tlm_cls_opts *opts, tlm_cls_result *res, tlm_error *err);
void tlm_cls_result_free(tlm_cls_result *r);

/* The figures of res as they would be if every line whose confidence is
 * below p were given the label oos (>= 0) instead (rejected: counted when
 * its label was not oos already); p 0 counts res as it is. The counts of
 * tlm_classify_text with min_confidence p come from it, so thresholds can
 * be tried on one classification: pass a result classified without one. */
void tlm_cls_count(const tlm_cls_result *res, int32_t oos, float p, tlm_cls_counts *c);

/* Per-label figures of a classification (what a user reads to see which
 * labels fail and which they are taken for): over the lines with a gold
 * label, `support` lines have this gold label, `predicted` lines were given
 * it, `correct` both; precision = correct / predicted, recall = correct /
 * support, f1 their harmonic mean (each 0 where its denominator is);
 * `confused_with` is the wrong label this one's lines were given most
 * often (the lowest index among ties; UINT32_MAX when none was wrong),
 * `confused` how often. */
typedef struct tlm_cls_label_stats {
    size_t support, predicted, correct, confused;
    uint32_t confused_with;
    double precision, recall, f1;
} tlm_cls_label_stats;

/* stats[0..nlabels) from res; if counts is not NULL it receives the
 * confusion matrix, counts[gold * nlabels + predicted] (nlabels^2 entries).
 * *macro_f1 receives the F1 averaged over the labels with support (0 when
 * no line has a gold label); TLM_ERR_NOMEM leaves it untouched. */
tlm_status tlm_cls_report(const tlm_cls_result *res, size_t nlabels, tlm_cls_label_stats *stats, size_t *counts,
                          double *macro_f1, tlm_error *err);

/* Where the label starts in a line "TEXT<TAB>LABEL" encoded with BOS as
 * ids[0..n): the index of the first token that reaches past the line's
 * last TAB (the tokens' strings spell " " + line, the encoder's dummy
 * prefix; a byte token stands for one byte). 0 when the line has no TAB;
 * n when nothing of the label was encoded. What `train --label-loss`
 * trains on and its validation scores. */
size_t tlm_label_first_token(const tlm_model *tok, const char *line, size_t len, const uint32_t *ids, size_t n);

#endif
