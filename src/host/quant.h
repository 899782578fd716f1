/* Post-training quantization and the quantizer that quantization-aware
 * training runs in its forward pass: ternary (absmean or threshold, with an
 * optional exact sparsity per row) and int8, scales per tensor, row or
 * group, packed into the image's weight types. */
#ifndef TLM_HOST_QUANT_H
#define TLM_HOST_QUANT_H

#include <stdint.h>

#include "image_build.h"
#include "train/params.h"
#include "tritlm/model.h"

typedef enum tlm_qmethod { TLM_QM_ABSMEAN = 0, TLM_QM_THRESHOLD = 1 } tlm_qmethod;

/* How tensors are packed: a fixed ternary type, or per tensor the smallest
 * of t3 and ts. */
#define TLM_PACK_AUTO 0xFFFFu

/* Most layers a per-layer plan covers (what a checkpoint's header holds). */
#define TLM_QUANT_PLAN_MAX 64u

typedef struct tlm_quant_cfg {
    tlm_qmethod method;
    float sparsity;       /* < 0: the method's own; else the fraction of zeros in every row */
    float threshold;      /* threshold method: zero when |w| <= threshold * mean|w| (default 0.7) */
    uint16_t scale_kind;  /* TLM_SCALE_TENSOR, _ROW or _GROUP for ternary tensors */
    uint32_t group;       /* weights per scale group (TLM_SCALE_GROUP) */
    uint16_t pack;        /* TLM_WTYPE_T2, _T3, _TS, TLM_PACK_AUTO, or TLM_WTYPE_I8 (int8 per row, not ternary) */
    uint16_t embed;       /* embedding and classifier: TLM_WTYPE_F32, _I8, a ternary type, or TLM_PACK_AUTO */
    /* A per-layer plan (hardware-aware quantization, --layers/--device): if
     * n_plan is not 0 it is the model's layer count and layer l's seven
     * matrices take plan[l] (TLM_WTYPE_F32, _I8, _T2, _T3 or _TS) instead of
     * pack; the embedding and classifier still follow embed. */
    uint16_t n_plan;
    uint8_t plan[TLM_QUANT_PLAN_MAX];
    int keep_ternary;     /* tlm_quant_image (post-training quantization): a tensor that is ternary
                           * already keeps its trits and scales (tlm_ternary_keep); not saved in
                           * checkpoints, 0 for quantization-aware training */
} tlm_quant_cfg;

void tlm_quant_defaults(tlm_quant_cfg *c);

/* Checks a configuration against a model's shapes. */
tlm_status tlm_quant_check(const tlm_quant_cfg *c, const tlm_hparams *hp, tlm_error *err);

/* Ternarizes a rows x cols matrix. trits (rows*cols, values -1/0/+1) and
 * scales (as many as the scale kind implies) may be NULL; deq, if not NULL,
 * receives trit * scale (what the integer kernels compute with). */
void tlm_ternarize(const float *w, uint32_t rows, uint32_t cols, const tlm_quant_cfg *c, int8_t *trits,
                   float *scales, float *deq);

/* A tensor that is ternary already at c's granularity (every scale unit's
 * nonzeros of one magnitude, as a ternary model expanded to fp32 is) and
 * no sparsity asked for: writes its trits and scales as they are and
 * returns 1, so that quantizing a ternary model again (to change its
 * packing) loses nothing where absmean would rescale it to mean |w|.
 * Returns 0 for any other tensor (trits and scales then hold partial
 * output: quantize it with tlm_ternarize). */
int tlm_ternary_keep(const float *w, uint32_t rows, uint32_t cols, const tlm_quant_cfg *c, int8_t *trits,
                     float *scales);

/* Quantization-aware training from a ternary model: latent weights that
 * the quantizer maps back to the model's own ternary weights. absmean's
 * scale is mean |w| over a unit, so each unit's nonzeros are multiplied by
 * len / nnz (threshold's fitted scale needs no change). Tensors that are
 * not ternary at c's granularity are left alone. */
void tlm_quant_latent_init(tlm_params *p, const tlm_quant_cfg *c);

/* Symmetric int8 per row: q = round(w / s), s = max|w| / 127. */
void tlm_int8_rows(const float *w, uint32_t rows, uint32_t cols, int8_t *q, float *scales, float *deq);

/* The type tensor (role, layer) gets under c: TLM_WTYPE_F32 (left as it
 * is, as norms always are), _I8, a ternary type, or TLM_PACK_AUTO; the
 * embedding and classifier follow c->embed. */
uint32_t tlm_quant_type_of(const tlm_quant_cfg *c, uint32_t role, uint32_t layer);

/* dst = the quantize-dequantize image of src (norms copied). dst must have
 * src's shapes. Used by quantization-aware training every step. */
void tlm_quant_fake(const tlm_params *src, tlm_params *dst, const tlm_quant_cfg *c);

/* Packs src into a quantized model image. */
tlm_status tlm_quant_image(const tlm_params *src, const tlm_quant_cfg *c, const tlm_vocab *v, uint32_t bos,
                           uint32_t eos, uint8_t **image, size_t *bytes, tlm_error *err);

/* Packing of one row (exposed for tests). Each writes row_bytes bytes. */
void tlm_pack_t2(uint8_t *out, const int8_t *t, uint32_t cols);
void tlm_pack_t3(uint8_t *out, const int8_t *t, uint32_t cols);
/* k_max: the tensor's TS parameter (most nonzeros of any row). */
void tlm_pack_ts(uint8_t *out, const int8_t *t, uint32_t cols, uint32_t k_max);

#endif
