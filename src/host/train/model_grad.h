/* The whole model's forward and backward pass over one sequence, built
 * from the layers of src/host/nn/, with activations kept for backward. */
#ifndef TLM_TRAIN_MODEL_GRAD_H
#define TLM_TRAIN_MODEL_GRAD_H

#include <stdint.h>

#include "params.h"

typedef struct tlm_train_ws tlm_train_ws;

/* Workspace for sequences of up to max_T positions (one per thread). */
tlm_status tlm_train_ws_new(tlm_train_ws **ws, const tlm_hparams *hp, uint32_t max_T, tlm_error *err);
void tlm_train_ws_free(tlm_train_ws *ws);

/* Cross-entropy of predicting targets[t] from in[0..t] for t < T. Returns
 * the summed loss (nats); if grad is not NULL, adds scale * d(sum)/dparams
 * into it. */
double tlm_model_fwd_bwd(const tlm_params *p, tlm_params *grad, const uint32_t *in, const uint32_t *targets,
                         uint32_t T, float scale, tlm_train_ws *ws);

/* The same with distillation: the gradient is that of
 * (1 - alpha) * cross-entropy + alpha * KL(teacher || model), teacher_probs
 * holding T x vocab probabilities; the returned loss is the cross-entropy. */
double tlm_model_fwd_bwd_distill(const tlm_params *p, tlm_params *grad, const uint32_t *in, const uint32_t *targets,
                                 uint32_t T, float scale, const float *teacher_probs, float alpha, tlm_train_ws *ws);

/* Forward only; the T x vocab logits are then at tlm_train_ws_logits(ws). */
void tlm_model_logits(const tlm_params *p, const uint32_t *in, uint32_t T, tlm_train_ws *ws);
const float *tlm_train_ws_logits(const tlm_train_ws *ws);

/* Quantization-aware training: the inputs of the block matrices (and of
 * the classifier) are quantized to int8 per position in the forward pass,
 * as the integer kernels do; gradients pass straight through. */
/* Dropout on the output of every attention and feed-forward branch before
 * it joins the residual stream, at this rate, for the next
 * tlm_model_fwd_bwd* calls (tlm_model_logits never drops). The mask is a
 * function of seed alone; rate 0 turns it off. */
void tlm_train_ws_set_dropout(tlm_train_ws *ws, float rate, uint64_t seed);

/* Fake int8 activations (what the integer kernels see) into every layer's
 * matrices and into the classifier; or into one layer's (a per-layer plan
 * keeps fp32 layers on float activations, as the device does). */
void tlm_train_ws_set_act_q8(tlm_train_ws *ws, int blocks, int classifier);
void tlm_train_ws_set_act_q8_layer(tlm_train_ws *ws, uint32_t layer, int on);

#endif
