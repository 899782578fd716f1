/* AdamW with decoupled weight decay (Loshchilov & Hutter), the cosine
 * learning-rate schedule with linear warm-up, and global-norm clipping. */
#ifndef TLM_TRAIN_ADAMW_H
#define TLM_TRAIN_ADAMW_H

#include <stdint.h>

#include "params.h"

typedef struct tlm_adamw {
    float beta1, beta2, eps, weight_decay;
    float *m, *v;   /* moments, as many floats as the parameters */
    uint64_t t;     /* steps taken */
    /* optional exponential moving average of the weights (Polyak
     * averaging): decay 0 means none; ema holds as many floats as the
     * parameters when on */
    float ema_decay;
    float *ema;
    /* optional, per tensor (tlm_params_count entries): 1 = frozen, neither
     * stepped nor decayed; not owned */
    const uint8_t *frozen;
} tlm_adamw;

tlm_status tlm_adamw_init(tlm_adamw *o, size_t n, tlm_error *err);
void tlm_adamw_free(tlm_adamw *o);

/* One step with learning rate lr; weight decay only on tensors whose
 * `decay` flag is set (matrices and embeddings, not norms). */
void tlm_adamw_step(tlm_adamw *o, tlm_params *p, const tlm_params *grad, float lr);

/* The AdamW update of n values x with gradients g and moments m, v, at
 * step o->t (counted by tlm_adamw_step), with o's betas, epsilon and (if
 * decay) weight decay: what tlm_adamw_step does to each tensor, for
 * values outside a tlm_params (adapters). */
void tlm_adamw_update(const tlm_adamw *o, float *x, const float *g, float *m, float *v, size_t n, float lr, int decay);

/* Turns the weight average on with this decay, starting from p. */
tlm_status tlm_adamw_ema_init(tlm_adamw *o, const tlm_params *p, float decay, tlm_error *err);
/* After a step: ema += (1 - d) (p - ema) with d = min(decay, (1 + t) / (10 + t)),
 * so that early weights do not linger in the average. */
void tlm_adamw_ema_update(tlm_adamw *o, const tlm_params *p);

/* Learning rate at step (0-based): linear warm-up over `warmup` steps to
 * lr, then cosine decay to lr * min_frac at `total`. */
float tlm_lr_at(uint64_t step, uint64_t total, uint64_t warmup, float lr, float min_frac);

/* Scales grad so that its global L2 norm is at most max_norm (if > 0);
 * returns the norm before clipping. */
double tlm_clip_grad(tlm_params *grad, double max_norm);
/* The same over grad and n_extra more gradient values (adapters) together. */
double tlm_clip_grad_with(tlm_params *grad, float *extra, size_t n_extra, double max_norm);

#endif
