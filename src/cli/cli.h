/* Shared helpers of the tritlm subcommands. */
#ifndef TLM_CLI_H
#define TLM_CLI_H

#include <stdint.h>

#include "tritlm/status.h"

/* Exit codes: 0 ok, 1 failure while working, 2 bad usage. */
#define TLM_EXIT_FAIL 1
#define TLM_EXIT_USAGE 2

int cmd_import(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);

/* Prints "tritlm CMD: message" to stderr; returns TLM_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...);
/* Prints "tritlm CMD: <err message>" to stderr; returns TLM_EXIT_FAIL. */
int cli_fail(const char *cmd, const tlm_error *err);

/* Strict number parsing: the whole string must be a number in range. */
int cli_parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out);
int cli_parse_u64(const char *s, uint64_t *out);
int cli_parse_float(const char *s, float lo, float hi, float *out);

/* Reports an unknown option or a missing argument in getopt's style. */
int cli_bad_option(const char *cmd, char **argv, int optopt_char);

#endif
