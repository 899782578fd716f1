/* Secure aggregation with pairwise masks (secagg.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "fed_dp.h"
#include "fileio.h"
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

double tlm_secagg_rho(const tlm_secagg *s, uint32_t senders)
{
    if (!(s->z > 0) || !senders) return 0.0;
    return s->delta_l2 * s->delta_l2 / (2.0 * (double)senders * (double)s->share_sigma2);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static long roster_by_box(const tlm_fed_roster *r, const uint8_t box_pk[32])
{
    for (uint32_t i = 0; i < r->n; i++)
        if (!memcmp(r->pub[i].box_pk, box_pk, 32)) return (long)i;
    return -1;
}

static long roster_by_id(const tlm_fed_roster *r, uint32_t id)
{
    for (uint32_t i = 0; i < r->n; i++)
        if (r->client[i] == id) return (long)i;
    return -1;
}

/* The key `me` shares with `peer` for (round, model): their X25519 secret,
 * hashed with both public keys in a fixed order, the round and the model. */
static tlm_status pair_key(const tlm_fed_keys *me, const tlm_fed_pub *peer, uint32_t round, uint32_t base_id,
                           uint8_t key[32], tlm_error *err)
{
    static const char domain[] = "tritlm secure aggregation v1";
    uint8_t shared[crypto_scalarmult_BYTES];
    if (crypto_scalarmult(shared, me->box_sk, peer->box_pk) != 0)
        return tlm_fail(err, TLM_ERR_ARG, "secure aggregation: a roster key is unusable");
    const int lo_first = memcmp(me->pub.box_pk, peer->box_pk, 32) < 0;
    uint8_t info[sizeof domain + 64 + 8];
    memcpy(info, domain, sizeof domain);
    memcpy(info + sizeof domain, lo_first ? me->pub.box_pk : peer->box_pk, 32);
    memcpy(info + sizeof domain + 32, lo_first ? peer->box_pk : me->pub.box_pk, 32);
    put_u32(info + sizeof domain + 64, round);
    put_u32(info + sizeof domain + 68, base_id);
    crypto_generichash(key, 32, info, sizeof info, shared, sizeof shared);
    sodium_memzero(shared, sizeof shared);
    return TLM_OK;
}

/* The self-mask key of a device's seed for (round, model). */
static void self_key(const uint8_t seed[32], uint32_t round, uint32_t base_id, uint8_t key[32])
{
    static const char domain[] = "tritlm secure aggregation self mask v1";
    uint8_t info[sizeof domain + 8];
    memcpy(info, domain, sizeof domain);
    put_u32(info + sizeof domain, round);
    put_u32(info + sizeof domain + 4, base_id);
    crypto_generichash(key, 32, info, sizeof info, seed, 32);
}

/* acc += sign x the key's ChaCha20 stream read as d little-endian u32 (mod 2^32); buf: 4d bytes */
static void add_stream(const uint8_t key[32], int sign, size_t d, uint8_t *buf, uint32_t *acc)
{
    const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0}; /* a fresh key per pair, round and model */
    crypto_stream_chacha20_ietf(buf, d * 4u, nonce, key);
    for (size_t k = 0; k < d; k++) {
        const uint32_t v = (uint32_t)buf[4 * k] | (uint32_t)buf[4 * k + 1] << 8 | (uint32_t)buf[4 * k + 2] << 16 |
                           (uint32_t)buf[4 * k + 3] << 24;
        acc[k] = sign > 0 ? acc[k] + v : acc[k] - v;
    }
}

tlm_status tlm_secagg_mask(const tlm_fed_keys *me, const tlm_fed_roster *roster, uint32_t round, uint32_t base_id,
                           size_t d, uint32_t *mask, tlm_error *err)
{
    if (sodium_init() < 0) return tlm_fail(err, TLM_ERR_RNG, "libsodium could not start");
    const long self = roster_by_box(roster, me->pub.box_pk);
    if (self < 0) return tlm_fail(err, TLM_ERR_ARG, "secure aggregation: this device's key is not in the roster");
    memset(mask, 0, d * sizeof *mask);
    uint8_t *stream = malloc(d * 4u);
    if (!stream) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    tlm_status st = TLM_OK;
    for (uint32_t j = 0; j < roster->n && !st; j++) {
        if ((long)j == self) continue;
        uint8_t key[32];
        st = pair_key(me, &roster->pub[j], round, base_id, key, err);
        if (!st) add_stream(key, roster->client[self] < roster->client[j] ? 1 : -1, d, stream, mask);
        sodium_memzero(key, sizeof key);
    }
    sodium_memzero(stream, d * 4u);
    free(stream);
    return st;
}

tlm_status tlm_secagg_self_mask(const uint8_t seed[32], uint32_t round, uint32_t base_id, size_t d, uint32_t *mask,
                                tlm_error *err)
{
    if (sodium_init() < 0) return tlm_fail(err, TLM_ERR_RNG, "libsodium could not start");
    uint8_t *stream = malloc(d * 4u), key[32];
    if (!stream) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    memset(mask, 0, d * sizeof *mask);
    self_key(seed, round, base_id, key);
    add_stream(key, 1, d, stream, mask);
    sodium_memzero(key, sizeof key);
    free(stream);
    return TLM_OK;
}

tlm_status tlm_fed_make_masked_update(const tlm_params *global, const tlm_model *global_model, const tlm_params *local,
                                      const uint8_t *only, const tlm_fed_header *h, const tlm_secagg *plan,
                                      const tlm_fed_keys *me, const tlm_fed_roster *roster, tlm_rand *rng,
                                      uint8_t self_seed[32], uint8_t **msg, size_t *bytes, tlm_error *err)
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
    const uint32_t base_id = tlm_fed_model_id(global_model); /* a checksum of the whole image: once */
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
        st = mask ? tlm_secagg_mask(me, roster, h->round, base_id, d, mask, err)
                  : tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    if (!st)
        for (k = 0; k < d; k++) share[k] += mask[k];
    if (!st) { /* the self mask, which only this device's reveal removes */
        for (int i = 0; i < 4; i++) {
            const uint64_t v = tlm_rand_u64(rng);
            for (int b = 0; b < 8; b++) self_seed[8 * i + b] = (uint8_t)(v >> (8 * b));
        }
        st = rng->failed ? tlm_fail(err, TLM_ERR_RNG, "the random source failed")
                         : tlm_secagg_self_mask(self_seed, h->round, base_id, d, mask, err);
        if (!st)
            for (k = 0; k < d; k++) share[k] += mask[k];
    }
    tlm_fed_writer w;
    tlm_fed_header hh = *h;
    hh.base_crc = base_id;
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

/* ---- the second step: who dropped out, and each survivor's reveal ---- */

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int by_u32(const void *a, const void *b)
{
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static const char request_domain[] = "tritlm secure aggregation request v1";

tlm_status tlm_secagg_request_sign(const tlm_fed_keys *server, uint32_t round, uint32_t base_id, const uint32_t *dropped,
                                   uint32_t nd, uint8_t **msg, size_t *n, tlm_error *err)
{
    *msg = NULL;
    if (sodium_init() < 0) return tlm_fail(err, TLM_ERR_RNG, "libsodium could not start");
    const size_t body = 20u + 4u * (size_t)nd, total = body + crypto_sign_BYTES;
    uint8_t *m = malloc(total), *covered = malloc(sizeof request_domain + body);
    if (!m || !covered) {
        free(m);
        free(covered);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    memcpy(m, TLM_SECAGG_REQUEST_MAGIC, 4);
    put_u32(m + 4, 1);
    put_u32(m + 8, round);
    put_u32(m + 12, base_id);
    put_u32(m + 16, nd);
    for (uint32_t i = 0; i < nd; i++) put_u32(m + 20 + 4 * i, dropped[i]);
    memcpy(covered, request_domain, sizeof request_domain);
    memcpy(covered + sizeof request_domain, m, body);
    crypto_sign_detached(m + body, NULL, covered, sizeof request_domain + body, server->sign_sk);
    free(covered);
    *msg = m;
    *n = total;
    return TLM_OK;
}

tlm_status tlm_secagg_request_verify(const tlm_fed_pub *server, const uint8_t *m, size_t n, uint32_t *round,
                                     uint32_t *base_id, uint32_t **dropped, uint32_t *nd, tlm_error *err)
{
    *dropped = NULL;
    *nd = 0;
    if (sodium_init() < 0) return tlm_fail(err, TLM_ERR_RNG, "libsodium could not start");
    if (n < 20u + crypto_sign_BYTES || memcmp(m, TLM_SECAGG_REQUEST_MAGIC, 4) || get_u32(m + 4) != 1)
        return tlm_fail(err, TLM_ERR_MAGIC, "not a secure aggregation request (version 1)");
    const uint32_t k = get_u32(m + 16);
    if (k > TLM_SECAGG_MAX_DEVICES || n != 20u + 4u * (size_t)k + crypto_sign_BYTES)
        return tlm_fail(err, TLM_ERR_TRUNCATED, "secure aggregation request: %zu bytes for %u dropped devices", n, k);
    const size_t body = 20u + 4u * (size_t)k;
    uint8_t *covered = malloc(sizeof request_domain + body);
    if (!covered) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    memcpy(covered, request_domain, sizeof request_domain);
    memcpy(covered + sizeof request_domain, m, body);
    const int bad = crypto_sign_verify_detached(m + body, covered, sizeof request_domain + body, server->sign_pk);
    free(covered);
    if (bad) return tlm_fail(err, TLM_ERR_CHECKSUM, "secure aggregation request: the server's signature does not verify");
    uint32_t *ids = malloc((k ? k : 1) * sizeof *ids);
    if (!ids) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    for (uint32_t i = 0; i < k; i++) ids[i] = get_u32(m + 20 + 4 * i);
    *round = get_u32(m + 8);
    *base_id = get_u32(m + 12);
    *dropped = ids;
    *nd = k;
    return TLM_OK;
}

tlm_status tlm_secagg_reveal_make(const tlm_fed_keys *me, const tlm_fed_roster *roster, uint32_t round, uint32_t base_id,
                                  const uint8_t self_seed[32], const uint32_t *dropped, uint32_t nd, uint8_t **msg,
                                  size_t *n, tlm_error *err)
{
    *msg = NULL;
    if (sodium_init() < 0) return tlm_fail(err, TLM_ERR_RNG, "libsodium could not start");
    const long self = roster_by_box(roster, me->pub.box_pk);
    if (self < 0) return tlm_fail(err, TLM_ERR_ARG, "secure aggregation: this device's key is not in the roster");
    /* a device reveals its self mask only if at least one other share stays hidden by its
     * pairwise mask: two survivors or more; and never for a round that calls it dropped */
    for (uint32_t i = 0; i < nd; i++) {
        if (roster_by_id(roster, dropped[i]) < 0)
            return tlm_fail(err, TLM_ERR_ARG, "secure aggregation request: client %u is not in the roster", dropped[i]);
        if (dropped[i] == roster->client[self])
            return tlm_fail(err, TLM_ERR_ARG, "secure aggregation request: it says this device (client %u) dropped out; "
                            "nothing revealed", dropped[i]);
        for (uint32_t j = 0; j < i; j++)
            if (dropped[j] == dropped[i])
                return tlm_fail(err, TLM_ERR_ARG, "secure aggregation request: client %u listed twice", dropped[i]);
    }
    if (roster->n - nd < 2)
        return tlm_fail(err, TLM_ERR_ARG, "secure aggregation request: %u of %u devices left; revealing would expose this "
                        "device's update: nothing revealed", roster->n - nd, roster->n);
    const size_t total = 56u + 36u * (size_t)nd;
    uint8_t *m = malloc(total);
    if (!m) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    memcpy(m, TLM_SECAGG_REVEAL_MAGIC, 4);
    put_u32(m + 4, 1);
    put_u32(m + 8, round);
    put_u32(m + 12, roster->client[self]);
    put_u32(m + 16, base_id);
    put_u32(m + 20, nd);
    memcpy(m + 24, self_seed, 32);
    tlm_status st = TLM_OK;
    for (uint32_t i = 0; i < nd && !st; i++) {
        uint8_t *e = m + 56 + 36 * (size_t)i;
        put_u32(e, dropped[i]);
        st = pair_key(me, &roster->pub[roster_by_id(roster, dropped[i])], round, base_id, e + 4, err);
    }
    if (st) {
        sodium_memzero(m, total);
        free(m);
        return st;
    }
    *msg = m;
    *n = total;
    return TLM_OK;
}

void tlm_secagg_reveal_free(tlm_secagg_reveal *r)
{
    if (r->pair_key) sodium_memzero(r->pair_key, (size_t)r->n_dropped * 32u);
    free(r->dropped);
    free(r->pair_key);
    memset(r, 0, sizeof *r);
}

tlm_status tlm_secagg_reveal_parse(const uint8_t *m, size_t n, tlm_secagg_reveal *r, tlm_error *err)
{
    memset(r, 0, sizeof *r);
    if (n < 56 || memcmp(m, TLM_SECAGG_REVEAL_MAGIC, 4) || get_u32(m + 4) != 1)
        return tlm_fail(err, TLM_ERR_MAGIC, "not a secure aggregation reveal (version 1)");
    const uint32_t k = get_u32(m + 20);
    if (k > TLM_SECAGG_MAX_DEVICES || n != 56u + 36u * (size_t)k)
        return tlm_fail(err, TLM_ERR_TRUNCATED, "secure aggregation reveal: %zu bytes for %u dropped devices", n, k);
    r->round = get_u32(m + 8);
    r->client = get_u32(m + 12);
    r->base_id = get_u32(m + 16);
    r->n_dropped = k;
    memcpy(r->self_seed, m + 24, 32);
    r->dropped = malloc((k ? k : 1) * sizeof *r->dropped);
    r->pair_key = malloc((k ? k : 1) * sizeof *r->pair_key);
    if (!r->dropped || !r->pair_key) {
        tlm_secagg_reveal_free(r);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < k; i++) {
        r->dropped[i] = get_u32(m + 56 + 36 * (size_t)i);
        memcpy(r->pair_key[i], m + 56 + 36 * (size_t)i + 4, 32);
    }
    return TLM_OK;
}

tlm_status tlm_secagg_unmask(const tlm_fed_roster *roster, const uint8_t *seen, uint32_t round, uint32_t base_id,
                             const tlm_secagg_reveal *rev, size_t n_rev, size_t d, uint32_t *sum, tlm_error *err)
{
    if (sodium_init() < 0) return tlm_fail(err, TLM_ERR_RNG, "libsodium could not start");
    /* the dropped devices, ascending, as every reveal must list them */
    uint32_t *dropped = malloc((roster->n ? roster->n : 1) * sizeof *dropped), nd = 0, ns = 0;
    uint8_t *stream = malloc(d * 4u);
    if (!dropped || !stream) {
        free(dropped);
        free(stream);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < roster->n; i++) {
        if (!seen[i]) dropped[nd++] = roster->client[i];
        else ns++;
    }
    qsort(dropped, nd, sizeof *dropped, by_u32);
    tlm_status st = ns < 2 ? tlm_fail(err, TLM_ERR_ARG, "secure aggregation: %u share(s) arrived; at least 2 are needed", ns)
                           : TLM_OK;
    char missing[200] = "";
    size_t ml = 0;
    for (uint32_t i = 0; i < roster->n && !st; i++) {
        if (!seen[i]) continue;
        const tlm_secagg_reveal *r = NULL;
        for (size_t j = 0; j < n_rev && !r; j++)
            if (rev[j].client == roster->client[i]) r = &rev[j];
        if (!r) {
            if (ml < sizeof missing - 16) ml += (size_t)snprintf(missing + ml, sizeof missing - ml, " %u", roster->client[i]);
            continue;
        }
        if (r->round != round || r->base_id != base_id)
            st = tlm_fail(err, TLM_ERR_ARG, "client %u's reveal is for round %u of model %08x, not round %u of %08x",
                          r->client, r->round, r->base_id, round, base_id);
        if (!st && r->n_dropped != nd)
            st = tlm_fail(err, TLM_ERR_ARG, "client %u's reveal lists %u dropped devices, not %u", r->client, r->n_dropped, nd);
        uint32_t *sorted = NULL;
        if (!st) {
            sorted = malloc((nd ? nd : 1) * sizeof *sorted);
            if (!sorted) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        }
        if (!st) {
            memcpy(sorted, r->dropped, nd * sizeof *sorted);
            qsort(sorted, nd, sizeof *sorted, by_u32);
            if (nd && memcmp(sorted, dropped, nd * sizeof *sorted))
                st = tlm_fail(err, TLM_ERR_ARG, "client %u's reveal lists other dropped devices", r->client);
        }
        free(sorted);
        if (st) break;
        uint8_t key[32];
        self_key(r->self_seed, round, base_id, key);
        add_stream(key, -1, d, stream, sum);
        for (uint32_t j = 0; j < nd; j++) /* the survivor added +stream towards higher ids, -stream towards lower */
            add_stream(r->pair_key[j], r->client < r->dropped[j] ? -1 : 1, d, stream, sum);
        sodium_memzero(key, sizeof key);
    }
    if (!st && ml)
        st = tlm_fail(err, TLM_ERR_ARG, "secure aggregation: no reveal yet from clients%s (each device that sent a share "
                      "must answer the server's request)", missing);
    free(dropped);
    free(stream);
    return st;
}

tlm_status tlm_secagg_answer(const tlm_fed_keys *me, const tlm_fed_pub *server, const tlm_fed_roster *roster,
                             uint32_t round, uint32_t base_id, const uint8_t self_seed[32], const uint8_t *request,
                             size_t request_n, uint8_t **out, size_t *out_n, tlm_error *err)
{
    uint32_t r_round = 0, r_base = 0, nd = 0, *dropped = NULL;
    tlm_status st = tlm_secagg_request_verify(server, request, request_n, &r_round, &r_base, &dropped, &nd, err);
    if (!st && (r_round != round || r_base != base_id))
        st = tlm_fail(err, TLM_ERR_ARG, "the server's request is for round %u of model %08x, this share was round %u of "
                      "%08x", r_round, r_base, round, base_id);
    uint8_t *rev = NULL;
    size_t rn = 0;
    if (!st) st = tlm_secagg_reveal_make(me, roster, round, base_id, self_seed, dropped, nd, &rev, &rn, err);
    if (!st) st = tlm_fed_seal(me, server, rev, rn, out, out_n, err);
    if (rev) sodium_memzero(rev, rn);
    free(rev);
    free(dropped);
    return st;
}

#define STATE_TAG "tritlm-secagg-state-1"

tlm_status tlm_secagg_state_write(const char *path, uint32_t round, uint32_t base_id, uint32_t client,
                                  const uint8_t self_seed[32], tlm_error *err)
{
    if (sodium_init() < 0) return tlm_fail(err, TLM_ERR_RNG, "libsodium could not start");
    char hex[65], line[160];
    sodium_bin2hex(hex, sizeof hex, self_seed, 32);
    const int len = snprintf(line, sizeof line, STATE_TAG " %u %08x %u %s\n", round, base_id, client, hex);
    const tlm_status st = tlm_write_secret_atomic(path, line, (size_t)len, err);
    sodium_memzero(hex, sizeof hex);
    sodium_memzero(line, sizeof line);
    return st;
}

tlm_status tlm_secagg_state_read(const char *path, uint32_t *round, uint32_t *base_id, uint32_t *client,
                                 uint8_t self_seed[32], tlm_error *err)
{
    if (sodium_init() < 0) return tlm_fail(err, TLM_ERR_RNG, "libsodium could not start");
    uint8_t *text = NULL;
    size_t n = 0;
    tlm_status st = tlm_read_text(path, &text, &n, err);
    if (st) return st;
    unsigned r = 0, b = 0, c = 0;
    char hex[80];
    if (sscanf((const char *)text, STATE_TAG " %u %x %u %70s", &r, &b, &c, hex) != 4 || strlen(hex) != 64 ||
        sodium_hex2bin(self_seed, 32, hex, 64, NULL, NULL, NULL) != 0)
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s is not a secure aggregation state ('fed update --secure-agg --state' writes one)",
                      path);
    sodium_memzero(text, n);
    sodium_memzero(hex, sizeof hex);
    free(text);
    *round = r;
    *base_id = b;
    *client = c;
    return st;
}
