#include <string.h>

#include "layers.h"

void tlm_embed_fwd(float *X, const float *E, const uint32_t *tokens, uint32_t T, uint32_t dim)
{
    for (uint32_t t = 0; t < T; t++) memcpy(X + (size_t)t * dim, E + (size_t)tokens[t] * dim, dim * sizeof(float));
}

void tlm_embed_bwd(float *dE, const float *dX, const uint32_t *tokens, uint32_t T, uint32_t dim)
{
    for (uint32_t t = 0; t < T; t++) {
        float *row = dE + (size_t)tokens[t] * dim;
        const float *g = dX + (size_t)t * dim;
        for (uint32_t i = 0; i < dim; i++) row[i] += g[i];
    }
}
