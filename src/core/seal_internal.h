/* The primitives under tritlm/seal.h (seal_hash.c, seal_25519.c,
 * seal_box.c), for seal.c's envelopes and for the tests that check each
 * one against libsodium. Device core only. */
#ifndef TLM_CORE_SEAL_INTERNAL_H
#define TLM_CORE_SEAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t h[8];
    uint64_t bytes; /* message length so far (messages below 2^61 bytes) */
    uint8_t buf[128];
    size_t fill;
} tlm_sha512;

void tlm_sha512_init(tlm_sha512 *s);
void tlm_sha512_update(tlm_sha512 *s, const uint8_t *p, size_t n);
void tlm_sha512_final(tlm_sha512 *s, uint8_t out[64]);

typedef struct {
    uint64_t h[8];
    uint64_t bytes;
    uint8_t buf[128];
    size_t fill, out_n;
} tlm_blake2b;

/* out_n 1..64, key_n 0..64 */
void tlm_blake2b_init(tlm_blake2b *s, size_t out_n, const uint8_t *key, size_t key_n);
void tlm_blake2b_update(tlm_blake2b *s, const uint8_t *p, size_t n);
void tlm_blake2b_final(tlm_blake2b *s, uint8_t *out);

/* X25519: out = scalar * u (RFC 7748, the scalar clamped) */
void tlm_x25519(uint8_t out[32], const uint8_t scalar[32], const uint8_t u[32]);

/* HSalsa20 of a 16-byte input under a 32-byte key */
void tlm_hsalsa20(uint8_t out[32], const uint8_t in[16], const uint8_t key[32]);
/* XSalsa20: p[0..n) ^= the key stream from byte `skip` on */
void tlm_xsalsa20_xor(uint8_t *p, size_t n, uint64_t skip, const uint8_t nonce[24], const uint8_t key[32]);
void tlm_poly1305(uint8_t mac[16], const uint8_t *m, size_t n, const uint8_t key[32]);

/* Ed25519 signature of the concatenation of n_parts byte strings */
void tlm_ed25519_sign(uint8_t sig[64], const uint8_t seed[32], const uint8_t *const *part, const size_t *part_n,
                      size_t n_parts);
/* A seed's expanded key (the clamped secret scalar, then the nonce
 * prefix) and its public key; a signature under them: the pieces of
 * tlm_ed25519_sign, for a caller that also needs the public key. */
void tlm_ed25519_keys(uint8_t h[64], uint8_t pk[32], const uint8_t seed[32]);
void tlm_ed25519_sign_expanded(uint8_t sig[64], const uint8_t h[64], const uint8_t pk[32], const uint8_t *const *part,
                               const size_t *part_n, size_t n_parts);
/* 1 when sig verifies for the concatenation under pk, else 0 */
int tlm_ed25519_verify(const uint8_t sig[64], const uint8_t pk[32], const uint8_t *const *part, const size_t *part_n,
                       size_t n_parts);
/* out = in (n bytes, little-endian, n <= 64) mod the group order */
void tlm_sc_reduce(uint8_t out[32], const uint8_t *in, size_t n);

#endif
