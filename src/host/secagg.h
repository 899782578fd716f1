/* Secure aggregation: the server learns the sum of a round's updates and
 * nothing else about any one of them (Bonawitz et al. 2017, pairwise masks,
 * without its dropout recovery). Every device of the roster takes part:
 * it clips its update to C, rounds it to the grid C / 2^18, adds its share
 * of the discrete Gaussian noise (distributed differential privacy), and
 * adds a mask that is the sum of one pseudo-random stream per other device
 * (+ towards higher client ids, - towards lower), keyed by their X25519
 * shared secret, the round and the global model. Summed over the whole
 * roster mod 2^32 the masks cancel; any part of the roster's shares is
 * uniformly random to whoever lacks the other devices' secret keys. Each
 * share also carries a self mask from a seed only its device knows (double
 * masking): after the shares, the server names the devices that dropped
 * out (a signed request), and every device that sent a share reveals its
 * seed and the pair keys it shares with the dropped ones, once; the server
 * removes both and reads the survivors' sum. A share that arrives after
 * the reveals stays hidden by its own self mask.
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
/* The round's zCDP cost when `senders` devices' noise made it into the sum
 * (fewer than planned when some dropped out: each adds only its part). */
double tlm_secagg_rho(const tlm_secagg *s, uint32_t senders);

/* The mask of the roster member with keys `me` for (round, base model id):
 * d values, mod 2^32. */
tlm_status tlm_secagg_mask(const tlm_fed_keys *me, const tlm_fed_roster *roster, uint32_t round, uint32_t base_id,
                           size_t d, uint32_t *mask, tlm_error *err);

/* A device's masked update: local - global over the tensors with only[i]
 * set (NULL: all), clipped, rounded, noised, masked (pairwise and with a
 * fresh self-mask seed, returned in self_seed for the reveal); h->client
 * must be me's id in the roster. *msg is malloc'd. */
tlm_status tlm_fed_make_masked_update(const tlm_params *global, const tlm_model *global_model, const tlm_params *local,
                                      const uint8_t *only, const tlm_fed_header *h, const tlm_secagg *plan,
                                      const tlm_fed_keys *me, const tlm_fed_roster *roster, tlm_rand *rng,
                                      uint8_t self_seed[32], uint8_t **msg, size_t *bytes, tlm_error *err);

/* Adds the self mask of a device's seed for (round, model): d values. */
tlm_status tlm_secagg_self_mask(const uint8_t seed[32], uint32_t round, uint32_t base_id, size_t d, uint32_t *mask,
                                tlm_error *err);

#define TLM_SECAGG_REQUEST_MAGIC "TLMQ"
#define TLM_SECAGG_REVEAL_MAGIC "TLMR"
#define TLM_SECAGG_MAX_DEVICES 2048u

/* The server's request for reveals: the round, the global model's id and
 * the clients whose shares did not arrive, signed with its key. */
tlm_status tlm_secagg_request_sign(const tlm_fed_keys *server, uint32_t round, uint32_t base_id, const uint32_t *dropped,
                                   uint32_t nd, uint8_t **msg, size_t *n, tlm_error *err);
/* Checks the signature; *dropped is malloc'd. */
tlm_status tlm_secagg_request_verify(const tlm_fed_pub *server, const uint8_t *msg, size_t n, uint32_t *round,
                                     uint32_t *base_id, uint32_t **dropped, uint32_t *nd, tlm_error *err);

/* A device's reveal: its self-mask seed and, for each dropped client, the
 * pair key they share. Refused if the request names this device, names a
 * client not in the roster or twice, or leaves fewer than 2 devices. */
tlm_status tlm_secagg_reveal_make(const tlm_fed_keys *me, const tlm_fed_roster *roster, uint32_t round, uint32_t base_id,
                                  const uint8_t self_seed[32], const uint32_t *dropped, uint32_t nd, uint8_t **msg,
                                  size_t *n, tlm_error *err);

typedef struct tlm_secagg_reveal {
    uint32_t round, client, base_id, n_dropped;
    uint8_t self_seed[32];
    uint32_t *dropped;
    uint8_t (*pair_key)[32];
} tlm_secagg_reveal;
tlm_status tlm_secagg_reveal_parse(const uint8_t *msg, size_t n, tlm_secagg_reveal *r, tlm_error *err);
void tlm_secagg_reveal_free(tlm_secagg_reveal *r);

/* A device's answer to the server's signed request (verified with
 * `server`, and for this round and model): its reveal, sealed to the
 * server. *out is malloc'd. */
tlm_status tlm_secagg_answer(const tlm_fed_keys *me, const tlm_fed_pub *server, const tlm_fed_roster *roster,
                             uint32_t round, uint32_t base_id, const uint8_t self_seed[32], const uint8_t *request,
                             size_t request_n, uint8_t **out, size_t *out_n, tlm_error *err);

/* What a device keeps between its share and its reveal when the round
 * goes through files: one line "tritlm-secagg-state-1 ROUND MODEL_ID_HEX
 * CLIENT SEED_HEX" in a secret file (0600, never over an existing one). */
tlm_status tlm_secagg_state_write(const char *path, uint32_t round, uint32_t base_id, uint32_t client,
                                  const uint8_t self_seed[32], tlm_error *err);
tlm_status tlm_secagg_state_read(const char *path, uint32_t *round, uint32_t *base_id, uint32_t *client,
                                 uint8_t self_seed[32], tlm_error *err);

/* Removes from the sum of the shares (d values, in the round's order) the
 * self masks of every device that sent one (seen[i] for roster entry i)
 * and their pair masks with the devices that did not, from one reveal per
 * sender; refused (sum unusable) if a reveal is missing or disagrees on
 * the round, the model or who dropped out, or fewer than 2 shares came. */
tlm_status tlm_secagg_unmask(const tlm_fed_roster *roster, const uint8_t *seen, uint32_t round, uint32_t base_id,
                             const tlm_secagg_reveal *rev, size_t n_rev, size_t d, uint32_t *sum, tlm_error *err);

#endif
