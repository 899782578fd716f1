/* Status strings and the small message formatter (no stdio on devices). */
#include <stdarg.h>
#include <string.h>

#include "tritlm/status.h"

static const char *const status_names[TLM_STATUS_COUNT] = {
    [TLM_OK] = "ok",
    [TLM_ERR_ARG] = "invalid argument",
    [TLM_ERR_TRUNCATED] = "truncated",
    [TLM_ERR_MAGIC] = "bad magic",
    [TLM_ERR_VERSION] = "unsupported version",
    [TLM_ERR_HPARAM] = "bad hyperparameters",
    [TLM_ERR_TENSOR] = "bad tensor entry",
    [TLM_ERR_RANGE] = "out of range",
    [TLM_ERR_OVERFLOW] = "size overflow",
    [TLM_ERR_VOCAB] = "bad vocabulary",
    [TLM_ERR_CHECKSUM] = "checksum mismatch",
    [TLM_ERR_ARENA] = "arena too small",
    [TLM_ERR_UNSUPPORTED] = "unsupported",
    [TLM_ERR_IO] = "i/o error",
    [TLM_ERR_NOMEM] = "out of memory",
    [TLM_ERR_FORMAT] = "malformed input",
    [TLM_ERR_BUDGET] = "privacy budget exhausted",
    [TLM_ERR_RNG] = "random source failed",
};

const char *tlm_status_str(tlm_status s)
{
    if ((unsigned)s >= TLM_STATUS_COUNT) return "unknown status";
    return status_names[s];
}

typedef struct {
    char *buf;
    size_t cap, len;
} sink;

static void put_char(sink *o, char c)
{
    if (o->len + 1 < o->cap) o->buf[o->len++] = c;
}

static void put_str(sink *o, const char *s)
{
    if (!s) s = "(null)";
    while (*s) put_char(o, *s++);
}

static void put_u64(sink *o, unsigned long long v)
{
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    while (n) put_char(o, digits[--n]);
}

tlm_status tlm_fail(tlm_error *err, tlm_status status, const char *fmt, ...)
{
    if (!err) return status;
    err->status = status;
    sink o = {err->msg, sizeof err->msg, 0};
    va_list ap;
    va_start(ap, fmt);
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put_char(&o, *p);
            continue;
        }
        p++;
        if (*p == 's') {
            put_str(&o, va_arg(ap, const char *));
        } else if (*p == 'u') {
            put_u64(&o, va_arg(ap, unsigned));
        } else if (*p == 'd') {
            int v = va_arg(ap, int);
            if (v < 0) {
                put_char(&o, '-');
                put_u64(&o, (unsigned long long)(-(long long)v));
            } else {
                put_u64(&o, (unsigned long long)v);
            }
        } else if (p[0] == 'l' && p[1] == 'l' && p[2] == 'u') {
            put_u64(&o, va_arg(ap, unsigned long long));
            p += 2;
        } else if (*p == '%') {
            put_char(&o, '%');
        } else {
            if (!*p) break;
            put_char(&o, '?');
        }
    }
    va_end(ap);
    o.buf[o.len] = '\0';
    return status;
}

void tlm_error_clear(tlm_error *err)
{
    if (!err) return;
    err->status = TLM_OK;
    err->msg[0] = '\0';
}
