/* The server's and the simulated device's side of federated fine-tuning,
 * over the message format of include/tritlm/fed.h: an update is a local
 * model minus the global one, encoded; aggregation is the weighted mean of
 * the updates that pass validation (FedAvg), each first clipped to an L2
 * norm if asked, applied to the global model's fp32 parameters. */
#ifndef TLM_HOST_FEDAVG_H
#define TLM_HOST_FEDAVG_H

#include <stddef.h>
#include <stdint.h>

#include "fed_dp.h"
#include "secagg.h"
#include "train/params.h"
#include "tritlm/fed.h"

/* The update of `local` against `global` (same shapes; global_model is the
 * global image, whose id the update carries): every tensor, or those with
 * only[i] set (tlm_params_select; NULL: all), encoded with enc. *msg is
 * malloc'd. */
tlm_status tlm_fed_make_update(const tlm_params *global, const tlm_model *global_model, const tlm_params *local,
                               const uint8_t *only, tlm_fed_enc enc, const tlm_fed_header *h, tlm_rand *rng, uint8_t **msg, size_t *bytes,
                               tlm_error *err);
/* The same with each matrix whose change is smaller that way sent as
 * rank-`rank` int8 factors (tlm_lowrank_factor: exact when the change has
 * that rank, as after fine-tuning with adapters of that rank; else its
 * leading part), the other tensors in int8; enc must be TLM_FED_I8. */
tlm_status tlm_fed_make_update_rank(const tlm_params *global, const tlm_model *global_model, const tlm_params *local,
                                    const uint8_t *only, tlm_fed_enc enc, uint32_t rank, const tlm_fed_header *h,
                                    tlm_rand *rng, uint8_t **msg, size_t *bytes, tlm_error *err);

typedef struct tlm_fedavg {
    const tlm_model *global_model; /* updates must name this model */
    uint32_t model_id;             /* its tlm_fed_model_id, computed once */
    tlm_params sum;                /* sum of weight x (clipped) delta per value */
    double *tensor_weight;         /* per tensor: the weights of the updates that carried it */
    double clip;                   /* > 0: each update's delta scaled to at most this L2 norm */
    uint32_t accepted, clipped;
    float *scratch; /* one decoded entry (the widest tensor) */
    /* differential privacy (tlm_fedavg_set_dp): every update weighs 1, is
     * clipped to dp->clip and rounded to the grid; the sum is exact */
    const tlm_fed_dp *dp;
    int64_t *dp_sum, *dp_k; /* sum of the rounded updates; one rounded update */
    /* optional (tlm_fedavg_restrict): per tensor, 1 if this round may change it */
    uint8_t *only;
    /* secure aggregation (tlm_fedavg_set_secure): masked shares summed mod 2^32 */
    const tlm_secagg *sec;
    const tlm_fed_roster *sec_roster; /* sec->n devices */
    uint32_t *sec_sum;     /* as many values as the parameters (the round's tensors used) */
    uint8_t *sec_seen;     /* whether each roster device has sent its share */
    uint32_t sec_round;    /* the round of the first share (all must agree) */
} tlm_fedavg;

tlm_status tlm_fedavg_init(tlm_fedavg *a, const tlm_model *global_model, double clip, tlm_error *err);
void tlm_fedavg_free(tlm_fedavg *a);
/* The round changes only the tensors with only[i] set (tlm_params_select
 * of a->sum): an update carrying any other is refused, and differential
 * privacy noises only these (plan it for their size). Call before any
 * update is added. */
tlm_status tlm_fedavg_restrict(tlm_fedavg *a, const uint8_t *only, tlm_error *err);

/* From here on, aggregate with differential privacy (dp planned for
 * a->sum.n values; clip is dp's). Call before any update is added. */
tlm_status tlm_fedavg_set_dp(tlm_fedavg *a, const tlm_fed_dp *dp, tlm_error *err);

/* From here on, aggregate masked shares (secure aggregation) of the
 * roster's devices (plan->n): each may send one share of exactly the
 * round's tensors (all, or tlm_fedavg_restrict's) on the plan's grid, all
 * for the same round. Call before any update is added; not with
 * tlm_fedavg_set_dp (the devices add the noise). roster stays alive. */
tlm_status tlm_fedavg_set_secure(tlm_fedavg *a, const tlm_secagg *plan, const tlm_fed_roster *roster, tlm_error *err);
/* The clients whose shares have not arrived (ascending; ids: plan->n
 * entries), their count returned. */
uint32_t tlm_fedavg_secure_missing(const tlm_fedavg *a, uint32_t *ids);

/* Validates one update against the global model and adds it (weight: its
 * example count). On any error nothing of it is added. */
tlm_status tlm_fedavg_add(tlm_fedavg *a, const uint8_t *msg, size_t n, tlm_error *err);
/* out = global + server_lr x (weighted mean delta), per tensor over the
 * updates that carried it (tensors no update carried stay as they are).
 * out must have the global model's shapes and hold its parameters. */
void tlm_fedavg_apply(const tlm_fedavg *a, tlm_params *out, float server_lr);
/* With differential privacy: out = global + server_lr x gamma x (sum +
 * discrete Gaussian noise) / clients, on every parameter (also those no
 * update carried) of the round's tensors (all, or tlm_fedavg_restrict's). rng must be a cryptographic source; if it fails, out
 * is left unchanged and an error returned. */
/* With secure aggregation: the sum of the shares that arrived, unmasked
 * with one reveal per sender (tlm_secagg_unmask), read as int32: out =
 * global + server_lr x gamma x sum / senders, on the round's tensors.
 * Refused (out unchanged) if fewer than 2 shares came or a reveal is
 * missing or disagrees. */
tlm_status tlm_fedavg_apply_secure(const tlm_fedavg *a, tlm_params *out, float server_lr, const tlm_secagg_reveal *rev,
                                   size_t n_rev, tlm_error *err);
tlm_status tlm_fedavg_apply_dp(const tlm_fedavg *a, tlm_params *out, float server_lr, tlm_rand *rng, tlm_error *err);

#endif
