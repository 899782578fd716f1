/* On-device fine-tuning: the small training step a device runs on its own
 * text, so that its text never leaves it. It tunes the model's RMSNorm
 * gains (two per layer and the final one: (2 n_layers + 1) * dim values),
 * kept in RAM beside a model image that stays read-only in flash. Each
 * step runs forward and backward through every layer in fp32 over a
 * window of tokens (weights decoded row by row from any weight type, the
 * same math as the host's training), takes the mean cross-entropy of
 * next-token prediction, and Adam moves the gains. What the steps changed
 * becomes a federated update (tritlm/fed.h) for the server to average.
 *
 * With adapters (tlm_tune_init_lora, rank R > 0) it tunes, instead of the
 * gains, low-rank adapters of the attention projections (wq, wk, wv, wo
 * of every layer): each trains as W + s B A, A (R x cols), B (rows x R),
 * s = alpha / R, A drawn from a seeded generator and B zero, so tuning
 * starts at the model itself; the gradients of A and B come from the same
 * backward pass (dB = s dY (A X)^T, dA = s (B^T dY) X^T). The update then
 * holds their products as low-rank int8 entries, which the server
 * averages and which the device itself can decode with on top of the
 * unchanged model (tlm_runtime_use_adapter).
 *
 * No allocation: the caller's arena holds the gains, Adam's moments, the
 * residual stream between layers for the window (the first layer's input,
 * the embeddings, is decoded again instead) and one layer's activations,
 * recomputed during the backward pass, in buffers that share room where
 * their lives do not overlap (tlm_tune_arena_size). */
#ifndef TRITLM_TUNE_H
#define TRITLM_TUNE_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/dp.h"
#include "tritlm/fed.h"
#include "tritlm/model.h"
#include "tritlm/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tlm_tune {
    const tlm_model *model;
    uint32_t window;  /* most predicted positions per step */
    uint32_t n_gains; /* (2 n_layers + 1) * dim */
    /* The tuned gains, dim each: layer l's attention norm at 2 l dim, its
     * feed-forward norm at (2 l + 1) dim, the final norm at 2 n_layers dim.
     * They start as the model's. */
    float *gains;
    float *grad;   /* gradient of the last tlm_tune_loss with grad set */
    float *m, *v;  /* Adam's moments */
    uint32_t steps; /* Adam steps taken */
    uint32_t lora_rank; /* 0: the gains train; else the adapters (and the gains stay) */
    float lora_scale;   /* alpha / rank */
    uint32_t n_lora;    /* floats in the adapters */
    /* The adapters, after the gains in the same vectors (gains, grad, m, v
     * each hold the gains, then the adapters at lora - gains): for each
     * layer, wq, wk, wv and wo, each as A (rank x cols) then B (rows x rank). */
    float *lora;
    float *ws;     /* activations (the rest of the arena) */
} tlm_tune;

/* Where norm (role, layer) sits among the gains, in units of dim: layer
 * l's attention norm at 2 l, its feed-forward norm at 2 l + 1, the final
 * norm at 2 n_layers (its layer ignored). The runtime's
 * tlm_runtime_use_gains takes the same layout. */
uint32_t tlm_tune_norm_index(const tlm_hparams *hp, uint32_t role, uint32_t layer);

/* The other way: norm k's role, and its layer in *layer (0 for the final norm). */
tlm_role tlm_tune_norm_at(const tlm_hparams *hp, uint32_t k, uint32_t *layer);

/* Arena bytes for windows of up to `window` positions (0 if the model's
 * shapes overflow the size arithmetic); with adapters of rank `rank`. */
size_t tlm_tune_arena_size(const tlm_model *m, uint32_t window);
size_t tlm_tune_arena_size_lora(const tlm_model *m, uint32_t window, uint32_t rank);

/* Lays out the arena (any alignment; a few bytes of it may go to aligning)
 * and copies the model's gains into tu->gains. window: 1 to the model's
 * seq_len - 1. */
tlm_status tlm_tune_init(tlm_tune *tu, const tlm_model *m, uint32_t window, void *arena, size_t arena_bytes,
                         tlm_error *err);
/* The same with adapters of rank `rank` (1 to TLM_TUNE_MAX_RANK and at
 * most every adapted matrix's smaller side), scale alpha / rank, A drawn
 * uniformly in +-sqrt(3 / cols) (variance 1 / cols) from a ChaCha20
 * stream seeded with `seed`. */
tlm_status tlm_tune_init_lora(tlm_tune *tu, const tlm_model *m, uint32_t window, uint32_t rank, float alpha,
                              uint64_t seed, void *arena, size_t arena_bytes, tlm_error *err);
#define TLM_TUNE_MAX_RANK 64u
/* The tools' defaults (fed update --device-step, tritlm firmware --tune):
 * Adam's learning rate for the gains and for adapters, and adapters' alpha. */
#define TLM_TUNE_LR 1e-2f
#define TLM_TUNE_LORA_LR 3e-3f
#define TLM_TUNE_LORA_ALPHA(rank) (0.5f * (float)(rank))

/* Mean cross-entropy (nats) of tokens[t + 1] given tokens[0..t] for
 * t < n - 1, with the current gains (and adapters) (2 <= n <= window + 1,
 * every token below the vocabulary size). With grad nonzero its gradient
 * with respect to the gains (and the adapters) goes to tu->grad. */
tlm_status tlm_tune_loss(tlm_tune *tu, const uint32_t *tokens, uint32_t n, int grad, float *loss, tlm_error *err);

/* One Adam step (beta1 0.9, beta2 0.999, eps 1e-8, bias-corrected) with
 * learning rate lr from tu->grad, on what trains (the gains, or the
 * adapters). */
void tlm_tune_adam(tlm_tune *tu, float lr);

/* `steps` Adam steps (learning rate lr) over windows of window + 1 tokens
 * taken in order from tokens[0..n): each step's window starts at *cursor,
 * the next one `window` tokens further (so that every token is predicted
 * once per pass), back to 0 when a window would run past the end. losses,
 * if not NULL, gets each step's loss (before its update). */
tlm_status tlm_tune_run(tlm_tune *tu, const uint32_t *tokens, size_t n, uint32_t steps, float lr, size_t *cursor,
                        float *losses, tlm_error *err);

/* Adds the change the tuning made (tuned gains minus the model's) to a
 * federated update: one entry per norm tensor, coded as enc (rng for the
 * stochastic rounding of I8 and T2; NULL is fine for F32). With adapters,
 * one TLM_FED_LOWRANK_I8 entry per adapted matrix (s B and A; enc must be
 * TLM_FED_I8, rng set). It uses the activation workspace, which holds
 * nothing between steps: its first tlm_tune_update_scratch(tu) floats (a
 * message built in the workspace must start past them). */
tlm_status tlm_tune_add_update(const tlm_tune *tu, tlm_fed_writer *w, tlm_fed_enc enc, tlm_rand *rng, tlm_error *err);
/* The bytes of the entries tlm_tune_add_update adds (enc: the gains'
 * coding; adapters are low-rank int8), and the workspace floats it uses. */
size_t tlm_tune_update_bytes(const tlm_tune *tu, tlm_fed_enc enc);
size_t tlm_tune_update_scratch(const tlm_tune *tu);

#ifdef __cplusplus
}
#endif
#endif
