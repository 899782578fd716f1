/* Rotary embeddings use the core's table (the same angles as decoding);
 * the backward pass is the rotation by the opposite angle. */
#include "../../core/ops.h"
#include "layers.h"

#define MAX_HEAD 1024

void tlm_rope_fwd(float *X, uint32_t T, uint32_t width, uint32_t hs, float theta)
{
    float rope[MAX_HEAD];
    for (uint32_t t = 0; t < T; t++) {
        tlm_rope_table(rope, t, hs, theta);
        tlm_rope_apply(X + (size_t)t * width, width, hs, rope);
    }
}

void tlm_rope_bwd(float *dX, uint32_t T, uint32_t width, uint32_t hs, float theta)
{
    float rope[MAX_HEAD];
    for (uint32_t t = 0; t < T; t++) {
        tlm_rope_table(rope, t, hs, theta);
        for (uint32_t j = 1; j < hs; j += 2) rope[j] = -rope[j];
        tlm_rope_apply(dX + (size_t)t * width, width, hs, rope);
    }
}
