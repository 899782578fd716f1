#include <math.h>

#include "layers.h"

void tlm_rmsnorm_fwd(float *Y, float *inv, const float *X, const float *w, uint32_t T, uint32_t n, float eps)
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
void tlm_rmsnorm_bwd(float *dX, float *dw, const float *dY, const float *X, const float *inv, const float *w,
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
