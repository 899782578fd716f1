/* tritlm fed aggregate: federated fine-tuning, the server's side: the
 * updates of a round (files, or collected from an MQTT broker) validated
 * against the global model, opened when sealed, averaged (weighted, or
 * with differential privacy, or as a secure sum with its second step of
 * reveals) into the next global model, the privacy ledger kept, and the
 * model published. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/csprng.h"
#include "../host/fed_dp.h"
#include "../host/fed_momentum.h"
#include "../host/fedavg.h"
#include "../host/fedsec.h"
#include "../host/fileio.h"
#include "../host/model_file.h"
#include "../host/mqtt.h"
#include "../host/secagg.h"
#include "cli.h"
#include "fed_cli.h"

int cli_fed_bad_topic(const char *cmd, const char *topic)
{
    if (*topic && !strpbrk(topic, "#+")) return 0;
    cli_usage_error(cmd, "--topic must be a plain topic without # or +, got '%s'", topic);
    return 1;
}

/* Updates collected from the broker: each checked on arrival (against the
 * global model, the round, and the clients already heard), kept until the
 * round closes. */
typedef struct {
    uint8_t *msg;
    size_t n;
    uint32_t client;
} held_update;

/* How the server reads what arrives: plain updates, or (with keys)
 * sealed ones only. */
typedef struct {
    const tlm_fed_keys *keys;
    const tlm_fed_roster *roster;
} opener;

/* The plain update in data: data itself, or a sealed one opened and its
 * signer checked (then *owned is the malloc'd update, else NULL). */
static tlm_status open_update(const opener *op, const uint8_t *data, size_t n, const uint8_t **msg, size_t *msg_n,
                              uint8_t **owned, tlm_error *err)
{
    *owned = NULL;
    *msg = data;
    *msg_n = n;
    if (!op->keys) {
        if (tlm_fed_looks_sealed(data, n))
            return tlm_fail(err, TLM_ERR_ARG, "a sealed update: give the server's --key and --devices to open it");
        return TLM_OK;
    }
    uint32_t client;
    tlm_status st = tlm_fed_unseal(op->keys, op->roster, data, n, owned, msg_n, &client, err);
    if (!st) *msg = *owned;
    return st;
}

typedef struct {
    const tlm_model *global;
    uint32_t model_id; /* the global model's tlm_fed_model_id */
    const opener *op;
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
    const uint8_t *msg;
    size_t msg_n;
    uint8_t *owned;
    if (open_update(c->op, data, n, &msg, &msg_n, &owned, &err) ||
        tlm_fed_validate_for(msg, msg_n, c->global, c->model_id, &info, &err)) {
        free(owned);
        reject(c->rejected, what, err.msg);
        return 0;
    }
    snprintf(what, sizeof what, "client %u's update on %s", info.h.client, topic);
    if (info.h.round != c->round) {
        snprintf(why, sizeof why, "it answers round %u, this is round %u", info.h.round, c->round);
        free(owned);
        reject(c->rejected, what, why);
        return 0;
    }
    for (uint32_t i = 0; i < c->n; i++)
        if (c->held[i].client == info.h.client) {
            free(owned);
            reject(c->rejected, what, "that client already sent an update this round");
            return 0;
        }
    uint8_t *copy = owned ? owned : malloc(msg_n);
    if (!copy) {
        reject(c->rejected, what, "out of memory");
        return 0;
    }
    if (!owned) memcpy(copy, msg, msg_n);
    c->held[c->n++] = (held_update){copy, msg_n, info.h.client};
    fprintf(stderr, "fed aggregate: %s (%u of %u)\n", what, c->n, c->expect);
    return c->n >= c->expect;
}

/* Secure aggregation's reveals: one per device whose share arrived. */
typedef struct {
    tlm_secagg_reveal *r;
    size_t n, cap;
    const tlm_fedavg *agg;
    const opener *op;
    cJSON *rejected;
} reveal_set;

static tlm_status keep_reveal(reveal_set *rs, const uint8_t *msg, size_t n, tlm_error *err)
{
    tlm_secagg_reveal r;
    tlm_status st = tlm_secagg_reveal_parse(msg, n, &r, err);
    if (st) return st;
    int sender = 0;
    for (uint32_t i = 0; i < rs->agg->sec->n; i++)
        sender |= rs->agg->sec_roster->client[i] == r.client && rs->agg->sec_seen[i];
    for (size_t i = 0; i < rs->n && !st; i++)
        if (rs->r[i].client == r.client) st = tlm_fail(err, TLM_ERR_ARG, "client %u's reveal is already in", r.client);
    if (!st && !sender) st = tlm_fail(err, TLM_ERR_ARG, "client %u sent no share this round", r.client);
    if (!st && rs->n >= rs->cap) st = tlm_fail(err, TLM_ERR_ARG, "too many reveals");
    if (st) {
        tlm_secagg_reveal_free(&r);
        return st;
    }
    rs->r[rs->n++] = r;
    return TLM_OK;
}

static int collect_reveal(void *ctx, const char *topic, const uint8_t *data, size_t n)
{
    reveal_set *rs = ctx;
    const uint8_t *msg;
    size_t msg_n;
    uint8_t *owned;
    tlm_error err;
    char what[300];
    snprintf(what, sizeof what, "a reveal on %s", topic);
    if (open_update(rs->op, data, n, &msg, &msg_n, &owned, &err) || keep_reveal(rs, msg, msg_n, &err))
        reject(rs->rejected, what, err.msg);
    else
        fprintf(stderr, "fed aggregate: client %u's reveal (%zu of %u)\n", rs->r[rs->n - 1].client, rs->n,
                rs->agg->accepted);
    if (owned) tlm_secret_wipe(owned, msg_n);
    free(owned);
    return rs->n >= rs->agg->accepted;
}

static int by_client(const void *a, const void *b)
{
    const uint32_t x = ((const held_update *)a)->client, y = ((const held_update *)b)->client;
    return x < y ? -1 : x > y;
}

/* The privacy ledger of federated rounds: {"rho": R, "rounds": K}; absent
 * means nothing spent yet. */
static tlm_status read_fed_ledger(const char *path, double *rho, uint32_t *rounds, tlm_error *err)
{
    *rho = 0;
    *rounds = 0;
    if (access(path, F_OK) != 0) return TLM_OK;
    uint8_t *buf = NULL;
    size_t n = 0;
    tlm_status st = tlm_read_text(path, &buf, &n, err);
    if (st) return st;
    cJSON *j = cJSON_Parse((const char *)buf);
    free(buf);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "rho"), *k = cJSON_GetObjectItemCaseSensitive(j, "rounds");
    if (!cJSON_IsNumber(r) || !cJSON_IsNumber(k) || !(r->valuedouble >= 0) || !isfinite(r->valuedouble) ||
        !(k->valuedouble >= 0) || k->valuedouble > 4e9)
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s is not a federated privacy ledger (expects {\"rho\": R, \"rounds\": K})",
                      path);
    else {
        *rho = r->valuedouble;
        *rounds = (uint32_t)k->valuedouble;
    }
    cJSON_Delete(j);
    return st;
}

static tlm_status write_fed_ledger(const char *path, double rho, uint32_t rounds, tlm_error *err)
{
    char s[128];
    const int k = snprintf(s, sizeof s, "{\"rho\": %.17g, \"rounds\": %u}\n", rho, rounds);
    return tlm_write_file_atomic(path, s, (size_t)k, err);
}

int cli_fed_aggregate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"output", required_argument, 0, 'o'},
        {"clip", required_argument, 0, F_CLIP}, {"server-lr", required_argument, 0, F_SLR},
        {"json", no_argument, 0, F_JSON}, {"help", no_argument, 0, 'h'}, CLI_FED_BROKER_OPTIONS,
        {"topic", required_argument, 0, F_TOPIC}, {"expect", required_argument, 0, F_EXPECT},
        {"round", required_argument, 0, F_ROUND}, {"timeout", required_argument, 0, F_TIMEOUT},
        {"publish-model", no_argument, 0, F_PUBLISH}, {"key", required_argument, 0, F_KEY},
        {"devices", required_argument, 0, F_DEVICES}, {"dp-noise", required_argument, 0, F_DP_NOISE},
        {"dp-clients", required_argument, 0, F_DP_CLIENTS}, {"delta", required_argument, 0, F_DELTA},
        {"ledger", required_argument, 0, F_LEDGER}, {"budget", required_argument, 0, F_BUDGET},
        {"tensors", required_argument, 0, F_TENSORS}, {"secure-agg", no_argument, 0, F_SECURE},
        {"server-momentum", required_argument, 0, F_MOMENTUM}, {"momentum-state", required_argument, 0, F_MOMENTUM_STATE},
        {0, 0, 0, 0}};
    const char *model = NULL, *out = NULL, *broker = NULL, *topic = "tritlm", *key = NULL, *devices = NULL,
               *ledger = NULL, *tensors = NULL, *mstate = NULL;
    uint32_t expect = 0, round = 0, dp_clients = 0;
    double clip = 0.0;
    float slr = 1.0f, timeout = 600.0f, z = 0.0f, budget = 0.0f;
    double delta = 1e-6, beta = 0;
    int json = 0, c, publish = 0, secure = 0, waiting = 0;
    cli_broker cb;
    memset(&cb, 0, sizeof cb);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 'h': fputs(cli_fed_help, stdout); return 0;
        case F_PUBLISH: publish = 1; break;
        case F_SECURE: secure = 1; break;
        case F_CLIP: {
            float f;
            if (!cli_parse_float(optarg, 1e-9f, 1e9f, &f))
                return cli_usage_error("fed aggregate", "--clip expects a positive number, got '%s'", optarg);
            clip = strtod(optarg, NULL); /* as written (a device's --update-clip is read the same way) */
            break;
        }
        case F_SLR:
            if (!cli_parse_float(optarg, 1e-6f, 100.0f, &slr))
                return cli_usage_error("fed aggregate", "--server-lr expects a number in (0, 100], got '%s'", optarg);
            break;
        case F_MOMENTUM: {
            float f;
            if (!cli_parse_float(optarg, 1e-6f, 0.999f, &f))
                return cli_usage_error("fed aggregate", "--server-momentum expects a number in (0, 0.999], got '%s'", optarg);
            beta = strtod(optarg, NULL); /* as written (reported so) */
            break;
        }
        case F_MOMENTUM_STATE: mstate = optarg; break;
        case F_JSON: json = 1; break;
        case F_TOPIC: topic = optarg; break;
        case F_EXPECT:
            if (!cli_parse_u32(optarg, 1, 1u << 20, &expect))
                return cli_usage_error("fed aggregate", "--expect expects a positive integer, got '%s'", optarg);
            break;
        case F_ROUND:
            if (!cli_parse_u32(optarg, 0, 0xFFFFFFFEu, &round))
                return cli_usage_error("fed aggregate", "--round expects an integer, got '%s'", optarg);
            break;
        case F_TIMEOUT:
            if (!cli_parse_float(optarg, 0.1f, 1e6f, &timeout))
                return cli_usage_error("fed aggregate", "--timeout expects seconds, got '%s'", optarg);
            break;
        case F_KEY: key = optarg; break;
        case F_DEVICES: devices = optarg; break;
        case F_DP_NOISE:
            if (!cli_parse_float(optarg, 1e-3f, (float)TLM_FED_DP_MAX_Z, &z))
                return cli_usage_error("fed aggregate", "--dp-noise expects a multiplier in [0.001, %g], got '%s'",
                                       TLM_FED_DP_MAX_Z, optarg);
            break;
        case F_DP_CLIENTS:
            if (!cli_parse_u32(optarg, 1, 1u << 24, &dp_clients))
                return cli_usage_error("fed aggregate", "--dp-clients expects a positive integer, got '%s'", optarg);
            break;
        case F_DELTA:
        {
            float d;
            if (!cli_parse_float(optarg, 1e-30f, 0.5f, &d))
                return cli_usage_error("fed aggregate", "--delta expects a number in (0, 0.5], got '%s'", optarg);
            delta = strtod(optarg, NULL); /* the value as written, not its float rounding */
            break;
        }
        case F_LEDGER: ledger = optarg; break;
        case F_TENSORS: tensors = optarg; break;
        case F_BUDGET:
            if (!cli_parse_float(optarg, 1e-6f, 1e6f, &budget))
                return cli_usage_error("fed aggregate", "--budget expects a positive epsilon, got '%s'", optarg);
            break;
        default:
            if (cli_fed_broker_option(c, optarg, &cb)) break;
            return cli_bad_option("fed aggregate", argv, c);
        }
    }
    broker = cb.b.addr;
    const uint32_t n_files = (uint32_t)(argc - optind);
    if (!model) return cli_usage_error("fed aggregate", "missing -m GLOBAL.tlm");
    if (!out) return cli_usage_error("fed aggregate", "missing -o NEW.tlm");
    if (!n_files && !broker) return cli_usage_error("fed aggregate", "no updates given (files, or --broker)");
    if (broker && !expect && !secure)
        return cli_usage_error("fed aggregate", "--broker needs --expect N (updates to wait for)");
    if (!broker && (expect || publish))
        return cli_usage_error("fed aggregate", "--expect, --round, --timeout, --topic and --publish-model go with --broker");
    if (!key != !devices) return cli_usage_error("fed aggregate", "--key SERVER.key and --devices DEVICES.txt go together");
    if (z > 0 && !(clip > 0))
        return cli_usage_error("fed aggregate", "--dp-noise needs --clip C (the bound on one update's influence)");
    if (!(z > 0) && (dp_clients || ledger || budget > 0))
        return cli_usage_error("fed aggregate", "--dp-clients, --ledger and --budget go with --dp-noise");
    if (budget > 0 && !ledger) return cli_usage_error("fed aggregate", "--budget needs --ledger FILE (the rounds' record)");
    if (secure && (!key || !(clip > 0)))
        return cli_usage_error("fed aggregate", "--secure-agg needs --key, --devices (the roster) and --clip C (the devices')");
    if (secure && dp_clients) return cli_usage_error("fed aggregate", "with --secure-agg the clients are the roster's");
    if (!(beta > 0) != !mstate)
        return cli_usage_error("fed aggregate", "--server-momentum B and --momentum-state FILE go together (FILE keeps the "
                                                "velocity between rounds)");
    if (!dp_clients) dp_clients = expect + n_files;
    if (cli_fed_bad_topic("fed aggregate", topic)) return TLM_EXIT_USAGE;
    {
        const char *in[] = {model, key, devices, ledger, mstate};
        if (cli_refuse_clobber("fed aggregate", out, in, 5)) return TLM_EXIT_USAGE;
        if (mstate && (cli_refuse_clobber("fed aggregate", mstate, in, 4) ||
                       cli_refuse_clobber("fed aggregate", mstate, (const char *const *)(argv + optind), (size_t)(argc - optind))))
            return TLM_EXIT_USAGE;
        if (cli_refuse_clobber("fed aggregate", out, (const char *const *)(argv + optind), (size_t)(argc - optind)))
            return TLM_EXIT_USAGE;
    }
    const int br = cli_fed_broker_ready("fed aggregate", &cb);
    if (br) return br;
    tlm_error err;
    tlm_fed_keys server_keys;
    tlm_fed_roster roster = {0, NULL, NULL};
    if (key && (tlm_fed_keys_read(key, &server_keys, &err) || tlm_fed_roster_read(devices, &roster, &err)))
        return cli_fail("fed aggregate", &err);
    const opener op = {key ? &server_keys : NULL, &roster};
    tlm_model_file g;
    tlm_fedavg agg;
    tlm_fed_dp dp;
    double rho_before = 0;
    uint32_t rounds_before = 0;
    int lock = -1, g_open = 0;
    cJSON *rejected = cJSON_CreateArray();
    tlm_status st = tlm_model_file_open(&g, model, &err);
    g_open = !st;
    if (!st) st = tlm_fedavg_init(&agg, &g.model, clip, &err);
    else memset(&agg, 0, sizeof agg);
    tlm_fed_momentum mom = {0, NULL, 0};
    if (!st && mstate) st = tlm_fed_momentum_load(&mom, mstate, agg.sum.n, agg.model_id, &err);
    size_t dp_dim = agg.sum.n; /* the values this round may change */
    if (!st && tensors) {
        uint8_t *only = malloc(tlm_params_count(&agg.sum));
        st = only ? tlm_params_select(&agg.sum, tensors, only, &dp_dim, &err) : tlm_fail(&err, TLM_ERR_NOMEM, "out of memory");
        if (!st) st = tlm_fedavg_restrict(&agg, only, &err);
        free(only);
    }
    tlm_secagg sec;
    double rho = 0; /* this round's privacy cost */
    if (!st && secure) { /* the devices clip and noise; the server sums */
        st = tlm_secagg_plan(&sec, clip, z, roster.n, dp_dim, &err);
        if (!st) st = tlm_fedavg_set_secure(&agg, &sec, &roster, &err);
        rho = sec.rho;
        if (!expect) expect = roster.n;
    } else if (!st && z > 0) {
        st = tlm_fed_dp_plan(&dp, clip, z, dp_clients, dp_dim, &err);
        if (!st) st = tlm_fedavg_set_dp(&agg, &dp, &err);
        rho = dp.rho;
    }
    if (!st && ledger) { /* locked until this round's cost is written */
        if ((lock = tlm_lock_beside(ledger, &err)) < 0) st = err.status;
        if (!st) st = read_fed_ledger(ledger, &rho_before, &rounds_before, &err);
        const double e = tlm_zcdp_epsilon(rho_before + rho, delta);
        if (!st && budget > 0 && e > budget) {
            char why[256]; /* the core's message formatter has no %g */
            snprintf(why, sizeof why, "epsilon %.4g at delta %g (rho %.4g after %u rounds), past the budget %g", e, delta,
                     rho_before + rho, rounds_before + 1, (double)budget);
            st = tlm_fail(&err, TLM_ERR_BUDGET, "this round would take the total to %s: nothing aggregated", why);
        }
    }
    /* secure aggregation's reveals (files now, the broker later) */
    reveal_set rs = {secure ? calloc(roster.n + n_files + 1u, sizeof(tlm_secagg_reveal)) : NULL, 0,
                     roster.n + n_files + 1u, &agg, &op, rejected};
    if (!st && secure && !rs.r) st = tlm_fail(&err, TLM_ERR_NOMEM, "out of memory");
    for (int i = optind; !st && i < argc; i++) {
        uint8_t *data = NULL, *owned = NULL;
        const uint8_t *msg;
        size_t n = 0, msg_n = 0;
        tlm_error e2;
        tlm_status s2 = tlm_read_file(argv[i], &data, &n, &e2);
        if (!s2) s2 = open_update(&op, data, n, &msg, &msg_n, &owned, &e2);
        if (!s2 && secure && msg_n >= 4 && !memcmp(msg, TLM_SECAGG_REVEAL_MAGIC, 4))
            s2 = keep_reveal(&rs, msg, msg_n, &e2);
        else if (!s2)
            s2 = tlm_fedavg_add(&agg, msg, msg_n, &e2);
        free(data);
        free(owned);
        if (s2) reject(rejected, argv[i], e2.msg);
    }
    if (!st && broker) {
        collector col = {&g.model, agg.model_id, &op, round, expect, 0, calloc(expect, sizeof(held_update)), rejected};
        char id[64], t[600];
        snprintf(id, sizeof id, "tritlm-server-%ld", (long)getpid());
        snprintf(t, sizeof t, "%s/round/%u/update", topic, round);
        tlm_mqtt *mq = NULL;
        int timed_out = 0;
        st = col.held ? TLM_OK : tlm_fail(&err, TLM_ERR_NOMEM, "out of memory");
        if (!st) st = tlm_mqtt_connect(&mq, &cb.b, id, 30.0, &err);
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
    }
    if (!st && secure && agg.accepted >= 2 && rs.n < agg.accepted) {
        /* the second step: name who dropped out (signed), then every sender's reveal */
        uint32_t *missing = malloc(roster.n * sizeof *missing);
        const uint32_t nd = missing ? tlm_fedavg_secure_missing(&agg, missing) : 0;
        uint8_t *req = NULL;
        size_t req_n = 0;
        st = missing ? tlm_secagg_request_sign(&server_keys, agg.sec_round, agg.model_id, missing, nd, &req,
                                               &req_n, &err)
                     : tlm_fail(&err, TLM_ERR_NOMEM, "out of memory");
        char ids[200] = "none";
        for (uint32_t i = 0, l = 0; i < nd && l < sizeof ids - 16; i++)
            l += (uint32_t)snprintf(ids + l, sizeof ids - l, "%s%u", i ? "," : "", missing[i]);
        free(missing);
        if (!st && broker) {
            /* subscribed to the reveals before the request goes out, so that none is missed */
            char t[600], tr[600];
            snprintf(tr, sizeof tr, "%s/round/%u/reveal", topic, agg.sec_round);
            snprintf(t, sizeof t, "%s/round/%u/request", topic, agg.sec_round);
            tlm_mqtt *mq = NULL;
            int timed_out = 0;
            st = tlm_mqtt_connect(&mq, &cb.b, NULL, 30.0, &err);
            if (!st) st = tlm_mqtt_subscribe(mq, tr, 30.0, &err);
            if (!st) st = tlm_mqtt_send(&cb.b, NULL, t, req, req_n, 1, &err);
            if (!st) {
                fprintf(stderr, "fed aggregate: %u shares in, dropped: %s; request published on %s\n", agg.accepted, ids, t);
                st = tlm_mqtt_receive(mq, timeout, collect_reveal, &rs, &timed_out, &err);
            }
            tlm_mqtt_close(mq);
            if (!st && timed_out)
                fprintf(stderr, "tritlm fed aggregate: %.0f s passed with %zu of %u reveals\n", timeout, rs.n, agg.accepted);
        } else if (!st) { /* files: the request goes beside the output, for the devices' 'fed reveal' */
            char path[4200];
            snprintf(path, sizeof path, "%s.request", out);
            st = tlm_write_file_atomic(path, req, req_n, &err);
            if (!st) {
                fprintf(stderr, "fed aggregate: secure aggregation, step 1 of 2 done: %u shares in, dropped: %s; request in "
                                "%s. Each device that sent a share runs 'tritlm fed reveal --request %s ...'; then this "
                                "again with the shares and the reveals writes %s\n", agg.accepted, ids, path, path, out);
                waiting = 1; /* not a failure: the round goes on; skip the rest, exit 0 */
                st = TLM_ERR_ARG;
                err.status = TLM_ERR_ARG;
                err.msg[0] = 0;
            }
        }
        free(req);
    }
    if (!st && secure) { /* the noise of the devices that dropped out is missing: the cost is the senders' */
        rho = tlm_secagg_rho(&sec, agg.accepted);
        const double e = tlm_zcdp_epsilon(rho_before + rho, delta);
        if (z > 0 && budget > 0 && e > budget) {
            char why[256];
            snprintf(why, sizeof why, "epsilon %.4g at delta %g with %u of %u devices' noise, past the budget %g", e, delta,
                     agg.accepted, sec.n, (double)budget);
            st = tlm_fail(&err, TLM_ERR_BUDGET, "this round would take the total to %s: nothing written", why);
        }
    }
    const uint32_t accepted = agg.accepted, clipped = agg.clipped;
    if (!st && !accepted) {
        fprintf(stderr, "tritlm fed aggregate: no update passed the checks; %s not written\n", out);
        st = TLM_ERR_ARG;
        err.status = TLM_ERR_ARG;
        err.msg[0] = 0;
    }
    tlm_params p;
    tlm_vocab v = {0};
    uint8_t *img = NULL;
    size_t bytes = 0;
    int p_alloc = 0;
    if (!st) {
        st = tlm_params_from_model(&p, &g.model, &err);
        p_alloc = !st;
    }
    float *before = NULL; /* the global model's values, for the velocity */
    if (!st && mstate) {
        before = malloc(p.n * sizeof *before);
        if (before) memcpy(before, p.data, p.n * sizeof *before);
        else st = tlm_fail(&err, TLM_ERR_NOMEM, "out of memory");
    }
    if (!st && secure) {
        st = tlm_fedavg_apply_secure(&agg, &p, slr, rs.r, rs.n, &err);
    } else if (!st && z > 0) {
        tlm_host_source src;
        tlm_rand rng;
        if (tlm_host_rand(&rng, &src)) st = tlm_fail(&err, TLM_ERR_RNG, "the system gave no randomness");
        if (!st) st = tlm_fedavg_apply_dp(&agg, &p, slr, &rng, &err);
    } else if (!st)
        tlm_fedavg_apply(&agg, &p, slr);
    if (!st && mstate) tlm_fed_momentum_step(&mom, (float)beta, slr, before, &p); /* from the change the round made */
    free(before);
    /* the cost is recorded before the model exists */
    if (!st && z > 0 && ledger) st = write_fed_ledger(ledger, rho_before + rho, rounds_before + 1, &err);
    if (lock >= 0) close(lock);
    if (!st) st = tlm_vocab_from_model(&g.model, &v, &err);
    /* the new global model in the old one's weight types where the round
     * left a tensor as it was (a ternary model whose gains were tuned stays
     * ternary); a changed quantized tensor is written in fp32, and said */
    uint32_t widened = 0;
    if (!st) st = tlm_params_to_image_like(&p, &g.model, &v, &img, &bytes, &widened, &err);
    if (!st && widened)
        fprintf(stderr, "fed aggregate: %u quantized tensors changed and are written in fp32 (%zu bytes); quantize the "
                        "model again for a device ('tritlm quantize', or --qat)\n", widened, bytes);
    if (!st) st = tlm_write_file_atomic(out, img, bytes, &err);
    if (!st && mstate) { /* after the model: a state never names a model that was not written */
        st = tlm_fed_momentum_save(&mom, mstate, tlm_fed_image_id(img, bytes), &err);
        if (!st)
            fprintf(stderr, "fed aggregate: momentum %g: velocity %s in %s\n", beta, mom.started ? "carried on" : "started",
                    mstate);
    }
    const int mom_started = mom.started;
    tlm_fed_momentum_free(&mom);
    if (p_alloc) tlm_params_free(&p);
    if (!st && publish) {
        char t[600];
        snprintf(t, sizeof t, "%s/global", topic);
        uint8_t *signed_img = NULL;
        size_t signed_n = 0;
        if (key) st = tlm_fed_sign_model(&server_keys, round + 1, img, bytes, &signed_img, &signed_n, &err);
        if (!st) st = tlm_mqtt_send(&cb.b, NULL, t, key ? signed_img : img, key ? signed_n : bytes, 1, &err);
        if (!st)
            fprintf(stderr, "fed aggregate: %s published on %s (retained%s)\n", out, t,
                    key ? ", signed for the next round" : "");
        free(signed_img);
    }
    free(img);
    tlm_vocab_free(&v);
    for (size_t i = 0; i < rs.n; i++) tlm_secagg_reveal_free(&rs.r[i]);
    free(rs.r);
    tlm_fedavg_free(&agg);
    if (g_open) tlm_model_file_close(&g);
    if (key) tlm_fed_keys_wipe(&server_keys);
    cli_fed_broker_forget(&cb);
    tlm_fed_roster_free(&roster);
    if (st) {
        cJSON_Delete(rejected);
        if (waiting) return 0;
        if (!err.msg[0]) return TLM_EXIT_FAIL;
        return cli_fail("fed aggregate", &err);
    }
    const int n_rej = cJSON_GetArraySize(rejected);
    const double eps_round = z > 0 ? tlm_zcdp_epsilon(rho, delta) : 0,
                 eps_total = z > 0 ? tlm_zcdp_epsilon(rho_before + rho, delta) : 0;
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", out);
        cJSON_AddNumberToObject(j, "accepted", accepted);
        cJSON_AddNumberToObject(j, "clipped", clipped);
        cJSON_AddItemToObject(j, "rejected", rejected);
        if (mstate) {
            cJSON *mo = cJSON_AddObjectToObject(j, "momentum");
            cJSON_AddNumberToObject(mo, "beta", beta);
            cJSON_AddStringToObject(mo, "state", mstate);
            cJSON_AddBoolToObject(mo, "carried_on", mom_started);
        }
        if (z > 0) {
            cJSON *d = cJSON_AddObjectToObject(j, "dp");
            cJSON_AddNumberToObject(d, "noise_multiplier", z);
            cJSON_AddNumberToObject(d, "clip", clip);
            cJSON_AddStringToObject(d, "noise_added_by", secure ? "devices" : "server");
            cJSON_AddNumberToObject(d, "clients", secure ? accepted : dp.clients);
            cJSON_AddNumberToObject(d, "values", (double)(secure ? sec.dim : dp.dim));
            cJSON_AddNumberToObject(d, "noise_std", secure ? sqrt((double)sec.share_sigma2 * accepted) * sec.gamma / accepted
                                                           : sqrt((double)dp.sigma2) * dp.gamma / dp.clients);
            cJSON_AddNumberToObject(d, "rho_round", rho);
            cJSON_AddNumberToObject(d, "epsilon_round", eps_round);
            cJSON_AddNumberToObject(d, "rho_total", rho_before + rho);
            cJSON_AddNumberToObject(d, "rounds", rounds_before + 1);
            cJSON_AddNumberToObject(d, "epsilon_total", eps_total);
            cJSON_AddNumberToObject(d, "delta", delta);
        }
        char *s = cJSON_PrintUnformatted(j);
        if (s) puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        cJSON_Delete(rejected);
    }
    fprintf(stderr, "fed aggregate: %s from %u updates (%d left out, %u clipped)\n", out, accepted, n_rej, clipped);
    if (z > 0)
        fprintf(stderr, "fed aggregate: differential privacy: this round rho %.4g (epsilon %.4g at delta %g); %s%u round(s): "
                "rho %.4g, epsilon %.4g\n", rho, eps_round, delta, ledger ? "with the ledger's, " : "",
                rounds_before + 1, rho_before + rho, eps_total);
    if (secure)
        fprintf(stderr, "fed aggregate: secure aggregation: only the sum of the %u shares that arrived was read (%u of the "
                        "roster's %u devices)\n", accepted, accepted, sec.n);
    return 0;
}
