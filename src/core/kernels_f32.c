/* fp32 reference kernels. Each output is a sum in column order (the same
 * rounding as a plain loop, and as llama2.c); eight rows run side by side
 * so that their independent sums overlap in the pipeline. */
#include <string.h>

#include "kernels.h"

/* GCC otherwise vectorizes the products and then adds them back in order
 * one lane at a time, which is slower than plain scalar chains. */
#if defined(__GNUC__) && !defined(__clang__)
#define TLM_SCALAR_LOOPS __attribute__((optimize("no-tree-vectorize")))
#else
#define TLM_SCALAR_LOOPS
#endif

TLM_SCALAR_LOOPS void tlm_matvec_f32_f32(float *out, const float *x, const tlm_tensor *w)
{
    const float *W = (const float *)(const void *)w->data;
    const uint32_t n = w->cols, d = w->rows;
    uint32_t r = 0;
    for (; r + 8 <= d; r += 8) {
        const float *w0 = W + (size_t)r * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
        const float *w4 = w3 + n, *w5 = w4 + n, *w6 = w5 + n, *w7 = w6 + n;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f, s4 = 0.0f, s5 = 0.0f, s6 = 0.0f, s7 = 0.0f;
        for (uint32_t c = 0; c < n; c++) {
            const float xc = x[c];
            s0 += w0[c] * xc;
            s1 += w1[c] * xc;
            s2 += w2[c] * xc;
            s3 += w3[c] * xc;
            s4 += w4[c] * xc;
            s5 += w5[c] * xc;
            s6 += w6[c] * xc;
            s7 += w7[c] * xc;
        }
        out[r] = s0;
        out[r + 1] = s1;
        out[r + 2] = s2;
        out[r + 3] = s3;
        out[r + 4] = s4;
        out[r + 5] = s5;
        out[r + 6] = s6;
        out[r + 7] = s7;
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
