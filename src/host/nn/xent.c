#include <math.h>
#include <string.h>

#include "../simd.h"
#include "layers.h"

double tlm_xent_fwd_bwd(float *logits, const uint32_t *targets, uint32_t T, uint32_t V, float scale)
{
    double loss = 0;
    for (uint32_t t = 0; t < T; t++) {
        float *l = logits + (size_t)t * V;
        if (targets[t] == TLM_NO_TARGET) {
            memset(l, 0, (size_t)V * sizeof *l);
            continue;
        }
        const float mx = tlm_vmax(l, V);
        const float target = l[targets[t]];
        const float sum = tlm_vexp_sum(l, V, mx);
        loss += log((double)sum) + (double)mx - (double)target;
        const float k = scale / sum;
        for (uint32_t i = 0; i < V; i++) l[i] *= k;
        l[targets[t]] -= scale;
    }
    return loss;
}

double tlm_xent_distill_fwd_bwd(float *logits, const uint32_t *targets, const float *teacher, float alpha, uint32_t T,
                                uint32_t V, float scale)
{
    double loss = 0;
    for (uint32_t t = 0; t < T; t++) {
        float *l = logits + (size_t)t * V;
        const float *pt = teacher + (size_t)t * V;
        if (targets[t] == TLM_NO_TARGET) {
            memset(l, 0, (size_t)V * sizeof *l);
            continue;
        }
        const float mx = tlm_vmax(l, V);
        const float target = l[targets[t]];
        const float sum = tlm_vexp_sum(l, V, mx); /* leaves exp(l - mx) in l */
        loss += log((double)sum) + (double)mx - (double)target;
        const float k = scale / sum, ka = scale * alpha;
        for (uint32_t i = 0; i < V; i++) l[i] = l[i] * k - ka * pt[i];
        l[targets[t]] -= scale * (1.0f - alpha);
    }
    return loss;
}
