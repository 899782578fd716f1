/* Matrix-vector kernels, one family per weight type (see wtype.c). */
#ifndef TLM_CORE_KERNELS_H
#define TLM_CORE_KERNELS_H

#include "tritlm/model.h"

/* f32 weights, f32 activations: rows summed in column order. */
void tlm_matvec_f32_f32(float *out, const float *x, const tlm_tensor *w);
void tlm_row_f32_f32(float *out, const tlm_tensor *w, uint32_t r);

#endif
