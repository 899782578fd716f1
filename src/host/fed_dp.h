/* Differential privacy for federated aggregation (DP-FedAvg with the
 * discrete Gaussian mechanism): each update clipped to an L2 norm C and
 * rounded to the integer grid C / 2^18, the integer sum noised with an
 * exact discrete Gaussian, divided by a fixed number of clients. One
 * round is rho-zCDP with respect to adding or removing one update, rho =
 * Delta^2 / (2 sigma^2) (Canonne, Kamath, Steinke 2020); rounds compose by
 * adding rho. docs/FEDERATED.md states the guarantee and its limits. */
#ifndef TLM_HOST_FED_DP_H
#define TLM_HOST_FED_DP_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/dp.h"
#include "tritlm/status.h"

/* Grid steps per clip norm: a clipped update's coordinates are multiples
 * of C / TLM_FED_DP_GRID. */
#define TLM_FED_DP_GRID 262144.0 /* 2^18 */
/* The largest noise multiplier (keeps sigma^2 within the sampler's range). */
#define TLM_FED_DP_MAX_Z 100.0

typedef struct tlm_fed_dp {
    double clip;      /* C */
    double z;         /* noise multiplier: sigma = z x Delta */
    uint32_t clients; /* the fixed denominator of the mean */
    size_t dim;       /* values noised (every trainable parameter) */
    double gamma;     /* grid step C / 2^18 */
    double delta_l2;  /* Delta: L2 bound of one rounded update, in grid steps: 2^18 + sqrt(dim) / 2 */
    uint64_t lim2;    /* floor(Delta^2): a rounded update's exact squared norm must not exceed it */
    uint64_t sigma2;  /* the noise's variance in grid steps^2, ceil((z Delta)^2) */
    double rho;       /* this round's zCDP cost, Delta^2 / (2 sigma2) */
} tlm_fed_dp;

tlm_status tlm_fed_dp_plan(tlm_fed_dp *dp, double clip, double z, uint32_t clients, size_t dim, tlm_error *err);

/* The exact discrete Gaussian N_Z(0, sigma2) for an integer variance
 * 1 <= sigma2 <= 2^52 (Canonne, Kamath, Steinke 2020, with 128-bit
 * rationals); Laplace proposals beyond 2^36 (probability below e^-1000)
 * are drawn again. */
int64_t tlm_dgauss_wide(tlm_rand *r, uint64_t sigma2);

/* The epsilon of rho-zCDP at delta, by the conversion of Canonne, Kamath
 * and Steinke 2020 (Corollary 13), minimized over the Renyi order; +inf
 * for rho = +inf. Always at least the exact epsilon of a Gaussian
 * mechanism of that rho. */
double tlm_zcdp_epsilon(double rho, double delta);

#endif
