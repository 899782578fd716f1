/* Token-by-token decoding on the device: the forward pass of a Llama-style
 * model over a caller-provided arena. No allocation, no I/O. */
#ifndef TRITLM_RUNTIME_H
#define TRITLM_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/model.h"
#include "tritlm/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tlm_runtime {
    const tlm_model *model;
    uint32_t ctx;          /* positions the KV cache holds */
    float *x, *xb, *xb2;   /* dim */
    float *q;              /* dim */
    float *hb, *hb2;       /* hidden_dim */
    float *att;            /* ctx (one head at a time) */
    float *rope;           /* head_size: (cos, sin) pairs for the current position */
    float *logits;         /* vocab_size */
    float *key_cache;      /* n_layers * ctx * kv_dim (NULL with TLM_RT_KV_INT8) */
    float *value_cache;    /* n_layers * ctx * kv_dim (NULL with TLM_RT_KV_INT8) */
    /* TLM_RT_KV_INT8: keys and values as int8 times a power of two, one
     * exponent per layer, position and kv head (value = q * 2^-exp; the
     * exponents of one layer and kv head are contiguous over positions);
     * keys by position, values transposed (per layer, one row of ctx
     * rounded up to 4 positions per dimension) */
    int8_t *key_q8, *value_q8;
    int8_t *key_exp, *value_exp;
    int32_t *att_s;        /* ctx: one query head's scores */
    int16_t *att_w;        /* 2 * ctx rounded up to 4: two query heads' softmax weights */
    float *kbuf, *vbuf;    /* kv_dim: this position's key and value before quantization */
    int8_t *q_q8;          /* 2 * head_size: two query heads quantized */
    uint32_t flags;
    void *sample_scratch;  /* tlm_sampler_scratch_bytes(vocab_size) */
    int8_t *act_q8;        /* TLM_ACT_Q8_(LUT_)BYTES(max(dim, hidden_dim)): quantized activations */
    tlm_act_q8 act;        /* the vector act_q8 holds ... */
    const float *act_src;  /* ... quantized from this buffer (NULL: none) */
    const float *gains;    /* NULL: the image's norm gains; else tlm_runtime_use_gains's */
    /* TLM_RT_ADAPTER: for each tensor of the image (by table index), where
     * the attached update's low-rank entry for it starts (a byte offset into
     * the update; 0 where none) */
    uint32_t *adapter_at;
    const void *adapter;   /* the attached update (NULL: none) */
} tlm_runtime;

/* Runtime options (flags). */
enum {
    /* Keep the KV cache in int8 times a power of two per layer, position
     * and kv head (a quarter of the fp32 cache's RAM, plus 2 bytes per
     * layer, position and kv head), and run attention on integers: exact
     * int32 scores of the int8 query head against the keys (brought to the
     * coarsest key exponent by a shift), a fixed-point softmax (2^-x from
     * tables, relative error < 1e-4), the values summed in int32 with the
     * weights normalized to 2^14. Needs a head size of at most
     * TLM_RT_MAX_HEAD. */
    TLM_RT_KV_INT8 = 1u,
    /* Reserve room (4 bytes per tensor of the image) for an adapter:
     * see tlm_runtime_use_adapter. */
    TLM_RT_ADAPTER = 2u
};
#define TLM_RT_MAX_HEAD 128u
/* The largest rank of an adapter's entries (tlm_runtime_use_adapter keeps
 * one float per rank on the stack while it applies an entry). */
#define TLM_RT_MAX_ADAPTER_RANK 64u

/* Bytes of arena the runtime needs for model m at context length ctx
 * (including alignment slack, so any arena address works). 0 if ctx is 0
 * or larger than the model's seq_len, or the size overflows. */
size_t tlm_runtime_arena_size(const tlm_model *m, uint32_t ctx);
size_t tlm_runtime_arena_size_flags(const tlm_model *m, uint32_t ctx, uint32_t flags);

/* Carves the runtime's buffers from `arena`. */
tlm_status tlm_runtime_init(tlm_runtime *rt, const tlm_model *m, uint32_t ctx,
                            void *arena, size_t arena_bytes, tlm_error *err);
tlm_status tlm_runtime_init_flags(tlm_runtime *rt, const tlm_model *m, uint32_t ctx, uint32_t flags,
                                  void *arena, size_t arena_bytes, tlm_error *err);

/* Decodes with these RMSNorm gains instead of the image's: (2 n_layers + 1)
 * * dim floats in tlm_tune's layout (layer l's attention norm at 2 l dim,
 * its feed-forward norm at (2 l + 1) dim, the final norm at 2 n_layers
 * dim), e.g. tlm_tune's gains after tuning on the device's text, so that
 * the device uses what it learned before any federated round. They are
 * read, not copied: they must stay valid and unchanged while decoding
 * (copy them out before the tuner's arena is reused). NULL goes back to
 * the image's. Positions already in the KV cache keep what they were
 * computed with. */
void tlm_runtime_use_gains(tlm_runtime *rt, const float *gains);

/* Decodes with a low-rank update on top of the image, which stays as it is
 * (read in place, in flash on a device): a federated update message
 * (tritlm/fed.h; 'tritlm fed update --lora R --rank R' writes one) whose
 * entries are all TLM_FED_LOWRANK_I8, made for this very image (its
 * base_crc is checked), of rank at most TLM_RT_MAX_ADAPTER_RANK. Each
 * product with a matrix W that has an entry then computes W x + B (A x)
 * with the entry's int8 factors: on integer paths A against the int8
 * activations (exact int32 sums), and the embedding row of a token gets
 * its row of B A added (when the classifier is the shared embedding, the
 * logits follow). So a ternary model in flash can be personalized with an
 * update of a few kilobytes, in place of a merged fp32 model. The runtime
 * must have been initialized with TLM_RT_ADAPTER. The update is read, not
 * copied: it must stay valid and unchanged while decoding. NULL (bytes 0)
 * detaches it. Positions already in the KV cache keep what they were
 * computed with. On error nothing changes. */
tlm_status tlm_runtime_use_adapter(tlm_runtime *rt, const void *update, size_t bytes, tlm_error *err);
/* The checks tlm_runtime_use_adapter makes, without a runtime. */
tlm_status tlm_runtime_adapter_check(const tlm_model *m, const void *update, size_t bytes, tlm_error *err);

/* Runs the model on `token` at position `pos` (0-based, < ctx), appending
 * to the KV cache, and points *logits at vocab_size logits (valid until the
 * next call). Positions must be fed in order 0, 1, 2, ... */
tlm_status tlm_runtime_forward(tlm_runtime *rt, uint32_t token, uint32_t pos, float **logits);

#ifdef __cplusplus
}
#endif
#endif
