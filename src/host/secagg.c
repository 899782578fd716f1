/* Secure aggregation with pairwise masks (secagg.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "fed_dp.h"
#include "secagg.h"

tlm_status tlm_secagg_plan(tlm_secagg *s, double clip, double z, uint32_t n, size_t dim, tlm_error *err)
{
    memset(s, 0, sizeof *s);
    if (!(clip > 0) || !isfinite(clip)) return tlm_fail(err, TLM_ERR_ARG, "secure aggregation needs a clip norm > 0");
    if (!(z >= 0) || z > TLM_FED_DP_MAX_Z) return tlm_fail(err, TLM_ERR_ARG, "the noise multiplier must be in [0, %g]", TLM_FED_DP_MAX_Z);
    /* the sum of n rounded updates (each value within 2^18 + 1) and the noise must stay inside int32 */
    if (n < 2 || n > 2048) return tlm_fail(err, TLM_ERR_ARG, "secure aggregation takes 2 to 2048 devices, not %u", n);
    if (!dim || dim > (1u << 30)) return tlm_fail(err, TLM_ERR_ARG, "no values to aggregate, or too many");
    s->clip = clip;
    s->gamma = clip / TLM_FED_DP_GRID;
    s->n = n;
    s->dim = dim;
    s->delta_l2 = TLM_FED_DP_GRID + sqrt((double)dim) / 2.0;
    s->lim2 = (uint64_t)floor(s->delta_l2 * s->delta_l2);
    s->z = z;
    if (z > 0) {
        const double total = z * s->delta_l2 * z * s->delta_l2;
        s->share_sigma2 = (uint64_t)ceil(total / n);
        if (s->share_sigma2 < 1) s->share_sigma2 = 1;
        s->rho = s->delta_l2 * s->delta_l2 / (2.0 * (double)n * (double)s->share_sigma2);
    }
    return TLM_OK;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

tlm_status tlm_secagg_mask(const tlm_fed_keys *me, const tlm_fed_roster *roster, uint32_t round, uint32_t base_id,
                           size_t d, uint32_t *mask, tlm_error *err)
{
    if (sodium_init() < 0) return tlm_fail(err, TLM_ERR_RNG, "libsodium could not start");
    long self = -1;
    for (uint32_t i = 0; i < roster->n; i++)
        if (!memcmp(roster->pub[i].box_pk, me->pub.box_pk, 32)) self = (long)i;
    if (self < 0) return tlm_fail(err, TLM_ERR_ARG, "secure aggregation: this device's key is not in the roster");
    memset(mask, 0, d * sizeof *mask);
    uint8_t *stream = malloc(d * 4u);
    if (!stream) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    static const char domain[] = "tritlm secure aggregation v1";
    tlm_status st = TLM_OK;
    for (uint32_t j = 0; j < roster->n && !st; j++) {
        if ((long)j == self) continue;
        uint8_t shared[crypto_scalarmult_BYTES], key[crypto_stream_chacha20_ietf_KEYBYTES];
        if (crypto_scalarmult(shared, me->box_sk, roster->pub[j].box_pk) != 0) {
            st = tlm_fail(err, TLM_ERR_ARG, "secure aggregation: client %u's key is unusable", roster->client[j]);
            break;
        }
        /* the same key on both sides: the public keys in a fixed order */
        const int lo_first = memcmp(me->pub.box_pk, roster->pub[j].box_pk, 32) < 0;
        uint8_t info[sizeof domain + 64 + 8];
        memcpy(info, domain, sizeof domain);
        memcpy(info + sizeof domain, lo_first ? me->pub.box_pk : roster->pub[j].box_pk, 32);
        memcpy(info + sizeof domain + 32, lo_first ? roster->pub[j].box_pk : me->pub.box_pk, 32);
        put_u32(info + sizeof domain + 64, round);
        put_u32(info + sizeof domain + 68, base_id);
        crypto_generichash(key, sizeof key, info, sizeof info, shared, sizeof shared);
        const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0}; /* a fresh key per pair, round and model */
        crypto_stream_chacha20_ietf(stream, d * 4u, nonce, key);
        sodium_memzero(shared, sizeof shared);
        sodium_memzero(key, sizeof key);
        const int add = roster->client[self] < roster->client[j];
        for (size_t k = 0; k < d; k++) {
            const uint32_t v = (uint32_t)stream[4 * k] | (uint32_t)stream[4 * k + 1] << 8 |
                               (uint32_t)stream[4 * k + 2] << 16 | (uint32_t)stream[4 * k + 3] << 24;
            mask[k] = add ? mask[k] + v : mask[k] - v;
        }
    }
    sodium_memzero(stream, d * 4u);
    free(stream);
    return st;
}

tlm_status tlm_fed_make_masked_update(const tlm_params *global, const tlm_model *global_model, const tlm_params *local,
                                      const uint8_t *only, const tlm_fed_header *h, const tlm_secagg *plan,
                                      const tlm_fed_keys *me, const tlm_fed_roster *roster, tlm_rand *rng,
                                      uint8_t **msg, size_t *bytes, tlm_error *err)
{
    *msg = NULL;
    *bytes = 0;
    const uint32_t nt = tlm_params_count(global);
    if (global->n != local->n || tlm_params_count(local) != nt)
        return tlm_fail(err, TLM_ERR_ARG, "federated update: the local model's shapes are not the global model's");
    long self = -1;
    for (uint32_t i = 0; i < roster->n; i++)
        if (!memcmp(roster->pub[i].sign_pk, me->pub.sign_pk, 32)) self = (long)i;
    if (self < 0 || roster->client[self] != h->client)
        return tlm_fail(err, TLM_ERR_ARG, "secure aggregation: the roster does not list this device's key as client %u",
                        h->client);
    if (roster->n != plan->n)
        return tlm_fail(err, TLM_ERR_ARG, "secure aggregation: the plan is for %u devices, the roster has %u", plan->n,
                        roster->n);
    /* the round's values, in tensor order, and their clipped norm */
    size_t d = 0, cap = TLM_FED_HEADER_BYTES;
    for (uint32_t i = 0; i < nt; i++) {
        if (only && !only[i]) continue;
        tlm_param_tensor g;
        tlm_params_tensor(global, i, &g);
        d += (size_t)g.rows * g.cols;
        cap += tlm_fed_entry_bytes(TLM_FED_MASKED, g.rows * g.cols);
    }
    if (d != plan->dim)
        return tlm_fail(err, TLM_ERR_ARG, "secure aggregation: the plan is for %zu values, the update has %zu", plan->dim, d);
    double *x = malloc(d * sizeof *x);
    uint32_t *share = malloc(d * sizeof *share);
    uint8_t *buf = malloc(cap);
    tlm_status st = x && share && buf ? TLM_OK : tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    double norm2 = 0;
    size_t k = 0;
    for (uint32_t i = 0; i < nt && !st; i++) {
        if (only && !only[i]) continue;
        tlm_param_tensor g, l;
        tlm_params_tensor(global, i, &g);
        tlm_params_tensor(local, i, &l);
        for (size_t j = 0; j < (size_t)g.rows * g.cols; j++, k++) {
            x[k] = (double)l.data[j] - (double)g.data[j];
            norm2 += x[k] * x[k];
        }
    }
    if (!st) {
        const double f = sqrt(norm2) > plan->clip ? plan->clip / sqrt(norm2) : 1.0;
        uint64_t q2 = 0;
        for (k = 0; k < d; k++) {
            const int64_t q = llround(f * x[k] / plan->gamma);
            q2 += (uint64_t)(q < 0 ? -q : q) * (uint64_t)(q < 0 ? -q : q);
            const int64_t noise = plan->z > 0 ? tlm_dgauss_wide(rng, plan->share_sigma2) : 0;
            share[k] = (uint32_t)(q + noise);
        }
        if (q2 > plan->lim2) st = tlm_fail(err, TLM_ERR_ARG, "secure aggregation: the rounded update exceeds its bound");
        if (!st && rng->failed) st = tlm_fail(err, TLM_ERR_RNG, "the random source failed");
    }
    uint32_t *mask = NULL;
    if (!st) {
        mask = malloc(d * sizeof *mask);
        st = mask ? tlm_secagg_mask(me, roster, h->round, tlm_fed_model_id(global_model), d, mask, err)
                  : tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    if (!st)
        for (k = 0; k < d; k++) share[k] += mask[k];
    tlm_fed_writer w;
    tlm_fed_header hh = *h;
    hh.base_crc = tlm_fed_model_id(global_model);
    if (!st) st = tlm_fed_begin(&w, buf, cap, &hh, err);
    k = 0;
    for (uint32_t i = 0; i < nt && !st; i++) {
        if (only && !only[i]) continue;
        tlm_param_tensor g;
        tlm_params_tensor(global, i, &g);
        st = tlm_fed_add_masked(&w, (tlm_role)g.role, g.layer, share + k, g.rows * g.cols, (float)plan->gamma, err);
        k += (size_t)g.rows * g.cols;
    }
    if (!st) st = tlm_fed_finish(&w, bytes, err);
    if (x) sodium_memzero(x, d * sizeof *x);
    free(x);
    free(share);
    free(mask);
    if (st) {
        free(buf);
        return st;
    }
    *msg = buf;
    return TLM_OK;
}
