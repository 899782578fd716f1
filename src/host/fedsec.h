/* Protected federated messages (libsodium): device and server keys, the
 * sealed and signed update a device sends through the broker, and the
 * signed global model the server publishes. Layouts in docs/FORMAT.md.
 *
 * What it protects against: anyone who can read or write the broker's
 * topics (the broker itself, another client) learns nothing of an update
 * but its size, cannot make the server accept an update from a device it
 * has not enrolled, cannot pass one device's update off as another's, and
 * cannot make a device train from a model the server did not sign. The
 * server itself still reads every update (see docs/FEDERATED.md: the
 * aggregation's differential privacy bounds what the published model
 * reveals about any one device, not what the server sees). */
#ifndef TLM_HOST_FEDSEC_H
#define TLM_HOST_FEDSEC_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/seal.h"
#include "tritlm/status.h"

#define TLM_FED_SEALED_MAGIC TLM_SEAL_SEALED_MAGIC
#define TLM_FED_SIGNED_MAGIC TLM_SEAL_SIGNED_MAGIC

/* A party's public key: Ed25519 (signatures) and X25519 (sealed boxes). */
typedef struct tlm_fed_pub {
    uint8_t sign_pk[32], box_pk[32];
} tlm_fed_pub;

typedef struct tlm_fed_keys {
    tlm_fed_pub pub;
    uint8_t sign_sk[64], box_sk[32];
} tlm_fed_keys;

tlm_status tlm_fed_keygen(tlm_fed_keys *k, tlm_error *err);
/* Overwrites the secrets in memory (when done with them). */
void tlm_fed_keys_wipe(tlm_fed_keys *k);
/* The same for any n bytes (a seed, a decrypted message). */
void tlm_secret_wipe(void *p, size_t n);
/* BASE.key (the secret, mode 0600, never overwriting a file) and BASE.pub
 * (one line to give to the other side). */
tlm_status tlm_fed_keys_write(const char *base, const tlm_fed_keys *k, tlm_error *err);
/* A .key file: checks that its two secrets give the public keys it holds. */
tlm_status tlm_fed_keys_read(const char *path, tlm_fed_keys *k, tlm_error *err);
/* A .pub file (or any text whose first word is a public key line). */
tlm_status tlm_fed_pub_read(const char *path, tlm_fed_pub *p, tlm_error *err);
/* The public key's text form, "tritlm-fed-public-1 HEX" (NUL-terminated). */
#define TLM_FED_PUB_TEXT 160u
void tlm_fed_pub_text(const tlm_fed_pub *p, char out[TLM_FED_PUB_TEXT]);

/* The devices a server accepts updates from: lines "CLIENT_ID PUBLIC_KEY"
 * ('#' comments and blank lines allowed); ids and keys each unique. */
typedef struct tlm_fed_roster {
    uint32_t n;
    uint32_t *client;
    tlm_fed_pub *pub;
} tlm_fed_roster;
tlm_status tlm_fed_roster_read(const char *path, tlm_fed_roster *r, tlm_error *err);
void tlm_fed_roster_free(tlm_fed_roster *r);

/* A device's update message (tritlm/fed.h) signed with its key and sealed
 * to the server's: *out is malloc'd. */
tlm_status tlm_fed_seal(const tlm_fed_keys *device, const tlm_fed_pub *server, const uint8_t *msg, size_t n,
                        uint8_t **out, size_t *out_n, tlm_error *err);
/* Opens a sealed update (or secure aggregation reveal, which seals the
 * same way: its first bytes say which) with the server's key, checks the
 * signature of an enrolled device and that the message names that
 * device's client id. *msg (malloc'd) is the update, still to be validated
 * against the model, or the reveal, still to be parsed. */
tlm_status tlm_fed_unseal(const tlm_fed_keys *server, const tlm_fed_roster *r, const uint8_t *in, size_t n,
                          uint8_t **msg, size_t *msg_n, uint32_t *client, tlm_error *err);
/* Whether in starts like a sealed update (for a clear message when a
 * server expecting sealed updates gets a plain one, and the reverse). */
int tlm_fed_looks_sealed(const uint8_t *in, size_t n);

/* The global model signed by the server for round `round`. */
tlm_status tlm_fed_sign_model(const tlm_fed_keys *server, uint32_t round, const uint8_t *img, size_t n, uint8_t **out,
                              size_t *out_n, tlm_error *err);
/* Checks the server's signature; *img points into in. */
tlm_status tlm_fed_verify_model(const tlm_fed_pub *server, const uint8_t *in, size_t n, const uint8_t **img,
                                size_t *img_n, uint32_t *round, tlm_error *err);

#endif
