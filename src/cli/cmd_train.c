/* tritlm train: train a model from text, continue one, or resume a run. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/train/trainer.h"
#include "../host/privacy.h"
#include "cli.h"

static const char help[] =
    "usage: tritlm train --data FILE [--val FILE] (--tokenizer TOK.bin | --init MODEL.tlm | --resume CKPT)\n"
    "                    (--steps N | --minutes M) -o MODEL.tlm [options]\n"
    "\n"
    "Trains a Llama-style model on stories separated by <|endoftext|> lines: random\n"
    "windows of --ctx tokens (BOS at story starts), AdamW, cosine schedule with warm-up,\n"
    "gradient clipping, fp32 weights, all cores. Deterministic for a seed and a thread\n"
    "count. Beside MODEL.tlm it writes MODEL.tlm.train.csv, .val.csv, .png (gnuplot)\n"
    "and a checkpoint MODEL.tlm.ckpt (atomically) that --resume continues exactly.\n"
    "\n"
    "model (fresh models only; --init and --resume take the model's own):\n"
    "      --tokenizer FILE   llama2.c tokenizer (see 'tritlm tokenizer train')\n"
    "      --dim N            width (default 64)\n"
    "      --hidden N         feed-forward width (default 172)\n"
    "      --layers N         (default 5)\n"
    "      --heads N          (default 8)\n"
    "      --kv-heads N       (default 4, or --heads when 4 does not divide it)\n"
    "      --separate-classifier  do not share the classifier with the embedding\n"
    "training:\n"
    "      --split lines      every non-empty line of --data and --val is one story\n"
    "                         (utterances, messages); default: split on <|endoftext|>\n"
    "      --label-loss       with --split lines of the form TEXT<TAB>LABEL: the loss only\n"
    "                         on each label and the line's end, not on the text (a model\n"
    "                         for 'tritlm classify'); validation then scores the labels\n"
    "                         and line ends, and the run ends by classifying --val among\n"
    "                         --data's labels (accuracy and macro F1; val_accuracy and\n"
    "                         val_macro_f1 in --json)\n"
    "      --privatize M      the model reads its inputs privatized by mechanism M (dx or\n"
    "      --epsilon E        rr, as 'tritlm privatize', E per token; fresh noise every step;\n"
    "                         validation with fixed noise) and learns to predict the\n"
    "                         original text: a model for privatized input (labels stay clean)\n"
    "      --init FILE        start from this model (fine-tuning), or from a checkpoint's\n"
    "                         weights with a fresh optimizer (a QAT run's latent fp32\n"
    "                         weights: the next stage of quantization-aware training)\n"
    "      --init-average     with --init CKPT: start from its weight average (--ema), the\n"
    "                         weights its image was saved from, not its latest weights\n"
    "      --resume FILE      continue from a checkpoint\n"
    "      --ctx N            window length; a fresh model's seq_len (default 256; with\n"
    "                         --init, the model's seq_len, at most 256)\n"
    "      --batch N          windows per step (default 16)\n"
    "      --steps N          steps to run\n"
    "      --minutes M        time budget; the step count is fixed after timing 5 steps\n"
    "      --lr X             peak learning rate (default 1e-3)\n"
    "      --min-lr-frac X    final learning rate as a fraction of the peak (default 0.1)\n"
    "      --warmup N         warm-up steps (default min(100, steps/10))\n"
    "      --weight-decay X   decoupled, matrices only (default 0.1)\n"
    "      --clip X           gradient norm limit, 0 for none (default 1.0)\n"
    "      --dropout P        drop each attention/feed-forward output with probability P\n"
    "                         before the residual sum (default 0)\n"
    "      --ema D            validate and save a running average of the weights, decay D\n"
    "                         in (0, 1), e.g. 0.999 (default: the weights themselves)\n"
    "      --seed N           initialization and data order (default 1337)\n"
    "      --threads N        (default: all cores)\n"
    "      --eval-every N     validation every N steps (default 200)\n"
    "      --ckpt-every N     checkpoint every N steps (default 200)\n"
    "      --tensors G        train only these tensors, the rest frozen: a comma list of\n"
    "                         norms, embed, attn, ffn, layerN, all (default all; checkpoints\n"
    "                         record it and a run's adapters: --resume goes on with them)\n"
    "      --lora R           low-rank adapters: each matrix of --tensors (default attn,ffn)\n"
    "                         trains as W + (alpha/R) B A with A (R x cols) and B (rows x R),\n"
    "                         W frozen (norms in --tensors train as they are); -o gets the\n"
    "                         merged model. Far fewer values to train and to keep Adam state\n"
    "                         for (docs/TRAINING.md compares it with full fine-tuning)\n"
    "      --lora-alpha A     the adapters' scale numerator (default R: scale 1)\n"
    "  -o, --output FILE      trained model image\n"
    "quantization-aware training (see 'tritlm quantize --help' for the quantizer options):\n"
    "      --qat              ternary forward pass, straight-through gradients; -o gets the\n"
    "                         quantized model, the checkpoint keeps the latent fp32 weights\n"
    "      --teacher FILE     distill from this model's logits (same vocabulary; --qat or not)\n"
    "      --distill-weight A weight of KL(teacher || model) in (0, 1] (default 0.5)\n"
    "      --json             print a JSON summary on stdout\n"
    "  -h, --help             this text\n";

enum { O_DATA = 256, O_VAL, O_TOK, O_INIT, O_RESUME, O_DIM, O_HIDDEN, O_LAYERS, O_HEADS, O_KV, O_SEP, O_CTX,
       O_BATCH, O_STEPS, O_MIN, O_LR, O_MINLR, O_WARM, O_WD, O_CLIP, O_SEED, O_THREADS, O_EVAL, O_CKPT, O_JSON,
       O_STOP, O_QAT, O_TEACHER, O_DWEIGHT, O_DROP, O_EMA, O_INITAVG, O_SPLIT, O_LORA, O_LORA_ALPHA, O_TENSORS, O_LABEL_LOSS,
       O_PRIV, O_EPS };

/* Options of the training loop, shared with 'tritlm quantize --qat'. */
const struct option cli_train_loop_options[] = {
    {"data", required_argument, 0, O_DATA}, {"val", required_argument, 0, O_VAL},
    {"resume", required_argument, 0, O_RESUME}, {"ctx", required_argument, 0, O_CTX},
    {"batch", required_argument, 0, O_BATCH}, {"steps", required_argument, 0, O_STEPS},
    {"minutes", required_argument, 0, O_MIN}, {"lr", required_argument, 0, O_LR},
    {"min-lr-frac", required_argument, 0, O_MINLR}, {"warmup", required_argument, 0, O_WARM},
    {"weight-decay", required_argument, 0, O_WD}, {"clip", required_argument, 0, O_CLIP},
    {"seed", required_argument, 0, O_SEED}, {"threads", required_argument, 0, O_THREADS},
    {"eval-every", required_argument, 0, O_EVAL}, {"ckpt-every", required_argument, 0, O_CKPT},
    {"stop-after", required_argument, 0, O_STOP}, {"dropout", required_argument, 0, O_DROP},
    {"ema", required_argument, 0, O_EMA}, {"split", required_argument, 0, O_SPLIT},
    {"lora", required_argument, 0, O_LORA}, {"lora-alpha", required_argument, 0, O_LORA_ALPHA},
    {"label-loss", no_argument, 0, O_LABEL_LOSS}, {"privatize", required_argument, 0, O_PRIV},
    {"epsilon", required_argument, 0, O_EPS}, {0, 0, 0, 0}};

int cli_train_loop_option(const char *cmd, int c, const char *arg, tlm_train_opts *o)
{
    uint32_t u;
    float f;
#define U32(name, lo, hi, dst)                                                                 \
    do {                                                                                       \
        if (!cli_parse_u32(arg, lo, hi, &u))                                                   \
            return cli_usage_error(cmd, "%s expects an integer in [%u, %u], got '%s'", name,   \
                                   (unsigned)(lo), (unsigned)(hi), arg);                       \
        dst = u;                                                                               \
    } while (0)
#define F32(name, lo, hi, dst)                                                                         \
    do {                                                                                               \
        if (!cli_parse_float(arg, lo, hi, &f))                                                         \
            return cli_usage_error(cmd, "%s expects a number in [%g, %g], got '%s'", name, (double)(lo), \
                                   (double)(hi), arg);                                                 \
        dst = f;                                                                                       \
    } while (0)
    switch (c) {
    case O_DATA: o->data = arg; break;
    case O_VAL: o->val = arg; break;
    case O_SPLIT:
        if (cli_parse_split(cmd, arg, &o->separator)) return TLM_EXIT_USAGE;
        break;
    case O_LABEL_LOSS: o->label_loss = 1; break;
    case O_PRIV:
        if (!(o->priv_mech = (int)tlm_mech_parse(arg))) return cli_usage_error(cmd, "--privatize expects dx or rr, got '%s'", arg);
        break;
    case O_EPS:
        if (!tlm_epsilon_parse(arg, &o->priv_epsilon)) return cli_usage_error(cmd, "--epsilon expects a positive number or inf, got '%s'", arg);
        break;
    case O_RESUME: o->resume = arg; break;
    case O_CTX: U32("--ctx", 2, 1u << 20, o->ctx); break;
    case O_BATCH: U32("--batch", 1, 1u << 16, o->batch); break;
    case O_STEPS: U32("--steps", 1, 0xFFFFFFFFu, o->steps); break;
    case O_MIN: F32("--minutes", 0.01f, 1e6f, o->minutes); break;
    case O_LR: F32("--lr", 1e-9f, 1.0f, o->lr); break;
    case O_MINLR: F32("--min-lr-frac", 0.0f, 1.0f, o->min_lr_frac); break;
    case O_WARM: U32("--warmup", 0, 0xFFFFFFFFu, o->warmup); break;
    case O_WD: F32("--weight-decay", 0.0f, 10.0f, o->weight_decay); break;
    case O_CLIP: F32("--clip", 0.0f, 1e9f, o->clip); break;
    case O_DROP: F32("--dropout", 0.0f, 0.9f, o->dropout); break;
    case O_EMA: F32("--ema", 0.0f, 0.99999f, o->ema); break;
    case O_LORA: U32("--lora", 1, 4096, o->lora_rank); break;
    case O_LORA_ALPHA: F32("--lora-alpha", 1e-6f, 1e6f, o->lora_alpha); break;
    case O_SEED: U32("--seed", 0, 0xFFFFFFFFu, o->seed); break;
    case O_THREADS: U32("--threads", 1, 1024, o->threads); break;
    case O_EVAL: U32("--eval-every", 0, 0xFFFFFFFFu, o->eval_every); break;
    case O_CKPT: U32("--ckpt-every", 0, 0xFFFFFFFFu, o->ckpt_every); break;
    case O_STOP: U32("--stop-after", 1, 0xFFFFFFFFu, o->stop_after); break;
    default: return -1;
    }
#undef U32
#undef F32
    return 0;
}

int cmd_train(int argc, char **argv)
{
    static const struct option own[] = {
        {"tokenizer", required_argument, 0, O_TOK}, {"init", required_argument, 0, O_INIT},
        {"init-average", no_argument, 0, O_INITAVG},
        {"dim", required_argument, 0, O_DIM}, {"hidden", required_argument, 0, O_HIDDEN},
        {"layers", required_argument, 0, O_LAYERS}, {"heads", required_argument, 0, O_HEADS},
        {"kv-heads", required_argument, 0, O_KV}, {"separate-classifier", no_argument, 0, O_SEP},
        {"qat", no_argument, 0, O_QAT}, {"teacher", required_argument, 0, O_TEACHER},
        {"distill-weight", required_argument, 0, O_DWEIGHT}, {"tensors", required_argument, 0, O_TENSORS},
        {"output", required_argument, 0, 'o'}, {"json", no_argument, 0, O_JSON}, {"help", no_argument, 0, 'h'}};
    enum { N_OWN = sizeof own / sizeof own[0], N_Q = CLI_QUANT_OPTION_COUNT - 1 };
    struct option opts[N_OWN + N_Q + CLI_TRAIN_LOOP_OPTION_COUNT];
    memcpy(opts, own, sizeof own);
    memcpy(opts + N_OWN, cli_quant_options, N_Q * sizeof cli_quant_options[0]);
    memcpy(opts + N_OWN + N_Q, cli_train_loop_options, sizeof cli_train_loop_options);
    tlm_train_opts o;
    tlm_train_defaults(&o);
    tlm_quant_cfg q;
    tlm_quant_defaults(&q);
    int json = 0, dims_given = 0, c, qat = 0, quant_given = 0, scale_given = 0, kv_given = 0;
    float dweight = 0.5f;
    uint32_t u;
    optind = 1;
    opterr = 0;
#define U32(name, lo, hi, dst)                                                                     \
    do {                                                                                           \
        if (!cli_parse_u32(optarg, lo, hi, &u))                                                    \
            return cli_usage_error("train", "%s expects an integer in [%u, %u], got '%s'", name, \
                                   (unsigned)(lo), (unsigned)(hi), optarg);                        \
        dst = u;                                                                                   \
        dims_given = 1;                                                                            \
    } while (0)
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        switch (c) {
        case O_TOK: o.tokenizer = optarg; break;
        case O_INIT: o.init = optarg; break;
        case O_INITAVG: o.init_average = 1; break;
        case O_DIM: U32("--dim", 2, 65536, o.hp.dim); break;
        case O_HIDDEN: U32("--hidden", 1, 1u << 20, o.hp.hidden_dim); break;
        case O_LAYERS: U32("--layers", 1, 1024, o.hp.n_layers); break;
        case O_HEADS: U32("--heads", 1, 65536, o.hp.n_heads); break;
        case O_KV: U32("--kv-heads", 1, 65536, o.hp.n_kv_heads); kv_given = 1; break;
        case O_SEP: o.hp.shared_classifier = 0; dims_given = 1; break;
        case O_JSON: json = 1; break;
        case O_QAT: qat = 1; break;
        case O_TEACHER: o.teacher = optarg; break;
        case O_TENSORS: o.train_only = optarg; break;
        case O_DWEIGHT:
            if (!cli_parse_float(optarg, 0.001f, 1.0f, &dweight))
                return cli_usage_error("train", "--distill-weight expects a number in (0, 1], got '%s'", optarg);
            break;
        case 'o': o.out = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: {
            int r = cli_quant_option("train", c, optarg, &q, &scale_given);
            if (r == 0) quant_given = 1;
            if (r < 0) r = cli_train_loop_option("train", c, optarg, &o);
            if (r > 0) return r;
            if (r < 0) return cli_bad_option("train", argv, c);
        }
        }
    }
#undef U32
    if (optind != argc) return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    if (!o.data) return cli_usage_error("train", "missing --data FILE");
    if (!o.out) return cli_usage_error("train", "missing -o MODEL.tlm");
    {
        const char *in[] = {o.data, o.val, o.tokenizer, o.teacher};
        if (cli_refuse_clobber("train", o.out, in, 4)) return TLM_EXIT_USAGE;
    }
    if ((o.init != NULL) + (o.resume != NULL) + (o.tokenizer != NULL) != 1)
        return cli_usage_error("train", "give exactly one of --tokenizer (fresh model), --init (continue a model), --resume (checkpoint)");
    if (o.init_average && !o.init) return cli_usage_error("train", "--init-average goes with --init CKPT");
    if (dims_given && !o.tokenizer)
        return cli_usage_error("train", "model dimensions come from --init or --resume; --dim and friends are for fresh models");
    if (!o.resume && !o.steps && !(o.minutes > 0)) return cli_usage_error("train", "give --steps N or --minutes M");
    if (o.steps && o.minutes > 0) return cli_usage_error("train", "give --steps or --minutes, not both");
    if (o.hp.n_heads > o.hp.dim || o.hp.dim % o.hp.n_heads)
        return cli_usage_error("train", "--heads %u must divide --dim %u", o.hp.n_heads, o.hp.dim);
    if (!kv_given && (o.hp.n_kv_heads > o.hp.n_heads || o.hp.n_heads % o.hp.n_kv_heads)) o.hp.n_kv_heads = o.hp.n_heads;
    if (o.hp.n_kv_heads > o.hp.n_heads || o.hp.n_heads % o.hp.n_kv_heads)
        return cli_usage_error("train", "--kv-heads %u must divide --heads %u", o.hp.n_kv_heads, o.hp.n_heads);
    if ((o.hp.dim / o.hp.n_heads) % 2u) return cli_usage_error("train", "head size --dim/--heads must be even");
    if (quant_given && !qat) return cli_usage_error("train", "quantizer options (--method, --pack, ...) go with --qat");
    if (cli_quant_finish("train", &q, scale_given)) return TLM_EXIT_USAGE;
    if (qat) o.qat = &q;
    if (o.lora_alpha > 0.0f && !o.lora_rank) return cli_usage_error("train", "--lora-alpha goes with --lora R");
    if (o.lora_rank && (qat || o.resume))
        return cli_usage_error("train", "--lora does not go with %s", qat ? "--qat (a quantized forward pass needs whole matrices)"
                                                                          : "--resume (the checkpoint records its adapters)");
    if (o.train_only && o.resume)
        return cli_usage_error("train", "--tensors does not go with --resume (the checkpoint records its selection)");
    if (o.teacher) o.distill = dweight;
    o.progress = isatty(2);

    tlm_train_report r;
    tlm_error err;
    if (tlm_train(&o, &r, &err)) return cli_fail("train", &err);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", o.out);
        cJSON_AddNumberToObject(j, "params", (double)r.params);
        cJSON_AddNumberToObject(j, "steps", (double)r.steps);
        cJSON_AddNumberToObject(j, "tokens", (double)r.tokens);
        cJSON_AddNumberToObject(j, "train_loss", r.train_loss);
        if (o.val) {
            cJSON_AddNumberToObject(j, "val_loss", r.val_loss);
            cJSON_AddNumberToObject(j, "val_top1", r.val_top1);
            if (r.val_classified) {
                cJSON_AddNumberToObject(j, "val_accuracy", r.val_accuracy);
                cJSON_AddNumberToObject(j, "val_macro_f1", r.val_macro_f1);
            }
        }
        cJSON_AddNumberToObject(j, "seconds", r.seconds);
        cJSON_AddNumberToObject(j, "tokens_per_s", r.tokens_per_s);
        char *s = cJSON_PrintUnformatted(j);
        puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        fprintf(stderr, "train: %llu steps, %llu tokens in %.1f s (%.0f tok/s); last train loss %.4f", (unsigned long long)r.steps,
                (unsigned long long)r.tokens, r.seconds, r.tokens_per_s, r.train_loss);
        if (o.val) fprintf(stderr, ", validation loss %.4f top-1 %.4f", r.val_loss, r.val_top1);
        if (r.val_classified) fprintf(stderr, ", classification accuracy %.4f", r.val_accuracy);
        fprintf(stderr, "\nwrote %s\n", o.out);
    }
    return 0;
}

_Static_assert(sizeof cli_train_loop_options / sizeof cli_train_loop_options[0] == CLI_TRAIN_LOOP_OPTION_COUNT,
               "cli.h's option count is stale");
