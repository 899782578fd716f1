/* The device core's own cryptography (tritlm/seal.h) against libsodium,
 * the library the server opens and checks messages with: SHA-512, BLAKE2b,
 * X25519 (and RFC 7748's published vector), HSalsa20/XSalsa20, Poly1305,
 * scalars modulo the group order and Ed25519 signatures, on random inputs
 * of every length around the block sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sodium.h>

#include "../src/core/seal_internal.h"
#include "tritlm/seal.h"

static int setup(void **state)
{
    (void)state;
    return sodium_init() < 0 ? -1 : 0;
}

static void test_sha512(void **state)
{
    (void)state;
    uint8_t m[600], a[64], b[64];
    for (size_t n = 0; n < sizeof m; n += n < 260 ? 1 : 17) {
        randombytes_buf(m, n);
        crypto_hash_sha512(a, m, n);
        tlm_sha512 s;
        tlm_sha512_init(&s);
        size_t at = 0; /* fed in random pieces */
        while (at < n) {
            size_t k = randombytes_uniform(140) + 1;
            if (k > n - at) k = n - at;
            tlm_sha512_update(&s, m + at, k);
            at += k;
        }
        tlm_sha512_final(&s, b);
        assert_memory_equal(a, b, 64);
    }
}

static void test_blake2b(void **state)
{
    (void)state;
    uint8_t m[400], key[64], a[64], b[64];
    static const size_t outs[] = {16, 24, 32, 64}, keys[] = {0, 16, 32, 64};
    for (size_t n = 0; n < sizeof m; n += n < 300 ? 1 : 29) {
        const size_t on = outs[n % 4], kn = keys[(n / 4) % 4];
        randombytes_buf(m, n);
        randombytes_buf(key, sizeof key);
        crypto_generichash(a, on, m, n, kn ? key : NULL, kn);
        tlm_blake2b s;
        tlm_blake2b_init(&s, on, key, kn);
        const size_t half = n ? randombytes_uniform((uint32_t)n) : 0;
        tlm_blake2b_update(&s, m, half);
        tlm_blake2b_update(&s, m + half, n - half);
        tlm_blake2b_final(&s, b);
        assert_memory_equal(a, b, on);
    }
}

static void from_hex(uint8_t *out, const char *hex)
{
    size_t n = strlen(hex) / 2, got = 0;
    assert_int_equal(sodium_hex2bin(out, n, hex, 2 * n, NULL, &got, NULL), 0);
    assert_int_equal(got, n);
}

static void test_x25519(void **state)
{
    (void)state;
    /* RFC 7748, section 5.2, the first vector */
    uint8_t k[32], u[32], want[32], got[32];
    from_hex(k, "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
    from_hex(u, "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
    from_hex(want, "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
    tlm_x25519(got, k, u);
    assert_memory_equal(got, want, 32);
    static const uint8_t nine[32] = {9};
    for (int t = 0; t < 40; t++) {
        randombytes_buf(k, 32);
        randombytes_buf(u, 32);
        if (t % 4 == 0) u[31] |= 0x80; /* the top bit is ignored, as the RFC says */
        if (t % 8 == 1) memset(u + 1, 0xff, 31); /* a u at or above p: taken mod p */
        if (crypto_scalarmult(want, k, u) == 0) { /* libsodium refuses small-order points */
            tlm_x25519(got, k, u);
            assert_memory_equal(got, want, 32);
        }
        crypto_scalarmult_base(want, k);
        tlm_x25519(got, k, nine);
        assert_memory_equal(got, want, 32);
    }
}

static void test_salsa_poly(void **state)
{
    (void)state;
    uint8_t key[32], nonce[24], in16[16], a[32], b[32];
    for (int t = 0; t < 20; t++) {
        randombytes_buf(key, 32);
        randombytes_buf(in16, 16);
        crypto_core_hsalsa20(a, in16, key, NULL);
        tlm_hsalsa20(b, in16, key);
        assert_memory_equal(a, b, 32);
    }
    uint8_t stream[700], mine[700];
    for (int t = 0; t < 30; t++) {
        randombytes_buf(key, 32);
        randombytes_buf(nonce, 24);
        crypto_stream_xsalsa20(stream, sizeof stream, nonce, key);
        const size_t skip = randombytes_uniform(200), n = randombytes_uniform((uint32_t)(sizeof stream - skip));
        memset(mine, 0, n);
        tlm_xsalsa20_xor(mine, n, skip, nonce, key);
        assert_memory_equal(mine, stream + skip, n);
    }
    uint8_t m[300], mac_a[16], mac_b[16];
    for (size_t n = 0; n < sizeof m; n++) {
        randombytes_buf(key, 32);
        randombytes_buf(m, n);
        if (n % 7 == 3) { /* r and the message at their largest: the final reduction's edge */
            memset(key, 0xff, 32);
            memset(m, 0xff, n);
        }
        crypto_onetimeauth_poly1305(mac_a, m, n, key);
        tlm_poly1305(mac_b, m, n, key);
        assert_memory_equal(mac_a, mac_b, 16);
    }
}

static void test_scalar_reduce(void **state)
{
    (void)state;
    uint8_t in[64], a[32], b[32];
    for (int t = 0; t < 200; t++) {
        randombytes_buf(in, 64);
        if (t == 0) memset(in, 0xff, 64);
        if (t == 1) memset(in, 0, 64);
        crypto_core_ed25519_scalar_reduce(a, in);
        tlm_sc_reduce(b, in, 64);
        assert_memory_equal(a, b, 32);
    }
    /* L itself reduces to 0, L - 1 to itself */
    uint8_t l[32];
    from_hex(l, "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
    tlm_sc_reduce(b, l, 32);
    memset(a, 0, 32);
    assert_memory_equal(a, b, 32);
    l[0]--;
    tlm_sc_reduce(b, l, 32);
    assert_memory_equal(l, b, 32);
}

static void test_ed25519(void **state)
{
    (void)state;
    uint8_t seed[32], pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES], mine_pk[32];
    uint8_t m[300], sig_a[64], sig_b[64];
    for (int t = 0; t < 12; t++) {
        randombytes_buf(seed, 32);
        crypto_sign_seed_keypair(pk, sk, seed);
        tlm_seal_public_key(mine_pk, seed);
        assert_memory_equal(mine_pk, pk, 32);
        const size_t n = (size_t)t * 23;
        randombytes_buf(m, n);
        crypto_sign_detached(sig_a, NULL, m, n, sk);
        /* the same message in two pieces: the signature covers their concatenation */
        const size_t cut = n / 3;
        const uint8_t *parts[2] = {m, m + cut};
        const size_t parts_n[2] = {cut, n - cut};
        tlm_ed25519_sign(sig_b, seed, parts, parts_n, 2);
        assert_memory_equal(sig_a, sig_b, 64); /* Ed25519 is deterministic: the same bytes */
        assert_true(tlm_ed25519_verify(sig_a, pk, parts, parts_n, 2));
        /* any flipped bit of signature, key or message fails */
        const size_t bit = randombytes_uniform(512);
        sig_a[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_false(tlm_ed25519_verify(sig_a, pk, parts, parts_n, 2));
        sig_a[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        pk[t % 32] ^= 4;
        assert_false(tlm_ed25519_verify(sig_a, pk, parts, parts_n, 2));
        pk[t % 32] ^= 4;
        if (n) {
            m[n - 1] ^= 1;
            assert_false(tlm_ed25519_verify(sig_a, pk, parts, parts_n, 2));
            assert_int_not_equal(crypto_sign_verify_detached(sig_a, m, n, pk), 0);
            m[n - 1] ^= 1;
        }
        /* S + L: the same point equation, a second encoding; refused as libsodium does */
        uint8_t s2[64];
        memcpy(s2, sig_a, 64);
        static const uint8_t l[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
                                      0xa2, 0xde, 0xf9, 0xde, 0x14, 0,    0,    0,    0,    0,    0,
                                      0,    0,    0,    0,    0,    0,    0,    0,    0,    0x10};
        unsigned c = 0;
        for (int i = 0; i < 32; i++) {
            c += (unsigned)s2[32 + i] + l[i];
            s2[32 + i] = (uint8_t)c;
            c >>= 8;
        }
        assert_false(tlm_ed25519_verify(s2, pk, parts, parts_n, 2));
        assert_int_not_equal(crypto_sign_verify_detached(s2, m, n, pk), 0);
    }
    /* a key that is not a point */
    uint8_t bad[32];
    memset(bad, 0xff, 32);
    const uint8_t *one[1] = {m};
    const size_t one_n[1] = {10};
    assert_false(tlm_ed25519_verify(sig_b, bad, one, one_n, 1));
    /* keys of small order: the identity (y = 1) and the point of order 2 (y = -1). With R the
     * identity and S = 0 the verification equation holds for any message: refused, as libsodium does */
    uint8_t ident[32] = {1}, forged[64] = {1};
    assert_false(tlm_ed25519_verify(forged, ident, one, one_n, 1));
    assert_int_not_equal(crypto_sign_verify_detached(forged, m, 10, ident), 0);
    uint8_t minus1[32];
    from_hex(minus1, "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
    assert_false(tlm_ed25519_verify(forged, minus1, one, one_n, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha512),        cmocka_unit_test(test_blake2b),       cmocka_unit_test(test_x25519),
        cmocka_unit_test(test_salsa_poly),    cmocka_unit_test(test_scalar_reduce), cmocka_unit_test(test_ed25519),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
