/* One-line progress reports on stderr: done/total, rate, time left. */
#ifndef TLM_HOST_PROGRESS_H
#define TLM_HOST_PROGRESS_H

#include <stdint.h>

typedef struct tlm_progress {
    const char *what;     /* "eval", "train", ... */
    const char *unit;     /* unit of the rate, e.g. "tok" */
    double start;         /* seconds, tlm_now() */
    double last_print;
    int enabled;
} tlm_progress;

/* Monotonic clock in seconds. */
double tlm_now(void);

void tlm_progress_start(tlm_progress *p, const char *what, const char *unit, int enabled);
/* Prints at most ~4 times a second; `amount` counts units for the rate. */
void tlm_progress_update(tlm_progress *p, uint64_t done, uint64_t total, uint64_t amount);
void tlm_progress_end(tlm_progress *p);

#endif
