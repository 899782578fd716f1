#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "../core/le.h"
#include "image_build.h"

void tlm_vocab_free(tlm_vocab *v)
{
    if (v->strs)
        for (uint32_t i = 0; i < v->n; i++) free(v->strs[i]);
    free(v->strs);
    free(v->scores);
    free(v->lens);
    memset(v, 0, sizeof *v);
}

tlm_status tlm_vocab_from_model(const tlm_model *m, tlm_vocab *v, tlm_error *err)
{
    uint32_t n = m->hp.vocab_size;
    memset(v, 0, sizeof *v);
    v->n = n;
    v->max_token_length = m->max_token_length;
    v->scores = malloc(n * sizeof *v->scores);
    v->lens = malloc(n * sizeof *v->lens);
    v->strs = calloc(n, sizeof *v->strs);
    if (!v->scores || !v->lens || !v->strs) goto nomem;
    memcpy(v->scores, m->vocab_scores, n * sizeof *v->scores);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = m->vocab_off[i + 1] - m->vocab_off[i] - 1u;
        v->lens[i] = len;
        v->strs[i] = malloc(len + 1u);
        if (!v->strs[i]) goto nomem;
        memcpy(v->strs[i], m->vocab_pool + m->vocab_off[i], len + 1u);
    }
    return TLM_OK;
nomem:
    tlm_vocab_free(v);
    return tlm_fail(err, TLM_ERR_NOMEM, "out of memory copying the vocabulary");
}

uint64_t tlm_scale_count(uint32_t kind, uint32_t rows, uint32_t cols, uint32_t group)
{
    switch (kind) {
    case TLM_SCALE_TENSOR: return 1;
    case TLM_SCALE_ROW: return rows;
    case TLM_SCALE_GROUP: return group ? (uint64_t)rows * ((cols + (uint64_t)group - 1u) / group) : 0;
    default: return 0;
    }
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1u) / a * a; }

/* Order of the vocabulary's lexicographic index (strcmp order, then id). */
static int cmp_ids(const void *a, const void *b, void *ctx)
{
    const tlm_vocab *sort_vocab = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    uint32_t nx = sort_vocab->lens[x], ny = sort_vocab->lens[y];
    int c = memcmp(sort_vocab->strs[x], sort_vocab->strs[y], nx < ny ? nx : ny);
    if (c) return c;
    if (nx != ny) return nx < ny ? -1 : 1;
    return (x > y) - (x < y);
}

void tlm_image_reseal(uint8_t *image, size_t bytes)
{
    tlm_wr32(image + TLM_H_CRC32, 0);
    tlm_wr32(image + TLM_H_CRC32, tlm_crc32(0, image, bytes));
}

tlm_status tlm_image_build(const tlm_hparams *hp, uint32_t bos_id, uint32_t eos_id, const tlm_tensor_in *tensors,
                           uint32_t n_tensors, const tlm_vocab *vocab, uint8_t **out, size_t *out_bytes,
                           tlm_error *err)
{
    const uint32_t V = vocab->n;
    if (V != hp->vocab_size)
        return tlm_fail(err, TLM_ERR_VOCAB, "tokenizer has %u tokens but the model's vocabulary is %u", V, hp->vocab_size);
    /* Layout: header, table, tokenizer section, then tensors. */
    uint64_t off = TLM_HEADER_BYTES;
    const uint64_t table_off = off;
    off += (uint64_t)n_tensors * TLM_TENSOR_ENTRY_BYTES;
    const uint64_t vocab_off = align_up(off, 8);
    uint64_t pool = 0;
    for (uint32_t i = 0; i < V; i++) pool += vocab->lens[i] + 1u;
    const uint64_t vocab_bytes = 12ull * V + 4u + pool;
    off = vocab_off + vocab_bytes;
    uint64_t *doff = calloc(n_tensors ? n_tensors : 1, sizeof *doff);
    uint64_t *soff = calloc(n_tensors ? n_tensors : 1, sizeof *soff);
    uint32_t *sorted = malloc((V ? V : 1) * sizeof *sorted);
    uint8_t *img = NULL;
    tlm_status st = TLM_OK;
    if (!doff || !soff || !sorted) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < n_tensors; i++) {
        const tlm_tensor_in *t = &tensors[i];
        uint64_t db = tlm_wtype_row_bytes(t->wtype, t->cols, t->param) * t->rows;
        doff[i] = align_up(off, TLM_ALIGN);
        off = doff[i] + db;
        uint64_t ns = tlm_scale_count(t->scale_kind, t->rows, t->cols, t->group);
        if (ns) {
            soff[i] = align_up(off, TLM_ALIGN);
            off = soff[i] + ns * 4u;
        }
    }
    const uint64_t total = align_up(off, TLM_ALIGN);
    if (total > SIZE_MAX) {
        st = tlm_fail(err, TLM_ERR_OVERFLOW, "image would be too large");
        goto out;
    }
    img = aligned_alloc(TLM_ALIGN, (size_t)total);
    if (!img) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "cannot allocate an image of %llu bytes", (unsigned long long)total);
        goto out;
    }
    memset(img, 0, (size_t)total);
    memcpy(img + TLM_H_MAGIC, TLM_MAGIC, 4);
    tlm_wr32(img + TLM_H_VERSION, TLM_FORMAT_VERSION);
    tlm_wr32(img + TLM_H_HEADER_BYTES, TLM_HEADER_BYTES);
    tlm_wr32(img + TLM_H_FLAGS, hp->shared_classifier ? TLM_FLAG_SHARED_CLASSIFIER : 0u);
    tlm_wr64(img + TLM_H_IMAGE_BYTES, total);
    tlm_wr32(img + TLM_H_DIM, hp->dim);
    tlm_wr32(img + TLM_H_HIDDEN_DIM, hp->hidden_dim);
    tlm_wr32(img + TLM_H_N_LAYERS, hp->n_layers);
    tlm_wr32(img + TLM_H_N_HEADS, hp->n_heads);
    tlm_wr32(img + TLM_H_N_KV_HEADS, hp->n_kv_heads);
    tlm_wr32(img + TLM_H_VOCAB_SIZE, hp->vocab_size);
    tlm_wr32(img + TLM_H_SEQ_LEN, hp->seq_len);
    tlm_wrf32(img + TLM_H_ROPE_THETA, hp->rope_theta);
    tlm_wrf32(img + TLM_H_NORM_EPS, hp->norm_eps);
    tlm_wr32(img + TLM_H_N_TENSORS, n_tensors);
    tlm_wr32(img + TLM_H_TENSOR_ENTRY_BYTES, TLM_TENSOR_ENTRY_BYTES);
    tlm_wr64(img + TLM_H_TENSOR_TABLE_OFFSET, table_off);
    tlm_wr64(img + TLM_H_VOCAB_OFFSET, vocab_off);
    tlm_wr64(img + TLM_H_VOCAB_BYTES, vocab_bytes);
    tlm_wr32(img + TLM_H_MAX_TOKEN_LEN, vocab->max_token_length);
    tlm_wr32(img + TLM_H_BOS_ID, bos_id);
    tlm_wr32(img + TLM_H_EOS_ID, eos_id);

    for (uint32_t i = 0; i < n_tensors; i++) {
        const tlm_tensor_in *t = &tensors[i];
        uint8_t *e = img + table_off + (uint64_t)i * TLM_TENSOR_ENTRY_BYTES;
        uint64_t db = tlm_wtype_row_bytes(t->wtype, t->cols, t->param) * t->rows;
        uint64_t ns = tlm_scale_count(t->scale_kind, t->rows, t->cols, t->group);
        tlm_wr16(e + TLM_T_ROLE, t->role);
        tlm_wr16(e + TLM_T_LAYER, t->layer);
        tlm_wr16(e + TLM_T_WTYPE, t->wtype);
        tlm_wr16(e + TLM_T_SCALE_KIND, t->scale_kind);
        tlm_wr32(e + TLM_T_ROWS, t->rows);
        tlm_wr32(e + TLM_T_COLS, t->cols);
        tlm_wr32(e + TLM_T_GROUP, t->group);
        tlm_wr32(e + TLM_T_PARAM, t->param);
        tlm_wr64(e + TLM_T_DATA_OFFSET, doff[i]);
        tlm_wr64(e + TLM_T_DATA_BYTES, db);
        tlm_wr64(e + TLM_T_SCALE_OFFSET, ns ? soff[i] : 0);
        tlm_wr64(e + TLM_T_SCALE_BYTES, ns * 4u);
        memcpy(img + doff[i], t->data, (size_t)db);
        if (ns) memcpy(img + soff[i], t->scales, (size_t)ns * 4u);
    }

    uint8_t *vb = img + vocab_off;
    uint32_t pos = 0;
    for (uint32_t i = 0; i < V; i++) {
        tlm_wrf32(vb + 4ull * i, vocab->scores[i]);
        tlm_wr32(vb + 4ull * V + 4ull * i, pos);
        memcpy(vb + 12ull * V + 4u + pos, vocab->strs[i], vocab->lens[i]);
        pos += vocab->lens[i] + 1u;
        sorted[i] = i;
    }
    tlm_wr32(vb + 4ull * V + 4ull * V, pos);
    qsort_r(sorted, V, sizeof *sorted, cmp_ids, (void *)vocab);
    for (uint32_t i = 0; i < V; i++) tlm_wr32(vb + 8ull * V + 4u + 4ull * i, sorted[i]);
    tlm_image_reseal(img, (size_t)total);

    tlm_model check;
    st = tlm_model_open(&check, img, (size_t)total, err);
    if (st) goto out;
    *out = img;
    *out_bytes = (size_t)total;
    img = NULL;
out:
    free(img);
    free(doff);
    free(soff);
    free(sorted);
    return st;
}
