/* The secretbox of NaCl for tritlm/seal.h: HSalsa20, XSalsa20 and Poly1305. */
#include <string.h>

#include "le.h"
#include "seal_internal.h"

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

