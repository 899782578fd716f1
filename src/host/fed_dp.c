/* Differential privacy for federated aggregation (fed_dp.h). */
#include <math.h>
#include <string.h>

#include "fed_dp.h"

__extension__ typedef unsigned __int128 u128;

tlm_status tlm_fed_dp_plan(tlm_fed_dp *dp, double clip, double z, uint32_t clients, size_t dim, tlm_error *err)
{
    memset(dp, 0, sizeof *dp);
    if (!(clip > 0) || !isfinite(clip)) return tlm_fail(err, TLM_ERR_ARG, "differential privacy needs a clip norm > 0");
    if (!(z > 0) || z > TLM_FED_DP_MAX_Z)
        return tlm_fail(err, TLM_ERR_ARG, "the noise multiplier must be in (0, %g]", TLM_FED_DP_MAX_Z);
    if (!clients) return tlm_fail(err, TLM_ERR_ARG, "differential privacy needs the number of clients");
    if (!dim || dim > (1u << 30)) return tlm_fail(err, TLM_ERR_ARG, "no parameters to noise, or too many");
    dp->clip = clip;
    dp->z = z;
    dp->clients = clients;
    dp->dim = dim;
    dp->gamma = clip / TLM_FED_DP_GRID;
    /* |round(x / gamma)|_2 <= |x / gamma|_2 + |rounding|_2 <= 2^18 + sqrt(dim) / 2 */
    dp->delta_l2 = TLM_FED_DP_GRID + sqrt((double)dim) / 2.0;
    dp->lim2 = (uint64_t)floor(dp->delta_l2 * dp->delta_l2);
    const double s = z * dp->delta_l2;
    dp->sigma2 = (uint64_t)ceil(s * s);
    if (dp->sigma2 < 1) dp->sigma2 = 1;
    dp->rho = dp->delta_l2 * dp->delta_l2 / (2.0 * (double)dp->sigma2);
    return TLM_OK;
}

/* Random bits, 64 at a time. */
typedef struct {
    tlm_rand *r;
    uint64_t bits;
    int n;
} bitsrc;

static int bit(bitsrc *b)
{
    if (!b->n) {
        b->bits = tlm_rand_u64(b->r);
        b->n = 64;
    }
    const int v = (int)(b->bits & 1u);
    b->bits >>= 1;
    b->n--;
    return v;
}

/* Bernoulli(num / den) for den < 2^127: a uniform binary fraction against
 * num/den's expansion, bit by bit. */
static int bern_frac(bitsrc *b, u128 num, u128 den)
{
    if (num >= den) return 1;
    if (num == 0) return 0;
    u128 x = num;
    for (;;) {
        x <<= 1;
        int p = 0;
        if (x >= den) {
            p = 1;
            x -= den;
        }
        const int v = bit(b);
        if (v != p) return v < p;
        if (x == 0) return 0;
        if (b->r->failed) return 0;
    }
}

/* Bernoulli(exp(-num / den)) for num <= den < 2^120: whether the first k
 * with a failed Bernoulli(num / (den k)) is odd. */
static int bern_exp_unit(bitsrc *b, u128 num, u128 den)
{
    uint32_t k = 1;
    while (bern_frac(b, num, den * k)) {
        if (b->r->failed || k == 255u) return 0; /* k = 255: probability below 1/255! */
        k++;
    }
    return (int)(k & 1u);
}

static int bern_exp(bitsrc *b, u128 num, u128 den)
{
    const u128 whole = num / den;
    for (u128 i = 0; i < whole; i++)
        if (!bern_exp_unit(b, 1, 1)) return 0;
    return bern_exp_unit(b, num % den, den);
}

int64_t tlm_dgauss_wide(tlm_rand *r, uint64_t sigma2)
{
    if (sigma2 < 1) sigma2 = 1;
    if (sigma2 > (1ull << 52)) sigma2 = 1ull << 52;
    /* t = floor(sigma) + 1 */
    uint64_t t = (uint64_t)sqrt((double)sigma2);
    while (t * t > sigma2) t--;
    while ((t + 1) * (t + 1) <= sigma2) t++;
    t++;
    bitsrc b = {r, 0, 0};
    const u128 den = (u128)2u * sigma2 * t * t; /* <= 2^106 */
    for (;;) {
        if (r->failed) return 0;
        const int64_t y = tlm_dlaplace(r, 1, t);
        const uint64_t ay = (uint64_t)(y < 0 ? -y : y);
        if (ay > (1ull << 36)) continue;
        /* accept with exp(-(|y| - sigma2 / t)^2 / (2 sigma2)) = exp(-(|y| t - sigma2)^2 / (2 sigma2 t^2)) */
        const u128 a = (u128)ay * t, d = a > sigma2 ? a - sigma2 : sigma2 - a; /* < 2^63 */
        if (bern_exp(&b, d * d, den)) return y;
    }
}

/* CKS 2020, Corollary 13: rho-zCDP gives (eps, delta)-DP with
 * eps = alpha rho + (ln(1/delta) + (alpha - 1) ln(1 - 1/alpha) - ln alpha) / (alpha - 1)
 * for every alpha > 1. */
static double eps_at(double rho, double ld, double alpha)
{
    return alpha * rho + (ld + (alpha - 1.0) * log1p(-1.0 / alpha) - log(alpha)) / (alpha - 1.0);
}

double tlm_zcdp_epsilon(double rho, double delta)
{
    if (isinf(rho)) return INFINITY;
    if (!(rho > 0)) return 0.0;
    const double ld = log(1.0 / delta);
    /* scan ln(alpha - 1) in [-12, 16], then narrow around the best point */
    double best_u = -12.0, best = INFINITY;
    for (int i = 0; i <= 2800; i++) {
        const double u = -12.0 + i * 0.01, e = eps_at(rho, ld, 1.0 + exp(u));
        if (e < best) {
            best = e;
            best_u = u;
        }
    }
    double lo = best_u - 0.01, hi = best_u + 0.01;
    for (int i = 0; i < 100; i++) {
        const double m1 = lo + (hi - lo) / 3.0, m2 = hi - (hi - lo) / 3.0;
        if (eps_at(rho, ld, 1.0 + exp(m1)) < eps_at(rho, ld, 1.0 + exp(m2)))
            hi = m2;
        else
            lo = m1;
    }
    const double e = eps_at(rho, ld, 1.0 + exp((lo + hi) / 2.0));
    return e < best ? e : best;
}
