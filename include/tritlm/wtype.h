/* Weight types: how a tensor's values are stored, and the kernels that read
 * them. One row of the table per type (src/core/wtype.c); docs/FORMAT.md
 * gives each bit layout. */
#ifndef TRITLM_WTYPE_H
#define TRITLM_WTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tlm_wtype {
    TLM_WTYPE_F32 = 0, /* IEEE-754 binary32, little-endian, row-major */
    TLM_WTYPE_I8 = 1,  /* int8 in [-127, 127], one byte per weight, times its scale */
    TLM_WTYPE_T2 = 2,  /* ternary, 2 bits per weight, 4 per byte */
    TLM_WTYPE_T3 = 3,  /* ternary, base 3, 5 weights per byte (1.6 bits) */
    TLM_WTYPE_TS = 4,  /* sparse ternary: nonzero bitmap + one sign bit per nonzero */
    TLM_WTYPE_COUNT
} tlm_wtype;

struct tlm_tensor;

/* A vector of activations quantized to int8 with one scale (absmax / 127):
 * x[i] ~= q[i] * scale (q zero-padded to a multiple of 32 and 32 bytes
 * more). `q16` serves the Arm DSP kernels and is built only there (NULL
 * elsewhere). Built by tlm_act_q8_quantize. */
typedef struct tlm_act_q8 {
    const int8_t *q;
    /* q widened to int16 in the order SMLAD pairs want: for each group of 4,
     * q[4g], q[4g+2], q[4g+1], q[4g+3] (0 past the end); built by the Arm
     * DSP int8 kernel on its first use for this vector (*q16_built then 1),
     * so that vectors only table kernels read skip it */
    int16_t *q16;
    uint32_t *q16_built;
    /* Lookup tables of the ternary table kernels (tlm_matvec_q8_t2_lut,
     * tlm_matvec_q8_t3_lut), built by a kernel on its first use for this
     * vector (*lut_kind then says for which type: 0 none, else the
     * tlm_wtype). t2: for the block of columns 4k..4k+3, TLM_T2_LUT_STRIDE
     * int16 sums at lut + k * TLM_T2_LUT_STRIDE, entry (byte) = the block's
     * dot product of q with the four weights a code byte holds (entries of
     * bytes with a code 3 are never written nor read); t3 the same for
     * blocks of five columns, TLM_T3_LUT_STRIDE entries, 243 used. */
    int16_t *lut;
    uint32_t *lut_kind;
    float scale;
    uint32_t n;
} tlm_act_q8;

/* Valid t2 bytes are at most 0xAA: 171 entries per block, rounded up so that
 * blocks stay 32-byte aligned; t3 bytes are below 243 (rounded up to keep
 * blocks 16-byte aligned). */
#define TLM_T2_LUT_STRIDE 176u
#define TLM_T3_LUT_STRIDE 248u

/* Bytes of buffer tlm_act_q8_quantize needs for n activations (q padded to
 * 32 bytes and 32 more, the int16 copy, the lookup tables' flag and
 * alignment), and with room for the lookup
 * tables too: the buffer of a vector that a table kernel (the t2 and t3
 * kernels of every target without AVX2) reads must have the latter size. */
#define TLM_ACT_Q8_ROUND32(n) ((((size_t)(n)) + 31u) & ~(size_t)31u)
#define TLM_ACT_Q8_BYTES(n) (3u * TLM_ACT_Q8_ROUND32(n) + 96u)
#define TLM_ACT_Q8_LUT2(n) ((((size_t)(n) + 3u) / 4u) * TLM_T2_LUT_STRIDE * 2u)
#define TLM_ACT_Q8_LUT3(n) ((((size_t)(n) + 4u) / 5u) * TLM_T3_LUT_STRIDE * 2u)
#define TLM_ACT_Q8_LUT_BYTES(n) \
    (TLM_ACT_Q8_BYTES(n) + (TLM_ACT_Q8_LUT2(n) > TLM_ACT_Q8_LUT3(n) ? TLM_ACT_Q8_LUT2(n) : TLM_ACT_Q8_LUT3(n)))

/* Quantizes x[0..n) per vector (absmax) into buf (TLM_ACT_Q8_BYTES(n)
 * bytes) and fills a. Values round half away from zero; an all-zero vector
 * gets scale 0. */
void tlm_act_q8_quantize(tlm_act_q8 *a, const float *x, uint32_t n, int8_t *buf);

/* The scale and int8 values alone (the training code fakes quantization
 * with exactly this arithmetic). Returns the scale. */
float tlm_q8_quantize_row(int8_t *q, const float *x, uint32_t n);

/* Float-activation matrix-vector product: out[r] = sum_c W[r][c] * x[c]
 * for r in [0, rows). */
typedef void (*tlm_matvec_f32_fn)(float *out, const float *x, const struct tlm_tensor *w);
/* Integer product for quantized types: each scale group's int8 x weight
 * sum is accumulated exactly in 32 bits, then
 * out[r] = (sum over groups g in order of (float)acc_g * scale_g) * a->scale. */
typedef void (*tlm_matvec_q8_fn)(float *out, const tlm_act_q8 *a, const struct tlm_tensor *w);

typedef struct tlm_wtype_traits {
    const char *name;
    uint32_t block_weights; /* weights per storage block within a row (TS: 8, bitmap only) */
    uint32_t block_bytes;   /* bytes per block (TS adds its sign bytes, see row_bytes) */
    uint32_t scale_kinds;   /* bit mask of tlm_scale_kind values the type accepts */
    uint32_t max_cols;      /* widest row the 32-bit accumulators allow */
    tlm_matvec_f32_fn matvec_f32;   /* f32 only */
    tlm_matvec_q8_fn matvec_q8_ref; /* quantized types: portable reference */
    /* Reads row r into out[0..cols) as float (scales applied). */
    void (*row_to_f32)(float *out, const struct tlm_tensor *w, uint32_t r);
    /* Checks the packed data of a tensor whose sizes are already known to
     * be right; returns the first bad row, or UINT32_MAX if all are valid. */
    uint32_t (*check_rows)(const struct tlm_tensor *w);
} tlm_wtype_traits;

/* Traits of type t, or NULL if t is not a known type. */
const tlm_wtype_traits *tlm_wtype_get(uint32_t t);

/* Bytes of one row of `cols` weights of type t with type parameter `param`
 * (TS: the most nonzeros a row may have); 0 if t is unknown. */
uint64_t tlm_wtype_row_bytes(uint32_t t, uint32_t cols, uint32_t param);

/* The fastest integer kernel this CPU runs for type t (the AVX2 variant on
 * x86-64 when the CPU has it, otherwise the reference); NULL for f32. */
tlm_matvec_q8_fn tlm_wtype_matvec_q8(uint32_t t);

/* The fast variant alone (NULL when not built or not supported here), so
 * that tests can hold it against the reference: the table kernel for t3
 * everywhere (faster than SIMD decoding of base-3 bytes); AVX2 on x86-64
 * for the other types; elsewhere the table kernel for t2 and the Arm DSP
 * kernel for int8. */
tlm_matvec_q8_fn tlm_wtype_matvec_q8_simd(uint32_t t);

/* The t2 and t3 table kernels, on every target (tests compare them with
 * the reference on the host too). Exact integer sums like the reference;
 * the vector's buffer must be TLM_ACT_Q8_LUT_BYTES. */
void tlm_matvec_q8_t2_lut(float *out, const tlm_act_q8 *a, const struct tlm_tensor *w);
void tlm_matvec_q8_t3_lut(float *out, const tlm_act_q8 *a, const struct tlm_tensor *w);

/* Which integer kernels run (benchmarks compare them): 1 the fastest
 * (default), 0 only the portable reference, 2 the portable table kernels
 * for t2 and t3 (what a core without AVX2 runs) and the reference for the
 * rest. */
void tlm_wtype_set_simd(int mode);

/* Bits per weight of a tensor's data and scales together. */
double tlm_tensor_bits_per_weight(const struct tlm_tensor *w);

#ifdef __cplusplus
}
#endif
#endif
