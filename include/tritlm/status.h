/* Status codes and error messages shared by every tritlm function.
 * Core functions never abort: they return a tlm_status and, where useful,
 * fill a tlm_error with a human-readable message. */
#ifndef TRITLM_STATUS_H
#define TRITLM_STATUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tlm_status {
    TLM_OK = 0,
    TLM_ERR_ARG,         /* invalid argument from the caller */
    TLM_ERR_TRUNCATED,   /* buffer or file shorter than it declares */
    TLM_ERR_MAGIC,       /* not a tritlm image (or not the expected foreign format) */
    TLM_ERR_VERSION,     /* format version this build does not read */
    TLM_ERR_HPARAM,      /* zero, inconsistent or absurd hyperparameters */
    TLM_ERR_TENSOR,      /* tensor table entry wrong (role, type, shape, scales) */
    TLM_ERR_RANGE,       /* offset or size outside the buffer */
    TLM_ERR_OVERFLOW,    /* size arithmetic overflows */
    TLM_ERR_VOCAB,       /* tokenizer section malformed */
    TLM_ERR_CHECKSUM,    /* content does not match its checksum */
    TLM_ERR_ARENA,       /* arena missing, misaligned or too small */
    TLM_ERR_UNSUPPORTED, /* valid but not supported by this build */
    TLM_ERR_IO,          /* host only: file system error */
    TLM_ERR_NOMEM,       /* host only: allocation failed */
    TLM_ERR_FORMAT,      /* host only: malformed foreign file (llama2.c, text) */
    TLM_ERR_BUDGET,      /* privatization refused: it would exceed the privacy budget */
    TLM_ERR_RNG,         /* the random source failed; nothing was released */
    TLM_STATUS_COUNT
} tlm_status;

/* Short fixed description of a status ("truncated", ...). Never NULL. */
const char *tlm_status_str(tlm_status s);

#define TLM_ERROR_MSG_BYTES 192

/* A status with a message that says what exactly is wrong. */
typedef struct tlm_error {
    tlm_status status;
    char msg[TLM_ERROR_MSG_BYTES];
} tlm_error;

/* Sets err (if not NULL) to status and a message built from fmt, which
 * understands %s (const char *), %u, %x and %d with the lengths of printf
 * (none, l, ll, z), and %g, %f with an optional precision (%.4g; the last
 * digit may differ from printf's, and %f of 1e12 or more is written as
 * %g); no widths or flags. At any other conversion the rest of fmt is
 * copied as it is and no further argument is read. Returns status, so
 * callers can `return tlm_fail(...)`. */
tlm_status tlm_fail(tlm_error *err, tlm_status status, const char *fmt, ...)
/* The compiler checks the arguments on 64-bit hosts (every host build and
 * test). Not on 32-bit targets: there uint32_t is often unsigned long, which
 * %u reads correctly (the same size) but printf's rules call a mismatch. */
#if defined(__GNUC__) && defined(__LP64__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Clears err to TLM_OK with an empty message. */
void tlm_error_clear(tlm_error *err);

#ifdef __cplusplus
}
#endif
#endif
