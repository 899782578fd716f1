/* tritlm generate: decode text with the device runtime. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    "                       [--privatize dx|rr --epsilon E] [--kv-int8]\n"
    "\n"
    "Generates text and prints it alone on stdout, followed by one newline; speed goes\n"
    "to stderr. Generation stops after STEPS positions or when the model emits BOS.\n"
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
    "  -h, --help         this text\n";

/* Writes a decoded piece; lone control bytes other than whitespace are
 * dropped so that raw bytes cannot drive the terminal. */
static void put_piece(const uint8_t *p, size_t n)
{
    if (n == 1 && ((p[0] < 0x20 && p[0] != '\n' && p[0] != '\t' && p[0] != '\r') || p[0] == 0x7f)) return;
    fwrite(p, 1, n, stdout);
}

int cmd_generate(int argc, char **argv)
{
    uint32_t rt_flags = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"prompt", required_argument, 0, 'p'},
        {"steps", required_argument, 0, 'n'}, {"temp", required_argument, 0, 't'},
        {"top-p", required_argument, 0, 'P'}, {"seed", required_argument, 0, 'S'},
        {"privatize", required_argument, 0, 'R'}, {"epsilon", required_argument, 0, 'E'},
        {"kv-int8", no_argument, 0, 'K'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *model_path = NULL, *prompt = "";
    uint32_t steps = 256;
    float temp = 1.0f, top_p = 0.9f;
    uint64_t seed = (uint64_t)time(NULL);
    int c;
    tlm_mech mech = TLM_MECH_NONE;
    float eps = 0.0f;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:p:n:t:h", opts, NULL)) != -1) {
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
        case 'h': fputs(help, stdout); return 0;
        default: return cli_bad_option("generate", argv, c);
        }
    }
    if (optind != argc) return cli_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    if (!model_path) return cli_usage_error("generate", "missing -m MODEL");
    if ((mech != TLM_MECH_NONE) != (eps > 0.0f)) return cli_usage_error("generate", "--privatize and --epsilon go together");

    tlm_model_file mf;
    tlm_error err;
    if (tlm_model_file_open(&mf, model_path, &err)) return cli_fail("generate", &err);
    const tlm_model *m = &mf.model;
    if (steps > m->hp.seq_len) steps = m->hp.seq_len;

    int rc = TLM_EXIT_FAIL;
    size_t plen = strlen(prompt), cap = TLM_ENCODE_MAX_IDS(plen);
    uint32_t *ids = malloc(cap * sizeof *ids);
    int32_t *scratch = malloc(TLM_ENCODE_SCRATCH(cap) * sizeof *scratch);
    size_t arena_bytes = tlm_runtime_arena_size_flags(m, steps, rt_flags);
    void *arena = malloc(arena_bytes);
    tlm_runtime rt;
    size_t n_prompt = 0;
    if (!ids || !scratch || !arena) {
        fprintf(stderr, "tritlm generate: out of memory\n");
        goto out;
    }
    if (tlm_runtime_init_flags(&rt, m, steps, rt_flags, arena, arena_bytes, &err)) {
        rc = cli_fail("generate", &err);
        goto out;
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
    tlm_sampler sampler;
    tlm_sampler_init(&sampler, temp, top_p, seed);

    double t0 = tlm_now();
    uint32_t token = ids[0], pos = 0;
    while (pos < steps) {
        float *logits;
        tlm_runtime_forward(&rt, token, pos, &logits);
        uint32_t next = (pos + 1u < n_prompt) ? ids[pos + 1u]
                                               : tlm_sample(&sampler, logits, m->hp.vocab_size, rt.sample_scratch);
        pos++;
        if (next == m->bos_id) break;
        const uint8_t *piece;
        size_t n = tlm_decode_piece(m, token, next, &piece);
        put_piece(piece, n);
        token = next;
    }
    putchar('\n');
    fflush(stdout);
    double secs = tlm_now() - t0;
    fprintf(stderr, "%u positions in %.3f s: %.1f tok/s\n", pos, secs, secs > 0 ? pos / secs : 0.0);
    rc = 0;
out:
    free(ids);
    free(scratch);
    free(arena);
    tlm_model_file_close(&mf);
    return rc;
}
