/* Host helpers around the core's privacy mechanisms: whole texts
 * (redact, encode, privatize, decode) and mechanism names. */
#ifndef TLM_HOST_PRIVACY_H
#define TLM_HOST_PRIVACY_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/dp.h"

typedef struct tlm_priv_text {
    uint32_t *in_ids, *out_ids; /* n each, BOS first */
    size_t n;
    char *text;                 /* out_ids decoded (without BOS), NUL-terminated */
    size_t text_len;
    size_t privatized;          /* ids in the mechanism's domain */
    double spent;               /* epsilon charged */
} tlm_priv_text;

/* "dx" / "rr" -> mechanism; 0 if unknown. */
tlm_mech tlm_mech_parse(const char *s);
const char *tlm_mech_name(tlm_mech m);
/* A positive number or "inf"; 0 on failure. */
int tlm_epsilon_parse(const char *s, float *eps);

/* Builds the core's d_chi search index for p (nothing for other
 * mechanisms): *mem gets the allocation, to free once p is no longer used. */
tlm_status tlm_privatizer_index_alloc(tlm_privatizer *p, void **mem, tlm_error *err);

/* Redacts (if asked), encodes with BOS, charges the budget (may be NULL)
 * and privatizes. On failure nothing is returned (out is empty). */
tlm_status tlm_privatize_text(const tlm_privatizer *p, tlm_rand *r, tlm_budget *b, const char *text, size_t len,
                              int redact, tlm_priv_text *out, tlm_error *err);
void tlm_priv_text_free(tlm_priv_text *t);

#endif
