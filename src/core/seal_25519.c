/* Curve25519 for tritlm/seal.h: arithmetic modulo 2^255 - 19, X25519
 * (RFC 7748), Ed25519 (RFC 8032) and scalars modulo the group order. */
#include <string.h>

#include "le.h"
#include "seal_internal.h"

/* ---- arithmetic modulo p = 2^255 - 19 ----
 * Sixteen limbs of 16 bits in int64_t, values wrapping at 2^256 = 38
 * (mod p). Products multiply limbs as int32 (a carried limb is below 2^17
 * in magnitude and a sum or difference of two below 2^18; times 38, below
 * 2^24), so that 32-bit cores use one 32x32 -> 64 multiply-accumulate
 * each. Right shifts of negative limbs are arithmetic (every compiler of
 * the targets). */
typedef int64_t fe[16];

static const fe fe_d2 = {0xf159, 0x26b2, 0x9b94, 0xebd6, 0xb156, 0x8283, 0x149a, 0x00e0,
                         0xd130, 0xeef3, 0x80f2, 0x198e, 0xfce7, 0x56df, 0xd9dc, 0x2406}; /* 2d */
static const fe fe_d = {0x78a3, 0x1359, 0x4dca, 0x75eb, 0xd8ab, 0x4141, 0x0a4d, 0x0070,
                        0xe898, 0x7779, 0x4079, 0x8cc7, 0xfe73, 0x2b6f, 0x6cee, 0x5203}; /* -121665/121666 */
static const fe fe_sqrtm1 = {0xa0b0, 0x4a0e, 0x1b27, 0xc4ee, 0xe478, 0xad2f, 0x1806, 0x2f43,
                             0xd7a7, 0x3dfb, 0x0099, 0x2b4d, 0xdf0b, 0x4fc1, 0x2480, 0x2b83}; /* 2^((p-1)/4) */
static const fe base_x = {0xd51a, 0x8f25, 0x2d60, 0xc956, 0xa7b2, 0x9525, 0xc760, 0x692c,
                          0xdc5c, 0xfdd6, 0xe231, 0xc0a4, 0x53fe, 0xcd6e, 0x36d3, 0x2169};
static const fe base_y = {0x6658, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666,
                          0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666}; /* 4/5 */

static void fe_set(fe o, int64_t v)
{
    memset(o, 0, sizeof(fe));
    o[0] = v;
}

static void fe_carry(fe o)
{
    for (int i = 0; i < 16; i++) {
        const int64_t c = o[i] >> 16;
        o[i] -= c * 65536;
        if (i < 15)
            o[i + 1] += c;
        else
            o[0] += 38 * c;
    }
}

static void fe_add(fe o, const fe a, const fe b)
{
    for (int i = 0; i < 16; i++) o[i] = a[i] + b[i];
}

static void fe_sub(fe o, const fe a, const fe b)
{
    for (int i = 0; i < 16; i++) o[i] = a[i] - b[i];
}

static void fe_mul(fe o, const fe a, const fe b)
{
    /* column by column, the columns past 2^256 folded in times 38 as they
     * are summed: one register accumulator per output limb */
    int32_t a32[16], b32[16], b38[16];
    for (int i = 0; i < 16; i++) {
        a32[i] = (int32_t)a[i];
        b32[i] = (int32_t)b[i];
        b38[i] = 38 * b32[i];
    }
    for (int k = 0; k < 16; k++) {
        int64_t acc = 0;
        for (int i = 0; i <= k; i++) acc += (int64_t)a32[i] * b32[k - i];
        for (int i = k + 1; i < 16; i++) acc += (int64_t)a32[i] * b38[k + 16 - i];
        o[k] = acc;
    }
    fe_carry(o);
    fe_carry(o);
}

static void fe_sq(fe o, const fe a)
{
    fe_mul(o, a, a);
}

/* swaps a and b when bit is 1, the same instructions either way */
static void fe_cswap(fe a, fe b, int64_t bit)
{
    const int64_t mask = -bit;
    for (int i = 0; i < 16; i++) {
        const int64_t t = mask & (a[i] ^ b[i]);
        a[i] ^= t;
        b[i] ^= t;
    }
}

/* a^e for a public exponent e (32 bytes, little-endian) */
static void fe_pow(fe o, const fe a, const uint8_t e[32])
{
    fe c;
    fe_set(c, 1);
    for (int i = 255; i >= 0; i--) {
        fe_sq(c, c);
        if (e[i >> 3] >> (i & 7) & 1) fe_mul(c, c, a);
    }
    memcpy(o, c, sizeof c);
}

static const uint8_t exp_p_minus_2[32] = {0xeb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
static const uint8_t exp_p_plus_3_over_8[32] = {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f};

static void fe_inv(fe o, const fe a)
{
    fe_pow(o, a, exp_p_minus_2);
}

/* the canonical 32-byte little-endian form */
static void fe_pack(uint8_t out[32], const fe a)
{
    fe t;
    memcpy(t, a, sizeof t);
    fe_carry(t);
    fe_carry(t);
    fe_carry(t); /* now every limb is in [0, 2^16): the value is below 2^256 = 2p + 38 */
    for (int pass = 0; pass < 2; pass++) { /* subtract p while the value is at least p */
        fe m;
        int64_t borrow = 0;
        for (int i = 0; i < 16; i++) {
            const int64_t pi = i == 0 ? 0xffed : i == 15 ? 0x7fff : 0xffff;
            const int64_t v = t[i] - pi - borrow;
            borrow = v < 0;
            m[i] = v + borrow * 65536;
        }
        fe_cswap(t, m, 1 - borrow); /* no borrow: t >= p, take t - p */
    }
    for (int i = 0; i < 16; i++) {
        out[2 * i] = (uint8_t)t[i];
        out[2 * i + 1] = (uint8_t)(t[i] >> 8);
    }
}

/* 32 bytes, the top bit ignored */
static void fe_unpack(fe o, const uint8_t in[32])
{
    for (int i = 0; i < 16; i++) o[i] = (int64_t)in[2 * i] | (int64_t)in[2 * i + 1] << 8;
    o[15] &= 0x7fff;
}

static int fe_equal(const fe a, const fe b)
{
    uint8_t x[32], y[32];
    fe_pack(x, a);
    fe_pack(y, b);
    return memcmp(x, y, 32) == 0;
}

static int fe_is_zero(const fe a)
{
    fe zero;
    fe_set(zero, 0);
    return fe_equal(a, zero);
}

static void fe_neg(fe o, const fe a)
{
    fe zero;
    fe_set(zero, 0);
    fe_sub(o, zero, a);
}

static int fe_parity(const fe a)
{
    uint8_t x[32];
    fe_pack(x, a);
    return x[0] & 1;
}

/* ---- X25519 (RFC 7748) ---- */
void tlm_x25519(uint8_t out[32], const uint8_t scalar[32], const uint8_t u[32])
{
    uint8_t k[32];
    memcpy(k, scalar, 32);
    k[0] &= 248;
    k[31] = (uint8_t)((k[31] & 127) | 64);
    fe x1, x2, z2, x3, z3, a, aa, b, bb, e, c, d, da, cb, t;
    static const fe a24 = {0xdb41, 1}; /* (486662 - 2) / 4 = 121665 */
    fe_unpack(x1, u);
    fe_set(x2, 1);
    fe_set(z2, 0);
    memcpy(x3, x1, sizeof x3);
    fe_set(z3, 1);
    int64_t swap = 0;
    for (int i = 254; i >= 0; i--) {
        const int64_t bit = k[i >> 3] >> (i & 7) & 1;
        swap ^= bit;
        fe_cswap(x2, x3, swap);
        fe_cswap(z2, z3, swap);
        swap = bit;
        fe_add(a, x2, z2);
        fe_sq(aa, a);
        fe_sub(b, x2, z2);
        fe_sq(bb, b);
        fe_sub(e, aa, bb);
        fe_add(c, x3, z3);
        fe_sub(d, x3, z3);
        fe_mul(da, d, a);
        fe_mul(cb, c, b);
        fe_add(t, da, cb);
        fe_sq(x3, t);
        fe_sub(t, da, cb);
        fe_sq(t, t);
        fe_mul(z3, x1, t);
        fe_mul(x2, aa, bb);
        fe_mul(t, a24, e);
        fe_add(t, aa, t);
        fe_mul(z2, e, t);
    }
    fe_cswap(x2, x3, swap);
    fe_cswap(z2, z3, swap);
    fe_inv(z2, z2);
    fe_mul(x2, x2, z2);
    fe_pack(out, x2);
    memset(k, 0, sizeof k);
}

/* ---- Ed25519 (RFC 8032) ----
 * Points of -x^2 + y^2 = 1 + d x^2 y^2 in extended coordinates (X:Y:Z:T),
 * x = X/Z, y = Y/Z, xy = T/Z; one addition formula serves for doubling
 * too (it is complete for this curve). */
typedef struct {
    fe x, y, z, t;
} ge;

static void ge_add(ge *o, const ge *p, const ge *q)
{
    fe a, b, c, d, e, f, g, h;
    fe_sub(a, p->y, p->x);
    fe_sub(h, q->y, q->x);
    fe_mul(a, a, h);
    fe_add(b, p->y, p->x);
    fe_add(h, q->y, q->x);
    fe_mul(b, b, h);
    fe_mul(c, p->t, q->t);
    fe_mul(c, c, fe_d2);
    fe_mul(d, p->z, q->z);
    fe_add(d, d, d);
    fe_sub(e, b, a);
    fe_sub(f, d, c);
    fe_add(g, d, c);
    fe_add(h, b, a);
    fe_mul(o->x, e, f);
    fe_mul(o->y, g, h);
    fe_mul(o->t, e, h);
    fe_mul(o->z, f, g);
}

static void ge_cswap(ge *p, ge *q, int64_t bit)
{
    fe_cswap(p->x, q->x, bit);
    fe_cswap(p->y, q->y, bit);
    fe_cswap(p->z, q->z, bit);
    fe_cswap(p->t, q->t, bit);
}

static void ge_identity(ge *p)
{
    fe_set(p->x, 0);
    fe_set(p->y, 1);
    fe_set(p->z, 1);
    fe_set(p->t, 0);
}

static void ge_base(ge *p)
{
    memcpy(p->x, base_x, sizeof(fe));
    memcpy(p->y, base_y, sizeof(fe));
    fe_set(p->z, 1);
    fe_mul(p->t, base_x, base_y);
}

/* o = s * p (s: 32 bytes little-endian), a ladder whose steps do not
 * depend on s */
static void ge_scalarmult(ge *o, const ge *p, const uint8_t s[32])
{
    ge r0, r1;
    ge_identity(&r0);
    r1 = *p;
    for (int i = 255; i >= 0; i--) {
        const int64_t bit = s[i >> 3] >> (i & 7) & 1;
        ge_cswap(&r0, &r1, bit);
        ge_add(&r1, &r0, &r1);
        ge_add(&r0, &r0, &r0);
        ge_cswap(&r0, &r1, bit);
    }
    *o = r0;
}

static void ge_pack(uint8_t out[32], const ge *p)
{
    fe zi, x, y;
    fe_inv(zi, p->z);
    fe_mul(x, p->x, zi);
    fe_mul(y, p->y, zi);
    fe_pack(out, y);
    out[31] ^= (uint8_t)(fe_parity(x) << 7);
}

/* the point of an encoding; 0 when it is not one */
static int ge_unpack(ge *p, const uint8_t in[32])
{
    fe u, v, w, x2;
    fe_unpack(p->y, in);
    uint8_t canon[32];
    fe_pack(canon, p->y);
    if (memcmp(canon, in, 31) || (canon[31] ^ in[31]) & 0x7f) return 0; /* y at least p */
    fe_set(p->z, 1);
    fe_sq(u, p->y);
    fe_mul(v, u, fe_d);
    fe_sub(u, u, p->z); /* y^2 - 1 */
    fe_add(v, v, p->z); /* d y^2 + 1 */
    fe_inv(w, v);
    fe_mul(w, w, u); /* x^2 */
    fe_pow(p->x, w, exp_p_plus_3_over_8);
    fe_sq(x2, p->x);
    if (!fe_equal(x2, w)) fe_mul(p->x, p->x, fe_sqrtm1);
    fe_sq(x2, p->x);
    if (!fe_equal(x2, w)) return 0;
    const int sign = in[31] >> 7;
    if (fe_is_zero(p->x) && sign) return 0;
    if (fe_parity(p->x) != sign) fe_neg(p->x, p->x);
    fe_mul(p->t, p->x, p->y);
    return 1;
}

/* ---- scalars modulo the group order L = 2^252 + 27742317777372353535851937790883648493 ---- */
static const uint32_t order_l[9] = {0x5cf5d3ed, 0x5812631a, 0xa2f79cd6, 0x14def9de, 0, 0, 0, 0x10000000, 0};

/* r -= L when r >= L (r below 2L), the same instructions either way;
 * returns 1 when it subtracted */
static int sc_sub_l_if_ge(uint32_t r[9])
{
    uint32_t m[9];
    uint64_t borrow = 0;
    for (int i = 0; i < 9; i++) {
        const uint64_t v = (uint64_t)r[i] - order_l[i] - borrow;
        m[i] = (uint32_t)v;
        borrow = v >> 63;
    }
    const uint32_t keep = (uint32_t)0 - (uint32_t)borrow; /* all ones when r < L */
    for (int i = 0; i < 9; i++) r[i] = (r[i] & keep) | (m[i] & ~keep);
    return (int)(1u - (uint32_t)borrow);
}

/* Bit by bit from the top: r = 2r + bit, less L when it reaches L. */
void tlm_sc_reduce(uint8_t out[32], const uint8_t *in, size_t n)
{
    uint32_t r[9] = {0};
    for (size_t bi = 8 * n; bi-- > 0;) {
        uint32_t carry = in[bi >> 3] >> (bi & 7) & 1;
        for (int i = 0; i < 9; i++) {
            const uint32_t top = r[i] >> 31;
            r[i] = r[i] << 1 | carry;
            carry = top;
        }
        sc_sub_l_if_ge(r);
    }
    for (int i = 0; i < 32; i++) out[i] = (uint8_t)(r[i / 4] >> (8 * (i % 4)));
    memset(r, 0, sizeof r);
}

/* out = (a * b + c) mod L, each 32 bytes */
static void sc_muladd(uint8_t out[32], const uint8_t a[32], const uint8_t b[32], const uint8_t c[32])
{
    uint32_t aw[8], bw[8];
    uint64_t acc[16] = {0};
    uint8_t wide[64];
    for (int i = 0; i < 8; i++) {
        aw[i] = tlm_rd32(a + 4 * i);
        bw[i] = tlm_rd32(b + 4 * i);
    }
    for (int i = 0; i < 8; i++) {
        uint64_t carry = 0;
        for (int j = 0; j < 8; j++) {
            const uint64_t v = (uint64_t)aw[i] * bw[j] + (uint32_t)acc[i + j] + carry;
            acc[i + j] = (uint32_t)v;
            carry = v >> 32;
        }
        acc[i + 8] = carry;
    }
    uint64_t carry = 0;
    for (int i = 0; i < 16; i++) {
        const uint64_t v = acc[i] + (i < 8 ? tlm_rd32(c + 4 * i) : 0) + carry;
        for (int k = 0; k < 4; k++) wide[4 * i + k] = (uint8_t)(v >> (8 * k));
        carry = v >> 32;
    }
    tlm_sc_reduce(out, wide, 64);
    memset(aw, 0, sizeof aw);
    memset(wide, 0, sizeof wide);
}

static void sha512_parts(uint8_t out[64], const uint8_t *pre, size_t pre_n, const uint8_t *pre2, size_t pre2_n,
                         const uint8_t *const *part, const size_t *part_n, size_t n_parts)
{
    tlm_sha512 s;
    tlm_sha512_init(&s);
    tlm_sha512_update(&s, pre, pre_n);
    if (pre2_n) tlm_sha512_update(&s, pre2, pre2_n);
    for (size_t i = 0; i < n_parts; i++) tlm_sha512_update(&s, part[i], part_n[i]);
    tlm_sha512_final(&s, out);
}

/* the clamped secret scalar and the nonce prefix of a seed */
static void ed25519_expand(uint8_t h[64], const uint8_t seed[32])
{
    sha512_parts(h, seed, 32, NULL, 0, NULL, NULL, 0);
    h[0] &= 248;
    h[31] = (uint8_t)((h[31] & 127) | 64);
}

void tlm_ed25519_sign_expanded(uint8_t sig[64], const uint8_t h[64], const uint8_t pk[32], const uint8_t *const *part,
                                  const size_t *part_n, size_t n_parts)
{
    uint8_t r[64], k[64];
    ge base, p;
    ge_base(&base);
    sha512_parts(r, h + 32, 32, NULL, 0, part, part_n, n_parts); /* the nonce: prefix || M */
    tlm_sc_reduce(r, r, 64);
    ge_scalarmult(&p, &base, r);
    ge_pack(sig, &p); /* R */
    sha512_parts(k, sig, 32, pk, 32, part, part_n, n_parts); /* H(R || A || M) */
    tlm_sc_reduce(k, k, 64);
    sc_muladd(sig + 32, k, h, r); /* S = k a + r */
    memset(r, 0, sizeof r);
}

void tlm_ed25519_keys(uint8_t h[64], uint8_t pk[32], const uint8_t seed[32])
{
    ge a, b;
    ed25519_expand(h, seed);
    ge_base(&b);
    ge_scalarmult(&a, &b, h);
    ge_pack(pk, &a);
}

void tlm_seal_public_key(uint8_t pk[32], const uint8_t seed[32])
{
    uint8_t h[64];
    tlm_ed25519_keys(h, pk, seed);
    memset(h, 0, sizeof h);
}

void tlm_ed25519_sign(uint8_t sig[64], const uint8_t seed[32], const uint8_t *const *part, const size_t *part_n,
                      size_t n_parts)
{
    uint8_t h[64], pk[32];
    tlm_ed25519_keys(h, pk, seed);
    tlm_ed25519_sign_expanded(sig, h, pk, part, part_n, n_parts);
    memset(h, 0, sizeof h);
}

int tlm_ed25519_verify(const uint8_t sig[64], const uint8_t pk[32], const uint8_t *const *part, const size_t *part_n,
                       size_t n_parts)
{
    uint32_t s[9]; /* S below L: no second encoding of a signature */
    for (int i = 0; i < 8; i++) s[i] = tlm_rd32(sig + 32 + 4 * i);
    s[8] = 0;
    if (sc_sub_l_if_ge(s)) return 0;
    ge a, base, sb, ka;
    if (!ge_unpack(&a, pk)) return 0;
    { /* a key of small order (8 A is the identity) would let S = 0 and R = the identity pass for any message */
        ge a8 = a;
        for (int i = 0; i < 3; i++) ge_add(&a8, &a8, &a8);
        if (fe_is_zero(a8.x)) return 0;
    }
    uint8_t k[64], check[32];
    sha512_parts(k, sig, 32, pk, 32, part, part_n, n_parts);
    tlm_sc_reduce(k, k, 64);
    fe_neg(a.x, a.x); /* -A */
    fe_neg(a.t, a.t);
    ge_base(&base);
    ge_scalarmult(&sb, &base, sig + 32);
    ge_scalarmult(&ka, &a, k);
    ge_add(&sb, &sb, &ka); /* S B - k A, which is R for a valid signature */
    ge_pack(check, &sb);
    return memcmp(check, sig, 32) == 0;
}
