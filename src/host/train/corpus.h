/* A text corpus as one token stream: each story (split as the evaluation
 * protocol splits them, or on another separator) encoded with BOS at its
 * start, then concatenated. */
#ifndef TLM_TRAIN_CORPUS_H
#define TLM_TRAIN_CORPUS_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/model.h"

typedef struct tlm_corpus {
    uint32_t *tokens;
    size_t n;
    size_t stories;
} tlm_corpus;

/* sep: NULL for <|endoftext|>, else the separator ("\n": one story a line) */
tlm_status tlm_corpus_load(tlm_corpus *c, const tlm_model *tokenizer, const char *path, const char *sep, tlm_error *err);
void tlm_corpus_free(tlm_corpus *c);

#endif
