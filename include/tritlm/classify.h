/* Choosing among a closed set of continuations with the language model:
 * intent classification, commands, yes/no answers. A model trained on
 * lines of the form "TEXT<TAB>LABEL" (one line per sample, so that BOS
 * follows each label) classifies a text by the candidate line it gives the
 * highest probability to. Candidates that share a prefix (the text, the
 * first tokens of related labels) share its forward passes: the decoder
 * runs once per node of the candidates' prefix tree, rewinding the KV cache
 * to where the next candidate departs from the last. */
#ifndef TRITLM_CLASSIFY_H
#define TRITLM_CLASSIFY_H

#include <stdint.h>

#include "tritlm/runtime.h"
#include "tritlm/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tlm_classify_mode {
    /* the likeliest candidate, exactly: the candidates' prefix tree walked
     * depth first, one forward pass per node, leaving out every subtree
     * whose score so far is already below the best complete candidate's
     * (scores only fall as tokens are added) */
    TLM_CLASSIFY_EXACT = 0,
    /* follow the likeliest next token among the candidates' from the
     * first token on: one forward pass per token of the chosen candidate
     * (the fewest; may miss the likeliest candidate) */
    TLM_CLASSIFY_GREEDY = 1,
    /* every candidate's score: one forward pass per node of the tree */
    TLM_CLASSIFY_ALL = 2
} tlm_classify_mode;

typedef struct tlm_classify_result {
    uint32_t best;      /* index of the chosen candidate (the first of equals) */
    float score;        /* its log-probability, natural log */
    uint32_t forwards;  /* decoder calls made */
    /* the log-probability of the tokens every candidate shares (after the
     * first): score - shared is the chosen candidate's own log-probability
     * given them, and exp(score - shared) a confidence in (0, 1]: the
     * candidates' own continuations (each ending in `end`) are distinct
     * events, so these probabilities sum to at most 1 over the candidates,
     * and to 1 when the model puts all its mass on them */
    float shared;
} tlm_classify_result;

/* Candidate i is prefix[0..n_prefix) followed by ids[off[i] .. off[i + 1])
 * (off has n + 1 entries, non-decreasing; n_prefix may be 0), a whole
 * sequence from position 0: the shared prefix (BOS and the text) is stored
 * once. All candidates must start with the same token (BOS) and none may be
 * empty or longer than the runtime's context. A candidate's score is the
 * sum over its tokens after the first of the natural-log probability the
 * model gives each, plus that of `end` after its last (the token that
 * follows a sample in training: BOS for a model trained one line per
 * sample), so that a label that is a prefix of another is scored as
 * complete. `order` is scratch of n entries (on return: the candidates in
 * the order the search visited them, lexicographic but for the exact
 * search's likeliest-first siblings); `scores` (n entries) receives the
 * scores (-INFINITY for the candidates TLM_CLASSIFY_EXACT left out and, with
 * TLM_CLASSIFY_GREEDY, for every candidate but the chosen one). The KV cache is overwritten from position 0. TLM_ERR_ARG for
 * n == 0, an empty or too long candidate, differing first tokens or a token
 * outside the vocabulary. */
tlm_status tlm_classify(tlm_runtime *rt, const uint32_t *prefix, uint32_t n_prefix, const uint32_t *ids,
                        const uint32_t *off, uint32_t n, uint32_t end, tlm_classify_mode mode, uint32_t *order,
                        float *scores, tlm_classify_result *res);

#ifdef __cplusplus
}
#endif
#endif
