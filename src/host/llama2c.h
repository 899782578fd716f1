/* llama2.c interoperability: checkpoints (import: version 0, the legacy fp32
 * layout of run.c, and versions 1 and 2 (Q8_0) of export.py; export: version 0) and the
 * tokenizer.bin format. */
#ifndef TLM_HOST_LLAMA2C_H
#define TLM_HOST_LLAMA2C_H

#include <stddef.h>
#include <stdint.h>

#include "image_build.h"
#include "tritlm/model.h"

/* Parses a llama2.c tokenizer file for a vocabulary of n tokens (the
 * format does not store the count; n = 0 reads every token in the file). */
tlm_status tlm_llama2c_read_tokenizer(const char *path, uint32_t n, tlm_vocab *v, tlm_error *err);

/* A vocabulary in the llama2.c tokenizer.bin layout (malloc'd). */
tlm_status tlm_vocab_to_llama2c(const tlm_vocab *v, uint8_t **out, size_t *bytes, tlm_error *err);

/* Whether buf looks like a llama2.c checkpoint: version 1/2's magic, or a
 * version-0 header whose dimensions make a usable model (what import
 * checks first). */
int tlm_llama2c_looks_like(const uint8_t *buf, size_t n);

/* Imports checkpoint + tokenizer into a model image (malloc'd). */
tlm_status tlm_llama2c_import(const char *ckpt_path, const char *tok_path, uint8_t **image, size_t *bytes,
                              tlm_error *err);

/* Exports a model to a llama2.c checkpoint (weights converted to fp32 if
 * stored otherwise) and, if tok_path is not NULL, its tokenizer. Files are
 * written atomically. */
tlm_status tlm_llama2c_export(const tlm_model *m, const char *ckpt_path, const char *tok_path, tlm_error *err);

#endif
