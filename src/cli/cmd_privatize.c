/* tritlm privatize: text in, differentially private text out. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/csprng.h"
#include "../host/fileio.h"
#include "../host/model_file.h"
#include "../host/privacy.h"
#include "cli.h"

static const char help[] =
    "usage: tritlm privatize -m MODEL --mechanism dx|rr --epsilon E [--budget B [--ledger FILE]]\n"
    "                        [--redact] [--seed S] [--json] < TEXT\n"
    "\n"
    "Reads text on stdin and writes it privatized, token by token, on stdout. Each\n"
    "ordinary token (not BOS/EOS/unk) goes through the mechanism and costs epsilon;\n"
    "a message of n tokens costs n x epsilon (sequential composition).\n"
    "\n"
    "  -m, --model FILE     model image: its tokenizer and (dx) its embeddings\n"
    "      --mechanism M    dx: metric differential privacy on token embeddings (noise of\n"
    "                       density ~ exp(-epsilon |z|), then the nearest token);\n"
    "                       rr: k-ary randomized response over the vocabulary (exact\n"
    "                       epsilon-local DP per token)\n"
    "      --epsilon E      per token, > 0, or inf (no noise)\n"
    "      --budget B       refuse (exit 1, nothing written) if the message would cost more;\n"
    "                       with --ledger the budget spans every run that uses the file\n"
    "      --ledger FILE    JSON file with the budget's limit and what was spent (created\n"
    "                       with limit B; updated atomically after each release)\n"
    "      --redact         replace e-mail addresses, phone numbers and digit runs first\n"
    "      --seed S         reproducible noise from a seeded ChaCha20 stream: for tests\n"
    "                       and experiments only, the output is then NOT private\n"
    "      --json           JSON with input_ids, output_ids, epsilon_per_token,\n"
    "                       epsilon_spent, budget, text (valid UTF-8: bytes of a\n"
    "                       broken character become U+FFFD; output_ids are exact)\n"
    "  -h, --help           this text\n";

enum { P_MECH = 300, P_EPS, P_BUDGET, P_LEDGER, P_REDACT, P_SEED, P_JSON };

static cJSON *ids_json(const uint32_t *ids, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

static int read_ledger(const char *path, tlm_budget *b, int *exists, tlm_error *err)
{
    uint8_t *buf;
    size_t n;
    *exists = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    if (tlm_read_file(path, &buf, &n, err)) return -1;
    char *s = malloc(n + 1);
    memcpy(s, buf, n);
    s[n] = 0;
    free(buf);
    cJSON *j = cJSON_Parse(s);
    free(s);
    const cJSON *lim = cJSON_GetObjectItemCaseSensitive(j, "limit"), *sp = cJSON_GetObjectItemCaseSensitive(j, "spent");
    if (!cJSON_IsNumber(lim) || !cJSON_IsNumber(sp) || !(lim->valuedouble >= 0) || !(sp->valuedouble >= 0)) {
        cJSON_Delete(j);
        tlm_fail(err, TLM_ERR_FORMAT, "%s is not a privacy ledger (expects {\"limit\": L, \"spent\": S})", path);
        return -1;
    }
    b->limit = lim->valuedouble;
    b->spent = sp->valuedouble;
    cJSON_Delete(j);
    *exists = 1;
    return 0;
}

static int write_ledger(const char *path, const tlm_budget *b, tlm_error *err)
{
    char s[128];
    int k = snprintf(s, sizeof s, "{\"limit\": %.17g, \"spent\": %.17g}\n", b->limit, b->spent);
    return tlm_write_file_atomic(path, s, (size_t)k, err) ? -1 : 0;
}

int cmd_privatize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"mechanism", required_argument, 0, P_MECH},
        {"epsilon", required_argument, 0, P_EPS}, {"budget", required_argument, 0, P_BUDGET},
        {"ledger", required_argument, 0, P_LEDGER}, {"redact", no_argument, 0, P_REDACT},
        {"seed", required_argument, 0, P_SEED}, {"json", no_argument, 0, P_JSON},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *ledger = NULL;
    tlm_mech mech = TLM_MECH_NONE;
    float eps = 0.0f, budget = -1.0f;
    int redact = 0, json = 0, seeded = 0, c;
    uint64_t seed = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case P_MECH:
            mech = tlm_mech_parse(optarg);
            if (!mech) return cli_usage_error("privatize", "--mechanism expects dx or rr, got '%s'", optarg);
            break;
        case P_EPS:
            if (!tlm_epsilon_parse(optarg, &eps)) return cli_usage_error("privatize", "--epsilon expects a positive number or inf, got '%s'", optarg);
            break;
        case P_BUDGET:
            if (!cli_parse_float(optarg, 0.0f, 1e12f, &budget))
                return cli_usage_error("privatize", "--budget expects a non-negative number, got '%s'", optarg);
            break;
        case P_LEDGER: ledger = optarg; break;
        case P_REDACT: redact = 1; break;
        case P_SEED:
            if (!cli_parse_u64(optarg, &seed)) return cli_usage_error("privatize", "--seed expects an integer, got '%s'", optarg);
            seeded = 1;
            break;
        case P_JSON: json = 1; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_bad_option("privatize", argv, c);
        }
    }
    if (optind != argc) return cli_usage_error("privatize", "unexpected argument '%s' (the text comes on stdin)", argv[optind]);
    if (!model) return cli_usage_error("privatize", "missing -m MODEL");
    if (!mech) return cli_usage_error("privatize", "missing --mechanism dx|rr");
    if (!(eps > 0.0f)) return cli_usage_error("privatize", "missing --epsilon E");
    if (ledger && budget < 0.0f) {
        FILE *f = fopen(ledger, "rb");
        if (!f) return cli_usage_error("privatize", "--ledger %s does not exist yet: give --budget B to create it", ledger);
        fclose(f);
    }

    tlm_error err;
    tlm_budget b = {.limit = budget, .spent = 0.0};
    const int have_budget = budget >= 0.0f || ledger;
    /* the whole of stdin */
    uint8_t *in;
    size_t len;
    if (tlm_read_stream(stdin, "stdin", &in, &len, &err)) return cli_fail("privatize", &err);
    char *text = (char *)in;
    if (len && text[len - 1] == '\n') len--; /* the line's end is not part of the message */

    tlm_model_file mf;
    if (tlm_model_file_open(&mf, model, &err)) {
        free(text);
        return cli_fail("privatize", &err);
    }
    int rc = TLM_EXIT_FAIL;
    tlm_privatizer p;
    tlm_chacha cc;
    tlm_host_source src;
    tlm_rand r;
    tlm_priv_text out = {0};
    void *index = NULL;
    int lock = -1;
    if (tlm_privatizer_init(&p, &mf.model, mech, eps, &err) || tlm_privatizer_index_alloc(&p, &index, &err)) {
        rc = cli_fail("privatize", &err);
        goto done;
    }
    if (ledger) { /* locked from here until the charge is written */
        int exists;
        if ((lock = tlm_lock_beside(ledger, &err)) < 0 || read_ledger(ledger, &b, &exists, &err)) {
            rc = cli_fail("privatize", &err);
            goto done;
        }
        if (!exists) b = (tlm_budget){.limit = budget, .spent = 0.0};
    }
    if (seeded) {
        fprintf(stderr, "tritlm privatize: --seed makes the noise reproducible: for testing only, not private\n");
        tlm_chacha_seed(&cc, seed);
        tlm_rand_init(&r, tlm_chacha_fill, &cc);
    } else {
        tlm_host_rand(&r, &src);
    }
    if (tlm_privatize_text(&p, &r, have_budget ? &b : NULL, text, len, redact, &out, &err)) {
        rc = cli_fail("privatize", &err);
        goto done;
    }
    if (ledger && write_ledger(ledger, &b, &err)) { /* record the spending before releasing anything */
        rc = cli_fail("privatize", &err);
        goto done;
    }
    if (lock >= 0) {
        close(lock);
        lock = -1;
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "mechanism", tlm_mech_name(mech));
        cJSON_AddNumberToObject(j, "epsilon", isinf(eps) ? -1 : eps);
        cJSON_AddNumberToObject(j, "epsilon_per_token", isinf(p.epsilon_token) ? -1 : p.epsilon_token);
        cJSON_AddNumberToObject(j, "tokens_privatized", (double)out.privatized);
        cJSON_AddNumberToObject(j, "epsilon_spent", isinf(out.spent) ? -1 : out.spent);
        if (have_budget) {
            cJSON_AddNumberToObject(j, "budget_limit", b.limit);
            cJSON_AddNumberToObject(j, "budget_spent", b.spent);
        }
        cJSON_AddItemToObject(j, "input_ids", ids_json(out.in_ids, out.n));
        cJSON_AddItemToObject(j, "output_ids", ids_json(out.out_ids, out.n));
        cli_json_add_text(j, "text", out.text, out.text_len);
        char *s = cJSON_PrintUnformatted(j);
        puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        fwrite(out.text, 1, out.text_len, stdout);
        putchar('\n');
        fprintf(stderr, "privatize: %zu tokens, epsilon %.4g each, %.4g spent%s\n", out.privatized, (double)p.epsilon_token,
                out.spent, seeded ? " (seeded: not private)" : "");
    }
    rc = 0;
done:
    if (lock >= 0) close(lock);
    tlm_priv_text_free(&out);
    free(index);
    tlm_model_file_close(&mf);
    free(text);
    return rc;
}
