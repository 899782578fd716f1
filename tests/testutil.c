#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/host/fileio.h"
#include "../src/host/image_build.h"
#include "../src/host/llama2c.h"
#include "testutil.h"

#ifndef TLM_DEFAULT_DATA_DIR
#define TLM_DEFAULT_DATA_DIR "../shared/data"
#endif
#ifndef TLM_CLI_PATH
#define TLM_CLI_PATH "tritlm"
#endif

const char *tu_data(const char *relpath)
{
    static char paths[8][4096];
    static int next;
    const char *dir = getenv("TLM_DATA_DIR");
    if (!dir || !*dir) dir = TLM_DEFAULT_DATA_DIR;
    char *p = paths[next++ % 8];
    snprintf(p, 4096, "%s/%s", dir, relpath);
    if (access(p, R_OK) == 0) return p;
    const char *ci = getenv("CI"), *req = getenv("TLM_REQUIRE_DATA");
    if ((ci && *ci && strcmp(ci, "0") && strcmp(ci, "false")) || (req && *req && strcmp(req, "0"))) {
        fprintf(stderr, "FAIL: required test data %s is missing (set TLM_DATA_DIR to the shared data folder)\n", p);
        exit(1);
    }
    fprintf(stderr, "SKIP: test data %s is missing (set TLM_DATA_DIR to the shared data folder)\n", p);
    exit(TLM_TEST_SKIP);
}

const char *tu_cli(void)
{
    const char *env = getenv("TLM_CLI");
    return env && *env ? env : TLM_CLI_PATH;
}

static char tmpdir[256];

static void remove_tmpdir(void)
{
    if (!tmpdir[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmpdir);
}

const char *tu_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/tritlm-test-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

char *tu_tmp(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 512, "%s/%s", tu_tmpdir(), name);
    return b;
}

uint64_t tu_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double tu_uniform(uint64_t *s) { return (double)(tu_rand(s) >> 11) * (1.0 / 9007199254740992.0); }

double tu_chi2_crit(int df)
{
    const double z = 4.753; /* standard normal 1 - 1e-6 quantile */
    const double a = 2.0 / (9.0 * df);
    return df * pow(1 - a + z * sqrt(a), 3);
}

double tu_chi2_stat(const uint64_t *counts, const double *p, int bins, double n)
{
    double chi = 0, psum = 0;
    for (int i = 0; i < bins; i++) {
        const double e = p[i] * n;
        if (!(e >= 5.0)) return -1;
        chi += (counts[i] - e) * (counts[i] - e) / e;
        psum += p[i];
    }
    return fabs(psum - 1.0) < 1e-9 ? chi : -1;
}

uint8_t *tu_exact_copy(const uint8_t *src, size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, TLM_ALIGN, bytes ? bytes : 1) != 0) abort();
    if (bytes) memcpy(p, src, bytes);
    return p;
}

/* Vocabulary: <unk>, BOS, EOS, 256 byte tokens, then merges of random
 * pairs of lowercase letters and previously made merges. */
static void tiny_vocab(uint32_t n_merges, uint64_t *rng, tlm_vocab *v)
{
    uint32_t n = 259u + n_merges;
    v->n = n;
    v->scores = calloc(n, sizeof *v->scores);
    v->lens = calloc(n, sizeof *v->lens);
    v->strs = calloc(n, sizeof *v->strs);
    const char *specials[3] = {"<unk>", "\n<s>\n", "\n</s>\n"};
    for (uint32_t i = 0; i < 3; i++) {
        v->strs[i] = (uint8_t *)strdup(specials[i]);
        v->lens[i] = (uint32_t)strlen(specials[i]);
    }
    for (uint32_t b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        v->strs[3 + b] = (uint8_t *)strdup(s);
        v->lens[3 + b] = 6;
    }
    uint32_t k = 259;
    while (k < n) {
        /* a single letter first (so merges have parts), then pairs */
        uint8_t buf[64];
        size_t len;
        if (k < 259 + 27) {
            buf[0] = (uint8_t)(k < 259 + 26 ? 'a' + (k - 259) : ' ');
            len = 1;
        } else {
            uint32_t a = 259 + (uint32_t)(tu_rand(rng) % (k - 259));
            uint32_t b = 259 + (uint32_t)(tu_rand(rng) % (k - 259));
            if (v->lens[a] + v->lens[b] > 16) continue;
            memcpy(buf, v->strs[a], v->lens[a]);
            memcpy(buf + v->lens[a], v->strs[b], v->lens[b]);
            len = v->lens[a] + v->lens[b];
        }
        int dup = 0;
        for (uint32_t i = 0; i < k && !dup; i++) dup = v->lens[i] == len && !memcmp(v->strs[i], buf, len);
        if (dup) continue;
        v->strs[k] = malloc(len + 1);
        memcpy(v->strs[k], buf, len);
        v->strs[k][len] = 0;
        v->lens[k] = (uint32_t)len;
        v->scores[k] = -(float)(tu_rand(rng) % 1000) / 10.0f; /* ties happen on purpose */
        k++;
    }
    v->max_token_length = 16;
}

void tu_build_tiny(const tu_tiny *c, uint64_t seed, uint8_t **image, size_t *bytes)
{
    uint64_t rng = seed;
    tlm_vocab v = {0};
    tiny_vocab(c->n_merges, &rng, &v);
    tlm_hparams hp = {.dim = c->dim, .hidden_dim = c->hidden, .n_layers = c->layers, .n_heads = c->heads,
                      .n_kv_heads = c->kv_heads, .vocab_size = v.n, .seq_len = c->seq_len,
                      .rope_theta = 10000.0f, .norm_eps = 1e-5f, .shared_classifier = c->shared};
    uint32_t kv = c->dim / c->heads * c->kv_heads;
    uint32_t nt = 2 + 9 * c->layers + (c->shared ? 0 : 1);
    tlm_tensor_in *ts = calloc(nt, sizeof *ts);
    float **bufs = calloc(nt, sizeof *bufs);
    for (uint32_t i = 0; i < nt; i++) {
        uint32_t role, layer = 0, rows, cols;
        if (i == 0) role = TLM_ROLE_TOK_EMBED;
        else if (i <= 9 * c->layers) {
            role = TLM_ROLE_ATTN_NORM + (i - 1) % 9;
            layer = (i - 1) / 9;
        } else if (i == 1 + 9 * c->layers) role = TLM_ROLE_FINAL_NORM;
        else role = TLM_ROLE_CLASSIFIER;
        switch (role) {
        case TLM_ROLE_TOK_EMBED: case TLM_ROLE_CLASSIFIER: rows = v.n; cols = c->dim; break;
        case TLM_ROLE_ATTN_NORM: case TLM_ROLE_FFN_NORM: case TLM_ROLE_FINAL_NORM: rows = 1; cols = c->dim; break;
        case TLM_ROLE_WK: case TLM_ROLE_WV: rows = kv; cols = c->dim; break;
        case TLM_ROLE_W1: case TLM_ROLE_W3: rows = c->hidden; cols = c->dim; break;
        case TLM_ROLE_W2: rows = c->dim; cols = c->hidden; break;
        default: rows = c->dim; cols = c->dim; break;
        }
        size_t n = (size_t)rows * cols;
        bufs[i] = malloc(n * sizeof(float));
        int is_norm = rows == 1;
        for (size_t j = 0; j < n; j++)
            bufs[i][j] = is_norm ? (float)(0.5 + tu_uniform(&rng)) : (float)((tu_uniform(&rng) - 0.5) * 0.6);
        ts[i] = (tlm_tensor_in){.role = (uint16_t)role, .layer = (uint16_t)layer, .wtype = TLM_WTYPE_F32,
                                .rows = rows, .cols = cols, .data = bufs[i]};
    }
    tlm_error err;
    if (tlm_image_build(&hp, 1, 2, ts, nt, &v, image, bytes, &err)) {
        fprintf(stderr, "tu_build_tiny: %s\n", err.msg);
        abort();
    }
    for (uint32_t i = 0; i < nt; i++) free(bufs[i]);
    free(bufs);
    free(ts);
    tlm_vocab_free(&v);
}

void tu_import_stories260k(uint8_t **image, size_t *bytes)
{
    const char *ck = tu_data("llama2c/stories260K.bin");
    const char *tk = tu_data("llama2c/tok512.bin");
    tlm_error err;
    if (tlm_llama2c_import(ck, tk, image, bytes, &err)) {
        fprintf(stderr, "import failed: %s\n", err.msg);
        exit(1);
    }
}

int tu_run(char **out, char **err, const char *fmt, ...)
{
    static char *last_out, *last_err;
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char o_path[512], e_path[512];
    snprintf(o_path, sizeof o_path, "%s/run.out", tu_tmpdir());
    snprintf(e_path, sizeof e_path, "%s/run.err", tu_tmpdir());
    /* stdin from /dev/null unless ARGS redirect it (the later redirection wins) */
    snprintf(cmd, sizeof cmd, "'%s' </dev/null %s >'%s' 2>'%s'", tu_cli(), args, o_path, e_path);
    int st = system(cmd);
    free(last_out);
    free(last_err);
    size_t n;
    if (tlm_read_file(o_path, (uint8_t **)&last_out, &n, NULL)) last_out = strdup("");
    if (tlm_read_file(e_path, (uint8_t **)&last_err, &n, NULL)) last_err = strdup("");
    if (out) *out = last_out;
    if (err) *err = last_err;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

void tu_write_roster(const char *path, const uint32_t *ids, const tlm_fed_pub *pubs, int n)
{
    FILE *f = fopen(path, "w");
    if (!f) abort();
    fputs("# devices of the test\n\n", f);
    for (int i = 0; i < n; i++) {
        char t[TLM_FED_PUB_TEXT];
        tlm_fed_pub_text(&pubs[i], t);
        fprintf(f, "%u %s\n", ids[i], t);
    }
    fclose(f);
}
