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

#endif
