#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe_train.h"
#include "tritlm/tokenizer.h"
#include "stories.h"

/* ---- a small open-addressing map from byte strings to indices ---- */
typedef struct {
    uint32_t *slots; /* index + 1, 0 = empty */
    size_t cap;
} strmap;

static uint64_t hash_bytes(const uint8_t *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

typedef struct {
    uint8_t **str;
    uint32_t *len;
    uint64_t *count;
    size_t n, cap;
    strmap map;
} strset;

static int strset_grow_map(strset *s)
{
    size_t cap = s->map.cap ? s->map.cap * 2 : 1024;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < s->n; i++) {
        size_t h = (size_t)hash_bytes(s->str[i], s->len[i]) & (cap - 1);
        while (slots[h]) h = (h + 1) & (cap - 1);
        slots[h] = (uint32_t)i + 1;
    }
    free(s->map.slots);
    s->map.slots = slots;
    s->map.cap = cap;
    return 0;
}

/* Index of string s (added with count 0 if new); -1 on allocation failure. */
static long strset_add(strset *s, const uint8_t *str, size_t n, uint64_t count)
{
    if ((s->n + 1) * 2 > s->map.cap && strset_grow_map(s)) return -1;
    size_t h = (size_t)hash_bytes(str, n) & (s->map.cap - 1);
    while (s->map.slots[h]) {
        uint32_t i = s->map.slots[h] - 1;
        if (s->len[i] == n && memcmp(s->str[i], str, n) == 0) {
            s->count[i] += count;
            return i;
        }
        h = (h + 1) & (s->map.cap - 1);
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        uint8_t **a = realloc(s->str, cap * sizeof *a);
        if (a) s->str = a;
        uint32_t *b = realloc(s->len, cap * sizeof *b);
        if (b) s->len = b;
        uint64_t *c = realloc(s->count, cap * sizeof *c);
        if (c) s->count = c;
        if (!a || !b || !c) return -1;
        s->cap = cap;
    }
    uint8_t *copy = malloc(n + 1);
    if (!copy) return -1;
    memcpy(copy, str, n);
    copy[n] = 0;
    s->str[s->n] = copy;
    s->len[s->n] = (uint32_t)n;
    s->count[s->n] = count;
    s->map.slots[h] = (uint32_t)s->n + 1;
    return (long)s->n++;
}

static void strset_free(strset *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->str[i]);
    free(s->str);
    free(s->len);
    free(s->count);
    free(s->map.slots);
    memset(s, 0, sizeof *s);
}

/* Length of the code point group starting at t[0] (lead byte plus up to
 * three continuation bytes), as the encoder splits text. */
static size_t cp_len(const uint8_t *t, size_t n)
{
    size_t j = 1;
    while (j < n && (t[j] & 0xC0u) == 0x80u && j < 4) j++;
    return j;
}

/* Splits a story (with the encoder's dummy-prefix space in front) into
 * segments that merges never cross: a space followed by a word, a run of
 * spaces, a run of newlines, or a word. */
static int add_segments(strset *segs, const uint8_t *t, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        if (t[i] == '\n') {
            while (j < n && t[j] == '\n') j++;
        } else if (t[i] == ' ' && i + 1 < n && t[i + 1] != ' ' && t[i + 1] != '\n') {
            j = i + 1;
            while (j < n && t[j] != ' ' && t[j] != '\n') j++;
        } else if (t[i] == ' ') {
            while (j < n && t[j] == ' ') j++;
        } else {
            while (j < n && t[j] != ' ' && t[j] != '\n') j++;
        }
        if (strset_add(segs, t + i, j - i, 1) < 0) return -1;
        i = j;
    }
    return 0;
}

typedef struct {
    uint32_t *sym; /* symbol ids (token ids); UINT32_MAX = uncovered character, never merged */
    uint32_t n;
    uint64_t count;
} seg;

/* pair key -> count, open addressing keyed by (a << 32 | b) */
typedef struct {
    uint64_t *key;
    uint64_t *val;
    size_t cap, n;
} pairmap;

static int pairmap_add(pairmap *m, uint64_t key, uint64_t v)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4096;
        uint64_t *k = malloc(cap * sizeof *k), *vv = calloc(cap, sizeof *vv);
        if (!k || !vv) {
            free(k);
            free(vv);
            return -1;
        }
        memset(k, 0xFF, cap * sizeof *k);
        for (size_t i = 0; i < m->cap; i++)
            if (m->key[i] != UINT64_MAX) {
                size_t h = (size_t)(m->key[i] * 0x9E3779B97F4A7C15ull >> 20) & (cap - 1);
                while (k[h] != UINT64_MAX) h = (h + 1) & (cap - 1);
                k[h] = m->key[i];
                vv[h] = m->val[i];
            }
        free(m->key);
        free(m->val);
        m->key = k;
        m->val = vv;
        m->cap = cap;
    }
    size_t h = (size_t)(key * 0x9E3779B97F4A7C15ull >> 20) & (m->cap - 1);
    while (m->key[h] != UINT64_MAX && m->key[h] != key) h = (h + 1) & (m->cap - 1);
    if (m->key[h] == UINT64_MAX) {
        m->key[h] = key;
        m->n++;
    }
    m->val[h] += v;
    return 0;
}

static int bytes_less(const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
    size_t n = na < nb ? na : nb;
    int c = memcmp(a, b, n);
    return c < 0 || (c == 0 && na < nb);
}

/* Would merging the pair (key: left << 32 | right) make a string that
 * decodes as one byte? (Text that spells "<0x41>" must stay text.) */
static int byte_like(const strset *vocab, uint64_t key)
{
    const uint32_t a = (uint32_t)(key >> 32), b = (uint32_t)key;
    const size_t n = (size_t)vocab->len[a] + vocab->len[b];
    if (n != 6 && n != 7) return 0;
    uint8_t s[7];
    memcpy(s, vocab->str[a], vocab->len[a]);
    memcpy(s + vocab->len[a], vocab->str[b], vocab->len[b]);
    return tlm_decodes_as_byte(s, n);
}

static int cmp_char_count(const void *x, const void *y, void *ctx)
{
    const strset *c = ctx;
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    if (c->count[a] != c->count[b]) return c->count[a] > c->count[b] ? -1 : 1;
    return bytes_less(c->str[a], c->len[a], c->str[b], c->len[b]) ? -1 : 1;
}

tlm_status tlm_bpe_train(const char *const *texts, const size_t *lens, size_t n_texts, const tlm_bpe_opts *o,
                         tlm_vocab *out, tlm_error *err)
{
    memset(out, 0, sizeof *out);
    if (o->vocab_size < 260 || o->vocab_size > (1u << 20))
        return tlm_fail(err, TLM_ERR_ARG, "--vocab %u must be between 260 and 1048576 (259 tokens are fixed)", o->vocab_size);
    strset segs = {0}, chars = {0}, vocab = {0};
    seg *sv = NULL;
    uint32_t *order = NULL;
    pairmap pm = {0};
    tlm_status st = TLM_OK;
    uint8_t *buf = NULL;

    /* segments of every story, with the encoder's leading space */
    for (size_t f = 0; f < n_texts && !st; f++) {
        tlm_stories s;
        st = tlm_stories_split_by(texts[f], lens[f], o->separator, &s, err);
        if (st) goto out;
        size_t longest = 0;
        for (size_t i = 0; i < s.n; i++) longest = s.items[i].len > longest ? s.items[i].len : longest;
        uint8_t *tmp = malloc(longest + 2);
        for (size_t i = 0; tmp && i < s.n && !st; i++) {
            tmp[0] = ' ';
            memcpy(tmp + 1, s.items[i].text, s.items[i].len);
            if (add_segments(&segs, tmp, s.items[i].len + 1)) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        }
        if (!tmp) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        free(tmp);
        tlm_stories_free(&s);
    }
    if (st) goto out;
    if (segs.n == 0) {
        st = tlm_fail(err, TLM_ERR_FORMAT, "the training text is empty");
        goto out;
    }

    /* characters and their frequencies */
    uint64_t total_chars = 0;
    for (size_t i = 0; i < segs.n; i++)
        for (size_t p = 0; p < segs.len[i];) {
            size_t l = cp_len(segs.str[i] + p, segs.len[i] - p);
            if (strset_add(&chars, segs.str[i] + p, l, segs.count[i]) < 0) {
                st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
                goto out;
            }
            total_chars += segs.count[i];
            p += l;
        }

    /* fixed tokens: <unk>, BOS, EOS, bytes */
    static const char *const specials[3] = {"<unk>", "\n<s>\n", "\n</s>\n"};
    for (int i = 0; i < 3; i++) strset_add(&vocab, (const uint8_t *)specials[i], strlen(specials[i]), 0);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        strset_add(&vocab, (const uint8_t *)name, 6, 0);
    }
    /* characters by frequency until the coverage is reached (and room left for merges) */
    order = malloc(chars.n * sizeof *order);
    if (!order) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < chars.n; i++) order[i] = (uint32_t)i;
    qsort_r(order, chars.n, sizeof *order, cmp_char_count, &chars);
    const uint32_t char_budget = o->vocab_size - 259u;
    uint64_t covered = 0;
    uint32_t *char_token = malloc(chars.n * sizeof *char_token);
    if (!char_token) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < chars.n; i++) char_token[i] = UINT32_MAX;
    /* the space comes first, whether the text has spaces or not: the
     * encoder puts one in front of every text and decoding drops it after
     * BOS, which a <0x20> byte token would not give back */
    if (strset_add(&vocab, (const uint8_t *)" ", 1, 0) < 0) {
        free(char_token);
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto out;
    }
    uint32_t n_chars = 1;
    for (size_t k = 0; k < chars.n && n_chars < char_budget; k++) {
        if ((double)covered >= o->char_coverage * (double)total_chars) break;
        uint32_t c = order[k];
        const size_t before = vocab.n;
        long id = strset_add(&vocab, chars.str[c], chars.len[c], 0);
        if (id < 0) {
            free(char_token);
            st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
            goto out;
        }
        char_token[c] = (uint32_t)id;
        covered += chars.count[c];
        n_chars += vocab.n > before;
    }
    const uint32_t first_merge = (uint32_t)vocab.n;

    /* symbol sequences */
    sv = calloc(segs.n, sizeof *sv);
    for (size_t i = 0; sv && i < segs.n; i++) {
        sv[i].sym = malloc(segs.len[i] * sizeof *sv[i].sym);
        if (!sv[i].sym) break;
        sv[i].count = segs.count[i];
        for (size_t p = 0; p < segs.len[i];) {
            size_t l = cp_len(segs.str[i] + p, segs.len[i] - p);
            long c = strset_add(&chars, segs.str[i] + p, l, 0);
            sv[i].sym[sv[i].n++] = char_token[c];
            p += l;
        }
    }
    free(char_token);
    if (!sv) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto out;
    }

    /* merges */
    uint32_t n_merges = 0;
    buf = malloc(1 << 16);
    while (vocab.n < o->vocab_size) {
        free(pm.key);
        free(pm.val);
        memset(&pm, 0, sizeof pm);
        for (size_t i = 0; i < segs.n; i++)
            for (uint32_t p = 0; p + 1 < sv[i].n; p++) {
                uint32_t a = sv[i].sym[p], b = sv[i].sym[p + 1];
                if (a == UINT32_MAX || b == UINT32_MAX) continue;
                if (pairmap_add(&pm, (uint64_t)a << 32 | b, sv[i].count)) {
                    st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
                    goto out;
                }
            }
        uint64_t best_key = UINT64_MAX, best = 0;
        for (size_t h = 0; h < pm.cap; h++) {
            if (pm.key[h] == UINT64_MAX) continue;
            const uint64_t k = pm.key[h], v = pm.val[h];
            if (v < best || v < 2) continue;
            if (byte_like(&vocab, k)) continue; /* the encoder would never make it */
            if (v == best) { /* tie: the lexicographically smaller (left, right) pair */
                uint32_t a = (uint32_t)(k >> 32), b = (uint32_t)k, ba = (uint32_t)(best_key >> 32), bb = (uint32_t)best_key;
                int less = bytes_less(vocab.str[a], vocab.len[a], vocab.str[ba], vocab.len[ba]) ||
                           (vocab.len[a] == vocab.len[ba] && !memcmp(vocab.str[a], vocab.str[ba], vocab.len[a]) &&
                            bytes_less(vocab.str[b], vocab.len[b], vocab.str[bb], vocab.len[bb]));
                if (!less) continue;
            }
            best = v;
            best_key = k;
        }
        if (best_key == UINT64_MAX) break; /* nothing left to merge */
        const uint32_t a = (uint32_t)(best_key >> 32), b = (uint32_t)best_key;
        const size_t nl = (size_t)vocab.len[a] + vocab.len[b];
        if (nl > (1 << 16)) break;
        memcpy(buf, vocab.str[a], vocab.len[a]);
        memcpy(buf + vocab.len[a], vocab.str[b], vocab.len[b]);
        long id = strset_add(&vocab, buf, nl, 0);
        if (id < 0) {
            st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < segs.n; i++) {
            uint32_t w = 0;
            for (uint32_t p = 0; p < sv[i].n; p++) {
                if (p + 1 < sv[i].n && sv[i].sym[p] == a && sv[i].sym[p + 1] == b) {
                    sv[i].sym[w++] = (uint32_t)id;
                    p++;
                } else {
                    sv[i].sym[w++] = sv[i].sym[p];
                }
            }
            sv[i].n = w;
        }
        n_merges++;
        if (o->progress && n_merges % 100 == 0) fprintf(stderr, "\rtokenizer: %zu / %u tokens", vocab.n, o->vocab_size);
    }
    if (o->progress) fprintf(stderr, "\r");

    /* out: scores are 0 for fixed tokens, -k for the k-th merge, and below
     * every merge for characters (rarer characters lower) */
    out->n = (uint32_t)vocab.n;
    out->scores = calloc(vocab.n, sizeof *out->scores);
    out->lens = calloc(vocab.n, sizeof *out->lens);
    out->strs = calloc(vocab.n, sizeof *out->strs);
    if (!out->scores || !out->lens || !out->strs) {
        tlm_vocab_free(out);
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < vocab.n; i++) {
        out->strs[i] = vocab.str[i];
        vocab.str[i] = NULL;
        out->lens[i] = vocab.len[i];
        if (out->lens[i] > out->max_token_length) out->max_token_length = out->lens[i];
        if (i >= first_merge) out->scores[i] = -(float)(i - first_merge);
        else if (i >= 259) out->scores[i] = -(float)(n_merges + (i - 259));
    }
out:
    free(buf);
    free(pm.key);
    free(pm.val);
    if (sv)
        for (size_t i = 0; i < segs.n; i++) free(sv[i].sym);
    free(sv);
    free(order);
    for (size_t i = 0; i < vocab.n; i++) free(vocab.str[i]);
    vocab.n = 0;
    strset_free(&vocab);
    strset_free(&chars);
    strset_free(&segs);
    return st;
}
