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

static int hex_digit(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The byte a token string <0xNN> names, or -1 for any other string. */
static int byte_name(const uint8_t *s, size_t n)
{
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    const int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi >= 0 && lo >= 0 ? hi * 16 + lo : -1;
}

int tlm_decodes_as_byte(const void *str, size_t n)
{
    const uint8_t *s = (const uint8_t *)str;
    return byte_name(s, n) >= 0 || (n == 7 && s[0] == ' ' && byte_name(s + 1, 6) >= 0);
}

/* Merge candidate for the pair (x, y): its id or -1. A byte token takes
 * part in no merge, and no merge makes a token that decodes as a byte:
 * merging by name would turn text that spells "<0x41>" into the byte 'A',
 * or glue a fallback byte to its neighbours as the text "<0xE3>a", so the
 * text would not come back from decoding. (llama2.c's encoder merges by
 * name; no vocabulary it ships has such pieces, so its tokens agree.) */
static int32_t pair_merge(const tlm_model *m, uint32_t x, uint32_t y)
{
    const uint8_t *a, *b, *c;
    const size_t na = tlm_token_str(m, x, &a), nb = tlm_token_str(m, y, &b);
    if (byte_name(a, na) >= 0 || byte_name(b, nb) >= 0) return -1;
    const int32_t id = lookup2(m, a, na, b, nb);
    if (id < 0) return -1;
    const size_t nc = tlm_token_str(m, (uint32_t)id, &c);
    return tlm_decodes_as_byte(c, nc) ? -1 : id;
}

/* Merge candidates wait in a binary max-heap ordered by score, then by
 * leftmost position (the order llama2.c's rescanning loop picks them). An
 * entry is (position, stamp, merge id); it is stale once the pair starting
 * at that position has changed, which bumps the position's stamp. At most
 * 3n entries are ever queued (n initial pairs, two per merge). */
typedef struct {
    const tlm_model *m;
    uint32_t *ids;
    int32_t *next, *prev, *cand, *stamp, *heap; /* heap: (pos, stamp, merge id) triples */
    size_t heap_n;
} merge_state;

/* Entries keep the merge id they were queued with, so that their order
 * never changes while they wait (stale ones are skipped when popped). */
static int heap_before(const merge_state *st, size_t x, size_t y)
{
    const int32_t *ex = st->heap + 3 * x, *ey = st->heap + 3 * y;
    const float sx = st->m->vocab_scores[ex[2]], sy = st->m->vocab_scores[ey[2]];
    return sx > sy || (sx == sy && ex[0] < ey[0]);
}

static void heap_swap(merge_state *st, size_t x, size_t y)
{
    for (int f = 0; f < 3; f++) {
        int32_t a = st->heap[3 * x + f];
        st->heap[3 * x + f] = st->heap[3 * y + f];
        st->heap[3 * y + f] = a;
    }
}

static void heap_push(merge_state *st, int32_t pos)
{
    size_t i = st->heap_n++;
    st->heap[3 * i] = pos;
    st->heap[3 * i + 1] = st->stamp[pos];
    st->heap[3 * i + 2] = st->cand[pos];
    while (i > 0 && heap_before(st, i, (i - 1) / 2)) {
        heap_swap(st, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_pop(merge_state *st)
{
    st->heap_n--;
    heap_swap(st, 0, st->heap_n);
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < st->heap_n && heap_before(st, l, best)) best = l;
        if (r < st->heap_n && heap_before(st, r, best)) best = r;
        if (best == i) return;
        heap_swap(st, i, best);
        i = best;
    }
}

/* Recomputes the candidate of the pair starting at pos and queues it. */
static void refresh(merge_state *st, int32_t pos)
{
    st->stamp[pos]++;
    const int32_t nx = st->next[pos];
    st->cand[pos] = nx >= 0 ? pair_merge(st->m, st->ids[pos], st->ids[nx]) : -1;
    if (st->cand[pos] >= 0) heap_push(st, pos);
}

tlm_status tlm_encode(const tlm_model *m, const char *text, size_t n, unsigned flags, uint32_t *ids, size_t cap,
                      int32_t *scratch, size_t *n_ids)
{
    if (!m || (!text && n) || !ids || !scratch || !n_ids) return TLM_ERR_ARG;
    const uint8_t *t = (const uint8_t *)text;
    const size_t len = n;
    if (cap < TLM_ENCODE_MAX_IDS(len) || cap > 0x7FFFFFFFu / 16u) return TLM_ERR_ARG;

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
        size_t j = i + 1;
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
    /* Merge the best-scoring adjacent pair (leftmost on ties) until none
     * merges, over a doubly linked list of positions. */
    merge_state st = {m, ids, scratch, scratch + cap, scratch + 2 * cap, scratch + 3 * cap, scratch + 4 * cap, 0};
    /* scratch: next, prev, cand, stamp (cap each), heap (3 * cap triples) */
    for (size_t i = 0; i < k; i++) {
        st.next[i] = i + 1 < k ? (int32_t)(i + 1) : -1;
        st.prev[i] = (int32_t)i - 1;
        st.stamp[i] = 0;
    }
    for (size_t i = 0; i < k; i++) refresh(&st, (int32_t)i);
    while (st.heap_n) {
        const int32_t pos = st.heap[0], stamp = st.heap[1];
        if (stamp != st.stamp[pos]) {
            heap_pop(&st);
            continue;
        }
        heap_pop(&st);
        const int32_t right = st.next[pos];
        ids[pos] = (uint32_t)st.cand[pos];
        st.next[pos] = st.next[right];
        if (st.next[right] >= 0) st.prev[st.next[right]] = pos;
        st.stamp[right]++; /* its queued entries are stale */
        refresh(&st, pos);
        if (st.prev[pos] >= 0) refresh(&st, st.prev[pos]);
    }
    size_t out = 0;
    for (int32_t i = k ? 0 : -1; i >= 0; i = st.next[i]) ids[out++] = ids[i];
    if (flags & TLM_ENCODE_EOS) ids[out++] = m->eos_id;
    *n_ids = out;
    return TLM_OK;
}

size_t tlm_decode_piece(const tlm_model *m, uint32_t prev, uint32_t tok, const uint8_t **piece)
{
    const uint8_t *s;
    size_t n = tlm_token_str(m, tok, &s);
    if (prev == m->bos_id && n && s[0] == ' ') {
        s++;
        n--;
    }
    const int byte = byte_name(s, n);
    if (byte >= 0) {
        *piece = byte_values + byte;
        return 1;
    }
    *piece = s;
    return n;
}
