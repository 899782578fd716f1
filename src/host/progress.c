#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <time.h>

#include "progress.h"

double tlm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void tlm_progress_start(tlm_progress *p, const char *what, const char *unit, int enabled)
{
    p->what = what;
    p->unit = unit;
    p->start = tlm_now();
    p->last_print = 0;
    p->enabled = enabled;
}

void tlm_progress_update(tlm_progress *p, uint64_t done, uint64_t total, uint64_t amount)
{
    if (!p->enabled) return;
    double now = tlm_now();
    if (now - p->last_print < 0.25 && done < total) return;
    p->last_print = now;
    double el = now - p->start;
    double rate = el > 0 ? (double)amount / el : 0;
    double left = (done && total > done) ? el * (double)(total - done) / (double)done : 0;
    fprintf(stderr, "\r%s: %llu/%llu  %.0f %s/s  %.0fs left   ", p->what, (unsigned long long)done,
            (unsigned long long)total, rate, p->unit, left);
    fflush(stderr);
}

void tlm_progress_end(tlm_progress *p)
{
    if (p->enabled) fprintf(stderr, "\n");
}
