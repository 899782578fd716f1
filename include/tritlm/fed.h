/* Federated updates: the one message format a device writes (the change
 * its local training made to some of the model's tensors) and a server
 * validates before it touches the global model. Versioned, length-prefixed
 * and checksummed; layout in docs/FORMAT.md. Deltas travel as fp32, int8
 * or ternary (2 bits per value) with one scale per tensor, or, for a
 * matrix, as two int8 factors of a low rank; int8 and ternary round
 * stochastically, so a decoded delta is an unbiased estimate of the
 * device's (its expectation is the exact delta, or the exact product of
 * the factors). No allocation, no I/O. */
#ifndef TRITLM_FED_H
#define TRITLM_FED_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/dp.h"
#include "tritlm/model.h"
#include "tritlm/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TLM_FED_VERSION 1u
#define TLM_FED_MAGIC "TLMU" /* an update message's first 4 bytes */
#define TLM_FED_HEADER_BYTES 40u
#define TLM_FED_ENTRY_BYTES 16u

/* How an entry's values are coded. */
typedef enum tlm_fed_enc {
    TLM_FED_F32 = 0, /* exact: 4 bytes per value */
    TLM_FED_I8 = 1,  /* q * scale, q in [-127, 127], scale = max|x| / 127 */
    TLM_FED_T2 = 2,  /* t * scale, t in {-1, 0, +1} (2-bit codes, 4 per byte), scale = max|x| */
    TLM_FED_MASKED = 3, /* a device's share of a secure sum: u32 per value, (integer update + noise +
                          pairwise mask) mod 2^32; scale = the grid step. Only the sum of every
                          device's shares means anything: decoded alone it is noise */
    TLM_FED_LOWRANK_I8 = 4 /* a rows x cols matrix as B A, B (rows x rank) and A (rank x cols)
                              each in int8 with its own scale (A's in the entry's scale field,
                              B's at the start of the payload), rounded stochastically each;
                              decoded, the product. tlm_fed_add_lowrank writes it */
} tlm_fed_enc;

typedef struct tlm_fed_header {
    uint32_t round;      /* the federated round the update answers */
    uint32_t client;     /* a pseudonymous device id */
    uint32_t base_crc;   /* tlm_fed_model_id of the global model the delta applies to */
    uint32_t n_examples; /* how much local data it comes from (the aggregation's weight) */
} tlm_fed_header;

/* An id for a model image: its CRC-32 (what base_crc must equal). */
uint32_t tlm_fed_model_id(const tlm_model *m);
/* The same id from the image's bytes (one not opened as a tlm_model). */
uint32_t tlm_fed_image_id(const void *image, size_t bytes);

/* Bytes one entry of `count` values takes with encoding enc (0 if enc is
 * unknown, TLM_FED_LOWRANK_I8, or the size overflows). */
size_t tlm_fed_entry_bytes(uint32_t enc, uint32_t count);
/* Bytes of a TLM_FED_LOWRANK_I8 entry (0 if the shape is out of range:
 * rank 1..255 and at most min(rows, cols), rows below 65536). */
size_t tlm_fed_lowrank_entry_bytes(uint32_t rows, uint32_t cols, uint32_t rank);

/* Writing: begin, add one entry per tensor, finish. The message is built
 * in buf (cap bytes); rng drives the stochastic rounding of I8 and T2
 * entries (it may be NULL for F32 only). */
typedef struct tlm_fed_writer {
    uint8_t *buf;
    size_t cap, len;
    uint32_t n_entries;
} tlm_fed_writer;

tlm_status tlm_fed_begin(tlm_fed_writer *w, void *buf, size_t cap, const tlm_fed_header *h, tlm_error *err);
/* delta: `count` finite values of tensor (role, layer). */
tlm_status tlm_fed_add(tlm_fed_writer *w, tlm_role role, uint32_t layer, tlm_fed_enc enc, const float *delta,
                       uint32_t count, tlm_rand *rng, tlm_error *err);
/* The delta of tensor (role, layer), a rows x cols matrix, as b a with b
 * (rows x rank) and a (rank x cols), finite values, in TLM_FED_LOWRANK_I8. */
tlm_status tlm_fed_add_lowrank(tlm_fed_writer *w, tlm_role role, uint32_t layer, const float *b, const float *a,
                               uint32_t rows, uint32_t cols, uint32_t rank, tlm_rand *rng, tlm_error *err);
/* A masked share (secure aggregation, made on the host: src/host/secagg.h):
 * `count` 32-bit values of tensor (role, layer) on a grid of step grid > 0. */
tlm_status tlm_fed_add_masked(tlm_fed_writer *w, tlm_role role, uint32_t layer, const uint32_t *share, uint32_t count,
                              float grid, tlm_error *err);
/* Seals the message (length and checksum); *bytes is its size. */
tlm_status tlm_fed_finish(tlm_fed_writer *w, size_t *bytes, tlm_error *err);

/* Reading. tlm_fed_validate checks every field against the n bytes (and,
 * with m, that each entry names one of m's tensors with its exact size,
 * once, and that base_crc is m's id) before anything else reads them. */
typedef struct tlm_fed_info {
    tlm_fed_header h;
    uint32_t n_entries;
    size_t bytes;
} tlm_fed_info;

tlm_status tlm_fed_validate(const void *buf, size_t n, const tlm_model *m, tlm_fed_info *info, tlm_error *err);
/* The same with m's id already computed (model_id = tlm_fed_model_id(m),
 * a checksum of the whole image): for a server that checks many updates
 * against one model. */
tlm_status tlm_fed_validate_for(const void *buf, size_t n, const tlm_model *m, uint32_t model_id, tlm_fed_info *info,
                                tlm_error *err);

typedef struct tlm_fed_entry {
    tlm_role role;
    uint32_t layer;
    tlm_fed_enc enc;
    uint32_t count;
    float scale;
    uint32_t rank, rows; /* TLM_FED_LOWRANK_I8: the factors' rank and the matrix's rows; else 0 */
    const uint8_t *data;
} tlm_fed_entry;

/* Entry i of a validated message (i < n_entries). */
void tlm_fed_entry_at(const void *buf, uint32_t i, tlm_fed_entry *e);
/* The entry whose head starts at `entry` (an entry of a validated message,
 * e.g. tlm_fed_entry_at's e->data - TLM_FED_ENTRY_BYTES), without walking
 * the message to it. */
void tlm_fed_entry_read(const void *entry, tlm_fed_entry *e);
/* Its values as floats (e->count of them; a low-rank entry's product row
 * by row, each value an exact integer sum times the two scales). */
void tlm_fed_entry_decode(const tlm_fed_entry *e, float *out);
/* Row `row` of a TLM_FED_LOWRANK_I8 entry's product (count / rows values),
 * as tlm_fed_entry_decode writes it. */
void tlm_fed_lowrank_row(const tlm_fed_entry *e, uint32_t row, float *out);

#ifdef __cplusplus
}
#endif

#endif
