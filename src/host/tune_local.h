/* The device's tuning step (tritlm/tune.h) run on a host over a text file:
 * what `tritlm fed update --device-step` sends, computed by the same core
 * code the firmware runs. */
#ifndef TLM_HOST_TUNE_LOCAL_H
#define TLM_HOST_TUNE_LOCAL_H

#include <stdint.h>

#include "train/params.h"
#include "tritlm/fed.h"
#include "tritlm/model.h"

typedef struct tlm_tune_local_opts {
    const char *data;      /* the device's text */
    const char *separator; /* between stories (NULL: <|endoftext|>), as training reads text */
    uint32_t window;       /* positions per step */
    uint32_t steps;        /* windows taken in order through the text (tlm_tune_run) */
    float lr;              /* Adam's learning rate */
    uint32_t lora_rank;    /* 0: the gains; else adapters of the attention projections (tlm_tune_init_lora) */
    float lora_alpha;      /* their alpha (scale alpha / rank) */
    uint64_t seed;         /* their A's initial values */
} tlm_tune_local_opts;

typedef struct tlm_tune_local_report {
    uint64_t data_tokens;
    double first_loss, last_loss; /* mean training loss of the first and last ten steps (fewer
                                     when there are fewer than 20) */
} tlm_tune_local_report;

/* Tunes m's norm gains on o->data; *local gets m's weights (expanded to
 * fp32) with the tuned gains. */
tlm_status tlm_tune_local(const tlm_model *m, const tlm_tune_local_opts *o, tlm_params *local,
                          tlm_tune_local_report *rep, tlm_error *err);

/* Tunes adapters (o->lora_rank > 0) on o->data and writes the update as
 * the device's core does (tlm_tune_add_update: low-rank int8 factors
 * rounded with rng) under header h, whose n_examples it sets to the
 * text's tokens and base_crc to m's id; *msg is malloc'd. */
tlm_status tlm_tune_local_update(const tlm_model *m, const tlm_tune_local_opts *o, tlm_fed_header *h, tlm_rand *rng,
                                 uint8_t **msg, size_t *bytes, tlm_tune_local_report *rep, tlm_error *err);

#endif
