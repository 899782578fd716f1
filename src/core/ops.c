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

void tlm_rmsnorm_rows(float *Y, float *inv, const float *X, const float *w, uint32_t T, uint32_t n, float eps)
{
    for (uint32_t t = 0; t < T; t++) {
        const float *x = X + (size_t)t * n;
        float *y = Y + (size_t)t * n;
        float ss = 0.0f;
        for (uint32_t i = 0; i < n; i++) ss += x[i] * x[i];
        const float r = 1.0f / sqrtf(ss / (float)n + eps);
        inv[t] = r;
        for (uint32_t i = 0; i < n; i++) y[i] = w[i] * (r * x[i]);
    }
}

/* y_i = w_i x_i r, r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / n:
 * dx_j = r w_j dy_j - x_j r^3 / n * sum_i dy_i w_i x_i;  dw_i += dy_i x_i r */
void tlm_rmsnorm_rows_back(float *dX, float *dw, const float *dY, const float *X, const float *inv, const float *w,
                           uint32_t T, uint32_t n)
{
    for (uint32_t t = 0; t < T; t++) {
        const float *x = X + (size_t)t * n, *dy = dY + (size_t)t * n;
        float *dx = dX + (size_t)t * n;
        const float r = inv[t];
        float dot = 0.0f;
        for (uint32_t i = 0; i < n; i++) {
            dot += dy[i] * w[i] * x[i];
            dw[i] += dy[i] * x[i] * r;
        }
        const float c = dot * r * r * r / (float)n;
        for (uint32_t i = 0; i < n; i++) dx[i] += r * w[i] * dy[i] - c * x[i];
    }
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
