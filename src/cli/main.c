/* tritlm: one executable, one subcommand per job. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#ifndef TLM_VERSION
#define TLM_VERSION "0.1.0"
#endif

typedef struct {
    const char *name;
    int (*run)(int, char **);
    const char *summary;
} command;

static const command commands[] = {
    {"import", cmd_import, "convert a llama2.c checkpoint + tokenizer into a tritlm model image"},
    {"export", cmd_export, "write a model as a llama2.c checkpoint + tokenizer, or as C source"},
    {"generate", cmd_generate, "generate text from a prompt"},
    {"tokenizer", cmd_tokenizer, "train a byte-fallback BPE tokenizer (llama2.c format) on text"},
    {"train", cmd_train, "train a model on text, fine-tune one, or resume a run"},
    {"eval", cmd_eval, "next-token loss, perplexity and top-1 accuracy on a text file of stories"},
    {"classify", cmd_classify, "pick a label for each line of text (intents, commands) with a model trained on labelled lines"},
    {"quantize", cmd_quantize, "ternary or int8 weights: post-training or quantization-aware training"},
    {"privatize", cmd_privatize, "differentially private text: d_chi noise on embeddings or randomized response"},
    {"firmware", cmd_firmware, "build a model into microcontroller firmware, run it in QEMU, report RAM and speed"},
    {"fed", cmd_fed, "federated fine-tuning: a device's update from its own text, the server's aggregation"},
    {"info", cmd_info, "hyperparameters, tensor table, sizes and arena bytes of a model image"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: tritlm COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'tritlm COMMAND --help' describes each command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return TLM_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("tritlm %s\n", TLM_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "tritlm: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return TLM_EXIT_USAGE;
}
