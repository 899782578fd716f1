/* fp32 reference kernels. Each output is a sum in column order (the same
 * rounding as a plain loop); four rows run side by side so that their
 * independent sums overlap in the pipeline. */
#include <string.h>

#include "kernels.h"

void tlm_matvec_f32_f32(float *out, const float *x, const tlm_tensor *w)
{
    const float *W = (const float *)(const void *)w->data;
    const uint32_t n = w->cols, d = w->rows;
    uint32_t r = 0;
    for (; r + 4 <= d; r += 4) {
        const float *w0 = W + (size_t)r * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        for (uint32_t c = 0; c < n; c++) {
            float xc = x[c];
            s0 += w0[c] * xc;
            s1 += w1[c] * xc;
            s2 += w2[c] * xc;
            s3 += w3[c] * xc;
        }
        out[r] = s0;
        out[r + 1] = s1;
        out[r + 2] = s2;
        out[r + 3] = s3;
    }
    for (; r < d; r++) {
        const float *wr = W + (size_t)r * n;
        float s = 0.0f;
        for (uint32_t c = 0; c < n; c++) s += wr[c] * x[c];
        out[r] = s;
    }
}

void tlm_row_f32_f32(float *out, const tlm_tensor *w, uint32_t r)
{
    memcpy(out, w->data + (size_t)r * w->cols * 4u, (size_t)w->cols * 4u);
}
