/* tritlm tokenizer train: a byte-fallback BPE vocabulary from text. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/bpe_train.h"
#include "../host/fileio.h"
#include "../host/llama2c.h"
#include "cli.h"
#include "tritlm/tokenizer.h"

static const char help[] =
    "usage: tritlm tokenizer train --vocab N [--out TOK.bin] [--coverage C] [--split lines] TEXT...\n"
    "\n"
    "Trains a byte-fallback BPE tokenizer on the stories of the TEXT files (split on\n"
    "<|endoftext|> lines) and writes it in llama2.c's tokenizer.bin format: <unk>, BOS,\n"
    "EOS, the 256 <0xNN> byte tokens, the characters covering a fraction C of the text\n"
    "(default 0.9995), then merges until N tokens. Deterministic: the same input gives\n"
    "the same file. Use it with 'tritlm train --tokenizer TOK.bin'.\n"
    "\n"
    "      --vocab N      total vocabulary size (>= 260)\n"
    "  -o, --out FILE     output (default tokenizer.bin)\n"
    "      --coverage C   character coverage in (0, 1]\n"
    "      --split lines  every non-empty line is one story (as 'train --split lines')\n"
    "  -h, --help         this text\n";

int cmd_tokenizer(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "train") != 0) {
        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
            fputs(help, stdout);
            return 0;
        }
        return cli_usage_error("tokenizer", "expected 'tokenizer train'");
    }
    argc--;
    argv++;
    static const struct option opts[] = {{"vocab", required_argument, 0, 'v'}, {"out", required_argument, 0, 'o'},
                                         {"coverage", required_argument, 0, 'c'}, {"help", no_argument, 0, 'h'},
                                         {"split", required_argument, 0, 'L'},
                                         {0, 0, 0, 0}};
    tlm_bpe_opts o = {.vocab_size = 0, .char_coverage = 0.9995, .progress = isatty(2)};
    const char *out = "tokenizer.bin";
    float cov;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'v':
            if (!cli_parse_u32(optarg, 260, 1u << 20, &o.vocab_size))
                return cli_usage_error("tokenizer", "--vocab expects an integer in [260, 1048576], got '%s'", optarg);
            break;
        case 'o': out = optarg; break;
        case 'c':
            if (!cli_parse_float(optarg, 1e-6f, 1.0f, &cov)) return cli_usage_error("tokenizer", "--coverage expects (0, 1], got '%s'", optarg);
            o.char_coverage = cov;
            break;
        case 'L':
            if (cli_parse_split("tokenizer", optarg, &o.separator)) return TLM_EXIT_USAGE;
            break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_bad_option("tokenizer", argv, c);
        }
    }
    if (!o.vocab_size) return cli_usage_error("tokenizer", "missing --vocab N");
    if (optind >= argc) return cli_usage_error("tokenizer", "no TEXT files given");
    size_t n = (size_t)(argc - optind);
    if (cli_refuse_clobber("tokenizer", out, (const char *const *)argv + optind, n)) return TLM_EXIT_USAGE;
    char **texts = calloc(n, sizeof *texts);
    size_t *lens = calloc(n, sizeof *lens);
    tlm_error err;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        if (tlm_read_text(argv[optind + (int)i], (uint8_t **)&texts[i], &lens[i], &err)) rc = cli_fail("tokenizer", &err);
    tlm_vocab v = {0};
    if (!rc && tlm_bpe_train((const char *const *)texts, lens, n, &o, &v, &err)) rc = cli_fail("tokenizer", &err);
    if (!rc) {
        uint8_t *bin;
        size_t bytes;
        if (tlm_vocab_to_llama2c(&v, &bin, &bytes, &err) || tlm_write_file_atomic(out, bin, bytes, &err)) rc = cli_fail("tokenizer", &err);
        else {
            uint32_t bytes_tok = 0; /* the byte fallback's 256; with unk, BOS and EOS the rest is learned */
            for (uint32_t i = 0; i < v.n; i++) bytes_tok += tlm_decodes_as_byte(v.strs[i], v.lens[i]) != 0;
            fprintf(stderr, "wrote %s: %u tokens (%u bytes, 3 special, %u learned; longest %u bytes)\n", out, v.n,
                    bytes_tok, v.n - bytes_tok - 3, v.max_token_length);
        }
        if (!rc) free(bin);
    }
    tlm_vocab_free(&v);
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    free(lens);
    return rc;
}
