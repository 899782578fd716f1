/* Closed-set classification by the language model: see tritlm/classify.h.
 *
 * The candidates are walked in lexicographic order of their tokens, which
 * is a depth-first walk of their prefix tree: the next candidate shares its
 * first `lcp` tokens with the last one, so the KV cache holds them already
 * and the decoder resumes at position lcp. The logits after a node's token
 * score the next token of every candidate below that node at once (they
 * form a contiguous run of the order), so each (candidate, position) is
 * scored exactly once, when its node is first reached. The exact search
 * also puts each node's children in order of likelihood as it reaches the
 * node (a permutation of whole runs, which keeps every subtree contiguous)
 * and skips the subtrees that can no longer win. */
#include "tritlm/classify.h"

#include <math.h>

#include "tritlm/sampler.h"

typedef struct {
    const uint32_t *prefix, *ids, *off;
    uint32_t np;
} cands;

static uint32_t cand_len(const cands *c, uint32_t i) { return c->np + c->off[i + 1] - c->off[i]; }

/* Token p of candidate i (p < its length). */
static uint32_t tok(const cands *c, uint32_t i, uint32_t p)
{
    return p < c->np ? c->prefix[p] : c->ids[c->off[i] + p - c->np];
}

/* Tokens candidates a and b have in common at their start. */
static uint32_t common(const cands *c, uint32_t a, uint32_t b)
{
    const uint32_t la = cand_len(c, a), lb = cand_len(c, b), n = la < lb ? la : lb;
    uint32_t k = c->np;
    while (k < n && tok(c, a, k) == tok(c, b, k)) k++;
    return k;
}

/* a before b in lexicographic order (a proper prefix first); equal
 * candidates keep their index order. */
static int before(const cands *c, uint32_t a, uint32_t b)
{
    const uint32_t k = common(c, a, b), la = cand_len(c, a), lb = cand_len(c, b);
    if (k == la || k == lb) return la < lb || (la == lb && a < b);
    return tok(c, a, k) < tok(c, b, k);
}

/* The token that follows position p of candidate i: its own, or `end`. */
static uint32_t next_tok(const cands *c, uint32_t i, uint32_t p, uint32_t end)
{
    return p + 1 < cand_len(c, i) ? tok(c, i, p + 1) : end;
}

/* Do candidates x and y go on alike after position p (both end there, or
 * both go on with the same token)? */
static int same_next(const cands *c, uint32_t x, uint32_t y, uint32_t p)
{
    const int ex = p + 1 >= cand_len(c, x), ey = p + 1 >= cand_len(c, y);
    return ex == ey && (ex || tok(c, x, p + 1) == tok(c, y, p + 1));
}

static void reverse(uint32_t *a, uint32_t n)
{
    for (uint32_t i = 0, j = n; i + 1 < j; i++, j--) {
        const uint32_t t = a[i];
        a[i] = a[j - 1];
        a[j - 1] = t;
    }
}

/* The children of the node at position p, order[a..e) (each child a run of
 * candidates that go on alike), put in order of their next token's logit,
 * the likeliest first (equal ones keep their order): the exact search then
 * finishes a likely candidate first, and its score cuts off more. */
static void order_children(const cands *c, uint32_t *order, uint32_t a, uint32_t e, uint32_t p, uint32_t end,
                           const float *logits)
{
    while (a < e) {
        uint32_t bs = a, be = a + 1;
        while (be < e && same_next(c, order[a], order[be], p)) be++;
        float bv = logits[next_tok(c, order[a], p, end)];
        for (uint32_t x = be; x < e;) {
            uint32_t xe = x + 1;
            while (xe < e && same_next(c, order[x], order[xe], p)) xe++;
            const float v = logits[next_tok(c, order[x], p, end)];
            if (v > bv) {
                bs = x;
                be = xe;
                bv = v;
            }
            x = xe;
        }
        /* order[bs..be) to the front of order[a..be): a rotation */
        reverse(order + a, bs - a);
        reverse(order + bs, be - bs);
        reverse(order + a, be - a);
        a += be - bs;
    }
}

/* log of the sum of exp(logits) */
static float log_norm(const float *x, uint32_t n)
{
    const float mx = x[tlm_argmax(x, n)];
    float s = 0.0f;
    for (uint32_t i = 0; i < n; i++) s += expf(x[i] - mx);
    return mx + logf(s);
}

tlm_status tlm_classify(tlm_runtime *rt, const uint32_t *prefix, uint32_t n_prefix, const uint32_t *ids,
                        const uint32_t *off, uint32_t n, uint32_t end, tlm_classify_mode mode, uint32_t *order,
                        float *scores, tlm_classify_result *res)
{
    if (!rt || (n_prefix && !prefix) || !off || !order || !scores || !res || n == 0) return TLM_ERR_ARG;
    const uint32_t V = rt->model->hp.vocab_size;
    const cands c = {prefix, ids, off, n_prefix};
    if (end >= V || (mode != TLM_CLASSIFY_EXACT && mode != TLM_CLASSIFY_GREEDY && mode != TLM_CLASSIFY_ALL))
        return TLM_ERR_ARG;
    for (uint32_t k = 0; k < n_prefix; k++)
        if (prefix[k] >= V) return TLM_ERR_ARG;
    for (uint32_t i = 0; i < n; i++) {
        if (off[i + 1] < off[i] || (off[i + 1] > off[i] && !ids)) return TLM_ERR_ARG;
        if (cand_len(&c, i) == 0 || cand_len(&c, i) > rt->ctx || tok(&c, i, 0) != tok(&c, 0, 0)) return TLM_ERR_ARG;
        for (uint32_t k = off[i]; k < off[i + 1]; k++)
            if (ids[k] >= V) return TLM_ERR_ARG;
    }
    /* insertion sort: n is a label set, and this needs no allocation */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = i;
        while (j > 0 && before(&c, i, order[j - 1])) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    res->best = order[0];
    res->score = -INFINITY;
    res->forwards = 0;
    res->shared = 0.0f;
    /* every candidate's first `depth` tokens are the same (sorted: those of
     * the first and the last); the shared score is a path's after scoring
     * its token depth - 1 */
    const uint32_t depth = common(&c, order[0], order[n - 1]);
    float *logits;

    if (mode == TLM_CLASSIFY_GREEDY) {
        /* [lo, hi): the candidates that still agree with the path so far */
        uint32_t lo = 0, hi = n;
        float score = 0.0f;
        for (uint32_t p = 0;; p++) {
            tlm_status st = tlm_runtime_forward(rt, tok(&c, order[lo], p), p, &logits);
            if (st) return st;
            res->forwards++;
            /* the run with the largest logit for its next token; candidates
             * that end here sort first, so the first run wins a tie with them */
            uint32_t pick_lo = lo, pick_hi = lo;
            float pick = -INFINITY;
            for (uint32_t k = lo; k < hi;) {
                const uint32_t t = next_tok(&c, order[k], p, end);
                uint32_t k2 = k + 1;
                while (k2 < hi && same_next(&c, order[k], order[k2], p)) k2++;
                if (logits[t] > pick || k == lo) {
                    pick = logits[t];
                    pick_lo = k;
                    pick_hi = k2;
                }
                k = k2;
            }
            score += pick - log_norm(logits, V);
            if (p + 2 == depth) res->shared = score;
            lo = pick_lo;
            hi = pick_hi;
            if (p + 1 >= cand_len(&c, order[lo])) break;
        }
        res->best = order[lo];
        res->score = score;
        for (uint32_t i = 0; i < n; i++) scores[i] = -INFINITY;
        scores[res->best] = score;
        return TLM_OK;
    }
    /* Exact: a candidate's partial sum only falls as tokens are added (each
     * term is a log-probability, <= 0 in floating point too: the log of the
     * normalizer is at least the largest logit), so once it is below the
     * best complete score, neither it nor any candidate sharing its tokens
     * so far can win: that subtree is skipped (branch and bound). A
     * candidate's sum holds the positions computed on its path so far, an
     * upper bound of its partial score. The KV cache holds kv_len positions
     * of candidate kv_cand. */
    const int prune = mode == TLM_CLASSIFY_EXACT;
    for (uint32_t i = 0; i < n; i++) scores[i] = 0.0f;
    float best = -INFINITY;
    uint32_t best_i = order[0], kv_cand = order[0], kv_len = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = order[k], li = cand_len(&c, i);
        const uint32_t shared = common(&c, kv_cand, i);
        uint32_t p = kv_len < shared ? kv_len : shared;
        for (; p < li && !(prune && scores[i] < best); p++) {
            tlm_status st = tlm_runtime_forward(rt, tok(&c, i, p), p, &logits);
            if (st) return st;
            res->forwards++;
            kv_cand = i;
            kv_len = p + 1;
            const float z = log_norm(logits, V);
            /* i and the run after it that shares its tokens 0..p */
            uint32_t e = k + 1;
            while (e < n && common(&c, order[e - 1], order[e]) > p) e++;
            for (uint32_t k2 = k; k2 < e; k2++) scores[order[k2]] += logits[next_tok(&c, order[k2], p, end)] - z;
            if (p + 2 == depth) res->shared = scores[i];
            if (prune && e - k > 1) { /* the likeliest child next (all of them share what the cache holds) */
                order_children(&c, order, k, e, p, end, logits);
                i = order[k];
                li = cand_len(&c, i);
            }
        }
        if (p < li) { /* cut off: it cannot win */
            scores[i] = -INFINITY;
            continue;
        }
        if (scores[i] > best || (scores[i] == best && i < best_i)) {
            best = scores[i];
            best_i = i;
        }
    }
    res->best = best_i;
    res->score = best;
    return TLM_OK;
}
