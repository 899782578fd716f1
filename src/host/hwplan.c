/* The exact per-layer type search of hwplan.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hwplan.h"

/* Most plans kept per item; past it the front is cut (never reached by
 * models of up to a few dozen layers: the front is at most a few thousand). */
#define FRONT_CAP 200000u

typedef struct {
    long lq;
    double insns, flash, ram;
    uint32_t parent; /* index in the previous item's front */
    uint8_t type;
} state;

static long quanta(double dloss, double quantum) { return dloss > 0.0 ? lround(dloss / quantum) : 0; }

long tlm_hw_loss_quanta(const tlm_hw_item *items, size_t n, const uint8_t *choice, double quantum)
{
    long s = 0;
    for (size_t i = 0; i < n; i++) s += quanta(items[i].dloss[choice[i]], quantum);
    return s;
}

static int by_objective(const void *pa, const void *pb)
{
    const state *a = pa, *b = pb;
    if (a->lq != b->lq) return a->lq < b->lq ? -1 : 1;
    if (a->insns != b->insns) return a->insns < b->insns ? -1 : 1;
    if (a->flash != b->flash) return a->flash < b->flash ? -1 : 1;
    return 0;
}

/* Sorted s[0..n) to the plans no other beats in all of loss, instructions
 * and flash. Earlier plans have no more loss, so a plan is dropped if an
 * earlier kept one has no more instructions and no more flash: `stair`
 * holds the kept plans' (instructions, flash) corners that nothing kept
 * beats in both, by rising instructions and so by falling flash, and the
 * corner with the most instructions at or below a plan's has the least
 * flash of all that could beat it. */
static size_t keep_front(state *s, size_t n, double *stair_i, double *stair_f)
{
    size_t k = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        const double x = s[i].insns, y = s[i].flash;
        size_t lo = 0, hi = m; /* first corner with insns > x */
        while (lo < hi) {
            const size_t mid = lo + (hi - lo) / 2u;
            if (stair_i[mid] <= x) lo = mid + 1u;
            else hi = mid;
        }
        if (lo > 0 && stair_f[lo - 1u] <= y) continue; /* dominated */
        s[k++] = s[i];
        /* the new corner replaces the corners from lo on that it beats */
        size_t e = lo;
        while (e < m && stair_f[e] >= y) e++;
        const size_t drop = e - lo;
        if (drop != 1u) {
            memmove(stair_i + lo + 1u, stair_i + e, (m - e) * sizeof *stair_i);
            memmove(stair_f + lo + 1u, stair_f + e, (m - e) * sizeof *stair_f);
            m = m + 1u - drop;
        }
        stair_i[lo] = x;
        stair_f[lo] = y;
    }
    return k;
}

tlm_status tlm_hw_plan(const tlm_hw_item *items, size_t n, const tlm_hw_budget *b, uint8_t *choice,
                       tlm_hw_result *res, tlm_error *err)
{
    size_t found = 0;
    return tlm_hw_plans(items, n, b, 1, choice, res, &found, err);
}

tlm_status tlm_hw_plans(const tlm_hw_item *items, size_t n, const tlm_hw_budget *b, size_t kmax, uint8_t *choices,
                        tlm_hw_result *res, size_t *found, tlm_error *err)
{
    *found = 0;
    if (!kmax) return tlm_fail(err, TLM_ERR_ARG, "no plan asked for");
    memset(res, 0, kmax * sizeof *res);
    res->exact = 1;
    if (!(b->quantum > 0.0)) return tlm_fail(err, TLM_ERR_ARG, "the loss quantum must be positive");
    /* types over the RAM budget are out; the least flash and instructions
     * each remaining item needs, for pruning */
    double *min_f = calloc(n + 1u, sizeof *min_f), *min_i = calloc(n + 1u, sizeof *min_i);
    state **fronts = calloc(n + 1u, sizeof *fronts);
    size_t *sizes = calloc(n + 1u, sizeof *sizes);
    if (!min_f || !min_i || !fronts || !sizes) {
        free(min_f);
        free(min_i);
        free(fronts);
        free(sizes);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    tlm_status st = TLM_OK;
    double least_ram = INFINITY;
    for (size_t i = n; i-- > 0;) {
        double f = INFINITY, in = INFINITY;
        for (int k = 0; k < TLM_HW_NTYPES; k++) {
            if (!items[i].allowed[k]) continue;
            if (items[i].ram[k] < least_ram) least_ram = items[i].ram[k];
            if (items[i].ram[k] > b->ram) continue;
            if (items[i].flash[k] < f) f = items[i].flash[k];
            if (items[i].insns[k] < in) in = items[i].insns[k];
        }
        if (f == INFINITY) {
            st = tlm_fail(err, TLM_ERR_ARG, "no weight type fits the RAM: the least any needs is %llu bytes, the budget %llu",
                          (unsigned long long)least_ram, (unsigned long long)b->ram);
            goto out;
        }
        min_f[i] = min_f[i + 1] + f;
        min_i[i] = min_i[i + 1] + in;
    }
    if (min_f[0] > b->flash) {
        st = tlm_fail(err, TLM_ERR_ARG, "the smallest plan needs %llu more bytes of flash than there are",
                      (unsigned long long)ceil(min_f[0] - b->flash));
        goto out;
    }
    if (b->insns > 0.0 && min_i[0] > b->insns) {
        st = tlm_fail(err, TLM_ERR_ARG,
                      "the fastest plan needs %llu more instructions per token than the speed asked for allows",
                      (unsigned long long)ceil(min_i[0] - b->insns));
        goto out;
    }
    fronts[0] = calloc(1, sizeof(state));
    if (!fronts[0]) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto out;
    }
    sizes[0] = 1;
    for (size_t i = 0; i < n; i++) {
        const size_t cap = sizes[i] * TLM_HW_NTYPES;
        state *next = malloc((cap ? cap : 1u) * sizeof *next);
        double *stair = malloc(2u * (cap ? cap : 1u) * sizeof *stair);
        if (!next || !stair) {
            free(next);
            free(stair);
            st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
            goto out;
        }
        size_t m = 0;
        for (size_t s = 0; s < sizes[i]; s++) {
            const state *p = &fronts[i][s];
            for (int k = 0; k < TLM_HW_NTYPES; k++) {
                const tlm_hw_item *it = &items[i];
                if (!it->allowed[k] || it->ram[k] > b->ram) continue;
                state q = {p->lq + quanta(it->dloss[k], b->quantum), p->insns + it->insns[k], p->flash + it->flash[k],
                           p->ram > it->ram[k] ? p->ram : it->ram[k], (uint32_t)s, (uint8_t)k};
                if (q.flash + min_f[i + 1] > b->flash) continue;
                if (b->insns > 0.0 && q.insns + min_i[i + 1] > b->insns) continue;
                next[m++] = q;
            }
        }
        qsort(next, m, sizeof *next, by_objective);
        m = keep_front(next, m, stair, stair + cap);
        free(stair);
        if (m > FRONT_CAP) {
            m = FRONT_CAP;
            res->exact = 0;
        }
        if (m > res->front) res->front = m;
        fronts[i + 1] = next;
        sizes[i + 1] = m;
    }
    /* every kept plan fits (the bounds above are exact at the last item);
     * the first has the least loss, then instructions, then flash */
    if (!sizes[n]) {
        st = tlm_fail(err, TLM_ERR_ARG,
                      "no plan fits the flash and the speed asked for at once (each alone can be met): "
                      "ask for less speed or give more flash");
        goto out;
    }
    const size_t k_out = sizes[n] < kmax ? sizes[n] : kmax;
    for (size_t j = 0; j < k_out; j++) {
        size_t at = j;
        const state *plan = &fronts[n][j];
        tlm_hw_result *r = &res[j];
        r->front = res[0].front;
        r->exact = res[0].exact;
        r->dloss = 0;
        r->flash = plan->flash;
        r->insns = plan->insns;
        r->ram = plan->ram;
        for (size_t i = n; i-- > 0;) {
            const state *s = &fronts[i + 1][at];
            choices[j * n + i] = s->type;
            r->dloss += items[i].dloss[s->type] > 0.0 ? items[i].dloss[s->type] : 0.0;
            at = s->parent;
        }
    }
    *found = k_out;
out:
    for (size_t i = 0; i <= n; i++) free(fronts[i]);
    free(fronts);
    free(sizes);
    free(min_f);
    free(min_i);
    return st;
}
