/* Hardware-aware planning: the search against exhaustive enumeration of
 * every plan (random instances), against enumeration of type counts for
 * many identical layers, and its refusals. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/host/hwplan.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double uni(void) { return (double)(next_u64() >> 11) * 0x1.0p-53; }

typedef struct {
    int feasible;
    long lq;
    double insns, flash, ram;
} plan_value;

/* Is plan a better than b in the search's order (loss quanta, then
 * instructions, then flash)? */
static int better(const plan_value *a, const plan_value *b)
{
    if (!b->feasible) return a->feasible;
    if (!a->feasible) return 0;
    if (a->lq != b->lq) return a->lq < b->lq;
    if (a->insns != b->insns) return a->insns < b->insns;
    return a->flash < b->flash;
}

static plan_value value_of(const tlm_hw_item *it, size_t n, const uint8_t *c, const tlm_hw_budget *b)
{
    plan_value v = {1, 0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        const int k = c[i];
        if (!it[i].allowed[k] || it[i].ram[k] > b->ram) v.feasible = 0;
        v.lq += it[i].dloss[k] > 0 ? lround(it[i].dloss[k] / b->quantum) : 0;
        v.insns += it[i].insns[k];
        v.flash += it[i].flash[k];
        if (it[i].ram[k] > v.ram) v.ram = it[i].ram[k];
    }
    if (v.flash > b->flash || (b->insns > 0 && v.insns > b->insns)) v.feasible = 0;
    return v;
}

/* Every one of the 4^n plans. */
static plan_value brute_force(const tlm_hw_item *it, size_t n, const tlm_hw_budget *b)
{
    plan_value best = {0, 0, 0, 0, 0};
    uint8_t c[8];
    size_t total = 1;
    for (size_t i = 0; i < n; i++) total *= TLM_HW_NTYPES;
    for (size_t code = 0; code < total; code++) {
        size_t x = code;
        for (size_t i = 0; i < n; i++, x /= TLM_HW_NTYPES) c[i] = (uint8_t)(x % TLM_HW_NTYPES);
        const plan_value v = value_of(it, n, c, b);
        if (better(&v, &best)) best = v;
    }
    return best;
}

static void random_item(tlm_hw_item *it)
{
    /* costs shaped like real ones (fp32 largest, ternary smallest) but
     * random, on a coarse grid so that ties happen */
    static const double size[TLM_HW_NTYPES] = {4.0, 1.0, 0.25, 0.2};
    static const double loss[TLM_HW_NTYPES] = {0.0, 0.002, 0.3, 0.3};
    const double w = (double)(1 + next_u64() % 8) * 1000.0;
    for (int k = 0; k < TLM_HW_NTYPES; k++) {
        it->allowed[k] = (next_u64() % 5) != 0;
        it->flash[k] = floor(w * size[k] * (0.8 + 0.4 * uni()));
        it->insns[k] = floor(w * (0.5 + 3.0 * uni()) / 8.0) * 8.0;
        it->dloss[k] = loss[k] * uni() * 2.0 - 0.001; /* some slightly negative (noise) */
        it->ram[k] = 1000.0 * (double)(1 + next_u64() % 4);
    }
}

/* 1 to 6 random items; the flash and instructions of their all-int8 plan. */
static size_t random_items(tlm_hw_item *it, double *fl, double *in)
{
    const size_t n = 1 + next_u64() % 6;
    *fl = *in = 0;
    for (size_t i = 0; i < n; i++) {
        random_item(&it[i]);
        *fl += it[i].flash[TLM_HW_I8];
        *in += it[i].insns[TLM_HW_I8];
    }
    return n;
}

static void test_matches_exhaustive_search(void **state)
{
    (void)state;
    int feasible = 0, infeasible = 0;
    for (int trial = 0; trial < 3000; trial++) {
        tlm_hw_item it[8];
        double fl, in;
        const size_t n = random_items(it, &fl, &in);
        tlm_hw_budget b = {fl * (0.2 + 1.2 * uni()), (trial % 3) ? in * (0.5 + uni()) : 0.0,
                           1000.0 * (double)(1 + next_u64() % 4), (trial % 2) ? 0.001 : 0.05};
        const plan_value want = brute_force(it, n, &b);
        uint8_t c[8];
        tlm_hw_result res;
        tlm_error err = {0};
        const tlm_status st = tlm_hw_plan(it, n, &b, c, &res, &err);
        if (!want.feasible) {
            if (st == TLM_OK) {
                const plan_value got = value_of(it, n, c, &b);
                print_error("n %zu feasible %d flash %g/%g insns %g/%g ram %g/%g\n", n, got.feasible, got.flash, b.flash, got.insns, b.insns, got.ram, b.ram);
                for (size_t i = 0; i < n; i++) print_error(" c%d allowed %d\n", c[i], it[i].allowed[c[i]]);
            }
            assert_int_not_equal(st, TLM_OK);
            assert_true(strlen(err.msg) > 0);
            infeasible++;
            continue;
        }
        assert_int_equal(st, TLM_OK);
        assert_true(res.exact);
        const plan_value got = value_of(it, n, c, &b);
        assert_true(got.feasible);
        assert_int_equal(got.lq, want.lq);
        assert_true(got.insns == want.insns);
        assert_true(got.flash == want.flash);
        assert_true(res.insns == got.insns && res.flash == got.flash && res.ram == got.ram);
        assert_int_equal(tlm_hw_loss_quanta(it, n, c, b.quantum), want.lq);
        feasible++;
    }
    assert_true(feasible > 1000 && infeasible > 100); /* both kinds exercised */
}

/* 48 layers of one shape with different sensitivities: only the number of
 * layers of each type sets flash and instructions, and for given counts
 * the least loss puts the cheapest types on the least sensitive layers
 * (sort the layers by each type's loss... for two types that is exact:
 * here int8 and t3 only, so the oracle enumerates the t3 count). */
static void test_many_layers_against_counts(void **state)
{
    (void)state;
    enum { L = 48 };
    tlm_hw_item it[L];
    double d3[L];
    for (int l = 0; l < L; l++) {
        memset(&it[l], 0, sizeof it[l]);
        it[l].allowed[TLM_HW_I8] = it[l].allowed[TLM_HW_T3] = 1;
        it[l].flash[TLM_HW_I8] = 1000;
        it[l].flash[TLM_HW_T3] = 200;
        it[l].insns[TLM_HW_I8] = 500;
        it[l].insns[TLM_HW_T3] = 300;
        it[l].dloss[TLM_HW_I8] = 0;
        it[l].dloss[TLM_HW_T3] = d3[l] = 0.001 * (double)(1 + next_u64() % 100);
    }
    for (double frac = 0.25; frac < 1.0; frac += 0.25) {
        const tlm_hw_budget b = {L * 1000.0 * frac, 0.0, 1.0, 0.001};
        /* oracle: the fewest t3 layers that fit, on the least sensitive */
        int need = 0;
        while ((L - need) * 1000.0 + need * 200.0 > b.flash) need++;
        double sorted[L];
        memcpy(sorted, d3, sizeof sorted);
        for (int i = 1; i < L; i++)
            for (int j = i; j > 0 && sorted[j] < sorted[j - 1]; j--) {
                const double t = sorted[j];
                sorted[j] = sorted[j - 1];
                sorted[j - 1] = t;
            }
        long want = 0;
        for (int i = 0; i < need; i++) want += lround(sorted[i] / b.quantum);
        uint8_t c[L];
        tlm_hw_result res;
        tlm_error err = {0};
        assert_int_equal(tlm_hw_plan(it, L, &b, c, &res, &err), TLM_OK);
        int t3 = 0;
        for (int l = 0; l < L; l++) t3 += c[l] == TLM_HW_T3;
        assert_int_equal(t3, need);
        assert_int_equal(tlm_hw_loss_quanta(it, L, c, b.quantum), want);
        assert_true(res.flash <= b.flash);
    }
}

/* The search's K leaders against enumeration: the feasible plans no other
 * feasible plan beats in loss, instructions and flash at once, as distinct
 * (loss, instructions, flash) values in the search's order; the first K
 * of them are what tlm_hw_plans returns. */
static int objective_cmp(const void *pa, const void *pb)
{
    const plan_value *a = pa, *b = pb;
    if (a->lq != b->lq) return a->lq < b->lq ? -1 : 1;
    if (a->insns != b->insns) return a->insns < b->insns ? -1 : 1;
    if (a->flash != b->flash) return a->flash < b->flash ? -1 : 1;
    return 0;
}

static void test_leaders_match_enumeration(void **state)
{
    (void)state;
    enum { K = 5 };
    int checked = 0, several = 0;
    static plan_value all[4096], front[4096];
    for (int trial = 0; trial < 1500; trial++) {
        tlm_hw_item it[8];
        double fl, in;
        const size_t n = random_items(it, &fl, &in);
        tlm_hw_budget b = {fl * (0.4 + 1.2 * uni()), (trial % 3) ? in * (0.8 + uni()) : 0.0, 4000.0,
                           (trial % 2) ? 0.001 : 0.05};
        size_t total = 1, m = 0;
        for (size_t i = 0; i < n; i++) total *= TLM_HW_NTYPES;
        for (size_t code = 0; code < total; code++) {
            uint8_t c[8];
            size_t x = code;
            for (size_t i = 0; i < n; i++, x /= TLM_HW_NTYPES) c[i] = (uint8_t)(x % TLM_HW_NTYPES);
            const plan_value v = value_of(it, n, c, &b);
            if (v.feasible) all[m++] = v;
        }
        size_t f = 0;
        for (size_t i = 0; i < m; i++) {
            int dominated = 0;
            for (size_t j = 0; j < m && !dominated; j++) {
                const plan_value *a = &all[j], *v = &all[i];
                const int le = a->lq <= v->lq && a->insns <= v->insns && a->flash <= v->flash;
                const int same = a->lq == v->lq && a->insns == v->insns && a->flash == v->flash;
                dominated = le && (!same || j < i); /* equal values: the first one stands for all */
            }
            if (!dominated) front[f++] = all[i];
        }
        qsort(front, f, sizeof *front, objective_cmp);
        uint8_t choices[K * 8];
        tlm_hw_result res[K];
        size_t found = 0;
        const tlm_status st = tlm_hw_plans(it, n, &b, K, choices, res, &found, NULL);
        if (!f) {
            assert_int_not_equal(st, TLM_OK);
            continue;
        }
        assert_int_equal(st, TLM_OK);
        assert_int_equal(found, f < K ? f : K);
        for (size_t j = 0; j < found; j++) {
            const plan_value got = value_of(it, n, choices + j * n, &b);
            assert_true(got.feasible);
            assert_int_equal(objective_cmp(&got, &front[j]), 0);
            assert_true(res[j].insns == got.insns && res[j].flash == got.flash);
        }
        checked++;
        several += found > 1;
    }
    print_message("%d instances, %d with several leaders\n", checked, several);
    assert_true(checked > 500 && several > 200);
}

static void test_refusals_say_which_budget(void **state)
{
    (void)state;
    tlm_hw_item it[2];
    memset(it, 0, sizeof it);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < TLM_HW_NTYPES; k++) {
            it[i].allowed[k] = 1;
            it[i].flash[k] = 100.0 * (TLM_HW_NTYPES - k);
            it[i].insns[k] = 50.0 * (TLM_HW_NTYPES - k);
            it[i].ram[k] = 10.0 + k;
        }
    uint8_t c[2];
    tlm_hw_result res;
    tlm_error err = {0};
    tlm_hw_budget b = {150.0, 0.0, 100.0, 0.001}; /* least flash 2 x 100 */
    assert_int_not_equal(tlm_hw_plan(it, 2, &b, c, &res, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "flash"));
    assert_non_null(strstr(err.msg, "50 more"));
    b = (tlm_hw_budget){1e9, 90.0, 100.0, 0.001}; /* fastest 2 x 50 */
    assert_int_not_equal(tlm_hw_plan(it, 2, &b, c, &res, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "instructions"));
    b = (tlm_hw_budget){1e9, 0.0, 5.0, 0.001};
    assert_int_not_equal(tlm_hw_plan(it, 2, &b, c, &res, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "RAM"));
    b = (tlm_hw_budget){1e9, 0.0, 100.0, 0.0};
    assert_int_not_equal(tlm_hw_plan(it, 2, &b, c, &res, &err), TLM_OK);
    /* with room for everything and no loss anywhere: the fastest plan */
    b = (tlm_hw_budget){1e9, 0.0, 100.0, 0.001};
    assert_int_equal(tlm_hw_plan(it, 2, &b, c, &res, &err), TLM_OK);
    assert_int_equal(c[0], TLM_HW_T3);
    assert_int_equal(c[1], TLM_HW_T3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_exhaustive_search),
        cmocka_unit_test(test_many_layers_against_counts),
        cmocka_unit_test(test_leaders_match_enumeration),
        cmocka_unit_test(test_refusals_say_which_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
