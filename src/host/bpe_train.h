/* Training a byte-fallback BPE tokenizer in llama2.c's format: <unk>, BOS,
 * EOS, the 256 <0xNN> byte tokens, the characters that cover the text,
 * then merges scored by their order (earlier merges score higher, which is
 * the order llama2.c-style encoding applies them). Deterministic. */
#ifndef TLM_HOST_BPE_TRAIN_H
#define TLM_HOST_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "image_build.h"

typedef struct tlm_bpe_opts {
    uint32_t vocab_size;     /* total tokens, >= 259 + 1 */
    double char_coverage;    /* fraction of character occurrences given their own token (0.9995) */
    int progress;
    const char *separator;   /* between stories; NULL: <|endoftext|> ("\n": one per line) */
} tlm_bpe_opts;

/* Trains on the concatenated texts (stories split on the separator). */
tlm_status tlm_bpe_train(const char *const *texts, const size_t *lens, size_t n_texts, const tlm_bpe_opts *o,
                         tlm_vocab *out, tlm_error *err);

#endif
