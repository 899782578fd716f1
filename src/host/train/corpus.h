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
    uint32_t *targets; /* with label_only: tokens[i] where position i is a label's, else
                          TLM_NO_TARGET; NULL otherwise (every token is a target) */
} tlm_corpus;

/* sep: NULL for <|endoftext|>, else the separator ("\n": one story a line).
 * label_only: every story is "TEXT<TAB>LABEL" and only the label's tokens
 * (from the one holding the last TAB) and the BOS after them are targets:
 * a classifier for tlm_classify that spends nothing on modeling the texts. */
tlm_status tlm_corpus_load(tlm_corpus *c, const tlm_model *tokenizer, const char *path, const char *sep, int label_only,
                           tlm_error *err);
void tlm_corpus_free(tlm_corpus *c);

#endif
