/* A model's parameters as fp32 arrays (the master weights of training, or
 * a gradient of the same shape), in the image's canonical tensor order. */
#ifndef TLM_TRAIN_PARAMS_H
#define TLM_TRAIN_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "../image_build.h"
#include "tritlm/model.h"

typedef struct tlm_layer_params {
    float *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *w1, *w2, *w3;
} tlm_layer_params;

typedef struct tlm_params {
    tlm_hparams hp;
    size_t n;             /* floats in data */
    float *data;          /* all tensors, contiguous */
    float *tok_embed, *final_norm, *classifier; /* classifier == tok_embed when shared */
    tlm_layer_params *layers;
} tlm_params;

typedef struct tlm_param_tensor {
    uint16_t role, layer;
    uint32_t rows, cols;
    float *data;
    int decay; /* weight decay applies (matrices, not norms) */
} tlm_param_tensor;

/* Checks dimensions (the same rules as the image) and allocates zeroed
 * parameters. */
tlm_status tlm_params_alloc(tlm_params *p, const tlm_hparams *hp, tlm_error *err);
void tlm_params_free(tlm_params *p);

/* Number of tensors and tensor i in canonical order. */
uint32_t tlm_params_count(const tlm_params *p);
void tlm_params_tensor(const tlm_params *p, uint32_t i, tlm_param_tensor *t);

/* A selection of tensors by group: spec is a comma list of "norms" (every
 * RMSNorm gain), "embed" (token embedding and classifier), "attn" (wq, wk,
 * wv, wo), "ffn" (w1, w2, w3), "layerN" (every tensor of layer N, from 0)
 * or "all". mask gets 1 for each selected tensor (tlm_params_count
 * entries); *values, if not NULL, their total size. */
tlm_status tlm_params_select(const tlm_params *p, const char *spec, uint8_t *mask, size_t *values, tlm_error *err);

/* Norms 1, matrices normal(0, 0.02), residual outputs (wo, w2) scaled by
 * 1/sqrt(2 n_layers). Deterministic for a seed. */
void tlm_params_init(tlm_params *p, uint64_t seed);

/* Parameters of an image (any weight type, expanded to fp32). */
tlm_status tlm_params_from_model(tlm_params *p, const tlm_model *m, tlm_error *err);

/* An image of the parameters in the layout of `like` (a model of the same
 * shapes): each tensor whose values equal like's, expanded, keeps like's
 * weight type, packing and scales byte for byte; each other one is written
 * in fp32 (*widened, if not NULL, counts those that were not fp32 in like).
 * BOS and EOS come from like. */
tlm_status tlm_params_to_image_like(const tlm_params *p, const tlm_model *like, const tlm_vocab *v, uint8_t **image,
                                    size_t *bytes, uint32_t *widened, tlm_error *err);

/* An fp32 image of the parameters with this vocabulary. */
tlm_status tlm_params_to_image(const tlm_params *p, const tlm_vocab *v, uint32_t bos, uint32_t eos, uint8_t **image,
                               size_t *bytes, tlm_error *err);

#endif
