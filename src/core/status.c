/* Status strings and the small message formatter (no stdio on devices). */
#include <float.h>
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

static void put_hex(sink *o, unsigned long long v)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[v & 15u];
        v >>= 4;
    } while (v);
    while (n) put_char(o, digits[--n]);
}

/* digits (at least 1) of the integer m, with a point after the first
 * `point` of them (none if point >= count), trailing zeros after the point
 * dropped when trim */
static void put_scaled(sink *o, unsigned long long m, int count, int point, int trim)
{
    char d[24];
    for (int i = count - 1; i >= 0; i--) {
        d[i] = (char)('0' + (int)(m % 10u));
        m /= 10u;
    }
    int last = count;
    if (trim && point < count)
        while (last > point && d[last - 1] == '0') last--;
    for (int i = 0; i < last; i++) {
        if (i == point) put_char(o, '.');
        put_char(o, d[i]);
    }
}

/* The arithmetic of put_double: double, except on cores without hardware
 * floating point (RV32IMC, the LX106), where the double routines it would
 * link cost about 7 KB of flash for error messages; there float's 7 digits
 * and range do. */
#if defined(__riscv_float_abi_soft) || defined(__XTENSA_SOFT_FLOAT__) || defined(__SOFTFP__)
typedef float fmt_real;
#define FMT_REAL_MAX FLT_MAX
#else
typedef double fmt_real;
#define FMT_REAL_MAX DBL_MAX
#endif

/* A number as %g with sig significant digits (1..17), or as %f with
 * `decimals` decimals when fixed: enough for messages, not for data (the
 * last digit may differ from printf's). */
static void put_double(sink *o, fmt_real v, int sig, int fixed, int decimals)
{
    if (v != v) {
        put_str(o, "nan");
        return;
    }
    if (v < 0) {
        put_char(o, '-');
        v = -v;
    }
    if (v > FMT_REAL_MAX) {
        put_str(o, "inf");
        return;
    }
    if (fixed) {
        fmt_real scale = 1;
        for (int i = 0; i < decimals; i++) scale *= 10;
        if (v * scale < (fmt_real)1e18) {
            const unsigned long long m = (unsigned long long)(v * scale + (fmt_real)0.5);
            /* digits: at least decimals + 1 */
            int count = 1;
            for (unsigned long long t = m; t >= 10u; t /= 10u) count++;
            if (count < decimals + 1) count = decimals + 1;
            put_scaled(o, m, count, count - decimals, 0);
            return;
        }
        sig = 17;
    }
    if (v == 0) {
        put_char(o, '0');
        return;
    }
    int e = 0;
    fmt_real a = v;
    while (a >= 10) {
        a /= 10;
        e++;
    }
    while (a < 1) {
        a *= 10;
        e--;
    }
    fmt_real scale = 1;
    for (int i = 1; i < sig; i++) scale *= 10;
    unsigned long long m = (unsigned long long)(a * scale + (fmt_real)0.5);
    if ((fmt_real)m >= scale * 10) {
        m /= 10u;
        e++;
    }
    if (e >= -5 && e < sig) { /* positional */
        if (e >= 0) {
            put_scaled(o, m, sig, e + 1, 1);
        } else {
            int count = sig;
            while (count > 1 && m % 10u == 0) {
                m /= 10u;
                count--;
            }
            put_str(o, "0.");
            for (int i = -1; i > e; i--) put_char(o, '0');
            put_scaled(o, m, count, count, 0);
        }
    } else {
        put_scaled(o, m, sig, 1, 1);
        put_char(o, 'e');
        put_char(o, e < 0 ? '-' : '+');
        const int ae = e < 0 ? -e : e;
        if (ae < 10) put_char(o, '0');
        put_u64(o, (unsigned long long)ae);
    }
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
        /* precision (for g and f): .N */
        int prec = -1;
        if (*p == '.') {
            prec = 0;
            for (p++; *p >= '0' && *p <= '9'; p++) prec = prec * 10 + (*p - '0');
        }
        if (*p == 'g' || *p == 'f') {
            const fmt_real v = (fmt_real)va_arg(ap, double);
            if (*p == 'g') put_double(&o, v, prec < 0 ? 6 : prec < 1 ? 1 : prec > 17 ? 17 : prec, 0, 0);
            else put_double(&o, v, 17, 1, prec < 0 ? 6 : prec > 17 ? 17 : prec);
            continue;
        }
        /* length: z (size_t), l (long), ll (long long); conversions s, u, x, d */
        int len = 0; /* 0 int, 1 long, 2 long long, 3 size_t */
        if (*p == 'z') {
            len = 3;
            p++;
        } else if (p[0] == 'l' && p[1] == 'l') {
            len = 2;
            p += 2;
        } else if (*p == 'l') {
            len = 1;
            p++;
        }
        if (*p == 's' && len == 0) {
            put_str(&o, va_arg(ap, const char *));
        } else if (*p == 'u' || *p == 'x') {
            const char conv = *p;
            unsigned long long v = len == 0   ? va_arg(ap, unsigned)
                                   : len == 1 ? va_arg(ap, unsigned long)
                                   : len == 2 ? va_arg(ap, unsigned long long)
                                              : va_arg(ap, size_t);
            if (conv == 'x') put_hex(&o, v);
            else put_u64(&o, v);
        } else if (*p == 'd') {
            long long v = len == 0   ? va_arg(ap, int)
                          : len == 1 ? va_arg(ap, long)
                          : len == 2 ? va_arg(ap, long long)
                                     : (long long)va_arg(ap, size_t);
            if (v < 0) {
                put_char(&o, '-');
                put_u64(&o, 0ull - (unsigned long long)v);
            } else {
                put_u64(&o, (unsigned long long)v);
            }
        } else if (*p == '%' && len == 0) {
            put_char(&o, '%');
        } else {
            /* a conversion this formatter does not know: its argument's
             * size is unknown, so no further argument is read */
            put_char(&o, '?');
            while (*p) put_char(&o, *p++);
            break;
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
