/* Layers of the Llama block for training: each forward has its backward
 * beside it (same file), and backward passes accumulate (+=) into their
 * input and parameter gradients. T is the number of positions. */
#ifndef TLM_NN_LAYERS_H
#define TLM_NN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* ---- linear.c: Y[T x d] = X[T x n] W[d x n]^T ----
 * wt: scratch of n*d floats (forward: W transposed); dyt: scratch of d*T. */
void tlm_linear_fwd(float *Y, const float *X, const float *W, uint32_t T, uint32_t n, uint32_t d, float *wt);
void tlm_linear_bwd(float *dX, float *dW, const float *dY, const float *X, const float *W, uint32_t T, uint32_t n,
                    uint32_t d, float *dyt);

/* ---- rmsnorm.c: Y = w * X / rms(X) row by row; inv[t] saved ---- */
void tlm_rmsnorm_fwd(float *Y, float *inv, const float *X, const float *w, uint32_t T, uint32_t n, float eps);
void tlm_rmsnorm_bwd(float *dX, float *dw, const float *dY, const float *X, const float *inv, const float *w,
                     uint32_t T, uint32_t n);

/* ---- rope.c: rotate pairs of each head in place (row t at position t) ---- */
void tlm_rope_fwd(float *X, uint32_t T, uint32_t width, uint32_t head_size, float theta);
void tlm_rope_bwd(float *dX, uint32_t T, uint32_t width, uint32_t head_size, float theta);

/* ---- attention.c: causal grouped-query attention ----
 * Q: T x (n_heads*hs), K, V: T x (n_kv*hs), O: T x (n_heads*hs) (written;
 * dQ, dK, dV accumulated). lse: T x n_heads log-sum-exps of the scaled
 * scores, written by the forward pass (may be NULL there) for the backward
 * pass. scratch: tlm_attention_scratch_floats(). */
size_t tlm_attention_scratch_floats(uint32_t T, uint32_t n_kv, uint32_t hs);
void tlm_attention_fwd(float *O, float *lse, const float *Q, const float *K, const float *V, uint32_t T,
                       uint32_t n_heads, uint32_t n_kv, uint32_t hs, float *scratch);
void tlm_attention_bwd(float *dQ, float *dK, float *dV, const float *dO, const float *Q, const float *K,
                       const float *V, const float *lse, uint32_t T, uint32_t n_heads, uint32_t n_kv, uint32_t hs,
                       float *scratch);

/* ---- swiglu.c: Hh = silu(A) * B (Hh may be A) ---- */
void tlm_swiglu_fwd(float *Hh, const float *A, const float *B, size_t n);
void tlm_swiglu_bwd(float *dA, float *dB, const float *dHh, const float *A, const float *B, size_t n);

/* ---- embed.c: X[t] = E[tokens[t]] ---- */
void tlm_embed_fwd(float *X, const float *E, const uint32_t *tokens, uint32_t T, uint32_t dim);
void tlm_embed_bwd(float *dE, const float *dX, const uint32_t *tokens, uint32_t T, uint32_t dim);

/* ---- xent.c: softmax cross-entropy of logits rows against targets ----
 * Returns the summed loss (nats) over T rows and writes
 * dlogits = scale * (softmax - onehot). Logits are overwritten by dlogits.
 * A row whose target is TLM_NO_TARGET adds no loss and gets a zero
 * gradient (a position the loss leaves out, e.g. the text before a label). */
#define TLM_NO_TARGET UINT32_MAX
double tlm_xent_fwd_bwd(float *logits, const uint32_t *targets, uint32_t T, uint32_t V, float scale);
/* The same against a mixture: gradient of (1 - alpha) * cross-entropy +
 * alpha * KL(teacher || softmax(logits)); returns the cross-entropy. */
double tlm_xent_distill_fwd_bwd(float *logits, const uint32_t *targets, const float *teacher, float alpha, uint32_t T,
                                uint32_t V, float scale);

#endif
