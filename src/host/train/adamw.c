#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"

tlm_status tlm_adamw_init(tlm_adamw *o, size_t n, tlm_error *err)
{
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->weight_decay = 0.1f;
    o->t = 0;
    o->ema_decay = 0.0f;
    o->ema = NULL;
    o->m = calloc(n, sizeof(float));
    o->v = calloc(n, sizeof(float));
    if (!o->m || !o->v) {
        tlm_adamw_free(o);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory for optimizer state");
    }
    return TLM_OK;
}

void tlm_adamw_free(tlm_adamw *o)
{
    free(o->m);
    free(o->v);
    free(o->ema);
    o->m = o->v = o->ema = NULL;
}

tlm_status tlm_adamw_ema_init(tlm_adamw *o, const tlm_params *p, float decay, tlm_error *err)
{
    free(o->ema);
    o->ema = malloc(p->n * sizeof(float));
    if (!o->ema) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory for the weight average");
    memcpy(o->ema, p->data, p->n * sizeof(float));
    o->ema_decay = decay;
    return TLM_OK;
}

void tlm_adamw_ema_update(tlm_adamw *o, const tlm_params *p)
{
    if (!o->ema) return;
    const double warm = (1.0 + (double)o->t) / (10.0 + (double)o->t);
    const float d = (float)(warm < o->ema_decay ? warm : o->ema_decay), w = 1.0f - d;
    for (size_t i = 0; i < p->n; i++) o->ema[i] += w * (p->data[i] - o->ema[i]);
}

void tlm_adamw_update(const tlm_adamw *o, float *x, const float *g, float *m, float *v, size_t n, float lr, int decay)
{
    const double bc1 = 1.0 - pow(o->beta1, (double)o->t), bc2 = 1.0 - pow(o->beta2, (double)o->t);
    const float step = (float)(lr / bc1), inv_bc2 = (float)(1.0 / bc2);
    const float keep = decay ? 1.0f - lr * o->weight_decay : 1.0f;
    for (size_t j = 0; j < n; j++) {
        const float gj = g[j];
        m[j] = o->beta1 * m[j] + (1.0f - o->beta1) * gj;
        v[j] = o->beta2 * v[j] + (1.0f - o->beta2) * gj * gj;
        x[j] = x[j] * keep - step * m[j] / (sqrtf(v[j] * inv_bc2) + o->eps);
    }
}

void tlm_adamw_step(tlm_adamw *o, tlm_params *p, const tlm_params *grad, float lr)
{
    o->t++;
    const uint32_t n = tlm_params_count(p);
    for (uint32_t i = 0; i < n; i++) {
        if (o->frozen && o->frozen[i]) continue;
        tlm_param_tensor t, g;
        tlm_params_tensor(p, i, &t);
        tlm_params_tensor(grad, i, &g);
        const size_t off = (size_t)(t.data - p->data);
        tlm_adamw_update(o, t.data, g.data, o->m + off, o->v + off, (size_t)t.rows * t.cols, lr, t.decay);
    }
}

float tlm_lr_at(uint64_t step, uint64_t total, uint64_t warmup, float lr, float min_frac)
{
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (step >= total) return lr * min_frac;
    const double progress = (double)(step - warmup) / (double)(total > warmup ? total - warmup : 1);
    const double cosine = 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
    return (float)(lr * (min_frac + (1.0 - min_frac) * cosine));
}

double tlm_clip_grad_with(tlm_params *grad, float *extra, size_t n_extra, double max_norm)
{
    double ss = 0;
    for (size_t i = 0; i < grad->n; i++) ss += (double)grad->data[i] * grad->data[i];
    for (size_t i = 0; i < n_extra; i++) ss += (double)extra[i] * extra[i];
    const double norm = sqrt(ss);
    if (max_norm > 0 && norm > max_norm) {
        const float k = (float)(max_norm / norm);
        for (size_t i = 0; i < grad->n; i++) grad->data[i] *= k;
        for (size_t i = 0; i < n_extra; i++) extra[i] *= k;
    }
    return norm;
}

double tlm_clip_grad(tlm_params *grad, double max_norm) { return tlm_clip_grad_with(grad, NULL, 0, max_norm); }
