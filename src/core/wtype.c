/* The weight-type table: one row per storage type with its packing, its
 * kernels and its validator. Adding a type means adding a row here, its
 * kernels, and its layout in docs/FORMAT.md. */
#include "tritlm/model.h"
#include "tritlm/wtype.h"
#include "kernels.h"

#define QSCALES ((1u << TLM_SCALE_TENSOR) | (1u << TLM_SCALE_ROW) | (1u << TLM_SCALE_GROUP))

static const tlm_wtype_traits wtype_table[TLM_WTYPE_COUNT] = {
    [TLM_WTYPE_F32] = {
        .name = "f32", .block_weights = 1, .block_bytes = 4,
        .scale_kinds = 1u << TLM_SCALE_NONE, .max_cols = UINT32_MAX,
        .matvec_f32 = tlm_matvec_f32_f32, .row_to_f32 = tlm_row_f32_f32,
    },
    [TLM_WTYPE_I8] = {
        /* 127 * 127 * 131072 < 2^31 */
        .name = "i8", .block_weights = 1, .block_bytes = 1, .scale_kinds = QSCALES, .max_cols = 131072u,
        .matvec_q8_ref = tlm_matvec_q8_i8, .row_to_f32 = tlm_row_f32_i8, .check_rows = tlm_check_rows_i8,
    },
    [TLM_WTYPE_T2] = {
        .name = "t2", .block_weights = 4, .block_bytes = 1, .scale_kinds = QSCALES, .max_cols = 1u << 24,
        .matvec_q8_ref = tlm_matvec_q8_t2, .row_to_f32 = tlm_row_f32_t2, .check_rows = tlm_check_rows_t2,
    },
    [TLM_WTYPE_T3] = {
        .name = "t3", .block_weights = 5, .block_bytes = 1, .scale_kinds = QSCALES, .max_cols = 1u << 24,
        .matvec_q8_ref = tlm_matvec_q8_t3, .row_to_f32 = tlm_row_f32_t3, .check_rows = tlm_check_rows_t3,
    },
    [TLM_WTYPE_TS] = {
        .name = "ts", .block_weights = 8, .block_bytes = 1, .scale_kinds = QSCALES, .max_cols = 1u << 24,
        .matvec_q8_ref = tlm_matvec_q8_ts, .row_to_f32 = tlm_row_f32_ts, .check_rows = tlm_check_rows_ts,
    },
};

const tlm_wtype_traits *tlm_wtype_get(uint32_t t)
{
    if (t >= TLM_WTYPE_COUNT || !wtype_table[t].name) return NULL;
    return &wtype_table[t];
}

uint64_t tlm_wtype_row_bytes(uint32_t t, uint32_t cols, uint32_t param)
{
    const tlm_wtype_traits *tr = tlm_wtype_get(t);
    if (!tr) return 0;
    /* 32-bit division (cores without a 64-bit divider call a slow routine) */
    const uint32_t blocks = cols / tr->block_weights + (cols % tr->block_weights != 0u);
    uint64_t bytes = (uint64_t)blocks * tr->block_bytes; /* < 2^32 * 2^32: fits */
    if (t == TLM_WTYPE_TS) bytes += ((uint64_t)param + 7u) / 8u;
    return bytes;
}

/* The one switch benchmarks flip to time other kernels: 0 the reference
 * only, 1 the fastest (default), 2 the portable table kernels only. */
static int simd_mode = 1;

void tlm_wtype_set_simd(int mode) { simd_mode = mode == 0 || mode == 2 ? mode : 1; }

tlm_matvec_q8_fn tlm_wtype_matvec_q8_simd(uint32_t t)
{
    if (!simd_mode || !tlm_wtype_get(t) || t == TLM_WTYPE_F32) return NULL;
    if (t == TLM_WTYPE_T3) return tlm_matvec_q8_t3_lut; /* beats AVX2 decoding too */
    tlm_matvec_q8_fn f = simd_mode == 1 ? tlm_matvec_q8_avx2(t) : NULL;
    if (f) return f;
    if (t == TLM_WTYPE_T2) return tlm_matvec_q8_t2_lut; /* every target without AVX2 */
    return simd_mode == 1 ? tlm_matvec_q8_dsp(t) : NULL;
}

tlm_matvec_q8_fn tlm_wtype_matvec_q8(uint32_t t)
{
    const tlm_wtype_traits *tr = tlm_wtype_get(t);
    if (!tr || !tr->matvec_q8_ref) return NULL;
    tlm_matvec_q8_fn f = tlm_wtype_matvec_q8_simd(t);
    return f ? f : tr->matvec_q8_ref;
}

double tlm_tensor_bits_per_weight(const tlm_tensor *w)
{
    uint64_t n_scales = 0;
    if (w->scale_kind == TLM_SCALE_TENSOR) n_scales = 1;
    else if (w->scale_kind == TLM_SCALE_ROW) n_scales = w->rows;
    else if (w->scale_kind == TLM_SCALE_GROUP) n_scales = (uint64_t)w->rows * ((w->cols + w->group - 1u) / w->group);
    const double n = (double)w->rows * (double)w->cols;
    return n > 0 ? ((double)w->data_bytes + 4.0 * (double)n_scales) * 8.0 / n : 0.0;
}
