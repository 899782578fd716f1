/* Layer math on vectors. Float semantics follow llama2.c's run.c, which
 * the conformance test compares against, so summations run in index order. */
#include <math.h>

#include "ops.h"

void tlm_rmsnorm(float *out, const float *x, const float *weight, uint32_t n, float eps)
{
    float ss = 0.0f;
    for (uint32_t i = 0; i < n; i++) ss += x[i] * x[i];
    ss /= (float)n;
    ss += eps;
    float inv = 1.0f / sqrtf(ss);
    for (uint32_t i = 0; i < n; i++) out[i] = weight[i] * (inv * x[i]);
}

void tlm_softmax(float *x, uint32_t n)
{
    float mx = x[0];
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    float sum = 0.0f;
    for (uint32_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    for (uint32_t i = 0; i < n; i++) x[i] /= sum;
}

void tlm_rope_table(float *rope, uint32_t pos, uint32_t head_size, float theta)
{
    for (uint32_t i = 0; i < head_size; i += 2) {
        float freq = 1.0f / powf(theta, (float)i / (float)head_size);
        float angle = (float)pos * freq;
        rope[i] = cosf(angle);
        rope[i + 1] = sinf(angle);
    }
}

void tlm_rope_apply(float *v, uint32_t n, uint32_t head_size, const float *rope)
{
    for (uint32_t i = 0; i < n; i += 2) {
        uint32_t j = i % head_size;
        float c = rope[j], s = rope[j + 1];
        float a = v[i], b = v[i + 1];
        v[i] = a * c - b * s;
        v[i + 1] = a * s + b * c;
    }
}

void tlm_swiglu(float *h, const float *g, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        float v = h[i];
        v *= 1.0f / (1.0f + expf(-v));
        h[i] = v * g[i];
    }
}

float tlm_dot_f32(const float *a, const float *b, uint32_t n)
{
    float s = 0.0f;
    for (uint32_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
