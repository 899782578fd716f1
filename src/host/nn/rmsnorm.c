#include "../../core/ops.h"
#include "layers.h"

/* The core's (the device's training step uses the same code). */
void tlm_rmsnorm_fwd(float *Y, float *inv, const float *X, const float *w, uint32_t T, uint32_t n, float eps)
{
    tlm_rmsnorm_rows(Y, inv, X, w, T, n, eps);
}

void tlm_rmsnorm_bwd(float *dX, float *dw, const float *dY, const float *X, const float *inv, const float *w,
                     uint32_t T, uint32_t n)
{
    tlm_rmsnorm_rows_back(dX, dw, dY, X, inv, w, T, n);
}
