#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/gemm.h"
#include "lora.h"
#include "rng.h"

void tlm_lora_free(tlm_lora *lo)
{
    free(lo->t);
    free(lo->data);
    free(lo->grad);
    free(lo->m);
    free(lo->v);
    free(lo->base);
    free(lo->scratch);
    memset(lo, 0, sizeof *lo);
}

static int adapted(const tlm_param_tensor *t, const uint8_t *mask, uint32_t i)
{
    if (t->rows < 2 || t->cols < 2) return 0; /* gains train as they are, if at all */
    if (mask) return mask[i] != 0;
    return t->role >= TLM_ROLE_WQ && t->role <= TLM_ROLE_W3; /* attention and feed-forward (gains left above) */
}

tlm_status tlm_lora_init(tlm_lora *lo, const tlm_params *p, const uint8_t *mask, uint32_t rank, float alpha,
                         uint64_t seed, tlm_error *err)
{
    memset(lo, 0, sizeof *lo);
    if (rank == 0) return tlm_fail(err, TLM_ERR_ARG, "adapter rank must be at least 1");
    if (!(alpha > 0.0f) || !isfinite(alpha)) return tlm_fail(err, TLM_ERR_ARG, "adapter alpha must be positive");
    const uint32_t nt = tlm_params_count(p);
    size_t values = 0, base = 0, scratch = 0;
    uint32_t n = 0;
    for (uint32_t i = 0; i < nt; i++) {
        tlm_param_tensor t;
        tlm_params_tensor(p, i, &t);
        if (!adapted(&t, mask, i)) continue;
        const uint32_t side = t.rows < t.cols ? t.rows : t.cols;
        if (rank > side)
            return tlm_fail(err, TLM_ERR_ARG, "adapter rank %u exceeds the smaller side (%u) of a %u x %u matrix", rank, side,
                            t.rows, t.cols);
        n++;
        values += (size_t)rank * ((size_t)t.rows + t.cols);
        base += (size_t)t.rows * t.cols;
        const size_t s = (size_t)t.rows * t.cols + (size_t)rank * (t.rows > t.cols ? t.rows : t.cols);
        if (s > scratch) scratch = s;
    }
    if (!n) return tlm_fail(err, TLM_ERR_ARG, "the selection holds no matrix to adapt");
    lo->rank = rank;
    lo->scale = alpha / (float)rank;
    lo->n = n;
    lo->values = values;
    lo->base_values = base;
    lo->t = calloc(n, sizeof *lo->t);
    lo->data = calloc(values, sizeof(float));
    lo->grad = calloc(values, sizeof(float));
    lo->m = calloc(values, sizeof(float));
    lo->v = calloc(values, sizeof(float));
    lo->base = malloc(base * sizeof(float));
    lo->scratch = malloc(scratch * sizeof(float));
    if (!lo->t || !lo->data || !lo->grad || !lo->m || !lo->v || !lo->base || !lo->scratch) {
        tlm_lora_free(lo);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory for the adapters");
    }
    tlm_rng r;
    tlm_rng_seed(&r, seed * 0xC2B2AE3D27D4EB4Full + 0x165667B19E3779F9ull);
    size_t off = 0, boff = 0;
    uint32_t k = 0;
    for (uint32_t i = 0; i < nt; i++) {
        tlm_param_tensor t;
        tlm_params_tensor(p, i, &t);
        if (!adapted(&t, mask, i)) continue;
        tlm_lora_tensor *a = &lo->t[k++];
        a->index = i;
        a->rows = t.rows;
        a->cols = t.cols;
        a->w0 = lo->base + boff;
        memcpy(a->w0, t.data, (size_t)t.rows * t.cols * sizeof(float));
        boff += (size_t)t.rows * t.cols;
        a->a = lo->data + off;
        a->ga = lo->grad + off;
        off += (size_t)rank * t.cols;
        a->b = lo->data + off; /* zero: the model starts as it is */
        a->gb = lo->grad + off;
        off += (size_t)rank * t.rows;
        const double sd = 1.0 / sqrt((double)t.cols);
        for (size_t j = 0; j < (size_t)rank * t.cols; j++) a->a[j] = (float)(sd * tlm_rng_normal(&r));
    }
    return TLM_OK;
}

tlm_status tlm_lora_restore(tlm_lora *lo, const float *state, size_t values, size_t base, tlm_error *err)
{
    if (values != lo->values || base != lo->base_values)
        return tlm_fail(err, TLM_ERR_FORMAT, "the checkpoint's adapters (%zu values, %zu frozen) do not fit this run's "
                        "(%zu, %zu)", values, base, lo->values, lo->base_values);
    memcpy(lo->data, state, values * sizeof(float));
    memcpy(lo->m, state + values, values * sizeof(float));
    memcpy(lo->v, state + 2u * values, values * sizeof(float));
    memcpy(lo->base, state + 3u * values, base * sizeof(float));
    return TLM_OK;
}

void tlm_lora_apply(const tlm_lora *lo, tlm_params *p)
{
    for (uint32_t k = 0; k < lo->n; k++) {
        const tlm_lora_tensor *a = &lo->t[k];
        tlm_param_tensor t;
        tlm_params_tensor(p, a->index, &t);
        const size_t n = (size_t)a->rows * a->cols;
        tlm_gemm(lo->scratch, a->b, a->a, a->rows, lo->rank, a->cols, 0); /* B A */
        for (size_t j = 0; j < n; j++) t.data[j] = a->w0[j] + lo->scale * lo->scratch[j];
    }
}

void tlm_lora_backward(tlm_lora *lo, tlm_params *g)
{
    const uint32_t r = lo->rank;
    for (uint32_t k = 0; k < lo->n; k++) {
        tlm_lora_tensor *a = &lo->t[k];
        tlm_param_tensor t;
        tlm_params_tensor(g, a->index, &t);
        float *tr = lo->scratch;
        tlm_transpose(tr, a->b, a->rows, r);                      /* B^T: r x rows */
        tlm_gemm(a->ga, tr, t.data, r, a->rows, a->cols, 0);      /* B^T dW */
        tlm_transpose(tr, a->a, r, a->cols);                      /* A^T: cols x r */
        tlm_gemm(a->gb, t.data, tr, a->rows, a->cols, r, 0);      /* dW A^T */
        for (size_t j = 0; j < (size_t)r * a->cols; j++) a->ga[j] *= lo->scale;
        for (size_t j = 0; j < (size_t)r * a->rows; j++) a->gb[j] *= lo->scale;
        memset(t.data, 0, (size_t)a->rows * a->cols * sizeof(float));
    }
}

void tlm_lora_step(tlm_lora *lo, const tlm_adamw *o, float lr)
{
    tlm_adamw_update(o, lo->data, lo->grad, lo->m, lo->v, lo->values, lr, 1);
}
