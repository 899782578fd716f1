#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../image_build.h"
#include "tritlm/wtype.h"
#include "params.h"
#include "rng.h"

/* The layer's tensors in the order of tlm_layer_role (the image's order).
 * Reached through offsets, not by indexing from the first member, which
 * would step outside that member's object. */
static float **layer_slot(tlm_layer_params *lp, uint32_t k)
{
    static const size_t off[TLM_LAYER_ROLES] = {
        offsetof(tlm_layer_params, attn_norm), offsetof(tlm_layer_params, wq), offsetof(tlm_layer_params, wk),
        offsetof(tlm_layer_params, wv),        offsetof(tlm_layer_params, wo), offsetof(tlm_layer_params, ffn_norm),
        offsetof(tlm_layer_params, w1),        offsetof(tlm_layer_params, w2), offsetof(tlm_layer_params, w3)};
    return (float **)(void *)((char *)lp + off[k]);
}

uint32_t tlm_params_count(const tlm_params *p)
{
    return 2u + TLM_LAYER_ROLES * p->hp.n_layers + (p->hp.shared_classifier ? 0u : 1u);
}

void tlm_params_tensor(const tlm_params *p, uint32_t i, tlm_param_tensor *t)
{
    const uint32_t L = p->hp.n_layers;
    memset(t, 0, sizeof *t);
    if (i == 0) {
        t->role = TLM_ROLE_TOK_EMBED;
        t->data = p->tok_embed;
    } else if (i <= TLM_LAYER_ROLES * L) {
        const uint32_t l = (i - 1u) / TLM_LAYER_ROLES, k = (i - 1u) % TLM_LAYER_ROLES;
        t->role = tlm_layer_role(k);
        t->layer = (uint16_t)l;
        t->data = *layer_slot(&p->layers[l], k);
    } else if (i == 1u + TLM_LAYER_ROLES * L) {
        t->role = TLM_ROLE_FINAL_NORM;
        t->data = p->final_norm;
    } else {
        t->role = TLM_ROLE_CLASSIFIER;
        t->data = p->classifier;
    }
    tlm_role_shape(&p->hp, t->role, &t->rows, &t->cols);
    t->decay = t->rows > 1;
}

tlm_status tlm_params_alloc(tlm_params *p, const tlm_hparams *hp, tlm_error *err)
{
    memset(p, 0, sizeof *p);
    const tlm_hparams h = *hp;
    tlm_status st = tlm_hparams_check(&h, err);
    if (st) return st;
    p->hp = h;
    size_t total = 0;
    const uint32_t n = tlm_params_count(p);
    for (uint32_t i = 0; i < n; i++) {
        tlm_param_tensor t;
        uint16_t role = i == 0 ? TLM_ROLE_TOK_EMBED
                        : i <= TLM_LAYER_ROLES * h.n_layers ? tlm_layer_role((i - 1u) % TLM_LAYER_ROLES)
                        : i == 1u + TLM_LAYER_ROLES * h.n_layers ? TLM_ROLE_FINAL_NORM : TLM_ROLE_CLASSIFIER;
        tlm_role_shape(&h, role, &t.rows, &t.cols);
        total += (size_t)t.rows * t.cols;
    }
    p->n = total;
    p->data = calloc(total, sizeof(float));
    p->layers = calloc(h.n_layers, sizeof *p->layers);
    if (!p->data || !p->layers) {
        tlm_params_free(p);
        return tlm_fail(err, TLM_ERR_NOMEM, "cannot allocate %llu parameters", (unsigned long long)total);
    }
    float *at = p->data;
    uint32_t r, c;
    tlm_role_shape(&h, TLM_ROLE_TOK_EMBED, &r, &c);
    p->tok_embed = at;
    at += (size_t)r * c;
    for (uint32_t l = 0; l < h.n_layers; l++) {
        for (uint32_t k = 0; k < TLM_LAYER_ROLES; k++) {
            tlm_role_shape(&h, tlm_layer_role(k), &r, &c);
            *layer_slot(&p->layers[l], k) = at;
            at += (size_t)r * c;
        }
    }
    p->final_norm = at;
    at += h.dim;
    p->classifier = h.shared_classifier ? p->tok_embed : at;
    return TLM_OK;
}

void tlm_params_free(tlm_params *p)
{
    free(p->data);
    free(p->layers);
    memset(p, 0, sizeof *p);
}

void tlm_params_init(tlm_params *p, uint64_t seed)
{
    tlm_rng rng;
    tlm_rng_seed(&rng, seed);
    const float out_scale = 1.0f / sqrtf(2.0f * (float)p->hp.n_layers);
    const uint32_t n = tlm_params_count(p);
    for (uint32_t i = 0; i < n; i++) {
        tlm_param_tensor t;
        tlm_params_tensor(p, i, &t);
        const size_t count = (size_t)t.rows * t.cols;
        if (t.rows == 1) {
            for (size_t j = 0; j < count; j++) t.data[j] = 1.0f;
            continue;
        }
        float std = 0.02f;
        if (t.role == TLM_ROLE_WO || t.role == TLM_ROLE_W2) std *= out_scale;
        for (size_t j = 0; j < count; j++) t.data[j] = std * (float)tlm_rng_normal(&rng);
    }
}

tlm_status tlm_params_from_model(tlm_params *p, const tlm_model *m, tlm_error *err)
{
    tlm_status st = tlm_params_alloc(p, &m->hp, err);
    if (st) return st;
    const uint32_t n = tlm_params_count(p);
    for (uint32_t i = 0; i < n; i++) {
        tlm_param_tensor t;
        tlm_params_tensor(p, i, &t);
        tlm_tensor src;
        tlm_model_tensor(m, (tlm_role)t.role, t.layer, &src);
        const tlm_wtype_traits *tr = tlm_wtype_get(src.wtype);
        for (uint32_t r = 0; r < t.rows; r++) tr->row_to_f32(t.data + (size_t)r * t.cols, &src, r);
    }
    return TLM_OK;
}

/* Whether tensor t of `like` expands to exactly the floats at x. */
static int same_values(const tlm_tensor *t, const float *x, float *row)
{
    const tlm_wtype_traits *tr = tlm_wtype_get(t->wtype);
    for (uint32_t r = 0; r < t->rows; r++) {
        tr->row_to_f32(row, t, r);
        if (memcmp(row, x + (size_t)r * t->cols, (size_t)t->cols * sizeof(float))) return 0;
    }
    return 1;
}

/* The image of p: every tensor in fp32, or, with like, each tensor whose
 * values equal like's in like's own encoding (tlm_params_to_image_like). */
static tlm_status build_image(const tlm_params *p, const tlm_model *like, const tlm_vocab *v, uint32_t bos, uint32_t eos,
                              uint8_t **image, size_t *bytes, uint32_t *widened, tlm_error *err)
{
    const uint32_t n = tlm_params_count(p);
    uint32_t widest = 1;
    for (uint32_t i = 0; i < n; i++) {
        tlm_param_tensor t;
        tlm_params_tensor(p, i, &t);
        if (t.cols > widest) widest = t.cols;
    }
    tlm_tensor_in *ts = calloc(n, sizeof *ts);
    float *row = like ? malloc((size_t)widest * sizeof *row) : NULL;
    if (!ts || (like && !row)) {
        free(ts);
        free(row);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    tlm_status st = TLM_OK;
    for (uint32_t i = 0; i < n; i++) {
        tlm_param_tensor t;
        tlm_params_tensor(p, i, &t);
        ts[i] = (tlm_tensor_in){.role = t.role, .layer = t.layer, .wtype = TLM_WTYPE_F32, .rows = t.rows,
                                .cols = t.cols, .data = t.data};
        if (!like) continue;
        tlm_tensor o;
        if (tlm_model_tensor(like, (tlm_role)t.role, t.layer, &o) != 0 || o.rows != t.rows || o.cols != t.cols) {
            st = tlm_fail(err, TLM_ERR_ARG, "the model has no %u x %u tensor of role %u layer %u", t.rows, t.cols, t.role, t.layer);
            break;
        }
        if (same_values(&o, t.data, row)) /* unchanged: its own type, packing and scales */
            ts[i] = (tlm_tensor_in){.role = o.role, .layer = o.layer, .wtype = o.wtype, .scale_kind = o.scale_kind,
                                    .rows = o.rows, .cols = o.cols, .group = o.group, .param = o.param,
                                    .data = o.data, .scales = o.scales};
        else if (widened && o.wtype != TLM_WTYPE_F32)
            (*widened)++;
    }
    if (!st) st = tlm_image_build(&p->hp, bos, eos, ts, n, v, image, bytes, err);
    free(ts);
    free(row);
    return st;
}

tlm_status tlm_params_to_image(const tlm_params *p, const tlm_vocab *v, uint32_t bos, uint32_t eos, uint8_t **image,
                               size_t *bytes, tlm_error *err)
{
    return build_image(p, NULL, v, bos, eos, image, bytes, NULL, err);
}

tlm_status tlm_params_to_image_like(const tlm_params *p, const tlm_model *like, const tlm_vocab *v, uint8_t **image,
                                    size_t *bytes, uint32_t *widened, tlm_error *err)
{
    if (widened) *widened = 0;
    if (like->hp.dim != p->hp.dim || like->hp.n_layers != p->hp.n_layers || like->hp.hidden_dim != p->hp.hidden_dim ||
        like->hp.vocab_size != p->hp.vocab_size || like->hp.shared_classifier != p->hp.shared_classifier)
        return tlm_fail(err, TLM_ERR_ARG, "the parameters do not have the model's shapes");
    return build_image(p, like, v, like->bos_id, like->eos_id, image, bytes, widened, err);
}

tlm_status tlm_params_select(const tlm_params *p, const char *spec, uint8_t *mask, size_t *values, tlm_error *err)
{
    const uint32_t n = tlm_params_count(p);
    memset(mask, 0, n);
    const char *s = spec;
    while (1) {
        const char *end = strchr(s, ',');
        const size_t len = end ? (size_t)(end - s) : strlen(s);
        char word[32];
        if (len == 0 || len >= sizeof word)
            return tlm_fail(err, TLM_ERR_ARG, "tensor selection '%s': expected groups norms, embed, attn, ffn, layerN or all, "
                                              "separated by commas", spec);
        memcpy(word, s, len);
        word[len] = 0;
        long layer = -1;
        if (!strncmp(word, "layer", 5)) {
            char *e = NULL;
            layer = strtol(word + 5, &e, 10);
            if (e == word + 5 || *e || layer < 0 || layer >= (long)p->hp.n_layers)
                return tlm_fail(err, TLM_ERR_ARG, "tensor selection: '%s' is not a layer of this model (layer0 to layer%u)",
                                word, p->hp.n_layers - 1u);
        } else if (strcmp(word, "norms") && strcmp(word, "embed") && strcmp(word, "attn") && strcmp(word, "ffn") &&
                   strcmp(word, "all"))
            return tlm_fail(err, TLM_ERR_ARG, "tensor selection: unknown group '%s' (norms, embed, attn, ffn, layerN, all)",
                            word);
        for (uint32_t i = 0; i < n; i++) {
            tlm_param_tensor t;
            tlm_params_tensor(p, i, &t);
            const int r = t.role;
            const int in_layer = r >= TLM_ROLE_ATTN_NORM && r <= TLM_ROLE_W3;
            int hit = 0;
            if (layer >= 0) hit = in_layer && t.layer == (uint32_t)layer;
            else if (!strcmp(word, "all")) hit = 1;
            else if (!strcmp(word, "norms")) hit = r == TLM_ROLE_ATTN_NORM || r == TLM_ROLE_FFN_NORM || r == TLM_ROLE_FINAL_NORM;
            else if (!strcmp(word, "embed")) hit = r == TLM_ROLE_TOK_EMBED || r == TLM_ROLE_CLASSIFIER;
            else if (!strcmp(word, "attn")) hit = r >= TLM_ROLE_WQ && r <= TLM_ROLE_WO;
            else hit = r == TLM_ROLE_W1 || r == TLM_ROLE_W2 || r == TLM_ROLE_W3;
            if (hit) mask[i] = 1;
        }
        if (!end) break;
        s = end + 1;
    }
    if (values) {
        *values = 0;
        for (uint32_t i = 0; i < n; i++) {
            tlm_param_tensor t;
            tlm_params_tensor(p, i, &t);
            if (mask[i]) *values += (size_t)t.rows * t.cols;
        }
    }
    return TLM_OK;
}
