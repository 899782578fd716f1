/* Secure aggregation: the server learns the sum of a round's updates and
 * nothing else about any one of them (Bonawitz et al. 2017, pairwise masks,
 * without its dropout recovery). Every device of the roster takes part:
 * it clips its update to C, rounds it to the grid C / 2^18, adds its share
 * of the discrete Gaussian noise (distributed differential privacy), and
 * adds a mask that is the sum of one pseudo-random stream per other device
 * (+ towards higher client ids, - towards lower), keyed by their X25519
 * shared secret, the round and the global model. Summed over the whole
 * roster mod 2^32 the masks cancel; any part of the roster's shares is
 * uniformly random to whoever lacks the other devices' secret keys.
 * docs/FEDERATED.md states the guarantees and their limits. */
#ifndef TLM_HOST_SECAGG_H
#define TLM_HOST_SECAGG_H

#include <stddef.h>
#include <stdint.h>

#include "fedsec.h"
#include "train/params.h"
#include "tritlm/dp.h"
#include "tritlm/fed.h"

typedef struct tlm_secagg {
    double clip;           /* every device clips its update to this L2 norm */
    double gamma;          /* grid step, clip / 2^18 */
    uint32_t n;            /* devices in the round: the whole roster */
    size_t dim;            /* values of the round's tensors */
    double delta_l2;       /* L2 bound of one rounded update in grid steps, 2^18 + sqrt(dim) / 2 */
    uint64_t lim2;         /* floor(delta_l2^2) */
    double z;              /* noise multiplier (0: no noise) */
    uint64_t share_sigma2; /* each device's noise variance in grid steps^2: ceil((z delta_l2)^2 / n) */
    double rho;            /* the round's zCDP cost: delta_l2^2 / (2 n share_sigma2) (0 without noise) */
} tlm_secagg;

tlm_status tlm_secagg_plan(tlm_secagg *s, double clip, double z, uint32_t n, size_t dim, tlm_error *err);

/* The mask of the roster member with keys `me` for (round, base model id):
 * d values, mod 2^32. */
tlm_status tlm_secagg_mask(const tlm_fed_keys *me, const tlm_fed_roster *roster, uint32_t round, uint32_t base_id,
                           size_t d, uint32_t *mask, tlm_error *err);

/* A device's masked update: local - global over the tensors with only[i]
 * set (NULL: all), clipped, rounded, noised, masked; h->client must be
 * me's id in the roster. *msg is malloc'd. */
tlm_status tlm_fed_make_masked_update(const tlm_params *global, const tlm_model *global_model, const tlm_params *local,
                                      const uint8_t *only, const tlm_fed_header *h, const tlm_secagg *plan,
                                      const tlm_fed_keys *me, const tlm_fed_roster *roster, tlm_rand *rng,
                                      uint8_t **msg, size_t *bytes, tlm_error *err);

#endif
