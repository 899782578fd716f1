/* Pieces of the privacy code shared between dp.c (mechanisms) and
 * dx_index.c (the d_chi nearest-token search index). Device core only. */
#ifndef TLM_CORE_DP_INTERNAL_H
#define TLM_CORE_DP_INTERNAL_H

#include <stdint.h>

#include "tritlm/dp.h"

/* unk, BOS and EOS: never input to or output of a mechanism */
static inline int tlm_dp_is_special(const tlm_model *m, uint32_t id)
{
    return id == 0 || id == m->bos_id || id == m->eos_id;
}

/* fp32 score of token j for the noisy vector z: |e_j|^2 - 2 e_j.z, with
 * four partial sums per quantity so that the loop pipelines. The search
 * ranks tokens by exactly this value, with or without the index. (An
 * eight-lane vector version measured slower: its shuffles and reductions
 * cost more than the 64 sums.) */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static inline float tlm_dx_score(const float *ej, const float *z, uint32_t dim)
{
    float d0 = 0, d1 = 0, d2 = 0, d3 = 0, n0 = 0, n1 = 0, n2 = 0, n3 = 0;
    uint32_t i = 0;
    for (; i + 4u <= dim; i += 4u) {
        d0 += ej[i] * z[i];
        d1 += ej[i + 1] * z[i + 1];
        d2 += ej[i + 2] * z[i + 2];
        d3 += ej[i + 3] * z[i + 3];
        n0 += ej[i] * ej[i];
        n1 += ej[i + 1] * ej[i + 1];
        n2 += ej[i + 2] * ej[i + 2];
        n3 += ej[i + 3] * ej[i + 3];
    }
    for (; i < dim; i++) {
        d0 += ej[i] * z[i];
        n0 += ej[i] * ej[i];
    }
    return ((n0 + n1) + (n2 + n3)) - 2.0f * ((d0 + d1) + (d2 + d3));
}

/* The indexed search (dx_index.c): the plain scan's token for the noisy
 * vector z, or UINT32_MAX for a degenerate z (then the caller scans).
 * scratch: 2 dim + 16 floats. */
uint32_t tlm_dx_search_indexed(const tlm_privatizer *p, const float *z, float *scratch, uint32_t fallback);

#endif
