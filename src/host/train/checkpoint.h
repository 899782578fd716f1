/* Training checkpoints: everything needed to continue a run to the same
 * result as an uninterrupted one. Written atomically.
 *
 * Layout (little-endian): 256-byte header (magic "TLMCKPT2", the fields of
 * checkpoint.c, a CRC-32 of the whole file with its own four bytes read as
 * zero; version 1, "TLMCKPT1", still read, checksummed only what follows
 * the header), then at offset 256 the fp32 model image
 * (parameters, hyperparameters and tokenizer), then the AdamW moments m
 * and v (n_params f32 each), then, when the run averages its weights, the
 * average (n_params f32), then, when it trains a selection of tensors, the
 * selection (tlm_params_select's text, its length in the header), then,
 * when it trains adapters, their values, AdamW moments m and v (values f32
 * each) and the frozen matrices they adapt (tlm_lora's base). */
#ifndef TLM_TRAIN_CHECKPOINT_H
#define TLM_TRAIN_CHECKPOINT_H

#include <stdint.h>

#include "../quant.h"
#include "adamw.h"
#include "lora.h"
#include "params.h"

/* The longest selection text (--tensors) a checkpoint records. */
#define TLM_CKPT_SELECT_MAX 255u

typedef struct tlm_ckpt_meta {
    uint32_t threads, batch, ctx, warmup;
    uint64_t step, total_steps, seed, rng_state;
    float lr, min_lr_frac, weight_decay, clip, beta1, beta2;
    double elapsed;          /* training seconds before this checkpoint */
    uint64_t tokens_seen;
    uint32_t qat;            /* 1: quantization-aware run with qcfg */
    tlm_quant_cfg qcfg;
    float distill;           /* weight of the distillation term (0: none) */
    float dropout;           /* residual-branch dropout rate (0: none) */
    char train_only[TLM_CKPT_SELECT_MAX + 1]; /* the selection trained ("": every tensor) */
    uint32_t lora_rank;      /* the run trains adapters of this rank (0: none) ... */
    float lora_alpha;        /* ... with this alpha */
    float *lora_state;       /* tlm_ckpt_load: their values, m, v and base (malloc'd, the caller frees it;
                              * NULL without adapters or when loading failed) */
    size_t lora_values, lora_base; /* ... floats of the values (each of values, m, v) and of the base */
} tlm_ckpt_meta;

/* Does the file start with a checkpoint's magic (so --init can tell a
 * checkpoint from a model image)? */
int tlm_ckpt_is(const char *path);

tlm_status tlm_ckpt_save(const char *path, const tlm_ckpt_meta *meta, const tlm_params *p, const tlm_vocab *v,
                         uint32_t bos, uint32_t eos, const tlm_adamw *opt, const tlm_lora *lora, tlm_error *err);

/* Recomputes the checksums of a version 2 checkpoint in memory (its model
 * image's, then its own), for tools and tests that edit one on purpose. */
void tlm_ckpt_reseal(uint8_t *buf, size_t n);

/* Loads a checkpoint: params, optimizer (allocated here), vocabulary. */
tlm_status tlm_ckpt_load(const char *path, tlm_ckpt_meta *meta, tlm_params *p, tlm_vocab *v, uint32_t *bos,
                         uint32_t *eos, tlm_adamw *opt, tlm_error *err);

#endif
