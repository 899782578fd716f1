/* Device-side protection of federated messages (tritlm/seal.h): the
 * sealed-update and signed-model envelopes (docs/FORMAT.md), built on the
 * primitives of seal_hash.c, seal_25519.c and seal_box.c. */
#include "tritlm/seal.h"

#include <string.h>

#include "le.h"
#include "seal_internal.h"
#include "tritlm/fed.h"

tlm_status tlm_seal_update(uint8_t *out, size_t cap, const uint8_t *msg, size_t n, const uint8_t seed[32],
                           const uint8_t server_box_pk[32], const uint8_t entropy[32], size_t *out_n, tlm_error *err)
{
    *out_n = 0;
    if (!out || !msg || !seed || !server_box_pk || !entropy) return tlm_fail(err, TLM_ERR_ARG, "seal: missing argument");
    if (n < 4 || memcmp(msg, TLM_FED_MAGIC, 4)) return tlm_fail(err, TLM_ERR_MAGIC, "seal: not an update message");
    if (n > cap || cap - n < TLM_SEAL_OVERHEAD)
        return tlm_fail(err, TLM_ERR_ARENA, "seal: %zu bytes of room for a %zu-byte update, %zu needed", cap, n,
                        n + (size_t)TLM_SEAL_OVERHEAD);
    uint8_t *body = out + TLM_SEAL_OVERHEAD; /* the box's plaintext: signer (32), signature (64), message */
    uint8_t *inner = body - 96;
    memmove(body, msg, n);
    uint8_t h[64];
    tlm_ed25519_keys(h, inner, seed); /* the signer's public key, first in the box */
    const uint8_t *parts[2] = {(const uint8_t *)TLM_SEAL_UPDATE_DOMAIN, body};
    const size_t parts_n[2] = {sizeof TLM_SEAL_UPDATE_DOMAIN, n};
    tlm_ed25519_sign_expanded(inner + 32, h, inner, parts, parts_n, 2);
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
    memcpy(out, TLM_SEAL_SEALED_MAGIC, 4);
    tlm_wr32(out + 4, TLM_SEAL_VERSION);
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
    if (!in || n < 4 || memcmp(in, TLM_SEAL_SIGNED_MAGIC, 4)) return tlm_fail(err, TLM_ERR_MAGIC, "not a signed model");
    if (n < TLM_SEAL_MODEL_HEAD) return tlm_fail(err, TLM_ERR_TRUNCATED, "signed model: %zu bytes, too short", n);
    if (tlm_rd32(in + 4) != TLM_SEAL_VERSION)
        return tlm_fail(err, TLM_ERR_VERSION, "signed model: version %u, this build reads %u", (unsigned)tlm_rd32(in + 4),
                        TLM_SEAL_VERSION);
    const uint8_t *parts[3] = {(const uint8_t *)TLM_SEAL_MODEL_DOMAIN, in + 4, in + TLM_SEAL_MODEL_HEAD};
    const size_t parts_n[3] = {sizeof TLM_SEAL_MODEL_DOMAIN, 8, n - TLM_SEAL_MODEL_HEAD};
    if (!tlm_ed25519_verify(in + 12, server_sign_pk, parts, parts_n, 3))
        return tlm_fail(err, TLM_ERR_CHECKSUM, "signed model: the server's signature does not verify");
    *img = in + TLM_SEAL_MODEL_HEAD;
    *img_n = n - TLM_SEAL_MODEL_HEAD;
    *round = tlm_rd32(in + 8);
    return TLM_OK;
}
