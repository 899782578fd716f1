/* AVX2 variants of the integer kernels, chosen at run time when the CPU has
 * AVX2 and BMI2. They walk the same groups as the reference (kernels.h) and
 * differ only in how each group's exact integer sum is formed, so their
 * outputs are bit-identical to the reference. Elsewhere this file is empty
 * but for a function that says so. */
#include <string.h>

#include "kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,bmi2,popcnt")))

static AVX2 inline int32_t hsum_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* Adds the 32 signed bytes of v (each within +-127) into 8 int32 lanes. */
static AVX2 inline __m256i add_bytes(__m256i acc, __m256i v)
{
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16));
}

static AVX2 int32_t dot_i8(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0, uint32_t c1,
                           uint32_t *cursor)
{
    (void)w;
    (void)cursor;
    const int8_t *wr = (const int8_t *)(const void *)row;
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    uint32_t c = c0;
    for (; c + 32u <= c1; c += 32u) {
        const __m256i wv = _mm256_loadu_si256((const __m256i *)(const void *)(wr + c));
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(a->q + c));
        /* |w| * (x with w's sign): unsigned x signed, pairs fit in int16 */
        const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones16));
    }
    int32_t s = hsum_i32(acc);
    for (; c < c1; c++) s += (int32_t)wr[c] * a->q[c];
    return s;
}

static AVX2 int32_t dot_t2(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0, uint32_t c1,
                           uint32_t *cursor)
{
    (void)w;
    (void)cursor;
    int32_t s = 0;
    uint32_t c = c0;
    for (; c < c1 && (c & 3u); c++) s += tlm_t2_at(row, c) * a->q[c];
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                            4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7);
    const __m256i field = _mm256_set1_epi32((int)0xC0300C03u);
    const __m256i plus = _mm256_set1_epi32(0x40100401);
    const __m256i minus = _mm256_set1_epi32((int)0x80200802u);
    __m256i acc = _mm256_setzero_si256();
    for (; c + 32u <= c1; c += 32u) {
        uint64_t bits;
        memcpy(&bits, row + (c >> 2), 8);
        const __m256i b = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi64x((long long)bits), spread), field);
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(a->q + c));
        const __m256i pos = _mm256_and_si256(xv, _mm256_cmpeq_epi8(b, plus));
        const __m256i neg = _mm256_and_si256(xv, _mm256_cmpeq_epi8(b, minus));
        acc = add_bytes(acc, _mm256_sub_epi8(pos, neg));
    }
    s += hsum_i32(acc);
    for (; c < c1; c++) s += tlm_t2_at(row, c) * a->q[c];
    return s;
}

/* 32 bits -> 32 bytes, 0xFF where the bit is set. */
static AVX2 inline __m256i bits_to_bytes(uint32_t m)
{
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), spread);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* n (<= 32) bits of the stream starting at bit k; reads only the bytes
 * that hold them. */
static inline uint32_t take_bits(const uint8_t *s, uint32_t k, uint32_t n)
{
    if (!n) return 0;
    const uint32_t first = k >> 3, last = (k + n - 1u) >> 3;
    uint64_t v = 0;
    for (uint32_t i = first; i <= last; i++) v |= (uint64_t)s[i] << ((i - first) * 8u);
    v >>= k & 7u;
    return (uint32_t)(v & ((n == 32u) ? 0xFFFFFFFFull : ((1ull << n) - 1u)));
}

static AVX2 int32_t dot_ts(const uint8_t *row, const tlm_act_q8 *a, const tlm_tensor *w, uint32_t c0, uint32_t c1,
                           uint32_t *cursor)
{
    const uint8_t *signs = row + (w->cols + 7u) / 8u;
    uint32_t k = *cursor, c = c0;
    int32_t s = 0;
    for (; c < c1 && (c & 7u); c++) {
        if (!((row[c >> 3] >> (c & 7u)) & 1u)) continue;
        s += ((signs[k >> 3] >> (k & 7u)) & 1u) ? -a->q[c] : a->q[c];
        k++;
    }
    __m256i acc = _mm256_setzero_si256();
    for (; c + 32u <= c1; c += 32u) {
        uint32_t m;
        memcpy(&m, row + (c >> 3), 4);
        if (!m) continue;
        const uint32_t nz = (uint32_t)_mm_popcnt_u32(m);
        const uint32_t negbits = _pdep_u32(take_bits(signs, k, nz), m);
        k += nz;
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(a->q + c));
        const __m256i pos = _mm256_and_si256(xv, bits_to_bytes(m & ~negbits));
        const __m256i neg = _mm256_and_si256(xv, bits_to_bytes(negbits));
        acc = add_bytes(acc, _mm256_sub_epi8(pos, neg));
    }
    s += hsum_i32(acc);
    for (; c < c1; c++) {
        if (!((row[c >> 3] >> (c & 7u)) & 1u)) continue;
        s += ((signs[k >> 3] >> (k & 7u)) & 1u) ? -a->q[c] : a->q[c];
        k++;
    }
    *cursor = k;
    return s;
}

static void mv_i8(float *out, const tlm_act_q8 *a, const tlm_tensor *w) { tlm_q8_drive(out, a, w, dot_i8); }
static void mv_t2(float *out, const tlm_act_q8 *a, const tlm_tensor *w) { tlm_q8_drive(out, a, w, dot_t2); }
static void mv_ts(float *out, const tlm_act_q8 *a, const tlm_tensor *w) { tlm_q8_drive(out, a, w, dot_ts); }

static int cpu_ok(void)
{
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
    }
    return known;
}

tlm_matvec_q8_fn tlm_matvec_q8_avx2(uint32_t wtype)
{
    if (!cpu_ok()) return NULL;
    switch (wtype) {
    case TLM_WTYPE_I8: return mv_i8;
    case TLM_WTYPE_T2: return mv_t2;
    case TLM_WTYPE_TS: return mv_ts;
    default: return NULL;
    }
}

#else

tlm_matvec_q8_fn tlm_matvec_q8_avx2(uint32_t wtype)
{
    (void)wtype;
    return NULL;
}

#endif
