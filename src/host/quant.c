/* Ternary and int8 quantizers and the packers of the quantized weight
 * types (layouts in docs/FORMAT.md; the core decodes them). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

void tlm_quant_defaults(tlm_quant_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->method = TLM_QM_ABSMEAN;
    c->sparsity = -1.0f;
    c->threshold = 0.7f;
    c->scale_kind = TLM_SCALE_ROW;
    c->group = 0;
    c->pack = TLM_PACK_AUTO;
    c->embed = TLM_WTYPE_I8;
}

static int is_ternary(uint32_t t) { return t == TLM_WTYPE_T2 || t == TLM_WTYPE_T3 || t == TLM_WTYPE_TS; }

tlm_status tlm_quant_check(const tlm_quant_cfg *c, const tlm_hparams *hp, tlm_error *err)
{
    if (c->method != TLM_QM_ABSMEAN && c->method != TLM_QM_THRESHOLD)
        return tlm_fail(err, TLM_ERR_ARG, "unknown quantization method");
    if (!(c->sparsity < 1.0f) || (c->sparsity >= 0.0f && c->sparsity != c->sparsity))
        return tlm_fail(err, TLM_ERR_ARG, "sparsity must be in [0, 1)");
    if (!(c->threshold > 0.0f) || !(c->threshold < 10.0f))
        return tlm_fail(err, TLM_ERR_ARG, "threshold factor must be in (0, 10)");
    if (c->scale_kind != TLM_SCALE_TENSOR && c->scale_kind != TLM_SCALE_ROW && c->scale_kind != TLM_SCALE_GROUP)
        return tlm_fail(err, TLM_ERR_ARG, "scale kind must be tensor, row or group");
    if (c->scale_kind == TLM_SCALE_GROUP) {
        if (c->group == 0) return tlm_fail(err, TLM_ERR_ARG, "group scales need a group size");
        if (hp && (c->group > hp->dim || c->group > hp->hidden_dim))
            return tlm_fail(err, TLM_ERR_ARG, "group size %u is wider than the model's rows (dim %u, hidden %u)", c->group,
                            hp->dim, hp->hidden_dim);
    }
    if (c->pack != TLM_PACK_AUTO && c->pack != TLM_WTYPE_I8 && !is_ternary(c->pack))
        return tlm_fail(err, TLM_ERR_ARG, "packing must be t2, t3, ts, auto or i8");
    if (c->embed != TLM_WTYPE_F32 && c->embed != TLM_WTYPE_I8 && c->embed != TLM_PACK_AUTO && !is_ternary(c->embed))
        return tlm_fail(err, TLM_ERR_ARG, "embedding type must be fp32, int8 or ternary");
    if (c->n_plan) {
        if (c->n_plan > TLM_QUANT_PLAN_MAX)
            return tlm_fail(err, TLM_ERR_ARG, "a per-layer plan covers at most %u layers", TLM_QUANT_PLAN_MAX);
        if (hp && c->n_plan != hp->n_layers)
            return tlm_fail(err, TLM_ERR_ARG, "the per-layer plan has %u entries for a model of %u layers", c->n_plan,
                            hp->n_layers);
        for (uint32_t l = 0; l < c->n_plan; l++)
            if (c->plan[l] != TLM_WTYPE_F32 && c->plan[l] != TLM_WTYPE_I8 && !is_ternary(c->plan[l]))
                return tlm_fail(err, TLM_ERR_ARG, "layer %u: type must be fp32, int8, t2, t3 or ts", l);
    }
    return TLM_OK;
}

static int is_layer_matrix(uint32_t role)
{
    switch (role) {
    case TLM_ROLE_WQ: case TLM_ROLE_WK: case TLM_ROLE_WV: case TLM_ROLE_WO:
    case TLM_ROLE_W1: case TLM_ROLE_W2: case TLM_ROLE_W3: return 1;
    default: return 0;
    }
}

uint32_t tlm_quant_type_of(const tlm_quant_cfg *c, uint32_t role, uint32_t layer)
{
    if (role == TLM_ROLE_TOK_EMBED || role == TLM_ROLE_CLASSIFIER) return c->embed;
    if (!is_layer_matrix(role)) return TLM_WTYPE_F32;
    if (c->n_plan) return layer < c->n_plan ? c->plan[layer] : TLM_WTYPE_F32;
    return c->pack;
}

/* The k-th largest of v[0..n) (k < n), reordering v. */
static float kth_largest(float *v, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        const float pivot = v[lo + (hi - lo) / 2];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return v[k];
    }
    return v[k];
}

/* The one magnitude of the nonzero weights of w[0..n): 0 if all are zero,
 * -1 if they differ (or one is not finite). */
static float unit_magnitude(const float *w, size_t n)
{
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float a = fabsf(w[i]);
        if (a == 0.0f) continue;
        if (!(a <= 3.4e38f) || (m != 0.0f && a != m)) return -1.0f;
        m = a;
    }
    return m;
}

/* Scale unit u of a rows x cols tensor under c, in the order of its scales
 * (u < tlm_scale_count): the weights w[*off .. *off + *len). */
static void unit_span(const tlm_quant_cfg *c, uint32_t rows, uint32_t cols, uint64_t u, size_t *off, size_t *len)
{
    if (c->scale_kind == TLM_SCALE_TENSOR) {
        *off = 0;
        *len = (size_t)rows * cols;
        return;
    }
    const uint32_t glen = c->scale_kind == TLM_SCALE_GROUP ? c->group : cols, ng = (cols + glen - 1u) / glen;
    const uint32_t c0 = (uint32_t)(u % ng) * glen;
    *off = (size_t)(u / ng) * cols + c0;
    *len = cols - c0 < glen ? cols - c0 : glen;
}

/* Is every scale unit of w (under c) all zero or of one nonzero magnitude? */
static int is_ternary_tensor(const float *w, uint32_t rows, uint32_t cols, const tlm_quant_cfg *c)
{
    const uint64_t nu = tlm_scale_count(c->scale_kind, rows, cols, c->group);
    for (uint64_t u = 0; u < nu; u++) {
        size_t off, len;
        unit_span(c, rows, cols, u, &off, &len);
        if (unit_magnitude(w + off, len) < 0.0f) return 0;
    }
    return 1;
}

int tlm_ternary_keep(const float *w, uint32_t rows, uint32_t cols, const tlm_quant_cfg *c, int8_t *t, float *scales)
{
    if (c->sparsity >= 0.0f) return 0;
    const uint64_t nu = tlm_scale_count(c->scale_kind, rows, cols, c->group);
    for (uint64_t u = 0; u < nu; u++) {
        size_t off, len;
        unit_span(c, rows, cols, u, &off, &len);
        const float m = unit_magnitude(w + off, len);
        if (m < 0.0f) return 0;
        for (size_t j = off; j < off + len; j++) t[j] = (int8_t)(w[j] > 0.0f ? 1 : (w[j] < 0.0f ? -1 : 0));
        scales[u] = m;
    }
    return 1;
}

void tlm_quant_latent_init(tlm_params *p, const tlm_quant_cfg *c)
{
    if (c->method != TLM_QM_ABSMEAN || c->sparsity >= 0.0f || (c->scale_kind == TLM_SCALE_GROUP && !c->group)) return;
    const uint32_t n = tlm_params_count(p);
    for (uint32_t i = 0; i < n; i++) {
        tlm_param_tensor s;
        tlm_params_tensor(p, i, &s);
        const uint32_t type = tlm_quant_type_of(c, s.role, s.layer);
        if (type == TLM_WTYPE_F32 || type == TLM_WTYPE_I8) continue;
        if (!is_ternary_tensor(s.data, s.rows, s.cols, c)) continue;
        /* each unit's nonzeros times len / nnz, so that their mean |w| is the scale */
        const uint64_t nu = tlm_scale_count(c->scale_kind, s.rows, s.cols, c->group);
        for (uint64_t u = 0; u < nu; u++) {
            size_t off, len, nnz = 0;
            unit_span(c, s.rows, s.cols, u, &off, &len);
            float *wu = s.data + off;
            for (size_t j = 0; j < len; j++) nnz += wu[j] != 0.0f;
            if (!nnz) continue;
            const float f = (float)((double)len / (double)nnz);
            for (size_t j = 0; j < len; j++) wu[j] *= f;
        }
    }
}

void tlm_ternarize(const float *w, uint32_t rows, uint32_t cols, const tlm_quant_cfg *c, int8_t *trits,
                   float *scales, float *deq)
{
    const uint32_t glen = c->scale_kind == TLM_SCALE_GROUP ? c->group : cols;
    const uint32_t ng = (cols + glen - 1u) / glen;
    const size_t n = (size_t)rows * cols;
    int8_t *t = trits ? trits : malloc(n ? n : 1);
    float *mag = malloc(((size_t)cols + 1u) * sizeof *mag), *tmp = malloc(((size_t)cols + 1u) * sizeof *tmp);
    /* mean |w| of every scale unit, kept for the scales of pass 2 */
    float *gmeans = malloc(((size_t)rows * ng + 1u) * sizeof *gmeans);
    if (!t || !mag || !tmp || !gmeans) abort(); /* bounded allocations */

    /* Mean |w| of the unit a weight's scale belongs to. */
    double tensor_mean = 0;
    if (c->scale_kind == TLM_SCALE_TENSOR) {
        for (size_t i = 0; i < n; i++) tensor_mean += fabs((double)w[i]);
        tensor_mean /= (double)(n ? n : 1);
    }
    /* Pass 1: the support (which weights are nonzero) and signs. */
    for (uint32_t r = 0; r < rows; r++) {
        const float *wr = w + (size_t)r * cols;
        int8_t *tr = t + (size_t)r * cols;
        float *gmean = gmeans + (size_t)r * ng;
        for (uint32_t g = 0; g < ng; g++) {
            const uint32_t c0 = g * glen, c1 = cols - c0 < glen ? cols : c0 + glen;
            double m = 0;
            if (c->scale_kind == TLM_SCALE_TENSOR) {
                m = tensor_mean;
            } else {
                for (uint32_t j = c0; j < c1; j++) m += fabs((double)wr[j]);
                m /= (double)(c1 - c0);
            }
            gmean[g] = (float)m;
        }
        if (c->sparsity >= 0.0f) {
            /* exact: keep the cols - round(s * cols) largest |w| / mean|w| of its unit */
            const uint32_t zeros = (uint32_t)lrint((double)c->sparsity * cols);
            const uint32_t keep = cols - (zeros > cols ? cols : zeros);
            for (uint32_t j = 0; j < cols; j++) {
                const float gm = gmean[j / glen];
                mag[j] = gm > 0.0f ? fabsf(wr[j]) / gm : 0.0f;
            }
            memset(tr, 0, cols);
            if (keep == 0) continue;
            memcpy(tmp, mag, (size_t)cols * sizeof *tmp);
            const float thr = kth_largest(tmp, cols, keep - 1u);
            uint32_t kept = 0;
            for (uint32_t j = 0; j < cols; j++)
                if (mag[j] > thr) {
                    tr[j] = wr[j] < 0.0f ? -1 : 1;
                    kept++;
                }
            for (uint32_t j = 0; j < cols && kept < keep; j++)
                if (mag[j] == thr) {
                    tr[j] = wr[j] < 0.0f ? -1 : 1;
                    kept++;
                }
        } else {
            for (uint32_t j = 0; j < cols; j++) {
                const float gm = gmean[j / glen];
                const float delta = c->method == TLM_QM_ABSMEAN ? 0.5f * gm : c->threshold * gm;
                const float a = fabsf(wr[j]);
                tr[j] = (a > delta && a > 0.0f) ? (wr[j] < 0.0f ? -1 : 1) : 0;
            }
        }
    }
    /* Pass 2: scales. absmean: mean |w| of the unit; threshold: mean |w|
     * over the unit's nonzeros (the least-squares scale for that support). */
    double tsum = 0, tcount = 0;
    if (c->scale_kind == TLM_SCALE_TENSOR && c->method == TLM_QM_THRESHOLD) {
        for (size_t i = 0; i < n; i++)
            if (t[i]) {
                tsum += fabs((double)w[i]);
                tcount += 1;
            }
    }
    for (uint32_t r = 0; r < rows; r++) {
        const float *wr = w + (size_t)r * cols;
        const int8_t *tr = t + (size_t)r * cols;
        for (uint32_t g = 0; g < ng; g++) {
            const uint32_t c0 = g * glen, c1 = cols - c0 < glen ? cols : c0 + glen;
            double s;
            if (c->method == TLM_QM_THRESHOLD) {
                double sum = 0, cnt = 0;
                if (c->scale_kind == TLM_SCALE_TENSOR) {
                    sum = tsum;
                    cnt = tcount;
                } else {
                    for (uint32_t j = c0; j < c1; j++)
                        if (tr[j]) {
                            sum += fabs((double)wr[j]);
                            cnt += 1;
                        }
                }
                s = cnt > 0 ? sum / cnt : 0.0;
            } else {
                s = gmeans[(size_t)r * ng + g]; /* absmean: the unit's mean |w| from pass 1 */
            }
            const float sf = (float)s;
            if (scales) {
                if (c->scale_kind == TLM_SCALE_TENSOR) scales[0] = sf;
                else if (c->scale_kind == TLM_SCALE_ROW) scales[r] = sf;
                else scales[(size_t)r * ng + g] = sf;
            }
            if (deq)
                for (uint32_t j = c0; j < c1; j++) deq[(size_t)r * cols + j] = (float)tr[j] * sf;
        }
    }
    free(gmeans);
    free(tmp);
    free(mag);
    if (!trits) free(t);
}

void tlm_int8_rows(const float *w, uint32_t rows, uint32_t cols, int8_t *q, float *scales, float *deq)
{
    int8_t *tmp = q ? NULL : malloc(cols ? cols : 1);
    if (!q && !tmp) abort();
    for (uint32_t r = 0; r < rows; r++) {
        int8_t *qr = q ? q + (size_t)r * cols : tmp;
        const float s = tlm_q8_quantize_row(qr, w + (size_t)r * cols, cols);
        if (scales) scales[r] = s;
        if (deq)
            for (uint32_t j = 0; j < cols; j++) deq[(size_t)r * cols + j] = (float)qr[j] * s;
    }
    free(tmp);
}

void tlm_quant_fake(const tlm_params *src, tlm_params *dst, const tlm_quant_cfg *c)
{
    const uint32_t n = tlm_params_count(src);
    for (uint32_t i = 0; i < n; i++) {
        tlm_param_tensor s, d;
        tlm_params_tensor(src, i, &s);
        tlm_params_tensor(dst, i, &d);
        const size_t count = (size_t)s.rows * s.cols;
        const uint32_t type = tlm_quant_type_of(c, s.role, s.layer);
        if (type == TLM_WTYPE_F32) {
            memcpy(d.data, s.data, count * sizeof(float));
        } else if (type == TLM_WTYPE_I8) {
            tlm_int8_rows(s.data, s.rows, s.cols, NULL, NULL, d.data);
        } else {
            tlm_ternarize(s.data, s.rows, s.cols, c, NULL, NULL, d.data);
        }
    }
}

/* ---- packing ---- */

static uint32_t code_of(int8_t t) { return t > 0 ? 1u : (t < 0 ? 2u : 0u); }

void tlm_pack_t2(uint8_t *out, const int8_t *t, uint32_t cols)
{
    memset(out, 0, (cols + 3u) / 4u);
    for (uint32_t j = 0; j < cols; j++) out[j >> 2] |= (uint8_t)(code_of(t[j]) << ((j & 3u) * 2u));
}

void tlm_pack_t3(uint8_t *out, const int8_t *t, uint32_t cols)
{
    static const uint32_t pow3[5] = {1, 3, 9, 27, 81};
    memset(out, 0, (cols + 4u) / 5u);
    for (uint32_t j = 0; j < cols; j++) out[j / 5u] = (uint8_t)(out[j / 5u] + code_of(t[j]) * pow3[j % 5u]);
}

void tlm_pack_ts(uint8_t *out, const int8_t *t, uint32_t cols, uint32_t k_max)
{
    const uint32_t mb = (cols + 7u) / 8u;
    memset(out, 0, mb + (k_max + 7u) / 8u);
    uint8_t *signs = out + mb;
    uint32_t k = 0;
    for (uint32_t j = 0; j < cols; j++) {
        if (!t[j]) continue;
        out[j >> 3] |= (uint8_t)(1u << (j & 7u));
        if (t[j] < 0) signs[k >> 3] |= (uint8_t)(1u << (k & 7u));
        k++;
    }
}

static uint32_t max_row_nnz(const int8_t *t, uint32_t rows, uint32_t cols)
{
    uint32_t best = 0;
    for (uint32_t r = 0; r < rows; r++) {
        uint32_t k = 0;
        for (uint32_t j = 0; j < cols; j++) k += t[(size_t)r * cols + j] != 0;
        if (k > best) best = k;
    }
    return best;
}

tlm_status tlm_quant_image(const tlm_params *src, const tlm_quant_cfg *c, const tlm_vocab *v, uint32_t bos,
                           uint32_t eos, uint8_t **image, size_t *bytes, tlm_error *err)
{
    tlm_status st = tlm_quant_check(c, &src->hp, err);
    if (st) return st;
    const uint32_t n = tlm_params_count(src);
    tlm_tensor_in *ts = calloc(n, sizeof *ts);
    void **owned = calloc((size_t)n * 2u, sizeof *owned);
    if (!ts || !owned) {
        free(ts);
        free(owned);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < n && !st; i++) {
        tlm_param_tensor s;
        tlm_params_tensor(src, i, &s);
        tlm_tensor_in *o = &ts[i];
        *o = (tlm_tensor_in){.role = s.role, .layer = s.layer, .wtype = TLM_WTYPE_F32, .rows = s.rows,
                             .cols = s.cols, .data = s.data};
        uint32_t type = tlm_quant_type_of(c, s.role, s.layer);
        if (type == TLM_WTYPE_F32) continue;
        const size_t count = (size_t)s.rows * s.cols;
        if (type == TLM_WTYPE_I8) {
            int8_t *q = malloc(count);
            float *sc = malloc((size_t)s.rows * sizeof *sc);
            owned[2 * i] = q;
            owned[2 * i + 1] = sc;
            if (!q || !sc) {
                st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
                break;
            }
            tlm_int8_rows(s.data, s.rows, s.cols, q, sc, NULL);
            o->wtype = TLM_WTYPE_I8;
            o->scale_kind = TLM_SCALE_ROW;
            o->data = q;
            o->scales = sc;
            continue;
        }
        const uint64_t ns = tlm_scale_count(c->scale_kind, s.rows, s.cols, c->group);
        int8_t *t = malloc(count);
        float *sc = malloc((size_t)ns * sizeof *sc);
        if (!t || !sc) {
            free(t);
            free(sc);
            st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
            break;
        }
        if (!(c->keep_ternary && tlm_ternary_keep(s.data, s.rows, s.cols, c, t, sc)))
            tlm_ternarize(s.data, s.rows, s.cols, c, t, sc, NULL);
        const uint32_t kmax = max_row_nnz(t, s.rows, s.cols);
        if (type == TLM_PACK_AUTO)
            type = tlm_wtype_row_bytes(TLM_WTYPE_TS, s.cols, kmax) < tlm_wtype_row_bytes(TLM_WTYPE_T3, s.cols, 0)
                       ? TLM_WTYPE_TS
                       : TLM_WTYPE_T3;
        const uint32_t param = type == TLM_WTYPE_TS ? kmax : 0u;
        const uint64_t rb = tlm_wtype_row_bytes(type, s.cols, param);
        uint8_t *packed = malloc((size_t)(rb * s.rows) + 1u);
        if (!packed) {
            free(t);
            free(sc);
            st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
            break;
        }
        for (uint32_t r = 0; r < s.rows; r++) {
            uint8_t *dst = packed + (size_t)(rb * r);
            const int8_t *tr = t + (size_t)r * s.cols;
            if (type == TLM_WTYPE_T2) tlm_pack_t2(dst, tr, s.cols);
            else if (type == TLM_WTYPE_T3) tlm_pack_t3(dst, tr, s.cols);
            else tlm_pack_ts(dst, tr, s.cols, kmax);
        }
        free(t);
        owned[2 * i] = packed;
        owned[2 * i + 1] = sc;
        o->wtype = type;
        o->scale_kind = c->scale_kind;
        o->group = c->scale_kind == TLM_SCALE_GROUP ? c->group : 0u;
        o->param = param;
        o->data = packed;
        o->scales = sc;
    }
    if (!st) st = tlm_image_build(&src->hp, bos, eos, ts, n, v, image, bytes, err);
    for (uint32_t i = 0; i < 2u * n; i++) free(owned[i]);
    free(owned);
    free(ts);
    return st;
}
