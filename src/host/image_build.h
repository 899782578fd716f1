/* Building model images on the host: lay out header, tensor table,
 * tokenizer section and aligned tensors, then checksum and self-validate. */
#ifndef TLM_HOST_IMAGE_BUILD_H
#define TLM_HOST_IMAGE_BUILD_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/model.h"

typedef struct tlm_vocab {
    uint32_t n;
    uint32_t max_token_length;
    float *scores;
    uint8_t **strs;    /* each NUL-terminated for convenience */
    uint32_t *lens;
} tlm_vocab;

void tlm_vocab_free(tlm_vocab *v);
/* Copies the vocabulary stored in a model image. */
tlm_status tlm_vocab_from_model(const tlm_model *m, tlm_vocab *v, tlm_error *err);

typedef struct tlm_tensor_in {
    uint16_t role, layer, wtype, scale_kind;
    uint32_t rows, cols, group, param;
    const void *data;       /* exactly rows * row_bytes(wtype, cols) bytes */
    const float *scales;    /* as many as scale_kind implies */
} tlm_tensor_in;

/* Builds an image. Tensors must come in canonical order (docs/FORMAT.md).
 * *out is malloc'd (aligned to TLM_ALIGN) and validated before return. */
tlm_status tlm_image_build(const tlm_hparams *hp, uint32_t bos_id, uint32_t eos_id, const tlm_tensor_in *tensors,
                           uint32_t n_tensors, const tlm_vocab *vocab, uint8_t **out, size_t *out_bytes,
                           tlm_error *err);

/* Number of scales a tensor of this shape and scale kind carries. */
uint64_t tlm_scale_count(uint32_t kind, uint32_t rows, uint32_t cols, uint32_t group);

/* Recomputes and stores the CRC of an image (tests use it to build
 * hostile images that pass the checksum). */
void tlm_image_reseal(uint8_t *image, size_t bytes);

#endif
