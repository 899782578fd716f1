#include <math.h>

#include "../simd.h"
#include "layers.h"

void tlm_swiglu_fwd(float *Hh, const float *A, const float *B, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const tlm_v8 a = v8_load(A + i);
        v8_store(Hh + i, a / (1.0f + v8_exp(-a)) * v8_load(B + i));
    }
    for (; i < n; i++) {
        const float s = 1.0f / (1.0f + expf(-A[i]));
        Hh[i] = A[i] * s * B[i];
    }
}

/* silu(a) = a s, s = sigmoid(a); silu'(a) = s (1 + a (1 - s)) */
void tlm_swiglu_bwd(float *dA, float *dB, const float *dHh, const float *A, const float *B, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const float a = A[i], s = 1.0f / (1.0f + expf(-a));
        dA[i] += dHh[i] * B[i] * s * (1.0f + a * (1.0f - s));
        dB[i] += dHh[i] * a * s;
    }
}
