/* Story-level next-token evaluation (../shared/data/README.md). */
#ifndef TLM_HOST_EVAL_H
#define TLM_HOST_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/model.h"

typedef struct tlm_eval_opts {
    uint32_t ctx;        /* truncate stories to this many tokens; 0: seq_len */
    int threads;         /* worker threads; <= 0: all online cores */
    int token_by_token;  /* use the device decoder one position at a time */
    int progress;        /* report progress on stderr */
    int float_acts;      /* quantized tensors get float activations (dequantize-then-fp32 reference) */
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
} tlm_eval_result;

tlm_status tlm_eval_text(const tlm_model *m, const char *text, size_t len, const tlm_eval_opts *opts,
                         tlm_eval_result *res, tlm_error *err);

#endif
