/* Federated averaging over tritlm update messages (fedavg.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedavg.h"
#include "lowrank.h"

__extension__ typedef unsigned __int128 u128;

/* Whether tensor g goes as rank-`rank` factors: a matrix whose factors
 * take fewer bytes than its int8 entry. */
static int as_factors(const tlm_param_tensor *g, uint32_t rank)
{
    if (!rank || g->rows < 2 || g->cols < 2) return 0;
    const size_t lb = tlm_fed_lowrank_entry_bytes(g->rows, g->cols, rank);
    return lb && lb < tlm_fed_entry_bytes(TLM_FED_I8, g->rows * g->cols);
}

tlm_status tlm_fed_make_update_rank(const tlm_params *global, const tlm_model *global_model, const tlm_params *local,
                                    const uint8_t *only, tlm_fed_enc enc, uint32_t rank, const tlm_fed_header *h,
                                    tlm_rand *rng, uint8_t **msg, size_t *bytes, tlm_error *err)
{
    *msg = NULL;
    *bytes = 0;
    const uint32_t nt = tlm_params_count(global);
    if (global->n != local->n || tlm_params_count(local) != nt)
        return tlm_fail(err, TLM_ERR_ARG, "federated update: the local model's shapes are not the global model's");
    if (rank && enc != TLM_FED_I8)
        return tlm_fail(err, TLM_ERR_ARG, "federated update: low-rank factors go in int8 (the other tensors too)");
    size_t cap = TLM_FED_HEADER_BYTES, widest = 0, widest_f = 0;
    for (uint32_t i = 0; i < nt; i++) {
        if (only && !only[i]) continue;
        tlm_param_tensor g;
        tlm_params_tensor(global, i, &g);
        const size_t c = (size_t)g.rows * g.cols;
        if (as_factors(&g, rank)) {
            cap += tlm_fed_lowrank_entry_bytes(g.rows, g.cols, rank);
            const size_t f = (size_t)rank * (g.rows + g.cols);
            if (f > widest_f) widest_f = f;
        } else {
            cap += tlm_fed_entry_bytes(enc, (uint32_t)c);
        }
        if (c > widest) widest = c;
    }
    uint8_t *buf = malloc(cap);
    float *d = malloc((widest ? widest : 1) * sizeof *d), *fac = malloc((widest_f ? widest_f : 1) * sizeof *fac);
    if (!buf || !d || !fac) {
        free(buf);
        free(d);
        free(fac);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    tlm_fed_writer w;
    tlm_fed_header hh = *h;
    hh.base_crc = tlm_fed_model_id(global_model);
    tlm_status st = tlm_fed_begin(&w, buf, cap, &hh, err);
    for (uint32_t i = 0; i < nt && !st; i++) {
        if (only && !only[i]) continue;
        tlm_param_tensor g, l;
        tlm_params_tensor(global, i, &g);
        tlm_params_tensor(local, i, &l);
        const size_t c = (size_t)g.rows * g.cols;
        for (size_t k = 0; k < c; k++) d[k] = l.data[k] - g.data[k];
        if (as_factors(&g, rank)) {
            float *fb = fac, *fa = fac + (size_t)g.rows * rank;
            st = tlm_lowrank_factor(d, g.rows, g.cols, rank, 0x1F2E3D4C5B6A7988ull + i, fb, fa, err);
            if (!st) st = tlm_fed_add_lowrank(&w, (tlm_role)g.role, g.layer, fb, fa, g.rows, g.cols, rank, rng, err);
        } else {
            st = tlm_fed_add(&w, (tlm_role)g.role, g.layer, enc, d, (uint32_t)c, rng, err);
        }
    }
    if (!st) st = tlm_fed_finish(&w, bytes, err);
    free(d);
    free(fac);
    if (st) {
        free(buf);
        return st;
    }
    *msg = buf;
    return TLM_OK;
}

tlm_status tlm_fed_make_update(const tlm_params *global, const tlm_model *global_model, const tlm_params *local,
                               const uint8_t *only, tlm_fed_enc enc, const tlm_fed_header *h, tlm_rand *rng, uint8_t **msg, size_t *bytes,
                               tlm_error *err)
{
    return tlm_fed_make_update_rank(global, global_model, local, only, enc, 0, h, rng, msg, bytes, err);
}

tlm_status tlm_fedavg_init(tlm_fedavg *a, const tlm_model *global_model, double clip, tlm_error *err)
{
    memset(a, 0, sizeof *a);
    a->global_model = global_model;
    a->model_id = tlm_fed_model_id(global_model);
    a->clip = clip;
    tlm_status st = tlm_params_alloc(&a->sum, &global_model->hp, err);
    if (st) return st;
    const uint32_t nt = tlm_params_count(&a->sum);
    size_t widest = 0;
    for (uint32_t i = 0; i < nt; i++) {
        tlm_param_tensor t;
        tlm_params_tensor(&a->sum, i, &t);
        if ((size_t)t.rows * t.cols > widest) widest = (size_t)t.rows * t.cols;
    }
    a->tensor_weight = calloc(nt, sizeof *a->tensor_weight);
    a->scratch = malloc((widest ? widest : 1) * sizeof *a->scratch);
    if (!a->tensor_weight || !a->scratch) {
        tlm_fedavg_free(a);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    return TLM_OK;
}

tlm_status tlm_fedavg_set_dp(tlm_fedavg *a, const tlm_fed_dp *dp, tlm_error *err)
{
    if (a->accepted) return tlm_fail(err, TLM_ERR_ARG, "differential privacy must be set before any update is added");
    size_t dim = 0;
    const uint32_t nt = tlm_params_count(&a->sum);
    for (uint32_t i = 0; i < nt; i++) {
        tlm_param_tensor t;
        tlm_params_tensor(&a->sum, i, &t);
        if (!a->only || a->only[i]) dim += (size_t)t.rows * t.cols;
    }
    if (dp->dim != dim)
        return tlm_fail(err, TLM_ERR_ARG, "the privacy plan is for %zu values, the round changes %zu", dp->dim, dim);
    a->dp_sum = calloc(a->sum.n, sizeof *a->dp_sum);
    a->dp_k = malloc(a->sum.n * sizeof *a->dp_k);
    if (!a->dp_sum || !a->dp_k) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    a->dp = dp;
    a->clip = dp->clip;
    return TLM_OK;
}

tlm_status tlm_fedavg_restrict(tlm_fedavg *a, const uint8_t *only, tlm_error *err)
{
    if (a->accepted || a->dp) return tlm_fail(err, TLM_ERR_ARG, "the round's tensors must be chosen before anything else");
    const uint32_t nt = tlm_params_count(&a->sum);
    a->only = malloc(nt);
    if (!a->only) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    memcpy(a->only, only, nt);
    return TLM_OK;
}

tlm_status tlm_fedavg_set_secure(tlm_fedavg *a, const tlm_secagg *plan, const tlm_fed_roster *roster, tlm_error *err)
{
    if (a->accepted || a->dp || a->sec) return tlm_fail(err, TLM_ERR_ARG, "secure aggregation must be set first, and alone");
    if (roster->n != plan->n) return tlm_fail(err, TLM_ERR_ARG, "the plan is for %u devices, the roster has %u", plan->n, roster->n);
    a->sec_sum = calloc(a->sum.n, sizeof *a->sec_sum);
    a->sec_seen = calloc(plan->n, 1);
    if (!a->sec_sum || !a->sec_seen) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    a->sec_roster = roster;
    a->sec = plan;
    return TLM_OK;
}

uint32_t tlm_fedavg_secure_missing(const tlm_fedavg *a, uint32_t *ids)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < a->sec->n; i++)
        if (!a->sec_seen[i]) ids[k++] = a->sec_roster->client[i];
    for (uint32_t i = 1; i < k; i++) /* ascending (insertion sort: rosters are small) */
        for (uint32_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            const uint32_t t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    return k;
}

void tlm_fedavg_free(tlm_fedavg *a)
{
    free(a->sec_sum);
    free(a->sec_seen);
    free(a->only);
    free(a->dp_sum);
    free(a->dp_k);
    tlm_params_free(&a->sum);
    free(a->tensor_weight);
    free(a->scratch);
    memset(a, 0, sizeof *a);
}

/* The index of tensor (role, layer) in canonical order, or -1. */
static long tensor_index(const tlm_params *p, uint32_t role, uint32_t layer)
{
    const uint32_t nt = tlm_params_count(p);
    for (uint32_t i = 0; i < nt; i++) {
        tlm_param_tensor t;
        tlm_params_tensor(p, i, &t);
        if (t.role == role && t.layer == layer) return (long)i;
    }
    return -1;
}

/* Where a checked entry's values start in the parameters (and in the
 * private and secure sums, which share their layout). */
static size_t entry_offset(const tlm_fedavg *a, const tlm_fed_entry *e)
{
    tlm_param_tensor t;
    tlm_params_tensor(&a->sum, (uint32_t)tensor_index(&a->sum, e->role, e->layer), &t);
    return (size_t)(t.data - a->sum.data);
}

/* The private path: the clipped update (scale f) rounded to the grid,
 * its exact squared norm checked against the plan's bound, then added to
 * the integer sum; weight 1 whatever its example count. */
static tlm_status add_private(tlm_fedavg *a, const uint8_t *msg, const tlm_fed_info *info, double f, tlm_error *err)
{
    const tlm_fed_dp *dp = a->dp;
    memset(a->dp_k, 0, a->sum.n * sizeof *a->dp_k);
    u128 norm2 = 0;
    for (uint32_t i = 0; i < info->n_entries; i++) {
        tlm_fed_entry e;
        tlm_fed_entry_at(msg, i, &e);
        int64_t *k = a->dp_k + entry_offset(a, &e);
        tlm_fed_entry_decode(&e, a->scratch);
        for (uint32_t j = 0; j < e.count; j++) {
            k[j] = llround(f * (double)a->scratch[j] / dp->gamma);
            norm2 += (u128)((uint64_t)(k[j] < 0 ? -k[j] : k[j]) * (uint64_t)(k[j] < 0 ? -k[j] : k[j]));
        }
    }
    if (norm2 > dp->lim2) /* cannot happen for a clipped update: refuse rather than break the bound */
        return tlm_fail(err, TLM_ERR_ARG, "federated update: its rounded norm exceeds the privacy bound");
    for (size_t i = 0; i < a->sum.n; i++) a->dp_sum[i] += a->dp_k[i];
    a->accepted++;
    return TLM_OK;
}

/* The secure path: one share per roster device, of exactly the round's
 * tensors, on the plan's grid, added mod 2^32. */
static tlm_status add_secure(tlm_fedavg *a, const uint8_t *msg, const tlm_fed_info *info, tlm_error *err)
{
    long who = -1;
    for (uint32_t i = 0; i < a->sec->n; i++)
        if (a->sec_roster->client[i] == info->h.client) who = (long)i;
    if (who < 0) return tlm_fail(err, TLM_ERR_ARG, "federated update: client %u is not in the roster", info->h.client);
    if (a->sec_seen[who]) return tlm_fail(err, TLM_ERR_ARG, "federated update: client %u's share is already in", info->h.client);
    if (a->accepted && info->h.round != a->sec_round)
        return tlm_fail(err, TLM_ERR_ARG, "federated update: a share for round %u, the others are for round %u",
                        info->h.round, a->sec_round);
    const uint32_t nt = tlm_params_count(&a->sum);
    uint32_t round_tensors = 0;
    for (uint32_t i = 0; i < nt; i++) round_tensors += !a->only || a->only[i];
    if (info->n_entries != round_tensors)
        return tlm_fail(err, TLM_ERR_ARG, "federated update: a share of %u tensors, the round has %u", info->n_entries,
                        round_tensors);
    const float grid = (float)a->sec->gamma;
    for (uint32_t i = 0; i < info->n_entries; i++) {
        tlm_fed_entry e;
        tlm_fed_entry_at(msg, i, &e);
        if (e.enc != TLM_FED_MASKED || e.scale != grid)
            return tlm_fail(err, TLM_ERR_ARG, "federated update: entry %u is not a masked share on this round's grid "
                            "(secure aggregation needs the devices' --secure-agg with the same --clip)", i);
    }
    for (uint32_t i = 0; i < info->n_entries; i++) {
        tlm_fed_entry e;
        tlm_fed_entry_at(msg, i, &e);
        uint32_t *sum = a->sec_sum + entry_offset(a, &e);
        for (uint32_t k = 0; k < e.count; k++)
            sum[k] += (uint32_t)e.data[4 * k] | (uint32_t)e.data[4 * k + 1] << 8 | (uint32_t)e.data[4 * k + 2] << 16 |
                      (uint32_t)e.data[4 * k + 3] << 24;
    }
    a->sec_seen[who] = 1;
    a->sec_round = info->h.round;
    a->accepted++;
    return TLM_OK;
}

tlm_status tlm_fedavg_add(tlm_fedavg *a, const uint8_t *msg, size_t n, tlm_error *err)
{
    tlm_fed_info info;
    tlm_status st = tlm_fed_validate_for(msg, n, a->global_model, a->model_id, &info, err);
    if (st) return st;
    if (info.h.n_examples == 0) return tlm_fail(err, TLM_ERR_ARG, "federated update: it comes from no examples");
    /* every entry a trainable tensor before any is added; with clipping,
     * the whole update's L2 norm (the values are finite: validated) */
    double norm2 = 0;
    for (uint32_t i = 0; i < info.n_entries; i++) {
        tlm_fed_entry e;
        tlm_fed_entry_at(msg, i, &e);
        const long ti = tensor_index(&a->sum, e.role, e.layer);
        if (ti < 0) /* the image has it, the parameters not (a stored RoPE table) */
            return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: tensor role %u cannot be trained", i,
                            (unsigned)e.role);
        if (a->only && !a->only[ti])
            return tlm_fail(err, TLM_ERR_TENSOR, "federated update: it changes tensor role %u layer %u, which this round "
                            "does not (--tensors)", (unsigned)e.role, (unsigned)e.layer);
        if (!a->sec && e.enc == TLM_FED_MASKED)
            return tlm_fail(err, TLM_ERR_ARG, "federated update: a masked share (secure aggregation: the server needs "
                            "--secure-agg)");
        if (a->sec) continue;
        if (!(a->clip > 0)) continue;
        tlm_fed_entry_decode(&e, a->scratch);
        for (uint32_t k = 0; k < e.count; k++) norm2 += (double)a->scratch[k] * a->scratch[k];
    }
    if (a->sec) return add_secure(a, msg, &info, err);
    const double norm = sqrt(norm2);
    double f = 1.0;
    if (a->clip > 0 && norm > a->clip) {
        f = a->clip / norm;
        a->clipped++;
    }
    if (a->dp) return add_private(a, msg, &info, f, err);
    const double wgt = info.h.n_examples;
    for (uint32_t i = 0; i < info.n_entries; i++) {
        tlm_fed_entry e;
        tlm_fed_entry_at(msg, i, &e);
        const long ti = tensor_index(&a->sum, e.role, e.layer);
        tlm_param_tensor t;
        tlm_params_tensor(&a->sum, (uint32_t)ti, &t);
        tlm_fed_entry_decode(&e, a->scratch);
        const float s = (float)(wgt * f);
        for (uint32_t k = 0; k < e.count; k++) t.data[k] += s * a->scratch[k];
        a->tensor_weight[ti] += wgt;
    }
    a->accepted++;
    return TLM_OK;
}

void tlm_fedavg_apply(const tlm_fedavg *a, tlm_params *out, float server_lr)
{
    const uint32_t nt = tlm_params_count(out);
    for (uint32_t i = 0; i < nt; i++) {
        if (!(a->tensor_weight[i] > 0)) continue;
        tlm_param_tensor o, s;
        tlm_params_tensor(out, i, &o);
        tlm_params_tensor(&a->sum, i, &s);
        const float f = (float)(server_lr / a->tensor_weight[i]);
        const size_t c = (size_t)o.rows * o.cols;
        for (size_t k = 0; k < c; k++) o.data[k] += f * s.data[k];
    }
}

tlm_status tlm_fedavg_apply_dp(const tlm_fedavg *a, tlm_params *out, float server_lr, tlm_rand *rng, tlm_error *err)
{
    if (!a->dp || out->n != a->sum.n) return tlm_fail(err, TLM_ERR_ARG, "no private aggregation to apply");
    float *step = malloc(out->n * sizeof *step);
    if (!step) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    const double f = (double)server_lr * a->dp->gamma / a->dp->clients;
    const uint32_t nt = tlm_params_count(out);
    for (uint32_t i = 0; i < nt; i++) {
        tlm_param_tensor t;
        tlm_params_tensor(out, i, &t);
        const size_t off = (size_t)(t.data - out->data), c = (size_t)t.rows * t.cols;
        for (size_t k = off; k < off + c; k++)
            step[k] = a->only && !a->only[i]
                          ? 0.0f
                          : (float)(f * (double)(a->dp_sum[k] + tlm_dgauss_wide(rng, a->dp->sigma2)));
    }
    if (rng->failed) {
        free(step);
        return tlm_fail(err, TLM_ERR_RNG, "the random source failed: no model written");
    }
    for (size_t i = 0; i < out->n; i++) out->data[i] += step[i];
    free(step);
    return TLM_OK;
}

tlm_status tlm_fedavg_apply_secure(const tlm_fedavg *a, tlm_params *out, float server_lr, const tlm_secagg_reveal *rev,
                                   size_t n_rev, tlm_error *err)
{
    if (!a->sec || out->n != a->sum.n) return tlm_fail(err, TLM_ERR_ARG, "no secure aggregation to apply");
    /* the round's values in the order the masks were made (the round's tensors, canonical order) */
    const uint32_t nt = tlm_params_count(out);
    size_t d = 0;
    for (uint32_t i = 0; i < nt; i++) {
        if (a->only && !a->only[i]) continue;
        tlm_param_tensor t;
        tlm_params_tensor(out, i, &t);
        d += (size_t)t.rows * t.cols;
    }
    uint32_t *c = malloc((d ? d : 1) * sizeof *c);
    if (!c) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (uint32_t i = 0; i < nt; i++) {
        if (a->only && !a->only[i]) continue;
        tlm_param_tensor t;
        tlm_params_tensor(out, i, &t);
        const size_t off = (size_t)(t.data - out->data), n = (size_t)t.rows * t.cols;
        memcpy(c + k, a->sec_sum + off, n * sizeof *c);
        k += n;
    }
    const tlm_status st = tlm_secagg_unmask(a->sec_roster, a->sec_seen, a->sec_round, a->model_id,
                                            rev, n_rev, d, c, err);
    if (st) {
        free(c);
        return st;
    }
    const double f = (double)server_lr * a->sec->gamma / a->accepted;
    k = 0;
    for (uint32_t i = 0; i < nt; i++) {
        if (a->only && !a->only[i]) continue;
        tlm_param_tensor t;
        tlm_params_tensor(out, i, &t);
        for (size_t j = 0; j < (size_t)t.rows * t.cols; j++, k++) t.data[j] += (float)(f * (double)(int32_t)c[k]);
    }
    free(c);
    return TLM_OK;
}
