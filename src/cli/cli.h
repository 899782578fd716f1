/* Shared helpers of the tritlm subcommands. */
#ifndef TLM_CLI_H
#define TLM_CLI_H

#include <stddef.h>
#include <stdint.h>

#include <getopt.h>

#include "tritlm/status.h"

struct tlm_train_opts;
struct tlm_quant_cfg;

/* Exit codes: 0 ok, 1 failure while working, 2 bad usage. */
#define TLM_EXIT_FAIL 1
#define TLM_EXIT_USAGE 2

int cmd_import(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_privatize(int argc, char **argv);
int cmd_firmware(int argc, char **argv);
int cmd_fed(int argc, char **argv);

/* The training-loop options (--data, --val, --steps, --lr, ...) that
 * 'train' and 'quantize --qat' share: a getopt_long table (terminated) and
 * its handler, which returns 0 when it took the option, -1 when c is not
 * one of them, or TLM_EXIT_USAGE after reporting a bad value. */
extern const struct option cli_train_loop_options[];
#define CLI_TRAIN_LOOP_OPTION_COUNT 26
int cli_train_loop_option(const char *cmd, int c, const char *arg, struct tlm_train_opts *o);

/* Adds text that may hold any bytes to a JSON object as a valid UTF-8
 * string: each byte of an invalid sequence, and NUL, becomes U+FFFD (a
 * model's byte tokens can end in the middle of a character). Returns 0 if
 * out of memory. */
struct cJSON;
int cli_json_add_text(struct cJSON *obj, const char *key, const char *s, size_t n);

/* Prints obj on one line of stdout and deletes it. */
void cli_json_emit(struct cJSON *obj);

/* 0 when `out` is none of the files in[0..n) (NULL entries skipped, same
 * file by device and inode, so another name for it counts too); otherwise
 * says so and returns TLM_EXIT_USAGE: the output would replace an input,
 * such as the training text. */
int cli_refuse_clobber(const char *cmd, const char *out, const char *const *in, size_t n);

/* Prints "tritlm CMD: message" to stderr; returns TLM_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...);
/* Prints "tritlm CMD: <err message>" to stderr; returns TLM_EXIT_FAIL. */
int cli_fail(const char *cmd, const tlm_error *err);

/* Strict number parsing: the whole string must be a number in range. */
int cli_parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out);
int cli_parse_u64(const char *s, uint64_t *out);
int cli_parse_float(const char *s, float lo, float hi, float *out);
/* --min-confidence's value, strictly between 0 and 1: 0, or TLM_EXIT_USAGE (reported). */
int cli_parse_confidence(const char *cmd, const char *s, float *out);

/* --split stories|lines: *sep becomes NULL (<|endoftext|>) or "\n".
 * Returns 0, or TLM_EXIT_USAGE after reporting another value. */
int cli_parse_split(const char *cmd, const char *arg, const char **sep);

/* --privatize M, --epsilon E and --seed S of the commands whose model reads
 * privatized text (eval, classify), as getopt codes 'P', 'E' and 'S': 0
 * when it took the option, -1 when c is none of them, TLM_EXIT_USAGE
 * after reporting a bad value. */
typedef struct cli_priv {
    int mech;          /* tlm_mech; 0: none */
    float eps;         /* 0: not given */
    uint64_t seed;
    int seeded;
} cli_priv;
int cli_priv_option(const char *cmd, int c, const char *arg, cli_priv *p);
/* After the options: 0, or TLM_EXIT_USAGE (reported) when --privatize
 * and --epsilon do not come together. */
int cli_priv_check(const char *cmd, const cli_priv *p);

/* Reports an unknown option or a missing argument in getopt's style. */
int cli_bad_option(const char *cmd, char **argv, int optopt_char);

/* The quantizer options (--method, --sparsity, --scale, --group, --pack,
 * --embed, --threshold, --layer-types) of 'quantize' and 'train --qat', alike. */
extern const struct option cli_quant_options[];
#define CLI_QUANT_OPTION_COUNT 9
int cli_quant_option(const char *cmd, int c, const char *arg, struct tlm_quant_cfg *q, int *scale_given);
/* Settles --group against --scale; returns TLM_EXIT_USAGE after reporting. */
int cli_quant_finish(const char *cmd, struct tlm_quant_cfg *q, int scale_given);

#endif
