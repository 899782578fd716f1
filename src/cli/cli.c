#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tritlm %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see 'tritlm %s --help')\n", cmd);
    va_end(ap);
    return TLM_EXIT_USAGE;
}

int cli_fail(const char *cmd, const tlm_error *err)
{
    fprintf(stderr, "tritlm %s: error: %s (%s)\n", cmd, err->msg[0] ? err->msg : tlm_status_str(err->status),
            tlm_status_str(err->status));
    return TLM_EXIT_FAIL;
}

int cli_parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-') return 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return 0;
    *out = (uint32_t)v;
    return 1;
}

int cli_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-') return 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end) return 0;
    *out = v;
    return 1;
}

int cli_parse_split(const char *cmd, const char *arg, const char **sep)
{
    if (!strcmp(arg, "lines")) *sep = "\n";
    else if (!strcmp(arg, "stories")) *sep = NULL;
    else return cli_usage_error(cmd, "--split expects stories or lines, got '%s'", arg);
    return 0;
}

int cli_parse_float(const char *s, float lo, float hi, float *out)
{
    char *end;
    errno = 0;
    if (!s || !*s) return 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return 0;
    *out = (float)v;
    return 1;
}

int cli_bad_option(const char *cmd, char **argv, int opt)
{
    const char *arg = argv[optind - 1];
    if (opt == ':') return cli_usage_error(cmd, "option %s needs a value", arg);
    return cli_usage_error(cmd, "unknown option %s", arg);
}
