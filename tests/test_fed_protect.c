/* Protected federated updates: the wide discrete Gaussian against its
 * exact distribution (chi-square), the zCDP-to-epsilon conversion against
 * the exact privacy profile of the Gaussian mechanism, the private
 * aggregation's noise against its stated variance, and the sealed,
 * signed messages and keys against damage, other keys and impostors. */
#define _GNU_SOURCE
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "../src/host/fed_dp.h"
#include "../src/host/fedavg.h"
#include "../src/host/fedsec.h"
#include "../src/host/fileio.h"
#include "../src/host/secagg.h"
#include "testutil.h"
#include "tritlm/fed.h"

static uint8_t *tiny_img;
static size_t tiny_bytes;
static tlm_model tiny;

static int setup(void **state)
{
    (void)state;
    tu_tiny cfg = {.dim = 16, .hidden = 24, .layers = 2, .heads = 2, .kv_heads = 1, .seq_len = 16, .n_merges = 10, .shared = 1};
    tu_build_tiny(&cfg, 5, &tiny_img, &tiny_bytes);
    return tlm_model_open(&tiny, tiny_img, tiny_bytes, NULL) == TLM_OK ? 0 : -1;
}
static int teardown(void **state)
{
    (void)state;
    free(tiny_img);
    return 0;
}

static tlm_chacha cc;
static tlm_rand R;
static void seed(uint64_t s)
{
    tlm_chacha_seed(&cc, s);
    tlm_rand_init(&R, tlm_chacha_fill, &cc);
}

static double phi(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

/* The discrete Gaussian's probabilities from its definition: exact sums
 * of exp(-x^2 / (2 s2)) for small variances; for large ones, the normal
 * distribution's mass of [a - 1/2, b + 1/2] (by Poisson summation the
 * two differ by a factor within 2 exp(-2 pi^2 s2) of 1). */
static void check_dgauss(uint64_t s2, int n_samples)
{
    enum { B = 40 };
    const double sd = sqrt((double)s2);
    /* bins: integers when sd is small; otherwise widths of sd / 5 over +-4 sd, tails merged */
    int64_t lo[B], hi[B];
    int bins = 0;
    if (sd < 4) {
        const int64_t m = (int64_t)ceil(2.5 * sd) + 1; /* each tail expects > 5 draws */
        lo[bins] = INT64_MIN;
        hi[bins++] = -m;
        for (int64_t x = -m + 1; x < m; x++) lo[bins] = hi[bins] = x, bins++;
        lo[bins] = m;
        hi[bins++] = INT64_MAX;
    } else {
        const double w = sd / 5.0;
        int64_t edge = (int64_t)floor(-19 * w);
        lo[bins] = INT64_MIN;
        hi[bins++] = edge - 1;
        for (int k = -19; k < 19; k++) {
            const int64_t next = (int64_t)floor((k + 1) * w);
            lo[bins] = edge;
            hi[bins++] = next - 1;
            edge = next;
        }
        lo[bins] = edge;
        hi[bins++] = INT64_MAX;
    }
    double p[B];
    if (sd < 4) {
        double z = 0;
        for (int64_t x = -200; x <= 200; x++) z += exp(-(double)(x * x) / (2.0 * (double)s2));
        for (int b = 0; b < bins; b++) {
            double m = 0;
            for (int64_t x = -200; x <= 200; x++)
                if (x >= lo[b] && x <= hi[b]) m += exp(-(double)(x * x) / (2.0 * (double)s2));
            p[b] = m / z;
        }
    } else {
        for (int b = 0; b < bins; b++) {
            const double a = lo[b] == INT64_MIN ? -INFINITY : ((double)lo[b] - 0.5) / sd;
            const double c = hi[b] == INT64_MAX ? INFINITY : ((double)hi[b] + 0.5) / sd;
            p[b] = (isinf(c) ? 1.0 : phi(c)) - (isinf(a) ? 0.0 : phi(a));
        }
    }
    uint64_t counts[B] = {0};
    double sum = 0, sum2 = 0;
    for (int i = 0; i < n_samples; i++) {
        const int64_t x = tlm_dgauss_wide(&R, s2);
        sum += (double)x;
        sum2 += (double)x * (double)x;
        for (int b = 0; b < bins; b++)
            if (x >= lo[b] && x <= hi[b]) {
                counts[b]++;
                break;
            }
    }
    assert_false(R.failed);
    const double chi = tu_chi2_stat(counts, p, bins, n_samples), crit = tu_chi2_crit(bins - 1);
    /* the variance: within 5 standard errors of s2 (a Gaussian's sample variance has sd s2 sqrt(2/n)) */
    const double var = sum2 / n_samples - (sum / n_samples) * (sum / n_samples);
    const double zvar = (var - (double)s2) / ((double)s2 * sqrt(2.0 / n_samples));
    print_message("dgauss_wide sigma^2 %-16llu chi2 %.1f (df %d, critical %.1f), variance z %.2f\n",
                  (unsigned long long)s2, chi, bins - 1, crit, zvar);
    assert_true(chi >= 0 && chi < crit);
    if (sd >= 4) assert_true(fabs(zvar) < 5.0);
}

static void test_dgauss_wide(void **state)
{
    (void)state;
    seed(41);
    check_dgauss(1, 200000);
    check_dgauss(7, 200000);
    check_dgauss(1000000, 200000);
    check_dgauss(68719476736ull, 200000); /* sigma 2^18, the grid's size */
    check_dgauss(1ull << 52, 100000);     /* the largest variance */
}

/* The exact privacy profile of the Gaussian mechanism with sensitivity
 * 1 and noise sd s (Balle and Wang 2018): delta(eps). */
static double gauss_delta(double s, double eps)
{
    return phi(0.5 / s - eps * s) - exp(eps) * phi(-0.5 / s - eps * s);
}

static void test_zcdp_epsilon(void **state)
{
    (void)state;
    const double sds[] = {0.5, 1.0, 2.0, 5.0, 20.0}, deltas[] = {1e-5, 1e-6, 1e-9};
    for (size_t i = 0; i < sizeof sds / sizeof sds[0]; i++)
        for (size_t j = 0; j < sizeof deltas / sizeof deltas[0]; j++) {
            const double s = sds[i], d = deltas[j], rho = 1.0 / (2.0 * s * s);
            const double e = tlm_zcdp_epsilon(rho, d);
            /* the exact epsilon at d, by bisection on the decreasing profile */
            double lo = 0, hi = 200;
            for (int k = 0; k < 200; k++) {
                const double m = (lo + hi) / 2;
                if (gauss_delta(s, m) > d) lo = m;
                else hi = m;
            }
            print_message("sd %5.1f delta %g: epsilon %.4f, exact %.4f, textbook %.4f\n", s, d, e, hi,
                          rho + 2 * sqrt(rho * log(1 / d)));
            /* valid: at our epsilon the mechanism's real delta is within d */
            assert_true(gauss_delta(s, e) <= d * (1 + 1e-9));
            assert_true(e >= hi - 1e-9);
            /* and useful: below the textbook conversion, within 35% of exact */
            assert_true(e <= rho + 2 * sqrt(rho * log(1 / d)) + 1e-12);
            assert_true(e <= 1.35 * hi);
        }
    assert_true(tlm_zcdp_epsilon(0.0, 1e-6) == 0.0);
    assert_true(isinf(tlm_zcdp_epsilon(INFINITY, 1e-6)));
}

/* Makes a local model: global + small random changes of L2 norm ~ scale. */
static void perturbed(const tlm_params *g, tlm_params *l, uint64_t *s, double amp)
{
    assert_int_equal(tlm_params_from_model(l, &tiny, NULL), TLM_OK);
    for (size_t i = 0; i < g->n; i++) l->data[i] = g->data[i] + (float)(amp * (2 * tu_uniform(s) - 1));
}

/* The private aggregate: out - global - (the clipped mean computed here
 * in double) must be noise of mean 0 and variance sigma2 (gamma /
 * clients)^2 on every parameter: chi-square test of the variance, and a
 * z-test of the mean. */
static void test_private_aggregate(void **state)
{
    (void)state;
    tlm_params g, l[3], out;
    assert_int_equal(tlm_params_from_model(&g, &tiny, NULL), TLM_OK);
    uint64_t s = 5;
    const double amps[3] = {0.001, 0.01, 0.004};
    uint8_t *u[3];
    size_t b[3];
    for (int k = 0; k < 3; k++) {
        perturbed(&g, &l[k], &s, amps[k]);
        tlm_fed_header h = {0, (uint32_t)k, 0, 1000u * (k + 1)};
        assert_int_equal(tlm_fed_make_update(&g, &tiny, &l[k], NULL, TLM_FED_F32, &h, NULL, &u[k], &b[k], NULL), TLM_OK);
    }
    const double clip = 0.2;
    const uint32_t clients = 10;
    tlm_fed_dp dp;
    tlm_fedavg a;
    assert_int_equal(tlm_fedavg_init(&a, &tiny, 0.0, NULL), TLM_OK);
    assert_int_equal(tlm_fed_dp_plan(&dp, clip, 0.8, clients, a.sum.n, NULL), TLM_OK);
    assert_true(fabs(dp.rho - 1.0 / (2 * 0.8 * 0.8)) < 1e-6);
    assert_int_equal(tlm_fedavg_set_dp(&a, &dp, NULL), TLM_OK);
    for (int k = 0; k < 3; k++) assert_int_equal(tlm_fedavg_add(&a, u[k], b[k], NULL), TLM_OK);
    assert_int_equal(a.accepted, 3);
    /* the expected step: each delta clipped to norm clip, weight 1 (not its example count), / clients */
    double *want = calloc(g.n, sizeof *want);
    int n_clipped = 0;
    for (int k = 0; k < 3; k++) {
        double n2 = 0;
        for (size_t i = 0; i < g.n; i++) n2 += ((double)l[k].data[i] - g.data[i]) * ((double)l[k].data[i] - g.data[i]);
        const double f = sqrt(n2) > clip ? clip / sqrt(n2) : 1.0;
        n_clipped += f < 1.0;
        for (size_t i = 0; i < g.n; i++) want[i] += f * ((double)l[k].data[i] - g.data[i]) / clients;
    }
    assert_int_equal((int)a.clipped, n_clipped);
    assert_true(n_clipped >= 1 && n_clipped <= 2); /* the amplitudes were chosen so */
    assert_int_equal(tlm_params_from_model(&out, &tiny, NULL), TLM_OK);
    seed(77);
    assert_int_equal(tlm_fedavg_apply_dp(&a, &out, 1.0f, &R, NULL), TLM_OK);
    const double sd = sqrt((double)dp.sigma2) * dp.gamma / clients;
    double sum = 0, sum2 = 0;
    for (size_t i = 0; i < g.n; i++) {
        const double r = ((double)out.data[i] - g.data[i] - want[i]) / sd;
        sum += r;
        sum2 += r * r;
    }
    const double n = (double)g.n;
    /* sum2 ~ chi-square(n): z-score (sum2 - n) / sqrt(2n); the mean ~ N(0, 1/n) */
    const double zv = (sum2 - n) / sqrt(2 * n), zm = sum / sqrt(n);
    print_message("private aggregate over %zu values: noise sd %.3g, variance z %.2f, mean z %.2f\n", g.n, sd, zv, zm);
    assert_true(fabs(zv) < 5 && fabs(zm) < 5);
    /* noise absent or twice too large would fail the same test */
    double alt = 0;
    for (size_t i = 0; i < g.n; i++) {
        const double r = ((double)out.data[i] - g.data[i] - want[i]) / (2 * sd);
        alt += r * r;
    }
    assert_true(fabs((alt - n) / sqrt(2 * n)) > 5);

    /* a failed random source: an error, out untouched */
    tlm_params before;
    assert_int_equal(tlm_params_from_model(&before, &tiny, NULL), TLM_OK);
    memcpy(before.data, out.data, out.n * sizeof(float));
    R.failed = 1;
    tlm_error err;
    assert_int_not_equal(tlm_fedavg_apply_dp(&a, &out, 1.0f, &R, &err), TLM_OK);
    assert_memory_equal(before.data, out.data, out.n * sizeof(float));
    /* DP must be chosen before any update is added */
    tlm_fedavg a2;
    assert_int_equal(tlm_fedavg_init(&a2, &tiny, clip, NULL), TLM_OK);
    assert_int_equal(tlm_fedavg_add(&a2, u[0], b[0], NULL), TLM_OK);
    assert_int_not_equal(tlm_fedavg_set_dp(&a2, &dp, NULL), TLM_OK);
    tlm_fedavg_free(&a2);
    /* plans refused */
    assert_int_not_equal(tlm_fed_dp_plan(&dp, 0.0, 1.0, 10, 100, NULL), TLM_OK);
    assert_int_not_equal(tlm_fed_dp_plan(&dp, 1.0, 0.0, 10, 100, NULL), TLM_OK);
    assert_int_not_equal(tlm_fed_dp_plan(&dp, 1.0, 1.0, 0, 100, NULL), TLM_OK);
    assert_int_not_equal(tlm_fed_dp_plan(&dp, 1.0, 1000.0, 10, 100, NULL), TLM_OK);
    tlm_fedavg_free(&a);
    free(want);
    for (int k = 0; k < 3; k++) {
        free(u[k]);
        tlm_params_free(&l[k]);
    }
    tlm_params_free(&before);
    tlm_params_free(&out);
    tlm_params_free(&g);
}

/* An empirical audit of the private aggregation: the best test between
 * "a canary device took part" and "it did not" (its update of norm C, the
 * projection of the new model on its direction) separates the two by
 * mu = C / (noise sd), which for the Gaussian mechanism is exactly what
 * rho = mu^2 / 2 claims (Gaussian DP). Measured over many rounds, mu must
 * match 1/Z: a mechanism with too little noise (or a wrong account) would
 * show a larger separation than the epsilon it reports. */
static void test_private_aggregate_audit(void **state)
{
    (void)state;
    enum { ROUNDS = 400 };
    const double clip = 1.0, z = 1.0;
    tlm_params g, bg, canary, out;
    assert_int_equal(tlm_params_from_model(&g, &tiny, NULL), TLM_OK);
    uint64_t s = 77;
    perturbed(&g, &bg, &s, 0.002); /* another device, in both worlds */
    assert_int_equal(tlm_params_from_model(&canary, &tiny, NULL), TLM_OK);
    double *u = malloc(g.n * sizeof *u), n2 = 0;
    for (size_t i = 0; i < g.n; i++) {
        u[i] = 2 * tu_uniform(&s) - 1;
        n2 += u[i] * u[i];
    }
    for (size_t i = 0; i < g.n; i++) {
        u[i] /= sqrt(n2);
        canary.data[i] = g.data[i] + (float)(0.999 * clip * u[i]); /* just inside the clip */
    }
    uint8_t *ub, *uc;
    size_t nb, nc;
    tlm_fed_header hb = {0, 1, 0, 10}, hc = {0, 2, 0, 10};
    assert_int_equal(tlm_fed_make_update(&g, &tiny, &bg, NULL, TLM_FED_F32, &hb, NULL, &ub, &nb, NULL), TLM_OK);
    assert_int_equal(tlm_fed_make_update(&g, &tiny, &canary, NULL, TLM_FED_F32, &hc, NULL, &uc, &nc, NULL), TLM_OK);
    tlm_fed_dp dp;
    assert_int_equal(tlm_fed_dp_plan(&dp, clip, z, 2, g.n, NULL), TLM_OK);
    assert_int_equal(tlm_params_from_model(&out, &tiny, NULL), TLM_OK);
    double sum[2] = {0, 0}, sum2[2] = {0, 0};
    seed(123);
    for (int r = 0; r < 2 * ROUNDS; r++) {
        const int with = r & 1;
        tlm_fedavg a;
        assert_int_equal(tlm_fedavg_init(&a, &tiny, 0.0, NULL), TLM_OK);
        assert_int_equal(tlm_fedavg_set_dp(&a, &dp, NULL), TLM_OK);
        assert_int_equal(tlm_fedavg_add(&a, ub, nb, NULL), TLM_OK);
        if (with) assert_int_equal(tlm_fedavg_add(&a, uc, nc, NULL), TLM_OK);
        memcpy(out.data, g.data, g.n * sizeof(float));
        assert_int_equal(tlm_fedavg_apply_dp(&a, &out, 1.0f, &R, NULL), TLM_OK);
        double proj = 0;
        for (size_t i = 0; i < g.n; i++) proj += ((double)out.data[i] - g.data[i]) * u[i];
        sum[with] += proj;
        sum2[with] += proj * proj;
        tlm_fedavg_free(&a);
    }
    const double m0 = sum[0] / ROUNDS, m1 = sum[1] / ROUNDS;
    const double v0 = sum2[0] / ROUNDS - m0 * m0, v1 = sum2[1] / ROUNDS - m1 * m1;
    const double mu = (m1 - m0) / sqrt((v0 + v1) / 2);
    /* the claim: mu = Delta / sigma with Delta the canary's norm in grid steps (the bound, less 0.1%) */
    const double claimed = 1.0 / z, se = sqrt(2.0 / ROUNDS + claimed * claimed / (4.0 * ROUNDS));
    print_message("audit over %d rounds a side: separation mu %.3f (the account's 1/Z = %.3f, se %.3f); "
                  "noise sd %.4g, stated %.4g\n", ROUNDS, mu, claimed, se, sqrt((v0 + v1) / 2),
                  sqrt((double)dp.sigma2) * dp.gamma / 2);
    assert_true(fabs(mu - 0.999 * claimed) < 5 * se);
    /* the noise on the projection is the stated per-value noise (a unit direction) */
    assert_true(fabs(sqrt((v0 + v1) / 2) / (sqrt((double)dp.sigma2) * dp.gamma / 2) - 1) < 0.15);
    free(u);
    free(ub);
    free(uc);
    tlm_params_free(&out);
    tlm_params_free(&canary);
    tlm_params_free(&bg);
    tlm_params_free(&g);
}

/* A round that changes only some tensors: an update of those is taken,
 * one carrying others is refused, and the private aggregate noises only
 * those (every other parameter comes out exactly as it was). */
static void test_restricted_round(void **state)
{
    (void)state;
    tlm_params g, l, out;
    assert_int_equal(tlm_params_from_model(&g, &tiny, NULL), TLM_OK);
    uint64_t s = 21;
    perturbed(&g, &l, &s, 0.01);
    uint8_t only[64];
    size_t values = 0;
    assert_int_equal(tlm_params_select(&g, "norms", only, &values, NULL), TLM_OK);
    assert_int_equal(values, 5u * 16u); /* 2 layers x 2 norms + the final one, dim 16 */
    uint8_t *part, *whole;
    size_t bp, bw;
    tlm_fed_header h = {0, 1, 0, 10};
    assert_int_equal(tlm_fed_make_update(&g, &tiny, &l, only, TLM_FED_F32, &h, NULL, &part, &bp, NULL), TLM_OK);
    assert_int_equal(tlm_fed_make_update(&g, &tiny, &l, NULL, TLM_FED_F32, &h, NULL, &whole, &bw, NULL), TLM_OK);
    assert_true(bp < bw / 20);
    tlm_fedavg a;
    tlm_fed_dp dp;
    tlm_error err;
    assert_int_equal(tlm_fedavg_init(&a, &tiny, 0.0, NULL), TLM_OK);
    assert_int_equal(tlm_fedavg_restrict(&a, only, NULL), TLM_OK);
    assert_int_equal(tlm_fed_dp_plan(&dp, 0.05, 1.0, 4, a.sum.n, NULL), TLM_OK);
    assert_int_not_equal(tlm_fedavg_set_dp(&a, &dp, &err), TLM_OK); /* planned for the whole model */
    assert_int_equal(tlm_fed_dp_plan(&dp, 0.05, 1.0, 4, values, NULL), TLM_OK);
    assert_int_equal(tlm_fedavg_set_dp(&a, &dp, NULL), TLM_OK);
    assert_int_not_equal(tlm_fedavg_add(&a, whole, bw, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "--tensors"));
    assert_int_equal(tlm_fedavg_add(&a, part, bp, NULL), TLM_OK);
    assert_int_equal(tlm_params_from_model(&out, &tiny, NULL), TLM_OK);
    seed(8);
    assert_int_equal(tlm_fedavg_apply_dp(&a, &out, 1.0f, &R, NULL), TLM_OK);
    const uint32_t nt = tlm_params_count(&g);
    size_t changed = 0;
    for (uint32_t i = 0; i < nt; i++) {
        tlm_param_tensor t0, t1;
        tlm_params_tensor(&g, i, &t0);
        tlm_params_tensor(&out, i, &t1);
        for (size_t k = 0; k < (size_t)t0.rows * t0.cols; k++) {
            if (!only[i]) assert_true(t0.data[k] == t1.data[k]);
            else changed += t0.data[k] != t1.data[k];
        }
    }
    assert_true(changed > values * 9 / 10); /* noise of sd ~ C/4 / 2^18 x 2^18: nearly every value moves */
    tlm_fedavg_free(&a);
    free(part);
    free(whole);
    tlm_params_free(&out);
    tlm_params_free(&l);
    tlm_params_free(&g);
}

/* Keys on disk: the secret is private and never overwritten, reads back
 * to the same public key; a public key with a typo, or a secret given
 * as a public key, is refused. */
static void test_keys(void **state)
{
    (void)state;
    char base[4096];
    snprintf(base, sizeof base, "%s", tu_tmp("fedkey"));
    char path[4200];
    snprintf(path, sizeof path, "%s.key", base);
    remove(path);
    snprintf(path, sizeof path, "%s.pub", base);
    remove(path);
    tlm_fed_keys k, k2;
    tlm_fed_pub p;
    tlm_error err;
    assert_int_equal(tlm_fed_keygen(&k, NULL), TLM_OK);
    assert_int_equal(tlm_fed_keys_write(base, &k, NULL), TLM_OK);
    snprintf(path, sizeof path, "%s.key", base);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(tlm_fed_keys_read(path, &k2, NULL), TLM_OK);
    assert_memory_equal(&k.pub, &k2.pub, sizeof k.pub);
    assert_memory_equal(k.box_sk, k2.box_sk, 32);
    assert_int_not_equal(tlm_fed_pub_read(path, &p, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "secret key"));
    /* readable by others: refused until made private again */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_not_equal(tlm_fed_keys_read(path, &k2, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "chmod 600"));
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(tlm_fed_keys_read(path, &k2, NULL), TLM_OK);
    /* a second key under the same name: refused, the first kept */
    tlm_fed_keys k3;
    assert_int_equal(tlm_fed_keygen(&k3, NULL), TLM_OK);
    assert_int_not_equal(tlm_fed_keys_write(base, &k3, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "never overwritten"));
    assert_int_equal(tlm_fed_keys_read(path, &k2, NULL), TLM_OK);
    assert_memory_equal(&k.pub, &k2.pub, sizeof k.pub);
    snprintf(path, sizeof path, "%s.pub", base);
    assert_int_equal(tlm_fed_pub_read(path, &p, NULL), TLM_OK);
    assert_memory_equal(&p, &k.pub, sizeof p);
    /* every single-digit typo in the public key is caught by its check bytes or its length */
    char text[TLM_FED_PUB_TEXT];
    tlm_fed_pub_text(&k.pub, text);
    const size_t start = strlen("tritlm-fed-public-1 ");
    for (size_t i = start; i < strlen(text); i++) {
        char t2[TLM_FED_PUB_TEXT];
        memcpy(t2, text, sizeof t2);
        t2[i] = t2[i] == '0' ? '1' : '0';
        FILE *f = fopen(path, "w");
        fputs(t2, f);
        fclose(f);
        assert_int_not_equal(tlm_fed_pub_read(path, &p, NULL), TLM_OK);
    }
}

static uint8_t *sample_update(uint32_t client, size_t *n)
{
    tlm_params g, l;
    assert_int_equal(tlm_params_from_model(&g, &tiny, NULL), TLM_OK);
    uint64_t s = 9 + client;
    perturbed(&g, &l, &s, 0.01);
    tlm_fed_header h = {3, client, 0, 500};
    uint8_t *u;
    assert_int_equal(tlm_fed_make_update(&g, &tiny, &l, NULL, TLM_FED_I8, &h, &R, &u, n, NULL), TLM_OK);
    tlm_params_free(&g);
    tlm_params_free(&l);
    return u;
}

/* Sealed updates: a round trip gives the update back and names the
 * signer; every flipped byte and every truncation is refused; another
 * server cannot open it; an unenrolled signer, or an enrolled one naming
 * another client, is refused. Signed models likewise. */
static void test_sealed(void **state)
{
    (void)state;
    seed(3);
    tlm_fed_keys server, other_server, dev[3];
    assert_int_equal(tlm_fed_keygen(&server, NULL), TLM_OK);
    assert_int_equal(tlm_fed_keygen(&other_server, NULL), TLM_OK);
    for (int i = 0; i < 3; i++) assert_int_equal(tlm_fed_keygen(&dev[i], NULL), TLM_OK);
    const uint32_t ids[2] = {4, 9};
    const tlm_fed_pub pubs[2] = {dev[0].pub, dev[1].pub};
    char rpath[4096];
    snprintf(rpath, sizeof rpath, "%s", tu_tmp("roster.txt"));
    tu_write_roster(rpath, ids, pubs, 2);
    tlm_fed_roster r;
    assert_int_equal(tlm_fed_roster_read(rpath, &r, NULL), TLM_OK);
    assert_int_equal(r.n, 2);

    size_t n;
    uint8_t *u = sample_update(9, &n);
    uint8_t *sealed, *opened;
    size_t sn, on;
    uint32_t who = 0;
    tlm_error err;
    assert_int_equal(tlm_fed_seal(&dev[1], &server.pub, u, n, &sealed, &sn, NULL), TLM_OK);
    assert_true(tlm_fed_looks_sealed(sealed, sn));
    assert_null(memmem(sealed, sn, u + 40, 64)); /* the update's bytes are not readable in transit */
    assert_int_equal(tlm_fed_unseal(&server, &r, sealed, sn, &opened, &on, &who, &err), TLM_OK);
    assert_int_equal(who, 9);
    assert_int_equal(on, n);
    assert_memory_equal(opened, u, n);
    free(opened);
    for (size_t i = 0; i < sn; i++) {
        sealed[i] ^= 0x20;
        assert_int_not_equal(tlm_fed_unseal(&server, &r, sealed, sn, &opened, &on, &who, NULL), TLM_OK);
        assert_null(opened);
        sealed[i] ^= 0x20;
    }
    for (size_t k = 0; k < sn; k += 1 + k / 3)
        assert_int_not_equal(tlm_fed_unseal(&server, &r, sealed, k, &opened, &on, &who, NULL), TLM_OK);
    assert_int_not_equal(tlm_fed_unseal(&other_server, &r, sealed, sn, &opened, &on, &who, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "cannot be opened"));
    assert_int_not_equal(tlm_fed_unseal(&server, &r, u, n, &opened, &on, &who, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "not a sealed update"));
    free(sealed);
    /* a device that is not enrolled */
    assert_int_equal(tlm_fed_seal(&dev[2], &server.pub, u, n, &sealed, &sn, NULL), TLM_OK);
    assert_int_not_equal(tlm_fed_unseal(&server, &r, sealed, sn, &opened, &on, &who, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "not enrolled"));
    free(sealed);
    /* device 0 (client 4) sending an update that names client 9 */
    assert_int_equal(tlm_fed_seal(&dev[0], &server.pub, u, n, &sealed, &sn, NULL), TLM_OK);
    assert_int_not_equal(tlm_fed_unseal(&server, &r, sealed, sn, &opened, &on, &who, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "names client 9"));
    free(sealed);
    free(u);

    /* the signed global model */
    uint8_t *sm;
    size_t smn, in;
    const uint8_t *img;
    uint32_t round = 0;
    assert_int_equal(tlm_fed_sign_model(&server, 12, tiny_img, tiny_bytes, &sm, &smn, NULL), TLM_OK);
    assert_int_equal(tlm_fed_verify_model(&server.pub, sm, smn, &img, &in, &round, NULL), TLM_OK);
    assert_int_equal(round, 12);
    assert_int_equal(in, tiny_bytes);
    assert_memory_equal(img, tiny_img, tiny_bytes);
    assert_int_not_equal(tlm_fed_verify_model(&other_server.pub, sm, smn, &img, &in, &round, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "does not verify"));
    for (size_t i = 0; i < smn; i += 1 + i / 64) {
        sm[i] ^= 1;
        assert_int_not_equal(tlm_fed_verify_model(&server.pub, sm, smn, &img, &in, &round, NULL), TLM_OK);
        sm[i] ^= 1;
    }
    assert_int_not_equal(tlm_fed_verify_model(&server.pub, sm, smn - 1, &img, &in, &round, NULL), TLM_OK);
    assert_int_not_equal(tlm_fed_verify_model(&server.pub, tiny_img, tiny_bytes, &img, &in, &round, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "not a signed model"));
    free(sm);

    tlm_fed_roster_free(&r);
    /* rosters refused: an id twice, a key twice, a line without a key */
    const uint32_t twice[2] = {4, 4};
    tu_write_roster(rpath, twice, pubs, 2);
    assert_int_not_equal(tlm_fed_roster_read(rpath, &r, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "enrolled twice"));
    const tlm_fed_pub same[2] = {dev[0].pub, dev[0].pub};
    tu_write_roster(rpath, ids, same, 2);
    assert_int_not_equal(tlm_fed_roster_read(rpath, &r, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "already client 4"));
    FILE *f = fopen(rpath, "w");
    fputs("7\n", f);
    fclose(f);
    assert_int_not_equal(tlm_fed_roster_read(rpath, &r, &err), TLM_OK);
    assert_non_null(strstr(err.msg, ":1:"));
    tlm_fed_roster_free(&r);
}

/* Secure aggregation: the roster's pairwise masks cancel (and one
 * device's share is uniformly random); with every device in, and with one
 * dropped out, the server's result after the survivors' reveals equals
 * the mean of their clipped, rounded updates computed here; a dropped
 * device's share that arrives after the reveals is still uniform once the
 * revealed pair masks are removed (its self mask holds); refusals: a
 * second share, a missing or disagreeing reveal, a request naming the
 * device itself or leaving one device; with noise, the variance is the
 * senders' parts added up. */
static void secure_round(const tlm_fed_keys *keys, const uint32_t *ids, int n, const tlm_fed_roster *roster,
                         const tlm_params *g, const int *drop, double z, uint64_t seedv)
{
    const size_t d = g->n;
    const double clip = 0.3;
    tlm_secagg plan;
    assert_int_equal(tlm_secagg_plan(&plan, clip, z, (uint32_t)n, d, NULL), TLM_OK);
    uint8_t *msg[8], seeds[8][32];
    size_t bytes[8];
    tlm_params l[8], out;
    double *want = calloc(d, sizeof *want);
    uint64_t s = seedv;
    seed(seedv);
    int senders = 0;
    for (int i = 0; i < n; i++) senders += !drop[i];
    for (int i = 0; i < n; i++) {
        perturbed(g, &l[i], &s, i == 2 ? 0.02 : 0.002); /* device 2 is clipped */
        tlm_fed_header h = {5, ids[i], 0, 100};
        assert_int_equal(tlm_fed_make_masked_update(g, &tiny, &l[i], NULL, &h, &plan, &keys[i], roster, &R, seeds[i], &msg[i],
                                                    &bytes[i], NULL),
                         TLM_OK);
        if (drop[i]) continue;
        double n2 = 0;
        for (size_t k = 0; k < d; k++) n2 += ((double)l[i].data[k] - g->data[k]) * ((double)l[i].data[k] - g->data[k]);
        const double f = sqrt(n2) > clip ? clip / sqrt(n2) : 1.0;
        for (size_t k = 0; k < d; k++)
            want[k] += (double)llround(f * ((double)l[i].data[k] - g->data[k]) / plan.gamma) * plan.gamma / senders;
    }
    tlm_fedavg a;
    tlm_error err;
    assert_int_equal(tlm_fedavg_init(&a, &tiny, 0.0, NULL), TLM_OK);
    assert_int_equal(tlm_fedavg_set_secure(&a, &plan, roster, NULL), TLM_OK);
    assert_int_equal(tlm_params_from_model(&out, &tiny, NULL), TLM_OK);
    int first = -1;
    for (int i = n - 1; i >= 0; i--)
        if (!drop[i]) {
            assert_int_equal(tlm_fedavg_add(&a, msg[i], bytes[i], NULL), TLM_OK);
            first = i;
        }
    assert_int_not_equal(tlm_fedavg_add(&a, msg[first], bytes[first], &err), TLM_OK); /* twice */
    assert_non_null(strstr(err.msg, "already in"));
    /* the request: who dropped out */
    uint32_t missing[8];
    const uint32_t nd = tlm_fedavg_secure_missing(&a, missing);
    assert_int_equal((int)nd, n - senders);
    const uint32_t base = tlm_fed_model_id(&tiny);
    tlm_secagg_reveal rev[8];
    int nr = 0;
    for (int i = 0; i < n; i++) {
        if (drop[i]) {
            uint8_t *m;
            size_t mn;
            assert_int_not_equal(tlm_secagg_reveal_make(&keys[i], roster, 5, base, seeds[i], missing, nd, &m, &mn, &err),
                                 TLM_OK);
            assert_non_null(strstr(err.msg, "dropped out"));
            continue;
        }
        uint8_t *m;
        size_t mn;
        assert_int_equal(tlm_secagg_reveal_make(&keys[i], roster, 5, base, seeds[i], missing, nd, &m, &mn, NULL), TLM_OK);
        assert_int_equal(tlm_secagg_reveal_parse(m, mn, &rev[nr], NULL), TLM_OK);
        nr++;
        free(m);
    }
    /* a reveal missing: no model, the missing client named */
    assert_int_not_equal(tlm_fedavg_apply_secure(&a, &out, 1.0f, rev + 1, (size_t)nr - 1, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "no reveal yet"));
    assert_memory_equal(out.data, g->data, d * sizeof(float));
    assert_int_equal(tlm_fedavg_apply_secure(&a, &out, 1.0f, rev, (size_t)nr, NULL), TLM_OK);
    double worst = 0, s2 = 0;
    for (size_t k = 0; k < d; k++) {
        const double r = (double)out.data[k] - g->data[k] - want[k];
        worst = fmax(worst, fabs(r));
        s2 += r * r;
    }
    if (z == 0) {
        print_message("secure sum, %d of %d devices, no noise: largest difference from the mean computed here %.2g\n",
                      senders, n, worst);
        assert_true(worst < 1e-7);
    } else {
        const double var = (double)senders * plan.share_sigma2 * (plan.gamma / senders) * (plan.gamma / senders);
        const double zv = (s2 / var - (double)d) / sqrt(2.0 * d);
        print_message("secure sum, %d of %d devices, with their noise: variance z %.2f\n", senders, n, zv);
        assert_true(fabs(zv) < 5);
        assert_true(fabs(tlm_secagg_rho(&plan, (uint32_t)senders) - plan.rho * n / senders) < 1e-9);
    }
    /* a dropped device's late share: remove every pair mask the reveals gave away; its self mask keeps it uniform */
    for (int i = 0; i < n; i++) {
        if (!drop[i]) continue;
        tlm_fed_entry e;
        uint32_t *late = malloc(d * sizeof *late);
        size_t k = 0;
        for (uint32_t t = 0; t < tlm_params_count(g); t++) {
            tlm_fed_entry_at(msg[i] + 0, t, &e);
            for (uint32_t j = 0; j < e.count; j++, k++)
                late[k] = (uint32_t)e.data[4 * j] | (uint32_t)e.data[4 * j + 1] << 8 | (uint32_t)e.data[4 * j + 2] << 16 |
                          (uint32_t)e.data[4 * j + 3] << 24;
        }
        /* the server knows every pair key of this device with a survivor: it computes their masks the device's way */
        uint32_t *pm = calloc(d, sizeof *pm);
        tlm_fed_roster pair = *roster;
        for (int r = 0; r < nr; r++) {
            uint32_t *one = malloc(d * sizeof *one);
            /* the survivor's mask restricted to this dropped device: the survivor's full mask minus its other pairs
             * is not computable, so recompute the pair stream through a two-device roster of the same keys */
            uint32_t ids2[2] = {ids[i], rev[r].client};
            tlm_fed_pub pubs2[2];
            for (uint32_t q = 0; q < roster->n; q++) {
                if (roster->client[q] == ids[i]) pubs2[0] = roster->pub[q];
                if (roster->client[q] == rev[r].client) pubs2[1] = roster->pub[q];
            }
            pair.n = 2;
            pair.client = ids2;
            pair.pub = pubs2;
            assert_int_equal(tlm_secagg_mask(&keys[i], &pair, 5, base, d, one, NULL), TLM_OK);
            for (size_t q = 0; q < d; q++) pm[q] += one[q];
            free(one);
        }
        uint64_t c[256] = {0};
        double p[256];
        for (size_t q = 0; q < d; q++) c[(late[q] - pm[q]) >> 24]++;
        for (int b = 0; b < 256; b++) p[b] = 1.0 / 256;
        const double chi = tu_chi2_stat(c, p, 256, (double)d);
        print_message("a late share of a dropped device, pair masks removed: top-byte chi2 %.1f (critical %.1f)\n", chi,
                      tu_chi2_crit(255));
        assert_true(chi >= 0 && chi < tu_chi2_crit(255));
        if (nd == 1 && z == 0) { /* what holds it is the self mask: without it, the update itself */
            uint32_t *self = malloc(d * sizeof *self);
            assert_int_equal(tlm_secagg_self_mask(seeds[i], 5, base, d, self, NULL), TLM_OK);
            double n2 = 0;
            for (size_t q = 0; q < d; q++) n2 += ((double)l[i].data[q] - g->data[q]) * ((double)l[i].data[q] - g->data[q]);
            const double f = sqrt(n2) > clip ? clip / sqrt(n2) : 1.0;
            for (size_t q = 0; q < d; q++)
                assert_int_equal((int32_t)(late[q] - pm[q] - self[q]),
                                 llround(f * ((double)l[i].data[q] - g->data[q]) / plan.gamma));
            free(self);
        }
        free(pm);
        free(late);
    }
    for (int r = 0; r < nr; r++) tlm_secagg_reveal_free(&rev[r]);
    tlm_fedavg_free(&a);
    free(want);
    for (int i = 0; i < n; i++) {
        free(msg[i]);
        tlm_params_free(&l[i]);
    }
    tlm_params_free(&out);
}

static void test_secure_aggregation(void **state)
{
    (void)state;
    enum { N = 4 };
    const uint32_t ids[N] = {3, 7, 1, 9};
    tlm_fed_keys keys[N];
    tlm_fed_pub pubs[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(tlm_fed_keygen(&keys[i], NULL), TLM_OK);
        pubs[i] = keys[i].pub;
    }
    char rpath[4096];
    snprintf(rpath, sizeof rpath, "%s", tu_tmp("secagg_roster.txt"));
    tu_write_roster(rpath, ids, pubs, N);
    tlm_fed_roster roster;
    assert_int_equal(tlm_fed_roster_read(rpath, &roster, NULL), TLM_OK);
    tlm_params g;
    assert_int_equal(tlm_params_from_model(&g, &tiny, NULL), TLM_OK);
    const size_t d = g.n;
    /* the pairwise masks cancel; one alone is uniform (chi-square of its top byte) */
    uint32_t *sum = calloc(d, sizeof *sum), *mask = malloc(d * sizeof *mask);
    for (int i = 0; i < N; i++) {
        assert_int_equal(tlm_secagg_mask(&keys[i], &roster, 5, 1234, d, mask, NULL), TLM_OK);
        for (size_t k = 0; k < d; k++) sum[k] += mask[k];
        if (i == 0) {
            uint64_t c[256] = {0};
            double p[256];
            for (size_t k = 0; k < d; k++) c[mask[k] >> 24]++;
            for (int b = 0; b < 256; b++) p[b] = 1.0 / 256;
            const double chi = tu_chi2_stat(c, p, 256, (double)d);
            print_message("one device's mask over %zu values: top-byte chi2 %.1f (df 255, critical %.1f)\n", d, chi,
                          tu_chi2_crit(255));
            assert_true(chi >= 0 && chi < tu_chi2_crit(255));
        }
    }
    for (size_t k = 0; k < d; k++) assert_int_equal(sum[k], 0);
    static const int none[N] = {0, 0, 0, 0}, one[N] = {0, 1, 0, 0}, two[N] = {1, 0, 0, 1};
    secure_round(keys, ids, N, &roster, &g, none, 0.0, 31);
    secure_round(keys, ids, N, &roster, &g, one, 0.0, 32);
    secure_round(keys, ids, N, &roster, &g, two, 1.0, 33);
    /* refusals of the protocol's second step */
    uint8_t seedv[32] = {1}, *m;
    size_t mn;
    tlm_error err;
    const uint32_t three[3] = {3, 7, 9}, twice[2] = {7, 7}, stranger[1] = {42};
    assert_int_not_equal(tlm_secagg_reveal_make(&keys[2], &roster, 5, 1, seedv, three, 3, &m, &mn, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "1 of 4 devices left"));
    assert_int_not_equal(tlm_secagg_reveal_make(&keys[2], &roster, 5, 1, seedv, twice, 2, &m, &mn, &err), TLM_OK);
    assert_int_not_equal(tlm_secagg_reveal_make(&keys[2], &roster, 5, 1, seedv, stranger, 1, &m, &mn, &err), TLM_OK);
    /* the request: signed by the server, refused under another key or when changed */
    tlm_fed_keys server, other;
    assert_int_equal(tlm_fed_keygen(&server, NULL), TLM_OK);
    assert_int_equal(tlm_fed_keygen(&other, NULL), TLM_OK);
    const uint32_t drop1[1] = {7};
    assert_int_equal(tlm_secagg_request_sign(&server, 5, 99, drop1, 1, &m, &mn, NULL), TLM_OK);
    uint32_t rr, rb, rn, *rd;
    assert_int_equal(tlm_secagg_request_verify(&server.pub, m, mn, &rr, &rb, &rd, &rn, NULL), TLM_OK);
    assert_true(rr == 5 && rb == 99 && rn == 1 && rd[0] == 7);
    free(rd);
    assert_int_not_equal(tlm_secagg_request_verify(&other.pub, m, mn, &rr, &rb, &rd, &rn, NULL), TLM_OK);
    for (size_t i = 0; i < mn; i++) {
        m[i] ^= 4;
        assert_int_not_equal(tlm_secagg_request_verify(&server.pub, m, mn, &rr, &rb, &rd, &rn, NULL), TLM_OK);
        m[i] ^= 4;
    }
    free(m);
    /* a device outside the roster cannot make a share; a plain server refuses shares */
    tlm_fed_keys stranger_key;
    assert_int_equal(tlm_fed_keygen(&stranger_key, NULL), TLM_OK);
    assert_int_not_equal(tlm_secagg_mask(&stranger_key, &roster, 5, 1234, d, mask, NULL), TLM_OK);
    tlm_secagg plan;
    assert_int_equal(tlm_secagg_plan(&plan, 0.3, 0.0, N, d, NULL), TLM_OK);
    tlm_params l;
    assert_int_equal(tlm_params_from_model(&l, &tiny, NULL), TLM_OK);
    tlm_fed_header h = {5, 3, 0, 100};
    uint8_t sd[32];
    assert_int_equal(tlm_fed_make_masked_update(&g, &tiny, &l, NULL, &h, &plan, &keys[0], &roster, &R, sd, &m, &mn, NULL),
                     TLM_OK);
    tlm_fedavg a;
    assert_int_equal(tlm_fedavg_init(&a, &tiny, 0.0, NULL), TLM_OK);
    assert_int_not_equal(tlm_fedavg_add(&a, m, mn, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "--secure-agg"));
    tlm_fedavg_free(&a);
    h.client = 7; /* keys[0] is client 3 */
    free(m);
    assert_int_not_equal(tlm_fed_make_masked_update(&g, &tiny, &l, NULL, &h, &plan, &keys[0], &roster, &R, sd, &m, &mn, NULL),
                         TLM_OK);
    assert_int_not_equal(tlm_secagg_plan(&plan, 0.3, 0.0, 1, d, NULL), TLM_OK);
    tlm_params_free(&l);
    free(sum);
    free(mask);
    tlm_params_free(&g);
    tlm_fed_roster_free(&roster);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dgauss_wide),
        cmocka_unit_test(test_zcdp_epsilon),
        cmocka_unit_test(test_private_aggregate),
        cmocka_unit_test(test_private_aggregate_audit),
        cmocka_unit_test(test_restricted_round),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_sealed),
        cmocka_unit_test(test_secure_aggregation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
