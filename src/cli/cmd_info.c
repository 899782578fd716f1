/* tritlm info: what a model image holds and what it needs to run. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "../host/model_file.h"
#include "cli.h"
#include "tritlm/dp.h"
#include "tritlm/runtime.h"
#include "tritlm/tune.h"

static const char help[] =
    "usage: tritlm info MODEL.tlm [--ctx N] [--tune-window W [--tune-lora R]] [--json]\n"
    "\n"
    "Validates a model image and prints its hyperparameters, tensor table, bytes by\n"
    "weight type and the runtime arena it needs at context length N.\n"
    "\n"
    "      --ctx N   context length for the arena figure (default: seq_len)\n"
    "      --tune-window W   positions per on-device tuning step for the tuning arena's\n"
    "                figure (default 32, at most seq_len - 1)\n"
    "      --tune-lora R   ... when it tunes adapters of rank R (tlm_tune_init_lora)\n"
    "      --json    one JSON object on stdout\n"
    "  -h, --help    this text\n";

int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ctx", required_argument, 0, 'c'}, {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'},
        {"tune-window", required_argument, 0, 'w'}, {"tune-lora", required_argument, 0, 'l'}, {0, 0, 0, 0}};
    uint32_t ctx = 0, tune_window = 0, tune_lora = 0;
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'c') {
            if (!cli_parse_u32(optarg, 1, 1u << 20, &ctx)) return cli_usage_error("info", "--ctx expects a positive integer, got '%s'", optarg);
        } else if (c == 'w') {
            if (!cli_parse_u32(optarg, 1, 1u << 20, &tune_window))
                return cli_usage_error("info", "--tune-window expects a positive integer, got '%s'", optarg);
        } else if (c == 'l') {
            if (!cli_parse_u32(optarg, 1, TLM_TUNE_MAX_RANK, &tune_lora))
                return cli_usage_error("info", "--tune-lora expects a rank from 1 to %u, got '%s'", TLM_TUNE_MAX_RANK, optarg);
        } else if (c == 'j') json = 1;
        else if (c == 'h') {
            fputs(help, stdout);
            return 0;
        } else return cli_bad_option("info", argv, c);
    }
    if (argc - optind != 1) return cli_usage_error("info", "expected one MODEL.tlm");
    tlm_model_file mf;
    tlm_error err;
    if (tlm_model_file_open(&mf, argv[optind], &err)) return cli_fail("info", &err);
    const tlm_model *m = &mf.model;
    const tlm_hparams *hp = &m->hp;
    if (!ctx) ctx = hp->seq_len;
    if (ctx > hp->seq_len) {
        tlm_model_file_close(&mf);
        return cli_usage_error("info", "--ctx %u exceeds the model's seq_len %u", ctx, hp->seq_len);
    }
    if (tune_window >= hp->seq_len) {
        tlm_model_file_close(&mf);
        return cli_usage_error("info", "--tune-window %u must be below the model's seq_len %u", tune_window, hp->seq_len);
    }
    if (!tune_window) tune_window = hp->seq_len > 32u ? 32u : hp->seq_len - 1u;
    size_t arena = tlm_runtime_arena_size(m, ctx), arena8 = tlm_runtime_arena_size_flags(m, ctx, TLM_RT_KV_INT8);
    const size_t tune_arena = tlm_tune_arena_size_lora(m, tune_window, tune_lora);
    tlm_privatizer probe; /* the d_chi search index's size (none if the embedding cannot be read) */
    const size_t dx_index = tlm_privatizer_init(&probe, m, TLM_MECH_DX, 1.0f, NULL) ? 0 : tlm_privatizer_index_bytes(&probe);
    uint64_t by_type[TLM_WTYPE_COUNT] = {0}, weights_by_type[TLM_WTYPE_COUNT] = {0};
    double total_w = 0, total_bits = 0;
    static const char *const scale_names[] = {"-", "tensor", "row", "group"};

    cJSON *root = cJSON_CreateObject(), *tensors = cJSON_CreateArray();
    if (!json) {
        printf("image: %s, %zu bytes, format v%u\n", argv[optind], m->image_bytes, TLM_FORMAT_VERSION);
        printf("dim %u  hidden %u  layers %u  heads %u  kv_heads %u  vocab %u  seq_len %u\n", hp->dim, hp->hidden_dim,
               hp->n_layers, hp->n_heads, hp->n_kv_heads, hp->vocab_size, hp->seq_len);
        printf("rope_theta %g  norm_eps %g  classifier %s\n", hp->rope_theta, hp->norm_eps,
               hp->shared_classifier ? "shared with the embedding" : "separate");
        printf("\n  #  %-11s %5s %-5s %-6s %11s %12s %8s\n", "role", "layer", "type", "scale", "shape", "bytes", "bits/w");
    }
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        tlm_tensor t;
        tlm_model_tensor_at(m, i, &t);
        const char *tname = tlm_wtype_get(t.wtype)->name;
        uint64_t nw = (uint64_t)t.rows * t.cols;
        by_type[t.wtype] += t.data_bytes;
        weights_by_type[t.wtype] += nw;
        const double bpw = tlm_tensor_bits_per_weight(&t); /* data and scales */
        total_w += nw;
        total_bits += bpw * (double)nw;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "role", tlm_role_name(t.role));
            cJSON_AddNumberToObject(o, "layer", t.layer);
            cJSON_AddStringToObject(o, "type", tname);
            cJSON_AddStringToObject(o, "scale", scale_names[t.scale_kind]);
            if (t.group) cJSON_AddNumberToObject(o, "group", t.group);
            cJSON_AddNumberToObject(o, "rows", t.rows);
            cJSON_AddNumberToObject(o, "cols", t.cols);
            cJSON_AddNumberToObject(o, "bytes", (double)t.data_bytes);
            cJSON_AddNumberToObject(o, "bits_per_weight", bpw);
            cJSON_AddItemToArray(tensors, o);
        } else {
            char shape[32];
            snprintf(shape, sizeof shape, "%ux%u", t.rows, t.cols);
            printf("%3u  %-11s %5u %-5s %-6s %11s %12llu %8.3f\n", i, tlm_role_name(t.role), t.layer, tname,
                   scale_names[t.scale_kind], shape,
                   (unsigned long long)t.data_bytes, bpw);
        }
    }
    if (json) {
        cJSON *h = cJSON_AddObjectToObject(root, "hparams");
        cJSON_AddNumberToObject(h, "dim", hp->dim);
        cJSON_AddNumberToObject(h, "hidden_dim", hp->hidden_dim);
        cJSON_AddNumberToObject(h, "n_layers", hp->n_layers);
        cJSON_AddNumberToObject(h, "n_heads", hp->n_heads);
        cJSON_AddNumberToObject(h, "n_kv_heads", hp->n_kv_heads);
        cJSON_AddNumberToObject(h, "vocab_size", hp->vocab_size);
        cJSON_AddNumberToObject(h, "seq_len", hp->seq_len);
        cJSON_AddNumberToObject(h, "rope_theta", hp->rope_theta);
        cJSON_AddNumberToObject(h, "norm_eps", hp->norm_eps);
        cJSON_AddBoolToObject(h, "shared_classifier", hp->shared_classifier);
        cJSON_AddNumberToObject(root, "format_version", TLM_FORMAT_VERSION);
        cJSON_AddNumberToObject(root, "image_bytes", (double)m->image_bytes);
        cJSON_AddNumberToObject(root, "weights", total_w);
        cJSON_AddNumberToObject(root, "bits_per_weight", total_w > 0 ? total_bits / total_w : 0);
        cJSON_AddNumberToObject(root, "image_bits_per_weight", total_w > 0 ? 8.0 * (double)m->image_bytes / total_w : 0);
        cJSON_AddItemToObject(root, "tensors", tensors);
        cJSON *bt = cJSON_AddObjectToObject(root, "bytes_by_type");
        for (uint32_t w = 0; w < TLM_WTYPE_COUNT; w++)
            if (weights_by_type[w]) cJSON_AddNumberToObject(bt, tlm_wtype_get(w)->name, (double)by_type[w]);
        cJSON_AddNumberToObject(root, "ctx", ctx);
        cJSON_AddNumberToObject(root, "arena_bytes", (double)arena);
        cJSON_AddNumberToObject(root, "arena_bytes_kv_int8", (double)arena8);
        /* with room for an adapter (TLM_RT_ADAPTER) */
        cJSON_AddNumberToObject(root, "arena_bytes_adapter", (double)tlm_runtime_arena_size_flags(m, ctx, TLM_RT_ADAPTER));
        cJSON_AddNumberToObject(root, "arena_bytes_kv_int8_adapter",
                                (double)tlm_runtime_arena_size_flags(m, ctx, TLM_RT_KV_INT8 | TLM_RT_ADAPTER));
        cJSON_AddNumberToObject(root, "dx_index_bytes", (double)dx_index);
        cJSON_AddNumberToObject(root, "tune_window", tune_window);
        cJSON_AddNumberToObject(root, "tune_arena_bytes", (double)tune_arena);
        char *s = cJSON_PrintUnformatted(root);
        puts(s);
        free(s);
    } else {
        cJSON_Delete(tensors);
        printf("\nbytes by weight type:");
        for (uint32_t w = 0; w < TLM_WTYPE_COUNT; w++)
            if (weights_by_type[w])
                printf("  %s %llu (%llu weights)", tlm_wtype_get(w)->name, (unsigned long long)by_type[w],
                       (unsigned long long)weights_by_type[w]);
        printf("\nweights %.0f, %.3f bits per weight in tensors (scales included), %.3f over the whole image of %zu bytes\n",
               total_w, total_w > 0 ? total_bits / total_w : 0, total_w > 0 ? 8.0 * (double)m->image_bytes / total_w : 0,
               m->image_bytes);
        printf("arena at ctx %u: %zu bytes (%zu with the KV cache in int8); d_chi search index %zu bytes\n", ctx, arena,
               arena8, dx_index);
        printf("on-device tuning (norm gains) over %u positions: an arena of %zu bytes\n", tune_window, tune_arena);
    }
    cJSON_Delete(root);
    tlm_model_file_close(&mf);
    return 0;
}
