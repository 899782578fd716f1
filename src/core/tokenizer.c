/* Byte-fallback BPE with llama2.c's encode/decode semantics, over the
 * vocabulary stored in the image (sorted index included, so encoding needs
 * no RAM beyond the caller's id and scratch arrays). */
#include <string.h>

#include "tritlm/tokenizer.h"

/* byte_values[b] == b: where decoded <0xNN> tokens point. */
#define TLM_B4(n) (n), (n) + 1, (n) + 2, (n) + 3
#define TLM_B16(n) TLM_B4(n), TLM_B4((n) + 4), TLM_B4((n) + 8), TLM_B4((n) + 12)
#define TLM_B64(n) TLM_B16(n), TLM_B16((n) + 16), TLM_B16((n) + 32), TLM_B16((n) + 48)
static const uint8_t byte_values[256] = {TLM_B64(0), TLM_B64(64), TLM_B64(128), TLM_B64(192)};

size_t tlm_token_str(const tlm_model *m, uint32_t tok, const uint8_t **s)
{
    if (tok >= m->hp.vocab_size) {
        *s = byte_values;
        return 0;
    }
    uint32_t a = m->vocab_off[tok], b = m->vocab_off[tok + 1];
    *s = m->vocab_pool + a;
    return b - a - 1u;
}

/* Compares vocabulary string s with the concatenation a||b (strcmp order). */
static int cmp_concat(const uint8_t *s, size_t ns, const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
    size_t n1 = ns < na ? ns : na;
    int c = n1 ? memcmp(s, a, n1) : 0;
    if (c) return c;
    if (ns <= na) return (ns < na + nb) ? -1 : 0;
    size_t rest = ns - na, n2 = rest < nb ? rest : nb;
    c = n2 ? memcmp(s + na, b, n2) : 0;
    if (c) return c;
    return (rest > nb) - (rest < nb);
}

/* Lowest id whose string equals a||b, or -1. */
static int32_t lookup2(const tlm_model *m, const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
    size_t lo = 0, hi = m->hp.vocab_size; /* first k with str(sorted[k]) >= key */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2u;
        const uint8_t *s;
        size_t ns = tlm_token_str(m, m->vocab_sorted[mid], &s);
        if (cmp_concat(s, ns, a, na, b, nb) < 0) lo = mid + 1u;
        else hi = mid;
    }
    if (lo == m->hp.vocab_size) return -1;
    const uint8_t *s;
    size_t ns = tlm_token_str(m, m->vocab_sorted[lo], &s);
    return cmp_concat(s, ns, a, na, b, nb) == 0 ? (int32_t)m->vocab_sorted[lo] : -1;
}

int32_t tlm_token_lookup(const tlm_model *m, const void *s, size_t n)
{
    return lookup2(m, (const uint8_t *)s, n, NULL, 0);
}

static int32_t byte_token(const tlm_model *m, uint8_t byte)
{
    static const char hex[] = "0123456789ABCDEF";
    uint8_t name[6] = {'<', '0', 'x', (uint8_t)hex[byte >> 4], (uint8_t)hex[byte & 15u], '>'};
    return tlm_token_lookup(m, name, sizeof name);
}

/* Merge candidate for the pair (x, y): its id or -1. */
static int32_t pair_merge(const tlm_model *m, uint32_t x, uint32_t y)
{
    const uint8_t *a, *b;
    size_t na = tlm_token_str(m, x, &a), nb = tlm_token_str(m, y, &b);
    return lookup2(m, a, na, b, nb);
}

tlm_status tlm_encode(const tlm_model *m, const char *text, size_t n, unsigned flags, uint32_t *ids, size_t cap,
                      int32_t *scratch, size_t *n_ids)
{
    if (!m || (!text && n) || !ids || !scratch || !n_ids) return TLM_ERR_ARG;
    const uint8_t *t = (const uint8_t *)text;
    size_t len = 0;
    while (len < n && t[len]) len++;
    if (cap < TLM_ENCODE_MAX_IDS(len)) return TLM_ERR_ARG;

    size_t k = 0;
    if (flags & TLM_ENCODE_BOS) ids[k++] = m->bos_id;
    if (len) {
        int32_t sp = tlm_token_lookup(m, " ", 1);
        if (sp < 0) sp = byte_token(m, ' ');
        if (sp < 0) return TLM_ERR_VOCAB;
        ids[k++] = (uint32_t)sp;
    }
    /* Split into code points (a lead byte and up to three continuation
     * bytes); a code point missing from the vocabulary becomes byte tokens. */
    for (size_t i = 0; i < len;) {
        size_t j = i + 1u;
        while (j < len && (t[j] & 0xC0u) == 0x80u && j - i < 4u) j++;
        int32_t id = tlm_token_lookup(m, t + i, j - i);
        if (id >= 0) {
            ids[k++] = (uint32_t)id;
        } else {
            for (size_t b = i; b < j; b++) {
                int32_t bt = byte_token(m, t[b]);
                if (bt < 0) return TLM_ERR_VOCAB;
                ids[k++] = (uint32_t)bt;
            }
        }
        i = j;
    }
    /* Merge the best-scoring adjacent pair until none merges. scratch[i]
     * holds the merge of (ids[i], ids[i+1]). */
    for (size_t i = 0; i + 1u < k; i++) scratch[i] = pair_merge(m, ids[i], ids[i + 1]);
    while (k > 1) {
        size_t best = k;
        float best_score = 0.0f;
        for (size_t i = 0; i + 1u < k; i++) {
            if (scratch[i] < 0) continue;
            float s = m->vocab_scores[scratch[i]];
            if (best == k || s > best_score) {
                best = i;
                best_score = s;
            }
        }
        if (best == k) break;
        ids[best] = (uint32_t)scratch[best];
        memmove(ids + best + 1, ids + best + 2, (k - best - 2u) * sizeof *ids);
        memmove(scratch + best + 1, scratch + best + 2, (k - best - 2u) * sizeof *scratch);
        k--;
        if (best > 0) scratch[best - 1] = pair_merge(m, ids[best - 1], ids[best]);
        if (best + 1u < k) scratch[best] = pair_merge(m, ids[best], ids[best + 1]);
    }
    if (flags & TLM_ENCODE_EOS) ids[k++] = m->eos_id;
    *n_ids = k;
    return TLM_OK;
}

static int hex_digit(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

size_t tlm_decode_piece(const tlm_model *m, uint32_t prev, uint32_t tok, const uint8_t **piece)
{
    const uint8_t *s;
    size_t n = tlm_token_str(m, tok, &s);
    if (prev == m->bos_id && n && s[0] == ' ') {
        s++;
        n--;
    }
    if (n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>') {
        int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
        if (hi >= 0 && lo >= 0) {
            *piece = byte_values + (hi * 16 + lo);
            return 1;
        }
    }
    *piece = s;
    return n;
}
