/* tritlm fed: one round of federated fine-tuning with files: a device's
 * update (train locally from the global model, encode the change) and the
 * server's aggregation (validate each update, weighted mean, new global). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/csprng.h"
#include "../host/fedavg.h"
#include "../host/fileio.h"
#include "../host/model_file.h"
#include "../host/mqtt.h"
#include "../host/train/trainer.h"
#include "cli.h"

static const char help[] =
    "usage: tritlm fed update (-m GLOBAL.tlm | --model-from-broker) --data TEXT (--steps N | --minutes M) (-o UPDATE.tlmu | --broker B)\n"
    "                         [--encode fp32|int8|t2] [--round R] [--client ID] [--topic T] [training options]\n"
    "       tritlm fed aggregate -m GLOBAL.tlm -o NEW.tlm [--clip C] [--server-lr A] [--json]\n"
    "                         [--broker B --expect N [--round R] [--timeout S] [--topic T]] [UPDATE.tlmu...]\n"
    "\n"
    "Federated fine-tuning, one round, with files (the message format is docs/FORMAT.md's\n"
    "federated update; a device writes the same with the core's tlm_fed_* functions).\n"
    "\n"
    "update: fine-tunes GLOBAL on the local TEXT (the options of 'tritlm train' apply: --lr,\n"
    "  --batch, --ctx, --seed, --threads, ...) and writes the change to every tensor, not the\n"
    "  text and not the model. Its weight in the aggregation is the text's token count.\n"
    "      --encode E   fp32 (exact), int8 or t2 (2 bits per value; both round stochastically,\n"
    "                   so the expectation is the exact change) (default int8)\n"
    "      --round R, --client ID   recorded in the update (default 0)\n"
    "      --broker B   also (or instead of -o) publish it to the MQTT broker B (HOST or HOST:PORT)\n"
    "                   on TOPIC/round/R/update, QoS 1, waiting for the broker's acknowledgement\n"
    "      --topic T    the topic prefix (default tritlm)\n"
    "      --model-from-broker   instead of -m: the global model the server keeps on TOPIC/global\n"
    "aggregate: checks every update against GLOBAL (format, checksum, the model it was made\n"
    "  from, tensor shapes); a bad one is reported and left out; the others are averaged,\n"
    "  weighted by their token counts, and added to GLOBAL's weights into NEW (fp32).\n"
    "      --clip C        first scale each update down to an L2 norm of at most C\n"
    "      --server-lr A   NEW = GLOBAL + A x mean change (default 1)\n"
    "      --json          a JSON summary on stdout\n"
    "      --broker B      also take updates from MQTT: subscribe to TOPIC/round/R/update on B\n"
    "                      and collect until N updates passed the checks or S seconds passed\n"
    "                      (default 600); a device's second update in a round, or one for another\n"
    "                      round, is left out; they are averaged in the order of their client ids\n"
    "      --expect N, --round R, --timeout S, --topic T\n"
    "      --publish-model NEW also goes to TOPIC/global on B (retained: devices that connect\n"
    "                      later get it; see update's --model-from-broker)\n";

enum { F_ENCODE = 2000, F_ROUND, F_CLIENT, F_CLIP, F_SLR, F_JSON, F_BROKER, F_TOPIC, F_EXPECT, F_TIMEOUT, F_FROM_BROKER,
       F_PUBLISH };

/* The first message on a topic (a retained one arrives at once). */
typedef struct {
    uint8_t *data;
    size_t n;
} first_message;

static int keep_first(void *ctx, const char *topic, const uint8_t *data, size_t n)
{
    (void)topic;
    first_message *f = ctx;
    f->data = malloc(n ? n : 1);
    if (f->data) {
        memcpy(f->data, data, n);
        f->n = n;
    }
    return 1;
}

/* A topic prefix without MQTT's wildcards (non-zero after a usage error). */
static int bad_topic(const char *cmd, const char *topic)
{
    if (*topic && !strpbrk(topic, "#+")) return 0;
    cli_usage_error(cmd, "--topic must be a plain topic without # or +, got '%s'", topic);
    return 1;
}

static int fed_update(int argc, char **argv)
{
    static const struct option own[] = {
        {"model", required_argument, 0, 'm'}, {"output", required_argument, 0, 'o'},
        {"encode", required_argument, 0, F_ENCODE}, {"round", required_argument, 0, F_ROUND},
        {"client", required_argument, 0, F_CLIENT}, {"help", no_argument, 0, 'h'},
        {"broker", required_argument, 0, F_BROKER}, {"topic", required_argument, 0, F_TOPIC},
        {"model-from-broker", no_argument, 0, F_FROM_BROKER}};
    enum { N_OWN = sizeof own / sizeof own[0] };
    struct option opts[N_OWN + CLI_TRAIN_LOOP_OPTION_COUNT];
    memcpy(opts, own, sizeof own);
    memcpy(opts + N_OWN, cli_train_loop_options, CLI_TRAIN_LOOP_OPTION_COUNT * sizeof cli_train_loop_options[0]);
    tlm_train_opts o;
    tlm_train_defaults(&o);
    o.eval_every = 0;
    o.ckpt_every = 0;
    const char *model = NULL, *out = NULL, *broker = NULL, *topic = "tritlm";
    tlm_fed_enc enc = TLM_FED_I8;
    tlm_fed_header h = {0, 0, 0, 0};
    int c, from_broker = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        case F_ENCODE:
            if (!strcmp(optarg, "fp32")) enc = TLM_FED_F32;
            else if (!strcmp(optarg, "int8")) enc = TLM_FED_I8;
            else if (!strcmp(optarg, "t2")) enc = TLM_FED_T2;
            else return cli_usage_error("fed update", "--encode expects fp32, int8 or t2, got '%s'", optarg);
            break;
        case F_ROUND:
            if (!cli_parse_u32(optarg, 0, 0xFFFFFFFFu, &h.round))
                return cli_usage_error("fed update", "--round expects an integer, got '%s'", optarg);
            break;
        case F_CLIENT:
            if (!cli_parse_u32(optarg, 0, 0xFFFFFFFFu, &h.client))
                return cli_usage_error("fed update", "--client expects an integer, got '%s'", optarg);
            break;
        case F_BROKER: broker = optarg; break;
        case F_TOPIC: topic = optarg; break;
        case F_FROM_BROKER: from_broker = 1; break;
        default: {
            const int r = cli_train_loop_option("fed update", c, optarg, &o);
            if (r > 0) return r;
            if (r < 0) return cli_bad_option("fed update", argv, c);
        }
        }
    }
    if (optind != argc) return cli_usage_error("fed update", "unexpected argument '%s'", argv[optind]);
    if (from_broker && (model || !broker))
        return cli_usage_error("fed update", "--model-from-broker takes the model from --broker B, instead of -m");
    if (!model && !from_broker) return cli_usage_error("fed update", "missing -m GLOBAL.tlm (or --model-from-broker)");
    if (!out && !broker) return cli_usage_error("fed update", "missing -o UPDATE.tlmu or --broker B");
    if (bad_topic("fed update", topic)) return TLM_EXIT_USAGE;
    if (!o.data) return cli_usage_error("fed update", "missing --data TEXT (the device's own text)");
    if (!o.steps && !(o.minutes > 0)) return cli_usage_error("fed update", "give --steps N or --minutes M");
    if (o.steps && o.minutes > 0) return cli_usage_error("fed update", "give --steps or --minutes, not both");
    if (o.resume) return cli_usage_error("fed update", "--resume is not for updates");
    if (out) {
        const char *in[] = {model, o.data, o.val};
        if (cli_refuse_clobber("fed update", out, in, 3)) return TLM_EXIT_USAGE;
    }

    tlm_error err;
    /* local training into a temporary folder, removed afterwards: the
     * local model and its logs stay on the device */
    char dirbuf[4096], local[4200], fetched[4200];
    if (tlm_temp_dir(dirbuf, sizeof dirbuf, "tritlm-fed", &err)) return cli_fail("fed update", &err);
    snprintf(local, sizeof local, "%s/local.tlm", dirbuf);
    snprintf(fetched, sizeof fetched, "%s/global.tlm", dirbuf);
    if (broker) { /* no training if the update could not be sent; the model from the broker if asked */
        tlm_mqtt *mq = NULL;
        tlm_status s0 = tlm_mqtt_connect(&mq, broker, NULL, 30.0, &err);
        if (!s0 && from_broker) {
            char t[600];
            snprintf(t, sizeof t, "%s/global", topic);
            first_message fm = {NULL, 0};
            int timed_out = 0;
            s0 = tlm_mqtt_subscribe(mq, t, 30.0, &err);
            if (!s0) s0 = tlm_mqtt_receive(mq, 30.0, keep_first, &fm, &timed_out, &err);
            if (!s0 && timed_out) s0 = tlm_fail(&err, TLM_ERR_IO, "no global model on %s within 30 s", t);
            if (!s0 && !fm.data) s0 = tlm_fail(&err, TLM_ERR_NOMEM, "out of memory");
            if (!s0) s0 = tlm_write_file_atomic(fetched, fm.data, fm.n, &err);
            free(fm.data);
            model = fetched;
        }
        tlm_mqtt_close(mq);
        if (s0) {
            tlm_remove_tree(dirbuf);
            return cli_fail("fed update", &err);
        }
    }
    tlm_model_file g;
    if (tlm_model_file_open(&g, model, &err)) {
        tlm_remove_tree(dirbuf);
        return cli_fail("fed update", &err);
    }
    if (o.ctx == 256 && g.model.hp.seq_len < 256) o.ctx = g.model.hp.seq_len;
    o.init = model;
    o.out = local;
    o.progress = isatty(2);
    tlm_train_report rep;
    memset(&rep, 0, sizeof rep);
    tlm_status st = tlm_train(&o, &rep, &err);
    tlm_params gp, lp;
    memset(&gp, 0, sizeof gp);
    memset(&lp, 0, sizeof lp);
    tlm_model_file lf;
    int lf_open = 0;
    uint8_t *msg = NULL;
    size_t bytes = 0;
    if (!st) st = tlm_model_file_open(&lf, local, &err);
    if (!st) {
        lf_open = 1;
        st = tlm_params_from_model(&gp, &g.model, &err);
    }
    if (!st) st = tlm_params_from_model(&lp, &lf.model, &err);
    if (!st) {
        tlm_host_source src;
        tlm_rand rng;
        if (tlm_host_rand(&rng, &src)) st = tlm_fail(&err, TLM_ERR_RNG, "the system gave no randomness");
        if (!st) {
            h.n_examples = rep.data_tokens > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)rep.data_tokens;
            st = tlm_fed_make_update(&gp, &g.model, &lp, enc, &h, &rng, &msg, &bytes, &err);
        }
    }
    if (!st && out) st = tlm_write_file_atomic(out, msg, bytes, &err);
    if (!st && broker) {
        char id[64], t[600];
        snprintf(id, sizeof id, "tritlm-device-%u-%ld", h.client, (long)getpid());
        snprintf(t, sizeof t, "%s/round/%u/update", topic, h.round);
        st = tlm_mqtt_send(broker, id, t, msg, bytes, 0, &err);
        if (!st) fprintf(stderr, "fed update: published to %s on %s\n", t, broker);
    }
    free(msg);
    tlm_params_free(&gp);
    tlm_params_free(&lp);
    if (lf_open) tlm_model_file_close(&lf);
    tlm_model_file_close(&g);
    if (tlm_remove_tree(dirbuf) != 0) fprintf(stderr, "tritlm fed update: could not remove %s\n", dirbuf);
    if (st) return cli_fail("fed update", &err);
    fprintf(stderr, "fed update: %s: %zu bytes, %llu steps on %llu local tokens (weight %u)\n", out ? out : "sent", bytes,
            (unsigned long long)rep.steps, (unsigned long long)rep.data_tokens, h.n_examples);
    return 0;
}

/* Updates collected from the broker: each checked on arrival (against the
 * global model, the round, and the clients already heard), kept until the
 * round closes. */
typedef struct {
    uint8_t *msg;
    size_t n;
    uint32_t client;
} held_update;

typedef struct {
    const tlm_model *global;
    uint32_t round, expect, n;
    held_update *held;
    cJSON *rejected;
} collector;

static void reject(cJSON *list, const char *what, const char *why)
{
    fprintf(stderr, "tritlm fed aggregate: %s left out: %s\n", what, why);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "update", what);
    cJSON_AddStringToObject(r, "error", why);
    cJSON_AddItemToArray(list, r);
}

static int collect(void *ctx, const char *topic, const uint8_t *data, size_t n)
{
    collector *c = ctx;
    tlm_fed_info info;
    tlm_error err;
    char what[300], why[400];
    snprintf(what, sizeof what, "a message on %s", topic);
    if (tlm_fed_validate(data, n, c->global, &info, &err)) {
        reject(c->rejected, what, err.msg);
        return 0;
    }
    snprintf(what, sizeof what, "client %u's update on %s", info.h.client, topic);
    if (info.h.round != c->round) {
        snprintf(why, sizeof why, "it answers round %u, this is round %u", info.h.round, c->round);
        reject(c->rejected, what, why);
        return 0;
    }
    for (uint32_t i = 0; i < c->n; i++)
        if (c->held[i].client == info.h.client) {
            reject(c->rejected, what, "that client already sent an update this round");
            return 0;
        }
    uint8_t *copy = malloc(n);
    if (!copy) {
        reject(c->rejected, what, "out of memory");
        return 0;
    }
    memcpy(copy, data, n);
    c->held[c->n++] = (held_update){copy, n, info.h.client};
    fprintf(stderr, "fed aggregate: %s (%u of %u)\n", what, c->n, c->expect);
    return c->n >= c->expect;
}

static int by_client(const void *a, const void *b)
{
    const uint32_t x = ((const held_update *)a)->client, y = ((const held_update *)b)->client;
    return x < y ? -1 : x > y;
}

static int fed_aggregate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"output", required_argument, 0, 'o'},
        {"clip", required_argument, 0, F_CLIP}, {"server-lr", required_argument, 0, F_SLR},
        {"json", no_argument, 0, F_JSON}, {"help", no_argument, 0, 'h'}, {"broker", required_argument, 0, F_BROKER},
        {"topic", required_argument, 0, F_TOPIC}, {"expect", required_argument, 0, F_EXPECT},
        {"round", required_argument, 0, F_ROUND}, {"timeout", required_argument, 0, F_TIMEOUT},
        {"publish-model", no_argument, 0, F_PUBLISH}, {0, 0, 0, 0}};
    const char *model = NULL, *out = NULL, *broker = NULL, *topic = "tritlm";
    uint32_t expect = 0, round = 0;
    float clip = 0.0f, slr = 1.0f, timeout = 600.0f;
    int json = 0, c, publish = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        case F_PUBLISH: publish = 1; break;
        case F_CLIP:
            if (!cli_parse_float(optarg, 1e-9f, 1e9f, &clip))
                return cli_usage_error("fed aggregate", "--clip expects a positive number, got '%s'", optarg);
            break;
        case F_SLR:
            if (!cli_parse_float(optarg, 1e-6f, 100.0f, &slr))
                return cli_usage_error("fed aggregate", "--server-lr expects a number in (0, 100], got '%s'", optarg);
            break;
        case F_JSON: json = 1; break;
        case F_BROKER: broker = optarg; break;
        case F_TOPIC: topic = optarg; break;
        case F_EXPECT:
            if (!cli_parse_u32(optarg, 1, 1u << 20, &expect))
                return cli_usage_error("fed aggregate", "--expect expects a positive integer, got '%s'", optarg);
            break;
        case F_ROUND:
            if (!cli_parse_u32(optarg, 0, 0xFFFFFFFFu, &round))
                return cli_usage_error("fed aggregate", "--round expects an integer, got '%s'", optarg);
            break;
        case F_TIMEOUT:
            if (!cli_parse_float(optarg, 0.1f, 1e6f, &timeout))
                return cli_usage_error("fed aggregate", "--timeout expects seconds, got '%s'", optarg);
            break;
        default: return cli_bad_option("fed aggregate", argv, c);
        }
    }
    if (!model) return cli_usage_error("fed aggregate", "missing -m GLOBAL.tlm");
    if (!out) return cli_usage_error("fed aggregate", "missing -o NEW.tlm");
    if (optind == argc && !broker) return cli_usage_error("fed aggregate", "no updates given (files, or --broker)");
    if (broker && !expect) return cli_usage_error("fed aggregate", "--broker needs --expect N (updates to wait for)");
    if (!broker && (expect || publish))
        return cli_usage_error("fed aggregate", "--expect, --round, --timeout, --topic and --publish-model go with --broker");
    if (bad_topic("fed aggregate", topic)) return TLM_EXIT_USAGE;
    {
        const char *in[] = {model};
        if (cli_refuse_clobber("fed aggregate", out, in, 1)) return TLM_EXIT_USAGE;
        if (cli_refuse_clobber("fed aggregate", out, (const char *const *)(argv + optind), (size_t)(argc - optind)))
            return TLM_EXIT_USAGE;
    }
    tlm_error err;
    tlm_model_file g;
    if (tlm_model_file_open(&g, model, &err)) return cli_fail("fed aggregate", &err);
    tlm_fedavg agg;
    tlm_status st = tlm_fedavg_init(&agg, &g.model, clip, &err);
    if (st) {
        tlm_model_file_close(&g);
        return cli_fail("fed aggregate", &err);
    }
    cJSON *rejected = cJSON_CreateArray();
    for (int i = optind; i < argc; i++) {
        uint8_t *msg = NULL;
        size_t n = 0;
        tlm_error e2;
        tlm_status s2 = tlm_read_file(argv[i], &msg, &n, &e2);
        if (!s2) s2 = tlm_fedavg_add(&agg, msg, n, &e2);
        free(msg);
        if (s2) reject(rejected, argv[i], e2.msg);
    }
    if (broker) {
        collector col = {&g.model, round, expect, 0, calloc(expect, sizeof(held_update)), rejected};
        char id[64], t[600];
        snprintf(id, sizeof id, "tritlm-server-%ld", (long)getpid());
        snprintf(t, sizeof t, "%s/round/%u/update", topic, round);
        tlm_mqtt *mq = NULL;
        int timed_out = 0;
        st = col.held ? TLM_OK : tlm_fail(&err, TLM_ERR_NOMEM, "out of memory");
        if (!st) st = tlm_mqtt_connect(&mq, broker, id, 30.0, &err);
        if (!st) st = tlm_mqtt_subscribe(mq, t, 30.0, &err);
        if (!st) {
            fprintf(stderr, "fed aggregate: listening on %s for %u updates on %s\n", broker, expect, t);
            st = tlm_mqtt_receive(mq, timeout, collect, &col, &timed_out, &err);
        }
        tlm_mqtt_close(mq);
        if (!st && timed_out)
            fprintf(stderr, "tritlm fed aggregate: %.0f s passed with %u of %u updates\n", timeout, col.n, expect);
        /* the same result whatever order they arrived in */
        qsort(col.held, col.n, sizeof *col.held, by_client);
        for (uint32_t i = 0; i < col.n; i++) {
            tlm_error e2;
            if (!st && tlm_fedavg_add(&agg, col.held[i].msg, col.held[i].n, &e2)) {
                char what[64];
                snprintf(what, sizeof what, "client %u's update", col.held[i].client);
                reject(rejected, what, e2.msg);
            }
            free(col.held[i].msg);
        }
        free(col.held);
        if (st) {
            tlm_fedavg_free(&agg);
            tlm_model_file_close(&g);
            cJSON_Delete(rejected);
            return cli_fail("fed aggregate", &err);
        }
    }
    const uint32_t accepted = agg.accepted, clipped = agg.clipped;
    if (!accepted) {
        tlm_fedavg_free(&agg);
        tlm_model_file_close(&g);
        cJSON_Delete(rejected);
        fprintf(stderr, "tritlm fed aggregate: no update passed the checks; %s not written\n", out);
        return TLM_EXIT_FAIL;
    }
    tlm_params p;
    tlm_vocab v = {0};
    uint8_t *img = NULL;
    size_t bytes = 0;
    st = tlm_params_from_model(&p, &g.model, &err);
    if (!st) {
        tlm_fedavg_apply(&agg, &p, slr);
        st = tlm_vocab_from_model(&g.model, &v, &err);
        if (!st) st = tlm_params_to_image(&p, &v, g.model.bos_id, g.model.eos_id, &img, &bytes, &err);
        if (!st) st = tlm_write_file_atomic(out, img, bytes, &err);
        tlm_params_free(&p);
    }
    if (!st && publish) {
        char t[600];
        snprintf(t, sizeof t, "%s/global", topic);
        st = tlm_mqtt_send(broker, NULL, t, img, bytes, 1, &err);
        if (!st) fprintf(stderr, "fed aggregate: %s published on %s (retained)\n", out, t);
    }
    free(img);
    tlm_vocab_free(&v);
    tlm_fedavg_free(&agg);
    tlm_model_file_close(&g);
    if (st) {
        cJSON_Delete(rejected);
        return cli_fail("fed aggregate", &err);
    }
    const int n_rej = cJSON_GetArraySize(rejected);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", out);
        cJSON_AddNumberToObject(j, "accepted", accepted);
        cJSON_AddNumberToObject(j, "clipped", clipped);
        cJSON_AddItemToObject(j, "rejected", rejected);
        char *s = cJSON_PrintUnformatted(j);
        if (s) puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        cJSON_Delete(rejected);
    }
    fprintf(stderr, "fed aggregate: %s from %u updates (%d left out, %u clipped)\n", out, accepted, n_rej, clipped);
    return 0;
}

int cmd_fed(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "update")) return fed_update(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "aggregate")) return fed_aggregate(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(help, stdout);
        return 0;
    }
    return cli_usage_error("fed", "expects 'update' or 'aggregate'%s%s", argc >= 2 ? ", got " : "", argc >= 2 ? argv[1] : "");
}
