/* The federated update message (include/tritlm/fed.h, docs/FORMAT.md). */
#include <math.h>
#include <string.h>

#include "le.h"
#include "tritlm/fed.h"


/* header fields */
enum { H_MAGIC = 0, H_VERSION = 4, H_HEADER = 6, H_TOTAL = 8, H_CRC = 12, H_ROUND = 16, H_CLIENT = 20,
       H_BASE = 24, H_EXAMPLES = 28, H_ENTRIES = 32, H_RESERVED = 36 };
/* entry fields; a low-rank entry keeps its rank in E_RANK and its rows in
 * E_ROWS, bytes every other encoding keeps zero (E_RESERVED) */
enum { E_ROLE = 0, E_LAYER = 2, E_ENC = 4, E_RESERVED = 5, E_RANK = 5, E_ROWS = 6, E_COUNT = 8, E_SCALE = 12 };

uint32_t tlm_fed_image_id(const void *image, size_t bytes) { return tlm_crc32(0, image, bytes); }

uint32_t tlm_fed_model_id(const tlm_model *m) { return tlm_fed_image_id(m->image, m->image_bytes); }

static size_t payload_bytes(uint32_t enc, uint32_t count)
{
    switch (enc) {
    case TLM_FED_F32: return (size_t)count * 4u;
    case TLM_FED_I8: return count;
    case TLM_FED_T2: return ((size_t)count + 3u) / 4u;
    case TLM_FED_MASKED: return (size_t)count * 4u;
    default: return 0;
    }
}

size_t tlm_fed_entry_bytes(uint32_t enc, uint32_t count)
{
    if (enc > TLM_FED_MASKED) return 0;
    const size_t p = payload_bytes(enc, count);
    if (p > SIZE_MAX - TLM_FED_ENTRY_BYTES - 3u) return 0;
    return TLM_FED_ENTRY_BYTES + ((p + 3u) & ~(size_t)3u);
}

/* A low-rank entry's payload: B's scale, B's codes, A's codes. */
static size_t lowrank_payload(uint32_t rows, uint32_t cols, uint32_t rank)
{
    return 4u + (size_t)rank * ((size_t)rows + cols);
}

size_t tlm_fed_lowrank_entry_bytes(uint32_t rows, uint32_t cols, uint32_t rank)
{
    if (rank == 0 || rank > 255u || rows == 0 || rows > 0xFFFFu || cols == 0 || rank > rows || rank > cols ||
        (uint64_t)rows * cols > 0xFFFFFFFFu)
        return 0;
    return TLM_FED_ENTRY_BYTES + ((lowrank_payload(rows, cols, rank) + 3u) & ~(size_t)3u);
}

/* The size of the entry at e, from its head (0 if its fields are out of range). */
static size_t entry_size(const uint8_t *e)
{
    const uint32_t enc = e[E_ENC], count = tlm_rd32(e + E_COUNT);
    if (enc != TLM_FED_LOWRANK_I8) return tlm_fed_entry_bytes(enc, count);
    const uint32_t rank = e[E_RANK], rows = tlm_rd16(e + E_ROWS);
    if (rows == 0 || count % rows) return 0;
    return tlm_fed_lowrank_entry_bytes(rows, count / rows, rank);
}

/* The checksum of a message of n bytes (its CRC field read as zero). */
static uint32_t message_crc(const uint8_t *b, size_t n)
{
    static const uint8_t zero[4] = {0};
    uint32_t c = tlm_crc32(0, b, H_CRC);
    c = tlm_crc32(c, zero, 4);
    return tlm_crc32(c, b + H_CRC + 4, n - H_CRC - 4);
}

tlm_status tlm_fed_begin(tlm_fed_writer *w, void *buf, size_t cap, const tlm_fed_header *h, tlm_error *err)
{
    memset(w, 0, sizeof *w);
    if (!buf || !h) return tlm_fail(err, TLM_ERR_ARG, "federated update: no buffer or header");
    if (cap < TLM_FED_HEADER_BYTES)
        return tlm_fail(err, TLM_ERR_TRUNCATED, "federated update: the buffer holds %u bytes, the header needs %u",
                        (unsigned)cap, TLM_FED_HEADER_BYTES);
    uint8_t *b = buf;
    memset(b, 0, TLM_FED_HEADER_BYTES);
    memcpy(b + H_MAGIC, TLM_FED_MAGIC, 4);
    tlm_wr16(b + H_VERSION, TLM_FED_VERSION);
    tlm_wr16(b + H_HEADER, TLM_FED_HEADER_BYTES);
    tlm_wr32(b + H_ROUND, h->round);
    tlm_wr32(b + H_CLIENT, h->client);
    tlm_wr32(b + H_BASE, h->base_crc);
    tlm_wr32(b + H_EXAMPLES, h->n_examples);
    w->buf = b;
    w->cap = cap;
    w->len = TLM_FED_HEADER_BYTES;
    return TLM_OK;
}

/* 1 with probability p in [0, 1] (p's resolution: 2^-32). */
static int bernoulli(tlm_rand *rng, float p)
{
    if (!(p > 0.0f)) return 0;
    if (p >= 1.0f) return 1;
    const uint32_t thr = (uint32_t)((double)p * 4294967296.0);
    return tlm_rand_u32(rng) < thr;
}

/* Room for an entry of `count` values with encoding enc: its size in *eb. */
static tlm_status entry_room(const tlm_fed_writer *w, uint32_t enc, uint32_t count, size_t *eb, tlm_error *err)
{
    *eb = tlm_fed_entry_bytes(enc, count);
    if (!*eb) return tlm_fail(err, TLM_ERR_OVERFLOW, "federated update: %u values do not fit a message", (unsigned)count);
    if (*eb > w->cap - w->len)
        return tlm_fail(err, TLM_ERR_TRUNCATED, "federated update: %u more bytes needed than the buffer has",
                        (unsigned)(*eb - (w->cap - w->len)));
    return TLM_OK;
}

/* The entry's head written (scale 0) and its eb bytes zeroed after it: the entry's start. */
static uint8_t *entry_head(tlm_fed_writer *w, tlm_role role, uint32_t layer, uint32_t enc, uint32_t count, size_t eb)
{
    uint8_t *e = w->buf + w->len;
    memset(e, 0, eb);
    tlm_wr16(e + E_ROLE, (uint16_t)role);
    tlm_wr16(e + E_LAYER, (uint16_t)layer);
    e[E_ENC] = (uint8_t)enc;
    tlm_wr32(e + E_COUNT, count);
    return e;
}

tlm_status tlm_fed_add_masked(tlm_fed_writer *w, tlm_role role, uint32_t layer, const uint32_t *share, uint32_t count,
                              float grid, tlm_error *err)
{
    if (!w->buf) return tlm_fail(err, TLM_ERR_ARG, "federated update: tlm_fed_begin first");
    if (role < TLM_ROLE_TOK_EMBED || role > TLM_ROLE_CLASSIFIER || layer > 0xFFFFu || count == 0 || !share ||
        !(grid > 0.0f && grid <= 3.4e38f))
        return tlm_fail(err, TLM_ERR_ARG, "federated update: bad masked entry (role %u, layer %u, %u values)",
                        (unsigned)role, (unsigned)layer, (unsigned)count);
    size_t eb;
    const tlm_status st = entry_room(w, TLM_FED_MASKED, count, &eb, err);
    if (st) return st;
    uint8_t *e = entry_head(w, role, layer, TLM_FED_MASKED, count, eb), *d = e + TLM_FED_ENTRY_BYTES;
    tlm_wrf32(e + E_SCALE, grid);
    for (uint32_t i = 0; i < count; i++) tlm_wr32(d + 4u * i, share[i]);
    w->len += eb;
    w->n_entries++;
    return TLM_OK;
}

/* Largest |x[i]|, or -1 if a value is not finite. */
static float finite_absmax(const float *x, uint32_t n)
{
    float amax = 0.0f;
    for (uint32_t i = 0; i < n; i++) {
        const float a = fabsf(x[i]);
        if (!(a <= 3.4e38f)) return -1.0f;
        if (a > amax) amax = a;
    }
    return amax;
}

/* x as int8 codes q with x ~ q * scale, scale = amax / 127, each rounded
 * down or up with the odds that keep its expectation at x; returns scale. */
static float int8_stochastic(uint8_t *d, const float *x, uint32_t n, float amax, tlm_rand *rng)
{
    const float scale = amax / 127.0f;
    for (uint32_t i = 0; i < n && scale > 0.0f; i++) {
        /* v in [-127, 127] (rounding of the division may step a hair past
         * it: clamp) */
        float v = x[i] / scale;
        v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
        const float lo = floorf(v);
        int q = (int)lo + bernoulli(rng, v - lo);
        q = q > 127 ? 127 : (q < -127 ? -127 : q);
        d[i] = (uint8_t)(int8_t)q;
    }
    return scale;
}

tlm_status tlm_fed_add_lowrank(tlm_fed_writer *w, tlm_role role, uint32_t layer, const float *b, const float *a,
                               uint32_t rows, uint32_t cols, uint32_t rank, tlm_rand *rng, tlm_error *err)
{
    if (!w->buf) return tlm_fail(err, TLM_ERR_ARG, "federated update: tlm_fed_begin first");
    if (role < TLM_ROLE_TOK_EMBED || role > TLM_ROLE_CLASSIFIER || layer > 0xFFFFu || !b || !a || !rng)
        return tlm_fail(err, TLM_ERR_ARG, "federated update: bad low-rank entry (role %u, layer %u)", (unsigned)role,
                        (unsigned)layer);
    const size_t eb = tlm_fed_lowrank_entry_bytes(rows, cols, rank);
    if (!eb)
        return tlm_fail(err, TLM_ERR_ARG, "federated update: a %u x %u matrix does not take rank %u (1 to 255, at most "
                                          "its smaller side; rows below 65536)", (unsigned)rows, (unsigned)cols, (unsigned)rank);
    if (eb > w->cap - w->len)
        return tlm_fail(err, TLM_ERR_TRUNCATED, "federated update: %u more bytes needed than the buffer has",
                        (unsigned)(eb - (w->cap - w->len)));
    const float mb = finite_absmax(b, rows * rank), ma = finite_absmax(a, rank * cols);
    if (mb < 0.0f || ma < 0.0f) return tlm_fail(err, TLM_ERR_ARG, "federated update: a factor holds a value that is not finite");
    uint8_t *e = entry_head(w, role, layer, TLM_FED_LOWRANK_I8, rows * cols, eb), *d = e + TLM_FED_ENTRY_BYTES;
    e[E_RANK] = (uint8_t)rank;
    tlm_wr16(e + E_ROWS, (uint16_t)rows);
    tlm_wrf32(d, int8_stochastic(d + 4, b, rows * rank, mb, rng));
    tlm_wrf32(e + E_SCALE, int8_stochastic(d + 4 + (size_t)rows * rank, a, rank * cols, ma, rng));
    if (rng->failed) {
        memset(e, 0, eb);
        return tlm_fail(err, TLM_ERR_RNG, "federated update: the random source failed");
    }
    w->len += eb;
    w->n_entries++;
    return TLM_OK;
}

tlm_status tlm_fed_add(tlm_fed_writer *w, tlm_role role, uint32_t layer, tlm_fed_enc enc, const float *delta,
                       uint32_t count, tlm_rand *rng, tlm_error *err)
{
    if (!w->buf) return tlm_fail(err, TLM_ERR_ARG, "federated update: tlm_fed_begin first");
    if ((uint32_t)enc > TLM_FED_T2)
        return tlm_fail(err, TLM_ERR_ARG, "federated update: unknown encoding %u (masked shares: tlm_fed_add_masked)",
                        (unsigned)enc);
    if (role < TLM_ROLE_TOK_EMBED || role > TLM_ROLE_CLASSIFIER || layer > 0xFFFFu || count == 0 || !delta)
        return tlm_fail(err, TLM_ERR_ARG, "federated update: bad entry (role %u, layer %u, %u values)", (unsigned)role,
                        (unsigned)layer, (unsigned)count);
    if (enc != TLM_FED_F32 && !rng)
        return tlm_fail(err, TLM_ERR_ARG, "federated update: int8 and ternary entries need a random source");
    size_t eb;
    const tlm_status st = entry_room(w, (uint32_t)enc, count, &eb, err);
    if (st) return st;
    const float amax = finite_absmax(delta, count);
    if (amax < 0.0f) return tlm_fail(err, TLM_ERR_ARG, "federated update: a value is not finite");
    uint8_t *e = entry_head(w, role, layer, (uint32_t)enc, count, eb), *d = e + TLM_FED_ENTRY_BYTES;
    float scale = 0.0f;
    if (enc == TLM_FED_F32) {
        for (uint32_t i = 0; i < count; i++) tlm_wrf32(d + 4u * i, delta[i]);
    } else if (enc == TLM_FED_I8) {
        scale = int8_stochastic(d, delta, count, amax, rng);
    } else {
        scale = amax;
        for (uint32_t i = 0; i < count && scale > 0.0f; i++) {
            /* +-scale with probability |x| / scale, else 0: expectation x */
            const float p = fabsf(delta[i]) / scale;
            const uint32_t code = bernoulli(rng, p) ? (delta[i] > 0.0f ? 1u : 2u) : 0u;
            d[i >> 2] = (uint8_t)(d[i >> 2] | (code << ((i & 3u) * 2u)));
        }
    }
    tlm_wrf32(e + E_SCALE, scale);
    if (rng && rng->failed) {
        memset(e, 0, eb);
        return tlm_fail(err, TLM_ERR_RNG, "federated update: the random source failed");
    }
    w->len += eb;
    w->n_entries++;
    return TLM_OK;
}

tlm_status tlm_fed_finish(tlm_fed_writer *w, size_t *bytes, tlm_error *err)
{
    if (!w->buf) return tlm_fail(err, TLM_ERR_ARG, "federated update: tlm_fed_begin first");
    if (w->len > 0xFFFFFFFFu) return tlm_fail(err, TLM_ERR_OVERFLOW, "federated update: larger than 4 GB");
    tlm_wr32(w->buf + H_TOTAL, (uint32_t)w->len);
    tlm_wr32(w->buf + H_ENTRIES, w->n_entries);
    tlm_wr32(w->buf + H_CRC, message_crc(w->buf, w->len));
    if (bytes) *bytes = w->len;
    return TLM_OK;
}

static int finite_f32(const uint8_t *p)
{
    const float f = tlm_rdf32(p);
    return f == f && fabsf(f) <= 3.4e38f;
}

tlm_status tlm_fed_validate(const void *buf, size_t n, const tlm_model *m, tlm_fed_info *info, tlm_error *err)
{
    return tlm_fed_validate_for(buf, n, m, m ? tlm_fed_model_id(m) : 0u, info, err);
}

tlm_status tlm_fed_validate_for(const void *buf, size_t n, const tlm_model *m, uint32_t model_id, tlm_fed_info *info,
                                tlm_error *err)
{
    const uint8_t *b = buf;
    if (!b || n < TLM_FED_HEADER_BYTES)
        return tlm_fail(err, TLM_ERR_TRUNCATED, "federated update: %u bytes, shorter than its header", (unsigned)n);
    if (memcmp(b + H_MAGIC, TLM_FED_MAGIC, 4)) return tlm_fail(err, TLM_ERR_MAGIC, "federated update: not a tritlm update");
    if (tlm_rd16(b + H_VERSION) != TLM_FED_VERSION)
        return tlm_fail(err, TLM_ERR_VERSION, "federated update: version %u (this build reads %u)",
                        (unsigned)tlm_rd16(b + H_VERSION), TLM_FED_VERSION);
    if (tlm_rd16(b + H_HEADER) != TLM_FED_HEADER_BYTES || tlm_rd32(b + H_RESERVED) != 0)
        return tlm_fail(err, TLM_ERR_TENSOR, "federated update: header fields this version does not define");
    const uint32_t total = tlm_rd32(b + H_TOTAL);
    if (total != n)
        return tlm_fail(err, TLM_ERR_TRUNCATED, "federated update: it declares %u bytes, %u arrived", (unsigned)total,
                        (unsigned)n);
    if (tlm_rd32(b + H_CRC) != message_crc(b, n))
        return tlm_fail(err, TLM_ERR_CHECKSUM, "federated update: checksum mismatch: the message is damaged");
    const uint32_t ne = tlm_rd32(b + H_ENTRIES);
    if (ne > (n - TLM_FED_HEADER_BYTES) / TLM_FED_ENTRY_BYTES)
        return tlm_fail(err, TLM_ERR_RANGE, "federated update: %u entries do not fit %u bytes", (unsigned)ne, (unsigned)n);
    const uint32_t base = tlm_rd32(b + H_BASE);
    if (m && base != model_id)
        return tlm_fail(err, TLM_ERR_ARG, "federated update: made from another model (id %u, this one is %u)",
                        (unsigned)base, (unsigned)model_id);
    size_t at = TLM_FED_HEADER_BYTES;
    for (uint32_t i = 0; i < ne; i++) {
        if (n - at < TLM_FED_ENTRY_BYTES)
            return tlm_fail(err, TLM_ERR_RANGE, "federated update: entry %u runs past the end", (unsigned)i);
        const uint8_t *e = b + at;
        const uint32_t role = tlm_rd16(e + E_ROLE), layer = tlm_rd16(e + E_LAYER), enc = e[E_ENC];
        const uint32_t count = tlm_rd32(e + E_COUNT);
        if (enc != TLM_FED_LOWRANK_I8 && (e[E_RESERVED] | e[E_RESERVED + 1] | e[E_RESERVED + 2]))
            return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: reserved bytes set", (unsigned)i);
        if (role < TLM_ROLE_TOK_EMBED || role > TLM_ROLE_CLASSIFIER || count == 0)
            return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: role %u with %u values", (unsigned)i,
                            (unsigned)role, (unsigned)count);
        const size_t eb = entry_size(e);
        if (!eb)
            return tlm_fail(err, TLM_ERR_TENSOR, enc == TLM_FED_LOWRANK_I8
                                                     ? "federated update: entry %u: a low-rank shape that does not fit its %u values"
                                                     : "federated update: entry %u: unknown encoding %u",
                            (unsigned)i, enc == TLM_FED_LOWRANK_I8 ? (unsigned)count : (unsigned)enc);
        if (eb > n - at)
            return tlm_fail(err, TLM_ERR_RANGE, "federated update: entry %u runs past the end", (unsigned)i);
        const float scale = tlm_rdf32(e + E_SCALE);
        if (!(scale >= 0.0f && scale <= 3.4e38f) || (enc == TLM_FED_F32 && scale != 0.0f) ||
            (enc == TLM_FED_MASKED && scale == 0.0f))
            return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: bad scale", (unsigned)i);
        const uint8_t *d = e + TLM_FED_ENTRY_BYTES;
        const uint32_t rows = tlm_rd16(e + E_ROWS);
        const size_t pb = enc == TLM_FED_LOWRANK_I8 ? lowrank_payload(rows, count / rows, e[E_RANK]) : payload_bytes(enc, count);
        if (enc == TLM_FED_LOWRANK_I8) {
            const float sb = tlm_rdf32(d);
            /* the largest decoded value, 255 * 127 * 127 * sb * sa, finite */
            if (!(sb >= 0.0f && sb <= 3.4e38f) || (double)sb * scale * 4112895.0 > 3.4e38)
                return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: bad scale", (unsigned)i);
            for (size_t k = 4; k < pb; k++)
                if (d[k] == 0x80u)
                    return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: int8 value -128", (unsigned)i);
        } else if (enc == TLM_FED_F32) {
            for (uint32_t k = 0; k < count; k++)
                if (!finite_f32(d + 4u * k))
                    return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: value %u is not finite", (unsigned)i,
                                    (unsigned)k);
        } else if (enc == TLM_FED_I8) {
            for (uint32_t k = 0; k < count; k++)
                if (d[k] == 0x80u)
                    return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: int8 value -128", (unsigned)i);
        } else if (enc == TLM_FED_MASKED) {
            /* every 32-bit pattern is a possible share */
        } else {
            for (uint32_t k = 0; k < count; k++)
                if (((d[k >> 2] >> ((k & 3u) * 2u)) & 3u) == 3u)
                    return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: ternary code 3", (unsigned)i);
            /* the last byte's unused codes are zero */
            if (count & 3u && d[pb - 1] >> ((count & 3u) * 2u))
                return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: padding set", (unsigned)i);
        }
        for (size_t k = pb; k < eb - TLM_FED_ENTRY_BYTES; k++)
            if (d[k]) return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: padding set", (unsigned)i);
        if (m) {
            tlm_tensor t;
            if (tlm_model_tensor(m, (tlm_role)role, layer, &t) != 0)
                return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: the model has no tensor role %u layer %u",
                                (unsigned)i, (unsigned)role, (unsigned)layer);
            if ((uint64_t)t.rows * t.cols != count)
                return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: %u values for a tensor of %u x %u",
                                (unsigned)i, (unsigned)count, (unsigned)t.rows, (unsigned)t.cols);
            if (enc == TLM_FED_LOWRANK_I8 && rows != t.rows)
                return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entry %u: factors of %u rows for a tensor of %u x %u",
                                (unsigned)i, (unsigned)rows, (unsigned)t.rows, (unsigned)t.cols);
        }
        /* each tensor at most once */
        size_t at2 = TLM_FED_HEADER_BYTES;
        for (uint32_t j = 0; j < i; j++) {
            const uint8_t *f = b + at2;
            if (tlm_rd16(f + E_ROLE) == role && tlm_rd16(f + E_LAYER) == layer)
                return tlm_fail(err, TLM_ERR_TENSOR, "federated update: entries %u and %u are the same tensor",
                                (unsigned)j, (unsigned)i);
            at2 += entry_size(f);
        }
        at += eb;
    }
    if (at != n)
        return tlm_fail(err, TLM_ERR_RANGE, "federated update: %u bytes after the last entry", (unsigned)(n - at));
    if (info) {
        info->h.round = tlm_rd32(b + H_ROUND);
        info->h.client = tlm_rd32(b + H_CLIENT);
        info->h.base_crc = base;
        info->h.n_examples = tlm_rd32(b + H_EXAMPLES);
        info->n_entries = ne;
        info->bytes = n;
    }
    return TLM_OK;
}

void tlm_fed_entry_at(const void *buf, uint32_t i, tlm_fed_entry *out)
{
    const uint8_t *b = buf;
    size_t at = TLM_FED_HEADER_BYTES;
    for (uint32_t j = 0; j < i; j++) {
        at += entry_size(b + at);
    }
    tlm_fed_entry_read(b + at, out);
}

void tlm_fed_entry_read(const void *entry, tlm_fed_entry *out)
{
    const uint8_t *e = entry;
    out->role = (tlm_role)tlm_rd16(e + E_ROLE);
    out->layer = tlm_rd16(e + E_LAYER);
    out->enc = (tlm_fed_enc)e[E_ENC];
    out->count = tlm_rd32(e + E_COUNT);
    out->scale = tlm_rdf32(e + E_SCALE);
    out->rank = out->enc == TLM_FED_LOWRANK_I8 ? e[E_RANK] : 0u;
    out->rows = out->enc == TLM_FED_LOWRANK_I8 ? tlm_rd16(e + E_ROWS) : 0u;
    out->data = e + TLM_FED_ENTRY_BYTES;
}

void tlm_fed_lowrank_row(const tlm_fed_entry *e, uint32_t row, float *out)
{
    const uint32_t rows = e->rows, cols = e->count / rows, r = e->rank;
    const float s = tlm_rdf32(e->data) * e->scale; /* B's scale times A's */
    const int8_t *qb = (const int8_t *)(const void *)(e->data + 4) + (size_t)row * r;
    const int8_t *qa = (const int8_t *)(const void *)(e->data + 4) + (size_t)rows * r;
    for (uint32_t j = 0; j < cols; j++) {
        int32_t acc = 0; /* at most 255 * 127 * 127: exact */
        for (uint32_t k = 0; k < r; k++) acc += (int32_t)qb[k] * qa[(size_t)k * cols + j];
        out[j] = (float)acc * s;
    }
}

void tlm_fed_entry_decode(const tlm_fed_entry *e, float *out)
{
    const uint8_t *d = e->data;
    if (e->enc == TLM_FED_LOWRANK_I8) {
        const uint32_t cols = e->count / e->rows;
        for (uint32_t i = 0; i < e->rows; i++) tlm_fed_lowrank_row(e, i, out + (size_t)i * cols);
        return;
    }
    for (uint32_t i = 0; i < e->count; i++) {
        if (e->enc == TLM_FED_F32) {
            out[i] = tlm_rdf32(d + 4u * i);
        } else if (e->enc == TLM_FED_I8) {
            out[i] = (float)(int8_t)d[i] * e->scale;
        } else if (e->enc == TLM_FED_MASKED) {
            out[i] = (float)(int32_t)tlm_rd32(d + 4u * i) * e->scale;
        } else {
            const uint32_t c = (d[i >> 2] >> ((i & 3u) * 2u)) & 3u;
            out[i] = c == 1u ? e->scale : (c == 2u ? -e->scale : 0.0f);
        }
    }
}
