#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "privacy.h"
#include "tritlm/tokenizer.h"

tlm_mech tlm_mech_parse(const char *s)
{
    if (!strcmp(s, "dx")) return TLM_MECH_DX;
    if (!strcmp(s, "rr")) return TLM_MECH_RR;
    return TLM_MECH_NONE;
}

const char *tlm_mech_name(tlm_mech m) { return m == TLM_MECH_DX ? "dx" : m == TLM_MECH_RR ? "rr" : "none"; }

int tlm_epsilon_parse(const char *s, float *eps)
{
    if (!strcmp(s, "inf") || !strcmp(s, "infinity")) {
        *eps = INFINITY;
        return 1;
    }
    char *end;
    const double v = strtod(s, &end);
    if (end == s || *end || !(v > 0.0) || !isfinite(v) || v > 1e6) return 0;
    *eps = (float)v;
    return 1;
}

void tlm_priv_text_free(tlm_priv_text *t)
{
    free(t->in_ids);
    free(t->out_ids);
    free(t->text);
    memset(t, 0, sizeof *t);
}

tlm_status tlm_privatizer_index_alloc(tlm_privatizer *p, void **mem, tlm_error *err)
{
    *mem = NULL;
    const size_t bytes = tlm_privatizer_index_bytes(p);
    if (!bytes) return TLM_OK;
    *mem = aligned_alloc(64, (bytes + 63u) & ~(size_t)63u);
    if (!*mem) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory for the d_chi search index (%zu bytes)", bytes);
    tlm_privatizer_set_index(p, *mem);
    return TLM_OK;
}

tlm_status tlm_privatize_text(const tlm_privatizer *p, tlm_rand *r, tlm_budget *b, const char *text, size_t len,
                              int redact, tlm_priv_text *out, tlm_error *err)
{
    const tlm_model *m = p->model;
    memset(out, 0, sizeof *out);
    char *red = NULL;
    if (redact) {
        const size_t cap = 4 * len + 16;
        red = malloc(cap);
        if (!red) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        len = tlm_redact(text, len, red, cap);
        text = red;
    }
    const size_t cap = TLM_ENCODE_MAX_IDS(len);
    int32_t *scratch = malloc(TLM_ENCODE_SCRATCH(cap) * sizeof *scratch);
    float *ps = malloc(TLM_PRIV_SCRATCH_FLOATS(m->hp.dim) * sizeof *ps);
    out->in_ids = malloc(cap * sizeof *out->in_ids);
    out->out_ids = malloc(cap * sizeof *out->out_ids);
    tlm_status st = (!scratch || !ps || !out->in_ids || !out->out_ids) ? tlm_fail(err, TLM_ERR_NOMEM, "out of memory") : TLM_OK;
    if (!st) {
        st = tlm_encode(m, text, len, TLM_ENCODE_BOS, out->in_ids, cap, scratch, &out->n);
        if (st) tlm_fail(err, st, "cannot encode the text with this model's vocabulary");
    }
    if (!st) st = tlm_privatize_ids(p, r, b, out->in_ids, out->n, out->out_ids, ps, &out->spent, err);
    if (!st) {
        for (size_t i = 0; i < out->n; i++) out->privatized += (size_t)tlm_priv_in_domain(p, out->in_ids[i]);
        size_t tcap = 64;
        for (size_t i = 1; i < out->n; i++) tcap += m->max_token_length + 1u;
        out->text = malloc(tcap);
        if (!out->text) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        for (size_t i = 1; !st && i < out->n; i++) {
            const uint8_t *piece;
            const size_t k = tlm_decode_piece(m, out->out_ids[i - 1], out->out_ids[i], &piece);
            memcpy(out->text + out->text_len, piece, k);
            out->text_len += k;
        }
        if (!st) out->text[out->text_len] = 0;
    }
    free(scratch);
    free(ps);
    free(red);
    if (st) tlm_priv_text_free(out);
    return st;
}
