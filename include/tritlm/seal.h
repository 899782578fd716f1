/* Protected federated messages made and checked on the device itself, with
 * no library: a device signs its update with its Ed25519 key and seals it
 * to the server's X25519 key before it leaves, in the same envelope the
 * host makes with libsodium (docs/FORMAT.md, "Sealed update and signed
 * model"), so that `tritlm fed aggregate --key` opens either; and it checks
 * the server's signature on a global model before using it.
 *
 * The primitives (SHA-512, BLAKE2b, X25519, Ed25519, XSalsa20-Poly1305)
 * are written here in portable C for 32-bit cores: no allocation, no
 * tables beyond the hash constants, a few KB of stack; the secret-
 * dependent steps (the scalar ladders, the scalar reduction) run the same
 * instructions whatever the secret. The tests check each against
 * libsodium. */
#ifndef TRITLM_SEAL_H
#define TRITLM_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A sealed update is the message plus this many bytes: magic and version
 * (8), the box's ephemeral public key and MAC (48), the signer's public
 * key and signature (96). The sealed message's ciphertext starts at this
 * offset, so a message placed there is sealed in place. */
#define TLM_SEAL_OVERHEAD 152u

/* The envelopes' constants (docs/FORMAT.md, "Sealed update and signed
 * model"), the host's (src/host/fedsec.c) as well: magics, version, the
 * domain strings signatures cover (with their NUL) and the bytes before a
 * signed model's image (magic, version, round, signature). */
#define TLM_SEAL_SEALED_MAGIC "TLMS"
#define TLM_SEAL_SIGNED_MAGIC "TLMG"
#define TLM_SEAL_VERSION 1u
#define TLM_SEAL_UPDATE_DOMAIN "tritlm federated update v1"
#define TLM_SEAL_MODEL_DOMAIN "tritlm federated model v1"
#define TLM_SEAL_MODEL_HEAD 76u

/* The Ed25519 public key of a 32-byte seed (the first half of a device's
 * .key file). */
void tlm_seal_public_key(uint8_t pk[32], const uint8_t seed[32]);

/* Signs the federated update msg[0..n) with the device's Ed25519 seed and
 * seals signer, signature and update to the server's X25519 public key:
 * out[0 .. n + TLM_SEAL_OVERHEAD) (cap bytes of room). msg may lie
 * anywhere in out or outside it. The box's ephemeral key is derived from
 * entropy (32 bytes from the device's random source) together with the
 * signature and the message, so that reused entropy never reuses a key
 * stream for a different message. Fails on anything that is not an
 * update message, on too little room (out untouched), or on a server key
 * of small order (a shared secret of zero: the message is then in plain
 * text at out + TLM_SEAL_OVERHEAD). */
tlm_status tlm_seal_update(uint8_t *out, size_t cap, const uint8_t *msg, size_t n, const uint8_t seed[32],
                           const uint8_t server_box_pk[32], const uint8_t entropy[32], size_t *out_n, tlm_error *err);

/* Checks a signed global model (TLMG) against the server's Ed25519 public
 * key: on success *img and *img_n give the model image inside in[] and
 * *round the round it is for. Fails on a wrong magic, version, length or
 * signature, on a non-canonical signature, and on a server key that is not
 * a point or has small order (with such a key a forged signature of the
 * identity would pass). */
tlm_status tlm_seal_verify_model(const uint8_t *in, size_t n, const uint8_t server_sign_pk[32], const uint8_t **img,
                                 size_t *img_n, uint32_t *round, tlm_error *err);

#ifdef __cplusplus
}
#endif

#endif
