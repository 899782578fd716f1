/* The weight-type table: one row per storage type with its packing and its
 * kernels. Adding a type means adding a row here and its kernel file. */
#include "tritlm/model.h"
#include "tritlm/wtype.h"
#include "kernels.h"

static const tlm_wtype_traits wtype_table[TLM_WTYPE_COUNT] = {
    [TLM_WTYPE_F32] = {
        .name = "f32",
        .block_weights = 1,
        .block_bytes = 4,
        .scale_kinds = 1u << TLM_SCALE_NONE,
        .matvec_f32 = tlm_matvec_f32_f32,
        .row_to_f32 = tlm_row_f32_f32,
    },
};

const tlm_wtype_traits *tlm_wtype_get(uint32_t t)
{
    if (t >= TLM_WTYPE_COUNT || !wtype_table[t].name) return NULL;
    return &wtype_table[t];
}

uint64_t tlm_wtype_row_bytes(uint32_t t, uint32_t cols)
{
    const tlm_wtype_traits *tr = tlm_wtype_get(t);
    if (!tr) return 0;
    uint64_t blocks = ((uint64_t)cols + tr->block_weights - 1u) / tr->block_weights;
    return blocks * tr->block_bytes; /* < 2^32 * 2^32: fits */
}
