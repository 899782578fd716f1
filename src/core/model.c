/* Model image validation and tensor lookup. Every field is checked against
 * the buffer length before anything else reads it: a damaged or hostile
 * image gives a status and a message, never an out-of-bounds read. */
#include <math.h>
#include <string.h>

#include "le.h"
#include "tritlm/model.h"

#define MAX_DIM 65536u
#define MAX_HIDDEN 1048576u
#define MAX_LAYERS 1024u
#define MAX_VOCAB (1u << 22)
#define MAX_SEQ_LEN (1u << 20)
#define MAX_AUX_TENSORS 16u
#define MAX_TOKEN_BYTES 65536u

static const char *const role_names[] = {
    "?", "tok_embed", "attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3",
    "final_norm", "classifier", "rope_real", "rope_imag",
};

const char *tlm_role_name(uint32_t role)
{
    if (role >= sizeof role_names / sizeof role_names[0]) return "?";
    return role_names[role];
}

uint32_t tlm_hparams_kv_dim(const tlm_hparams *hp) { return hp->dim / hp->n_heads * hp->n_kv_heads; }

static uint32_t required_tensors(const tlm_hparams *hp)
{
    return 2u + TLM_LAYER_ROLES * hp->n_layers + (hp->shared_classifier ? 0u : 1u);
}

/* Role and layer of required table entry i (canonical order). */
static void canonical_entry(const tlm_hparams *hp, uint32_t i, uint32_t *role, uint32_t *layer)
{
    *layer = 0;
    if (i == 0) {
        *role = TLM_ROLE_TOK_EMBED;
    } else if (i <= TLM_LAYER_ROLES * hp->n_layers) {
        *layer = (i - 1u) / TLM_LAYER_ROLES;
        *role = TLM_ROLE_ATTN_NORM + (i - 1u) % TLM_LAYER_ROLES;
    } else if (i == 1u + TLM_LAYER_ROLES * hp->n_layers) {
        *role = TLM_ROLE_FINAL_NORM;
    } else {
        *role = TLM_ROLE_CLASSIFIER;
    }
}

int tlm_role_shape(const tlm_hparams *hp, uint32_t role, uint32_t *rows, uint32_t *cols)
{
    uint32_t kv_dim = tlm_hparams_kv_dim(hp);
    switch (role) {
    case TLM_ROLE_TOK_EMBED:
    case TLM_ROLE_CLASSIFIER: *rows = hp->vocab_size; *cols = hp->dim; return 1;
    case TLM_ROLE_ATTN_NORM:
    case TLM_ROLE_FFN_NORM:
    case TLM_ROLE_FINAL_NORM: *rows = 1; *cols = hp->dim; return 1;
    case TLM_ROLE_WQ:
    case TLM_ROLE_WO: *rows = hp->dim; *cols = hp->dim; return 1;
    case TLM_ROLE_WK:
    case TLM_ROLE_WV: *rows = kv_dim; *cols = hp->dim; return 1;
    case TLM_ROLE_W1:
    case TLM_ROLE_W3: *rows = hp->hidden_dim; *cols = hp->dim; return 1;
    case TLM_ROLE_W2: *rows = hp->dim; *cols = hp->hidden_dim; return 1;
    case TLM_ROLE_ROPE_REAL:
    case TLM_ROLE_ROPE_IMAG: *rows = hp->seq_len; *cols = hp->dim / hp->n_heads / 2u; return 1;
    default: return 0;
    }
}

static int role_needs_f32(uint32_t role)
{
    return role == TLM_ROLE_ATTN_NORM || role == TLM_ROLE_FFN_NORM || role == TLM_ROLE_FINAL_NORM ||
           role == TLM_ROLE_ROPE_REAL || role == TLM_ROLE_ROPE_IMAG;
}

/* Is [off, off+len) inside [0, total)? Overflow-safe. */
static int in_bounds(uint64_t off, uint64_t len, uint64_t total)
{
    return len <= total && off <= total - len;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

tlm_status tlm_hparams_check(const tlm_hparams *hp, tlm_error *err)
{
    if (!hp->dim || !hp->hidden_dim || !hp->n_layers || !hp->n_heads || !hp->n_kv_heads ||
        !hp->vocab_size || !hp->seq_len)
        return tlm_fail(err, TLM_ERR_HPARAM, "a model dimension is zero (dim %u, hidden %u, layers %u, heads %u, kv heads %u, vocab %u, seq_len %u)",
                        hp->dim, hp->hidden_dim, hp->n_layers, hp->n_heads, hp->n_kv_heads, hp->vocab_size,
                        hp->seq_len);
    if (hp->dim > MAX_DIM || hp->hidden_dim > MAX_HIDDEN || hp->n_layers > MAX_LAYERS ||
        hp->vocab_size > MAX_VOCAB || hp->seq_len > MAX_SEQ_LEN)
        return tlm_fail(err, TLM_ERR_HPARAM, "a model dimension exceeds its limit (dim<=%u hidden<=%u layers<=%u vocab<=%u seq_len<=%u)",
                        MAX_DIM, MAX_HIDDEN, MAX_LAYERS, MAX_VOCAB, MAX_SEQ_LEN);
    if (hp->n_heads > hp->dim || hp->dim % hp->n_heads)
        return tlm_fail(err, TLM_ERR_HPARAM, "%u heads do not divide dim %u", hp->n_heads, hp->dim);
    if ((hp->dim / hp->n_heads) % 2u)
        return tlm_fail(err, TLM_ERR_HPARAM, "head size %u is odd (rotary embeddings need pairs)", hp->dim / hp->n_heads);
    if (hp->n_kv_heads > hp->n_heads || hp->n_heads % hp->n_kv_heads)
        return tlm_fail(err, TLM_ERR_HPARAM, "%u kv heads do not divide %u heads", hp->n_kv_heads, hp->n_heads);
    if (!(hp->rope_theta > 0.0f) || !isfinite(hp->rope_theta))
        return tlm_fail(err, TLM_ERR_HPARAM, "rope_theta must be finite and positive");
    if (!(hp->norm_eps > 0.0f) || !(hp->norm_eps < 1.0f))
        return tlm_fail(err, TLM_ERR_HPARAM, "norm_eps must be in (0, 1)");
    return TLM_OK;
}

static tlm_status check_tensor(const tlm_hparams *hp, uint64_t total, uint32_t i, const uint8_t *e,
                               uint32_t want_role, uint32_t want_layer, tlm_error *err)
{
    uint32_t role = tlm_rd16(e + TLM_T_ROLE), layer = tlm_rd16(e + TLM_T_LAYER);
    uint32_t wtype = tlm_rd16(e + TLM_T_WTYPE), skind = tlm_rd16(e + TLM_T_SCALE_KIND);
    uint32_t rows = tlm_rd32(e + TLM_T_ROWS), cols = tlm_rd32(e + TLM_T_COLS);
    uint32_t group = tlm_rd32(e + TLM_T_GROUP), param = tlm_rd32(e + TLM_T_PARAM);
    uint64_t doff = tlm_rd64(e + TLM_T_DATA_OFFSET), dbytes = tlm_rd64(e + TLM_T_DATA_BYTES);
    uint64_t soff = tlm_rd64(e + TLM_T_SCALE_OFFSET), sbytes = tlm_rd64(e + TLM_T_SCALE_BYTES);

    if (want_role) {
        if (role != want_role || layer != want_layer)
            return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u is %s of layer %u, expected %s of layer %u", i,
                            tlm_role_name(role), layer, tlm_role_name(want_role), want_layer);
    } else if ((role != TLM_ROLE_ROPE_REAL && role != TLM_ROLE_ROPE_IMAG) || layer != 0) {
        return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u: role %u is not an auxiliary tensor", i, role);
    }
    uint32_t want_rows = 0, want_cols = 0;
    tlm_role_shape(hp, role, &want_rows, &want_cols);
    if (rows != want_rows || cols != want_cols)
        return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): shape %u x %u, expected %u x %u", i,
                        tlm_role_name(role), rows, cols, want_rows, want_cols);
    const tlm_wtype_traits *tr = tlm_wtype_get(wtype);
    if (!tr) return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): unknown weight type %u", i, tlm_role_name(role), wtype);
    if (role_needs_f32(role) && wtype != TLM_WTYPE_F32)
        return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s) must be f32", i, tlm_role_name(role));
    if (skind > TLM_SCALE_GROUP || !(tr->scale_kinds & (1u << skind)))
        return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): scale kind %u not allowed for type %s", i,
                        tlm_role_name(role), skind, tr->name);
    if ((skind == TLM_SCALE_GROUP) ? (group == 0 || group > cols) : (group != 0))
        return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): bad group size %u", i, tlm_role_name(role), group);
    if (!all_zero(e + TLM_T_RESERVED, 8))
        return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): reserved fields not zero", i, tlm_role_name(role));
    if (wtype == TLM_WTYPE_TS ? param > cols : param != 0)
        return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): type parameter %u not valid for type %s", i,
                        tlm_role_name(role), param, tr->name);
    if (cols > tr->max_cols)
        return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): %u columns, type %s allows at most %u", i,
                        tlm_role_name(role), cols, tr->name, tr->max_cols);

    /* Data block: exact size, aligned, inside the image. rows * row_bytes
     * cannot overflow 64 bits (both < 2^32 * 4). */
    uint64_t row_bytes = tlm_wtype_row_bytes(wtype, cols, param);
    uint64_t want_bytes = row_bytes * rows;
    if (dbytes != want_bytes)
        return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): %llu data bytes, expected %llu", i, tlm_role_name(role),
                        (unsigned long long)dbytes, (unsigned long long)want_bytes);
    if (doff % TLM_ALIGN)
        return tlm_fail(err, TLM_ERR_RANGE, "tensor %u (%s): data offset %llu not aligned to %u", i,
                        tlm_role_name(role), (unsigned long long)doff, TLM_ALIGN);
    if (!in_bounds(doff, dbytes, total))
        return tlm_fail(err, TLM_ERR_RANGE, "tensor %u (%s): data [%llu, +%llu) past the image end %llu", i,
                        tlm_role_name(role), (unsigned long long)doff, (unsigned long long)dbytes,
                        (unsigned long long)total);

    uint64_t n_scales = 0;
    if (skind == TLM_SCALE_TENSOR) n_scales = 1;
    else if (skind == TLM_SCALE_ROW) n_scales = rows;
    else if (skind == TLM_SCALE_GROUP) n_scales = (uint64_t)rows * ((cols + (uint64_t)group - 1u) / group);
    if (sbytes != n_scales * 4u)
        return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): %llu scale bytes, expected %llu", i, tlm_role_name(role),
                        (unsigned long long)sbytes, (unsigned long long)(n_scales * 4u));
    if (n_scales == 0) {
        if (soff != 0) return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): scale offset without scales", i, tlm_role_name(role));
    } else {
        if (soff % TLM_ALIGN)
            return tlm_fail(err, TLM_ERR_RANGE, "tensor %u (%s): scale offset not aligned", i, tlm_role_name(role));
        if (!in_bounds(soff, sbytes, total))
            return tlm_fail(err, TLM_ERR_RANGE, "tensor %u (%s): scales past the image end", i, tlm_role_name(role));
    }
    return TLM_OK;
}

/* Packed contents: scales finite, every row decodable (no reserved codes,
 * zero padding). Runs after all entries passed check_tensor. */
static tlm_status check_contents(const tlm_model *m, uint32_t i, tlm_error *err)
{
    tlm_tensor t;
    tlm_model_tensor_at(m, i, &t);
    const tlm_wtype_traits *tr = tlm_wtype_get(t.wtype);
    const uint8_t *e = m->table + (size_t)i * TLM_TENSOR_ENTRY_BYTES;
    const uint64_t n_scales = tlm_rd64(e + TLM_T_SCALE_BYTES) / 4u;
    for (uint64_t k = 0; k < n_scales; k++) {
        const float s = tlm_rdf32((const uint8_t *)(const void *)(t.scales + k));
        if (!isfinite(s))
            return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): scale %llu is not finite", i, tlm_role_name(t.role),
                            (unsigned long long)k);
    }
    if (tr->check_rows) {
        const uint32_t bad = tr->check_rows(&t);
        if (bad != UINT32_MAX)
            return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u (%s): row %u holds invalid %s data", i,
                            tlm_role_name(t.role), bad, tr->name);
    }
    return TLM_OK;
}

/* Byte-wise lexicographic comparison, shorter prefix first (strcmp order). */
static int bytes_cmp(const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
    size_t n = na < nb ? na : nb;
    int c = memcmp(a, b, n);
    if (c) return c;
    return (na > nb) - (na < nb);
}

static tlm_status check_vocab(tlm_model *m, uint64_t total, uint64_t voff, uint64_t vbytes, tlm_error *err)
{
    const uint32_t V = m->hp.vocab_size;
    const uint64_t fixed = 12ull * V + 4u;
    if (voff % 4u) return tlm_fail(err, TLM_ERR_VOCAB, "tokenizer offset %llu not 4-byte aligned", (unsigned long long)voff);
    if (!in_bounds(voff, vbytes, total))
        return tlm_fail(err, TLM_ERR_RANGE, "tokenizer section [%llu, +%llu) past the image end %llu",
                        (unsigned long long)voff, (unsigned long long)vbytes, (unsigned long long)total);
    if (vbytes < fixed)
        return tlm_fail(err, TLM_ERR_VOCAB, "tokenizer section of %llu bytes cannot hold %u tokens",
                        (unsigned long long)vbytes, V);
    const uint8_t *base = m->image + voff;
    const uint64_t pool_bytes = vbytes - fixed;
    m->vocab_scores = (const float *)(const void *)base;
    m->vocab_off = (const uint32_t *)(const void *)(base + 4ull * V);
    m->vocab_sorted = (const uint32_t *)(const void *)(base + 8ull * V + 4u);
    m->vocab_pool = base + fixed;

    if (m->vocab_off[0] != 0) return tlm_fail(err, TLM_ERR_VOCAB, "first token string does not start the pool");
    for (uint32_t i = 0; i < V; i++) {
        uint32_t a = m->vocab_off[i], b = m->vocab_off[i + 1];
        if (b <= a || b > pool_bytes)
            return tlm_fail(err, TLM_ERR_VOCAB, "token %u: string bounds [%u, %u) outside the pool of %llu bytes", i, a, b,
                            (unsigned long long)pool_bytes);
        if (m->vocab_pool[b - 1u] != 0) return tlm_fail(err, TLM_ERR_VOCAB, "token %u: string not NUL-terminated", i);
        if (b - a - 1u > m->max_token_length)
            return tlm_fail(err, TLM_ERR_VOCAB, "token %u: %u bytes, longer than max_token_length %u", i, b - a - 1u,
                            m->max_token_length);
        if (!isfinite(m->vocab_scores[i])) return tlm_fail(err, TLM_ERR_VOCAB, "token %u: score not finite", i);
    }
    if (m->vocab_off[V] != pool_bytes)
        return tlm_fail(err, TLM_ERR_VOCAB, "string pool has %llu bytes, offsets end at %u", (unsigned long long)pool_bytes,
                        m->vocab_off[V]);
    /* Strictly increasing (string, id) keys over V ids in range: a permutation. */
    for (uint32_t k = 0; k < V; k++) {
        uint32_t id = m->vocab_sorted[k];
        if (id >= V) return tlm_fail(err, TLM_ERR_VOCAB, "sorted index %u: token id %u out of range", k, id);
        if (k) {
            uint32_t p = m->vocab_sorted[k - 1];
            int c = bytes_cmp(m->vocab_pool + m->vocab_off[p], m->vocab_off[p + 1] - m->vocab_off[p] - 1u,
                              m->vocab_pool + m->vocab_off[id], m->vocab_off[id + 1] - m->vocab_off[id] - 1u);
            if (c > 0 || (c == 0 && p >= id))
                return tlm_fail(err, TLM_ERR_VOCAB, "sorted index not in order at %u", k);
        }
    }
    return TLM_OK;
}

tlm_status tlm_model_open(tlm_model *model, const void *image, size_t bytes, tlm_error *err)
{
    tlm_error_clear(err);
    if (!model || !image) return tlm_fail(err, TLM_ERR_ARG, "no model or no image buffer");
    if ((uintptr_t)image % TLM_ALIGN)
        return tlm_fail(err, TLM_ERR_ARG, "image buffer must be aligned to %u bytes", TLM_ALIGN);
    const uint8_t *p = (const uint8_t *)image;
    if (bytes < TLM_HEADER_BYTES)
        return tlm_fail(err, TLM_ERR_TRUNCATED, "image of %llu bytes is shorter than its %u-byte header",
                        (unsigned long long)bytes, TLM_HEADER_BYTES);
    if (memcmp(p + TLM_H_MAGIC, TLM_MAGIC, 4) != 0)
        return tlm_fail(err, TLM_ERR_MAGIC, "not a tritlm model image (magic is not \"TRLM\")");
    uint32_t version = tlm_rd32(p + TLM_H_VERSION);
    if (version != TLM_FORMAT_VERSION)
        return tlm_fail(err, TLM_ERR_VERSION, "format version %u; this build reads version %u", version, TLM_FORMAT_VERSION);
    if (tlm_rd32(p + TLM_H_HEADER_BYTES) != TLM_HEADER_BYTES)
        return tlm_fail(err, TLM_ERR_HPARAM, "header size %u, expected %u", tlm_rd32(p + TLM_H_HEADER_BYTES), TLM_HEADER_BYTES);
    uint32_t flags = tlm_rd32(p + TLM_H_FLAGS);
    if (flags & ~TLM_FLAGS_KNOWN) return tlm_fail(err, TLM_ERR_UNSUPPORTED, "unknown header flags (value %u)", flags);
    uint64_t total = tlm_rd64(p + TLM_H_IMAGE_BYTES);
    if (total > bytes)
        return tlm_fail(err, TLM_ERR_TRUNCATED, "image declares %llu bytes but only %llu are present",
                        (unsigned long long)total, (unsigned long long)bytes);
    if (total < TLM_HEADER_BYTES) return tlm_fail(err, TLM_ERR_RANGE, "image length %llu shorter than the header", (unsigned long long)total);
    if (!all_zero(p + TLM_H_RESERVED, TLM_HEADER_BYTES - TLM_H_RESERVED))
        return tlm_fail(err, TLM_ERR_HPARAM, "reserved header bytes not zero");

    static const uint8_t zero4[4] = {0, 0, 0, 0};
    uint32_t crc = tlm_crc32(0, p, TLM_H_CRC32);
    crc = tlm_crc32(crc, zero4, 4);
    crc = tlm_crc32(crc, p + TLM_H_CRC32 + 4, (size_t)total - TLM_H_CRC32 - 4);
    if (crc != tlm_rd32(p + TLM_H_CRC32)) return tlm_fail(err, TLM_ERR_CHECKSUM, "image checksum mismatch: the file is damaged");

    tlm_model m;
    memset(&m, 0, sizeof m);
    m.image = p;
    m.image_bytes = (size_t)total;
    m.hp.dim = tlm_rd32(p + TLM_H_DIM);
    m.hp.hidden_dim = tlm_rd32(p + TLM_H_HIDDEN_DIM);
    m.hp.n_layers = tlm_rd32(p + TLM_H_N_LAYERS);
    m.hp.n_heads = tlm_rd32(p + TLM_H_N_HEADS);
    m.hp.n_kv_heads = tlm_rd32(p + TLM_H_N_KV_HEADS);
    m.hp.vocab_size = tlm_rd32(p + TLM_H_VOCAB_SIZE);
    m.hp.seq_len = tlm_rd32(p + TLM_H_SEQ_LEN);
    m.hp.rope_theta = tlm_rdf32(p + TLM_H_ROPE_THETA);
    m.hp.norm_eps = tlm_rdf32(p + TLM_H_NORM_EPS);
    m.hp.shared_classifier = (flags & TLM_FLAG_SHARED_CLASSIFIER) != 0;
    tlm_status st = tlm_hparams_check(&m.hp, err);
    if (st) return st;

    m.max_token_length = tlm_rd32(p + TLM_H_MAX_TOKEN_LEN);
    m.bos_id = tlm_rd32(p + TLM_H_BOS_ID);
    m.eos_id = tlm_rd32(p + TLM_H_EOS_ID);
    if (m.max_token_length > MAX_TOKEN_BYTES)
        return tlm_fail(err, TLM_ERR_VOCAB, "max_token_length %u exceeds %u", m.max_token_length, MAX_TOKEN_BYTES);
    if (m.bos_id >= m.hp.vocab_size || m.eos_id >= m.hp.vocab_size)
        return tlm_fail(err, TLM_ERR_VOCAB, "BOS %u or EOS %u outside the vocabulary of %u", m.bos_id, m.eos_id, m.hp.vocab_size);

    m.n_tensors = tlm_rd32(p + TLM_H_N_TENSORS);
    uint32_t need = required_tensors(&m.hp);
    if (m.n_tensors < need || m.n_tensors > need + MAX_AUX_TENSORS)
        return tlm_fail(err, TLM_ERR_TENSOR, "%u tensors; this model needs %u (plus at most %u auxiliary)", m.n_tensors, need,
                        MAX_AUX_TENSORS);
    if (tlm_rd32(p + TLM_H_TENSOR_ENTRY_BYTES) != TLM_TENSOR_ENTRY_BYTES)
        return tlm_fail(err, TLM_ERR_TENSOR, "tensor entry size %u, expected %u", tlm_rd32(p + TLM_H_TENSOR_ENTRY_BYTES),
                        TLM_TENSOR_ENTRY_BYTES);
    uint64_t toff = tlm_rd64(p + TLM_H_TENSOR_TABLE_OFFSET);
    if (toff < TLM_HEADER_BYTES || toff % 8u || !in_bounds(toff, (uint64_t)m.n_tensors * TLM_TENSOR_ENTRY_BYTES, total))
        return tlm_fail(err, TLM_ERR_RANGE, "tensor table at %llu (%u entries) outside the image of %llu bytes",
                        (unsigned long long)toff, m.n_tensors, (unsigned long long)total);
    m.table = p + toff;

    uint32_t aux_seen = 0;
    for (uint32_t i = 0; i < m.n_tensors; i++) {
        const uint8_t *e = m.table + (size_t)i * TLM_TENSOR_ENTRY_BYTES;
        uint32_t role = 0, layer = 0;
        if (i < need) canonical_entry(&m.hp, i, &role, &layer);
        st = check_tensor(&m.hp, total, i, e, role, layer, err);
        if (st) return st;
        if (i >= need) {
            uint32_t bit = 1u << tlm_rd16(e + TLM_T_ROLE);
            if (aux_seen & bit) return tlm_fail(err, TLM_ERR_TENSOR, "tensor %u: auxiliary role repeated", i);
            aux_seen |= bit;
        }
    }

    for (uint32_t i = 0; i < m.n_tensors; i++) {
        st = check_contents(&m, i, err);
        if (st) return st;
    }

    st = check_vocab(&m, total, tlm_rd64(p + TLM_H_VOCAB_OFFSET), tlm_rd64(p + TLM_H_VOCAB_BYTES), err);
    if (st) return st;
    *model = m;
    return TLM_OK;
}

void tlm_model_tensor_at(const tlm_model *m, uint32_t i, tlm_tensor *t)
{
    const uint8_t *e = m->table + (size_t)i * TLM_TENSOR_ENTRY_BYTES;
    t->role = tlm_rd16(e + TLM_T_ROLE);
    t->layer = tlm_rd16(e + TLM_T_LAYER);
    t->wtype = tlm_rd16(e + TLM_T_WTYPE);
    t->scale_kind = tlm_rd16(e + TLM_T_SCALE_KIND);
    t->rows = tlm_rd32(e + TLM_T_ROWS);
    t->cols = tlm_rd32(e + TLM_T_COLS);
    t->group = tlm_rd32(e + TLM_T_GROUP);
    t->param = tlm_rd32(e + TLM_T_PARAM);
    t->data = m->image + tlm_rd64(e + TLM_T_DATA_OFFSET);
    t->data_bytes = tlm_rd64(e + TLM_T_DATA_BYTES);
    t->scales = tlm_rd64(e + TLM_T_SCALE_BYTES)
                    ? (const float *)(const void *)(m->image + tlm_rd64(e + TLM_T_SCALE_OFFSET))
                    : NULL;
}

int tlm_model_tensor(const tlm_model *m, tlm_role role, uint32_t layer, tlm_tensor *out)
{
    uint32_t idx;
    if (tlm_model_tensor_index(m, role, layer, &idx)) return -1;
    tlm_model_tensor_at(m, idx, out);
    return 0;
}

int tlm_model_tensor_index(const tlm_model *m, tlm_role role, uint32_t layer, uint32_t *index)
{
    const uint32_t L = m->hp.n_layers;
    uint32_t idx;
    if (role == TLM_ROLE_TOK_EMBED) {
        idx = 0;
    } else if (role >= TLM_ROLE_ATTN_NORM && role <= TLM_ROLE_W3) {
        if (layer >= L) return -1;
        idx = 1u + layer * TLM_LAYER_ROLES + (uint32_t)(role - TLM_ROLE_ATTN_NORM);
    } else if (role == TLM_ROLE_FINAL_NORM) {
        idx = 1u + L * TLM_LAYER_ROLES;
    } else if (role == TLM_ROLE_CLASSIFIER) {
        idx = m->hp.shared_classifier ? 0u : 2u + L * TLM_LAYER_ROLES;
    } else {
        for (idx = required_tensors(&m->hp); idx < m->n_tensors; idx++)
            if (tlm_rd16(m->table + (size_t)idx * TLM_TENSOR_ENTRY_BYTES + TLM_T_ROLE) == (uint16_t)role) break;
        if (idx >= m->n_tensors) return -1;
    }
    *index = idx;
    return 0;
}
