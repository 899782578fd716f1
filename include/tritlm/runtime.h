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
    /* TLM_RT_KV_INT8: keys and values as int8 with one scale per layer and
     * position (n_layers * ctx scales each) */
    int8_t *key_q8, *value_q8;
    float *key_scale, *value_scale;
    float *kbuf, *vbuf;    /* kv_dim: this position's key and value before quantization */
    int8_t *q_q8;          /* head_size: one query head quantized */
    uint32_t flags;
    void *sample_scratch;  /* tlm_sampler_scratch_bytes(vocab_size) */
    int8_t *act_q8;        /* TLM_ACT_Q8_BYTES(max(dim, hidden_dim)): quantized activations */
    tlm_act_q8 act;        /* the vector act_q8 holds ... */
    const float *act_src;  /* ... quantized from this buffer (NULL: none) */
} tlm_runtime;

/* Runtime options (flags). */
enum {
    /* Keep the KV cache in int8, one absmax scale per layer and position
     * for keys and one for values (a quarter of the fp32 cache's RAM, plus
     * 8 bytes per layer and position); attention
     * scores become exact int32 dot products of the int8 query head and
     * keys, then scaled. */
    TLM_RT_KV_INT8 = 1u
};

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

/* Runs the model on `token` at position `pos` (0-based, < ctx), appending
 * to the KV cache, and points *logits at vocab_size logits (valid until the
 * next call). Positions must be fed in order 0, 1, 2, ... */
tlm_status tlm_runtime_forward(tlm_runtime *rt, uint32_t token, uint32_t pos, float **logits);

#ifdef __cplusplus
}
#endif
#endif
