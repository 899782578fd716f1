/* Helpers shared by the test suites. */
#ifndef TLM_TESTUTIL_H
#define TLM_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "../src/host/fedsec.h"
#include "tritlm/model.h"

/* Exit status ctest reads as "skipped". */
#define TLM_TEST_SKIP 77

/* Path of a file in the shared data folder (TLM_DATA_DIR, else the
 * build-time default). If it is missing: exits 77 (skipped) with the
 * reason, or fails when CI or TLM_REQUIRE_DATA is set. */
const char *tu_data(const char *relpath);

/* Path of the tritlm executable under test. */
const char *tu_cli(void);

/* A fresh temporary directory for this test process, and a path in it. */
const char *tu_tmpdir(void);
char *tu_tmp(const char *name); /* static buffer rotation: copy if kept */

/* Builds a small random model (seeded) with a byte-fallback vocabulary of
 * 259 + n_merges tokens. *image is malloc'd, aligned to TLM_ALIGN. */
typedef struct tu_tiny {
    uint32_t dim, hidden, layers, heads, kv_heads, seq_len, n_merges;
    int shared;
} tu_tiny;
void tu_build_tiny(const tu_tiny *cfg, uint64_t seed, uint8_t **image, size_t *bytes);

/* Writes a roster (fed aggregate --devices): ids[i] enrolled with pubs[i]. */
void tu_write_roster(const char *path, const uint32_t *ids, const tlm_fed_pub *pubs, int n);

/* Imports stories260K from the shared data (skips if absent). */
void tu_import_stories260k(uint8_t **image, size_t *bytes);

/* Copies `bytes` to a buffer of exactly that size, aligned to TLM_ALIGN
 * (so that sanitizers catch any read past the end). */
uint8_t *tu_exact_copy(const uint8_t *src, size_t bytes);

/* Runs `tritlm ARGS` (args built printf-style) with stdout and stderr
 * captured; returns the exit status and points *out / *err (if not NULL)
 * at NUL-terminated copies valid until the next call. */
int tu_run(char **out, char **err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Deterministic test generator (splitmix64). */
uint64_t tu_rand(uint64_t *state);
double tu_uniform(uint64_t *state);

/* Chi-square goodness of fit: the critical value for df degrees of freedom
 * at tail 1e-6 (Wilson-Hilferty), and the statistic of counts[i] observed
 * in n draws against bin probabilities p[i] (-1 if a bin expects fewer
 * than 5 or the p[i] do not sum to 1). */
double tu_chi2_crit(int df);
double tu_chi2_stat(const uint64_t *counts, const double *p, int bins, double n);

#endif
