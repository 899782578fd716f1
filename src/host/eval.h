/* Story-level next-token evaluation (../shared/data/README.md). */
#ifndef TLM_HOST_EVAL_H
#define TLM_HOST_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/dp.h"
#include "tritlm/model.h"

typedef struct tlm_eval_opts {
    uint32_t ctx;        /* truncate stories to this many tokens; 0: seq_len */
    int threads;         /* worker threads; <= 0: all online cores */
    int token_by_token;  /* use the device decoder one position at a time */
    uint32_t rt_flags;   /* the decoder's flags (TLM_RT_KV_INT8), with token_by_token */
    int progress;        /* report progress on stderr */
    int float_acts;      /* quantized tensors get float activations (dequantize-then-fp32 reference) */
    const tlm_privatizer *priv; /* if set: the model reads privatized inputs, predicts the original next tokens */
    int priv_seeded;     /* 1: story i's noise comes from ChaCha20 seeded with (priv_seed, i); 0: the host CSPRNG */
    uint64_t priv_seed;
} tlm_eval_opts;

typedef struct tlm_eval_result {
    double loss;          /* mean cross-entropy, nats */
    double perplexity;
    double top1;
    uint64_t tokens;      /* predicted tokens */
    uint64_t stories;
    uint64_t truncated;
    double seconds;
    double tokens_per_s;  /* processed tokens (including BOS positions) per second */
    uint64_t privatized, unchanged; /* with priv: input tokens privatized, and those that came out unchanged */
} tlm_eval_result;

tlm_status tlm_eval_text(const tlm_model *m, const char *text, size_t len, const tlm_eval_opts *opts,
                         tlm_eval_result *res, tlm_error *err);

#endif
