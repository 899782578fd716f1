/* Sampler: greedy picks the first maximum; temperature and top-p sampling
 * follow their exact distributions (chi-square, fixed seeds). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tritlm/sampler.h"

#define K 8
static const float logits0[K] = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f, -1.0f, 1.5f, 0.2f};

static void softmax_ref(double *p, double temp)
{
    double mx = -1e300, sum = 0;
    for (int i = 0; i < K; i++) mx = fmax(mx, logits0[i] / temp);
    for (int i = 0; i < K; i++) sum += p[i] = exp(logits0[i] / temp - mx);
    for (int i = 0; i < K; i++) p[i] /= sum;
}

/* Pearson chi-square of counts against expected probabilities (cells with
 * p == 0 must have no counts). */
static double chi_square(const long *counts, const double *p, long n, int *df)
{
    double x2 = 0;
    *df = -1;
    for (int i = 0; i < K; i++) {
        if (p[i] == 0) {
            assert_int_equal(counts[i], 0);
            continue;
        }
        double e = p[i] * (double)n;
        x2 += (counts[i] - e) * (counts[i] - e) / e;
        (*df)++;
    }
    return x2;
}

/* Upper 0.1% points of chi-square for 1..7 degrees of freedom. */
static const double chi2_999[8] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32};

static void draw(float temp, float top_p, uint64_t seed, long n, long *counts)
{
    tlm_sampler s;
    tlm_sampler_init(&s, temp, top_p, seed);
    uint8_t scratch[K * 16];
    assert_true(tlm_sampler_scratch_bytes(K) <= sizeof scratch);
    memset(counts, 0, K * sizeof *counts);
    for (long i = 0; i < n; i++) {
        float l[K];
        memcpy(l, logits0, sizeof l);
        uint32_t t = tlm_sample(&s, l, K, scratch);
        assert_true(t < K);
        counts[t]++;
    }
}

static void test_argmax_and_greedy(void **state)
{
    (void)state;
    float v[5] = {1, 3, 2, 3, -1};
    assert_int_equal(tlm_argmax(v, 5), 1);
    tlm_sampler s;
    tlm_sampler_init(&s, 0.0f, 0.9f, 1);
    assert_int_equal(tlm_sample(&s, v, 5, NULL), 1);
    assert_true(v[3] == 3.0f); /* greedy leaves logits alone */
}

static void test_temperature_distribution(void **state)
{
    (void)state;
    const long n = 200000;
    const float temps[] = {0.7f, 1.0f, 1.6f};
    for (int k = 0; k < 3; k++) {
        long counts[K];
        double p[K];
        draw(temps[k], 1.0f, 100 + (uint64_t)k, n, counts);
        softmax_ref(p, temps[k]);
        int df;
        double x2 = chi_square(counts, p, n, &df);
        print_message("temperature %.1f: chi2 %.2f (df %d, critical %.2f)\n", temps[k], x2, df, chi2_999[df]);
        assert_true(x2 < chi2_999[df]);
    }
}

static void test_top_p_distribution(void **state)
{
    (void)state;
    const long n = 200000;
    const float tops[] = {0.3f, 0.6f, 0.9f};
    for (int k = 0; k < 3; k++) {
        double p[K], q[K] = {0};
        softmax_ref(p, 1.0);
        /* nucleus: highest probabilities until their sum exceeds top_p */
        int order[K];
        for (int i = 0; i < K; i++) order[i] = i;
        for (int i = 0; i < K; i++)
            for (int j = i + 1; j < K; j++)
                if (p[order[j]] > p[order[i]]) {
                    int t = order[i];
                    order[i] = order[j];
                    order[j] = t;
                }
        double cum = 0;
        for (int i = 0; i < K; i++) {
            q[order[i]] = p[order[i]];
            cum += p[order[i]];
            if (cum > tops[k]) break;
        }
        for (int i = 0; i < K; i++) q[i] /= cum;
        long counts[K];
        draw(1.0f, tops[k], 7 + (uint64_t)k, n, counts);
        int df;
        double x2 = chi_square(counts, q, n, &df);
        print_message("top-p %.1f: chi2 %.2f (df %d)\n", tops[k], x2, df);
        if (df > 0) assert_true(x2 < chi2_999[df]);
    }
}

static void test_seed_determinism(void **state)
{
    (void)state;
    tlm_sampler a, b, c;
    tlm_sampler_init(&a, 1.0f, 1.0f, 42);
    tlm_sampler_init(&b, 1.0f, 1.0f, 42);
    tlm_sampler_init(&c, 1.0f, 1.0f, 43);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint32_t x = tlm_sampler_next_u32(&a), y = tlm_sampler_next_u32(&b), z = tlm_sampler_next_u32(&c);
        assert_int_equal(x, y);
        same_c += x == z;
    }
    assert_true(same_c < 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argmax_and_greedy),
        cmocka_unit_test(test_temperature_distribution),
        cmocka_unit_test(test_top_p_distribution),
        cmocka_unit_test(test_seed_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
