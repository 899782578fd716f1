/* Splitting a text file into stories for the evaluation protocol of
 * ../shared/data/README.md: split on <|endoftext|>, strip surrounding
 * whitespace, skip empty ones. */
#ifndef TLM_HOST_STORIES_H
#define TLM_HOST_STORIES_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/status.h"

typedef struct tlm_span {
    const char *text;
    size_t len;
} tlm_span;

typedef struct tlm_stories {
    tlm_span *items;
    size_t n;
} tlm_stories;

#define TLM_STORY_SEPARATOR "<|endoftext|>"

/* Spans point into `text`, which must outlive the result. */
tlm_status tlm_stories_split(const char *text, size_t len, tlm_stories *out, tlm_error *err);

/* The same with another separator (non-empty), e.g. "\n" for one story
 * per line; NULL means TLM_STORY_SEPARATOR. */
tlm_status tlm_stories_split_by(const char *text, size_t len, const char *sep, tlm_stories *out, tlm_error *err);
void tlm_stories_free(tlm_stories *s);

#endif
