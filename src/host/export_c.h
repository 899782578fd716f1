/* A model image as C source: a 64-byte aligned const array and a header
 * with its size and the runtime arena it needs, for toolchains and build
 * systems that cannot link a binary file (Arduino, Keil, IAR, ESP-IDF
 * without an aligned EMBED_FILES). */
#ifndef TLM_HOST_EXPORT_C_H
#define TLM_HOST_EXPORT_C_H

#include <stdint.h>

#include "tritlm/model.h"

/* Writes c_path (the array) and h_path (its declaration and the macros
 * IDENT_BYTES, IDENT_CTX, IDENT_ARENA_BYTES, IDENT_ARENA_BYTES_KV_INT8,
 * IDENT_CRC32), each atomically, the header first. `ident` must be a C
 * identifier; c_path's #include names h_path's last component. `m` is the
 * validated model whose image is written; ctx the context the arena figures
 * are for (1..seq_len); the comments name source_name's last component
 * (which holds no '/', so no comment delimiter). */
tlm_status tlm_export_c(const tlm_model *m, const char *ident, uint32_t ctx, const char *source_name,
                        const char *c_path, const char *h_path, tlm_error *err);

/* 1 when s is a C identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 chars). */
int tlm_is_c_identifier(const char *s);

#endif
