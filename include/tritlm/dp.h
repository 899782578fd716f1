/* On-device differential privacy for text: a random-source interface,
 * samplers built on integer arithmetic only (no floating-point noise that
 * leaks through its low bits, Mironov 2012), the two token mechanisms
 * (metric d_chi privacy on embeddings, k-ary randomized response), a
 * privacy budget, and redaction of obvious identifiers. Freestanding: no
 * allocation, no I/O. docs/PRIVACY.md states the guarantees. */
#ifndef TRITLM_DP_H
#define TRITLM_DP_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/model.h"
#include "tritlm/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- random source ---- */

/* Fills buf with n random bytes; returns 0 on success. The host's is
 * getrandom(2) (src/host/csprng.c); a device passes its hardware RNG. */
typedef int (*tlm_entropy_fn)(void *ctx, uint8_t *buf, size_t n);

typedef struct tlm_rand {
    tlm_entropy_fn fill;
    void *ctx;
    uint8_t buf[256];
    uint32_t avail;  /* unread bytes at the end of buf */
    uint32_t bits, nbits; /* a reservoir of single random bits */
    int failed;      /* the source failed once: every result since is void */
} tlm_rand;

void tlm_rand_init(tlm_rand *r, tlm_entropy_fn fill, void *ctx);
uint32_t tlm_rand_u32(tlm_rand *r);
uint64_t tlm_rand_u64(tlm_rand *r);
/* Uniform in [0, n), n > 0, by rejection (no modulo bias). */
uint64_t tlm_rand_below(tlm_rand *r, uint64_t n);

/* A seeded ChaCha20 stream, for tests and reproducible experiments only:
 * its output is a function of the seed, so it protects nothing. */
typedef struct tlm_chacha {
    uint32_t key[8];
    uint64_t counter;
} tlm_chacha;
void tlm_chacha_seed(tlm_chacha *c, uint64_t seed);
/* A ChaCha20 stream under a full 256-bit key: with a key from a true
 * entropy source this is a CSPRNG (as arc4random is), far cheaper per byte
 * than a system call. */
void tlm_chacha_key(tlm_chacha *c, const uint8_t key[32]);
int tlm_chacha_fill(void *chacha, uint8_t *buf, size_t n); /* a tlm_entropy_fn */

/* ---- exact samplers (Canonne, Kamath, Steinke 2020) ---- */

/* Bernoulli(num / den), 0 <= num <= den, den > 0. */
int tlm_bern_frac(tlm_rand *r, uint64_t num, uint64_t den);
/* Bernoulli(exp(-num / den)), den > 0, num / den < 2^32. */
int tlm_bern_exp(tlm_rand *r, uint64_t num, uint64_t den);
/* Discrete Laplace: P(x) proportional to exp(-|x| s / t), s, t in [1, 2^31]. */
int64_t tlm_dlaplace(tlm_rand *r, uint64_t s, uint64_t t);
/* Discrete Gaussian: P(x) proportional to exp(-x^2 / (2 sigma2)) with
 * sigma2 = num / den, num <= 2^22, 1 <= den <= 2^10, sigma2 in [1/1024, 4096].
 * The Laplace proposals beyond 64 t (probability below 1e-27) are redrawn. */
int64_t tlm_dgauss(tlm_rand *r, uint64_t num, uint64_t den);
/* The discrete Gaussian of sigma 16 from a generated 64-bit cumulative
 * table (|x| <= 224): every probability within 2^-64 of exact. One draw. */
int32_t tlm_dgauss16(tlm_rand *r);
/* Exp(1) on the grid 2^-32, as a Q32.32 fixed-point number: exact for that
 * discretization (integer part geometric, fraction by rejection). */
uint64_t tlm_exp_q32(tlm_rand *r);

/* ---- mechanisms ---- */

typedef enum tlm_mech { TLM_MECH_NONE = 0, TLM_MECH_DX = 1, TLM_MECH_RR = 2 } tlm_mech;

/* Cells of the d_chi radius table (see tlm_dx_noise). */
#define TLM_DX_CELLS 512u

typedef struct tlm_privatizer {
    const tlm_model *model;
    tlm_mech mech;
    float epsilon;          /* as requested; +inf releases tokens unchanged */
    float epsilon_token;    /* what one token costs: RR's exact epsilon ln(keep/other) <= epsilon;
                               d_chi's epsilon (per unit of embedding distance) */
    uint32_t k;             /* size of the token domain (every id but unk, BOS, EOS) */
    uint64_t rr_keep, rr_other; /* RR odds: keep : each other token = rr_keep : rr_other */
    /* d_chi radius ~ Gamma(dim, 1) / epsilon: [0, TLM_DX_CELLS * dx_cell)
     * cut into equal cells; dx_cdt[k] = P(radius falls in cells 0..k) * 2^64
     * (the last cell's 2^64 implied) */
    double dx_cell;
    uint64_t dx_cdt[TLM_DX_CELLS - 1u];
    /* a squeeze for the rejection step inside cell k: below dx_sq[k] / 2^32
     * (the density's minimum over the cell relative to its maximum, rounded
     * down with margin) a point is kept without evaluating the density */
    uint32_t dx_sq[TLM_DX_CELLS];
    const void *dx_index;   /* optional search index (tlm_privatizer_set_index) */
} tlm_privatizer;

/* Floats of scratch tlm_privatize_token needs (d_chi: the noisy vector, one
 * embedding row, and with an index the quantized vector). */
#define TLM_PRIV_SCRATCH_FLOATS(dim) (3u * (size_t)(dim) + 16u)

tlm_status tlm_privatizer_init(tlm_privatizer *p, const tlm_model *m, tlm_mech mech, float epsilon, tlm_error *err);

/* d_chi noise in R^dim with density proportional to exp(-epsilon |z|): a
 * uniform direction times a Gamma(dim, 1/epsilon) radius. Direction:
 * discrete Gaussians of sigma 16 (within 2^-64 of exact per value). Radius:
 * a cell from the 64-bit table above, then a point of the cell's 2^32-point
 * grid by rejection against the Gamma density, evaluated in double
 * precision; the radius's distribution is within 1e-13 (total variation)
 * of the Gamma density on that grid. */
void tlm_dx_noise(const tlm_privatizer *p, tlm_rand *r, float *z);

/* Optional index that makes d_chi's nearest-token search cheap: an int16
 * copy of the embedding screens every token with a proven error bound and
 * only the few tokens that can still win are compared in fp32, so the
 * result is the same token as the plain search. bytes: what it needs (0
 * for mechanisms without a search); mem: that many bytes, 16-byte aligned,
 * alive and unchanged while p is used. */
size_t tlm_privatizer_index_bytes(const tlm_privatizer *p);
void tlm_privatizer_set_index(tlm_privatizer *p, void *mem);

/* Is this id in the mechanisms' domain (not unk 0, BOS or EOS)? */
int tlm_priv_in_domain(const tlm_privatizer *p, uint32_t id);

/* One token through the mechanism (ids outside the domain pass through
 * unchanged and cost nothing). scratch: TLM_PRIV_SCRATCH_FLOATS floats. */
uint32_t tlm_privatize_token(const tlm_privatizer *p, tlm_rand *r, uint32_t id, float *scratch);

/* ---- accounting ---- */

typedef struct tlm_budget {
    double limit;   /* total epsilon this budget allows (sequential composition) */
    double spent;
} tlm_budget;

/* A whole message: charges n_domain * epsilon_token to the budget (which
 * may be NULL) first and refuses with TLM_ERR_BUDGET, writing nothing, if
 * it would pass the limit; then privatizes every id. If the random source
 * fails, out is zeroed and TLM_ERR_RNG returned (the charge stays: the
 * caller cannot know how much was observed). *spent gets the charge. */
tlm_status tlm_privatize_ids(const tlm_privatizer *p, tlm_rand *r, tlm_budget *b, const uint32_t *in, size_t n,
                             uint32_t *out, float *scratch, double *spent, tlm_error *err);

/* ---- redaction ---- */

/* Copies text to out (cap bytes) with e-mail addresses replaced by
 * "[email]", phone-like sequences (7 or more digits with + ( ) - . or space
 * between them, at most two in a row) by "[phone]" and other runs of 2 or more digits by
 * "[number]". Returns the bytes written, or (size_t)-1 if cap is too small
 * (cap >= 4 * n + 16 always suffices). */
size_t tlm_redact(const char *text, size_t n, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
