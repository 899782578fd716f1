/* Hashes for tritlm/seal.h: SHA-512 (FIPS 180-4) and BLAKE2b (RFC 7693). */
#include <string.h>

#include "le.h"
#include "seal_internal.h"

/* The initial values are the first 64 bits of the fractional parts of the
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

/* Copies what fits of p[0..n) into a 128-byte block buffer holding *fill
 * bytes; returns how many it took. */
static size_t fill_block(uint8_t buf[128], size_t *fill, const uint8_t *p, size_t n)
{
    const size_t k = 128 - *fill < n ? 128 - *fill : n;
    memcpy(buf + *fill, p, k);
    *fill += k;
    return k;
}

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
        const size_t k = fill_block(s->buf, &s->fill, p, n);
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

static const uint8_t blake2b_sigma[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
}; /* rounds 10 and 11 take rows 0 and 1 again */

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
        const uint8_t *g = blake2b_sigma[r % 10];
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
        const size_t k = fill_block(s->buf, &s->fill, p, n);
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

