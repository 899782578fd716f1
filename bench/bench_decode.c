/* Decode and evaluation throughput, side by side in one run:
 *   - greedy decoding tokens/s on one thread (the device runtime on the host),
 *   - story evaluation tokens/s: whole-sequence path vs token-by-token
 *     decoding, each on one thread and on all cores.
 * usage: bench_decode MODEL.tlm STORIES.txt [--repeat N] [--json FILE] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/host/eval.h"
#include "../src/host/fileio.h"
#include "../src/host/model_file.h"
#include "../src/host/progress.h"
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_decode MODEL.tlm STORIES.txt [--repeat N] [--json FILE]\n");
        return 2;
    }
    int repeat = 15;
    const char *json_path = NULL;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
        else {
            fprintf(stderr, "bench_decode: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (repeat < 1) repeat = 1;
    tlm_model_file mf;
    tlm_error err;
    if (tlm_model_file_open(&mf, argv[1], &err)) {
        fprintf(stderr, "bench_decode: %s\n", err.msg);
        return 1;
    }
    const tlm_model *m = &mf.model;
    uint8_t *text;
    size_t len;
    if (tlm_read_file(argv[2], &text, &len, &err)) {
        fprintf(stderr, "bench_decode: %s\n", err.msg);
        return 1;
    }

    /* Greedy decoding from BOS, 256 positions (or seq_len). */
    uint32_t steps = m->hp.seq_len < 256 ? m->hp.seq_len : 256;
    size_t ab = tlm_runtime_arena_size(m, steps);
    void *arena = malloc(ab);
    tlm_runtime rt;
    if (tlm_runtime_init(&rt, m, steps, arena, ab, &err)) {
        fprintf(stderr, "bench_decode: %s\n", err.msg);
        return 1;
    }
    double *rates = calloc((size_t)repeat, sizeof *rates);
    uint32_t checksum = 0;
    for (int r = 0; r < repeat; r++) {
        double t0 = tlm_now();
        uint32_t tok = m->bos_id;
        for (uint32_t pos = 0; pos < steps; pos++) {
            float *lg;
            tlm_runtime_forward(&rt, tok, pos, &lg);
            tok = tlm_argmax(lg, m->hp.vocab_size);
            checksum = checksum * 31u + tok;
        }
        rates[r] = steps / (tlm_now() - t0);
    }
    qsort(rates, (size_t)repeat, sizeof *rates, cmp_double);
    double decode_median = rates[repeat / 2], decode_best = rates[repeat - 1];

    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    struct {
        const char *name;
        int threads, token_by_token;
        tlm_eval_result r;
    } runs[4] = {
        {"eval, token-by-token decoding, 1 thread", 1, 1, {.loss = 0}},
        {"eval, token-by-token decoding, all cores", cores, 1, {.loss = 0}},
        {"eval, whole-sequence path, 1 thread", 1, 0, {.loss = 0}},
        {"eval, whole-sequence path, all cores", cores, 0, {.loss = 0}},
    };
    for (int i = 0; i < 4; i++) {
        tlm_eval_opts o = {.threads = runs[i].threads, .token_by_token = runs[i].token_by_token};
        if (tlm_eval_text(m, (const char *)text, len, &o, &runs[i].r, &err)) {
            fprintf(stderr, "bench_decode: %s\n", err.msg);
            return 1;
        }
    }
    printf("model %s: dim %u, layers %u, vocab %u, %zu bytes; %d cores\n", argv[1], m->hp.dim, m->hp.n_layers,
           m->hp.vocab_size, m->image_bytes, cores);
    printf("%-44s %12s\n", "measure", "tokens/s");
    printf("%-44s %12.0f  (median of %d runs of %u positions; best %.0f)\n", "greedy decode, 1 thread", decode_median, repeat,
           steps, decode_best);
    for (int i = 0; i < 4; i++)
        printf("%-44s %12.0f  (loss %.5f, %.2f s)\n", runs[i].name, runs[i].r.tokens_per_s, runs[i].r.loss, runs[i].r.seconds);
    double ratio_same_cores = runs[3].r.tokens_per_s / runs[1].r.tokens_per_s;
    double ratio_vs_single = runs[3].r.tokens_per_s / runs[0].r.tokens_per_s;
    double ratio_1t = runs[2].r.tokens_per_s / runs[0].r.tokens_per_s;
    printf("sequence eval / token-by-token eval: %.2fx (both on all cores), %.2fx (both 1 thread), %.2fx (all cores vs 1 thread)\n",
           ratio_same_cores, ratio_1t, ratio_vs_single);

    char json[2048];
    snprintf(json, sizeof json,
             "{\"model\":\"%s\",\"cores\":%d,\"decode_tok_s_median\":%.1f,\"decode_tok_s_best\":%.1f,\"decode_positions\":%u,"
             "\"eval_tokbytok_1t\":%.1f,\"eval_tokbytok_all\":%.1f,\"eval_seq_1t\":%.1f,\"eval_seq_all\":%.1f,"
             "\"ratio_seq_vs_tokbytok_all_cores\":%.3f,\"ratio_seq_vs_tokbytok_1t\":%.3f,\"loss\":%.6f,\"checksum\":%u}",
             argv[1], cores, decode_median, decode_best, steps, runs[0].r.tokens_per_s, runs[1].r.tokens_per_s,
             runs[2].r.tokens_per_s, runs[3].r.tokens_per_s, ratio_same_cores, ratio_1t, runs[3].r.loss, checksum);
    printf("%s\n", json);
    if (json_path) {
        FILE *f = fopen(json_path, "w");
        if (f) {
            fprintf(f, "%s\n", json);
            fclose(f);
        }
    }
    free(rates);
    free(arena);
    free(text);
    tlm_model_file_close(&mf);
    return 0;
}
