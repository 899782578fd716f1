#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "stories.h"

static int is_strip(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

tlm_status tlm_stories_split(const char *text, size_t len, tlm_stories *out, tlm_error *err)
{
    return tlm_stories_split_by(text, len, NULL, out, err);
}

tlm_status tlm_stories_split_by(const char *text, size_t len, const char *separator, tlm_stories *out, tlm_error *err)
{
    if (!separator) separator = TLM_STORY_SEPARATOR;
    const size_t sep_len = strlen(separator);
    if (sep_len == 0) return tlm_fail(err, TLM_ERR_ARG, "empty story separator");
    size_t cap = 64, n = 0;
    tlm_span *items = malloc(cap * sizeof *items);
    if (!items) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    const char *p = text, *end = text + len;
    while (p <= end) {
        const char *sep = memmem(p, (size_t)(end - p), separator, sep_len);
        const char *stop = sep ? sep : end;
        const char *a = p, *b = stop;
        while (a < b && is_strip(*a)) a++;
        while (b > a && is_strip(b[-1])) b--;
        if (b > a) {
            if (n == cap) {
                cap *= 2;
                tlm_span *bigger = realloc(items, cap * sizeof *items);
                if (!bigger) {
                    free(items);
                    return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
                }
                items = bigger;
            }
            items[n++] = (tlm_span){a, (size_t)(b - a)};
        }
        if (!sep) break;
        p = sep + sep_len;
    }
    out->items = items;
    out->n = n;
    return TLM_OK;
}

void tlm_stories_free(tlm_stories *s)
{
    free(s->items);
    s->items = NULL;
    s->n = 0;
}
