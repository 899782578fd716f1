/* Device-side protection of federated messages (tritlm/seal.h): SHA-512,
 * BLAKE2b, X25519, Ed25519 and XSalsa20-Poly1305 in portable C, and the
 * sealed-update and signed-model envelopes built on them. */
#include "tritlm/seal.h"

#include <string.h>

#include "le.h"
#include "seal_internal.h"

/* ---- SHA-512 (FIPS 180-4) and BLAKE2b (RFC 7693) ----
 * The initial values are the first 64 bits of the fractional parts of the
 * square roots of the first 8 primes (BLAKE2b starts from the same ones),
 * the round constants those of the cube roots of the first 80 primes. */
static const uint64_t iv512[8] = {
    0x6a09e667f3bcc908ull, 0xbb67ae8584caa73bull, 0x3c6ef372fe94f82bull,
    0xa54ff53a5f1d36f1ull, 0x510e527fade682d1ull, 0x9b05688c2b3e6c1full,
    0x1f83d9abfb41bd6bull, 0x5be0cd19137e2179ull,
};
static const uint64_t k512[80] = {
    0x428a2f98d728ae22ull, 0x7137449123ef65cdull, 0xb5c0fbcfec4d3b2full,
    0xe9b5dba58189dbbcull, 0x3956c25bf348b538ull, 0x59f111f1b605d019ull,
    0x923f82a4af194f9bull, 0xab1c5ed5da6d8118ull, 0xd807aa98a3030242ull,
    0x12835b0145706fbeull, 0x243185be4ee4b28cull, 0x550c7dc3d5ffb4e2ull,
    0x72be5d74f27b896full, 0x80deb1fe3b1696b1ull, 0x9bdc06a725c71235ull,
    0xc19bf174cf692694ull, 0xe49b69c19ef14ad2ull, 0xefbe4786384f25e3ull,
    0x0fc19dc68b8cd5b5ull, 0x240ca1cc77ac9c65ull, 0x2de92c6f592b0275ull,
    0x4a7484aa6ea6e483ull, 0x5cb0a9dcbd41fbd4ull, 0x76f988da831153b5ull,
    0x983e5152ee66dfabull, 0xa831c66d2db43210ull, 0xb00327c898fb213full,
    0xbf597fc7beef0ee4ull, 0xc6e00bf33da88fc2ull, 0xd5a79147930aa725ull,
    0x06ca6351e003826full, 0x142929670a0e6e70ull, 0x27b70a8546d22ffcull,
    0x2e1b21385c26c926ull, 0x4d2c6dfc5ac42aedull, 0x53380d139d95b3dfull,
    0x650a73548baf63deull, 0x766a0abb3c77b2a8ull, 0x81c2c92e47edaee6ull,
    0x92722c851482353bull, 0xa2bfe8a14cf10364ull, 0xa81a664bbc423001ull,
    0xc24b8b70d0f89791ull, 0xc76c51a30654be30ull, 0xd192e819d6ef5218ull,
    0xd69906245565a910ull, 0xf40e35855771202aull, 0x106aa07032bbd1b8ull,
    0x19a4c116b8d2d0c8ull, 0x1e376c085141ab53ull, 0x2748774cdf8eeb99ull,
    0x34b0bcb5e19b48a8ull, 0x391c0cb3c5c95a63ull, 0x4ed8aa4ae3418acbull,
    0x5b9cca4f7763e373ull, 0x682e6ff3d6b2b8a3ull, 0x748f82ee5defb2fcull,
    0x78a5636f43172f60ull, 0x84c87814a1f0ab72ull, 0x8cc702081a6439ecull,
    0x90befffa23631e28ull, 0xa4506cebde82bde9ull, 0xbef9a3f7b2c67915ull,
    0xc67178f2e372532bull, 0xca273eceea26619cull, 0xd186b8c721c0c207ull,
    0xeada7dd6cde0eb1eull, 0xf57d4f7fee6ed178ull, 0x06f067aa72176fbaull,
    0x0a637dc5a2c898a6ull, 0x113f9804bef90daeull, 0x1b710b35131c471bull,
    0x28db77f523047d84ull, 0x32caab7b40c72493ull, 0x3c9ebe0a15c9bebcull,
    0x431d67c49c100d4cull, 0x4cc5d4becb3e42b6ull, 0x597f299cfc657e2aull,
    0x5fcb6fab3ad6faecull, 0x6c44198c4a475817ull,
};

static uint64_t ror64(uint64_t x, unsigned r)
{
    return x >> r | x << (64u - r);
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

/* One round with the eight working values named in rotation (no copies):
 * the round's h becomes the next round's a, its d + t1 the next e. */
#define SHA512_ROUND(a, b, c, d, e, f, g, h, i)                                                                        \
    do {                                                                                                               \
        const uint64_t w_ = (i) < 16 ? w[(i)&15] : sha512_next(w, (i));                                              \
        const uint64_t t1_ = h + (ror64(e, 14) ^ ror64(e, 18) ^ ror64(e, 41)) + ((e & f) ^ (~e & g)) + k512[i] + w_;  \
        d += t1_;                                                                                                      \
        h = t1_ + (ror64(a, 28) ^ ror64(a, 34) ^ ror64(a, 39)) + ((a & b) ^ (a & c) ^ (b & c));                       \
    } while (0)

/* the schedule's word i (i >= 16), kept in a ring of sixteen */
static inline uint64_t sha512_next(uint64_t w[16], int i)
{
    const uint64_t a = w[(i + 1) & 15], b = w[(i + 14) & 15];
    w[i & 15] += (ror64(a, 1) ^ ror64(a, 8) ^ a >> 7) + w[(i + 9) & 15] + (ror64(b, 19) ^ ror64(b, 61) ^ b >> 6);
    return w[i & 15];
}

static void sha512_block(uint64_t st[8], const uint8_t *p)
{
    uint64_t w[16];
    for (int i = 0; i < 16; i++) w[i] = be64(p + 8 * i);
    uint64_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
    for (int i = 0; i < 80; i += 8) {
        SHA512_ROUND(a, b, c, d, e, f, g, h, i);
        SHA512_ROUND(h, a, b, c, d, e, f, g, i + 1);
        SHA512_ROUND(g, h, a, b, c, d, e, f, i + 2);
        SHA512_ROUND(f, g, h, a, b, c, d, e, i + 3);
        SHA512_ROUND(e, f, g, h, a, b, c, d, i + 4);
        SHA512_ROUND(d, e, f, g, h, a, b, c, i + 5);
        SHA512_ROUND(c, d, e, f, g, h, a, b, i + 6);
        SHA512_ROUND(b, c, d, e, f, g, h, a, i + 7);
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
    st[4] += e;
    st[5] += f;
    st[6] += g;
    st[7] += h;
}
#undef SHA512_ROUND

void tlm_sha512_init(tlm_sha512 *s)
{
    memcpy(s->h, iv512, sizeof s->h);
    s->bytes = 0;
    s->fill = 0;
}

void tlm_sha512_update(tlm_sha512 *s, const uint8_t *p, size_t n)
{
    s->bytes += n;
    while (n) {
        size_t k = 128 - s->fill;
        if (k > n) k = n;
        memcpy(s->buf + s->fill, p, k);
        s->fill += k;
        p += k;
        n -= k;
        if (s->fill == 128) {
            sha512_block(s->h, s->buf);
            s->fill = 0;
        }
    }
}

void tlm_sha512_final(tlm_sha512 *s, uint8_t out[64])
{
    const uint64_t bits = s->bytes << 3;
    s->buf[s->fill++] = 0x80;
    if (s->fill > 112) {
        memset(s->buf + s->fill, 0, 128 - s->fill);
        sha512_block(s->h, s->buf);
        s->fill = 0;
    }
    memset(s->buf + s->fill, 0, 128 - s->fill);
    for (int i = 0; i < 8; i++) s->buf[120 + i] = (uint8_t)(bits >> (56 - 8 * i)); /* the high 64 bits stay 0 */
    sha512_block(s->h, s->buf);
    for (int i = 0; i < 64; i++) out[i] = (uint8_t)(s->h[i / 8] >> (56 - 8 * (i % 8)));
    memset(s, 0, sizeof *s);
}

static const uint8_t blake2b_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static void blake2b_mix(uint64_t v[16], int a, int b, int c, int d, uint64_t x, uint64_t y)
{
    v[a] += v[b] + x;
    v[d] = ror64(v[d] ^ v[a], 32);
    v[c] += v[d];
    v[b] = ror64(v[b] ^ v[c], 24);
    v[a] += v[b] + y;
    v[d] = ror64(v[d] ^ v[a], 16);
    v[c] += v[d];
    v[b] = ror64(v[b] ^ v[c], 63);
}

static void blake2b_block(tlm_blake2b *s, int last)
{
    uint64_t v[16], m[16];
    for (int i = 0; i < 16; i++) m[i] = tlm_rd64(s->buf + 8 * i);
    memcpy(v, s->h, 64);
    memcpy(v + 8, iv512, 64);
    v[12] ^= s->bytes; /* the byte counter's high word stays 0 */
    if (last) v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *g = blake2b_sigma[r];
        blake2b_mix(v, 0, 4, 8, 12, m[g[0]], m[g[1]]);
        blake2b_mix(v, 1, 5, 9, 13, m[g[2]], m[g[3]]);
        blake2b_mix(v, 2, 6, 10, 14, m[g[4]], m[g[5]]);
        blake2b_mix(v, 3, 7, 11, 15, m[g[6]], m[g[7]]);
        blake2b_mix(v, 0, 5, 10, 15, m[g[8]], m[g[9]]);
        blake2b_mix(v, 1, 6, 11, 12, m[g[10]], m[g[11]]);
        blake2b_mix(v, 2, 7, 8, 13, m[g[12]], m[g[13]]);
        blake2b_mix(v, 3, 4, 9, 14, m[g[14]], m[g[15]]);
    }
    for (int i = 0; i < 8; i++) s->h[i] ^= v[i] ^ v[i + 8];
}

void tlm_blake2b_init(tlm_blake2b *s, size_t out_n, const uint8_t *key, size_t key_n)
{
    memcpy(s->h, iv512, sizeof s->h);
    s->h[0] ^= 0x01010000u ^ (uint64_t)key_n << 8 ^ (uint64_t)out_n;
    s->bytes = 0;
    s->fill = 0;
    s->out_n = out_n;
    if (key_n) { /* the key, padded, is the first block */
        memset(s->buf, 0, sizeof s->buf);
        memcpy(s->buf, key, key_n);
        s->fill = 128;
    }
}

void tlm_blake2b_update(tlm_blake2b *s, const uint8_t *p, size_t n)
{
    while (n) {
        if (s->fill == 128) { /* a full block is compressed only once more input follows: the last one is flagged */
            s->bytes += 128;
            blake2b_block(s, 0);
            s->fill = 0;
        }
        size_t k = 128 - s->fill;
        if (k > n) k = n;
        memcpy(s->buf + s->fill, p, k);
        s->fill += k;
        p += k;
        n -= k;
    }
}

void tlm_blake2b_final(tlm_blake2b *s, uint8_t *out)
{
    s->bytes += s->fill;
    memset(s->buf + s->fill, 0, 128 - s->fill);
    blake2b_block(s, 1);
    for (size_t i = 0; i < s->out_n; i++) out[i] = (uint8_t)(s->h[i / 8] >> (8 * (i % 8)));
    memset(s, 0, sizeof *s);
}

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
    fe zero;
    fe_set(zero, 0);
    if (fe_equal(p->x, zero) && sign) return 0;
    if (fe_parity(p->x) != sign) fe_sub(p->x, zero, p->x);
    fe_mul(p->t, p->x, p->y);
    return 1;
}

/* ---- scalars modulo the group order L = 2^252 + 27742317777372353535851937790883648493 ---- */
static const uint32_t order_l[9] = {0x5cf5d3ed, 0x5812631a, 0xa2f79cd6, 0x14def9de, 0, 0, 0, 0x10000000, 0};

/* r -= L when r >= L (r below 2L), the same instructions either way */
static void sc_sub_l_if_ge(uint32_t r[9])
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
    tlm_sha512 s;
    tlm_sha512_init(&s);
    tlm_sha512_update(&s, seed, 32);
    tlm_sha512_final(&s, h);
    h[0] &= 248;
    h[31] = (uint8_t)((h[31] & 127) | 64);
}

/* the signature under an expanded key h (ed25519_expand) whose public key is pk */
static void ed25519_sign_expanded(uint8_t sig[64], const uint8_t h[64], const uint8_t pk[32], const uint8_t *const *part,
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

/* the expanded key and the public key of a seed */
static void ed25519_keys(uint8_t h[64], uint8_t pk[32], const uint8_t seed[32])
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
    ed25519_keys(h, pk, seed);
    memset(h, 0, sizeof h);
}

void tlm_ed25519_sign(uint8_t sig[64], const uint8_t seed[32], const uint8_t *const *part, const size_t *part_n,
                      size_t n_parts)
{
    uint8_t h[64], pk[32];
    ed25519_keys(h, pk, seed);
    ed25519_sign_expanded(sig, h, pk, part, part_n, n_parts);
    memset(h, 0, sizeof h);
}

int tlm_ed25519_verify(const uint8_t sig[64], const uint8_t pk[32], const uint8_t *const *part, const size_t *part_n,
                       size_t n_parts)
{
    /* S below L (no second encoding of a signature) */
    uint32_t s[9];
    for (int i = 0; i < 8; i++) s[i] = tlm_rd32(sig + 32 + 4 * i);
    s[8] = 0;
    uint32_t before[9];
    memcpy(before, s, sizeof s);
    sc_sub_l_if_ge(s);
    if (memcmp(before, s, sizeof s)) return 0;
    ge a, base, sb, ka;
    if (!ge_unpack(&a, pk)) return 0;
    { /* a key of small order (8 A is the identity) would let S = 0 and R = the identity pass for any message */
        ge a8 = a;
        for (int i = 0; i < 3; i++) ge_add(&a8, &a8, &a8);
        fe zero;
        fe_set(zero, 0);
        if (fe_equal(a8.x, zero)) return 0;
    }
    uint8_t k[64], check[32];
    sha512_parts(k, sig, 32, pk, 32, part, part_n, n_parts);
    tlm_sc_reduce(k, k, 64);
    fe zero;
    fe_set(zero, 0);
    fe_sub(a.x, zero, a.x); /* -A */
    fe_sub(a.t, zero, a.t);
    ge_base(&base);
    ge_scalarmult(&sb, &base, sig + 32);
    ge_scalarmult(&ka, &a, k);
    ge_add(&sb, &sb, &ka); /* S B - k A, which is R for a valid signature */
    ge_pack(check, &sb);
    return memcmp(check, sig, 32) == 0;
}

/* ---- XSalsa20 and Poly1305 (the secretbox of NaCl) ---- */
static uint32_t rol32(uint32_t x, unsigned r)
{
    return x << r | x >> (32u - r);
}

static void salsa_rounds(uint32_t x[16])
{
    static const uint8_t q[8][4] = {{0, 4, 8, 12}, {5, 9, 13, 1}, {10, 14, 2, 6}, {15, 3, 7, 11},  /* columns */
                                    {0, 1, 2, 3},  {5, 6, 7, 4},  {10, 11, 8, 9}, {15, 12, 13, 14}}; /* rows */
    for (int r = 0; r < 10; r++)
        for (int j = 0; j < 8; j++) {
            uint32_t *a = x + q[j][0], *b = x + q[j][1], *c = x + q[j][2], *d = x + q[j][3];
            *b ^= rol32(*a + *d, 7);
            *c ^= rol32(*b + *a, 9);
            *d ^= rol32(*c + *b, 13);
            *a ^= rol32(*d + *c, 18);
        }
}

static void salsa_state(uint32_t x[16], const uint8_t key[32], const uint8_t in[16])
{
    x[0] = 0x61707865; /* "expand 32-byte k" */
    x[5] = 0x3320646e;
    x[10] = 0x79622d32;
    x[15] = 0x6b206574;
    for (int i = 0; i < 4; i++) {
        x[1 + i] = tlm_rd32(key + 4 * i);
        x[11 + i] = tlm_rd32(key + 16 + 4 * i);
        x[6 + i] = tlm_rd32(in + 4 * i);
    }
}

void tlm_hsalsa20(uint8_t out[32], const uint8_t in[16], const uint8_t key[32])
{
    uint32_t x[16];
    static const uint8_t pick[8] = {0, 5, 10, 15, 6, 7, 8, 9};
    salsa_state(x, key, in);
    salsa_rounds(x);
    for (int i = 0; i < 8; i++) tlm_wr32(out + 4 * i, x[pick[i]]);
    memset(x, 0, sizeof x);
}

void tlm_xsalsa20_xor(uint8_t *p, size_t n, uint64_t skip, const uint8_t nonce[24], const uint8_t key[32])
{
    uint8_t sub[32], in[16], block[64];
    uint32_t x[16], x0[16];
    tlm_hsalsa20(sub, nonce, key);
    memcpy(in, nonce + 16, 8);
    uint64_t counter = skip / 64;
    size_t off = (size_t)(skip % 64);
    while (n) {
        for (int i = 0; i < 8; i++) in[8 + i] = (uint8_t)(counter >> (8 * i));
        salsa_state(x0, sub, in);
        memcpy(x, x0, sizeof x);
        salsa_rounds(x);
        for (int i = 0; i < 16; i++) tlm_wr32(block + 4 * i, x[i] + x0[i]);
        size_t k = 64 - off;
        if (k > n) k = n;
        for (size_t i = 0; i < k; i++) p[i] ^= block[off + i];
        p += k;
        n -= k;
        off = 0;
        counter++;
    }
    memset(sub, 0, sizeof sub);
    memset(block, 0, sizeof block);
    memset(x, 0, sizeof x);
    memset(x0, 0, sizeof x0);
}

/* Poly1305 in five limbs of 26 bits (products 32 x 32 -> 64 bits) */
void tlm_poly1305(uint8_t mac[16], const uint8_t *m, size_t n, const uint8_t key[32])
{
    const uint32_t k0 = tlm_rd32(key), k1 = tlm_rd32(key + 4), k2 = tlm_rd32(key + 8), k3 = tlm_rd32(key + 12);
    /* r, clamped as the algorithm requires, split into the limbs */
    const uint32_t r0 = k0 & 0x3ffffff, r1 = (k0 >> 26 | k1 << 6) & 0x3ffff03, r2 = (k1 >> 20 | k2 << 12) & 0x3ffc0ff,
                   r3 = (k2 >> 14 | k3 << 18) & 0x3f03fff, r4 = (k3 >> 8) & 0x00fffff;
    const uint32_t s1 = r1 * 5, s2 = r2 * 5, s3 = r3 * 5, s4 = r4 * 5;
    uint32_t h0 = 0, h1 = 0, h2 = 0, h3 = 0, h4 = 0;
    while (n) {
        uint8_t blk[16];
        uint32_t hibit = 1u << 24;
        size_t k = n < 16 ? n : 16;
        memcpy(blk, m, k);
        if (k < 16) { /* the last partial block: a 1 byte after it, no 2^128 */
            blk[k] = 1;
            memset(blk + k + 1, 0, 15 - k);
            hibit = 0;
        }
        const uint32_t m0 = tlm_rd32(blk), m1 = tlm_rd32(blk + 4), m2 = tlm_rd32(blk + 8),
                       m3 = tlm_rd32(blk + 12);
        h0 += m0 & 0x3ffffff;
        h1 += (m0 >> 26 | m1 << 6) & 0x3ffffff;
        h2 += (m1 >> 20 | m2 << 12) & 0x3ffffff;
        h3 += (m2 >> 14 | m3 << 18) & 0x3ffffff;
        h4 += m3 >> 8 | hibit;
        uint64_t d0 = (uint64_t)h0 * r0 + (uint64_t)h1 * s4 + (uint64_t)h2 * s3 + (uint64_t)h3 * s2 + (uint64_t)h4 * s1;
        uint64_t d1 = (uint64_t)h0 * r1 + (uint64_t)h1 * r0 + (uint64_t)h2 * s4 + (uint64_t)h3 * s3 + (uint64_t)h4 * s2;
        uint64_t d2 = (uint64_t)h0 * r2 + (uint64_t)h1 * r1 + (uint64_t)h2 * r0 + (uint64_t)h3 * s4 + (uint64_t)h4 * s3;
        uint64_t d3 = (uint64_t)h0 * r3 + (uint64_t)h1 * r2 + (uint64_t)h2 * r1 + (uint64_t)h3 * r0 + (uint64_t)h4 * s4;
        uint64_t d4 = (uint64_t)h0 * r4 + (uint64_t)h1 * r3 + (uint64_t)h2 * r2 + (uint64_t)h3 * r1 + (uint64_t)h4 * r0;
        d1 += d0 >> 26;
        h0 = (uint32_t)d0 & 0x3ffffff;
        d2 += d1 >> 26;
        h1 = (uint32_t)d1 & 0x3ffffff;
        d3 += d2 >> 26;
        h2 = (uint32_t)d2 & 0x3ffffff;
        d4 += d3 >> 26;
        h3 = (uint32_t)d3 & 0x3ffffff;
        h4 = (uint32_t)d4 & 0x3ffffff;
        h0 += (uint32_t)(d4 >> 26) * 5;
        h1 += h0 >> 26;
        h0 &= 0x3ffffff;
        m += k;
        n -= k;
    }
    /* the full carry, then h mod 2^130 - 5: h - p when h >= p */
    uint32_t c = h1 >> 26;
    h1 &= 0x3ffffff;
    h2 += c;
    c = h2 >> 26;
    h2 &= 0x3ffffff;
    h3 += c;
    c = h3 >> 26;
    h3 &= 0x3ffffff;
    h4 += c;
    c = h4 >> 26;
    h4 &= 0x3ffffff;
    h0 += c * 5;
    c = h0 >> 26;
    h0 &= 0x3ffffff;
    h1 += c;
    uint32_t g0 = h0 + 5;
    c = g0 >> 26;
    g0 &= 0x3ffffff;
    uint32_t g1 = h1 + c;
    c = g1 >> 26;
    g1 &= 0x3ffffff;
    uint32_t g2 = h2 + c;
    c = g2 >> 26;
    g2 &= 0x3ffffff;
    uint32_t g3 = h3 + c;
    c = g3 >> 26;
    g3 &= 0x3ffffff;
    const uint32_t g4 = h4 + c - (1u << 26);
    const uint32_t take_g = (g4 >> 31) - 1u; /* all ones when h + 5 reached 2^130 */
    h0 = (h0 & ~take_g) | (g0 & take_g);
    h1 = (h1 & ~take_g) | (g1 & take_g);
    h2 = (h2 & ~take_g) | (g2 & take_g);
    h3 = (h3 & ~take_g) | (g3 & take_g);
    h4 = (h4 & ~take_g) | (g4 & take_g);
    /* + s, mod 2^128 */
    const uint32_t w0 = h0 | h1 << 26, w1 = h1 >> 6 | h2 << 20, w2 = h2 >> 12 | h3 << 14, w3 = h3 >> 18 | h4 << 8;
    uint64_t f = (uint64_t)w0 + tlm_rd32(key + 16);
    tlm_wr32(mac, (uint32_t)f);
    f = (uint64_t)w1 + tlm_rd32(key + 20) + (f >> 32);
    tlm_wr32(mac + 4, (uint32_t)f);
    f = (uint64_t)w2 + tlm_rd32(key + 24) + (f >> 32);
    tlm_wr32(mac + 8, (uint32_t)f);
    f = (uint64_t)w3 + tlm_rd32(key + 28) + (f >> 32);
    tlm_wr32(mac + 12, (uint32_t)f);
}

/* ---- the envelopes ---- */
static const char update_domain[] = "tritlm federated update v1"; /* signed with its NUL, as the host does */
static const char model_domain[] = "tritlm federated model v1";

tlm_status tlm_seal_update(uint8_t *out, size_t cap, const uint8_t *msg, size_t n, const uint8_t seed[32],
                           const uint8_t server_box_pk[32], const uint8_t entropy[32], size_t *out_n, tlm_error *err)
{
    *out_n = 0;
    if (!out || !msg || !seed || !server_box_pk || !entropy) return tlm_fail(err, TLM_ERR_ARG, "seal: missing argument");
    if (n < 4 || memcmp(msg, "TLMU", 4)) return tlm_fail(err, TLM_ERR_MAGIC, "seal: not an update message");
    if (n > cap || cap - n < TLM_SEAL_OVERHEAD)
        return tlm_fail(err, TLM_ERR_ARENA, "seal: %zu bytes of room for a %zu-byte update, %zu needed", cap, n,
                        n + (size_t)TLM_SEAL_OVERHEAD);
    uint8_t *body = out + TLM_SEAL_OVERHEAD; /* the box's plaintext: signer (32), signature (64), message */
    uint8_t *inner = body - 96;
    memmove(body, msg, n);
    uint8_t h[64];
    ed25519_keys(h, inner, seed); /* the signer's public key, first in the box */
    const uint8_t *parts[2] = {(const uint8_t *)update_domain, body};
    const size_t parts_n[2] = {sizeof update_domain, n};
    ed25519_sign_expanded(inner + 32, h, inner, parts, parts_n, 2);
    memset(h, 0, sizeof h);
    /* the ephemeral key: the entropy keys a hash of the signature and the message */
    uint8_t esk[32], epk[32], shared[32], key[32], nonce[24], poly_key[32];
    static const uint8_t nine[32] = {9};
    static const uint8_t zero16[16] = {0};
    tlm_blake2b b;
    tlm_blake2b_init(&b, 32, entropy, 32);
    tlm_blake2b_update(&b, inner + 32, 64);
    tlm_blake2b_update(&b, body, n);
    tlm_blake2b_final(&b, esk);
    tlm_x25519(epk, esk, nine);
    tlm_x25519(shared, esk, server_box_pk);
    uint8_t any = 0;
    for (int i = 0; i < 32; i++) any |= shared[i];
    if (!any) {
        memset(esk, 0, sizeof esk);
        return tlm_fail(err, TLM_ERR_ARG, "seal: the server's key is not a usable X25519 key");
    }
    tlm_hsalsa20(key, zero16, shared); /* crypto_box's key */
    tlm_blake2b_init(&b, 24, NULL, 0); /* the sealed box's nonce: BLAKE2b-192(epk || server pk) */
    tlm_blake2b_update(&b, epk, 32);
    tlm_blake2b_update(&b, server_box_pk, 32);
    tlm_blake2b_final(&b, nonce);
    memset(poly_key, 0, sizeof poly_key);
    tlm_xsalsa20_xor(poly_key, 32, 0, nonce, key); /* the key stream's first 32 bytes key the MAC */
    tlm_xsalsa20_xor(inner, 96 + n, 32, nonce, key);
    memcpy(out, "TLMS", 4);
    tlm_wr32(out + 4, 1);
    memcpy(out + 8, epk, 32);
    tlm_poly1305(out + 40, inner, 96 + n, poly_key);
    memset(esk, 0, sizeof esk);
    memset(shared, 0, sizeof shared);
    memset(key, 0, sizeof key);
    memset(poly_key, 0, sizeof poly_key);
    *out_n = n + TLM_SEAL_OVERHEAD;
    return TLM_OK;
}

tlm_status tlm_seal_verify_model(const uint8_t *in, size_t n, const uint8_t server_sign_pk[32], const uint8_t **img,
                                 size_t *img_n, uint32_t *round, tlm_error *err)
{
    if (!in || n < 4 || memcmp(in, "TLMG", 4)) return tlm_fail(err, TLM_ERR_MAGIC, "not a signed model");
    if (n < 76) return tlm_fail(err, TLM_ERR_TRUNCATED, "signed model: %zu bytes, too short", n);
    if (tlm_rd32(in + 4) != 1)
        return tlm_fail(err, TLM_ERR_VERSION, "signed model: version %u, this build reads 1", (unsigned)tlm_rd32(in + 4));
    const uint8_t *parts[3] = {(const uint8_t *)model_domain, in + 4, in + 76};
    const size_t parts_n[3] = {sizeof model_domain, 8, n - 76};
    if (!tlm_ed25519_verify(in + 12, server_sign_pk, parts, parts_n, 3))
        return tlm_fail(err, TLM_ERR_CHECKSUM, "signed model: the server's signature does not verify");
    *img = in + 76;
    *img_n = n - 76;
    *round = tlm_rd32(in + 8);
    return TLM_OK;
}
