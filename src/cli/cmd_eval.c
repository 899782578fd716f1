/* tritlm eval: story-level next-token evaluation. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/eval.h"
#include "../host/fileio.h"
#include "../host/model_file.h"
#include "../host/privacy.h"
#include "cli.h"
#include "tritlm/runtime.h"

static const char help[] =
    "usage: tritlm eval -m MODEL --text FILE [--ctx N] [--windows [--stride S]] [--split stories|lines]\n"
    "                   [--threads N] [--token-by-token [--kv-int8]] [--privatize dx|rr --epsilon E [--seed S]]\n"
    "                   [--versus MODEL_B [--resamples N]] [--adapter UPDATE] [--json]\n"
    "\n"
    "Splits FILE into stories on <|endoftext|> lines, encodes each with BOS, truncates\n"
    "it to N tokens and scores the prediction of every token after the first. Prints\n"
    "mean cross-entropy (nats), perplexity and top-1 accuracy.\n"
    "\n"
    "  -m, --model FILE     model image (.tlm)\n"
    "      --text FILE      stories to evaluate\n"
    "      --ctx N          truncation length (default: the model's seq_len)\n"
    "      --windows        score all of a longer story, in windows of N tokens that\n"
    "                       each start fresh where the previous one stopped predicting\n"
    "      --stride S       ... or S tokens after the previous window's start (1..N-1):\n"
    "                       overlapping windows, each scoring only its new tokens, give\n"
    "                       every prediction at least N-S tokens of context (slower)\n"
    "      --split lines    every non-empty line is one story (utterances, messages);\n"
    "                       'stories' (the default) splits on <|endoftext|>\n"
    "      --threads N      worker threads (default: all cores)\n"
    "      --token-by-token decode one position at a time with the device runtime\n"
    "                       (slower; a cross-check of the sequence path)\n"
    "      --kv-int8        ... with the KV cache in int8 (implies --token-by-token)\n"
    "      --adapter U      decode with the low-rank update U ('tritlm fed update --lora R\n"
    "                       --rank R -m MODEL') on top of MODEL, left as it is (implies\n"
    "                       --token-by-token; not with --versus)\n"
    "      --privatize M    the model reads each story privatized by mechanism M (see\n"
    "                       'tritlm privatize') and is scored on the original next tokens\n"
    "      --epsilon E      per token, with --privatize\n"
    "      --seed S         seeded noise (ChaCha20 per story) for reproducible figures\n"
    "      --versus FILE    also evaluate model B on the same stories (same options) and\n"
    "                       print B - A for loss and top-1 with 95% intervals from a\n"
    "                       paired bootstrap over stories (fixed seed, reproducible)\n"
    "      --resamples N    bootstrap draws for --versus (default 2000, at least 100)\n"
    "      --json           one JSON object on stdout\n"
    "  -h, --help           this text\n";

int cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"text", required_argument, 0, 'x'},
        {"ctx", required_argument, 0, 'c'},   {"threads", required_argument, 0, 'T'},
        {"token-by-token", no_argument, 0, 'k'}, {"json", no_argument, 0, 'j'},
        {"privatize", required_argument, 0, 'P'}, {"epsilon", required_argument, 0, 'E'},
        {"seed", required_argument, 0, 'S'}, {"kv-int8", no_argument, 0, 'K'},
        {"versus", required_argument, 0, 'V'}, {"resamples", required_argument, 0, 'R'},
        {"windows", no_argument, 0, 'W'},     {"split", required_argument, 0, 'L'},
        {"stride", required_argument, 0, 'D'}, {"adapter", required_argument, 0, 'A'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *model_path = NULL, *text_path = NULL, *versus = NULL, *adapter_path = NULL;
    tlm_eval_opts eo = {0};
    uint32_t u, resamples = 2000;
    int json = 0, c;
    cli_priv pv = {0};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'x': text_path = optarg; break;
        case 'c':
            if (!cli_parse_u32(optarg, 2, 1u << 20, &eo.ctx)) return cli_usage_error("eval", "--ctx expects an integer >= 2, got '%s'", optarg);
            break;
        case 'T':
            if (!cli_parse_u32(optarg, 1, 1024, &u)) return cli_usage_error("eval", "--threads expects 1..1024, got '%s'", optarg);
            eo.threads = (int)u;
            break;
        case 'k': eo.token_by_token = 1; break;
        case 'K':
            eo.token_by_token = 1;
            eo.rt_flags |= TLM_RT_KV_INT8;
            break;
        case 'j': json = 1; break;
        case 'P':
        case 'E':
        case 'S':
            if (cli_priv_option("eval", c, optarg, &pv)) return TLM_EXIT_USAGE;
            break;
        case 'V': versus = optarg; break;
        case 'A': adapter_path = optarg; break;
        case 'W': eo.windows = 1; break;
        case 'D':
            if (!cli_parse_u32(optarg, 1, 1u << 20, &eo.stride)) return cli_usage_error("eval", "--stride expects an integer >= 1, got '%s'", optarg);
            break;
        case 'L':
            if (cli_parse_split("eval", optarg, &eo.separator)) return TLM_EXIT_USAGE;
            break;
        case 'R':
            if (!cli_parse_u32(optarg, 100, 1000000, &resamples))
                return cli_usage_error("eval", "--resamples expects 100..1000000, got '%s'", optarg);
            break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_bad_option("eval", argv, c);
        }
    }
    if (optind != argc) return cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (cli_priv_check("eval", &pv)) return TLM_EXIT_USAGE;
    const tlm_mech mech = (tlm_mech)pv.mech;
    const float eps = pv.eps;
    eo.priv_seed = pv.seed;
    eo.priv_seeded = pv.seeded;
    if (!model_path) return cli_usage_error("eval", "missing -m MODEL");
    if (!text_path) return cli_usage_error("eval", "missing --text FILE");
    if (eo.stride && !eo.windows) return cli_usage_error("eval", "--stride goes with --windows");
    if (versus && mech) return cli_usage_error("eval", "--versus compares models on the original text: no --privatize");
    if (versus && adapter_path)
        return cli_usage_error("eval", "--adapter applies to one model: evaluate with and without it in two runs");
    eo.progress = isatty(2);
    eo.per_story = versus != NULL;

    tlm_model_file mf;
    tlm_error err;
    if (tlm_model_file_open(&mf, model_path, &err)) return cli_fail("eval", &err);
    uint8_t *text;
    size_t len;
    if (tlm_read_text(text_path, &text, &len, &err)) {
        tlm_model_file_close(&mf);
        return cli_fail("eval", &err);
    }
    tlm_eval_result r = {0};
    tlm_privatizer priv;
    tlm_status st = TLM_OK;
    uint8_t *adapter = NULL;
    if (adapter_path) {
        st = tlm_read_file(adapter_path, &adapter, &eo.adapter_bytes, &err);
        eo.adapter = adapter;
    }
    void *index = NULL;
    if (!st && mech) {
        st = tlm_privatizer_init(&priv, &mf.model, mech, eps, &err);
        if (!st) st = tlm_privatizer_index_alloc(&priv, &index, &err);
        eo.priv = &priv;
    }
    if (!st) st = tlm_eval_text(&mf.model, (const char *)text, len, &eo, &r, &err);
    free(index);
    free(adapter);
    tlm_model_file_close(&mf);
    tlm_eval_result rb = {0};
    tlm_paired pc;
    if (!st && versus) {
        tlm_model_file mb;
        st = tlm_model_file_open(&mb, versus, &err);
        if (!st) {
            st = tlm_eval_text(&mb.model, (const char *)text, len, &eo, &rb, &err);
            tlm_model_file_close(&mb);
        }
        if (!st) st = tlm_eval_paired(r.story, rb.story, (size_t)r.stories, resamples, 1, &pc, &err);
    }
    const int multiline = memchr(text, '\n', len) != NULL;
    free(text);
    tlm_eval_result_free(&r);
    tlm_eval_result_free(&rb);
    if (st) return cli_fail("eval", &err);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "loss", r.loss);
        cJSON_AddNumberToObject(o, "perplexity", r.perplexity);
        cJSON_AddNumberToObject(o, "top1", r.top1);
        cJSON_AddNumberToObject(o, "tokens", (double)r.tokens);
        cJSON_AddNumberToObject(o, "stories", (double)r.stories);
        cJSON_AddNumberToObject(o, "truncated", (double)r.truncated);
        cJSON_AddNumberToObject(o, "windows", (double)r.windows);
        cJSON_AddNumberToObject(o, "seconds", r.seconds);
        cJSON_AddNumberToObject(o, "tokens_per_s", r.tokens_per_s);
        if (mech) {
            cJSON_AddStringToObject(o, "mechanism", tlm_mech_name(mech));
            cJSON_AddNumberToObject(o, "epsilon", isinf(eps) ? -1 : eps);
            cJSON_AddNumberToObject(o, "epsilon_per_token", isinf(priv.epsilon_token) ? -1 : priv.epsilon_token);
            cJSON_AddNumberToObject(o, "privatized", (double)r.privatized);
            cJSON_AddNumberToObject(o, "unchanged", (double)r.unchanged);
        }
        if (versus) {
            cJSON *v = cJSON_AddObjectToObject(o, "versus");
            cJSON_AddStringToObject(v, "model", versus);
            cJSON_AddNumberToObject(v, "loss", rb.loss);
            cJSON_AddNumberToObject(v, "perplexity", rb.perplexity);
            cJSON_AddNumberToObject(v, "top1", rb.top1);
            cJSON_AddNumberToObject(v, "loss_diff", pc.loss_diff);
            cJSON_AddItemToObject(v, "loss_diff_ci95", cJSON_CreateDoubleArray((const double[]){pc.loss_lo, pc.loss_hi}, 2));
            cJSON_AddNumberToObject(v, "top1_diff", pc.top1_diff);
            cJSON_AddItemToObject(v, "top1_diff_ci95", cJSON_CreateDoubleArray((const double[]){pc.top1_lo, pc.top1_hi}, 2));
            cJSON_AddNumberToObject(v, "stories_lower_loss", (double)pc.b_lower);
            cJSON_AddNumberToObject(v, "stories_higher_loss", (double)pc.a_lower);
            cJSON_AddNumberToObject(v, "resamples", pc.resamples);
        }
        char *s = cJSON_PrintUnformatted(o);
        puts(s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("loss %.5f  perplexity %.4f  top1 %.5f  tokens %llu  stories %llu  truncated %llu", r.loss, r.perplexity,
               r.top1, (unsigned long long)r.tokens, (unsigned long long)r.stories, (unsigned long long)r.truncated);
        if (eo.windows) printf("  windows %llu", (unsigned long long)r.windows);
        putchar('\n');
        fflush(stdout);
        fprintf(stderr, "%.2f s, %.0f tok/s\n", r.seconds, r.tokens_per_s);
        if (versus) {
            printf("versus %s: loss %.5f  perplexity %.4f  top1 %.5f\n", versus, rb.loss, rb.perplexity, rb.top1);
            printf("B - A: loss %+.5f [95%% %+.5f, %+.5f]  top1 %+.5f [95%% %+.5f, %+.5f]\n", pc.loss_diff, pc.loss_lo,
                   pc.loss_hi, pc.top1_diff, pc.top1_lo, pc.top1_hi);
            printf("       B has the lower loss on %zu of %zu stories, A on %zu (paired bootstrap, %u resamples)\n",
                   pc.b_lower, pc.stories, pc.a_lower, pc.resamples);
        }
    }
    /* A text without separators is one story, cut to the context: say so,
     * since a figure from its first few hundred tokens is rarely what was meant. */
    if (r.truncated)
        fprintf(stderr, "eval: note: %llu of %llu stories were longer than the context and were cut to it%s; "
                        "--windows scores every token%s\n",
                (unsigned long long)r.truncated, (unsigned long long)r.stories,
                r.stories == 1 ? " (the whole file is one story: no <|endoftext|> in it)" : "",
                r.stories == 1 && multiline ? ", --split lines makes each line a story" : "");
    return 0;
}
