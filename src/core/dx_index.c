/* The d_chi nearest-token search index: a byte copy of the embedding that
 * screens every token with a proven bound before the few that can still
 * win are scored in fp32 (see docs/PRIVACY.md). */
#include <math.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#elif defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

#include "dp_internal.h"
#include "kernels.h"
#include "tritlm/wtype.h"

/* ---- the search index ----
 * Per token j: q_j = round(e_j / s_j) with |q| <= 127 (s_j = max|e_j| / 127),
 * stored biased as bytes q_j + 128, and floats s_j,
 * |e_j|^2, |e_j - s_j q_j|_2, |e_j|_2 and a mask (+inf for the special
 * tokens, 0 for the others) (arrays of V each). For a query z
 * quantized as u = round(z / t) with |u| <= Q (Q = 63 on x86, where
 * vpmaddubsw multiplies the bytes by signed bytes and adds pairs without
 * reaching int16 saturation, 255 * 63 * 2 < 2^15; elsewhere as large as
 * int16 and an int32 sum allow), q_j.u = (q_j + 128).u - 128 sum(u), and by
 * Cauchy-Schwarz,
 *   |e_j.z - s_j t (q_j.u)| <= |e_j|_2 |z - t u|_2 + t |u|_2 |e_j - s_j q_j|_2 = B_j,
 * so the fp32 score lies within a_j +- (2 B_j + r_j), a_j = |e_j|^2 -
 * 2 s_j t (q_j.u), r_j a generous bound on fp32 rounding. Any token whose
 * interval starts above the smallest interval end cannot be the fp32
 * argmin; the rest are scored in fp32 in id order, as the plain search
 * does, so both return the same token (whatever Q a platform uses). Byte
 * rows keep the table at 32 KB for stories260K (an int16 one streamed 64 KB
 * from L2 per query) and take 64 multiply-adds per three x86 instructions;
 * the wider intervals let through a few more tokens. */
typedef struct dx_index_layout {
    uint32_t dimp, q;       /* row stride (dim rounded up to 16), the query's quantization limit */
    uint32_t vp;            /* rows rounded up to 8 */
    size_t stats_off, build_off, bytes;
} dx_index_layout;

static dx_index_layout dx_layout(const tlm_privatizer *p)
{
    dx_index_layout l;
    const uint32_t dim = p->model->hp.dim, V = p->model->hp.vocab_size;
    l.dimp = (dim + 15u) & ~15u;
#if defined(__AVX2__)
    uint64_t q = 63u;
#else
    uint64_t q = 2147483647ull / (255ull * l.dimp); /* |(q_j + 128).u| <= 255 Q dimp < 2^31 */
    if (q > 32767u) q = 32767u;
#endif
    l.q = (uint32_t)q;
    l.vp = (V + 7u) & ~7u; /* rows padded to whole blocks of 8 */
    l.stats_off = (size_t)l.vp * l.dimp; /* byte rows */
    l.build_off = l.stats_off + (size_t)V * 5u * sizeof(float);
    l.bytes = l.build_off + (size_t)dim * sizeof(float) + (size_t)l.dimp * sizeof(int16_t); /* + room to build it */
    return l;
}

size_t tlm_privatizer_index_bytes(const tlm_privatizer *p)
{
    if (p->mech != TLM_MECH_DX || isinf(p->epsilon)) return 0;
    return dx_layout(p).bytes;
}

static void quantize_i16(int16_t *q, const float *x, uint32_t n, float mul, uint32_t limit)
{
    for (uint32_t i = 0; i < n; i++) {
        float v = x[i] * mul;
        v += v < 0.0f ? -0.5f : 0.5f;
        int32_t k = (int32_t)v;
        if (k > (int32_t)limit) k = (int32_t)limit;
        if (k < -(int32_t)limit) k = -(int32_t)limit;
        q[i] = (int16_t)k;
    }
}

void tlm_privatizer_set_index(tlm_privatizer *p, void *mem)
{
    p->dx_index = NULL;
    if (!mem || !tlm_privatizer_index_bytes(p)) return;
    const tlm_model *m = p->model;
    const uint32_t dim = m->hp.dim, V = m->hp.vocab_size;
    const dx_index_layout l = dx_layout(p);
    uint8_t *rows = mem;
    memset(rows, 128, l.stats_off); /* biased zeros in the padding */
    float *st = (float *)(void *)((uint8_t *)mem + l.stats_off);
    tlm_tensor e;
    tlm_model_tensor(m, TLM_ROLE_TOK_EMBED, 0, &e);
    const tlm_wtype_traits *tr = tlm_wtype_get(e.wtype);
    float *row = (float *)(void *)((uint8_t *)mem + l.build_off); /* one row at a time, in the index's own room */
    int16_t *qj = (int16_t *)(void *)(row + dim);
    for (uint32_t j = 0; j < V; j++) {
        tr->row_to_f32(row, &e, j);
        memset(qj, 0, l.dimp * sizeof *qj);
        const float amax = tlm_absmax_f32(row, dim);
        quantize_i16(qj, row, dim, amax > 0.0f ? 127.0f / amax : 0.0f, 127u);
        /* rows in blocks of 8; per group g of four columns, 32 bytes: row r
         * of the block at bytes 4r..4r+3 (columns 4g..4g+3, biased) */
        uint8_t *blk = rows + (size_t)(j / 8u) * 8u * l.dimp;
        for (uint32_t i = 0; i < l.dimp; i++) blk[(i / 4u) * 32u + (j % 8u) * 4u + i % 4u] = (uint8_t)(qj[i] + 128);
        const float sj = amax > 0.0f ? amax / 127.0f : 0.0f;
        double n2 = 0, d2 = 0, q2 = 0;
        for (uint32_t i = 0; i < dim; i++) {
            const double d = (double)row[i] - (double)sj * qj[i];
            n2 += (double)row[i] * row[i];
            d2 += d * d;
            q2 += (double)qj[i] * qj[i];
        }
        st[j] = sj;
        st[V + j] = (float)n2;
        /* |e_j - s_j q_j|_2 and |e_j|_2, rounded up: they only widen bounds */
        st[2u * V + j] = sqrtf((float)d2) * 1.001f + 1e-6f * sj * sqrtf((float)q2);
        st[3u * V + j] = sqrtf((float)n2) * 1.001f;
        st[4u * V + j] = tlm_dp_is_special(m, j) ? INFINITY : 0.0f; /* pushes unk, BOS and EOS past every bound */
    }
    p->dx_index = mem;
}

enum { DX_BLOCK = 512 };

#if defined(__AVX2__)
/* out[0 .. 8R) = the byte rows' integer dot products with the query, for R
 * (1, 2 or 4) blocks of eight rows per broadcast of the query: per group of
 * four columns, vpmaddubsw (biased row bytes times the query's signed bytes,
 * pairs added in int16) then vpmaddwd by ones gives the eight rows' sums in
 * int32. ub: the query as bytes. */
static inline __attribute__((always_inline)) void dx_rows_avx2(float *out, const uint8_t *blk, uint32_t dimp,
                                                              const int16_t *u, int32_t bias, const uint32_t R)
{
    const int8_t *ub = (const int8_t *)(const void *)u;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    for (uint32_t g = 0; g < dimp / 4u; g++) {
        int32_t q4;
        memcpy(&q4, ub + 4u * g, 4);
        const __m256i uq = _mm256_set1_epi32(q4);
        for (uint32_t a = 0; a < R; a++) {
            const __m256i rw = _mm256_loadu_si256((const __m256i *)(const void *)(blk + a * 8u * dimp + g * 32u));
            acc[a] = _mm256_add_epi32(acc[a], _mm256_madd_epi16(_mm256_maddubs_epi16(rw, uq), ones));
        }
    }
    const __m256i vb = _mm256_set1_epi32(bias);
    for (uint32_t a = 0; a < R; a++) _mm256_storeu_ps(out + 8u * a, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[a], vb)));
}
#endif

/* Lower ends lo_j = a_j - w_j of the fp32 score intervals of tokens j0 ..
 * j0 + n - 1 into buf (+inf for the specials and for the padding up to
 * a multiple of 8), and with mins the eight running minima of the upper
 * ends lo_j + 2 w_j (within rounding of a_j + w_j; r_j's margin covers it).
 * buf first holds the integer dot products (as floats, rounded as the
 * interval's centre rounds them anyway): one 2 KB buffer on a device's
 * stack. The hot loops; the compiler vectorizes the float ones. */
static void dx_block(float *restrict buf, const uint8_t *restrict rows, const float *restrict st, uint32_t V,
                     uint32_t j0, uint32_t n, uint32_t dimp, const int16_t *restrict u, int32_t bias, const float k[4],
                     float *mins)
{
#if defined(__AVX2__)
    uint32_t b = 0;
    for (; b + 32u <= n; b += 32u) dx_rows_avx2(buf + b, rows + (size_t)(j0 + b) * dimp, dimp, u, bias, 4);
    if (b + 16u <= n) {
        dx_rows_avx2(buf + b, rows + (size_t)(j0 + b) * dimp, dimp, u, bias, 2);
        b += 16u;
    }
    for (; b < n; b += 8u) dx_rows_avx2(buf + b, rows + (size_t)(j0 + b) * dimp, dimp, u, bias, 1);
#elif defined(__ARM_FEATURE_DSP)
    /* a row's word of four biased bytes: UXTB16 gives columns (0, 2) and,
     * rotated by 8, (1, 3); u holds the query's int16 pairs in that order */
    for (uint32_t b = 0; b < n; b += 8u) {
        const uint8_t *blk = rows + (size_t)(j0 + b) * dimp;
        for (uint32_t half = 0; half < 8u; half += 4u) { /* four accumulators stay in registers */
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            for (uint32_t g = 0; g < dimp / 4u; g++) {
                int32_t u02, u13;
                uint32_t w[4];
                memcpy(&u02, u + 4u * g, 4);
                memcpy(&u13, u + 4u * g + 2u, 4);
                memcpy(w, blk + g * 32u + half * 4u, 16);
                a0 = __smlad(__uxtb16(w[0]), u02, __smlad(__uxtb16((w[0] >> 8) | (w[0] << 24)), u13, a0));
                a1 = __smlad(__uxtb16(w[1]), u02, __smlad(__uxtb16((w[1] >> 8) | (w[1] << 24)), u13, a1));
                a2 = __smlad(__uxtb16(w[2]), u02, __smlad(__uxtb16((w[2] >> 8) | (w[2] << 24)), u13, a2));
                a3 = __smlad(__uxtb16(w[3]), u02, __smlad(__uxtb16((w[3] >> 8) | (w[3] << 24)), u13, a3));
            }
            buf[b + half] = (float)(a0 - bias);
            buf[b + half + 1u] = (float)(a1 - bias);
            buf[b + half + 2u] = (float)(a2 - bias);
            buf[b + half + 3u] = (float)(a3 - bias);
        }
    }
#else
    for (uint32_t b = 0; b < n; b += 8u) { /* eight rows at a time, four columns per step */
        const uint8_t *blk = rows + (size_t)(j0 + b) * dimp;
        int32_t acc[8] = {0};
        for (uint32_t g = 0; g < dimp / 4u; g++) {
            const uint8_t *q = blk + g * 32u;
            const int16_t *ug = u + 4u * g;
            for (uint32_t r = 0; r < 8u; r++)
                acc[r] += (int32_t)q[4u * r] * ug[0] + (int32_t)q[4u * r + 1u] * ug[1] +
                          (int32_t)q[4u * r + 2u] * ug[2] + (int32_t)q[4u * r + 3u] * ug[3];
        }
        for (uint32_t r = 0; r < 8u; r++) buf[b + r] = (float)(acc[r] - bias);
    }
#endif
    const float *s = st + j0, *n2 = st + V + j0, *dl2 = st + 2u * V + j0, *l2 = st + 3u * V + j0, *mask = st + 4u * V + j0;
    const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3];
    uint32_t j = 0;
#if defined(__AVX2__)
    if (mins) { /* one pass: the lower ends, and the minima of the upper ends lo + 2 w */
        __m256 mv = _mm256_loadu_ps(mins);
        const __m256 v0 = _mm256_set1_ps(k0), v1 = _mm256_set1_ps(k1), v2 = _mm256_set1_ps(k2),
                     v3 = _mm256_set1_ps(k3), tiny = _mm256_set1_ps(1e-30f);
        for (; j + 8u <= n; j += 8u) { /* no fused multiply-adds: the same roundings as the scalar code */
            const __m256 vn2 = _mm256_loadu_ps(n2 + j);
            const __m256 a = _mm256_sub_ps(vn2, _mm256_mul_ps(_mm256_mul_ps(v0, _mm256_loadu_ps(s + j)), _mm256_loadu_ps(buf + j)));
            const __m256 w = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(v1, _mm256_loadu_ps(l2 + j)),
                                                                       _mm256_mul_ps(v2, _mm256_loadu_ps(dl2 + j))),
                                                         _mm256_mul_ps(v3, vn2)),
                                           tiny);
            const __m256 lo = _mm256_add_ps(_mm256_sub_ps(a, w), _mm256_loadu_ps(mask + j));
            _mm256_storeu_ps(buf + j, lo);
            mv = _mm256_min_ps(mv, _mm256_add_ps(lo, _mm256_add_ps(w, w)));
        }
        _mm256_storeu_ps(mins, mv);
    }
#endif
    const uint32_t done = j;
    for (; j < n; j++) {
        const float a = n2[j] - k0 * s[j] * buf[j];
        const float w = k1 * l2[j] + k2 * dl2[j] + k3 * n2[j] + 1e-30f;
        buf[j] = (a - w) + mask[j];
    }
    for (j = n; j % 8u; j++) buf[j] = INFINITY;
    if (!mins) return;
    for (j = done; j + 8u <= n; j += 8u) /* eight running minima */
        for (uint32_t c = 0; c < 8u; c++) {
            const float hi = buf[j + c] + 2.0f * (k1 * l2[j + c] + k2 * dl2[j + c] + k3 * n2[j + c] + 1e-30f);
            mins[c] = hi < mins[c] ? hi : mins[c];
        }
    for (; j < n; j++) {
        const float hi = buf[j] + 2.0f * (k1 * l2[j] + k2 * dl2[j] + k3 * n2[j] + 1e-30f);
        mins[0] = hi < mins[0] ? hi : mins[0];
    }
}

/* token j's fp32 score, from the fp32 table in place or a decoded row */
static float dx_row_score(const float *frows, const tlm_wtype_traits *tr, const tlm_tensor *e, float *row, uint32_t j,
                          const float *z, uint32_t dim)
{
    if (frows) return tlm_dx_score(frows + (size_t)j * dim, z, dim);
    tr->row_to_f32(row, e, j);
    return tlm_dx_score(row, z, dim);
}

uint32_t tlm_dx_search_indexed(const tlm_privatizer *p, const float *z, float *scratch, uint32_t fallback)
{
    const tlm_model *m = p->model;
    const uint32_t dim = m->hp.dim, V = m->hp.vocab_size;
    const dx_index_layout l = dx_layout(p);
    const uint8_t *rows = p->dx_index;
    const float *st = (const float *)(const void *)((const uint8_t *)p->dx_index + l.stats_off);
    int16_t *u = (int16_t *)(void *)scratch; /* dimp int16, then the packed copy, in dim + 16 floats */
    const float zmax = tlm_absmax_f32(z, dim);
    uint32_t i;
    if (!(zmax > 0.0f) || !(zmax < 1e30f)) return UINT32_MAX; /* degenerate query: the plain search */
    const float t = zmax / (float)l.q;
    /* the query u, in the form dx_block reads (after u in the same scratch:
     * 2 dimp int16 fit in dim + 16 floats), and its sums */
    int16_t *uq = u + l.dimp;
    int64_t u2 = 0;
    int32_t usum = 0; /* |sum u| <= Q dim: the bias of the byte rows, 128 sum(u), fits int32 */
    float z2 = 0.0f, h2 = 0.0f;
#if defined(__AVX2__)
    { /* one pass, eight lanes: u = round(z / t) (to nearest even; any rounding
       * works, the bounds use the actual residual), as bytes, |u| <= 63 */
        int8_t *ub = (int8_t *)(void *)uq;
        memset(ub, 0, l.dimp);
        const __m256 vmul = _mm256_set1_ps((float)l.q / zmax), vt = _mm256_set1_ps(t), vq = _mm256_set1_ps((float)l.q);
        __m256i vs = _mm256_setzero_si256(), vs2 = _mm256_setzero_si256();
        __m256 vz2 = _mm256_setzero_ps(), vh2 = _mm256_setzero_ps();
        for (i = 0; i + 8u <= dim; i += 8u) {
            const __m256 x = _mm256_loadu_ps(z + i);
            __m256 r = _mm256_round_ps(_mm256_mul_ps(x, vmul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            r = _mm256_min_ps(_mm256_max_ps(r, _mm256_sub_ps(_mm256_setzero_ps(), vq)), vq);
            const __m256i ui = _mm256_cvttps_epi32(r);
            vs = _mm256_add_epi32(vs, ui);
            vs2 = _mm256_add_epi32(vs2, _mm256_mullo_epi32(ui, ui));
            const __m256 h = _mm256_sub_ps(x, _mm256_mul_ps(vt, r)); /* the query's own rounding residual */
            vz2 = _mm256_add_ps(vz2, _mm256_mul_ps(x, x));
            vh2 = _mm256_add_ps(vh2, _mm256_mul_ps(h, h));
            const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(ui), _mm256_extracti128_si256(ui, 1));
            _mm_storel_epi64((__m128i *)(void *)(ub + i), _mm_packs_epi16(w, w));
        }
        int32_t s1[8], s2[8];
        float f1[8], f2[8];
        _mm256_storeu_si256((__m256i *)(void *)s1, vs);
        _mm256_storeu_si256((__m256i *)(void *)s2, vs2);
        _mm256_storeu_ps(f1, vz2);
        _mm256_storeu_ps(f2, vh2);
        for (uint32_t c = 0; c < 8u; c++) {
            usum += s1[c];
            u2 += s2[c];
            z2 += f1[c];
            h2 += f2[c];
        }
        for (; i < dim; i++) {
            int16_t q1;
            quantize_i16(&q1, z + i, 1, (float)l.q / zmax, l.q);
            const float h = z[i] - t * (float)q1;
            ub[i] = (int8_t)q1;
            usum += q1;
            u2 += (int32_t)q1 * q1;
            z2 += z[i] * z[i];
            h2 += h * h;
        }
    }
#else
    memset(u, 0, l.dimp * sizeof *u);
    quantize_i16(u, z, dim, (float)l.q / zmax, l.q);
    for (i = 0; i < dim; i++) {
        usum += u[i];
        u2 += (int32_t)u[i] * u[i];
    }
#if defined(__ARM_FEATURE_DSP)
    for (i = 0; i < l.dimp; i += 4u) { /* pairs of columns (0, 2), (1, 3) */
        uq[i] = u[i];
        uq[i + 1u] = u[i + 2u];
        uq[i + 2u] = u[i + 1u];
        uq[i + 3u] = u[i + 3u];
    }
#else
    memcpy(uq, u, l.dimp * sizeof *u);
#endif
    float z2s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, h2s[8] = {0, 0, 0, 0, 0, 0, 0, 0}; /* eight lanes each */
    for (i = 0; i + 8u <= dim; i += 8u)
        for (uint32_t c = 0; c < 8u; c++) {
            const float h = z[i + c] - t * (float)u[i + c]; /* the query's own rounding residual */
            z2s[c] += z[i + c] * z[i + c];
            h2s[c] += h * h;
        }
    for (; i < dim; i++) {
        const float h = z[i] - t * (float)u[i];
        z2s[0] += z[i] * z[i];
        h2s[0] += h * h;
    }
    for (uint32_t c = 0; c < 8u; c++) {
        z2 += z2s[c];
        h2 += h2s[c];
    }
#endif
    const int32_t bias = 128 * usum;
    const float ul2 = sqrtf((float)u2) * 1.001f, zl2 = sqrtf(z2) * 1.001f;
    /* |z - t u|_2, rounded up past the float error of computing it */
    const float hl2 = sqrtf(h2) * 1.001f + 1e-6f * t * ul2;
    /* half-width 2 B_j + r_j = k1 |e_j|_2 + k2 |e_j - s_j q_j|_2 + k3 |e_j|^2
     * with, by Cauchy-Schwarz on e_j.z - s_j t (q_j.u) = e_j.(z - t u) +
     * t (e_j - s_j q_j).u, B_j = |e_j|_2 |z - t u|_2 + t |u|_2 |e_j - s_j q_j|_2,
     * and r_j = rel (|e_j|^2 + 2 |e_j|_2 |z|_2) covering the fp32 rounding of
     * a score (recursive sums in four chains) and of these bounds */
    const float rel = (float)dim * 1.2e-7f + 1e-5f;
    const float k[4] = {2.0f * t, 2.0f * hl2 + 2.0f * rel * zl2, 2.0f * t * ul2, rel};
    float buf[DX_BLOCK];
    float mins[8] = {INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY};
    for (uint32_t j0 = 0; j0 < V; j0 += DX_BLOCK) /* pass 1: the smallest interval end */
        dx_block(buf, rows, st, V, j0, V - j0 < DX_BLOCK ? V - j0 : DX_BLOCK, l.dimp, uq, bias, k, mins);
    float best_hi = mins[0];
    for (uint32_t c = 1; c < 8u; c++) best_hi = mins[c] < best_hi ? mins[c] : best_hi;
    tlm_tensor e;
    tlm_model_tensor(m, TLM_ROLE_TOK_EMBED, 0, &e);
    const tlm_wtype_traits *tr = tlm_wtype_get(e.wtype);
    const float *frows = e.wtype == TLM_WTYPE_F32 ? (const float *)(const void *)e.data : NULL;
    float *row = scratch + dim + 16u;
    uint32_t best = fallback;
    float best_d = INFINITY;
    /* pass 2, last block first (its intervals are still there): the tokens
     * that can still win, then their fp32 scores, lowest interval start
     * first, until the next start is above the best score found (its score
     * can be neither lower nor equal); ties go to the smaller id, as in the
     * plain search. Past CAND candidates, each is scored as it is found. */
    enum { CAND = 64 };
    uint32_t cj[CAND];
    float clo[CAND];
    uint32_t nc = 0;
    const uint32_t last = (V - 1u) / DX_BLOCK * DX_BLOCK;
    for (uint32_t j0 = last;; j0 -= DX_BLOCK) {
        const uint32_t n = V - j0 < DX_BLOCK ? V - j0 : DX_BLOCK;
        if (j0 != last) dx_block(buf, rows, st, V, j0, n, l.dimp, uq, bias, k, NULL);
        for (uint32_t g = 0; g < n; g += 8u) { /* buf is padded with +inf to whole groups of eight */
            uint32_t live; /* bit c: token g + c can still win (specials are +inf here) */
#if defined(__AVX2__)
            const __m256 bh = _mm256_set1_ps(best_hi);
            if (g % 32u == 0 && g + 32u <= n) { /* skip 32 at once: most blocks hold no candidate */
                const __m256 any = _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(_mm256_loadu_ps(buf + g), bh, _CMP_LE_OQ),
                                                             _mm256_cmp_ps(_mm256_loadu_ps(buf + g + 8u), bh, _CMP_LE_OQ)),
                                                _mm256_or_ps(_mm256_cmp_ps(_mm256_loadu_ps(buf + g + 16u), bh, _CMP_LE_OQ),
                                                             _mm256_cmp_ps(_mm256_loadu_ps(buf + g + 24u), bh, _CMP_LE_OQ)));
                if (!_mm256_movemask_ps(any)) {
                    g += 24u;
                    continue;
                }
            }
            live = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(buf + g), bh, _CMP_LE_OQ));
#else
            live = 0;
            for (uint32_t c = 0; c < 8u; c++) live |= (uint32_t)(buf[g + c] <= best_hi) << c;
#endif
            for (; live; live &= live - 1u) {
                uint32_t c = 0;
                while (!((live >> c) & 1u)) c++;
                const uint32_t j = j0 + g + c;
                if (nc < CAND) {
                    cj[nc] = j;
                    clo[nc++] = buf[g + c];
                    continue;
                }
                const float d = dx_row_score(frows, tr, &e, row, j, z, dim);
                if (d < best_d || (d == best_d && j < best)) {
                    best_d = d;
                    best = j;
                }
            }
        }
        if (j0 == 0) break;
    }
    for (;;) { /* the listed candidates, lowest start first */
        uint32_t at = nc;
        for (uint32_t i = 0; i < nc; i++)
            if (at == nc || clo[i] < clo[at]) at = i;
        if (at == nc || clo[at] > best_d) break;
        const uint32_t j = cj[at];
        cj[at] = cj[--nc];
        clo[at] = clo[nc];
        const float d = dx_row_score(frows, tr, &e, row, j, z, dim);
        if (d < best_d || (d == best_d && j < best)) {
            best_d = d;
            best = j;
        }
    }
    return best;
}

