/* Eight-lane float vectors for the host's hot loops, through the GCC/Clang
 * vector extension: the compiler maps them onto AVX (or two SSE/NEON
 * registers) without intrinsics. Host code only; the device core is plain C. */
#ifndef TLM_HOST_SIMD_H
#define TLM_HOST_SIMD_H

#include <stdint.h>
#include <string.h>

typedef float tlm_v8 __attribute__((vector_size(32)));
typedef int32_t tlm_v8i __attribute__((vector_size(32)));

static inline tlm_v8 v8_load(const float *p)
{
    tlm_v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void v8_store(float *p, tlm_v8 v) { memcpy(p, &v, sizeof v); }

static inline tlm_v8 v8_set1(float x) { return (tlm_v8){x, x, x, x, x, x, x, x}; }

static inline float v8_hsum(tlm_v8 v)
{
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

static inline tlm_v8 v8_max(tlm_v8 a, tlm_v8 b)
{
    tlm_v8i m = a > b;
    tlm_v8i ai, bi;
    memcpy(&ai, &a, sizeof a);
    memcpy(&bi, &b, sizeof b);
    tlm_v8i r = (ai & m) | (bi & ~m);
    tlm_v8 out;
    memcpy(&out, &r, sizeof r);
    return out;
}

/* e^x to about 2e-7 relative error for x in [-87, 88] (clamped outside):
 * x = n ln2 + r with n the nearest integer, |r| <= ln2/2, a degree-6
 * polynomial for e^r, and 2^n placed in the exponent bits. */
static inline tlm_v8 v8_exp(tlm_v8 x)
{
    x = v8_max(x, v8_set1(-87.0f));
    x = -v8_max(-x, v8_set1(-88.0f));
    /* +128.5 makes the value positive, so truncation rounds to nearest */
    tlm_v8i n = __builtin_convertvector(x * 1.44269504f + 128.5f, tlm_v8i) - 128;
    tlm_v8 nf = __builtin_convertvector(n, tlm_v8);
    tlm_v8 r = (x - nf * 0.693145752f) - nf * 1.42860677e-6f;
    tlm_v8 p = v8_set1(1.0f / 720.0f);
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    tlm_v8i bits = (n + 127) << 23;
    tlm_v8 scale;
    memcpy(&scale, &bits, sizeof bits);
    return p * scale;
}

/* The largest of x[0..n), n >= 1. */
static inline float tlm_vmax(const float *x, uint32_t n)
{
    float m = x[0];
    uint32_t s = 0;
    if (n >= 8) {
        tlm_v8 v = v8_load(x);
        for (s = 8; s + 8 <= n; s += 8) v = v8_max(v, v8_load(x + s));
        for (int k = 0; k < 8; k++) m = v[k] > m ? v[k] : m;
    }
    for (; s < n; s++) m = x[s] > m ? x[s] : m;
    return m;
}

/* x[s] = exp(x[s] - mx) for s < n; returns their sum. */
static inline float tlm_vexp_sum(float *x, uint32_t n, float mx)
{
    tlm_v8 acc = v8_set1(0.0f), vm = v8_set1(mx);
    uint32_t s = 0;
    for (; s + 8 <= n; s += 8) {
        tlm_v8 e = v8_exp(v8_load(x + s) - vm);
        v8_store(x + s, e);
        acc += e;
    }
    float tot = v8_hsum(acc);
    if (s < n) {
        float tail[8] = {0};
        for (uint32_t k = 0; k < n - s; k++) tail[k] = x[s + k] - mx;
        tlm_v8 e = v8_exp(v8_load(tail));
        for (uint32_t k = 0; k < n - s; k++) {
            x[s + k] = e[k];
            tot += e[k];
        }
    }
    return tot;
}

/* Dot product with four independent vector sums. */
static inline float tlm_dotv(const float *a, const float *b, uint32_t n)
{
    tlm_v8 a0 = v8_set1(0.0f), a1 = a0, a2 = a0, a3 = a0;
    uint32_t s = 0;
    for (; s + 32 <= n; s += 32) {
        a0 += v8_load(a + s) * v8_load(b + s);
        a1 += v8_load(a + s + 8) * v8_load(b + s + 8);
        a2 += v8_load(a + s + 16) * v8_load(b + s + 16);
        a3 += v8_load(a + s + 24) * v8_load(b + s + 24);
    }
    for (; s + 8 <= n; s += 8) a0 += v8_load(a + s) * v8_load(b + s);
    float tot = v8_hsum((a0 + a1) + (a2 + a3));
    for (; s < n; s++) tot += a[s] * b[s];
    return tot;
}

#endif
