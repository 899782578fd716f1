/* Differential privacy on the device: random source, integer samplers,
 * token mechanisms, budget (the d_chi search index is in dx_index.c,
 * redaction in redact.c; see include/tritlm/dp.h and
 * docs/PRIVACY.md). No sampler turns a uniform float into noise: every
 * random decision is a comparison of uniform integers, so the output
 * distributions are exact (up to the stated discretizations). */
#include <math.h>
#include <string.h>

#include "dgauss_cdt.h"
#include "dp_internal.h"
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
    for (uint32_t id = 0; id < m->hp.vocab_size; id++) k += !tlm_dp_is_special(m, id);
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
    return id < p->model->hp.vocab_size && !tlm_dp_is_special(p->model, id);
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
        const uint32_t j = tlm_dx_search_indexed(p, z, scratch + dim, id);
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
        const float d = tlm_dx_score(ej, z, dim);
        if (d < best_d && !tlm_dp_is_special(m, j)) {
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
