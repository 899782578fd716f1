/* Portable reference kernels for the quantized weight types: int8
 * activations times int8 or ternary weights, exact 32-bit sums per scale
 * group (the walk is in kernels.h). The SIMD variants must agree with
 * these bit for bit. Layouts: docs/FORMAT.md. */
#include <string.h>

#include "kernels.h"
#include "ternary_lut.h"

/* ---- activations ---- */

float tlm_q8_quantize_row(int8_t *q, const float *x, uint32_t n)
{
    const float amax = tlm_absmax_f32(x, n);
    if (!(amax > 0.0f) || amax != amax) { /* all zero, or NaN: nothing to keep */
        memset(q, 0, n);
        return 0.0f;
    }
    tlm_q8_round(q, x, n, 127.0f / amax);
    return amax / 127.0f;
}

void tlm_act_q8_quantize(tlm_act_q8 *a, const float *x, uint32_t n, int8_t *buf)
{
    const size_t qn = TLM_ACT_Q8_ROUND32(n);
    int8_t *q = buf;
    a->scale = tlm_q8_quantize_row(q, x, n);
    memset(q + n, 0, qn - n + 32u); /* zeros past n, 32 bytes beyond the rounded size */
    a->q16 = (int16_t *)(void *)(buf + qn + 32u); /* even offset: all sizes are multiples of 32 */
    /* lookup tables: 32-byte aligned within buf (every size above is a multiple of 32) */
    uint8_t *lut = (uint8_t *)(void *)(buf + qn + 32u) + 2u * qn + 32u;
    a->lut_kind = (uint32_t *)(void *)lut;
    *a->lut_kind = 0;
    a->q16_built = a->lut_kind + 1;
    *a->q16_built = 0;
    a->lut = (int16_t *)(void *)(lut + 32u);
    a->q = q;
    a->n = n;
}

/* ---- dot products over [c0, c1) ---- */

static int32_t dot_i8(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0, uint32_t c1,
                      uint32_t *cursor)
{
    (void)w;
    (void)cursor;
    const int8_t *wr = (const int8_t *)(const void *)row;
    int32_t acc = 0;
    for (uint32_t c = c0; c < c1; c++) acc += (int32_t)wr[c] * a->q[c];
    return acc;
}

static int32_t dot_t2(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0, uint32_t c1,
                      uint32_t *cursor)
{
    (void)w;
    (void)cursor;
    const int8_t *x = a->q;
    int32_t acc = 0;
    uint32_t c = c0;
    for (; c < c1 && (c & 3u); c++) acc += tlm_t2_at(row, c) * x[c];
    for (; c + 4u <= c1; c += 4u) { /* whole bytes through the table */
        const int8_t *d = tlm_t2_lut[row[c >> 2]];
        acc += d[0] * x[c] + d[1] * x[c + 1] + d[2] * x[c + 2] + d[3] * x[c + 3];
    }
    for (; c < c1; c++) acc += tlm_t2_at(row, c) * x[c];
    return acc;
}

static int32_t dot_t3(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0, uint32_t c1,
                      uint32_t *cursor)
{
    (void)w;
    (void)cursor;
    const int8_t *x = a->q;
    int32_t acc = 0;
    uint32_t c = c0;
    for (; c < c1 && c % 5u; c++) acc += tlm_t3_at(row, c) * x[c];
    for (; c + 5u <= c1; c += 5u) {
        const int8_t *d = tlm_t3_lut[row[c / 5u]]; /* validated: < 243 */
        acc += d[0] * x[c] + d[1] * x[c + 1] + d[2] * x[c + 2] + d[3] * x[c + 3] + d[4] * x[c + 4];
    }
    for (; c < c1; c++) acc += tlm_t3_at(row, c) * x[c];
    return acc;
}

/* TS rows: ceil(cols/8) bitmap bytes, then the sign bits of the nonzeros
 * in column order; *cursor counts the nonzeros already consumed. */
static int32_t dot_ts(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0, uint32_t c1,
                      uint32_t *cursor)
{
    const uint8_t *signs = row + (w->cols + 7u) / 8u;
    const int8_t *x = a->q;
    uint32_t k = *cursor, c = c0;
    int32_t acc = 0;
    while (c < c1) {
        uint32_t bits = row[c >> 3] >> (c & 7u); /* the rest of this bitmap byte */
        const uint32_t span = 8u - (c & 7u) < c1 - c ? 8u - (c & 7u) : c1 - c;
        bits &= (1u << span) - 1u;
        while (bits) { /* only the nonzeros */
            uint32_t j = 0;
            while (!((bits >> j) & 1u)) j++;
            bits &= bits - 1u;
            const int32_t v = x[c + j];
            acc += ((signs[k >> 3] >> (k & 7u)) & 1u) ? -v : v;
            k++;
        }
        c += span;
    }
    *cursor = k;
    return acc;
}

void tlm_matvec_q8_i8(float *out, const tlm_act_q8 *a, const tlm_tensor *w) { tlm_q8_drive(out, a, w, dot_i8); }
void tlm_matvec_q8_t2(float *out, const tlm_act_q8 *a, const tlm_tensor *w) { tlm_q8_drive(out, a, w, dot_t2); }
void tlm_matvec_q8_t3(float *out, const tlm_act_q8 *a, const tlm_tensor *w) { tlm_q8_drive(out, a, w, dot_t3); }
void tlm_matvec_q8_ts(float *out, const tlm_act_q8 *a, const tlm_tensor *w) { tlm_q8_drive(out, a, w, dot_ts); }

/* ---- rows as float ---- */

static float scale_for(const tlm_tensor *w, uint32_t r, uint32_t c)
{
    if (w->scale_kind == TLM_SCALE_GROUP) return w->scales[(size_t)r * ((w->cols + w->group - 1u) / w->group) + c / w->group];
    if (w->scale_kind == TLM_SCALE_ROW) return w->scales[r];
    return w->scales[0];
}

static const uint8_t *row_ptr(const tlm_tensor *w, uint32_t r)
{
    return w->data + (size_t)(tlm_row_bytes_of(w) * r);
}

void tlm_row_f32_i8(float *out, const tlm_tensor *w, uint32_t r)
{
    const int8_t *wr = (const int8_t *)(const void *)row_ptr(w, r);
    for (uint32_t c = 0; c < w->cols; c++) out[c] = (float)wr[c] * scale_for(w, r, c);
}

void tlm_row_f32_t2(float *out, const tlm_tensor *w, uint32_t r)
{
    const uint8_t *row = row_ptr(w, r);
    for (uint32_t c = 0; c < w->cols; c++) out[c] = (float)tlm_t2_at(row, c) * scale_for(w, r, c);
}

void tlm_row_f32_t3(float *out, const tlm_tensor *w, uint32_t r)
{
    const uint8_t *row = row_ptr(w, r);
    for (uint32_t c = 0; c < w->cols; c++) out[c] = (float)tlm_t3_at(row, c) * scale_for(w, r, c);
}

void tlm_row_f32_ts(float *out, const tlm_tensor *w, uint32_t r)
{
    const uint8_t *row = row_ptr(w, r);
    const uint8_t *signs = row + (w->cols + 7u) / 8u;
    uint32_t k = 0;
    for (uint32_t c = 0; c < w->cols; c++) {
        float v = 0.0f;
        if ((row[c >> 3] >> (c & 7u)) & 1u) {
            v = ((signs[k >> 3] >> (k & 7u)) & 1u) ? -1.0f : 1.0f;
            k++;
        }
        out[c] = v * scale_for(w, r, c);
    }
}

/* ---- validation of packed data ---- */

uint32_t tlm_check_rows_i8(const tlm_tensor *w)
{
    for (uint32_t r = 0; r < w->rows; r++) {
        const uint8_t *row = row_ptr(w, r);
        for (uint32_t c = 0; c < w->cols; c++)
            if (row[c] == 0x80u) return r; /* -128 has no positive twin */
    }
    return UINT32_MAX;
}

uint32_t tlm_check_rows_t2(const tlm_tensor *w)
{
    const uint32_t nb = (w->cols + 3u) / 4u;
    for (uint32_t r = 0; r < w->rows; r++) {
        const uint8_t *row = row_ptr(w, r);
        for (uint32_t b = 0; b < nb; b++) {
            const uint32_t v = row[b];
            if ((v & (v >> 1)) & 0x55u) return r; /* code 3 */
        }
        if (w->cols % 4u && (row[nb - 1u] >> ((w->cols % 4u) * 2u))) return r; /* padding */
    }
    return UINT32_MAX;
}

uint32_t tlm_check_rows_t3(const tlm_tensor *w)
{
    const uint32_t nb = (w->cols + 4u) / 5u;
    for (uint32_t r = 0; r < w->rows; r++) {
        const uint8_t *row = row_ptr(w, r);
        for (uint32_t b = 0; b < nb; b++)
            if (row[b] >= 243u) return r;
        if (w->cols % 5u && row[nb - 1u] >= tlm_pow3[w->cols % 5u]) return r; /* padding trits */
    }
    return UINT32_MAX;
}

static uint32_t popcount8(uint32_t v)
{
    v = v - ((v >> 1) & 0x55u);
    v = (v & 0x33u) + ((v >> 2) & 0x33u);
    return (v + (v >> 4)) & 0x0Fu;
}

uint32_t tlm_check_rows_ts(const tlm_tensor *w)
{
    const uint32_t mb = (w->cols + 7u) / 8u, sb = (w->param + 7u) / 8u;
    for (uint32_t r = 0; r < w->rows; r++) {
        const uint8_t *row = row_ptr(w, r);
        uint32_t nnz = 0;
        for (uint32_t b = 0; b < mb; b++) nnz += popcount8(row[b]);
        if (w->cols % 8u && (row[mb - 1u] >> (w->cols % 8u))) return r; /* bitmap padding */
        if (nnz > w->param) return r;
        /* sign bits past the row's nonzeros must be zero */
        for (uint32_t k = nnz; k < sb * 8u; k++)
            if ((row[mb + (k >> 3)] >> (k & 7u)) & 1u) return r;
    }
    return UINT32_MAX;
}
