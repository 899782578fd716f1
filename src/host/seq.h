/* Whole-sequence forward pass on the host: every position of a layer at
 * once (matrix-matrix products), for evaluation and, later, training. */
#ifndef TLM_HOST_SEQ_H
#define TLM_HOST_SEQ_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/model.h"

typedef struct tlm_seq_ws {
    uint32_t max_T;
    float *x, *xb, *xb2, *q, *k, *v, *kt, *vt, *hb, *hb2, *att, *wbuf, *logits;
    float *xq;        /* T x max(dim, hidden): int8-rounded inputs of quantized tensors */
    int8_t *qrow;
    int float_acts;   /* 1: feed quantized tensors float activations (dequantize-then-fp32) */
} tlm_seq_ws;

tlm_status tlm_seq_ws_init(tlm_seq_ws *ws, const tlm_model *m, uint32_t max_T, tlm_error *err);
void tlm_seq_ws_free(tlm_seq_ws *ws);

/* out[t * W.rows + r] = sum_c W[r][c] * X[t * W.cols + c] for t < T, any
 * weight type: TLM_SEQ_WBUF_ROWS rows at a time are expanded to f32 and
 * transposed into wbuf ((TLM_SEQ_WBUF_ROWS + 1) * max(cols) floats). */
#define TLM_SEQ_WBUF_ROWS 64u
void tlm_seq_matmul(float *out, const float *X, uint32_t T, const tlm_tensor *W, float *wbuf);

/* X's rows rounded as the integer path rounds them: each row quantized to
 * int8 (absmax) and scaled back (the training forward of QAT uses it with
 * out == X; gradients pass straight through). qrow holds n bytes. */
void tlm_seq_fake_q8(float *out, const float *X, uint32_t T, uint32_t n, int8_t *qrow);

/* Runs tokens[0..T) (T <= max_T and <= seq_len) and leaves the logits of
 * every position in ws->logits (T x vocab_size). */
void tlm_seq_forward(const tlm_model *m, const uint32_t *tokens, uint32_t T, tlm_seq_ws *ws);

#endif
