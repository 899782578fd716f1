/* Weight types: how a tensor's values are stored, and the kernels that read
 * them. One row of the table per type (src/core/wtype.c). */
#ifndef TRITLM_WTYPE_H
#define TRITLM_WTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tlm_wtype {
    TLM_WTYPE_F32 = 0, /* IEEE-754 binary32, little-endian, row-major */
    TLM_WTYPE_COUNT
} tlm_wtype;

struct tlm_tensor;

/* Float-activation matrix-vector product: out[r] = sum_c W[r][c] * x[c]
 * for r in [0, rows). */
typedef void (*tlm_matvec_f32_fn)(float *out, const float *x, const struct tlm_tensor *w);

typedef struct tlm_wtype_traits {
    const char *name;
    uint32_t block_weights; /* weights per storage block within a row */
    uint32_t block_bytes;   /* bytes per block; a row is ceil(cols/block) blocks */
    uint32_t scale_kinds;   /* bit mask of tlm_scale_kind values the type accepts */
    tlm_matvec_f32_fn matvec_f32;
    /* Reads row r into out[0..cols) as float (scales applied). */
    void (*row_to_f32)(float *out, const struct tlm_tensor *w, uint32_t r);
} tlm_wtype_traits;

/* Traits of type t, or NULL if t is not a known type. */
const tlm_wtype_traits *tlm_wtype_get(uint32_t t);

/* Bytes of one row of `cols` weights of type t; 0 if t is unknown or the
 * size would not fit in 64 bits. */
uint64_t tlm_wtype_row_bytes(uint32_t t, uint32_t cols);

#ifdef __cplusplus
}
#endif
#endif
