/* tritlm quantize: a model to sparse ternary (or int8) weights, after
 * training (post-training quantization) or with quantization-aware
 * training on text. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/fileio.h"
#include "../host/model_file.h"
#include "../host/quant.h"
#include "../host/train/trainer.h"
#include "cli.h"
#include "hwaware.h"

static const char help[] =
    "usage: tritlm quantize -m MODEL.tlm -o OUT.tlm [--method absmean|threshold] [--sparsity S]\n"
    "                       [--scale tensor|row|group] [--group G] [--pack t2|t3|ts|auto]\n"
    "                       [--embed ternary|int8|fp32] [--layer-types T,T,...]\n"
    "                       [--device NAME --calib FILE [--min-tok-s R] [--deploy-ctx N] ...]\n"
    "                       [--qat --data FILE [--val FILE] (--steps N | --minutes M) [--distill [--distill-weight A]]]\n"
    "\n"
    "Quantizes the attention and feed-forward matrices to ternary weights {-a, 0, +a}\n"
    "(activations run as int8 per token), the embedding/classifier as chosen. Without\n"
    "--qat this is post-training quantization; with --qat the model is trained further\n"
    "on text with the quantizer in the forward pass (latent fp32 weights, straight-\n"
    "through gradients), optionally distilling from MODEL's own logits.\n"
    "\n"
    "quantizer:\n"
    "      --method M         absmean (BitNet: scale mean|w|, zero below half of it; default)\n"
    "                         or threshold (TWN: zero below --threshold x mean|w|, scale fitted)\n"
    "      --threshold X      threshold factor (default 0.7)\n"
    "      --sparsity S       exact fraction of zeros in every row, in [0, 1) (default: the method's own)\n"
    "      --scale K          tensor, row (default) or group\n"
    "      --group G          weights per scale group (implies --scale group)\n"
    "      --pack P           t2 (2 bits), t3 (5 per byte, 1.6 bits), ts (bitmap + signs), or auto:\n"
    "                         the smaller of t3 and ts for each tensor (default); int8 makes the\n"
    "                         matrices int8 per row instead of ternary\n"
    "      --embed E          embedding and classifier: int8 (default), ternary or fp32\n"
    "      --layer-types LIST one type per layer for its seven matrices, in order, e.g.\n"
    "                         int8,t3,t3,t3,int8 (fp32, int8, t2, t3 or ts; --pack is then unused)\n"
    "hardware-aware quantization (chooses --layer-types and --embed for a device):\n"
    "      --device NAME      a device from 'tritlm quantize --device list': its flash, RAM and\n"
    "                         clock bound the plan; each weight type is measured on its core in\n"
    "                         QEMU (the firmware of 'tritlm firmware'), each layer's loss at int8\n"
    "                         and ternary on --calib; the plan loses the least loss that fits,\n"
    "                         then runs fastest; the written model is run in QEMU to check it\n"
    "      --calib FILE       stories (<|endoftext|> between them; one per line with --split\n"
    "                         lines) to measure losses on\n"
    "      --calib-stories N  how many of them (default 100)\n"
    "      --deploy-ctx N     context the firmware holds, int8 KV cache (default 256, at most the model's)\n"
    "      --min-tok-s R      at least R tokens/s at the device's clock, one instruction per cycle\n"
    "      --ram-kb K, --flash-kb K, --mhz M   override the device's figures\n"
    "      --loss-quantum Q   loss resolution in nats per token: each layer's loss is counted in\n"
    "                         whole steps of Q, so smaller differences do not decide (default 0.002)\n"
    "quantization-aware training (the options of 'tritlm train' apply: --val, --lr, --batch,\n"
    "--ctx, --seed, --threads, --warmup, --eval-every, --ckpt-every, --resume CKPT, ...):\n"
    "      --qat              train with the quantizer in the loop\n"
    "      --distill          add KL(MODEL || student) to the loss\n"
    "      --distill-weight A weight of the KL term in (0, 1] (default 0.5)\n"
    "  -m, --model FILE       the model to quantize (fp32, or any type: it is expanded first;\n"
    "                         ternary tensors keep their trits and scales unless --sparsity\n"
    "                         or a coarser --scale is asked for, so --pack repacks losslessly)\n"
    "  -o, --output FILE      the quantized image (written atomically)\n"
    "      --json             print a JSON summary on stdout\n"
    "  -h, --help             this text\n";

enum {
    Q_METHOD = 1000, Q_THRESH, Q_SPARSITY, Q_SCALE, Q_GROUP, Q_PACK, Q_EMBED, Q_LAYERS, Q_QAT, Q_DISTILL, Q_DWEIGHT, Q_JSON,
    Q_DEVICE, Q_CALIB, Q_CALIB_STORIES, Q_DEPLOY_CTX, Q_MIN_TOKS, Q_RAM_KB, Q_FLASH_KB, Q_MHZ, Q_QUANTUM
};

static int parse_wtype(const char *s, uint16_t *out, int embed)
{
    if (!strcmp(s, "t2")) *out = TLM_WTYPE_T2;
    else if (!strcmp(s, "t3")) *out = TLM_WTYPE_T3;
    else if (!strcmp(s, "ts")) *out = TLM_WTYPE_TS;
    else if (!strcmp(s, "auto") || (embed && !strcmp(s, "ternary"))) *out = TLM_PACK_AUTO;
    else if (embed && !strcmp(s, "int8")) *out = TLM_WTYPE_I8;
    else if (embed && (!strcmp(s, "fp32") || !strcmp(s, "f32"))) *out = TLM_WTYPE_F32;
    else return 0;
    return 1;
}

const struct option cli_quant_options[] = {
    {"method", required_argument, 0, Q_METHOD}, {"threshold", required_argument, 0, Q_THRESH},
    {"sparsity", required_argument, 0, Q_SPARSITY}, {"scale", required_argument, 0, Q_SCALE},
    {"group", required_argument, 0, Q_GROUP}, {"pack", required_argument, 0, Q_PACK},
    {"embed", required_argument, 0, Q_EMBED}, {"layer-types", required_argument, 0, Q_LAYERS}, {0, 0, 0, 0}};

/* "int8,t3,t3,fp32": one weight type per layer. */
static int parse_layer_types(const char *arg, tlm_quant_cfg *q)
{
    uint16_t n = 0;
    const char *p = arg;
    for (;;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        char word[8];
        if (len == 0 || len >= sizeof word || n >= TLM_QUANT_PLAN_MAX) return 0;
        memcpy(word, p, len);
        word[len] = 0;
        uint16_t t;
        if (!strcmp(word, "fp32") || !strcmp(word, "f32")) t = TLM_WTYPE_F32;
        else if (!strcmp(word, "int8") || !strcmp(word, "i8")) t = TLM_WTYPE_I8;
        else if (!parse_wtype(word, &t, 0) || t == TLM_PACK_AUTO) return 0;
        q->plan[n++] = (uint8_t)t;
        if (!e) break;
        p = e + 1;
    }
    q->n_plan = n;
    return 1;
}

_Static_assert(sizeof cli_quant_options / sizeof cli_quant_options[0] == CLI_QUANT_OPTION_COUNT,
               "cli.h's option count is stale");

int cli_quant_option(const char *cmd, int c, const char *arg, tlm_quant_cfg *q, int *scale_given)
{
    switch (c) {
    case Q_METHOD:
        if (!strcmp(arg, "absmean")) q->method = TLM_QM_ABSMEAN;
        else if (!strcmp(arg, "threshold")) q->method = TLM_QM_THRESHOLD;
        else return cli_usage_error(cmd, "--method expects absmean or threshold, got '%s'", arg);
        break;
    case Q_THRESH:
        if (!cli_parse_float(arg, 0.01f, 9.99f, &q->threshold))
            return cli_usage_error(cmd, "--threshold expects a number in [0.01, 9.99], got '%s'", arg);
        break;
    case Q_SPARSITY:
        if (!cli_parse_float(arg, 0.0f, 0.999f, &q->sparsity))
            return cli_usage_error(cmd, "--sparsity expects a fraction in [0, 0.999], got '%s'", arg);
        break;
    case Q_SCALE:
        *scale_given = 1;
        if (!strcmp(arg, "tensor")) q->scale_kind = TLM_SCALE_TENSOR;
        else if (!strcmp(arg, "row")) q->scale_kind = TLM_SCALE_ROW;
        else if (!strcmp(arg, "group")) q->scale_kind = TLM_SCALE_GROUP;
        else return cli_usage_error(cmd, "--scale expects tensor, row or group, got '%s'", arg);
        break;
    case Q_GROUP:
        if (!cli_parse_u32(arg, 1, 1u << 20, &q->group))
            return cli_usage_error(cmd, "--group expects a positive integer, got '%s'", arg);
        break;
    case Q_PACK:
        if (!strcmp(arg, "i8") || !strcmp(arg, "int8")) q->pack = TLM_WTYPE_I8;
        else if (!parse_wtype(arg, &q->pack, 0))
            return cli_usage_error(cmd, "--pack expects t2, t3, ts, auto or int8, got '%s'", arg);
        break;
    case Q_EMBED:
        if (!parse_wtype(arg, &q->embed, 1) || q->embed == TLM_WTYPE_T2 || q->embed == TLM_WTYPE_T3 ||
            q->embed == TLM_WTYPE_TS)
            return cli_usage_error(cmd, "--embed expects ternary, int8 or fp32, got '%s'", arg);
        break;
    case Q_LAYERS:
        if (!parse_layer_types(arg, q))
            return cli_usage_error(cmd, "--layer-types expects one of fp32, int8, t2, t3, ts per layer, separated by "
                                        "commas (at most %u), got '%s'", TLM_QUANT_PLAN_MAX, arg);
        break;
    default: return -1;
    }
    return 0;
}

int cli_quant_finish(const char *cmd, tlm_quant_cfg *q, int scale_given)
{
    if (q->group) {
        if (scale_given && q->scale_kind != TLM_SCALE_GROUP) return cli_usage_error(cmd, "--group goes with --scale group");
        q->scale_kind = TLM_SCALE_GROUP;
    } else if (q->scale_kind == TLM_SCALE_GROUP) {
        return cli_usage_error(cmd, "--scale group needs --group G");
    }
    return 0;
}

int cmd_quantize(int argc, char **argv)
{
    static const struct option own[] = {
        {"model", required_argument, 0, 'm'}, {"output", required_argument, 0, 'o'}, {"qat", no_argument, 0, Q_QAT},
        {"distill", no_argument, 0, Q_DISTILL}, {"distill-weight", required_argument, 0, Q_DWEIGHT},
        {"json", no_argument, 0, Q_JSON}, {"help", no_argument, 0, 'h'}, {"device", required_argument, 0, Q_DEVICE},
        {"calib", required_argument, 0, Q_CALIB}, {"calib-stories", required_argument, 0, Q_CALIB_STORIES},
        {"deploy-ctx", required_argument, 0, Q_DEPLOY_CTX}, {"min-tok-s", required_argument, 0, Q_MIN_TOKS},
        {"ram-kb", required_argument, 0, Q_RAM_KB}, {"flash-kb", required_argument, 0, Q_FLASH_KB},
        {"mhz", required_argument, 0, Q_MHZ}, {"loss-quantum", required_argument, 0, Q_QUANTUM}};
    enum { N_OWN = sizeof own / sizeof own[0], N_Q = CLI_QUANT_OPTION_COUNT - 1 };
    struct option opts[N_OWN + N_Q + CLI_TRAIN_LOOP_OPTION_COUNT];
    memcpy(opts, own, sizeof own);
    memcpy(opts + N_OWN, cli_quant_options, N_Q * sizeof cli_quant_options[0]);
    memcpy(opts + N_OWN + N_Q, cli_train_loop_options, CLI_TRAIN_LOOP_OPTION_COUNT * sizeof cli_train_loop_options[0]);

    tlm_quant_cfg q;
    tlm_quant_defaults(&q);
    tlm_train_opts o;
    tlm_train_defaults(&o);
    o.eval_every = 500;
    o.ckpt_every = 500;
    const char *model = NULL, *out = NULL;
    int qat = 0, distill = 0, json = 0, c, scale_given = 0;
    float dweight = 0.5f;
    const char *device = NULL;
    cli_hw_opts hw = {.calib_stories = 100, .quantum = 0.002};
    uint32_t ram_kb = 0, flash_kb = 0, mhz = 0, deploy_ctx = 0;
    float fval;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case Q_QAT: qat = 1; break;
        case Q_DISTILL: distill = 1; break;
        case Q_DWEIGHT:
            if (!cli_parse_float(optarg, 0.001f, 1.0f, &dweight))
                return cli_usage_error("quantize", "--distill-weight expects a number in (0, 1], got '%s'", optarg);
            break;
        case Q_JSON: json = 1; break;
        case 'h': fputs(help, stdout); return 0;
        case Q_DEVICE: device = optarg; break;
        case Q_CALIB: hw.calib = optarg; break;
        case Q_CALIB_STORIES:
            if (!cli_parse_u32(optarg, 1, 1u << 24, &hw.calib_stories))
                return cli_usage_error("quantize", "--calib-stories expects a positive integer, got '%s'", optarg);
            break;
        case Q_DEPLOY_CTX:
            if (!cli_parse_u32(optarg, 16, 1u << 16, &deploy_ctx))
                return cli_usage_error("quantize", "--deploy-ctx expects 16..65536, got '%s'", optarg);
            break;
        case Q_MIN_TOKS:
            if (!cli_parse_float(optarg, 0.001f, 1e6f, &fval))
                return cli_usage_error("quantize", "--min-tok-s expects a positive number, got '%s'", optarg);
            hw.min_tok_s = fval;
            break;
        case Q_RAM_KB:
            if (!cli_parse_u32(optarg, 8, 4096, &ram_kb)) return cli_usage_error("quantize", "--ram-kb expects 8..4096, got '%s'", optarg);
            break;
        case Q_FLASH_KB:
            if (!cli_parse_u32(optarg, 16, 4096, &flash_kb))
                return cli_usage_error("quantize", "--flash-kb expects 16..4096, got '%s'", optarg);
            break;
        case Q_MHZ:
            if (!cli_parse_u32(optarg, 1, 10000, &mhz)) return cli_usage_error("quantize", "--mhz expects 1..10000, got '%s'", optarg);
            break;
        case Q_QUANTUM:
            if (!cli_parse_float(optarg, 1e-6f, 1.0f, &fval))
                return cli_usage_error("quantize", "--loss-quantum expects a number in [1e-6, 1], got '%s'", optarg);
            hw.quantum = fval;
            break;
        default: {
            int r = cli_quant_option("quantize", c, optarg, &q, &scale_given);
            if (r < 0) r = cli_train_loop_option("quantize", c, optarg, &o);
            if (r > 0) return r;
            if (r < 0) return cli_bad_option("quantize", argv, c);
        }
        }
    }
    if (optind != argc) return cli_usage_error("quantize", "unexpected argument '%s'", argv[optind]);
    if (o.lora_rank || o.lora_alpha > 0.0f)
        return cli_usage_error("quantize", "--lora and --lora-alpha are for 'tritlm train' and 'tritlm fed update' (adapters need "
                                           "whole fp32 matrices, not a quantized forward pass)");
    if (device && !strcmp(device, "list")) {
        printf("%-10s %-9s %8s %9s %6s  %s\n", "device", "target", "RAM KB", "flash KB", "MHz", "chip");
        for (size_t i = 0; i < tlm_device_count(); i++) {
            const tlm_device *d = tlm_device_at(i);
            printf("%-10s %-9s %8u %9u %6u  %s\n", d->name, d->target, d->ram_kb, d->flash_kb, d->mhz, d->chip);
        }
        return 0;
    }
    if (device) {
        hw.dev = tlm_device_find(device);
        if (!hw.dev) return cli_usage_error("quantize", "unknown device '%s' ('tritlm quantize --device list' lists them)", device);
        if (!hw.calib) return cli_usage_error("quantize", "--device needs --calib FILE (stories to measure each layer's loss on)");
        if (q.n_plan) return cli_usage_error("quantize", "--device chooses the layer types: leave out --layer-types");
        if (o.resume) return cli_usage_error("quantize", "--resume goes on with its checkpoint's plan: leave out --device");
        hw.ram_kb = ram_kb ? ram_kb : hw.dev->ram_kb;
        hw.flash_kb = flash_kb ? flash_kb : hw.dev->flash_kb;
        hw.mhz = mhz ? mhz : hw.dev->mhz;
    } else if (hw.calib || ram_kb || flash_kb || mhz || deploy_ctx || hw.min_tok_s > 0) {
        return cli_usage_error("quantize", "--calib, --deploy-ctx, --min-tok-s, --ram-kb, --flash-kb and --mhz go with --device");
    }
    if (!model) return cli_usage_error("quantize", "missing -m MODEL.tlm");
    if (!out) return cli_usage_error("quantize", "missing -o OUT.tlm");
    if (cli_quant_finish("quantize", &q, scale_given)) return TLM_EXIT_USAGE;
    if (!qat && (o.data || o.val || o.steps || o.minutes > 0 || o.resume || distill))
        return cli_usage_error("quantize", "--data, --steps, --minutes, --resume and --distill belong to --qat");
    if (qat) {
        if (!o.data) return cli_usage_error("quantize", "--qat needs --data FILE");
        if (!o.resume && !o.steps && !(o.minutes > 0)) return cli_usage_error("quantize", "--qat needs --steps N or --minutes M");
        if (o.steps && o.minutes > 0) return cli_usage_error("quantize", "give --steps or --minutes, not both");
    }
    {
        /* post-training quantization may replace MODEL (it is read whole
         * first); a QAT run rewrites its output at every checkpoint */
        const char *in[] = {o.data, o.val, qat ? model : NULL, hw.calib};
        if (cli_refuse_clobber("quantize", out, in, 4)) return TLM_EXIT_USAGE;
    }

    tlm_error err;
    tlm_model_file mf;
    if (tlm_model_file_open(&mf, model, &err)) return cli_fail("quantize", &err);
    tlm_status st = tlm_quant_check(&q, &mf.model.hp, &err);
    const size_t in_bytes = mf.model.image_bytes;
    const uint32_t seq_len = mf.model.hp.seq_len;
    if (st) {
        tlm_model_file_close(&mf);
        return cli_usage_error("quantize", "%s", err.msg);
    }
    cJSON *j = json ? cJSON_CreateObject() : NULL;
    if (hw.dev) {
        hw.ctx = deploy_ctx ? deploy_ctx : 256u;
        hw.separator = o.separator; /* --split lines: one calibration sample per line, as for the QAT text */
        if (hw.ctx > seq_len) hw.ctx = seq_len;
        hw.steps = hw.ctx < 128u ? hw.ctx : 128u;
        tlm_params p;
        tlm_vocab v = {0};
        int rc = 0;
        st = tlm_params_from_model(&p, &mf.model, &err);
        if (!st) {
            st = tlm_vocab_from_model(&mf.model, &v, &err);
            if (!st) rc = cli_hw_plan(&p, &v, mf.model.bos_id, mf.model.eos_id, &q, &hw, j);
            tlm_params_free(&p);
        }
        tlm_vocab_free(&v);
        if (st || rc) {
            tlm_model_file_close(&mf);
            cJSON_Delete(j);
            return st ? cli_fail("quantize", &err) : rc;
        }
    }
    tlm_train_report rep;
    memset(&rep, 0, sizeof rep);
    if (qat) {
        tlm_model_file_close(&mf);
        o.init = o.resume ? NULL : model;
        o.out = out;
        o.qat = &q;
        o.teacher = distill ? model : NULL;
        o.distill = distill ? dweight : 0.0f;
        o.progress = isatty(2);
        st = tlm_train(&o, &rep, &err);
    } else {
        tlm_params p;
        tlm_vocab v = {0};
        st = tlm_params_from_model(&p, &mf.model, &err);
        if (!st) st = tlm_vocab_from_model(&mf.model, &v, &err);
        uint8_t *img = NULL;
        size_t bytes = 0;
        q.keep_ternary = 1; /* repacking a ternary model loses nothing */
        if (!st) st = tlm_quant_image(&p, &q, &v, mf.model.bos_id, mf.model.eos_id, &img, &bytes, &err);
        if (!st) st = tlm_write_file_atomic(out, img, bytes, &err);
        free(img);
        tlm_vocab_free(&v);
        tlm_params_free(&p);
        tlm_model_file_close(&mf);
    }
    if (st) {
        cJSON_Delete(j);
        return cli_fail("quantize", &err);
    }

    tlm_model_file res;
    if (tlm_model_file_open(&res, out, &err)) {
        cJSON_Delete(j);
        return cli_fail("quantize", &err);
    }
    const size_t out_bytes = res.model.image_bytes;
    tlm_model_file_close(&res);
    const double ratio = (double)in_bytes / (double)out_bytes;
    int vrc = 0;
    if (hw.dev) vrc = cli_hw_verify(out, &hw, j);
    if (json) {
        cJSON_AddStringToObject(j, "model", out);
        cJSON_AddNumberToObject(j, "input_bytes", (double)in_bytes);
        cJSON_AddNumberToObject(j, "output_bytes", (double)out_bytes);
        cJSON_AddNumberToObject(j, "ratio", ratio);
        if (qat) {
            cJSON_AddNumberToObject(j, "steps", (double)rep.steps);
            cJSON_AddNumberToObject(j, "tokens", (double)rep.tokens);
            cJSON_AddNumberToObject(j, "train_loss", rep.train_loss);
            if (o.val) {
                cJSON_AddNumberToObject(j, "val_loss", rep.val_loss);
                cJSON_AddNumberToObject(j, "val_top1", rep.val_top1);
                if (rep.val_classified) {
                    cJSON_AddNumberToObject(j, "val_accuracy", rep.val_accuracy);
                    cJSON_AddNumberToObject(j, "val_macro_f1", rep.val_macro_f1);
                }
            }
            cJSON_AddNumberToObject(j, "seconds", rep.seconds);
        }
        char *s = cJSON_PrintUnformatted(j);
        puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        fprintf(stderr, "quantize: %s: %zu bytes -> %s: %zu bytes (%.2fx smaller)", model, in_bytes, out, out_bytes, ratio);
        if (qat && o.val) fprintf(stderr, "; validation loss %.4f top-1 %.4f", rep.val_loss, rep.val_top1);
        if (qat && rep.val_classified) fprintf(stderr, ", classification accuracy %.4f", rep.val_accuracy);
        fputc('\n', stderr);
    }
    return vrc;
}
