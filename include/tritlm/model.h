/* A validated, read-only view of a model image used in place (mmap on a
 * host, flash on a device). Nothing is copied: the view holds pointers into
 * the caller's buffer, which must outlive it and stay unchanged. */
#ifndef TRITLM_MODEL_H
#define TRITLM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/format.h"
#include "tritlm/status.h"
#include "tritlm/wtype.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tlm_hparams {
    uint32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    float rope_theta, norm_eps;
    int shared_classifier;
} tlm_hparams;

/* One tensor as the kernels see it. */
typedef struct tlm_tensor {
    const uint8_t *data;
    const float *scales;   /* NULL when scale_kind is TLM_SCALE_NONE */
    uint64_t data_bytes;
    uint32_t rows, cols, group, param;
    uint16_t role, layer, wtype, scale_kind;
} tlm_tensor;

typedef struct tlm_model {
    const uint8_t *image;
    size_t image_bytes;
    tlm_hparams hp;
    uint32_t n_tensors;
    uint32_t max_token_length, bos_id, eos_id;
    const uint8_t *table;      /* tensor table */
    /* tokenizer section */
    const float *vocab_scores; /* vocab_size */
    const uint32_t *vocab_off; /* vocab_size + 1 offsets into vocab_pool */
    const uint32_t *vocab_sorted; /* ids in byte-wise lexicographic order */
    const uint8_t *vocab_pool; /* strings, each followed by a NUL */
} tlm_model;

/* Validates the whole image (every header field, tensor entry, offset,
 * size, the tokenizer section and the checksum) against `bytes`, then fills
 * `model`. The buffer must be aligned to TLM_ALIGN bytes. On failure the
 * model is untouched and err says what is wrong. */
tlm_status tlm_model_open(tlm_model *model, const void *image, size_t bytes, tlm_error *err);

/* Tensor entry i of the table, decoded. i must be < n_tensors. */
void tlm_model_tensor_at(const tlm_model *m, uint32_t i, tlm_tensor *out);

/* The tensor with this role (and layer, for per-layer roles). Returns 0 and
 * fills `out` when present, -1 otherwise. The classifier resolves to the
 * token embedding when shared. */
int tlm_model_tensor(const tlm_model *m, tlm_role role, uint32_t layer, tlm_tensor *out);
/* Its index in the table (for tlm_model_tensor_at): 0 and *index, or -1. */
int tlm_model_tensor_index(const tlm_model *m, tlm_role role, uint32_t layer, uint32_t *index);

/* Shape (rows x cols) a tensor of this role has in a model with these
 * hyperparameters; returns 0 for unknown roles. Per-layer roles are
 * consecutive: TLM_ROLE_ATTN_NORM + k for k < TLM_LAYER_ROLES. */
int tlm_role_shape(const tlm_hparams *hp, uint32_t role, uint32_t *rows, uint32_t *cols);

/* The k-th per-layer role (k < TLM_LAYER_ROLES), in canonical order. */
static inline tlm_role tlm_layer_role(uint32_t k) { return (tlm_role)(TLM_ROLE_ATTN_NORM + k); }

/* Checks hyperparameters against the rules every image obeys (nonzero,
 * within limits, heads dividing dim, even head size, kv heads dividing
 * heads, finite positive theta, eps in (0, 1)). */
tlm_status tlm_hparams_check(const tlm_hparams *hp, tlm_error *err);

/* Name of a role ("wq", "tok_embed", ...). */
const char *tlm_role_name(uint32_t role);

/* kv_dim = dim * n_kv_heads / n_heads */
uint32_t tlm_hparams_kv_dim(const tlm_hparams *hp);

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32) of n bytes, continuing from crc. */
uint32_t tlm_crc32(uint32_t crc, const void *data, size_t n);

#ifdef __cplusplus
}
#endif
#endif
