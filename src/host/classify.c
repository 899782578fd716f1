#define _GNU_SOURCE
#include "classify.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csprng.h"
#include "progress.h"
#include "stories.h"
#include "tritlm/runtime.h"
#include "tritlm/tokenizer.h"

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* A stripped line's label: after its last TAB, trimmed; the whole line without one. */
static tlm_span line_label(tlm_span line, int *has_tab)
{
    const char *tab = memrchr(line.text, '\t', line.len);
    *has_tab = tab != NULL;
    if (!tab) return line;
    tlm_span s = {tab + 1, line.len - (size_t)(tab + 1 - line.text)};
    while (s.len && is_blank(*s.text)) s.text++, s.len--;
    while (s.len && is_blank(s.text[s.len - 1])) s.len--;
    return s;
}

static int32_t label_find(const tlm_labels *l, tlm_span s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->name[i]) == s.len && memcmp(l->name[i], s.text, s.len) == 0) return (int32_t)i;
    return -1;
}

int32_t tlm_labels_index(const tlm_labels *l, const char *name) { return label_find(l, (tlm_span){name, strlen(name)}); }

void tlm_labels_free(tlm_labels *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->name[i]);
    free(l->name);
    l->name = NULL;
    l->n = 0;
}

/* A label for an error message: at most 63 bytes of it. */
static void label_shown(tlm_span g, char shown[64])
{
    const size_t k = g.len < 63 ? g.len : 63;
    memcpy(shown, g.text, k);
    shown[k] = '\0';
}

tlm_status tlm_labels_check_lines(const tlm_labels *l, const char *text, size_t len, const char *what, tlm_error *err)
{
    tlm_stories lines;
    tlm_status st = tlm_stories_split_by(text, len, "\n", &lines, err);
    if (st) return st;
    for (size_t i = 0; i < lines.n && !st; i++) {
        int tab;
        const tlm_span g = line_label(lines.items[i], &tab);
        char shown[64];
        label_shown(g, shown);
        if (!tab)
            st = tlm_fail(err, TLM_ERR_FORMAT, "%s: line %zu has no TAB: TEXT<TAB>LABEL lines are needed", what, i + 1);
        else if (label_find(l, g) < 0)
            st = tlm_fail(err, TLM_ERR_FORMAT, "%s: line %zu's label '%s' is not among the %zu labels", what, i + 1, shown, l->n);
    }
    tlm_stories_free(&lines);
    return st;
}

tlm_status tlm_labels_parse(const char *text, size_t len, tlm_labels *out, tlm_error *err)
{
    memset(out, 0, sizeof *out);
    tlm_stories lines;
    tlm_status st = tlm_stories_split_by(text, len, "\n", &lines, err);
    if (st) return st;
    out->name = calloc(lines.n ? lines.n : 1, sizeof *out->name);
    if (!out->name) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < lines.n && !st; i++) {
        int tab;
        tlm_span s = line_label(lines.items[i], &tab);
        if (s.len == 0) {
            st = tlm_fail(err, TLM_ERR_FORMAT, "labels: line %zu has nothing after its tab", i + 1);
        } else if (memchr(s.text, '\0', s.len)) {
            st = tlm_fail(err, TLM_ERR_FORMAT, "labels: line %zu's label holds a NUL byte", i + 1);
        } else if (label_find(out, s) < 0) {
            if (!(out->name[out->n] = strndup(s.text, s.len))) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
            else out->n++;
        }
    }
    tlm_stories_free(&lines);
    if (!st && out->n < 2) st = tlm_fail(err, TLM_ERR_FORMAT, "labels: %zu distinct label%s, at least 2 are needed", out->n, out->n == 1 ? "" : "s");
    if (st) tlm_labels_free(out);
    return st;
}

void tlm_cls_result_free(tlm_cls_result *r)
{
    free(r->pred);
    free(r->gold);
    free(r->conf);
    r->pred = NULL;
    r->gold = NULL;
    r->conf = NULL;
}

static double share(size_t a, size_t b) { return b ? (double)a / (double)b : 0.0; }

tlm_status tlm_cls_report(const tlm_cls_result *res, size_t nlabels, tlm_cls_label_stats *stats, size_t *counts,
                          double *macro_f1, tlm_error *err)
{
    if (nlabels && nlabels > SIZE_MAX / sizeof(size_t) / nlabels) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    size_t *own = counts ? NULL : calloc(nlabels * nlabels, sizeof *own);
    size_t *cm = counts ? counts : own;
    if (!cm) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    memset(cm, 0, nlabels * nlabels * sizeof *cm);
    for (size_t i = 0; i < res->samples; i++)
        if (res->gold[i] >= 0 && (size_t)res->gold[i] < nlabels && res->pred[i] < nlabels)
            cm[(size_t)res->gold[i] * nlabels + res->pred[i]]++;
    double f1_sum = 0;
    size_t with_support = 0;
    for (size_t k = 0; k < nlabels; k++) {
        tlm_cls_label_stats *s = &stats[k];
        memset(s, 0, sizeof *s);
        s->confused_with = UINT32_MAX;
        for (size_t q = 0; q < nlabels; q++) {
            const size_t row = cm[k * nlabels + q];
            s->support += row;
            s->predicted += cm[q * nlabels + k];
            if (q != k && row > s->confused) {
                s->confused = row;
                s->confused_with = (uint32_t)q;
            }
        }
        s->correct = cm[k * nlabels + k];
        s->precision = share(s->correct, s->predicted);
        s->recall = share(s->correct, s->support);
        s->f1 = s->precision + s->recall > 0 ? 2 * s->precision * s->recall / (s->precision + s->recall) : 0.0;
        if (s->support) {
            f1_sum += s->f1;
            with_support++;
        }
    }
    free(own);
    *macro_f1 = with_support ? f1_sum / (double)with_support : 0.0;
    return TLM_OK;
}

void tlm_cls_count(const tlm_cls_result *res, int32_t oos, float p, tlm_cls_counts *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < res->samples; i++) {
        uint32_t pred = res->pred[i];
        if (oos >= 0 && res->conf[i] < p && pred != (uint32_t)oos) {
            pred = (uint32_t)oos;
            c->rejected++;
        }
        const int32_t g = res->gold[i];
        const int hit = g >= 0 && (uint32_t)g == pred;
        c->oos_predicted += oos >= 0 && pred == (uint32_t)oos;
        if (g < 0) continue;
        c->labelled++;
        c->correct += hit;
        if (g == oos) {
            c->oos++;
            c->oos_correct += hit;
        } else {
            c->in_scope++;
            c->in_scope_correct += hit;
        }
    }
}

typedef struct {
    tlm_status status;
    uint32_t forwards, privatized, unchanged;
    int truncated;
} line_result;

typedef struct {
    const tlm_model *m;
    const tlm_labels *labels;
    const tlm_stories *lines;
    const tlm_cls_opts *o;
    uint32_t ctx;
    size_t max_line, max_label;
    tlm_cls_result *res;
    line_result *lr;
    atomic_size_t next, done;
} job;

size_t tlm_label_first_token(const tlm_model *tok, const char *line, size_t len, const uint32_t *ids, size_t n)
{
    const char *tab = memrchr(line, '\t', len);
    if (!tab) return 0;
    const size_t at = (size_t)(tab - line) + 1; /* in " " + line */
    size_t pos = 0;
    for (size_t k = 1; k < n; k++) { /* after BOS */
        const uint8_t *s;
        size_t sl = tlm_token_str(tok, ids[k], &s);
        if (tlm_decodes_as_byte(s, sl)) sl = 1;
        if (pos + sl > at) return k;
        pos += sl;
    }
    return n;
}

/* The text part of a line (before its last TAB). */
static tlm_span line_text(tlm_span line)
{
    const char *tab = memrchr(line.text, '\t', line.len);
    return tab ? (tlm_span){line.text, (size_t)(tab - line.text)} : line;
}

static void *worker(void *arg)
{
    job *j = arg;
    const tlm_model *m = j->m;
    const uint32_t L = (uint32_t)j->labels->n;
    const size_t text_cap = j->max_line + 1 + j->max_label, cap = TLM_ENCODE_MAX_IDS(text_cap);
    char *buf = malloc(text_cap + 1);
    uint32_t *ids = malloc((size_t)L * cap * sizeof *ids), *off = malloc(((size_t)L + 1) * sizeof *off);
    uint32_t *order = malloc((size_t)L * sizeof *order), *txt = malloc(cap * sizeof *txt), *ptxt = malloc(cap * sizeof *ptxt);
    float *scores = malloc((size_t)L * sizeof *scores);
    int32_t *scratch = malloc(TLM_ENCODE_SCRATCH(cap) * sizeof *scratch);
    float *pscratch = j->o->priv ? malloc(TLM_PRIV_SCRATCH_FLOATS(m->hp.dim) * sizeof *pscratch) : NULL;
    const size_t ab = tlm_runtime_arena_size_flags(m, j->ctx, j->o->rt_flags);
    void *arena = malloc(ab);
    tlm_runtime rt;
    tlm_status st = !buf || !ids || !off || !order || !txt || !ptxt || !scores || !scratch || !arena ||
                            (j->o->priv && !pscratch)
                        ? TLM_ERR_NOMEM
                        : tlm_runtime_init_flags(&rt, m, j->ctx, j->o->rt_flags, arena, ab, NULL);
    for (;;) {
        const size_t s = atomic_fetch_add(&j->next, 1);
        if (s >= j->lines->n) break;
        line_result *r = &j->lr[s];
        r->status = st;
        const tlm_span t = line_text(j->lines->items[s]);
        /* every candidate: BOS, then TEXT<TAB>LABEL as training saw the line */
        off[0] = 0;
        for (uint32_t i = 0; i < L && !r->status; i++) {
            const size_t ll = strlen(j->labels->name[i]);
            memcpy(buf, t.text, t.len);
            buf[t.len] = '\t';
            memcpy(buf + t.len + 1, j->labels->name[i], ll);
            size_t n = 0;
            r->status = tlm_encode(m, buf, t.len + 1 + ll, TLM_ENCODE_BOS, ids + off[i], cap, scratch, &n);
            off[i + 1] = off[i] + (uint32_t)n;
        }
        /* the tokens every candidate shares (BOS and the text, unless a
         * merge spans the TAB), and the longest candidate */
        uint32_t longest = 0, shared = UINT32_MAX;
        for (uint32_t i = 0; i < L && !r->status; i++) {
            const uint32_t li = off[i + 1] - off[i];
            uint32_t k = 0;
            while (k < li && k < shared && k < off[1] && ids[off[i] + k] == ids[k]) k++;
            shared = k;
            if (li > longest) longest = li;
        }
        if (!r->status && j->o->priv) {
            /* The model reads the text privatized: the shared tokens that
             * the text's own encoding has too. */
            size_t nt = 0;
            r->status = tlm_encode(m, t.text, t.len, TLM_ENCODE_BOS, txt, cap, scratch, &nt);
            size_t np = 0;
            while (np < nt && np < shared && txt[np] == ids[np]) np++;
            tlm_chacha cc;
            tlm_host_source src;
            tlm_rand rnd;
            if (j->o->priv_seeded) {
                tlm_chacha_seed(&cc, j->o->priv_seed * 0x9E3779B97F4A7C15ull + s);
                tlm_rand_init(&rnd, tlm_chacha_fill, &cc);
            } else {
                tlm_host_rand(&rnd, &src);
            }
            if (!r->status) r->status = tlm_privatize_ids(j->o->priv, &rnd, NULL, txt, np, ptxt, pscratch, NULL, NULL);
            for (size_t k = 0; k < np && !r->status; k++) {
                if (!tlm_priv_in_domain(j->o->priv, txt[k])) continue;
                r->privatized++;
                r->unchanged += ptxt[k] == txt[k];
                ids[k] = ptxt[k]; /* in the first candidate: the prefix below is taken from it */
            }
        }
        /* A line longer than the context loses its first tokens, as the
         * windows of training did: only tokens all candidates share. */
        const uint32_t cut = longest > j->ctx ? longest - j->ctx : 0;
        if (!r->status && cut >= shared) r->status = TLM_ERR_ARG;
        r->truncated = cut > 0;
        tlm_classify_result cr;
        if (!r->status) {
            /* the shared tokens once (after the cut), then each label's own */
            memcpy(txt, ids + cut, (size_t)(shared - cut) * sizeof *txt);
            uint32_t w = 0;
            for (uint32_t i = 0; i < L; i++) {
                const uint32_t a = off[i] + shared, b = off[i + 1];
                off[i] = w;
                memmove(ids + w, ids + a, (size_t)(b - a) * sizeof *ids);
                w += b - a;
            }
            off[L] = w;
            r->status = tlm_classify(&rt, txt, shared - cut, ids, off, L, m->bos_id, j->o->mode, order, scores, &cr);
        }
        if (!r->status) {
            j->res->pred[s] = cr.best;
            j->res->conf[s] = expf(cr.score - cr.shared);
            r->forwards = cr.forwards;
        }
        atomic_fetch_add(&j->done, 1);
    }
    free(buf);
    free(ids);
    free(off);
    free(order);
    free(txt);
    free(ptxt);
    free(scores);
    free(scratch);
    free(pscratch);
    free(arena);
    return NULL;
}

tlm_status tlm_classify_text(const tlm_model *m, const tlm_labels *labels, const char *text, size_t len,
                             const tlm_cls_opts *o, tlm_cls_result *res, tlm_error *err)
{
    memset(res, 0, sizeof *res);
    const uint32_t ctx = o->ctx ? o->ctx : m->hp.seq_len;
    if (ctx < 2 || ctx > m->hp.seq_len)
        return tlm_fail(err, TLM_ERR_ARG, "--ctx %u must be between 2 and the model's seq_len %u", ctx, m->hp.seq_len);
    if (labels->n < 2 || labels->n > UINT32_MAX / 2) return tlm_fail(err, TLM_ERR_ARG, "%zu labels: at least 2 are needed", labels->n);
    tlm_stories lines;
    tlm_status st = tlm_stories_split_by(text, len, "\n", &lines, err);
    if (st) return st;
    if (lines.n == 0) {
        tlm_stories_free(&lines);
        return tlm_fail(err, TLM_ERR_FORMAT, "the text holds no line to classify");
    }
    job j = {.m = m, .labels = labels, .lines = &lines, .o = o, .ctx = ctx, .res = res};
    for (size_t i = 0; i < labels->n; i++)
        if (strlen(labels->name[i]) > j.max_label) j.max_label = strlen(labels->name[i]);
    res->samples = lines.n;
    res->pred = calloc(lines.n, sizeof *res->pred);
    res->gold = calloc(lines.n, sizeof *res->gold);
    res->conf = calloc(lines.n, sizeof *res->conf);
    j.lr = calloc(lines.n, sizeof *j.lr);
    if (!res->pred || !res->gold || !res->conf || !j.lr) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    int32_t oos = -1;
    if (!st && o->oos && (oos = tlm_labels_index(labels, o->oos)) < 0)
        st = tlm_fail(err, TLM_ERR_ARG, "--oos '%s' is not one of the %zu labels", o->oos, labels->n);
    if (!st && o->min_confidence > 0 && oos < 0)
        st = tlm_fail(err, TLM_ERR_ARG, "--min-confidence needs --oos, the label a rejected line gets");
    for (size_t i = 0; i < lines.n && !st; i++) {
        int tab;
        const tlm_span g = line_label(lines.items[i], &tab);
        res->gold[i] = tab ? label_find(labels, g) : -1;
        if (tab && res->gold[i] < 0) {
            char shown[64];
            label_shown(g, shown);
            st = tlm_fail(err, TLM_ERR_FORMAT, "line %zu: its label '%s' is not among the %zu labels", i + 1, shown, labels->n);
        }
        if (lines.items[i].len > j.max_line) j.max_line = lines.items[i].len;
    }
    int threads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    if ((size_t)threads > lines.n) threads = (int)lines.n;
    pthread_t *tid = st ? NULL : calloc((size_t)threads, sizeof *tid);
    if (!st && !tid) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    if (!st) {
        atomic_init(&j.next, 0);
        atomic_init(&j.done, 0);
        tlm_progress prog;
        tlm_progress_start(&prog, "classify", "lines", o->progress);
        const double t0 = tlm_now();
        int started = 0;
        for (; started < threads; started++)
            if (pthread_create(&tid[started], NULL, worker, &j) != 0) break;
        if (started == 0) worker(&j);
        while (started && atomic_load(&j.done) < lines.n) {
            tlm_progress_update(&prog, atomic_load(&j.done), lines.n, atomic_load(&j.done));
            usleep(50000);
        }
        for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
        res->seconds = tlm_now() - t0;
        tlm_progress_end(&prog);
    }
    for (size_t i = 0; i < lines.n && !st; i++) {
        const line_result *r = &j.lr[i];
        if (r->status == TLM_ERR_ARG) {
            st = tlm_fail(err, r->status, "line %zu: a label alone is longer than the context of %u tokens", i + 1, ctx);
        } else if (r->status) {
            st = tlm_fail(err, r->status, "line %zu could not be classified (%s)", i + 1, tlm_status_str(r->status));
        }
        if (st) {
            break;
        }
        res->forwards += r->forwards;
        res->privatized += r->privatized;
        res->unchanged += r->unchanged;
        res->truncated += r->truncated;
    }
    if (!st) {
        tlm_cls_counts c;
        tlm_cls_count(res, oos, o->min_confidence, &c);
        res->n = c;
        for (size_t i = 0; i < lines.n; i++) /* the rejected lines' label is oos from here on */
            if (res->conf[i] < o->min_confidence) res->pred[i] = (uint32_t)oos;
    }
    free(tid);
    free(j.lr);
    tlm_stories_free(&lines);
    if (st) tlm_cls_result_free(res);
    return st;
}
