/* Byte-fallback BPE tokenizer with llama2.c's semantics, reading the
 * vocabulary stored inside the model image. */
#ifndef TRITLM_TOKENIZER_H
#define TRITLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/model.h"
#include "tritlm/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TLM_ENCODE_BOS 0x1u
#define TLM_ENCODE_EOS 0x2u

/* Room `encode` may need for `text_bytes` bytes of text: every byte can
 * become one token, plus BOS, the dummy prefix and EOS. */
#define TLM_ENCODE_MAX_IDS(text_bytes) ((size_t)(text_bytes) + 3u)

/* int32 values of scratch `encode` needs for an id array of `cap`. */
#define TLM_ENCODE_SCRATCH(cap) ((size_t)(cap) * 13u)

/* Encodes text[0..n) (any bytes, NUL included: it becomes <0x00>) into ids:
 * optional BOS, the SentencePiece-style dummy prefix " " when the text is
 * not empty, code points found in the vocabulary or else their bytes as
 * <0xNN> tokens, then merges of adjacent pairs by highest score (leftmost
 * first on ties, O(n log n)), optional EOS. `scratch` holds
 * TLM_ENCODE_SCRATCH(cap) int32 values.
 * Returns TLM_ERR_ARG if cap < TLM_ENCODE_MAX_IDS(n), TLM_ERR_VOCAB if the
 * vocabulary lacks the byte tokens. */
tlm_status tlm_encode(const tlm_model *m, const char *text, size_t n, unsigned flags,
                      uint32_t *ids, size_t cap, int32_t *scratch, size_t *n_ids);

/* Looks up the token whose string is exactly s[0..n); -1 if none. */
int32_t tlm_token_lookup(const tlm_model *m, const void *s, size_t n);

/* The bytes token `tok` stands for when it follows `prev`: byte tokens
 * <0xNN> give their byte, and the leading space of a piece right after BOS
 * is dropped. Sets *piece and returns its length (0 for an unknown id). */
size_t tlm_decode_piece(const tlm_model *m, uint32_t prev, uint32_t tok, const uint8_t **piece);

/* Does a token with this string decode as one byte (<0xNN>, or " <0xNN>"
 * right after BOS)? Such strings come from byte fallback only: the encoder
 * makes no merge into them (nor of a byte token with a neighbour), and the
 * tokenizer trainer does not learn them. */
int tlm_decodes_as_byte(const void *s, size_t n);

/* The raw vocabulary string of token `tok` and its length. */
size_t tlm_token_str(const tlm_model *m, uint32_t tok, const uint8_t **s);

#ifdef __cplusplus
}
#endif
#endif
