/* Server momentum for federated rounds (FedAvgM): the server keeps a
 * velocity v, one float per parameter, across rounds, and moves the global
 * model by it instead of by the round's mean change alone:
 *
 *     v <- beta v + mean change,   global <- global + server_lr v
 *
 * Changes that agree from round to round add up (Hsu et al.'s remedy for
 * devices whose data differ; on CLINC150, 0.5 halved the rounds a seed
 * classifier needed, docs/BENCHMARKS.md). The velocity lives in a state file
 * beside the server's models, written atomically after each round's
 * model, and names the model it applies to, so a state from another round
 * or model is refused.
 *
 * File layout (little-endian): "TLMV", version 1, the tlm_fed_model_id of
 * the global model the velocity applies to (the model its round wrote),
 * the number of values n, the CRC-32 of the values, a zero word; then n
 * float32 values in the parameters' canonical order. */
#ifndef TLM_HOST_FED_MOMENTUM_H
#define TLM_HOST_FED_MOMENTUM_H

#include <stddef.h>
#include <stdint.h>

#include "train/params.h"
#include "tritlm/status.h"

typedef struct tlm_fed_momentum {
    size_t n;
    float *v;
    int started; /* 0: no state file yet (v is zero) */
} tlm_fed_momentum;

/* The velocity for a global model whose id is model_id and which has n
 * parameters: read from path, or zero when path does not exist (the first
 * round). A file that is damaged, of another size, or for another model
 * is refused with a message. */
tlm_status tlm_fed_momentum_load(tlm_fed_momentum *m, const char *path, size_t n, uint32_t model_id, tlm_error *err);
void tlm_fed_momentum_free(tlm_fed_momentum *m);

/* After a round: out holds global + server_lr x (the round's change), as
 * every tlm_fedavg_apply variant leaves it, and global[0..m->n) the values
 * before it. Then v = beta v + (out - global) / server_lr and out = global
 * + server_lr x v. */
void tlm_fed_momentum_step(tlm_fed_momentum *m, float beta, float server_lr, const float *global, tlm_params *out);

/* Writes the velocity for the next round's global model (its id). */
tlm_status tlm_fed_momentum_save(const tlm_fed_momentum *m, const char *path, uint32_t model_id, tlm_error *err);

#endif
