#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classify.h"
#include "csprng.h"
#include "eval.h"
#include "progress.h"
#include "seq.h"
#include "simd.h"
#include "stories.h"
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"
#include "tritlm/tokenizer.h"

typedef struct {
    double loss;       /* summed over the story's predictions */
    uint32_t correct, predicted, windows;
    uint64_t positions; /* processed, over all windows (overlapping ones count again) */
    uint32_t privatized, unchanged;
    int truncated;
    tlm_status status;
} story_result;

typedef struct {
    const tlm_model *m;
    const tlm_stories *stories;
    uint32_t ctx, stride;
    int windows, token_by_token, float_acts, label_only;
    uint32_t rt_flags;
    const void *adapter;
    size_t adapter_bytes;
    const tlm_privatizer *priv;
    int priv_seeded;
    uint64_t priv_seed;
    size_t max_story;
    story_result *res;
    atomic_size_t next;
    atomic_size_t done;
    atomic_ullong positions;
} job;

/* Loss and hit for predicting `target` from one row of logits (the row is
 * overwritten with exponentials). */
static void score(float *logits, uint32_t V, uint32_t target, story_result *r)
{
    const float target_logit = logits[target];
    const uint32_t best = tlm_argmax(logits, V);
    const float mx = logits[best];
    const double sum = tlm_vexp_sum(logits, V, mx);
    r->loss += log(sum) + (double)mx - (double)target_logit;
    r->correct += best == target;
    r->predicted++;
}

static void *worker(void *arg)
{
    job *j = arg;
    const tlm_model *m = j->m;
    const uint32_t V = m->hp.vocab_size;
    size_t cap = TLM_ENCODE_MAX_IDS(j->max_story);
    uint32_t *ids = malloc((cap + 1) * sizeof *ids); /* + the end of a line with label_only */
    int32_t *scratch = malloc(TLM_ENCODE_SCRATCH(cap) * sizeof *scratch);
    uint32_t *pin = j->priv ? malloc((cap + 1) * sizeof *pin) : NULL;
    float *pscratch = j->priv ? malloc(TLM_PRIV_SCRATCH_FLOATS(m->hp.dim) * sizeof *pscratch) : NULL;
    tlm_seq_ws ws;
    int have_ws = 0;
    void *arena = NULL;
    tlm_runtime rt;
    tlm_status st = (!ids || !scratch || (j->priv && (!pin || !pscratch))) ? TLM_ERR_NOMEM : TLM_OK;
    if (!st && j->token_by_token) {
        size_t ab = tlm_runtime_arena_size_flags(m, j->ctx, j->rt_flags);
        arena = malloc(ab);
        st = arena ? tlm_runtime_init_flags(&rt, m, j->ctx, j->rt_flags, arena, ab, NULL) : TLM_ERR_NOMEM;
        if (!st && j->adapter) st = tlm_runtime_use_adapter(&rt, j->adapter, j->adapter_bytes, NULL);
    } else if (!st) {
        st = tlm_seq_ws_init(&ws, m, j->ctx, NULL);
        have_ws = st == TLM_OK;
        ws.float_acts = j->float_acts;
    }
    for (;;) {
        size_t s = atomic_fetch_add(&j->next, 1);
        if (s >= j->stories->n) break;
        story_result *r = &j->res[s];
        memset(r, 0, sizeof *r);
        if (st) {
            r->status = st;
            atomic_fetch_add(&j->done, 1);
            continue;
        }
        size_t n = 0;
        r->status = tlm_encode(m, j->stories->items[s].text, j->stories->items[s].len, TLM_ENCODE_BOS, ids, cap, scratch, &n);
        if (r->status) {
            atomic_fetch_add(&j->done, 1);
            continue;
        }
        size_t first_target = 1; /* ids[first_target] is the first token scored */
        if (j->label_only) {
            first_target = tlm_label_first_token(m, j->stories->items[s].text, j->stories->items[s].len, ids, n);
            ids[n++] = m->bos_id;
            if (n > j->ctx) { /* keep BOS and the line's last ctx - 1 tokens */
                const size_t cut = n - j->ctx;
                memmove(ids + 1, ids + 1 + cut, (j->ctx - 1) * sizeof *ids);
                first_target = first_target > cut + 1 ? first_target - cut : 1;
                n = j->ctx;
                r->truncated = 1;
            }
        }
        if (n > j->ctx && !j->windows) {
            n = j->ctx;
            r->truncated = 1;
        }
        if (n > UINT32_MAX) n = UINT32_MAX; /* (a story of 4G tokens) */
        uint32_t T = (uint32_t)n;
        const uint32_t *in = ids;
        if (j->priv && T > 1) {
            tlm_chacha cc;
            tlm_host_source src;
            tlm_rand rnd;
            if (j->priv_seeded) {
                tlm_chacha_seed(&cc, j->priv_seed * 0x9E3779B97F4A7C15ull + s);
                tlm_rand_init(&rnd, tlm_chacha_fill, &cc);
            } else {
                tlm_host_rand(&rnd, &src);
            }
            /* (with label_only the label's tokens stay as they are, as classify gives them) */
            const uint32_t np = j->label_only && first_target < T - 1 ? (uint32_t)first_target : T - 1;
            r->status = tlm_privatize_ids(j->priv, &rnd, NULL, ids, np, pin, pscratch, NULL, NULL);
            if (r->status) {
                atomic_fetch_add(&j->done, 1);
                continue;
            }
            memcpy(pin + np, ids + np, (T - 1 - np) * sizeof *pin);
            for (uint32_t t = 0; t < np; t++)
                if (tlm_priv_in_domain(j->priv, ids[t])) {
                    r->privatized++;
                    r->unchanged += pin[t] == ids[t];
                }
            in = pin;
        }
        /* windows [a, b) of at most ctx tokens, `stride` apart; each scores
         * the targets from `done` (the first not yet scored) to b - 1 */
        for (uint32_t a = 0, done = 1;;) {
            const uint32_t b = T - a > j->ctx ? a + j->ctx : T, W = b - a, first = done - a - 1;
            r->positions += W;
            r->windows++;
            if (j->token_by_token) {
                for (uint32_t t = 0; t + 1 < W; t++) {
                    float *logits;
                    tlm_runtime_forward(&rt, in[a + t], t, &logits);
                    if (t >= first && a + t + 1 >= first_target) score(logits, V, ids[a + t + 1], r);
                }
            } else if (W > 1) {
                tlm_seq_forward(m, in + a, W - 1, &ws);
                for (uint32_t t = first; t + 1 < W; t++)
                    if (a + t + 1 >= first_target) score(ws.logits + (size_t)t * V, V, ids[a + t + 1], r);
            }
            if (b >= T) break;
            done = b;
            a += j->stride;
        }
        atomic_fetch_add(&j->positions, r->positions);
        atomic_fetch_add(&j->done, 1);
    }
    if (have_ws) tlm_seq_ws_free(&ws);
    free(arena);
    free(ids);
    free(scratch);
    free(pin);
    free(pscratch);
    return NULL;
}

tlm_status tlm_eval_text(const tlm_model *m, const char *text, size_t len, const tlm_eval_opts *opts,
                         tlm_eval_result *res, tlm_error *err)
{
    memset(res, 0, sizeof *res); /* no stale per-story pointer on any return */
    uint32_t ctx = opts->ctx ? opts->ctx : m->hp.seq_len;
    if (ctx < 2 || ctx > m->hp.seq_len)
        return tlm_fail(err, TLM_ERR_ARG, "--ctx %u must be between 2 and the model's seq_len %u", ctx, m->hp.seq_len);
    if (opts->stride >= ctx)
        return tlm_fail(err, TLM_ERR_ARG, "--stride %u must be below the context %u", opts->stride, ctx);
    if (opts->adapter) {
        tlm_status st = tlm_runtime_adapter_check(m, opts->adapter, opts->adapter_bytes, err);
        if (st) return st;
    }
    if (opts->label_only && (opts->windows || !opts->separator || strcmp(opts->separator, "\n")))
        return tlm_fail(err, TLM_ERR_ARG, "scoring labels needs one TEXT<TAB>LABEL line per story, without windows");
    tlm_stories stories;
    tlm_status st = tlm_stories_split_by(text, len, opts->separator, &stories, err);
    if (st) return st;
    if (stories.n == 0) {
        tlm_stories_free(&stories);
        return tlm_fail(err, TLM_ERR_FORMAT, "the text holds no story (only white space and separators)");
    }
    for (size_t i = 0; i < stories.n && opts->label_only; i++)
        if (!memchr(stories.items[i].text, '\t', stories.items[i].len)) {
            tlm_stories_free(&stories);
            return tlm_fail(err, TLM_ERR_FORMAT, "line %zu has no TAB: scoring labels needs TEXT<TAB>LABEL lines", i + 1);
        }
    int threads = opts->threads > 0 ? opts->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    if ((size_t)threads > stories.n) threads = (int)stories.n;

    job j = {.m = m, .stories = &stories, .ctx = ctx, .stride = opts->stride ? opts->stride : ctx - 1,
             .windows = opts->windows, .label_only = opts->label_only, .token_by_token = opts->token_by_token || opts->adapter,
             .rt_flags = opts->rt_flags | (opts->adapter ? (uint32_t)TLM_RT_ADAPTER : 0u), .adapter = opts->adapter,
             .adapter_bytes = opts->adapter_bytes,
             .float_acts = opts->float_acts, .priv = opts->priv, .priv_seeded = opts->priv_seeded,
             .priv_seed = opts->priv_seed};
    for (size_t i = 0; i < stories.n; i++)
        if (stories.items[i].len > j.max_story) j.max_story = stories.items[i].len;
    j.res = calloc(stories.n, sizeof *j.res);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    if (!j.res || !tid) {
        free(j.res);
        free(tid);
        tlm_stories_free(&stories);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    atomic_init(&j.next, 0);
    atomic_init(&j.done, 0);
    atomic_init(&j.positions, 0);
    tlm_progress prog;
    tlm_progress_start(&prog, "eval stories", "tok", opts->progress);
    double t0 = tlm_now();
    int started = 0;
    for (; started < threads; started++)
        if (pthread_create(&tid[started], NULL, worker, &j) != 0) break;
    if (started == 0) worker(&j);
    while (started && atomic_load(&j.done) < stories.n) {
        tlm_progress_update(&prog, atomic_load(&j.done), stories.n, atomic_load(&j.positions));
        usleep(50000);
    }
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    double secs = tlm_now() - t0;
    tlm_progress_update(&prog, stories.n, stories.n, atomic_load(&j.positions));
    tlm_progress_end(&prog);

    /* Reduce in story order (into res, cleared on entry): the figures do not depend on thread count. */
    if (opts->per_story && !(res->story = malloc(stories.n * sizeof *res->story)))
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    double loss = 0;
    uint64_t correct = 0, positions = 0;
    for (size_t i = 0; i < stories.n && !st; i++) {
        if (j.res[i].status) {
            st = tlm_fail(err, j.res[i].status, "story %llu could not be evaluated: %s", (unsigned long long)i,
                          tlm_status_str(j.res[i].status));
            break;
        }
        loss += j.res[i].loss;
        correct += j.res[i].correct;
        res->tokens += j.res[i].predicted;
        res->truncated += (uint64_t)j.res[i].truncated;
        res->windows += j.res[i].windows;
        positions += j.res[i].positions;
        res->privatized += j.res[i].privatized;
        res->unchanged += j.res[i].unchanged;
        if (res->story) res->story[i] = (tlm_eval_story){j.res[i].loss, j.res[i].predicted, j.res[i].correct};
    }
    if (!st) {
        res->stories = stories.n;
        res->loss = res->tokens ? loss / (double)res->tokens : 0;
        res->perplexity = exp(res->loss);
        res->top1 = res->tokens ? (double)correct / (double)res->tokens : 0;
        res->seconds = secs;
        res->tokens_per_s = secs > 0 ? (double)positions / secs : 0;
    }
    if (st) tlm_eval_result_free(res);
    free(j.res);
    free(tid);
    tlm_stories_free(&stories);
    return st;
}

void tlm_eval_result_free(tlm_eval_result *res)
{
    if (!res) return;
    free(res->story);
    res->story = NULL;
}

static int cmp_double(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The p-quantile of sorted v[0..n) by linear interpolation between ranks. */
static double quantile(const double *v, size_t n, double p)
{
    const double pos = p * (double)(n - 1);
    const size_t i = (size_t)pos;
    return i + 1 < n ? v[i] + (pos - (double)i) * (v[i + 1] - v[i]) : v[n - 1];
}

tlm_status tlm_eval_paired(const tlm_eval_story *a, const tlm_eval_story *b, size_t n, uint32_t resamples,
                           uint64_t seed, tlm_paired *out, tlm_error *err)
{
    tlm_error_clear(err);
    if (!a || !b || !out || n == 0) return tlm_fail(err, TLM_ERR_ARG, "no stories to compare");
    if (resamples < 100) return tlm_fail(err, TLM_ERR_ARG, "at least 100 bootstrap resamples, not %u", resamples);
    memset(out, 0, sizeof *out);
    double la = 0, lb = 0;
    uint64_t pred = 0, ca = 0, cb = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i].predicted != b[i].predicted)
            return tlm_fail(err, TLM_ERR_ARG,
                            "story %zu has %u predicted tokens under one model and %u under the other: the models "
                            "tokenize differently, so their losses per token do not compare",
                            i, a[i].predicted, b[i].predicted);
        la += a[i].loss;
        lb += b[i].loss;
        pred += a[i].predicted;
        ca += a[i].correct;
        cb += b[i].correct;
        if (a[i].predicted) {
            out->b_lower += b[i].loss < a[i].loss;
            out->a_lower += a[i].loss < b[i].loss;
        }
    }
    if (!pred) return tlm_fail(err, TLM_ERR_ARG, "the stories hold no token to predict");
    out->stories = n;
    out->resamples = resamples;
    out->loss_a = la / (double)pred;
    out->loss_b = lb / (double)pred;
    out->top1_a = (double)ca / (double)pred;
    out->top1_b = (double)cb / (double)pred;
    out->loss_diff = out->loss_b - out->loss_a;
    out->top1_diff = out->top1_b - out->top1_a;
    double *dl = malloc(2u * (size_t)resamples * sizeof *dl);
    if (!dl) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    double *dt = dl + resamples;
    tlm_chacha cc;
    tlm_rand rnd;
    tlm_chacha_seed(&cc, seed);
    tlm_rand_init(&rnd, tlm_chacha_fill, &cc);
    for (uint32_t r = 0; r < resamples; r++) {
        double sa = 0, sb = 0;
        uint64_t p = 0, xa = 0, xb = 0;
        for (size_t k = 0; k < n; k++) {
            const size_t i = (size_t)tlm_rand_below(&rnd, n);
            sa += a[i].loss;
            sb += b[i].loss;
            p += a[i].predicted;
            xa += a[i].correct;
            xb += b[i].correct;
        }
        /* a draw of only empty stories says nothing: count it as no difference */
        dl[r] = p ? (sb - sa) / (double)p : 0.0;
        dt[r] = p ? ((double)xb - (double)xa) / (double)p : 0.0;
    }
    qsort(dl, resamples, sizeof *dl, cmp_double);
    qsort(dt, resamples, sizeof *dt, cmp_double);
    out->loss_lo = quantile(dl, resamples, 0.025);
    out->loss_hi = quantile(dl, resamples, 0.975);
    out->top1_lo = quantile(dt, resamples, 0.025);
    out->top1_hi = quantile(dt, resamples, 0.975);
    free(dl);
    return TLM_OK;
}
