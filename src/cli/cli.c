#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "../host/privacy.h"
#include "cli.h"

/* Length of the valid UTF-8 sequence at s[0..n), 0 if none (NUL included). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    const unsigned c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (c == 0) return 0;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;      /* no overlong forms */
        else if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F; /* nothing past U+10FFFF */
    } else return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

int cli_json_add_text(cJSON *obj, const char *key, const char *s, size_t n)
{
    char *t = malloc(3 * n + 1), *o = t;
    if (!t) return 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        const size_t k = utf8_len(u + i, n - i);
        if (k) {
            memcpy(o, u + i, k);
            o += k;
            i += k;
        } else {
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    *o = 0;
    const int ok = cJSON_AddStringToObject(obj, key, t) != NULL;
    free(t);
    return ok;
}

int cli_refuse_clobber(const char *cmd, const char *out, const char *const *in, size_t n)
{
    struct stat so, si;
    if (!out || stat(out, &so) != 0) return 0; /* a new file replaces nothing */
    for (size_t i = 0; i < n; i++)
        if (in[i] && stat(in[i], &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino)
            return cli_usage_error(cmd, "the output %s is the input %s: writing it would replace it; choose another file",
                                   out, in[i]);
    return 0;
}

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

void cli_json_emit(cJSON *obj)
{
    char *s = cJSON_PrintUnformatted(obj);
    if (s) puts(s);
    free(s);
    cJSON_Delete(obj);
}

int cli_priv_check(const char *cmd, const cli_priv *p)
{
    if ((p->mech != 0) != (p->eps > 0.0f)) return cli_usage_error(cmd, "--privatize and --epsilon go together");
    return 0;
}

int cli_priv_option(const char *cmd, int c, const char *arg, cli_priv *p)
{
    switch (c) {
    case 'P':
        if (!(p->mech = (int)tlm_mech_parse(arg))) return cli_usage_error(cmd, "--privatize expects dx or rr, got '%s'", arg);
        return 0;
    case 'E':
        if (!tlm_epsilon_parse(arg, &p->eps)) return cli_usage_error(cmd, "--epsilon expects a positive number or inf, got '%s'", arg);
        return 0;
    case 'S':
        if (!cli_parse_u64(arg, &p->seed)) return cli_usage_error(cmd, "--seed expects an integer, got '%s'", arg);
        p->seeded = 1;
        return 0;
    default: return -1;
    }
}

int cli_parse_confidence(const char *cmd, const char *s, float *out)
{
    char *end;
    const double p = s ? strtod(s, &end) : 0.0;
    if (!s || *end || end == s || !(p > 0 && p < 1))
        return cli_usage_error(cmd, "--min-confidence expects a number between 0 and 1, got '%s'", s ? s : "");
    *out = (float)p;
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
