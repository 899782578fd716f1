/* tritlm quantize --device: see hwaware.c. */
#ifndef TLM_CLI_HWAWARE_H
#define TLM_CLI_HWAWARE_H

#include <stdint.h>

#include "../host/device.h"
#include "../host/quant.h"

struct cJSON;

typedef struct cli_hw_opts {
    const tlm_device *dev;
    uint32_t ram_kb, flash_kb, mhz; /* the device's, or what the user gave instead */
    uint32_t ctx;                   /* the context the firmware's arena holds */
    uint32_t steps;                 /* positions decoded when measuring (instructions are averaged over them) */
    const char *calib;              /* text of stories to measure losses on */
    uint32_t calib_stories;         /* its first this many stories */
    const char *separator;          /* between them (--split); NULL: <|endoftext|> */
    double min_tok_s;               /* 0: no speed floor */
    double quantum;                 /* loss resolution (nats per token) */
} cli_hw_opts;

/* Chooses q's per-layer plan and embedding type for the device (q's other
 * settings, the quantizer's, are kept). Prints the measurements and the
 * plan on stderr and adds them to json if not NULL. Returns 0 or an exit
 * status. */
int cli_hw_plan(const tlm_params *p, const tlm_vocab *v, uint32_t bos, uint32_t eos, tlm_quant_cfg *q,
                const cli_hw_opts *o, struct cJSON *json);

/* Runs the written model's firmware for the device and reports flash, RAM
 * and instructions per token; non-zero if it fails or does not fit. */
int cli_hw_verify(const char *model, const cli_hw_opts *o, struct cJSON *json);

#endif
