#include "gemm.h"
#include "layers.h"

void tlm_linear_fwd(float *Y, const float *X, const float *W, uint32_t T, uint32_t n, uint32_t d, float *wt)
{
    tlm_transpose(wt, W, d, n);  /* n x d */
    tlm_gemm(Y, X, wt, T, n, d, 0);
}

void tlm_linear_bwd(float *dX, float *dW, const float *dY, const float *X, const float *W, uint32_t T, uint32_t n,
                    uint32_t d, float *dyt)
{
    if (dX) tlm_gemm(dX, dY, W, T, d, n, 1);  /* dX += dY W */
    tlm_transpose(dyt, dY, T, d);              /* d x T */
    tlm_gemm(dW, dyt, X, d, T, n, 1);          /* dW += dY^T X */
}
