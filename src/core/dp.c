/* Differential privacy on the device: random source, integer samplers,
 * token mechanisms, budget, redaction (see include/tritlm/dp.h and
 * docs/PRIVACY.md). No sampler turns a uniform float into noise: every
 * random decision is a comparison of uniform integers, so the output
 * distributions are exact (up to the stated discretizations). */
#include <math.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#elif defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

#include "dgauss_cdt.h"
#include "tritlm/dp.h"
#include "kernels.h"
#include "tritlm/wtype.h"

/* ---- random source ---- */

void tlm_rand_init(tlm_rand *r, tlm_entropy_fn fill, void *ctx)
{
    memset(r, 0, sizeof *r);
    r->fill = fill;
    r->ctx = ctx;
}

static void take(tlm_rand *r, uint8_t *dst, uint32_t n)
{
    if (r->avail < n) {
        if (r->failed || r->fill(r->ctx, r->buf, sizeof r->buf) != 0) {
            r->failed = 1;
            memset(r->buf, 0, sizeof r->buf);
        }
        r->avail = sizeof r->buf;
    }
    memcpy(dst, r->buf + sizeof r->buf - r->avail, n);
    r->avail -= n;
}

uint32_t tlm_rand_u32(tlm_rand *r)
{
    uint8_t b[4];
    take(r, b, 4);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

uint64_t tlm_rand_u64(tlm_rand *r)
{
    if (r->avail >= 8u) { /* the common case: eight buffered bytes, little-endian */
        const uint8_t *b = r->buf + sizeof r->buf - r->avail;
        r->avail -= 8u;
        return (uint64_t)b[0] | (uint64_t)b[1] << 8 | (uint64_t)b[2] << 16 | (uint64_t)b[3] << 24 |
               (uint64_t)b[4] << 32 | (uint64_t)b[5] << 40 | (uint64_t)b[6] << 48 | (uint64_t)b[7] << 56;
    }
    const uint64_t lo = tlm_rand_u32(r);
    return lo | (uint64_t)tlm_rand_u32(r) << 32;
}

uint64_t tlm_rand_below(tlm_rand *r, uint64_t n)
{
    if (n <= 1u) return 0;
    if (n <= 0xFFFFFFFFull) {
        const uint32_t m = (uint32_t)n, lim = (uint32_t)(0u - m) % m; /* 2^32 mod m */
        for (;;) {
            const uint32_t v = tlm_rand_u32(r);
            if (v >= lim) return v % m; /* [lim, 2^32) holds a whole number of copies of [0, m) */
            if (r->failed) return 0;
        }
    }
    const uint64_t lim = (0u - n) % n;
    for (;;) {
        const uint64_t v = tlm_rand_u64(r);
        if (v >= lim) return v % n;
        if (r->failed) return 0;
    }
}

/* ChaCha20 block function (RFC 8439), key from the seed by splitmix64. */
#define ROTL(v, c) (((v) << (c)) | ((v) >> (32 - (c))))
#define QR(a, b, c, d)          \
    a += b; d ^= a; d = ROTL(d, 16); \
    c += d; b ^= c; b = ROTL(b, 12); \
    a += b; d ^= a; d = ROTL(d, 8);  \
    c += d; b ^= c; b = ROTL(b, 7)

void tlm_chacha_seed(tlm_chacha *c, uint64_t seed)
{
    uint64_t z = seed;
    for (int i = 0; i < 4; i++) {
        z += 0x9E3779B97F4A7C15ull;
        uint64_t x = z;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        x ^= x >> 31;
        c->key[2 * i] = (uint32_t)x;
        c->key[2 * i + 1] = (uint32_t)(x >> 32);
    }
    c->counter = 0;
}

void tlm_chacha_key(tlm_chacha *c, const uint8_t key[32])
{
    for (int i = 0; i < 8; i++)
        c->key[i] = (uint32_t)key[4 * i] | (uint32_t)key[4 * i + 1] << 8 | (uint32_t)key[4 * i + 2] << 16 |
                    (uint32_t)key[4 * i + 3] << 24;
    c->counter = 0;
}

int tlm_chacha_fill(void *chacha, uint8_t *buf, size_t n)
{
    tlm_chacha *c = chacha;
    while (n) {
        uint32_t s[16] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u};
        memcpy(s + 4, c->key, 32);
        s[12] = (uint32_t)c->counter;
        s[13] = (uint32_t)(c->counter >> 32);
        s[14] = s[15] = 0;
        uint32_t x[16];
        memcpy(x, s, sizeof x);
        for (int i = 0; i < 10; i++) {
            QR(x[0], x[4], x[8], x[12]); QR(x[1], x[5], x[9], x[13]);
            QR(x[2], x[6], x[10], x[14]); QR(x[3], x[7], x[11], x[15]);
            QR(x[0], x[5], x[10], x[15]); QR(x[1], x[6], x[11], x[12]);
            QR(x[2], x[7], x[8], x[13]); QR(x[3], x[4], x[9], x[14]);
        }
        uint8_t out[64];
        for (int i = 0; i < 16; i++) {
            const uint32_t v = x[i] + s[i];
            out[4 * i] = (uint8_t)v;
            out[4 * i + 1] = (uint8_t)(v >> 8);
            out[4 * i + 2] = (uint8_t)(v >> 16);
            out[4 * i + 3] = (uint8_t)(v >> 24);
        }
        const size_t k = n < 64 ? n : 64;
        memcpy(buf, out, k);
        buf += k;
        n -= k;
        c->counter++;
    }
    return 0;
}

/* ---- samplers ---- */

static uint32_t rand_bit(tlm_rand *r)
{
    if (!r->nbits) {
        r->bits = tlm_rand_u32(r);
        r->nbits = 32;
    }
    const uint32_t b = r->bits & 1u;
    r->bits >>= 1;
    r->nbits--;
    return b;
}

/* Compares a uniform random binary fraction, one bit at a time, with the
 * binary expansion of num/den: exact, two random bits on average, no
 * division. */
int tlm_bern_frac(tlm_rand *r, uint64_t num, uint64_t den)
{
    if (num >= den) return 1;
    if (num == 0) return 0;
    if (den > (UINT64_MAX >> 1)) return tlm_rand_below(r, den) < num; /* x * 2 would overflow */
    uint64_t x = num;
    for (;;) {
        x <<= 1;
        uint32_t p = 0;
        if (x >= den) {
            p = 1;
            x -= den;
        }
        const uint32_t b = rand_bit(r);
        if (b != p) return b < p; /* the random fraction fell below num/den: success */
        if (x == 0) return 0;     /* num/den's expansion ended: the random one is not below it */
        if (r->failed) return 0;
    }
}

/* exp(-g) for g = num/den in [0, 1]: K counts successes of Bernoulli(g/k)
 * for k = 1, 2, ...; the answer is whether K stopped at an odd k. */
static int bern_exp_unit(tlm_rand *r, uint64_t num, uint64_t den)
{
    uint64_t k = 1;
    for (;;) {
        if (den > UINT64_MAX / (k + 1u)) return (int)(k & 1u); /* g/k < 2^-32 from here: ends now with
                                                                  probability > 1 - 2^-32 anyway */
        if (!tlm_bern_frac(r, num, den * k)) break;
        k++;
        if (r->failed) return 0;
    }
    return (int)(k & 1u);
}

int tlm_bern_exp(tlm_rand *r, uint64_t num, uint64_t den)
{
    const uint64_t whole = num / den;
    for (uint64_t i = 0; i < whole; i++)
        if (!bern_exp_unit(r, 1, 1)) return 0;
    return bern_exp_unit(r, num % den, den);
}

int64_t tlm_dlaplace(tlm_rand *r, uint64_t s, uint64_t t)
{
    for (;;) {
        if (r->failed) return 0;
        const uint64_t u = tlm_rand_below(r, t);
        if (!tlm_bern_exp(r, u, t)) continue;
        uint64_t v = 0;
        while (tlm_bern_exp(r, 1, 1) && !r->failed) v++;
        const uint64_t x = u + t * v;
        const uint64_t y = x / s;
        const int neg = tlm_bern_frac(r, 1, 2);
        if (neg && y == 0) continue;
        return neg ? -(int64_t)y : (int64_t)y;
    }
}

int64_t tlm_dgauss(tlm_rand *r, uint64_t num, uint64_t den)
{
    /* t = floor(sigma) + 1: the smallest integer with t^2 den > num */
    uint64_t t = 1;
    while (t * t * den <= num) t++;
    for (;;) {
        if (r->failed) return 0;
        const int64_t y = tlm_dlaplace(r, 1, t);
        const uint64_t ay = (uint64_t)(y < 0 ? -y : y);
        if (ay > 64u * t) continue;
        /* accept with exp(-(|y| - sigma2/t)^2 / (2 sigma2)) = exp(-(|y| t den - num)^2 / (2 num den t^2)) */
        const uint64_t a = ay * t * den, d = a > num ? a - num : num - a;
        if (tlm_bern_exp(r, d * d, 2u * num * den * t * t)) return y;
    }
}

uint64_t tlm_exp_q32(tlm_rand *r)
{
    uint64_t v = 0;
    while (tlm_bern_exp(r, 1, 1) && !r->failed) v++;
    for (;;) {
        const uint64_t k = tlm_rand_u32(r);
        if (tlm_bern_exp(r, k, 1ull << 32) || r->failed) return (v << 32) | k;
    }
}

/* ---- mechanisms ---- */

static void dx_table(tlm_privatizer *p, uint32_t n);

static int is_special(const tlm_model *m, uint32_t id) { return id == 0 || id == m->bos_id || id == m->eos_id; }

tlm_status tlm_privatizer_init(tlm_privatizer *p, const tlm_model *m, tlm_mech mech, float epsilon, tlm_error *err)
{
    tlm_error_clear(err);
    memset(p, 0, sizeof *p);
    if (!m) return tlm_fail(err, TLM_ERR_ARG, "no model");
    if (mech != TLM_MECH_DX && mech != TLM_MECH_RR && mech != TLM_MECH_NONE)
        return tlm_fail(err, TLM_ERR_ARG, "unknown mechanism");
    if (!(epsilon > 0.0f)) return tlm_fail(err, TLM_ERR_ARG, "epsilon must be positive");
    p->model = m;
    p->mech = mech;
    p->epsilon = epsilon;
    uint32_t k = 0;
    for (uint32_t id = 0; id < m->hp.vocab_size; id++) k += !is_special(m, id);
    p->k = k;
    if (k < 2) return tlm_fail(err, TLM_ERR_ARG, "the vocabulary has fewer than 2 ordinary tokens");
    if (mech == TLM_MECH_NONE || isinf(epsilon)) {
        p->epsilon_token = mech == TLM_MECH_NONE ? 0.0f : epsilon;
        return TLM_OK;
    }
    if (mech == TLM_MECH_RR) {
        if (epsilon > 25.0f) return tlm_fail(err, TLM_ERR_ARG, "randomized response takes epsilon up to 25 (or inf)");
        /* odds keep : other = R : 1 with R a dyadic rational just below
         * e^epsilon (expf is accurate to a few ulp; 2^-20 of margin), so the
         * released epsilon ln R never exceeds the requested one */
        const double e = (double)expf(epsilon) * (1.0 - 1.0 / 1048576.0);
        p->rr_other = 1ull << 20;
        p->rr_keep = (uint64_t)(e * (double)p->rr_other);
        if (p->rr_keep < p->rr_other) p->rr_keep = p->rr_other; /* epsilon tiny: uniform */
        p->epsilon_token = logf((float)((double)p->rr_keep / (double)p->rr_other));
        if (p->epsilon_token > epsilon) p->epsilon_token = epsilon;
        return TLM_OK;
    }
    tlm_tensor e;
    tlm_model_tensor(m, TLM_ROLE_TOK_EMBED, 0, &e);
    if (!tlm_wtype_get(e.wtype)->row_to_f32) return tlm_fail(err, TLM_ERR_UNSUPPORTED, "embedding type not readable");
    p->epsilon_token = epsilon;
    dx_table(p, m->hp.dim);
    return TLM_OK;
}

int tlm_priv_in_domain(const tlm_privatizer *p, uint32_t id)
{
    return id < p->model->hp.vocab_size && !is_special(p->model, id);
}

static uint32_t rr_token(const tlm_privatizer *p, tlm_rand *r, uint32_t id)
{
    const uint64_t total = p->rr_keep + (uint64_t)(p->k - 1u) * p->rr_other;
    if (tlm_rand_below(r, total) < p->rr_keep) return id;
    /* uniform over the other k - 1 ordinary tokens: the j-th id that is not
     * excluded (unk, BOS, EOS, the input), found by stepping over the
     * excluded ids in ascending order */
    uint32_t ex[4] = {0, p->model->bos_id, p->model->eos_id, id};
    for (int a = 1; a < 4; a++)
        for (int b = a; b > 0 && ex[b - 1] > ex[b]; b--) {
            const uint32_t t = ex[b];
            ex[b] = ex[b - 1];
            ex[b - 1] = t;
        }
    uint32_t t = (uint32_t)tlm_rand_below(r, p->k - 1u);
    for (int a = 0; a < 4; a++)
        if ((a == 0 || ex[a] != ex[a - 1]) && t >= ex[a]) t++;
    return t;
}

/* n (<= 8) buffered bytes as a little-endian integer */
static inline uint64_t rand_bytes(tlm_rand *r, uint32_t n)
{
    uint8_t b[8];
    const uint8_t *p = b;
    if (r->avail >= n) { /* the common case: straight from the buffer */
        p = r->buf + sizeof r->buf - r->avail;
        r->avail -= n;
    } else {
        take(r, b, n);
    }
    uint64_t v = 0;
    for (uint32_t i = n; i-- > 0;) v = v << 8 | p[i];
    return v;
}

/* One discrete Gaussian of sigma 16 from its cumulative table, as the index
 * of the first entry above a uniform 64-bit u, with u's bits drawn lazily:
 * its top 16 bits first. A direct table on the top 14 gives the value
 * outright for the 99.3% of cells that hold no table entry; in the others a
 * guide narrows the search, and only when an entry shares all 16 top bits
 * (about 0.4% of draws) are the other 48 drawn and compared. The answer is
 * the full 64-bit draw's, from a quarter of the random bytes. Each
 * probability within 2^-64 of exact. */
static inline int32_t dgauss16_top(uint32_t h, tlm_rand *r) /* h: u's top 16 bits, already drawn */
{
    const int32_t v = tlm_dgauss16_direct[h >> (16u - TLM_DGAUSS16_DIRECT_BITS)];
    if (v != -128) return v;
    const uint32_t b = h >> (16u - TLM_DGAUSS16_GUIDE_BITS);
    uint32_t lo = tlm_dgauss16_guide[b];
    const uint32_t hi = tlm_dgauss16_guide[b + 1u]; /* the first entry > u is in [lo, hi] */
    while (lo < hi && (uint32_t)(tlm_dgauss16_cdt[lo] >> 48) < h) lo++;
    /* entries below lo are <= u whatever the low bits; one above whose top
     * bits exceed h is > u; one with equal top bits needs them */
    if (lo < hi && (uint32_t)(tlm_dgauss16_cdt[lo] >> 48) == h) {
        const uint64_t u = (uint64_t)h << 48 | rand_bytes(r, 6u);
        while (lo < hi && tlm_dgauss16_cdt[lo] <= u) lo++;
    }
    return (int32_t)lo - (int32_t)TLM_DGAUSS16_HALF;
}

int32_t tlm_dgauss16(tlm_rand *r) { return dgauss16_top((uint32_t)rand_bytes(r, 2u), r); }

/* ---- double-precision exp and log for the radius table (the core links
 * no double libm; both within a few ulp on the ranges used here) ---- */

static double bits_to_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;

/* e^x for x <= 709; 0 below -708. Degree-15 Taylor polynomial on
 * |t| <= ln2/2 (truncation below 1e-20), evaluated in Estrin's scheme (pairs,
 * then powers t^2, t^4, t^8) for a short dependency chain. */
static double dp_exp(double x)
{
    if (x < -708.0) return 0.0;
    const double kd = x * 1.44269504088896338700 + (x < 0 ? -0.5 : 0.5);
    const int64_t k = (int64_t)kd;
    const double t = (x - (double)k * LN2_HI) - (double)k * LN2_LO; /* |t| <= ln2 / 2 */
    static const double c[16] = {1.0,
                                 1.0,
                                 1.0 / 2.0,
                                 1.0 / 6.0,
                                 1.0 / 24.0,
                                 1.0 / 120.0,
                                 1.0 / 720.0,
                                 1.0 / 5040.0,
                                 1.0 / 40320.0,
                                 1.0 / 362880.0,
                                 1.0 / 3628800.0,
                                 1.0 / 39916800.0,
                                 1.0 / 479001600.0,
                                 1.0 / 6227020800.0,
                                 1.0 / 87178291200.0,
                                 1.0 / 1307674368000.0};
    const double t2 = t * t, t4 = t2 * t2, t8 = t4 * t4;
    double p[8];
    for (int i = 0; i < 8; i++) p[i] = c[2 * i] + c[2 * i + 1] * t;
    const double q0 = p[0] + p[1] * t2, q1 = p[2] + p[3] * t2, q2 = p[4] + p[5] * t2, q3 = p[6] + p[7] * t2;
    const double e = (q0 + q1 * t4) + (q2 + q3 * t4) * t8;
    return e * bits_to_double((uint64_t)(k + 1023) << 52);
}

/* ln x for a finite x > 0 (normal): e ln2 + 2 atanh(s), s = (m-1)/(m+1),
 * the series in s^2 to s^26 (|s| <= 0.1716: truncation below 1e-21) in
 * Estrin's scheme. */
static double dp_log(double x)
{
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    int64_t e = (int64_t)((b >> 52) & 0x7FFu) - 1023;
    double m = bits_to_double((b & 0xFFFFFFFFFFFFFull) | 0x3FF0000000000000ull); /* [1, 2) */
    if (m > 1.41421356237309504880) {
        m *= 0.5;
        e++;
    }
    const double s = (m - 1.0) / (m + 1.0), s2 = s * s, s4 = s2 * s2, s8 = s4 * s4;
    static const double c[16] = {1.0,        1.0 / 3.0,  1.0 / 5.0,  1.0 / 7.0,  1.0 / 9.0,  1.0 / 11.0,
                                 1.0 / 13.0, 1.0 / 15.0, 1.0 / 17.0, 1.0 / 19.0, 1.0 / 21.0, 1.0 / 23.0,
                                 1.0 / 25.0, 1.0 / 27.0, 0.0,        0.0};
    double p[8];
    for (int i = 0; i < 8; i++) p[i] = c[2 * i] + c[2 * i + 1] * s2;
    const double q0 = p[0] + p[1] * s4, q1 = p[2] + p[3] * s4, q2 = p[4] + p[5] * s4, q3 = p[6] + p[7] * s4;
    const double sum = (q0 + q1 * s8) + (q2 + q3 * s8) * (s8 * s8);
    return (double)e * LN2_HI + ((double)e * LN2_LO + 2.0 * s * sum);
}

/* log of the Gamma(n1 + 1, 1) density up to its constant: n1 ln x - x. */
static double gamma_logf(double n1, double x) { return n1 > 0.0 ? n1 * dp_log(x) - x : -x; }

/* The radius table: cells of equal width over [0, n + 14 sqrt(n) + 45)
 * (the Gamma(n) tail beyond is below 1e-25 for every n), each cell's mass
 * by 8-point Gauss-Legendre on the density scaled by its mode. */
static void dx_table(tlm_privatizer *p, uint32_t n)
{
    static const double gx[4] = {0.18343464249564981, 0.52553240991632899, 0.79666647741362684, 0.96028985649753629};
    static const double gw[4] = {0.36268378337836199, 0.31370664587788738, 0.22238103445337445, 0.10122853629037618};
    const double n1 = (double)n - 1.0, top = (double)n + 14.0 * (double)sqrtf((float)n) + 45.0;
    const double w = top / (double)TLM_DX_CELLS, lmode = n1 > 0.0 ? gamma_logf(n1, n1) : 0.0;
    p->dx_cell = w;
    /* two passes (the total, then the running sums) instead of an array of
     * masses: this runs on the device's stack */
    double total = 0.0, cum = 0.0;
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t k = 0; k < TLM_DX_CELLS; k++) {
            const double c = ((double)k + 0.5) * w, h = 0.5 * w;
            double m = 0.0;
            for (int i = 0; i < 4; i++)
                m += gw[i] * (dp_exp(gamma_logf(n1, c - h * gx[i]) - lmode) + dp_exp(gamma_logf(n1, c + h * gx[i]) - lmode));
            if (pass == 0) {
                total += m;
            } else if (k + 1u < TLM_DX_CELLS) {
                cum += m;
                const double f = cum / total * 18446744073709551616.0;
                p->dx_cdt[k] = f >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)f;
            }
        }
    /* the squeeze: the log-concave density's minimum over [a, b] is at an
     * end; relative to the maximum (at n1 clamped into the cell), rounded
     * down by a margin far above the few-ulp error of the ratios compared */
    for (uint32_t k = 0; k < TLM_DX_CELLS; k++) {
        const double a = (double)k * w, b = a + w;
        double q = 0.0;
        if (a > 0.0) {
            const double peak = n1 < a ? a : (n1 > b ? b : n1), lp = gamma_logf(n1, peak);
            const double fa = gamma_logf(n1, a), fb = gamma_logf(n1, b);
            q = dp_exp((fa < fb ? fa : fb) - lp) * (1.0 - 1e-9);
        }
        p->dx_sq[k] = q > 0.0 ? (uint32_t)(q * 4294967296.0 > 4294967295.0 ? 4294967295.0 : q * 4294967296.0) : 0u;
    }
}

/* Gamma(n, 1) on the grid of 2^32 points per cell: the cell from the
 * table, the point uniform in it, kept with probability f(x) / max f over
 * the cell (a Bernoulli of the double-precision ratio, 53 bits). */
static double dx_radius(const tlm_privatizer *p, tlm_rand *r, uint32_t n)
{
    const double n1 = (double)n - 1.0, w = p->dx_cell;
    const uint64_t u = tlm_rand_u64(r);
    uint32_t lo = 0; /* first k with cdt[k] > u (the last cell's is 2^64): entries <= u, counted without branches */
    for (uint32_t step = (TLM_DX_CELLS) / 2u; step; step /= 2u) lo += p->dx_cdt[lo + step - 1u] <= u ? step : 0u;
    /* the point: rejection inside the chosen cell (redrawing the cell after
     * a rejection would weight cells by their acceptance rates) */
    const double a = (double)lo * w, b = a + w;
    const double peak = n1 < a ? a : (n1 > b ? b : n1); /* the log-concave density's maximum on [a, b] */
    double lpeak = 0.0;
    int have_peak = 0;
    for (;;) {
        const double x = a + ((double)tlm_rand_u32(r) + 0.5) * (w / 4294967296.0);
        const uint64_t v = tlm_rand_u64(r);
        /* kept below the squeeze: then v >> 11 < accept 2^53 whatever the
         * density at x, the same decision as the full test */
        if ((uint32_t)(v >> 32) < p->dx_sq[lo] || r->failed) return x;
        if (!have_peak) {
            lpeak = gamma_logf(n1, peak);
            have_peak = 1;
        }
        const double accept = dp_exp(gamma_logf(n1, x) - lpeak);
        if ((double)(v >> 11) < accept * 9007199254740992.0) return x;
    }
}

void tlm_dx_noise(const tlm_privatizer *p, tlm_rand *r, float *z)
{
    const uint32_t dim = p->model->hp.dim;
    /* direction: a discrete Gaussian vector of sigma 16, far above the
     * integer lattice's smoothing parameter, so its direction is uniform to
     * within far less than 1e-30 */
    uint64_t n2 = 0; /* exact: integers below 2^8 squared, at most 4096 of them */
    for (;;) {
        for (uint32_t i0 = 0; i0 < dim; i0 += 32u) { /* the top 16 bits of 32 draws at once */
            const uint32_t cnt = dim - i0 < 32u ? dim - i0 : 32u;
            uint8_t hb[64]; /* a copy: a rare low-bits draw may refill the buffer under it */
            if (cnt == 32u && r->avail >= 64u) { /* a fixed-size copy (vector moves) */
                memcpy(hb, r->buf + sizeof r->buf - r->avail, 64);
                r->avail -= 64u;
            } else {
                take(r, hb, 2u * cnt);
            }
            for (uint32_t i = 0; i < cnt; i++) {
                const int32_t g = dgauss16_top((uint32_t)hb[2u * i] | (uint32_t)hb[2u * i + 1u] << 8, r);
                z[i0 + i] = (float)g;
                n2 += (uint64_t)((int64_t)g * g);
            }
        }
        if (n2 > 0 || r->failed) break;
    }
    const double radius = dx_radius(p, r, dim) / (double)p->epsilon;
    const double f = n2 > 0 ? radius / (double)sqrtf((float)n2) : 0.0;
    for (uint32_t i = 0; i < dim; i++) z[i] = (float)(f * (double)z[i]);
}

/* fp32 score of token j for the noisy vector z: |e_j|^2 - 2 e_j.z, with
 * four partial sums per quantity so that the loop pipelines. The search
 * ranks tokens by exactly this value, with or without the index. (An
 * eight-lane vector version measured slower: its shuffles and reductions
 * cost more than the 64 sums.) */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static float dx_score(const float *ej, const float *z, uint32_t dim)
{
    float d0 = 0, d1 = 0, d2 = 0, d3 = 0, n0 = 0, n1 = 0, n2 = 0, n3 = 0;
    uint32_t i = 0;
    for (; i + 4u <= dim; i += 4u) {
        d0 += ej[i] * z[i];
        d1 += ej[i + 1] * z[i + 1];
        d2 += ej[i + 2] * z[i + 2];
        d3 += ej[i + 3] * z[i + 3];
        n0 += ej[i] * ej[i];
        n1 += ej[i + 1] * ej[i + 1];
        n2 += ej[i + 2] * ej[i + 2];
        n3 += ej[i + 3] * ej[i + 3];
    }
    for (; i < dim; i++) {
        d0 += ej[i] * z[i];
        n0 += ej[i] * ej[i];
    }
    return ((n0 + n1) + (n2 + n3)) - 2.0f * ((d0 + d1) + (d2 + d3));
}

/* ---- the search index ----
 * Per token j: q_j = round(e_j / s_j) with |q| <= 127 (s_j = max|e_j| / 127),
 * stored biased as bytes q_j + 128, and floats s_j,
 * |e_j|^2, |e_j - s_j q_j|_2, |e_j|_2 and a mask (+inf for the special
 * tokens, 0 for the others) (arrays of V each). For a query z
 * quantized as u = round(z / t) with |u| <= Q (Q = 63 on x86, where
 * vpmaddubsw multiplies the bytes by signed bytes and adds pairs without
 * reaching int16 saturation, 255 * 63 * 2 < 2^15; elsewhere as large as
 * int16 and an int32 sum allow), q_j.u = (q_j + 128).u - 128 sum(u), and by
 * Cauchy-Schwarz,
 *   |e_j.z - s_j t (q_j.u)| <= |e_j|_2 |z - t u|_2 + t |u|_2 |e_j - s_j q_j|_2 = B_j,
 * so the fp32 score lies within a_j +- (2 B_j + r_j), a_j = |e_j|^2 -
 * 2 s_j t (q_j.u), r_j a generous bound on fp32 rounding. Any token whose
 * interval starts above the smallest interval end cannot be the fp32
 * argmin; the rest are scored in fp32 in id order, as the plain search
 * does, so both return the same token (whatever Q a platform uses). Byte
 * rows keep the table at 32 KB for stories260K (an int16 one streamed 64 KB
 * from L2 per query) and take 64 multiply-adds per three x86 instructions;
 * the wider intervals let through a few more tokens. */
typedef struct dx_index_layout {
    uint32_t dimp, q;       /* row stride (dim rounded up to 16), the query's quantization limit */
    uint32_t vp;            /* rows rounded up to 8 */
    size_t stats_off, build_off, bytes;
} dx_index_layout;

static dx_index_layout dx_layout(const tlm_privatizer *p)
{
    dx_index_layout l;
    const uint32_t dim = p->model->hp.dim, V = p->model->hp.vocab_size;
    l.dimp = (dim + 15u) & ~15u;
#if defined(__AVX2__)
    uint64_t q = 63u;
#else
    uint64_t q = 2147483647ull / (255ull * l.dimp); /* |(q_j + 128).u| <= 255 Q dimp < 2^31 */
    if (q > 32767u) q = 32767u;
#endif
    l.q = (uint32_t)q;
    l.vp = (V + 7u) & ~7u; /* rows padded to whole blocks of 8 */
    l.stats_off = (size_t)l.vp * l.dimp; /* byte rows */
    l.build_off = l.stats_off + (size_t)V * 5u * sizeof(float);
    l.bytes = l.build_off + (size_t)dim * sizeof(float) + (size_t)l.dimp * sizeof(int16_t); /* + room to build it */
    return l;
}

size_t tlm_privatizer_index_bytes(const tlm_privatizer *p)
{
    if (p->mech != TLM_MECH_DX || isinf(p->epsilon)) return 0;
    return dx_layout(p).bytes;
}

static void quantize_i16(int16_t *q, const float *x, uint32_t n, float mul, uint32_t limit)
{
    for (uint32_t i = 0; i < n; i++) {
        float v = x[i] * mul;
        v += v < 0.0f ? -0.5f : 0.5f;
        int32_t k = (int32_t)v;
        if (k > (int32_t)limit) k = (int32_t)limit;
        if (k < -(int32_t)limit) k = -(int32_t)limit;
        q[i] = (int16_t)k;
    }
}

void tlm_privatizer_set_index(tlm_privatizer *p, void *mem)
{
    p->dx_index = NULL;
    if (!mem || !tlm_privatizer_index_bytes(p)) return;
    const tlm_model *m = p->model;
    const uint32_t dim = m->hp.dim, V = m->hp.vocab_size;
    const dx_index_layout l = dx_layout(p);
    uint8_t *rows = mem;
    memset(rows, 128, l.stats_off); /* biased zeros in the padding */
    float *st = (float *)(void *)((uint8_t *)mem + l.stats_off);
    tlm_tensor e;
    tlm_model_tensor(m, TLM_ROLE_TOK_EMBED, 0, &e);
    const tlm_wtype_traits *tr = tlm_wtype_get(e.wtype);
    float *row = (float *)(void *)((uint8_t *)mem + l.build_off); /* one row at a time, in the index's own room */
    int16_t *qj = (int16_t *)(void *)(row + dim);
    for (uint32_t j = 0; j < V; j++) {
        tr->row_to_f32(row, &e, j);
        memset(qj, 0, l.dimp * sizeof *qj);
        const float amax = tlm_absmax_f32(row, dim);
        quantize_i16(qj, row, dim, amax > 0.0f ? 127.0f / amax : 0.0f, 127u);
        /* rows in blocks of 8; per group g of four columns, 32 bytes: row r
         * of the block at bytes 4r..4r+3 (columns 4g..4g+3, biased) */
        uint8_t *blk = rows + (size_t)(j / 8u) * 8u * l.dimp;
        for (uint32_t i = 0; i < l.dimp; i++) blk[(i / 4u) * 32u + (j % 8u) * 4u + i % 4u] = (uint8_t)(qj[i] + 128);
        const float sj = amax > 0.0f ? amax / 127.0f : 0.0f;
        double n2 = 0, d2 = 0, q2 = 0;
        for (uint32_t i = 0; i < dim; i++) {
            const double d = (double)row[i] - (double)sj * qj[i];
            n2 += (double)row[i] * row[i];
            d2 += d * d;
            q2 += (double)qj[i] * qj[i];
        }
        st[j] = sj;
        st[V + j] = (float)n2;
        /* |e_j - s_j q_j|_2 and |e_j|_2, rounded up: they only widen bounds */
        st[2u * V + j] = sqrtf((float)d2) * 1.001f + 1e-6f * sj * sqrtf((float)q2);
        st[3u * V + j] = sqrtf((float)n2) * 1.001f;
        st[4u * V + j] = is_special(m, j) ? INFINITY : 0.0f; /* pushes unk, BOS and EOS past every bound */
    }
    p->dx_index = mem;
}

enum { DX_BLOCK = 512 };

/* Lower ends lo_j = a_j - w_j of the fp32 score intervals of tokens j0 ..
 * j0 + n - 1 into buf (+inf for the specials and for the padding up to
 * a multiple of 8), and with mins the eight running minima of the upper
 * ends lo_j + 2 w_j (within rounding of a_j + w_j; r_j's margin covers it).
 * buf first holds the integer dot products (as floats, rounded as the
 * interval's centre rounds them anyway): one 2 KB buffer on a device's
 * stack. The hot loops; the compiler vectorizes the float ones. */
static void dx_block(float *restrict buf, const uint8_t *restrict rows, const float *restrict st, uint32_t V,
                     uint32_t j0, uint32_t n, uint32_t dimp, const int16_t *restrict u, int32_t bias, const float k[4],
                     float *mins)
{
#if defined(__AVX2__)
    /* per group of four columns: vpmaddubsw (biased row bytes times the
     * query's signed bytes, pairs added in int16) then vpmaddwd by ones: the
     * eight rows' four-column sums in int32. u holds the query as bytes. */
    const int8_t *ub = (const int8_t *)(const void *)u;
    const __m256i ones = _mm256_set1_epi16(1), vb = _mm256_set1_epi32(bias);
    uint32_t b = 0;
    for (; b + 32u <= n; b += 32u) { /* thirty-two rows per broadcast */
        const uint8_t *b0 = rows + (size_t)(j0 + b) * dimp;
        __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        for (uint32_t g = 0; g < dimp / 4u; g++) {
            int32_t q4;
            memcpy(&q4, ub + 4u * g, 4);
            const __m256i uq = _mm256_set1_epi32(q4);
            for (uint32_t a = 0; a < 4u; a++) {
                const __m256i rw = _mm256_loadu_si256((const __m256i *)(const void *)(b0 + a * 8u * dimp + g * 32u));
                acc[a] = _mm256_add_epi32(acc[a], _mm256_madd_epi16(_mm256_maddubs_epi16(rw, uq), ones));
            }
        }
        for (uint32_t a = 0; a < 4u; a++) _mm256_storeu_ps(buf + b + 8u * a, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[a], vb)));
    }
    for (; b + 16u <= n; b += 16u) { /* sixteen rows per broadcast */
        const uint8_t *b0 = rows + (size_t)(j0 + b) * dimp, *b1 = b0 + 8u * (size_t)dimp;
        __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
        for (uint32_t g = 0; g < dimp / 4u; g++) {
            int32_t q4;
            memcpy(&q4, ub + 4u * g, 4);
            const __m256i uq = _mm256_set1_epi32(q4);
            const __m256i p0 = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(b0 + g * 32u)), uq);
            const __m256i p1 = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(b1 + g * 32u)), uq);
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p0, ones));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(p1, ones));
        }
        _mm256_storeu_ps(buf + b, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc0, vb)));
        _mm256_storeu_ps(buf + b + 8u, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc1, vb)));
    }
    for (; b < n; b += 8u) { /* a last block of eight */
        const uint8_t *blk = rows + (size_t)(j0 + b) * dimp;
        __m256i acc = _mm256_setzero_si256();
        for (uint32_t g = 0; g < dimp / 4u; g++) {
            int32_t q4;
            memcpy(&q4, ub + 4u * g, 4);
            const __m256i p = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(blk + g * 32u)),
                                                   _mm256_set1_epi32(q4));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
        }
        _mm256_storeu_ps(buf + b, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, vb)));
    }
#elif defined(__ARM_FEATURE_DSP)
    /* a row's word of four biased bytes: UXTB16 gives columns (0, 2) and,
     * rotated by 8, (1, 3); u holds the query's int16 pairs in that order */
    for (uint32_t b = 0; b < n; b += 8u) {
        const uint8_t *blk = rows + (size_t)(j0 + b) * dimp;
        for (uint32_t half = 0; half < 8u; half += 4u) { /* four accumulators stay in registers */
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            for (uint32_t g = 0; g < dimp / 4u; g++) {
                int32_t u02, u13;
                uint32_t w[4];
                memcpy(&u02, u + 4u * g, 4);
                memcpy(&u13, u + 4u * g + 2u, 4);
                memcpy(w, blk + g * 32u + half * 4u, 16);
                a0 = __smlad(__uxtb16(w[0]), u02, __smlad(__uxtb16((w[0] >> 8) | (w[0] << 24)), u13, a0));
                a1 = __smlad(__uxtb16(w[1]), u02, __smlad(__uxtb16((w[1] >> 8) | (w[1] << 24)), u13, a1));
                a2 = __smlad(__uxtb16(w[2]), u02, __smlad(__uxtb16((w[2] >> 8) | (w[2] << 24)), u13, a2));
                a3 = __smlad(__uxtb16(w[3]), u02, __smlad(__uxtb16((w[3] >> 8) | (w[3] << 24)), u13, a3));
            }
            buf[b + half] = (float)(a0 - bias);
            buf[b + half + 1u] = (float)(a1 - bias);
            buf[b + half + 2u] = (float)(a2 - bias);
            buf[b + half + 3u] = (float)(a3 - bias);
        }
    }
#else
    for (uint32_t b = 0; b < n; b += 8u) { /* eight rows at a time, four columns per step */
        const uint8_t *blk = rows + (size_t)(j0 + b) * dimp;
        int32_t acc[8] = {0};
        for (uint32_t g = 0; g < dimp / 4u; g++) {
            const uint8_t *q = blk + g * 32u;
            const int16_t *ug = u + 4u * g;
            for (uint32_t r = 0; r < 8u; r++)
                acc[r] += (int32_t)q[4u * r] * ug[0] + (int32_t)q[4u * r + 1u] * ug[1] +
                          (int32_t)q[4u * r + 2u] * ug[2] + (int32_t)q[4u * r + 3u] * ug[3];
        }
        for (uint32_t r = 0; r < 8u; r++) buf[b + r] = (float)(acc[r] - bias);
    }
#endif
    const float *s = st + j0, *n2 = st + V + j0, *dl2 = st + 2u * V + j0, *l2 = st + 3u * V + j0, *mask = st + 4u * V + j0;
    const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3];
    uint32_t j = 0;
#if defined(__AVX2__)
    if (mins) { /* one pass: the lower ends, and the minima of the upper ends lo + 2 w */
        __m256 mv = _mm256_loadu_ps(mins);
        const __m256 v0 = _mm256_set1_ps(k0), v1 = _mm256_set1_ps(k1), v2 = _mm256_set1_ps(k2),
                     v3 = _mm256_set1_ps(k3), tiny = _mm256_set1_ps(1e-30f);
        for (; j + 8u <= n; j += 8u) { /* no fused multiply-adds: the same roundings as the scalar code */
            const __m256 vn2 = _mm256_loadu_ps(n2 + j);
            const __m256 a = _mm256_sub_ps(vn2, _mm256_mul_ps(_mm256_mul_ps(v0, _mm256_loadu_ps(s + j)), _mm256_loadu_ps(buf + j)));
            const __m256 w = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(v1, _mm256_loadu_ps(l2 + j)),
                                                                       _mm256_mul_ps(v2, _mm256_loadu_ps(dl2 + j))),
                                                         _mm256_mul_ps(v3, vn2)),
                                           tiny);
            const __m256 lo = _mm256_add_ps(_mm256_sub_ps(a, w), _mm256_loadu_ps(mask + j));
            _mm256_storeu_ps(buf + j, lo);
            mv = _mm256_min_ps(mv, _mm256_add_ps(lo, _mm256_add_ps(w, w)));
        }
        _mm256_storeu_ps(mins, mv);
    }
#endif
    const uint32_t done = j;
    for (; j < n; j++) {
        const float a = n2[j] - k0 * s[j] * buf[j];
        const float w = k1 * l2[j] + k2 * dl2[j] + k3 * n2[j] + 1e-30f;
        buf[j] = (a - w) + mask[j];
    }
    for (j = n; j % 8u; j++) buf[j] = INFINITY;
    if (!mins) return;
    for (j = done; j + 8u <= n; j += 8u) /* eight running minima */
        for (uint32_t c = 0; c < 8u; c++) {
            const float hi = buf[j + c] + 2.0f * (k1 * l2[j + c] + k2 * dl2[j + c] + k3 * n2[j + c] + 1e-30f);
            mins[c] = hi < mins[c] ? hi : mins[c];
        }
    for (; j < n; j++) {
        const float hi = buf[j] + 2.0f * (k1 * l2[j] + k2 * dl2[j] + k3 * n2[j] + 1e-30f);
        mins[0] = hi < mins[0] ? hi : mins[0];
    }
}

/* token j's fp32 score, from the fp32 table in place or a decoded row */
static float dx_row_score(const float *frows, const tlm_wtype_traits *tr, const tlm_tensor *e, float *row, uint32_t j,
                          const float *z, uint32_t dim)
{
    if (frows) return dx_score(frows + (size_t)j * dim, z, dim);
    tr->row_to_f32(row, e, j);
    return dx_score(row, z, dim);
}

#if defined(__GNUC__)
__attribute__((noinline)) /* its block buffers stay off the stack of index-less callers */
#endif
static uint32_t dx_search_indexed(const tlm_privatizer *p, const float *z, float *scratch, uint32_t fallback)
{
    const tlm_model *m = p->model;
    const uint32_t dim = m->hp.dim, V = m->hp.vocab_size;
    const dx_index_layout l = dx_layout(p);
    const uint8_t *rows = p->dx_index;
    const float *st = (const float *)(const void *)((const uint8_t *)p->dx_index + l.stats_off);
    int16_t *u = (int16_t *)(void *)scratch; /* dimp int16, then the packed copy, in dim + 16 floats */
    float zm[8] = {0, 0, 0, 0, 0, 0, 0, 0}; /* max |z_i| in eight lanes (vectorizes) */
    uint32_t i = 0;
    for (; i + 8u <= dim; i += 8u)
        for (uint32_t c = 0; c < 8u; c++) {
            const float v = z[i + c] < 0.0f ? -z[i + c] : z[i + c];
            zm[c] = v > zm[c] ? v : zm[c];
        }
    for (; i < dim; i++) zm[0] = (z[i] < 0.0f ? -z[i] : z[i]) > zm[0] ? (z[i] < 0.0f ? -z[i] : z[i]) : zm[0];
    float zmax = zm[0];
    for (uint32_t c = 1; c < 8u; c++) zmax = zm[c] > zmax ? zm[c] : zmax;
    if (!(zmax > 0.0f) || !(zmax < 1e30f)) return UINT32_MAX; /* degenerate query: the plain search */
    const float t = zmax / (float)l.q;
    /* the query u, in the form dx_block reads (after u in the same scratch:
     * 2 dimp int16 fit in dim + 16 floats), and its sums */
    int16_t *uq = u + l.dimp;
    int64_t u2 = 0;
    int32_t usum = 0; /* |sum u| <= Q dim: the bias of the byte rows, 128 sum(u), fits int32 */
    float z2 = 0.0f, h2 = 0.0f;
#if defined(__AVX2__)
    { /* one pass, eight lanes: u = round(z / t) (to nearest even; any rounding
       * works, the bounds use the actual residual), as bytes, |u| <= 63 */
        int8_t *ub = (int8_t *)(void *)uq;
        memset(ub, 0, l.dimp);
        const __m256 vmul = _mm256_set1_ps((float)l.q / zmax), vt = _mm256_set1_ps(t), vq = _mm256_set1_ps((float)l.q);
        __m256i vs = _mm256_setzero_si256(), vs2 = _mm256_setzero_si256();
        __m256 vz2 = _mm256_setzero_ps(), vh2 = _mm256_setzero_ps();
        for (i = 0; i + 8u <= dim; i += 8u) {
            const __m256 x = _mm256_loadu_ps(z + i);
            __m256 r = _mm256_round_ps(_mm256_mul_ps(x, vmul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            r = _mm256_min_ps(_mm256_max_ps(r, _mm256_sub_ps(_mm256_setzero_ps(), vq)), vq);
            const __m256i ui = _mm256_cvttps_epi32(r);
            vs = _mm256_add_epi32(vs, ui);
            vs2 = _mm256_add_epi32(vs2, _mm256_mullo_epi32(ui, ui));
            const __m256 h = _mm256_sub_ps(x, _mm256_mul_ps(vt, r)); /* the query's own rounding residual */
            vz2 = _mm256_add_ps(vz2, _mm256_mul_ps(x, x));
            vh2 = _mm256_add_ps(vh2, _mm256_mul_ps(h, h));
            const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(ui), _mm256_extracti128_si256(ui, 1));
            _mm_storel_epi64((__m128i *)(void *)(ub + i), _mm_packs_epi16(w, w));
        }
        int32_t s1[8], s2[8];
        float f1[8], f2[8];
        _mm256_storeu_si256((__m256i *)(void *)s1, vs);
        _mm256_storeu_si256((__m256i *)(void *)s2, vs2);
        _mm256_storeu_ps(f1, vz2);
        _mm256_storeu_ps(f2, vh2);
        for (uint32_t c = 0; c < 8u; c++) {
            usum += s1[c];
            u2 += s2[c];
            z2 += f1[c];
            h2 += f2[c];
        }
        for (; i < dim; i++) {
            int16_t q1;
            quantize_i16(&q1, z + i, 1, (float)l.q / zmax, l.q);
            const float h = z[i] - t * (float)q1;
            ub[i] = (int8_t)q1;
            usum += q1;
            u2 += (int32_t)q1 * q1;
            z2 += z[i] * z[i];
            h2 += h * h;
        }
    }
#else
    memset(u, 0, l.dimp * sizeof *u);
    quantize_i16(u, z, dim, (float)l.q / zmax, l.q);
    for (i = 0; i < dim; i++) {
        usum += u[i];
        u2 += (int32_t)u[i] * u[i];
    }
#if defined(__ARM_FEATURE_DSP)
    for (i = 0; i < l.dimp; i += 4u) { /* pairs of columns (0, 2), (1, 3) */
        uq[i] = u[i];
        uq[i + 1u] = u[i + 2u];
        uq[i + 2u] = u[i + 1u];
        uq[i + 3u] = u[i + 3u];
    }
#else
    memcpy(uq, u, l.dimp * sizeof *u);
#endif
    float z2s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, h2s[8] = {0, 0, 0, 0, 0, 0, 0, 0}; /* eight lanes each */
    for (i = 0; i + 8u <= dim; i += 8u)
        for (uint32_t c = 0; c < 8u; c++) {
            const float h = z[i + c] - t * (float)u[i + c]; /* the query's own rounding residual */
            z2s[c] += z[i + c] * z[i + c];
            h2s[c] += h * h;
        }
    for (; i < dim; i++) {
        const float h = z[i] - t * (float)u[i];
        z2s[0] += z[i] * z[i];
        h2s[0] += h * h;
    }
    for (uint32_t c = 0; c < 8u; c++) {
        z2 += z2s[c];
        h2 += h2s[c];
    }
#endif
    const int32_t bias = 128 * usum;
    const float ul2 = sqrtf((float)u2) * 1.001f, zl2 = sqrtf(z2) * 1.001f;
    /* |z - t u|_2, rounded up past the float error of computing it */
    const float hl2 = sqrtf(h2) * 1.001f + 1e-6f * t * ul2;
    /* half-width 2 B_j + r_j = k1 |e_j|_2 + k2 |e_j - s_j q_j|_2 + k3 |e_j|^2
     * with, by Cauchy-Schwarz on e_j.z - s_j t (q_j.u) = e_j.(z - t u) +
     * t (e_j - s_j q_j).u, B_j = |e_j|_2 |z - t u|_2 + t |u|_2 |e_j - s_j q_j|_2,
     * and r_j = rel (|e_j|^2 + 2 |e_j|_2 |z|_2) covering the fp32 rounding of
     * a score (recursive sums in four chains) and of these bounds */
    const float rel = (float)dim * 1.2e-7f + 1e-5f;
    const float k[4] = {2.0f * t, 2.0f * hl2 + 2.0f * rel * zl2, 2.0f * t * ul2, rel};
    float buf[DX_BLOCK];
    float mins[8] = {INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY};
    for (uint32_t j0 = 0; j0 < V; j0 += DX_BLOCK) /* pass 1: the smallest interval end */
        dx_block(buf, rows, st, V, j0, V - j0 < DX_BLOCK ? V - j0 : DX_BLOCK, l.dimp, uq, bias, k, mins);
    float best_hi = mins[0];
    for (uint32_t c = 1; c < 8u; c++) best_hi = mins[c] < best_hi ? mins[c] : best_hi;
    tlm_tensor e;
    tlm_model_tensor(m, TLM_ROLE_TOK_EMBED, 0, &e);
    const tlm_wtype_traits *tr = tlm_wtype_get(e.wtype);
    const float *frows = e.wtype == TLM_WTYPE_F32 ? (const float *)(const void *)e.data : NULL;
    float *row = scratch + dim + 16u;
    uint32_t best = fallback;
    float best_d = INFINITY;
    /* pass 2, last block first (its intervals are still there): the tokens
     * that can still win, then their fp32 scores, lowest interval start
     * first, until the next start is above the best score found (its score
     * can be neither lower nor equal); ties go to the smaller id, as in the
     * plain search. Past CAND candidates, each is scored as it is found. */
    enum { CAND = 64 };
    uint32_t cj[CAND];
    float clo[CAND];
    uint32_t nc = 0;
    const uint32_t last = (V - 1u) / DX_BLOCK * DX_BLOCK;
    for (uint32_t j0 = last;; j0 -= DX_BLOCK) {
        const uint32_t n = V - j0 < DX_BLOCK ? V - j0 : DX_BLOCK;
        if (j0 != last) dx_block(buf, rows, st, V, j0, n, l.dimp, uq, bias, k, NULL);
        for (uint32_t g = 0; g < n; g += 8u) { /* buf is padded with +inf to whole groups of eight */
            uint32_t live; /* bit c: token g + c can still win (specials are +inf here) */
#if defined(__AVX2__)
            const __m256 bh = _mm256_set1_ps(best_hi);
            if (g % 32u == 0 && g + 32u <= n) { /* skip 32 at once: most blocks hold no candidate */
                const __m256 any = _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(_mm256_loadu_ps(buf + g), bh, _CMP_LE_OQ),
                                                             _mm256_cmp_ps(_mm256_loadu_ps(buf + g + 8u), bh, _CMP_LE_OQ)),
                                                _mm256_or_ps(_mm256_cmp_ps(_mm256_loadu_ps(buf + g + 16u), bh, _CMP_LE_OQ),
                                                             _mm256_cmp_ps(_mm256_loadu_ps(buf + g + 24u), bh, _CMP_LE_OQ)));
                if (!_mm256_movemask_ps(any)) {
                    g += 24u;
                    continue;
                }
            }
            live = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(buf + g), bh, _CMP_LE_OQ));
#else
            live = 0;
            for (uint32_t c = 0; c < 8u; c++) live |= (uint32_t)(buf[g + c] <= best_hi) << c;
#endif
            for (; live; live &= live - 1u) {
                uint32_t c = 0;
                while (!((live >> c) & 1u)) c++;
                const uint32_t j = j0 + g + c;
                if (nc < CAND) {
                    cj[nc] = j;
                    clo[nc++] = buf[g + c];
                    continue;
                }
                const float d = dx_row_score(frows, tr, &e, row, j, z, dim);
                if (d < best_d || (d == best_d && j < best)) {
                    best_d = d;
                    best = j;
                }
            }
        }
        if (j0 == 0) break;
    }
    for (;;) { /* the listed candidates, lowest start first */
        uint32_t at = nc;
        for (uint32_t i = 0; i < nc; i++)
            if (at == nc || clo[i] < clo[at]) at = i;
        if (at == nc || clo[at] > best_d) break;
        const uint32_t j = cj[at];
        cj[at] = cj[--nc];
        clo[at] = clo[nc];
        const float d = dx_row_score(frows, tr, &e, row, j, z, dim);
        if (d < best_d || (d == best_d && j < best)) {
            best_d = d;
            best = j;
        }
    }
    return best;
}

static uint32_t dx_token(const tlm_privatizer *p, tlm_rand *r, uint32_t id, float *scratch)
{
    const tlm_model *m = p->model;
    const uint32_t dim = m->hp.dim, V = m->hp.vocab_size;
    tlm_tensor e;
    tlm_model_tensor(m, TLM_ROLE_TOK_EMBED, 0, &e);
    const tlm_wtype_traits *tr = tlm_wtype_get(e.wtype);
    float *z = scratch, *row = scratch + dim;
    tlm_dx_noise(p, r, z);
    tr->row_to_f32(row, &e, id);
    for (uint32_t i = 0; i < dim; i++) z[i] += row[i];
    if (p->dx_index) {
        const uint32_t j = dx_search_indexed(p, z, scratch + dim, id);
        if (j != UINT32_MAX) return j;
    }
    /* the plain search: every ordinary token's fp32 score */
    uint32_t best = id;
    float best_d = INFINITY;
    const float *rows = e.wtype == TLM_WTYPE_F32 ? (const float *)(const void *)e.data : NULL;
    for (uint32_t j = 0; j < V; j++) {
        const float *ej = row;
        if (rows) ej = rows + (size_t)j * dim;
        else tr->row_to_f32(row, &e, j);
        const float d = dx_score(ej, z, dim);
        if (d < best_d && !is_special(m, j)) {
            best_d = d;
            best = j;
        }
    }
    return best;
}

uint32_t tlm_privatize_token(const tlm_privatizer *p, tlm_rand *r, uint32_t id, float *scratch)
{
    if (!tlm_priv_in_domain(p, id) || p->mech == TLM_MECH_NONE || isinf(p->epsilon)) return id;
    return p->mech == TLM_MECH_RR ? rr_token(p, r, id) : dx_token(p, r, id, scratch);
}

tlm_status tlm_privatize_ids(const tlm_privatizer *p, tlm_rand *r, tlm_budget *b, const uint32_t *in, size_t n,
                             uint32_t *out, float *scratch, double *spent, tlm_error *err)
{
    tlm_error_clear(err);
    size_t count = 0;
    for (size_t i = 0; i < n; i++) count += (size_t)tlm_priv_in_domain(p, in[i]);
    const double cost = (double)count * (double)p->epsilon_token;
    if (spent) *spent = 0.0;
    if (b) {
        if (isinf(cost) || b->spent + cost > b->limit)
            return tlm_fail(err, TLM_ERR_BUDGET, "privatizing %llu tokens costs epsilon %.6g; the budget has %.6g of %.6g left",
                            (unsigned long long)count, cost, b->limit - b->spent, b->limit);
        b->spent += cost;
    }
    if (spent) *spent = cost;
    for (size_t i = 0; i < n; i++) out[i] = tlm_privatize_token(p, r, in[i], scratch);
    if (r->failed) {
        memset(out, 0, n * sizeof *out);
        return tlm_fail(err, TLM_ERR_RNG, "the random source failed; nothing was released");
    }
    return TLM_OK;
}

/* ---- redaction ---- */

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_local(char c) { return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'; }
static int is_host(char c) { return is_alnum(c) || c == '.' || c == '-'; }
static int is_phone_sep(char c) { return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '+'; }

/* Length of an e-mail address starting at i (0 if none): local@host.tld */
static size_t email_at(const char *s, size_t n, size_t i)
{
    if (i > 0 && is_local(s[i - 1])) return 0;
    size_t j = i;
    while (j < n && is_local(s[j])) j++;
    if (j == i || j >= n || s[j] != '@') return 0;
    size_t h = j + 1, k = h, dot = 0;
    while (k < n && is_host(s[k])) {
        if (s[k] == '.' && k > h) dot = k;
        k++;
    }
    while (k > h && (s[k - 1] == '.' || s[k - 1] == '-')) k--; /* a sentence's full stop */
    if (!dot || dot + 1 >= k) return 0;
    return k - i;
}

/* Length of a phone-like run at i (7+ digits, separators between), or 0. */
static size_t phone_at(const char *s, size_t n, size_t i)
{
    if (!is_digit(s[i]) && !(s[i] == '+' || s[i] == '(')) return 0;
    size_t j = i, digits = 0, last = i;
    while (j < n && (is_digit(s[j]) || is_phone_sep(s[j]))) {
        if (is_digit(s[j])) {
            digits++;
            last = j + 1;
        } else if (j + 1 < n && is_phone_sep(s[j + 1]) && s[j] == ' ') {
            break; /* two separators with a space: the sentence goes on */
        }
        j++;
    }
    return digits >= 7 ? last - i : 0;
}

static int put(char *out, size_t cap, size_t *o, const char *s, size_t k)
{
    if (*o + k > cap) return 0;
    memcpy(out + *o, s, k);
    *o += k;
    return 1;
}

size_t tlm_redact(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    while (i < n) {
        size_t k;
        if ((k = email_at(s, n, i)) != 0) {
            if (!put(out, cap, &o, "[email]", 7)) return (size_t)-1;
            i += k;
        } else if ((i == 0 || !is_alnum(s[i - 1])) && (k = phone_at(s, n, i)) != 0) {
            if (!put(out, cap, &o, "[phone]", 7)) return (size_t)-1;
            i += k;
        } else if (is_digit(s[i]) && (i == 0 || !is_digit(s[i - 1])) && i + 1 < n && is_digit(s[i + 1])) {
            while (i < n && is_digit(s[i])) i++;
            if (!put(out, cap, &o, "[number]", 8)) return (size_t)-1;
        } else {
            if (!put(out, cap, &o, s + i, 1)) return (size_t)-1;
            i++;
        }
    }
    return o;
}
