/* Differential privacy on the device: random source, integer samplers,
 * token mechanisms, budget, redaction (see include/tritlm/dp.h and
 * docs/PRIVACY.md). No sampler turns a uniform float into noise: every
 * random decision is a comparison of uniform integers, so the output
 * distributions are exact (up to the stated discretizations). */
#include <math.h>
#include <string.h>

#include "dgauss_cdt.h"
#include "tritlm/dp.h"
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

/* One discrete Gaussian of sigma 16 from its cumulative table: one 64-bit
 * draw and a binary search (each probability within 2^-64 of exact). */
int32_t tlm_dgauss16(tlm_rand *r)
{
    const uint64_t u = tlm_rand_u64(r);
    uint32_t lo = 0, hi = 2u * TLM_DGAUSS16_HALF; /* the first entry > u */
    while (lo < hi) {
        const uint32_t mid = (lo + hi) / 2u;
        if (tlm_dgauss16_cdt[mid] > u) hi = mid;
        else lo = mid + 1u;
    }
    return (int32_t)lo - (int32_t)TLM_DGAUSS16_HALF;
}

void tlm_dx_noise(tlm_rand *r, uint32_t dim, float epsilon, float *z)
{
    /* direction: a discrete Gaussian vector of sigma 16, far above the
     * integer lattice's smoothing parameter, so its direction is uniform to
     * within far less than 1e-30; drawn from a 64-bit cumulative table
     * (statistical distance to the exact discrete Gaussian below 1e-16) */
    double n2 = 0;
    for (;;) {
        for (uint32_t i = 0; i < dim; i++) {
            z[i] = (float)tlm_dgauss16(r);
            n2 += (double)z[i] * z[i];
        }
        if (n2 > 0 || r->failed) break;
    }
    /* radius ~ Gamma(dim, 1/epsilon): a sum of dim exact Exp(1) on the 2^-32 grid */
    uint64_t g = 0;
    for (uint32_t i = 0; i < dim; i++) g += tlm_exp_q32(r);
    const double radius = (double)g / 4294967296.0 / (double)epsilon;
    const double f = n2 > 0 ? radius / (double)sqrtf((float)n2) : 0.0;
    for (uint32_t i = 0; i < dim; i++) z[i] = (float)(f * (double)z[i]);
}

#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize"))) /* its shuffles cost more than the sums */
#endif
static uint32_t dx_token(const tlm_privatizer *p, tlm_rand *r, uint32_t id, float *scratch)
{
    const tlm_model *m = p->model;
    const uint32_t dim = m->hp.dim, V = m->hp.vocab_size;
    tlm_tensor e;
    tlm_model_tensor(m, TLM_ROLE_TOK_EMBED, 0, &e);
    const tlm_wtype_traits *tr = tlm_wtype_get(e.wtype);
    float *z = scratch, *row = scratch + dim;
    tlm_dx_noise(r, dim, p->epsilon, z);
    tr->row_to_f32(row, &e, id);
    for (uint32_t i = 0; i < dim; i++) z[i] += row[i];
    /* nearest ordinary token: argmin |e_j|^2 - 2 e_j.z, with four partial
     * sums per quantity so that the loop pipelines (and vectorizes) */
    uint32_t best = id;
    float best_d = INFINITY;
    const float *rows = e.wtype == TLM_WTYPE_F32 ? (const float *)(const void *)e.data : NULL;
    for (uint32_t j = 0; j < V; j++) {
        const float *ej = row;
        if (rows) ej = rows + (size_t)j * dim;
        else tr->row_to_f32(row, &e, j);
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
        const float d = ((n0 + n1) + (n2 + n3)) - 2.0f * ((d0 + d1) + (d2 + d3));
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
