/* tritlm import / export: llama2.c interoperability. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../host/fileio.h"
#include "../host/llama2c.h"
#include "../host/model_file.h"
#include "cli.h"

static const char import_help[] =
    "usage: tritlm import llama2c CHECKPOINT.bin TOKENIZER.bin -o MODEL.tlm\n"
    "\n"
    "Converts a llama2.c version-0 (legacy) fp32 checkpoint and its tokenizer into a\n"
    "tritlm model image. A positive vocab_size in the checkpoint means the classifier\n"
    "shares the token embedding; a negative one means a separate classifier follows.\n"
    "\n"
    "  -o, --output FILE   model image to write (atomically)\n"
    "  -h, --help          this text\n";

static const char export_help[] =
    "usage: tritlm export llama2c MODEL.tlm -o CHECKPOINT.bin [--tokenizer-out TOKENIZER.bin]\n"
    "\n"
    "Writes a model image as a llama2.c version-0 checkpoint (fp32; other weight types\n"
    "are expanded to fp32) and optionally its tokenizer, so llama2.c's run.c loads it.\n"
    "\n"
    "  -o, --output FILE        checkpoint to write (atomically)\n"
    "      --tokenizer-out FILE tokenizer to write (atomically)\n"
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

int cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                         {"tokenizer-out", required_argument, 0, 'T'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL, *tok = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        if (c == 'o') out = optarg;
        else if (c == 'T') tok = optarg;
        else if (c == 'h') {
            fputs(export_help, stdout);
            return 0;
        } else return cli_bad_option("export", argv, c);
    }
    if (argc - optind != 2) return cli_usage_error("export", "expected: llama2c MODEL.tlm -o CHECKPOINT.bin");
    if (strcmp(argv[optind], "llama2c") != 0)
        return cli_usage_error("export", "unknown target format '%s' (supported: llama2c)", argv[optind]);
    if (!out) return cli_usage_error("export", "missing -o CHECKPOINT.bin");
    tlm_model_file mf;
    tlm_error err;
    if (tlm_model_file_open(&mf, argv[optind + 1], &err)) return cli_fail("export", &err);
    tlm_status st = tlm_llama2c_export(&mf.model, out, tok, &err);
    tlm_model_file_close(&mf);
    if (st) return cli_fail("export", &err);
    return 0;
}
