/* Greedy decoding speed of several models side by side, interleaved in one
 * run so that machine noise hits them alike: typically an fp32 model and
 * its quantized versions. Quantized models run again with the portable
 * reference kernels only, and those with t2 or t3 tensors also with the
 * portable table kernels (what microcontrollers run).
 * usage: bench_quant_decode [--repeat N] [--positions P] BASE.tlm OTHER.tlm... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/host/model_file.h"
#include "../src/host/progress.h"
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    const char *path;
    int simd;
    tlm_model_file mf;
    int quantized, tables;
    double *tps;
} entry;

static double decode(const tlm_model *m, uint32_t positions, void *arena, size_t ab)
{
    tlm_runtime rt;
    if (tlm_runtime_init(&rt, m, positions, arena, ab, NULL)) return 0;
    uint32_t tok = m->bos_id;
    const double t0 = tlm_now();
    for (uint32_t pos = 0; pos < positions; pos++) {
        float *logits;
        tlm_runtime_forward(&rt, tok, pos, &logits);
        uint32_t best = 0;
        for (uint32_t i = 1; i < m->hp.vocab_size; i++)
            if (logits[i] > logits[best]) best = i;
        tok = best;
    }
    return positions / (tlm_now() - t0);
}

int main(int argc, char **argv)
{
    int repeat = 11, a = 1;
    uint32_t positions = 128;
    for (; a < argc && argv[a][0] == '-'; a += 2) {
        if (a + 1 >= argc) break;
        if (!strcmp(argv[a], "--repeat")) repeat = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--positions")) positions = (uint32_t)atoi(argv[a + 1]);
        else break;
    }
    if (argc - a < 2 || repeat < 1 || positions < 1) {
        fprintf(stderr, "usage: bench_quant_decode [--repeat N] [--positions P] BASE.tlm OTHER.tlm...\n");
        return 2;
    }
    entry *e = calloc((size_t)(argc - a) * 3, sizeof *e);
    int n = 0;
    size_t ab_max = 0;
    for (int i = a; i < argc; i++) {
        tlm_error err;
        entry *x = &e[n];
        x->path = argv[i];
        if (tlm_model_file_open(&x->mf, argv[i], &err)) {
            fprintf(stderr, "%s: %s\n", argv[i], err.msg);
            return 1;
        }
        if (positions > x->mf.model.hp.seq_len) positions = x->mf.model.hp.seq_len;
        for (uint32_t t = 0; t < x->mf.model.n_tensors; t++) {
            tlm_tensor tt;
            tlm_model_tensor_at(&x->mf.model, t, &tt);
            if (tt.wtype != TLM_WTYPE_F32) x->quantized = 1;
            if (tt.wtype == TLM_WTYPE_T2 || tt.wtype == TLM_WTYPE_T3) x->tables = 1;
        }
        x->simd = 1;
        n++;
        if (x->quantized) { /* the same model on the reference kernels */
            e[n] = *x;
            e[n].simd = 0;
            n++;
        }
        if (x->tables) { /* and on the table kernels */
            e[n] = *x;
            e[n].simd = 2;
            n++;
        }
    }
    for (int i = 0; i < n; i++) {
        size_t ab = tlm_runtime_arena_size(&e[i].mf.model, positions);
        if (ab > ab_max) ab_max = ab;
        e[i].tps = calloc((size_t)repeat, sizeof(double));
    }
    void *arena = malloc(ab_max);
    for (int r = 0; r < repeat; r++)
        for (int i = 0; i < n; i++) {
            tlm_wtype_set_simd(e[i].simd);
            e[i].tps[r] = decode(&e[i].mf.model, positions, arena, ab_max);
        }
    tlm_wtype_set_simd(1);
    printf("greedy decode, 1 thread, %u positions, %d interleaved repeats (median tok/s)\n", positions, repeat);
    printf("%-40s %-9s %12s %10s %8s\n", "model", "kernels", "image bytes", "tok/s", "vs base");
    double base = 0;
    for (int i = 0; i < n; i++) {
        qsort(e[i].tps, (size_t)repeat, sizeof(double), cmp_double);
        const double med = e[i].tps[repeat / 2];
        if (i == 0) base = med;
        printf("%-40s %-9s %12zu %10.1f %7.2fx\n", e[i].path, e[i].quantized ? (e[i].simd == 1 ? "simd" : e[i].simd == 2 ? "tables" : "reference") : "f32",
               e[i].mf.model.image_bytes, med, med / base);
    }
    free(arena);
    return 0;
}
