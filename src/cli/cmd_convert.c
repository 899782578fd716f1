/* tritlm import / export: llama2.c interoperability, and images as C source. */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../host/export_c.h"
#include "../host/fileio.h"
#include "../host/llama2c.h"
#include "../host/model_file.h"
#include "cli.h"

static const char import_help[] =
    "usage: tritlm import llama2c CHECKPOINT.bin TOKENIZER.bin -o MODEL.tlm\n"
    "\n"
    "Converts a llama2.c checkpoint and its tokenizer into a tritlm model image. Reads\n"
    "version 0 (the legacy fp32 layout of run.c; a negative vocab_size means a separate\n"
    "classifier) and export.py's versions 1 (fp32) and 2 (Q8_0, as runq.c reads it):\n"
    "Q8_0 tensors whose rows hold whole groups stay int8 with their group scales, the\n"
    "others become fp32 with the same values.\n"
    "\n"
    "  -o, --output FILE   model image to write (atomically)\n"
    "  -h, --help          this text\n";

static const char export_help[] =
    "usage: tritlm export llama2c MODEL.tlm -o CHECKPOINT.bin [--tokenizer-out TOKENIZER.bin]\n"
    "       tritlm export c MODEL.tlm -o NAME.c [--name IDENT] [--ctx N]\n"
    "\n"
    "llama2c: writes a model image as a llama2.c version-0 checkpoint (fp32; other\n"
    "weight types are expanded to fp32) and optionally its tokenizer, so llama2.c's\n"
    "run.c loads it.\n"
    "c: writes the image unchanged as a 64-byte aligned const array in NAME.c and its\n"
    "declaration in NAME.h, with IDENT_BYTES, IDENT_CRC32, and the runtime arena for N\n"
    "positions (IDENT_ARENA_BYTES, IDENT_ARENA_BYTES_KV_INT8), for firmware built\n"
    "where a binary file cannot be linked (Arduino, Keil, IAR, ESP-IDF).\n"
    "\n"
    "  -o, --output FILE        checkpoint, or the .c file, to write (atomically)\n"
    "      --tokenizer-out FILE llama2c: tokenizer to write (atomically)\n"
    "      --name IDENT         c: the array's name (default: NAME, made an identifier)\n"
    "      --ctx N              c: context length of the arena figures (default: seq_len)\n"
    "  -h, --help               this text\n";

int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *out = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        if (c == 'o') out = optarg;
        else if (c == 'h') {
            fputs(import_help, stdout);
            return 0;
        } else return cli_bad_option("import", argv, c);
    }
    if (argc - optind != 3) return cli_usage_error("import", "expected: llama2c CHECKPOINT.bin TOKENIZER.bin -o MODEL.tlm");
    if (strcmp(argv[optind], "llama2c") != 0)
        return cli_usage_error("import", "unknown source format '%s' (supported: llama2c)", argv[optind]);
    if (!out) return cli_usage_error("import", "missing -o MODEL.tlm");
    {
        const char *in[] = {argv[optind + 1], argv[optind + 2]};
        if (cli_refuse_clobber("import", out, in, 2)) return TLM_EXIT_USAGE;
    }
    uint8_t *img;
    size_t bytes;
    tlm_error err;
    if (tlm_llama2c_import(argv[optind + 1], argv[optind + 2], &img, &bytes, &err)) return cli_fail("import", &err);
    tlm_status st = tlm_write_file_atomic(out, img, bytes, &err);
    free(img);
    if (st) return cli_fail("import", &err);
    fprintf(stderr, "wrote %s (%zu bytes)\n", out, bytes);
    return 0;
}

/* NAME of NAME.c's last component with every character outside
 * [A-Za-z0-9_] made '_', and "model_" before a leading digit or '_'
 * (identifiers that begin with '_' are reserved at file scope). */
static void default_ident(const char *c_path, char *ident, size_t cap)
{
    const char *base = strrchr(c_path, '/');
    base = base ? base + 1 : c_path;
    size_t n = strlen(base) - 2, k = 0; /* without ".c" */
    if (n > 0 && !((base[0] >= 'A' && base[0] <= 'Z') || (base[0] >= 'a' && base[0] <= 'z'))) {
        memcpy(ident, "model_", 6);
        k = 6;
    }
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        const char ch = base[i];
        const int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
        ident[k++] = ok ? ch : '_';
    }
    ident[k] = 0;
}

static int export_c(const char *model_path, const char *out, const char *name, const char *ctx_arg)
{
    const size_t len = strlen(out);
    if (len < 3 || strcmp(out + len - 2, ".c") != 0 || out[len - 3] == '/')
        return cli_usage_error("export", "-o must name a .c file (NAME.c; NAME.h is written beside it)");
    const char *base = strrchr(out, '/');
    for (const char *q = base ? base + 1 : out; *q; q++) /* NAME.h goes into an #include "..." */
        if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
            return cli_usage_error("export", "-o: the file name cannot hold quotes, backslashes or control characters");
    char ident[64];
    if (name) {
        if (!tlm_is_c_identifier(name))
            return cli_usage_error("export", "--name '%s' is not a C identifier (letters, digits, _; at most 63)", name);
        snprintf(ident, sizeof ident, "%s", name);
    } else {
        default_ident(out, ident, sizeof ident);
        if (!tlm_is_c_identifier(ident))
            return cli_usage_error("export", "cannot make a C identifier of '%s': give --name", out);
    }
    uint32_t ctx = 0;
    if (ctx_arg && !cli_parse_u32(ctx_arg, 1, 1u << 20, &ctx))
        return cli_usage_error("export", "--ctx expects a positive integer, got '%s'", ctx_arg);
    char *h_path = strdup(out);
    if (!h_path) return cli_usage_error("export", "out of memory");
    h_path[len - 1] = 'h';
    tlm_model_file mf;
    tlm_error err;
    tlm_status st = tlm_model_file_open(&mf, model_path, &err);
    if (!st) {
        st = tlm_export_c(&mf.model, ident, ctx ? ctx : mf.model.hp.seq_len, model_path, out, h_path, &err);
        if (!st) fprintf(stderr, "wrote %s and %s (%s, %zu bytes)\n", out, h_path, ident, mf.model.image_bytes);
        tlm_model_file_close(&mf);
    }
    free(h_path);
    return st ? cli_fail("export", &err) : 0;
}

int cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                         {"tokenizer-out", required_argument, 0, 'T'},
                                         {"name", required_argument, 0, 'N'},
                                         {"ctx", required_argument, 0, 'C'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL, *tok = NULL, *name = NULL, *ctx = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        if (c == 'o') out = optarg;
        else if (c == 'T') tok = optarg;
        else if (c == 'N') name = optarg;
        else if (c == 'C') ctx = optarg;
        else if (c == 'h') {
            fputs(export_help, stdout);
            return 0;
        } else return cli_bad_option("export", argv, c);
    }
    if (argc - optind != 2) return cli_usage_error("export", "expected: llama2c|c MODEL.tlm -o FILE");
    const int to_c = strcmp(argv[optind], "c") == 0;
    if (!to_c && strcmp(argv[optind], "llama2c") != 0)
        return cli_usage_error("export", "unknown target format '%s' (supported: llama2c, c)", argv[optind]);
    if (!out) return cli_usage_error("export", to_c ? "missing -o NAME.c" : "missing -o CHECKPOINT.bin");
    if (to_c && tok) return cli_usage_error("export", "--tokenizer-out is for llama2c (the C array holds the tokenizer)");
    if (!to_c && (name || ctx)) return cli_usage_error("export", "--name and --ctx are for 'export c'");
    {
        const char *in[] = {argv[optind + 1]};
        if (cli_refuse_clobber("export", out, in, 1) || cli_refuse_clobber("export", tok, in, 1)) return TLM_EXIT_USAGE;
    }
    if (to_c) return export_c(argv[optind + 1], out, name, ctx);
    tlm_model_file mf;
    tlm_error err;
    if (tlm_model_file_open(&mf, argv[optind + 1], &err)) return cli_fail("export", &err);
    tlm_status st = tlm_llama2c_export(&mf.model, out, tok, &err);
    tlm_model_file_close(&mf);
    if (st) return cli_fail("export", &err);
    return 0;
}
