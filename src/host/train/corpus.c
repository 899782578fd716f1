#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "../classify.h"
#include "../fileio.h"
#include "../stories.h"
#include "../nn/layers.h"
#include "corpus.h"
#include "tritlm/tokenizer.h"

tlm_status tlm_corpus_load(tlm_corpus *c, const tlm_model *tok, const char *path, const char *sep, int label_only,
                           tlm_error *err)
{
    memset(c, 0, sizeof *c);
    uint8_t *text;
    size_t len;
    tlm_status st = tlm_read_text(path, &text, &len, err);
    if (st) return st;
    tlm_stories s;
    st = tlm_stories_split_by((const char *)text, len, sep, &s, err);
    if (st) {
        free(text);
        return st;
    }
    if (s.n == 0) {
        free(text);
        tlm_stories_free(&s);
        return tlm_fail(err, TLM_ERR_FORMAT, "%s holds no text", path);
    }
    size_t cap = TLM_ENCODE_MAX_IDS(len) + s.n * 2u, longest = 0;
    for (size_t i = 0; i < s.n; i++)
        if (s.items[i].len > longest) longest = s.items[i].len;
    c->tokens = malloc(cap * sizeof *c->tokens);
    if (label_only) c->targets = malloc(cap * sizeof *c->targets);
    int32_t *scratch = malloc(TLM_ENCODE_SCRATCH(TLM_ENCODE_MAX_IDS(longest)) * sizeof *scratch);
    if (!c->tokens || !scratch || (label_only && !c->targets)) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory tokenizing %s", path);
    } else {
        for (size_t i = 0; i < s.n && !st; i++) {
            size_t n = 0;
            st = tlm_encode(tok, s.items[i].text, s.items[i].len, TLM_ENCODE_BOS, c->tokens + c->n,
                            TLM_ENCODE_MAX_IDS(s.items[i].len), scratch, &n);
            if (st) tlm_fail(err, st, "%s: story %llu cannot be encoded with this vocabulary", path, (unsigned long long)i);
            if (!st && label_only) {
                uint32_t *t = c->targets + c->n;
                for (size_t k = 0; k < n; k++) t[k] = TLM_NO_TARGET;
                if (i > 0) t[0] = c->tokens[c->n]; /* the BOS that ends the line before */
                const size_t k = tlm_label_first_token(tok, s.items[i].text, s.items[i].len, c->tokens + c->n, n);
                if (k == 0)
                    st = tlm_fail(err, TLM_ERR_FORMAT, "%s: line %llu has no TAB; --label-loss needs TEXT<TAB>LABEL lines",
                                  path, (unsigned long long)i + 1);
                for (size_t q = k ? k : n; q < n; q++) t[q] = c->tokens[c->n + q];
            }
            c->n += n;
        }
    }
    c->stories = s.n;
    free(scratch);
    free(text);
    tlm_stories_free(&s);
    if (st) tlm_corpus_free(c);
    return st;
}

void tlm_corpus_free(tlm_corpus *c)
{
    free(c->tokens);
    free(c->targets);
    memset(c, 0, sizeof *c);
}
