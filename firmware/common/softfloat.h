/* IEEE 754 binary32 arithmetic on integers, for cores without an FPU.
 *
 * The compiler turns every float operation on such a core into a call to
 * a libgcc routine (__mulsf3, __addsf3, ...). Debian's libgcc for RV32
 * builds them from GCC's generic soft-fp code, about 170 instructions per
 * multiply, and an int8 forward pass still does about 22,000 float
 * multiplies per token on stories260K (output scales, activation scaling,
 * norms, SiLU's expf, RoPE). These do the same operations for binary32 in
 * round-to-nearest-even, bit for bit (subnormal inputs and results,
 * infinities, signed zeros), with a short path for normal operands: about
 * 45 instructions per multiply on RV32IMC (MUL and MULHU give the 48-bit
 * product); addition is about as long as libgcc's. NaN results are quiet
 * NaNs (payloads are not specified by IEEE 754 and not kept here). On the
 * LX106, which has no high-half multiply, the 48-bit product becomes a
 * __muldi3 call and libgcc's routines stay faster, so it does not link
 * these. The Cortex-M0+ (Armv6-M: a 32 x 32 -> 32 multiply only) links
 * them with the product from four 32-bit multiplies (tlm_sf_mul32).
 *
 * Checked against the host's hardware arithmetic by tests/test_softfloat.c;
 * the firmware port links them in place of libgcc's (softfloat.c). */
#ifndef TLM_FW_SOFTFLOAT_H
#define TLM_FW_SOFTFLOAT_H

#include <stdint.h>
#include <string.h>

#define TLM_SF_SIGN 0x80000000u
#define TLM_SF_QNAN 0x7FC00000u
#define TLM_SF_INF 0x7F800000u

/* A float's bits and back. */
static inline uint32_t tlm_sf_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static inline float tlm_sf_float(uint32_t b)
{
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* A subnormal's significand (m != 0, below 2^23) brought to [2^23, 2^24);
 * *e becomes its exponent field as if normal (1 minus the shift). Rare: a loop. */
static inline uint32_t tlm_sf_normalize(uint32_t m, int32_t *e)
{
    int32_t ex = 1;
    while (!(m & 0x800000u)) {
        m <<= 1;
        ex--;
    }
    *e = ex;
    return m;
}

/* sign | the value p * 2^(e - 127 - 47) rounded to binary32, for p in
 * [2^47, 2^48) (leading bit 47) and any e: underflow to subnormals or zero
 * and overflow to infinity, round to nearest, ties to even. */
static inline uint32_t tlm_sf_round_pack(uint32_t sign, int32_t e, uint64_t p)
{
    if (e >= 255) return sign | TLM_SF_INF;
    if (e < 1) { /* below the normal range: shift to the subnormal scale, keeping a sticky bit */
        const uint32_t sh = (uint32_t)(1 - e);
        p = sh >= 48u ? (p != 0) : (p >> sh) | ((p & ((1ull << sh) - 1u)) != 0);
        e = 1;
    }
    uint32_t m = (uint32_t)(p >> 24);
    const uint32_t rem = (uint32_t)p & 0xFFFFFFu;
    m += rem > 0x800000u || (rem == 0x800000u && (m & 1u));
    /* m holds the hidden bit when normal, so it adds one to the exponent
     * field: (e - 1) << 23 + m; a carry out of the significand moves the
     * exponent up, to infinity from the largest finite value, and a
     * subnormal that rounds up to 2^23 becomes the smallest normal. */
    return sign | (((uint32_t)(e - 1) << 23) + m);
}

/* A product's operands: returns 1 with the result in *r when it is special
 * (NaN, infinity, zero); else 0 with both significands in [2^23, 2^24)
 * (subnormals normalized) and *e the product's exponent field for a
 * significand product in [2^46, 2^47). */
static inline int tlm_sf_mul_prep(uint32_t a, uint32_t b, uint32_t *ma_out, uint32_t *mb_out, int32_t *e, uint32_t *r)
{
    *ma_out = *mb_out = 0; /* (set again below unless the result is special) */
    const uint32_t sign = (a ^ b) & TLM_SF_SIGN;
    int32_t ea = (int32_t)((a >> 23) & 0xFFu), eb = (int32_t)((b >> 23) & 0xFFu);
    uint32_t ma = a & 0x7FFFFFu, mb = b & 0x7FFFFFu;
    if ((uint32_t)(ea - 1) < 254u && (uint32_t)(eb - 1) < 254u) { /* both normal: the short path */
        ma |= 0x800000u;
        mb |= 0x800000u;
    } else {
        if ((ea == 255 && ma) || (eb == 255 && mb)) {
            *r = TLM_SF_QNAN;
            return 1;
        }
        const int a_zero = ea == 0 && ma == 0, b_zero = eb == 0 && mb == 0;
        if (ea == 255 || eb == 255) {
            *r = (a_zero || b_zero) ? TLM_SF_QNAN : sign | TLM_SF_INF;
            return 1;
        }
        if (a_zero || b_zero) {
            *r = sign;
            return 1;
        }
        ma = ea ? ma | 0x800000u : tlm_sf_normalize(ma, &ea);
        mb = eb ? mb | 0x800000u : tlm_sf_normalize(mb, &eb);
    }
    *ma_out = ma;
    *mb_out = mb;
    *e = ea + eb - 127;
    return 0;
}

static inline uint32_t tlm_sf_mul(uint32_t a, uint32_t b)
{
    uint32_t ma, mb, r;
    int32_t e;
    if (tlm_sf_mul_prep(a, b, &ma, &mb, &e, &r)) return r;
    uint64_t p = (uint64_t)ma * mb; /* [2^46, 2^48) */
    if (p & (1ull << 47)) e++;
    else p <<= 1;
    return tlm_sf_round_pack((a ^ b) & TLM_SF_SIGN, e, p);
}

/* The same product from 32-bit multiplies only, for cores whose multiply
 * gives no high half (Armv6-M's MULS): the 24-bit significands in 12-bit
 * halves, four partial products, the 48-bit result as its top 24 bits and
 * its low 24; a normal result rounds here, the rest in tlm_sf_round_pack.
 * (Written for GCC's Armv6-M code: other orders of the same steps cost up
 * to 7% more instructions there.) */
static inline uint32_t tlm_sf_mul32(uint32_t a, uint32_t b)
{
    uint32_t ma, mb, r;
    int32_t e = (int32_t)((a >> 23) & 0xFFu), eb = (int32_t)((b >> 23) & 0xFFu);
    if ((uint32_t)(e - 1) < 254u && (uint32_t)(eb - 1) < 254u) { /* both normal */
        ma = (a & 0x7FFFFFu) | 0x800000u;
        mb = (b & 0x7FFFFFu) | 0x800000u;
        e += eb - 127;
    } else if (tlm_sf_mul_prep(a, b, &ma, &mb, &e, &r)) {
        return r;
    }
    const uint32_t mid = (ma >> 12) * (mb & 0xFFFu) + (ma & 0xFFFu) * (mb >> 12); /* < 2^25 */
    uint32_t lo = (ma & 0xFFFu) * (mb & 0xFFFu) + ((mid & 0xFFFu) << 12);      /* < 2^25 */
    uint32_t hi = (ma >> 12) * (mb >> 12) + (mid >> 12) + (lo >> 24);          /* p = hi 2^24 + lo */
    lo &= 0xFFFFFFu;
    if (hi & 0x800000u) e++;
    else {
        hi = (hi << 1) | (lo >> 23);
        lo = (lo << 1) & 0xFFFFFFu;
    }
    if ((uint32_t)(e - 1) >= 254u) return tlm_sf_round_pack((a ^ b) & TLM_SF_SIGN, e, ((uint64_t)hi << 24) | lo);
    hi += lo > 0x800000u || (lo == 0x800000u && (hi & 1u));
    return ((a ^ b) & TLM_SF_SIGN) | (((uint32_t)(e - 1) << 23) + hi);
}

/* a / b's operands: returns 1 with the result in *r when it is special
 * (NaN, infinity, zero); else 0 with both significands in [2^23, 2^24),
 * ma >= mb (the dividend's doubled if need be), and *e the exponent field
 * for a quotient in [1, 2). (It repeats tlm_sf_mul_prep's unpacking on
 * purpose: one function for both, with the operation as a parameter, gave
 * GCC's Armv6-M multiply 5% more instructions.) */
static inline int tlm_sf_div_prep(uint32_t a, uint32_t b, uint32_t *ma_out, uint32_t *mb_out, int32_t *e, uint32_t *r)
{
    *ma_out = *mb_out = 1; /* (set again below unless the result is special) */
    *r = 0;
    const uint32_t sign = (a ^ b) & TLM_SF_SIGN;
    int32_t ea = (int32_t)((a >> 23) & 0xFFu), eb = (int32_t)((b >> 23) & 0xFFu);
    uint32_t ma = a & 0x7FFFFFu, mb = b & 0x7FFFFFu;
    if ((uint32_t)(ea - 1) < 254u && (uint32_t)(eb - 1) < 254u) { /* both normal: the short path */
        ma |= 0x800000u;
        mb |= 0x800000u;
    } else {
        const int a_zero = ea == 0 && ma == 0, b_zero = eb == 0 && mb == 0;
        if ((ea == 255 && ma) || (eb == 255 && mb)) *r = TLM_SF_QNAN;
        else if (ea == 255) *r = eb == 255 ? TLM_SF_QNAN : sign | TLM_SF_INF; /* inf / inf; inf / x */
        else if (eb == 255) *r = sign;                                       /* x / inf */
        else if (b_zero) *r = a_zero ? TLM_SF_QNAN : sign | TLM_SF_INF;      /* 0 / 0; x / 0 */
        else if (a_zero) *r = sign;
        if ((ea == 255 || eb == 255) || a_zero || b_zero) return 1;
        ma = ea ? ma | 0x800000u : tlm_sf_normalize(ma, &ea);
        mb = eb ? mb | 0x800000u : tlm_sf_normalize(mb, &eb);
    }
    *e = ea - eb + 127;
    if (ma < mb) {
        ma <<= 1;
        (*e)--;
    }
    *ma_out = ma;
    *mb_out = mb;
    return 0;
}

/* sign | a quotient q in [2^25, 2^26) (24 bits, a guard bit, a sticky bit)
 * at exponent field e, rounded to nearest even: a normal result without
 * 64-bit arithmetic (dear on 32-bit cores), the rest by tlm_sf_round_pack. */
static inline uint32_t tlm_sf_div_round(uint32_t sign, int32_t e, uint32_t q)
{
    if ((uint32_t)(e - 1) < 254u) {
        uint32_t m = q >> 2;
        const uint32_t g = q & 3u;
        m += g > 2u || (g == 2u && (m & 1u));
        return sign | (((uint32_t)(e - 1) << 23) + m); /* (a carry to 2^24 moves the exponent, up to infinity) */
    }
    return tlm_sf_round_pack(sign, e, (uint64_t)q << 22);
}

/* a / b, for cores that divide (RV32IMC's DIVU): the significands'
 * quotient, 25 bits from its leading one (24 and a guard bit), 8 at a time
 * from 32-bit divisions, with the remainder as a sticky bit, rounded once
 * in tlm_sf_round_pack. */
static inline uint32_t tlm_sf_div(uint32_t a, uint32_t b)
{
    uint32_t ma, mb, r;
    int32_t e;
    if (tlm_sf_div_prep(a, b, &ma, &mb, &e, &r)) return r;
    uint32_t q = 1; /* mb <= ma < 2 mb */
    r = ma - mb;
    for (int k = 0; k < 3; k++) { /* r < mb < 2^24: r * 2^8 fits */
        const uint32_t n = r << 8, d = n / mb;
        q = (q << 8) | d;
        r = n - d * mb;
    }
    q = (q << 1) | (r != 0); /* [2^25, 2^26), the sticky bit last */
    return tlm_sf_div_round((a ^ b) & TLM_SF_SIGN, e, q);
}

/* The same quotient one bit at a time by shift and subtract, for cores
 * without a divide instruction (Armv6-M). */
static inline uint32_t tlm_sf_div_shift(uint32_t a, uint32_t b)
{
    uint32_t ma, mb, r;
    int32_t e;
    if (tlm_sf_div_prep(a, b, &ma, &mb, &e, &r)) return r;
    uint32_t q = 0;
    r = ma;
#pragma GCC unroll 25 /* (the loop's own count and branch were a third of each step) */
    for (int k = 0; k < 25; k++) { /* mb <= 2 r stays below 2 mb < 2^25 */
        q <<= 1;
        if (r >= mb) {
            r -= mb;
            q |= 1u;
        }
        r <<= 1;
    }
    q = (q << 1) | (r != 0);
    return tlm_sf_div_round((a ^ b) & TLM_SF_SIGN, e, q);
}

/* Leading zero bits of x != 0, by halves (RV32IMC has no instruction for it). */
static inline uint32_t tlm_sf_clz(uint32_t x)
{
    uint32_t n = 0;
    if (!(x >> 16)) { n += 16; x <<= 16; }
    if (!(x >> 24)) { n += 8; x <<= 8; }
    if (!(x >> 28)) { n += 4; x <<= 4; }
    if (!(x >> 30)) { n += 2; x <<= 2; }
    return n + !(x >> 31);
}

/* a + b. Significands carry three more bits (guard, round, sticky): the
 * smaller operand's shifted-out bits are ORed into the sticky one, which
 * is enough for a correct rounding whatever the cancellation. */
static inline uint32_t tlm_sf_add(uint32_t a, uint32_t b)
{
    if ((a & 0x7FFFFFFFu) < (b & 0x7FFFFFFFu)) { /* |a| >= |b| from here */
        const uint32_t t = a;
        a = b;
        b = t;
    }
    int32_t ea = (int32_t)((a >> 23) & 0xFFu);
    const int32_t eb = (int32_t)((b >> 23) & 0xFFu);
    if (ea == 255) { /* a is the infinity or NaN (it has the larger magnitude) */
        if (a & 0x7FFFFFu) return TLM_SF_QNAN;
        return (eb == 255 && ((a ^ b) & TLM_SF_SIGN)) ? TLM_SF_QNAN : a; /* inf - inf */
    }
    if (!(b & 0x7FFFFFFFu)) return (a & 0x7FFFFFFFu) ? a : a & b; /* +0 + -0 is +0 */
    uint32_t ma = ((a & 0x7FFFFFu) | (ea ? 0x800000u : 0u)) << 3;
    uint32_t mb = ((b & 0x7FFFFFu) | (eb ? 0x800000u : 0u)) << 3;
    if (!ea) ea = 1; /* subnormals have the smallest normal exponent */
    const uint32_t d = (uint32_t)(ea - (eb ? eb : 1));
    if (d) mb = d >= 27u ? 1u : (mb >> d) | ((mb & ((1u << d) - 1u)) != 0);
    uint32_t m;
    if ((a ^ b) & TLM_SF_SIGN) {
        m = ma - mb;
        if (!m) return 0; /* x - x is +0 */
        if (m < (1u << 26)) { /* cancellation: back to [2^26, 2^27), or down to a subnormal */
            uint32_t sh = tlm_sf_clz(m) - 5u;
            sh = sh < (uint32_t)(ea - 1) ? sh : (uint32_t)(ea - 1);
            m <<= sh;
            ea -= (int32_t)sh;
        }
    } else {
        m = ma + mb;
        if (m & (1u << 27)) {
            m = (m >> 1) | (m & 1u);
            ea++;
        }
    }
    const uint32_t r = m & 7u;
    m >>= 3;
    m += r > 4u || (r == 4u && (m & 1u));
    if (ea >= 255) return (a & TLM_SF_SIGN) | TLM_SF_INF;
    return (a & TLM_SF_SIGN) | (((uint32_t)(ea - 1) << 23) + m); /* as in tlm_sf_round_pack */
}

/* An unsigned integer as binary32, rounded to nearest even, with `sign`. */
static inline uint32_t tlm_sf_from_u32(uint32_t u, uint32_t sign)
{
    if (!u) return 0;
    const uint32_t z = tlm_sf_clz(u), e = 31u - z; /* the leading bit to position 31 */
    u <<= z;
    uint32_t m = u >> 8;
    const uint32_t r = u & 0xFFu;
    m += r > 0x80u || (r == 0x80u && (m & 1u));
    return sign | (((e + 126u) << 23) + m);
}

static inline uint32_t tlm_sf_from_i32(int32_t i)
{
    return tlm_sf_from_u32(i < 0 ? 0u - (uint32_t)i : (uint32_t)i, i < 0 ? TLM_SF_SIGN : 0u);
}

#endif
