/* The device core's own cryptography (tritlm/seal.h) against libsodium,
 * the library the server opens and checks messages with: SHA-512, BLAKE2b,
 * X25519 (and RFC 7748's published vector), HSalsa20/XSalsa20, Poly1305,
 * scalars modulo the group order and Ed25519 signatures, on random inputs
 * of every length around the block sizes; then the envelopes, opened and
 * checked by the host's libsodium code (src/host/fedsec.c). */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sodium.h>

#include "../src/core/seal_internal.h"
#include "../src/host/fedsec.h"
#include "testutil.h"
#include "tritlm/fed.h"
#include "tritlm/seal.h"

static uint8_t *tiny_img;
static size_t tiny_bytes;

static int setup(void **state)
{
    (void)state;
    tu_tiny cfg = {.dim = 16, .hidden = 24, .layers = 2, .heads = 2, .kv_heads = 1, .seq_len = 16, .n_merges = 10, .shared = 1};
    tu_build_tiny(&cfg, 5, &tiny_img, &tiny_bytes);
    return sodium_init() < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    free(tiny_img);
    return 0;
}

/* An update as a device writes it with the core: every norm's gains of a
 * two-layer dim-16 model moved, in fp32, for this client. */
static uint8_t *device_update(uint32_t client, size_t *n)
{
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, tiny_img, tiny_bytes, NULL), TLM_OK);
    const size_t cap = TLM_FED_HEADER_BYTES + 5u * tlm_fed_entry_bytes(TLM_FED_F32, 16);
    uint8_t *u = malloc(cap);
    assert_non_null(u);
    const tlm_fed_header h = {3, client, tlm_fed_model_id(&m), 500};
    tlm_fed_writer w;
    float delta[16];
    for (int i = 0; i < 16; i++) delta[i] = 0.01f * (float)(i - 7);
    assert_int_equal(tlm_fed_begin(&w, u, cap, &h, NULL), TLM_OK);
    for (uint32_t l = 0; l < 2; l++) {
        assert_int_equal(tlm_fed_add(&w, TLM_ROLE_ATTN_NORM, l, TLM_FED_F32, delta, 16, NULL, NULL), TLM_OK);
        assert_int_equal(tlm_fed_add(&w, TLM_ROLE_FFN_NORM, l, TLM_FED_F32, delta, 16, NULL, NULL), TLM_OK);
    }
    assert_int_equal(tlm_fed_add(&w, TLM_ROLE_FINAL_NORM, 0, TLM_FED_F32, delta, 16, NULL, NULL), TLM_OK);
    assert_int_equal(tlm_fed_finish(&w, n, NULL), TLM_OK);
    return u;
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

/* Updates sealed by the device core's own cryptography (tritlm/seal.h, no
 * libsodium on the device) open on the server exactly as the host's do,
 * and the core checks the server's signed model as libsodium does. */
static void test_sealed_on_device(void **state)
{
    (void)state;
    tlm_fed_keys server, other_server, dev;
    assert_int_equal(tlm_fed_keygen(&server, NULL), TLM_OK);
    assert_int_equal(tlm_fed_keygen(&other_server, NULL), TLM_OK);
    assert_int_equal(tlm_fed_keygen(&dev, NULL), TLM_OK);
    const uint32_t ids[1] = {9};
    char rpath[4096];
    snprintf(rpath, sizeof rpath, "%s", tu_tmp("roster_dev.txt"));
    tu_write_roster(rpath, ids, &dev.pub, 1);
    tlm_fed_roster r;
    assert_int_equal(tlm_fed_roster_read(rpath, &r, NULL), TLM_OK);
    size_t n;
    uint8_t *u = device_update(9, &n);
    uint8_t entropy[32];
    memset(entropy, 0x5a, sizeof entropy);
    const size_t cap = n + TLM_SEAL_OVERHEAD;
    uint8_t *out = malloc(cap), *again = malloc(cap), *opened;
    size_t sn = 0, sn2 = 0, on;
    uint32_t who = 0;
    tlm_error err;
    /* the key file's seed is the first half of libsodium's secret key */
    assert_int_equal(tlm_seal_update(out, cap, u, n, dev.sign_sk, server.pub.box_pk, entropy, &sn, &err), TLM_OK);
    assert_int_equal(sn, cap);
    assert_true(tlm_fed_looks_sealed(out, sn));
    assert_null(memmem(out, sn, u + 40, 64)); /* not readable in transit */
    assert_int_equal(tlm_fed_unseal(&server, &r, out, sn, &opened, &on, &who, &err), TLM_OK);
    assert_int_equal(who, 9);
    assert_int_equal(on, n);
    assert_memory_equal(opened, u, n);
    free(opened);
    assert_int_not_equal(tlm_fed_unseal(&other_server, &r, out, sn, &opened, &on, &who, NULL), TLM_OK);
    for (size_t i = 0; i < sn; i += 1 + i / 16) {
        out[i] ^= 0x10;
        assert_int_not_equal(tlm_fed_unseal(&server, &r, out, sn, &opened, &on, &who, NULL), TLM_OK);
        out[i] ^= 0x10;
    }
    /* sealed in place (the update built at TLM_SEAL_OVERHEAD): the same bytes */
    memcpy(again + TLM_SEAL_OVERHEAD, u, n);
    assert_int_equal(tlm_seal_update(again, cap, again + TLM_SEAL_OVERHEAD, n, dev.sign_sk, server.pub.box_pk, entropy,
                                     &sn2, NULL),
                     TLM_OK);
    assert_int_equal(sn2, sn);
    assert_memory_equal(again, out, sn);
    /* the same entropy with another update: another ephemeral key, so no key stream is used twice */
    uint8_t *u2 = malloc(n);
    memcpy(u2, u, n);
    u2[n - 40] ^= 1; /* a payload byte: not a valid update any more, but sealing takes any TLMU bytes */
    assert_int_equal(tlm_seal_update(again, cap, u2, n, dev.sign_sk, server.pub.box_pk, entropy, &sn2, NULL), TLM_OK);
    assert_memory_not_equal(again + 8, out + 8, 32);
    free(u2);
    /* refused: too little room (nothing written), not an update, a server key of small order */
    memset(again, 0xab, cap);
    assert_int_not_equal(tlm_seal_update(again, cap - 1, u, n, dev.sign_sk, server.pub.box_pk, entropy, &sn2, &err),
                         TLM_OK);
    assert_non_null(strstr(err.msg, "room"));
    for (size_t i = 0; i < cap; i++) assert_int_equal(again[i], 0xab);
    assert_int_not_equal(tlm_seal_update(again, cap, tiny_img, n < tiny_bytes ? n : tiny_bytes, dev.sign_sk, server.pub.box_pk, entropy, &sn2, &err),
                         TLM_OK);
    assert_non_null(strstr(err.msg, "not an update"));
    static const uint8_t zero_key[32] = {0};
    assert_int_not_equal(tlm_seal_update(again, cap, u, n, dev.sign_sk, zero_key, entropy, &sn2, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "not a usable"));
    free(out);
    free(again);
    free(u);
    tlm_fed_roster_free(&r);

    /* the signed global model, signed by the host (libsodium), checked by the core */
    uint8_t *sm;
    size_t smn, in;
    const uint8_t *img;
    uint32_t round = 0;
    assert_int_equal(tlm_fed_sign_model(&server, 12, tiny_img, tiny_bytes, &sm, &smn, NULL), TLM_OK);
    assert_int_equal(tlm_seal_verify_model(sm, smn, server.pub.sign_pk, &img, &in, &round, &err), TLM_OK);
    assert_int_equal(round, 12);
    assert_int_equal(in, tiny_bytes);
    assert_ptr_equal(img, sm + smn - tiny_bytes);
    assert_int_not_equal(tlm_seal_verify_model(sm, smn, other_server.pub.sign_pk, &img, &in, &round, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "does not verify"));
    for (size_t i = 0; i < smn; i += 1 + i / 8) {
        sm[i] ^= 1;
        assert_int_not_equal(tlm_seal_verify_model(sm, smn, server.pub.sign_pk, &img, &in, &round, NULL), TLM_OK);
        sm[i] ^= 1;
    }
    for (size_t k = 0; k < smn; k += 1 + k / 4)
        assert_int_not_equal(tlm_seal_verify_model(sm, k, server.pub.sign_pk, &img, &in, &round, NULL), TLM_OK);
    assert_int_not_equal(tlm_seal_verify_model(tiny_img, tiny_bytes, server.pub.sign_pk, &img, &in, &round, &err),
                         TLM_OK);
    assert_non_null(strstr(err.msg, "not a signed model"));
    free(sm);
    tlm_fed_keys_wipe(&server);
    tlm_fed_keys_wipe(&dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha512),        cmocka_unit_test(test_blake2b),       cmocka_unit_test(test_x25519),
        cmocka_unit_test(test_salsa_poly),    cmocka_unit_test(test_scalar_reduce), cmocka_unit_test(test_ed25519),
        cmocka_unit_test(test_sealed_on_device),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
