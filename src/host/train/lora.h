/* Low-rank adapters (LoRA) for fine-tuning: an adapted matrix W (rows x
 * cols) trains as W0 + s B A with A (rank x cols), B (rows x rank),
 * s = alpha / rank and W0 frozen; B starts at zero, so training starts at
 * the model itself. The trainer keeps the effective weights W in its
 * parameters, so that its forward and backward pass, weight average,
 * validation and output image are the ones of full training; each step
 * maps the gradient of W onto the adapters (dA = s B^T dW, dB = s dW A^T)
 * and AdamW moves A and B. Only rank (rows + cols) values per matrix
 * train, and the change to W has rank at most `rank`. */
#ifndef TLM_TRAIN_LORA_H
#define TLM_TRAIN_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "adamw.h"
#include "params.h"

/* The tensors that get adapters when nothing else is said. */
#define TLM_LORA_DEFAULT_TENSORS "attn,ffn"

typedef struct tlm_lora_tensor {
    uint32_t index;   /* the tensor (tlm_params_tensor order) */
    uint32_t rows, cols;
    float *w0;        /* the frozen base, rows x cols */
    float *a, *b;     /* rank x cols and rows x rank, in tlm_lora.data */
    float *ga, *gb;   /* their gradients, in tlm_lora.grad */
} tlm_lora_tensor;

typedef struct tlm_lora {
    uint32_t rank;
    float scale;      /* alpha / rank */
    uint32_t n;       /* adapted matrices */
    tlm_lora_tensor *t;
    size_t values;    /* floats in A and B over all matrices */
    float *data, *grad, *m, *v; /* adapters, their gradients, AdamW moments */
    float *base;      /* every w0 */
    size_t base_values; /* floats in base */
    float *scratch;
} tlm_lora;

/* Adapters of rank `rank` for every matrix of p (rows and cols > 1) whose
 * mask entry is set (tlm_params_count entries; NULL: the attention and
 * feed-forward matrices), A ~ normal(0, 1 / cols) from seed, B = 0; p's
 * current values become the frozen bases. Fails if nothing is adapted or
 * rank exceeds a matrix's smaller side. */
tlm_status tlm_lora_init(tlm_lora *lo, const tlm_params *p, const uint8_t *mask, uint32_t rank, float alpha,
                         uint64_t seed, tlm_error *err);
void tlm_lora_free(tlm_lora *lo);

/* Takes a checkpoint's adapters (values, m, v: lo->values floats each, then
 * base: lo->base_values) into lo, made by tlm_lora_init for the same run;
 * fails if the sizes differ. */
tlm_status tlm_lora_restore(tlm_lora *lo, const float *state, size_t values, size_t base, tlm_error *err);

/* Writes W0 + s B A into p's adapted tensors. */
void tlm_lora_apply(const tlm_lora *lo, tlm_params *p);

/* From g, the gradient with respect to the effective weights: the
 * adapters' gradients into lo->grad; g's adapted tensors then zeroed. */
void tlm_lora_backward(tlm_lora *lo, tlm_params *g);

/* One AdamW step on A and B (tlm_adamw_update, weight decay included),
 * after tlm_adamw_step counted the step (o->t). Clipping: tlm_clip_grad_with
 * over the model's gradient and lo->grad. */
void tlm_lora_step(tlm_lora *lo, const tlm_adamw *o, float lr);

#endif
