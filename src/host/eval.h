/* Story-level next-token evaluation (../shared/data/README.md). */
#ifndef TLM_HOST_EVAL_H
#define TLM_HOST_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/dp.h"
#include "tritlm/model.h"

typedef struct tlm_eval_opts {
    uint32_t ctx;        /* truncate stories to this many tokens; 0: seq_len */
    int windows;         /* instead of truncating, score a longer story in windows of ctx
                            tokens, each starting fresh `stride` tokens after the last;
                            each window scores only the tokens no earlier window did, so
                            every token after BOS is predicted once */
    uint32_t stride;     /* with windows: 1..ctx-1; 0: ctx-1 (no overlap: a window's first
                            token is the last one's last) */
    const char *separator; /* between stories; NULL: <|endoftext|> ("\n": one per line) */
    int threads;         /* worker threads; <= 0: all online cores */
    int token_by_token;  /* use the device decoder one position at a time */
    uint32_t rt_flags;   /* the decoder's flags (TLM_RT_KV_INT8), with token_by_token */
    const void *adapter; /* with token_by_token: a low-rank update the decoder applies on top of the
                            model (tlm_runtime_use_adapter; TLM_RT_ADAPTER is then implied) */
    size_t adapter_bytes;
    int progress;        /* report progress on stderr */
    int float_acts;      /* quantized tensors get float activations (dequantize-then-fp32 reference) */
    const tlm_privatizer *priv; /* if set: the model reads privatized inputs, predicts the original next tokens */
    int priv_seeded;     /* 1: story i's noise comes from ChaCha20 seeded with (priv_seed, i); 0: the host CSPRNG */
    uint64_t priv_seed;
    int per_story;       /* also return each story's figures (tlm_eval_result.story) */
    int label_only;      /* with separator "\n": every line is TEXT<TAB>LABEL and only its label's
                            tokens and the line's end (BOS, as training saw the next line's) are
                            scored, what `train --label-loss` trains; a line too long for ctx
                            loses its first tokens instead of its end (not with windows) */
} tlm_eval_opts;

/* One story's figures: summed loss (nats) over its predicted tokens, and
 * how many of them the model's top-1 got right. */
typedef struct tlm_eval_story {
    double loss;
    uint32_t predicted, correct;
} tlm_eval_story;

typedef struct tlm_eval_result {
    double loss;          /* mean cross-entropy, nats */
    double perplexity;
    double top1;
    uint64_t tokens;      /* predicted tokens */
    uint64_t stories;
    uint64_t truncated;   /* stories cut to ctx (0 with windows) */
    uint64_t windows;     /* forward passes: one per story, more with windows */
    double seconds;
    double tokens_per_s;  /* processed tokens (including BOS positions) per second */
    uint64_t privatized, unchanged; /* with priv: input tokens privatized, and those that came out unchanged */
    tlm_eval_story *story; /* with opts->per_story: `stories` entries in file order (else NULL) */
} tlm_eval_result;

tlm_status tlm_eval_text(const tlm_model *m, const char *text, size_t len, const tlm_eval_opts *opts,
                         tlm_eval_result *res, tlm_error *err);
void tlm_eval_result_free(tlm_eval_result *res); /* the per-story figures, if any */

/* Model B against model A on the same stories, paired: the differences
 * B - A of per-token loss and of top-1 over all stories, each with a 95%
 * percentile bootstrap interval (`resamples` draws of the stories with
 * replacement, the same draw for both models; ChaCha20 from `seed`), and
 * how many stories B gives the lower mean loss. Both must have predicted
 * the same number of tokens in every story (else their tokenizers differ
 * and per-token losses do not compare: TLM_ERR_ARG). */
typedef struct tlm_paired {
    double loss_a, loss_b, top1_a, top1_b;
    double loss_diff, loss_lo, loss_hi;
    double top1_diff, top1_lo, top1_hi;
    size_t stories, b_lower, a_lower;
    uint32_t resamples;
} tlm_paired;

tlm_status tlm_eval_paired(const tlm_eval_story *a, const tlm_eval_story *b, size_t n, uint32_t resamples,
                           uint64_t seed, tlm_paired *out, tlm_error *err);

#endif
