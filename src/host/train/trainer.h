/* The training loop behind `tritlm train`: data windows, multithreaded
 * gradients, AdamW, schedule, validation, logs, plots and checkpoints. */
#ifndef TLM_TRAIN_TRAINER_H
#define TLM_TRAIN_TRAINER_H

#include <stdint.h>

#include "../quant.h"
#include "tritlm/model.h"

typedef struct tlm_train_opts {
    const char *data, *val, *tokenizer, *init, *out, *resume;
    const char *separator; /* between stories of data and val; NULL: <|endoftext|> */
    tlm_hparams hp;        /* dimensions of a fresh model (vocab from the tokenizer, seq_len = ctx) */
    uint32_t batch, ctx;   /* sequences per step, window length (0: 256 for a fresh model,
                              else the model's seq_len, at most 256) */
    uint32_t warmup;       /* 0: min(100, steps / 10) */
    uint64_t steps;        /* exact number of steps, or 0 with minutes */
    double minutes;        /* time budget; the step count is chosen after timing the first steps */
    float lr, min_lr_frac, weight_decay, clip;
    float dropout;         /* residual-branch dropout rate in [0, 0.9] (default 0) */
    float ema;             /* decay of a running average of the weights, which is what
                              is validated and saved (0: none, the default) */
    int init_average;      /* with init a checkpoint: start from its weight average (what
                              its image was saved from) instead of its latest weights */
    uint64_t seed;
    int threads;           /* 0: all cores */
    uint32_t eval_every, ckpt_every;
    int progress;          /* 1: live line on a terminal, 0: a line every 30 s */
    int quiet;
    int no_plot;           /* logs, but no gnuplot curve (a model in a temporary folder) */
    uint64_t stop_after;   /* stop (with a checkpoint) after this step; tests use it to interrupt */
    /* Quantization-aware training: latent fp32 weights, quantized forward
     * (weights by qat, activations int8), straight-through backward; the
     * output image is the quantized model. A resumed run takes the
     * checkpoint's settings. */
    const tlm_quant_cfg *qat;
    const char *teacher;   /* distill from this model's logits (same vocabulary) */
    const char *train_only; /* tlm_params_select groups to train, the rest frozen (NULL: all);
                               not recorded in checkpoints, so not for runs that resume */
    float distill;         /* weight of KL(teacher || model) in the loss, in (0, 1] */
    uint32_t lora_rank;    /* > 0: low-rank adapters (lora.h) of this rank on the matrices of
                              train_only (default "attn,ffn"), whose gains, if selected, train
                              as they are; the output is the merged model. Not for --qat, and
                              not recorded in checkpoints, so not for runs that resume */
    float lora_alpha;      /* adapter scale alpha / rank (0: alpha = rank, scale 1) */
    int priv_mech;         /* tlm_mech (0: none): the model reads its inputs through this mechanism
                              at priv_epsilon per token, the noise drawn afresh each step, and
                              predicts the original next tokens (validation reads them so too,
                              with fixed noise); d_chi with the starting model's embeddings.
                              With label_loss the labels stay clean, as classify gives them. Not
                              recorded in checkpoints: give it again to --resume */
    float priv_epsilon;
    int label_loss;        /* with separator "\n": the loss only on each line's label (after its
                              last TAB) and the line's end (tlm_corpus_load's label_only); not
                              recorded in checkpoints: give it again to --resume */
} tlm_train_opts;

typedef struct tlm_train_report {
    uint64_t steps, tokens, params;
    uint64_t data_tokens;  /* tokens in the training text (tokens counts those processed) */
    double train_loss;     /* mean over the last 20 steps */
    double val_loss, val_top1;   /* with label_loss: over the labels and line ends only */
    size_t val_classified;       /* with label_loss and val: --val lines classified at the end, */
    double val_accuracy;         /* and the fraction right among the training text's labels, */
    double val_macro_f1;         /* and the F1 averaged over the labels (tlm_cls_report) */
    double seconds, tokens_per_s;
} tlm_train_report;

/* Fills defaults (lr 1e-3, batch 16, ctx 0: see ctx, ...). */
void tlm_train_defaults(tlm_train_opts *o);

tlm_status tlm_train(const tlm_train_opts *o, tlm_train_report *rep, tlm_error *err);

#endif
