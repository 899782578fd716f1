/* Hardware-aware quantization: a weight type for each layer (and for the
 * embedding/classifier) that costs the least accuracy within a device's
 * flash, RAM and speed. The caller measures, per item and type, the loss
 * it adds (on calibration text), its flash bytes, the instructions per
 * token it adds on the device's core (the firmware in QEMU) and the RAM
 * its type needs; this file only searches. The search is exact: it keeps
 * every plan that no other plan beats in loss, instructions and flash at
 * once (a Pareto front), item by item. */
#ifndef TLM_HOST_HWPLAN_H
#define TLM_HOST_HWPLAN_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/status.h"

/* The types an item can take (indices into the per-type arrays). */
enum { TLM_HW_F32 = 0, TLM_HW_I8, TLM_HW_T2, TLM_HW_T3, TLM_HW_NTYPES };

typedef struct tlm_hw_item {
    int allowed[TLM_HW_NTYPES];
    double dloss[TLM_HW_NTYPES]; /* loss added (nats per token; negative counts as 0) */
    double flash[TLM_HW_NTYPES]; /* bytes */
    double insns[TLM_HW_NTYPES]; /* instructions per token (relative to any common base) */
    double ram[TLM_HW_NTYPES];   /* RAM the whole firmware needs if this type is used (a maximum, not a sum) */
} tlm_hw_item;

typedef struct tlm_hw_budget {
    double flash;   /* total flash bytes allowed for the items (after the fixed part) */
    double insns;   /* instructions per token allowed for the items; <= 0: no limit */
    double ram;     /* bytes */
    double quantum; /* loss resolution: losses are compared in whole quanta (noise) */
} tlm_hw_budget;

typedef struct tlm_hw_result {
    double dloss, flash, insns, ram; /* the plan's sums (ram: its maximum) */
    size_t front;                    /* largest Pareto front kept on the way */
    int exact;                       /* 0 if the front had to be cut (then the plan may not be optimal) */
} tlm_hw_result;

/* Chooses choice[i] for every item. TLM_ERR_ARG with a message naming the
 * tightest budget if no plan fits. */
tlm_status tlm_hw_plan(const tlm_hw_item *items, size_t n, const tlm_hw_budget *b, uint8_t *choice,
                       tlm_hw_result *res, tlm_error *err);

/* The same search, keeping up to kmax plans: the first kmax of the final
 * Pareto front in the order of the objective (least loss, then
 * instructions, then flash), plan j in choices[j * n ..], its sums in
 * res[j]; *found plans were kept (at least 1 on success). For checking the
 * front's leaders against a measurement of their real loss. */
tlm_status tlm_hw_plans(const tlm_hw_item *items, size_t n, const tlm_hw_budget *b, size_t kmax, uint8_t *choices,
                        tlm_hw_result *res, size_t *found, tlm_error *err);

/* A plan's loss in quanta (what the search minimizes first). */
long tlm_hw_loss_quanta(const tlm_hw_item *items, size_t n, const uint8_t *choice, double quantum);

#endif
