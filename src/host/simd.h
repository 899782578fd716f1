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

#endif
