#include <stdlib.h>
#include <string.h>

#include "train/corpus.h"
#include "tune_local.h"
#include "tritlm/tune.h"

tlm_status tlm_tune_local(const tlm_model *m, const tlm_tune_local_opts *o, tlm_params *local,
                          tlm_tune_local_report *rep, tlm_error *err)
{
    memset(rep, 0, sizeof *rep);
    tlm_corpus c;
    tlm_status st = tlm_corpus_load(&c, m, o->data, o->separator, err);
    if (st) return st;
    rep->data_tokens = c.n;
    if (c.n < (size_t)o->window + 1u) { /* tlm_tune_run's own rule, with the file named */
        tlm_corpus_free(&c);
        return tlm_fail(err, TLM_ERR_ARG, "%s has %llu tokens; a window of %u needs at least %u", o->data,
                        (unsigned long long)c.n, o->window, o->window + 1u);
    }
    const size_t bytes = tlm_tune_arena_size(m, o->window);
    void *arena = bytes ? malloc(bytes) : NULL;
    tlm_tune tu;
    if (!arena) st = tlm_fail(err, TLM_ERR_NOMEM, "cannot allocate the tuning arena");
    if (!st) st = tlm_tune_init(&tu, m, o->window, arena, bytes, err);
    float *losses = st ? NULL : malloc((o->steps ? o->steps : 1u) * sizeof *losses);
    if (!st && !losses) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    size_t cursor = 0;
    if (!st) st = tlm_tune_run(&tu, c.tokens, c.n, o->steps, o->lr, &cursor, losses, err);
    const uint32_t tail = o->steps >= 20u ? 10u : (o->steps + 1u) / 2u; /* first and last steps, apart */
    if (!st && tail) {
        for (uint32_t s = 0; s < tail; s++) {
            rep->first_loss += losses[s] / tail;
            rep->last_loss += losses[o->steps - tail + s] / tail;
        }
    }
    free(losses);
    if (!st) st = tlm_params_from_model(local, m, err);
    for (uint32_t i = 0; !st && i < tlm_params_count(local); i++) { /* the norm tensors take the tuned gains */
        tlm_param_tensor t;
        tlm_params_tensor(local, i, &t);
        if (t.role == TLM_ROLE_ATTN_NORM || t.role == TLM_ROLE_FFN_NORM || t.role == TLM_ROLE_FINAL_NORM)
            memcpy(t.data, tu.gains + (size_t)tlm_tune_norm_index(&m->hp, t.role, t.layer) * m->hp.dim,
                   (size_t)t.cols * sizeof(float));
    }
    free(arena);
    tlm_corpus_free(&c);
    return st;
}
