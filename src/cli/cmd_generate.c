/* tritlm generate: decode text with the device runtime; with --stories, a
 * corpus of sampled stories (text to train or distill on when the model's
 * own training text is not at hand). */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../host/fileio.h"
#include "../host/model_file.h"
#include "../host/progress.h"
#include "../host/csprng.h"
#include "../host/privacy.h"
#include "cli.h"
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"
#include "tritlm/tokenizer.h"

static const char help[] =
    "usage: tritlm generate -m MODEL [-p PROMPT] [-n STEPS] [-t TEMP] [--top-p P] [--seed S]\n"
    "                       [--privatize dx|rr --epsilon E] [--kv-int8] [--adapter UPDATE]\n"
    "       tritlm generate -m MODEL --stories N [-o FILE] [--threads K] [-p PROMPT] [-n STEPS]\n"
    "                       [-t TEMP] [--top-p P] [--seed S] [--kv-int8] [--adapter UPDATE]\n"
    "\n"
    "Generates text and prints it alone on stdout, followed by one newline; speed goes\n"
    "to stderr. Generation stops after STEPS positions or when the model emits BOS.\n"
    "\n"
    "With --stories N it writes N stories, each followed by a line <|endoftext|>: the\n"
    "corpus format of train, eval and quantize --qat. Story k (from 0) is sampled with\n"
    "seed S+k, the same text as a run with --seed S+k, whatever the thread count.\n"
    "Sampled at -t 1 --top-p 1 it is text from the model's own distribution, to\n"
    "distill from when its training text is not at hand (quantize --qat --distill\n"
    "--distill-weight 1 --data FILE).\n"
    "\n"
    "  -m, --model FILE   model image (.tlm)\n"
    "  -p, --prompt TEXT  text to continue (default: none)\n"
    "  -n, --steps N      positions to run, counting BOS, as llama2.c's -n (default 256,\n"
    "                     at most the model's seq_len)\n"
    "  -t, --temp T       temperature; 0 is greedy (default 1.0)\n"
    "      --top-p P      nucleus sampling threshold in (0,1]; 1 samples the whole\n"
    "                     distribution (default 0.9)\n"
    "      --seed S       sampler seed (default: time)\n"
    "      --privatize M  privatize the prompt's tokens with mechanism M before the model\n"
    "                     sees them (the echoed prompt is the privatized one); noise from\n"
    "                     the system's CSPRNG\n"
    "      --epsilon E    per prompt token, with --privatize\n"
    "      --kv-int8      keep the KV cache in int8 (a quarter of its RAM)\n"
    "      --adapter U    decode with the low-rank update U (from 'tritlm fed update\n"
    "                     --lora R --rank R -m MODEL') on top of MODEL, which is left as\n"
    "                     it is: what a device does with a ternary model in flash\n"
    "      --stories N    write a corpus of N stories (see above)\n"
    "  -o, --output FILE  with --stories: write the corpus to FILE (atomically) instead\n"
    "                     of stdout\n"
    "      --threads K    with --stories: worker threads (default: all cores)\n"
    "  -h, --help         this text\n";

/* Writes a decoded piece; lone control bytes other than whitespace are
 * dropped so that raw bytes cannot drive the terminal. */
static void put_piece(const uint8_t *p, size_t n, FILE *out)
{
    if (n == 1 && ((p[0] < 0x20 && p[0] != '\n' && p[0] != '\t' && p[0] != '\r') || p[0] == 0x7f)) return;
    fwrite(p, 1, n, out);
}

/* Runs the model from ids[0] (BOS) through the prompt ids[1..n_prompt) and
 * on with sampled tokens, writing the text to out, until `steps` positions
 * or BOS; returns the positions run. */
static uint32_t decode(tlm_runtime *rt, const tlm_model *m, const uint32_t *ids, size_t n_prompt, uint32_t steps,
                       tlm_sampler *sampler, FILE *out)
{
    uint32_t token = ids[0], pos = 0;
    while (pos < steps) {
        float *logits;
        tlm_runtime_forward(rt, token, pos, &logits);
        uint32_t next = (pos + 1u < n_prompt) ? ids[pos + 1u]
                                               : tlm_sample(sampler, logits, m->hp.vocab_size, rt->sample_scratch);
        pos++;
        if (next == m->bos_id) break;
        const uint8_t *piece;
        size_t n = tlm_decode_piece(m, token, next, &piece);
        put_piece(piece, n, out);
        token = next;
    }
    fputc('\n', out);
    return pos;
}

/* --stories: stories [first, end) of one batch, taken by the workers one at
 * a time, each into its own memory stream so that the batch is written in
 * story order. */
typedef struct corpus_job {
    const tlm_model *m;
    const uint32_t *ids;
    size_t n_prompt;
    uint32_t steps;
    float temp, top_p;
    uint64_t seed;
    atomic_size_t next;
    size_t first, end;
    char **text;  /* [end - first] */
    size_t *len;  /* [end - first] */
    atomic_uint_fast64_t positions;
    atomic_int failed;
} corpus_job;

typedef struct corpus_worker {
    corpus_job *job;
    void *arena; /* its runtime's */
    tlm_runtime rt;
} corpus_worker;

static void *corpus_work(void *arg)
{
    corpus_worker *w = arg;
    corpus_job *j = w->job;
    for (;;) {
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->end) break;
        size_t k = i - j->first;
        FILE *mem = open_memstream(&j->text[k], &j->len[k]);
        if (!mem) {
            atomic_store(&j->failed, 1);
            break;
        }
        tlm_sampler sampler;
        tlm_sampler_init(&sampler, j->temp, j->top_p, j->seed + (uint64_t)i);
        uint32_t pos = decode(&w->rt, j->m, j->ids, j->n_prompt, j->steps, &sampler, mem);
        if (fclose(mem) != 0) atomic_store(&j->failed, 1);
        atomic_fetch_add(&j->positions, pos);
    }
    return NULL;
}

/* Writes n_stories stories with <|endoftext|> after each to out, with
 * `threads` workers, each with its own runtime. */
static int write_corpus(const tlm_model *m, const uint32_t *ids, size_t n_prompt, uint32_t steps, float temp,
                        float top_p, uint64_t seed, uint32_t rt_flags, const uint8_t *adapter, size_t adapter_bytes,
                        uint32_t n_stories, int threads, FILE *out)
{
    enum { BATCH_PER_THREAD = 64 };
    if ((uint32_t)threads > n_stories) threads = (int)n_stories;
    size_t batch = (size_t)threads * BATCH_PER_THREAD;
    size_t arena_bytes = tlm_runtime_arena_size_flags(m, steps, rt_flags);
    corpus_worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    corpus_job j = {.m = m, .ids = ids, .n_prompt = n_prompt, .steps = steps, .temp = temp, .top_p = top_p, .seed = seed};
    j.text = calloc(batch, sizeof *j.text);
    j.len = calloc(batch, sizeof *j.len);
    atomic_init(&j.positions, 0);
    atomic_init(&j.failed, 0);
    int rc = TLM_EXIT_FAIL;
    tlm_error err;
    if (!w || !tid || !j.text || !j.len) {
        fprintf(stderr, "tritlm generate: out of memory\n");
        goto out;
    }
    for (int t = 0; t < threads; t++) {
        w[t].job = &j;
        if (!(w[t].arena = malloc(arena_bytes))) {
            fprintf(stderr, "tritlm generate: out of memory\n");
            goto out;
        }
        if (tlm_runtime_init_flags(&w[t].rt, m, steps, rt_flags, w[t].arena, arena_bytes, &err) ||
            (adapter && tlm_runtime_use_adapter(&w[t].rt, adapter, adapter_bytes, &err))) {
            rc = cli_fail("generate", &err);
            goto out;
        }
    }
    double t0 = tlm_now();
    for (size_t first = 0; first < n_stories; first += batch) {
        j.first = first;
        j.end = first + batch < n_stories ? first + batch : n_stories;
        atomic_store(&j.next, first);
        int started = 0;
        for (; started < threads; started++)
            if (pthread_create(&tid[started], NULL, corpus_work, &w[started]) != 0) break;
        if (started == 0) corpus_work(&w[0]);
        for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
        int bad = atomic_load(&j.failed);
        for (size_t k = 0; k < j.end - first; k++) {
            if (!bad && j.text[k]) {
                fwrite(j.text[k], 1, j.len[k], out);
                fputs("<|endoftext|>\n", out);
            }
            free(j.text[k]);
            j.text[k] = NULL;
        }
        if (bad) {
            fprintf(stderr, "tritlm generate: out of memory\n");
            goto out;
        }
    }
    double secs = tlm_now() - t0;
    uint64_t positions = atomic_load(&j.positions);
    fprintf(stderr, "%u stories, %llu positions in %.3f s: %.1f tok/s\n", n_stories, (unsigned long long)positions,
            secs, secs > 0 ? (double)positions / secs : 0.0);
    rc = 0;
out:
    for (int t = 0; w && t < threads; t++) free(w[t].arena);
    free(w);
    free(tid);
    free(j.text);
    free(j.len);
    return rc;
}

int cmd_generate(int argc, char **argv)
{
    uint32_t rt_flags = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"prompt", required_argument, 0, 'p'},
        {"steps", required_argument, 0, 'n'}, {"temp", required_argument, 0, 't'},
        {"top-p", required_argument, 0, 'P'}, {"seed", required_argument, 0, 'S'},
        {"privatize", required_argument, 0, 'R'}, {"epsilon", required_argument, 0, 'E'},
        {"kv-int8", no_argument, 0, 'K'},     {"stories", required_argument, 0, 'N'},
        {"output", required_argument, 0, 'o'}, {"threads", required_argument, 0, 'T'},
        {"adapter", required_argument, 0, 'A'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model_path = NULL, *prompt = "", *out_path = NULL, *adapter_path = NULL;
    uint32_t steps = 256, n_stories = 0, threads = 0;
    float temp = 1.0f, top_p = 0.9f;
    uint64_t seed = (uint64_t)time(NULL);
    int c;
    tlm_mech mech = TLM_MECH_NONE;
    float eps = 0.0f;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:p:n:t:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'p': prompt = optarg; break;
        case 'n':
            if (!cli_parse_u32(optarg, 1, 1u << 20, &steps))
                return cli_usage_error("generate", "-n expects a positive integer, got '%s'", optarg);
            break;
        case 't':
            if (!cli_parse_float(optarg, 0.0f, 100.0f, &temp))
                return cli_usage_error("generate", "-t expects a temperature in [0, 100], got '%s'", optarg);
            break;
        case 'P':
            if (!cli_parse_float(optarg, 1e-6f, 1.0f, &top_p))
                return cli_usage_error("generate", "--top-p expects a value in (0, 1], got '%s'", optarg);
            break;
        case 'S':
            if (!cli_parse_u64(optarg, &seed)) return cli_usage_error("generate", "--seed expects an integer, got '%s'", optarg);
            break;
        case 'R':
            mech = tlm_mech_parse(optarg);
            if (!mech) return cli_usage_error("generate", "--privatize expects dx or rr, got '%s'", optarg);
            break;
        case 'E':
            if (!tlm_epsilon_parse(optarg, &eps))
                return cli_usage_error("generate", "--epsilon expects a positive number or inf, got '%s'", optarg);
            break;
        case 'K': rt_flags |= TLM_RT_KV_INT8; break;
        case 'N':
            if (!cli_parse_u32(optarg, 1, UINT32_MAX, &n_stories))
                return cli_usage_error("generate", "--stories expects a positive integer, got '%s'", optarg);
            break;
        case 'o': out_path = optarg; break;
        case 'A': adapter_path = optarg; break;
        case 'T':
            if (!cli_parse_u32(optarg, 1, 1024, &threads))
                return cli_usage_error("generate", "--threads expects 1..1024, got '%s'", optarg);
            break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_bad_option("generate", argv, c);
        }
    }
    if (optind != argc) return cli_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    if (!model_path) return cli_usage_error("generate", "missing -m MODEL");
    if ((mech != TLM_MECH_NONE) != (eps > 0.0f)) return cli_usage_error("generate", "--privatize and --epsilon go together");
    if (!n_stories && (out_path || threads)) return cli_usage_error("generate", "-o and --threads go with --stories");
    if (n_stories && mech) return cli_usage_error("generate", "--privatize privatizes one prompt: not with --stories");
    if (out_path) {
        const char *in[] = {model_path, adapter_path};
        if (cli_refuse_clobber("generate", out_path, in, adapter_path ? 2 : 1)) return TLM_EXIT_USAGE;
    }

    tlm_model_file mf;
    tlm_error err;
    if (tlm_model_file_open(&mf, model_path, &err)) return cli_fail("generate", &err);
    const tlm_model *m = &mf.model;
    if (steps > m->hp.seq_len) steps = m->hp.seq_len;

    int rc = TLM_EXIT_FAIL;
    size_t plen = strlen(prompt), cap = TLM_ENCODE_MAX_IDS(plen);
    uint32_t *ids = malloc(cap * sizeof *ids);
    int32_t *scratch = malloc(TLM_ENCODE_SCRATCH(cap) * sizeof *scratch);
    void *arena = NULL; /* one story's runtime; --stories gives each worker its own */
    size_t n_prompt = 0;
    uint8_t *adapter = NULL;
    size_t adapter_bytes = 0;
    if (!ids || !scratch) {
        fprintf(stderr, "tritlm generate: out of memory\n");
        goto out;
    }
    if (adapter_path) {
        if (tlm_read_file(adapter_path, &adapter, &adapter_bytes, &err)) {
            rc = cli_fail("generate", &err);
            goto out;
        }
        rt_flags |= TLM_RT_ADAPTER;
    }
    tlm_status st = tlm_encode(m, prompt, plen, TLM_ENCODE_BOS, ids, cap, scratch, &n_prompt);
    if (st) {
        tlm_fail(&err, st, "cannot encode the prompt with this model's vocabulary");
        rc = cli_fail("generate", &err);
        goto out;
    }
    if (mech) {
        tlm_privatizer priv;
        tlm_rand rnd;
        float *ps = malloc(TLM_PRIV_SCRATCH_FLOATS(m->hp.dim) * sizeof *ps);
        tlm_host_source src;
        tlm_host_rand(&rnd, &src);
        void *index = NULL;
        st = ps ? tlm_privatizer_init(&priv, m, mech, eps, &err) : tlm_fail(&err, TLM_ERR_NOMEM, "out of memory");
        if (!st) st = tlm_privatizer_index_alloc(&priv, &index, &err);
        double spent = 0;
        if (!st) st = tlm_privatize_ids(&priv, &rnd, NULL, ids, n_prompt, ids, ps, &spent, &err);
        free(ps);
        free(index);
        if (st) {
            rc = cli_fail("generate", &err);
            goto out;
        }
        fprintf(stderr, "prompt privatized (%s, epsilon %g per token, %g spent)\n", tlm_mech_name(mech), (double)eps, spent);
    }
    if (n_stories) {
        if (!threads) {
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            threads = cores > 0 ? (uint32_t)cores : 1u;
        }
        tlm_atomic_file af;
        FILE *out = stdout;
        if (out_path) {
            if (tlm_atomic_open(&af, out_path, &err)) {
                rc = cli_fail("generate", &err);
                goto out;
            }
            out = af.f;
        }
        rc = write_corpus(m, ids, n_prompt, steps, temp, top_p, seed, rt_flags, adapter, adapter_bytes, n_stories,
                          (int)threads, out);
        if (out_path) {
            if (rc) tlm_atomic_abort(&af);
            else if (tlm_atomic_commit(&af, &err)) rc = cli_fail("generate", &err);
        } else if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, "tritlm generate: cannot write the stories to stdout\n");
            rc = TLM_EXIT_FAIL;
        }
        goto out;
    }
    size_t arena_bytes = tlm_runtime_arena_size_flags(m, steps, rt_flags);
    tlm_runtime rt;
    if (!(arena = malloc(arena_bytes))) {
        fprintf(stderr, "tritlm generate: out of memory\n");
        goto out;
    }
    if (tlm_runtime_init_flags(&rt, m, steps, rt_flags, arena, arena_bytes, &err) ||
        (adapter && tlm_runtime_use_adapter(&rt, adapter, adapter_bytes, &err))) {
        rc = cli_fail("generate", &err);
        goto out;
    }
    tlm_sampler sampler;
    tlm_sampler_init(&sampler, temp, top_p, seed);

    double t0 = tlm_now();
    uint32_t pos = decode(&rt, m, ids, n_prompt, steps, &sampler, stdout);
    fflush(stdout);
    double secs = tlm_now() - t0;
    fprintf(stderr, "%u positions in %.3f s: %.1f tok/s\n", pos, secs, secs > 0 ? pos / secs : 0.0);
    rc = 0;
out:
    free(ids);
    free(scratch);
    free(arena);
    free(adapter);
    tlm_model_file_close(&mf);
    return rc;
}
