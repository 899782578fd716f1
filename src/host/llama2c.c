/* llama2.c version-0 checkpoint layout: seven int32 (dim, hidden_dim,
 * n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
 * means a separate classifier follows), then fp32 arrays: token embedding,
 * then per kind for all layers (attention norm, wq, wk, wv, wo, ffn norm,
 * w1, w2, w3), final norm, the two RoPE tables, and the classifier. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/le.h"
#include "fileio.h"
#include "llama2c.h"

#define L2C_HEADER_BYTES 28u

tlm_status tlm_llama2c_read_tokenizer(const char *path, uint32_t n, tlm_vocab *v, tlm_error *err)
{
    uint8_t *buf;
    size_t bytes;
    memset(v, 0, sizeof *v);
    tlm_status st = tlm_read_file(path, &buf, &bytes, err);
    if (st) return st;
    if (bytes < 4) {
        free(buf);
        return tlm_fail(err, TLM_ERR_FORMAT, "%s: too short for a llama2.c tokenizer", path);
    }
    int32_t maxlen = (int32_t)tlm_rd32(buf);
    if (maxlen <= 0 || maxlen > 65536) {
        free(buf);
        return tlm_fail(err, TLM_ERR_FORMAT, "%s: max_token_length %d is not plausible: not a llama2.c tokenizer?", path, maxlen);
    }
    if (n == 0) { /* as many tokens as the file holds */
        for (size_t off = 4; off + 8 <= bytes; n++) {
            uint32_t len = tlm_rd32(buf + off + 4);
            if (len > bytes - off - 8) break;
            off += 8u + len;
        }
        if (n == 0) {
            free(buf);
            return tlm_fail(err, TLM_ERR_FORMAT, "%s holds no tokens", path);
        }
    }
    v->n = n;
    v->max_token_length = (uint32_t)maxlen;
    v->scores = calloc(n ? n : 1, sizeof *v->scores);
    v->lens = calloc(n ? n : 1, sizeof *v->lens);
    v->strs = calloc(n ? n : 1, sizeof *v->strs);
    if (!v->scores || !v->lens || !v->strs) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    size_t off = 4;
    for (uint32_t i = 0; i < n; i++) {
        if (bytes - off < 8) {
            st = tlm_fail(err, TLM_ERR_FORMAT, "%s: ends after %u of %u tokens (truncated, or made for another model)", path, i, n);
            goto fail;
        }
        v->scores[i] = tlm_rdf32(buf + off);
        int32_t len = (int32_t)tlm_rd32(buf + off + 4);
        off += 8;
        if (len < 0 || (size_t)len > bytes - off) {
            st = tlm_fail(err, TLM_ERR_FORMAT, "%s: token %u has length %d beyond the end of the file", path, i, len);
            goto fail;
        }
        if (!isfinite(v->scores[i])) {
            st = tlm_fail(err, TLM_ERR_FORMAT, "%s: token %u has a non-finite score", path, i);
            goto fail;
        }
        if ((uint32_t)len > v->max_token_length) {
            st = tlm_fail(err, TLM_ERR_FORMAT, "%s: token %u is %d bytes, longer than max_token_length %d", path, i, len, maxlen);
            goto fail;
        }
        v->lens[i] = (uint32_t)len;
        v->strs[i] = malloc((size_t)len + 1u);
        if (!v->strs[i]) {
            st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        memcpy(v->strs[i], buf + off, (size_t)len);
        v->strs[i][len] = 0;
        off += (size_t)len;
    }
    if (off != bytes) {
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: %llu bytes left after %u tokens: the tokenizer does not match the model's vocabulary",
                      path, (unsigned long long)(bytes - off), n);
        goto fail;
    }
    free(buf);
    return TLM_OK;
fail:
    free(buf);
    tlm_vocab_free(v);
    return st;
}

/* The checkpoint stores the per-layer arrays in canonical role order,
 * tlm_layer_role(0..TLM_LAYER_ROLES-1). */
static uint64_t role_floats(const tlm_hparams *hp, uint16_t role)
{
    uint32_t r = 0, c = 0;
    tlm_role_shape(hp, role, &r, &c);
    return (uint64_t)r * c;
}

/* Floats in a checkpoint of these dimensions (without the header). */
static uint64_t checkpoint_floats(const tlm_hparams *hp)
{
    uint64_t n = role_floats(hp, TLM_ROLE_TOK_EMBED);
    for (int k = 0; k < TLM_LAYER_ROLES; k++) n += role_floats(hp, tlm_layer_role((uint32_t)k)) * hp->n_layers;
    n += role_floats(hp, TLM_ROLE_FINAL_NORM) + 2u * role_floats(hp, TLM_ROLE_ROPE_REAL);
    if (!hp->shared_classifier) n += role_floats(hp, TLM_ROLE_CLASSIFIER);
    return n;
}

tlm_status tlm_llama2c_import(const char *ckpt_path, const char *tok_path, uint8_t **image, size_t *bytes,
                              tlm_error *err)
{
    uint8_t *buf;
    size_t n;
    tlm_status st = tlm_read_file(ckpt_path, &buf, &n, err);
    if (st) return st;
    tlm_vocab vocab = {0};
    tlm_tensor_in *ts = NULL;
    if (n >= 4 && memcmp(buf, "ak42", 4) == 0) {
        st = tlm_fail(err, TLM_ERR_UNSUPPORTED, "%s is a llama2.c version-1/2 export; re-export it with llama2.c's legacy (version 0) format", ckpt_path);
        goto out;
    }
    if (n < L2C_HEADER_BYTES) {
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: %llu bytes, too short for a llama2.c checkpoint header", ckpt_path, (unsigned long long)n);
        goto out;
    }
    int32_t h[7];
    for (int i = 0; i < 7; i++) h[i] = (int32_t)tlm_rd32(buf + 4 * i);
    tlm_hparams hp = {0};
    for (int i = 0; i < 7; i++) {
        if (h[i] == 0 || (i != 5 && h[i] < 0) || h[i] == INT32_MIN) {
            st = tlm_fail(err, TLM_ERR_FORMAT, "%s: header field %d is %d: not a llama2.c version-0 checkpoint", ckpt_path, i, h[i]);
            goto out;
        }
    }
    hp.dim = (uint32_t)h[0];
    hp.hidden_dim = (uint32_t)h[1];
    hp.n_layers = (uint32_t)h[2];
    hp.n_heads = (uint32_t)h[3];
    hp.n_kv_heads = (uint32_t)h[4];
    hp.shared_classifier = h[5] > 0;
    hp.vocab_size = (uint32_t)(h[5] > 0 ? h[5] : -h[5]);
    hp.seq_len = (uint32_t)h[6];
    hp.rope_theta = 10000.0f;
    hp.norm_eps = 1e-5f;
    {
        tlm_error why;
        if (tlm_hparams_check(&hp, &why)) {
            st = tlm_fail(err, TLM_ERR_FORMAT, "%s: not a usable llama2.c version-0 checkpoint: %s", ckpt_path, why.msg);
            goto out;
        }
    }
    uint64_t want = checkpoint_floats(&hp) * 4u + L2C_HEADER_BYTES;
    if (n != want) {
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: %llu bytes, but a checkpoint with these dimensions has %llu (%s)", ckpt_path,
                      (unsigned long long)n, (unsigned long long)want, n < want ? "truncated" : "trailing data");
        goto out;
    }
    st = tlm_llama2c_read_tokenizer(tok_path, hp.vocab_size, &vocab, err);
    if (st) goto out;

    uint32_t nt = 2u + TLM_LAYER_ROLES * hp.n_layers + (hp.shared_classifier ? 0u : 1u) + 2u;
    ts = calloc(nt, sizeof *ts);
    if (!ts) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* Walk the file in its own order, filling canonical table slots. */
    const uint8_t *p = buf + L2C_HEADER_BYTES;
    uint32_t k = 0;
#define TAKE(slot, role_, layer_)                                                  \
    do {                                                                           \
        tlm_tensor_in *t_ = &ts[slot];                                             \
        t_->role = (role_);                                                        \
        t_->layer = (uint16_t)(layer_);                                            \
        t_->wtype = TLM_WTYPE_F32;                                                 \
        tlm_role_shape(&hp, (role_), &t_->rows, &t_->cols);                        \
        t_->data = p;                                                              \
        p += (uint64_t)t_->rows * t_->cols * 4u;                                   \
    } while (0)
    TAKE(0, TLM_ROLE_TOK_EMBED, 0);
    for (int r = 0; r < TLM_LAYER_ROLES; r++)
        for (uint32_t l = 0; l < hp.n_layers; l++) TAKE(1u + l * TLM_LAYER_ROLES + (uint32_t)r, tlm_layer_role((uint32_t)r), l);
    k = 1u + TLM_LAYER_ROLES * hp.n_layers;
    TAKE(k, TLM_ROLE_FINAL_NORM, 0);
    k++;
    uint32_t aux = k + (hp.shared_classifier ? 0u : 1u);
    TAKE(aux, TLM_ROLE_ROPE_REAL, 0);
    TAKE(aux + 1u, TLM_ROLE_ROPE_IMAG, 0);
    if (!hp.shared_classifier) TAKE(k, TLM_ROLE_CLASSIFIER, 0);
#undef TAKE
    st = tlm_image_build(&hp, 1, 2, ts, nt, &vocab, image, bytes, err);
out:
    free(ts);
    tlm_vocab_free(&vocab);
    free(buf);
    return st;
}

/* Appends tensor rows as fp32 (dequantizing if stored otherwise). */
static uint8_t *put_tensor(uint8_t *p, const tlm_tensor *t)
{
    const tlm_wtype_traits *tr = tlm_wtype_get(t->wtype);
    for (uint32_t r = 0; r < t->rows; r++) {
        tr->row_to_f32((float *)(void *)p, t, r);
        p += (size_t)t->cols * 4u;
    }
    return p;
}

tlm_status tlm_llama2c_export(const tlm_model *m, const char *ckpt_path, const char *tok_path, tlm_error *err)
{
    const tlm_hparams *hp = &m->hp;
    if (hp->rope_theta != 10000.0f || hp->norm_eps != 1e-5f)
        return tlm_fail(err, TLM_ERR_UNSUPPORTED, "llama2.c fixes rope_theta 10000 and norm_eps 1e-5; this model differs");
    uint64_t total = checkpoint_floats(hp) * 4u + L2C_HEADER_BYTES;
    uint8_t *buf = malloc((size_t)total);
    if (!buf) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    int32_t h[7] = {(int32_t)hp->dim, (int32_t)hp->hidden_dim, (int32_t)hp->n_layers, (int32_t)hp->n_heads,
                    (int32_t)hp->n_kv_heads, hp->shared_classifier ? (int32_t)hp->vocab_size : -(int32_t)hp->vocab_size,
                    (int32_t)hp->seq_len};
    for (int i = 0; i < 7; i++) tlm_wr32(buf + 4 * i, (uint32_t)h[i]);
    uint8_t *p = buf + L2C_HEADER_BYTES;
    tlm_tensor t;
    tlm_model_tensor(m, TLM_ROLE_TOK_EMBED, 0, &t);
    p = put_tensor(p, &t);
    for (int r = 0; r < TLM_LAYER_ROLES; r++)
        for (uint32_t l = 0; l < hp->n_layers; l++) {
            tlm_model_tensor(m, tlm_layer_role((uint32_t)r), l, &t);
            p = put_tensor(p, &t);
        }
    tlm_model_tensor(m, TLM_ROLE_FINAL_NORM, 0, &t);
    p = put_tensor(p, &t);
    /* RoPE tables: the stored ones if the image kept them, else computed. */
    const uint32_t hs = hp->dim / hp->n_heads;
    for (int part = 0; part < 2; part++) {
        if (tlm_model_tensor(m, part ? TLM_ROLE_ROPE_IMAG : TLM_ROLE_ROPE_REAL, 0, &t) == 0) {
            p = put_tensor(p, &t);
            continue;
        }
        for (uint32_t pos = 0; pos < hp->seq_len; pos++)
            for (uint32_t j = 0; j < hs / 2u; j++) {
                double freq = 1.0 / pow((double)hp->rope_theta, (double)(2u * j) / hs);
                double a = (double)pos * freq;
                tlm_wrf32(p, (float)(part ? sin(a) : cos(a)));
                p += 4;
            }
    }
    if (!hp->shared_classifier) {
        tlm_model_tensor(m, TLM_ROLE_CLASSIFIER, 0, &t);
        p = put_tensor(p, &t);
    }
    tlm_status st = tlm_write_file_atomic(ckpt_path, buf, (size_t)total, err);
    free(buf);
    if (st || !tok_path) return st;

    tlm_vocab v;
    uint8_t *tok;
    size_t tb;
    st = tlm_vocab_from_model(m, &v, err);
    if (st) return st;
    st = tlm_vocab_to_llama2c(&v, &tok, &tb, err);
    tlm_vocab_free(&v);
    if (st) return st;
    st = tlm_write_file_atomic(tok_path, tok, tb, err);
    free(tok);
    return st;
}

tlm_status tlm_vocab_to_llama2c(const tlm_vocab *v, uint8_t **out, size_t *bytes, tlm_error *err)
{
    size_t n = 4;
    for (uint32_t i = 0; i < v->n; i++) n += 8u + v->lens[i];
    uint8_t *b = malloc(n);
    if (!b) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    tlm_wr32(b, v->max_token_length);
    uint8_t *p = b + 4;
    for (uint32_t i = 0; i < v->n; i++) {
        tlm_wrf32(p, v->scores[i]);
        tlm_wr32(p + 4, v->lens[i]);
        memcpy(p + 8, v->strs[i], v->lens[i]);
        p += 8u + v->lens[i];
    }
    *out = b;
    *bytes = n;
    return TLM_OK;
}
