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

/* Checks a header's seven dimensions (llama2.c's order: dim, hidden_dim,
 * n_layers, n_heads, n_kv_heads, vocab_size, seq_len) and fills hp. A
 * negative vocab_size (version 0 only) means a separate classifier. */
static tlm_status header_hparams(const int32_t h[7], int shared, const char *what, const char *path, tlm_hparams *hp,
                                 tlm_error *err)
{
    memset(hp, 0, sizeof *hp);
    for (int i = 0; i < 7; i++)
        if (h[i] == 0 || (i != 5 && h[i] < 0) || h[i] == INT32_MIN || (shared >= 0 && h[i] < 0))
            return tlm_fail(err, TLM_ERR_FORMAT, "%s: header field %d is %d: not a llama2.c %s checkpoint", path, i, h[i], what);
    hp->dim = (uint32_t)h[0];
    hp->hidden_dim = (uint32_t)h[1];
    hp->n_layers = (uint32_t)h[2];
    hp->n_heads = (uint32_t)h[3];
    hp->n_kv_heads = (uint32_t)h[4];
    hp->shared_classifier = shared >= 0 ? shared != 0 : h[5] > 0;
    hp->vocab_size = (uint32_t)(h[5] > 0 ? h[5] : -h[5]);
    hp->seq_len = (uint32_t)h[6];
    hp->rope_theta = 10000.0f;
    hp->norm_eps = 1e-5f;
    tlm_error why;
    if (tlm_hparams_check(hp, &why))
        return tlm_fail(err, TLM_ERR_FORMAT, "%s: not a usable llama2.c %s checkpoint: %s", path, what, why.msg);
    return TLM_OK;
}

static void set_tensor(tlm_tensor_in *t, const tlm_hparams *hp, uint16_t role, uint32_t layer, const void *data)
{
    t->role = role;
    t->layer = (uint16_t)layer;
    t->wtype = TLM_WTYPE_F32;
    tlm_role_shape(hp, role, &t->rows, &t->cols);
    t->data = data;
}

/* The table slot of a tensor in canonical order (docs/FORMAT.md). */
static uint32_t slot_of(const tlm_hparams *hp, uint16_t role, uint32_t layer)
{
    if (role == TLM_ROLE_TOK_EMBED) return 0;
    if (role == TLM_ROLE_FINAL_NORM) return 1u + TLM_LAYER_ROLES * hp->n_layers;
    if (role == TLM_ROLE_CLASSIFIER) return 2u + TLM_LAYER_ROLES * hp->n_layers;
    for (uint32_t k = 0; k < TLM_LAYER_ROLES; k++)
        if (tlm_layer_role(k) == role) return 1u + layer * TLM_LAYER_ROLES + k;
    return UINT32_MAX;
}

#define L2C_MAGIC 0x616b3432u /* "ak42" as a little-endian uint32 */
#define L2C_V12_HEADER_BYTES 256u

int tlm_llama2c_looks_like(const uint8_t *buf, size_t n)
{
    if (n >= 4 && tlm_rd32(buf) == L2C_MAGIC) return 1;
    if (n < 28) return 0;
    int32_t h[7];
    for (int i = 0; i < 7; i++) h[i] = (int32_t)tlm_rd32(buf + 4 * i);
    tlm_hparams hp;
    tlm_error why;
    return header_hparams(h, -1, "version-0", "", &hp, &why) == TLM_OK;
}

/* The matrices of a version-1/2 file in file order; each role for every
 * layer before the next. */
static const uint16_t v12_matrices[] = {TLM_ROLE_WQ, TLM_ROLE_WK, TLM_ROLE_WV, TLM_ROLE_WO,
                                        TLM_ROLE_W1, TLM_ROLE_W2, TLM_ROLE_W3};

/* Versions 1 (fp32) and 2 (Q8_0: int8 with one fp32 scale per group_size
 * consecutive weights of the flattened tensor) of llama2.c's export.py: a
 * 256-byte header (magic, version, the seven dimensions, a shared-classifier
 * byte, for version 2 the group size), the norms first, then the token
 * embedding and the matrices, then the classifier if not shared; no RoPE
 * tables. Version-2 tensors whose rows hold whole groups become i8 with
 * group scales, losslessly; others (groups across rows, or a -128) are
 * expanded to fp32, also exactly (an int8 times an fp32 rounds once). */
static tlm_status import_v12(const uint8_t *buf, size_t n, const char *path, tlm_hparams *hp, tlm_tensor_in **out,
                             uint32_t *n_out, float **floats_out, tlm_error *err)
{
    if (n < L2C_V12_HEADER_BYTES)
        return tlm_fail(err, TLM_ERR_FORMAT, "%s: %llu bytes, too short for a llama2.c version-1/2 header", path, (unsigned long long)n);
    const int32_t version = (int32_t)tlm_rd32(buf + 4);
    if (version != 1 && version != 2)
        return tlm_fail(err, TLM_ERR_UNSUPPORTED, "%s: llama2.c export version %d (this build reads 0, 1 and 2)", path, version);
    const char *what = version == 1 ? "version-1" : "version-2";
    int32_t h[7];
    for (int i = 0; i < 7; i++) h[i] = (int32_t)tlm_rd32(buf + 8 + 4 * i);
    if (buf[36] > 1) return tlm_fail(err, TLM_ERR_FORMAT, "%s: shared-classifier flag %u is not 0 or 1", path, buf[36]);
    tlm_status st = header_hparams(h, buf[36], what, path, hp, err);
    if (st) return st;
    const int32_t gs = version == 2 ? (int32_t)tlm_rd32(buf + 37) : 1;
    if (gs <= 0 || (uint32_t)gs > hp->dim || hp->dim % (uint32_t)gs)
        return tlm_fail(err, TLM_ERR_FORMAT, "%s: group size %d does not divide dim %u", path, gs, hp->dim);
    const uint32_t g = (uint32_t)gs;

    /* sizes: norms, then each quantized or fp32 matrix */
    const uint64_t L = hp->n_layers, norms = (2u * L + 1u) * hp->dim;
    uint64_t weights = role_floats(hp, TLM_ROLE_TOK_EMBED) + (hp->shared_classifier ? 0u : role_floats(hp, TLM_ROLE_CLASSIFIER));
    for (size_t k = 0; k < sizeof v12_matrices / sizeof v12_matrices[0]; k++) {
        const uint64_t w = role_floats(hp, v12_matrices[k]);
        if (version == 2 && w % g)
            return tlm_fail(err, TLM_ERR_FORMAT, "%s: %s holds %llu weights, not a multiple of the group size %u", path,
                            tlm_role_name(v12_matrices[k]), (unsigned long long)w, g);
        weights += w * L;
    }
    const uint64_t want = L2C_V12_HEADER_BYTES + norms * 4u + (version == 1 ? weights * 4u : weights + weights / g * 4u);
    if (n != want)
        return tlm_fail(err, TLM_ERR_FORMAT, "%s: %llu bytes, but a %s checkpoint with these dimensions has %llu (%s)", path,
                        (unsigned long long)n, what, (unsigned long long)want, n < want ? "truncated" : "trailing data");

    const uint32_t nt = 2u + TLM_LAYER_ROLES * hp->n_layers + (hp->shared_classifier ? 0u : 1u);
    tlm_tensor_in *ts = calloc(nt, sizeof *ts);
    /* version 2: every scale, and room to expand any tensor to fp32 */
    float *fl = version == 2 ? malloc((size_t)(weights / g + weights) * sizeof *fl) : NULL;
    if (!ts || (version == 2 && !fl)) {
        free(ts);
        free(fl);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    const uint8_t *p = buf + L2C_V12_HEADER_BYTES;
    for (uint32_t l = 0; l < hp->n_layers; l++, p += hp->dim * 4u)
        set_tensor(&ts[slot_of(hp, TLM_ROLE_ATTN_NORM, l)], hp, TLM_ROLE_ATTN_NORM, l, p);
    for (uint32_t l = 0; l < hp->n_layers; l++, p += hp->dim * 4u)
        set_tensor(&ts[slot_of(hp, TLM_ROLE_FFN_NORM, l)], hp, TLM_ROLE_FFN_NORM, l, p);
    set_tensor(&ts[slot_of(hp, TLM_ROLE_FINAL_NORM, 0)], hp, TLM_ROLE_FINAL_NORM, 0, p);
    p += hp->dim * 4u;

    float *fp = fl;
    const size_t nmat = sizeof v12_matrices / sizeof v12_matrices[0];
    for (size_t k = 0; k <= nmat + 1u; k++) { /* embedding, the matrices, the classifier */
        const uint16_t role = k == 0 ? TLM_ROLE_TOK_EMBED : k <= nmat ? v12_matrices[k - 1u] : TLM_ROLE_CLASSIFIER;
        if (role == TLM_ROLE_CLASSIFIER && hp->shared_classifier) break;
        const uint32_t layers = (k == 0 || k > nmat) ? 1u : hp->n_layers;
        for (uint32_t l = 0; l < layers; l++) {
            tlm_tensor_in *t = &ts[slot_of(hp, role, l)];
            set_tensor(t, hp, role, l, p);
            if (version == 1) {
                p += (uint64_t)t->rows * t->cols * 4u;
                continue;
            }
            const size_t w = (size_t)t->rows * t->cols;
            const int8_t *q = (const int8_t *)p;
            float *sc = fp; /* the scales, read from their unaligned place */
            for (size_t i = 0; i < w / g; i++) sc[i] = tlm_rdf32(p + w + 4u * i);
            fp += w / g;
            p += w + w / g * 4u;
            for (size_t i = 0; i < w / g; i++)
                if (!isfinite(sc[i])) {
                    free(ts);
                    free(fl);
                    return tlm_fail(err, TLM_ERR_FORMAT, "%s: %s of layer %u has a scale that is not finite", path,
                                    tlm_role_name(role), l);
                }
            int has_min = 0;
            for (size_t i = 0; i < w; i++) has_min |= q[i] == -128;
            if (t->cols % g == 0 && !has_min) { /* whole groups per row: i8 with group scales as stored */
                t->wtype = TLM_WTYPE_I8;
                t->scale_kind = TLM_SCALE_GROUP;
                t->group = g;
                t->scales = sc;
            } else { /* expand: q * s, exactly as llama2.c's dequantize */
                for (size_t i = 0; i < w; i++) fp[i] = (float)q[i] * sc[i / g];
                t->data = fp;
                fp += w;
            }
        }
    }
    *out = ts;
    *n_out = nt;
    *floats_out = fl;
    return TLM_OK;
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
    float *floats = NULL;
    tlm_hparams hp;
    uint32_t nt = 0;
    if (n >= 4 && tlm_rd32(buf) == L2C_MAGIC) {
        st = import_v12(buf, n, ckpt_path, &hp, &ts, &nt, &floats, err);
        if (st) goto out;
        st = tlm_llama2c_read_tokenizer(tok_path, hp.vocab_size, &vocab, err);
        if (st) goto out;
        st = tlm_image_build(&hp, 1, 2, ts, nt, &vocab, image, bytes, err);
        goto out;
    }
    if (n < L2C_HEADER_BYTES) {
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: %llu bytes, too short for a llama2.c checkpoint header", ckpt_path, (unsigned long long)n);
        goto out;
    }
    int32_t h[7];
    for (int i = 0; i < 7; i++) h[i] = (int32_t)tlm_rd32(buf + 4 * i);
    st = header_hparams(h, -1, "version-0", ckpt_path, &hp, err);
    if (st) goto out;
    uint64_t want = checkpoint_floats(&hp) * 4u + L2C_HEADER_BYTES;
    if (n != want) {
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: %llu bytes, but a checkpoint with these dimensions has %llu (%s)", ckpt_path,
                      (unsigned long long)n, (unsigned long long)want, n < want ? "truncated" : "trailing data");
        goto out;
    }
    st = tlm_llama2c_read_tokenizer(tok_path, hp.vocab_size, &vocab, err);
    if (st) goto out;

    nt = 2u + TLM_LAYER_ROLES * hp.n_layers + (hp.shared_classifier ? 0u : 1u) + 2u;
    ts = calloc(nt, sizeof *ts);
    if (!ts) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* Walk the file in its own order, filling canonical table slots. */
    const uint8_t *p = buf + L2C_HEADER_BYTES;
#define TAKE(slot, role_, layer_)                                                  \
    do {                                                                           \
        set_tensor(&ts[slot], &hp, (role_), (layer_), p);                          \
        p += (uint64_t)ts[slot].rows * ts[slot].cols * 4u;                         \
    } while (0)
    TAKE(0, TLM_ROLE_TOK_EMBED, 0);
    for (int r = 0; r < TLM_LAYER_ROLES; r++)
        for (uint32_t l = 0; l < hp.n_layers; l++) TAKE(1u + l * TLM_LAYER_ROLES + (uint32_t)r, tlm_layer_role((uint32_t)r), l);
    uint32_t k = 1u + TLM_LAYER_ROLES * hp.n_layers;
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
    free(floats);
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
