#include <stdlib.h>
#include <string.h>

#include "train/corpus.h"
#include "tune_local.h"
#include "tritlm/tune.h"

/* Loads the text and runs the tuner over it (o->lora_rank: adapters). On
 * success *arena holds the tuner's state (free it after use). */
static tlm_status run(const tlm_model *m, const tlm_tune_local_opts *o, tlm_tune *tu, void **arena,
                      tlm_tune_local_report *rep, tlm_error *err)
{
    memset(rep, 0, sizeof *rep);
    *arena = NULL;
    tlm_corpus c;
    tlm_status st = tlm_corpus_load(&c, m, o->data, o->separator, 0, err);
    if (st) return st;
    rep->data_tokens = c.n;
    if (c.n < (size_t)o->window + 1u) { /* tlm_tune_run's own rule, with the file named */
        tlm_corpus_free(&c);
        return tlm_fail(err, TLM_ERR_ARG, "%s has %llu tokens; a window of %u needs at least %u", o->data,
                        (unsigned long long)c.n, o->window, o->window + 1u);
    }
    const size_t bytes = tlm_tune_arena_size_lora(m, o->window, o->lora_rank);
    void *a = bytes ? malloc(bytes) : NULL;
    if (!a) st = tlm_fail(err, TLM_ERR_NOMEM, "cannot allocate the tuning arena");
    if (!st) st = tlm_tune_init_lora(tu, m, o->window, o->lora_rank, o->lora_alpha, o->seed, a, bytes, err);
    float *losses = st ? NULL : malloc((o->steps ? o->steps : 1u) * sizeof *losses);
    if (!st && !losses) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    size_t cursor = 0;
    if (!st) st = tlm_tune_run(tu, c.tokens, c.n, o->steps, o->lr, &cursor, losses, err);
    const uint32_t tail = o->steps >= 20u ? 10u : (o->steps + 1u) / 2u; /* first and last steps, apart */
    if (!st && tail) {
        for (uint32_t s = 0; s < tail; s++) {
            rep->first_loss += losses[s] / tail;
            rep->last_loss += losses[o->steps - tail + s] / tail;
        }
    }
    free(losses);
    tlm_corpus_free(&c);
    if (st) free(a);
    else *arena = a;
    return st;
}

tlm_status tlm_tune_local(const tlm_model *m, const tlm_tune_local_opts *o, tlm_params *local,
                          tlm_tune_local_report *rep, tlm_error *err)
{
    if (o->lora_rank) return tlm_fail(err, TLM_ERR_ARG, "adapters go out as an update: tlm_tune_local_update");
    tlm_tune tu;
    void *arena;
    tlm_status st = run(m, o, &tu, &arena, rep, err);
    if (!st) st = tlm_params_from_model(local, m, err);
    for (uint32_t i = 0; !st && i < tlm_params_count(local); i++) { /* the norm tensors take the tuned gains */
        tlm_param_tensor t;
        tlm_params_tensor(local, i, &t);
        if (t.role == TLM_ROLE_ATTN_NORM || t.role == TLM_ROLE_FFN_NORM || t.role == TLM_ROLE_FINAL_NORM)
            memcpy(t.data, tu.gains + (size_t)tlm_tune_norm_index(&m->hp, t.role, t.layer) * m->hp.dim,
                   (size_t)t.cols * sizeof(float));
    }
    free(arena);
    return st;
}

tlm_status tlm_tune_local_update(const tlm_model *m, const tlm_tune_local_opts *o, tlm_fed_header *h, tlm_rand *rng,
                                 uint8_t **msg, size_t *bytes, tlm_tune_local_report *rep, tlm_error *err)
{
    *msg = NULL;
    *bytes = 0;
    if (!o->lora_rank) return tlm_fail(err, TLM_ERR_ARG, "no adapters to send");
    tlm_tune tu;
    void *arena;
    tlm_status st = run(m, o, &tu, &arena, rep, err);
    if (st) return st;
    h->n_examples = rep->data_tokens > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)rep->data_tokens;
    h->base_crc = tlm_fed_model_id(m);
    const size_t cap = TLM_FED_HEADER_BYTES + tlm_tune_update_bytes(&tu, TLM_FED_I8);
    uint8_t *buf = malloc(cap);
    tlm_fed_writer w;
    if (!buf) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    if (!st) st = tlm_fed_begin(&w, buf, cap, h, err);
    if (!st) st = tlm_tune_add_update(&tu, &w, TLM_FED_I8, rng, err);
    if (!st) st = tlm_fed_finish(&w, bytes, err);
    free(arena);
    if (st) free(buf);
    else *msg = buf;
    return st;
}
