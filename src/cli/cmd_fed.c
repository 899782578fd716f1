/* tritlm fed: one round of federated fine-tuning with files: a device's
 * update (train locally from the global model, encode the change) and the
 * server's aggregation (validate each update, weighted mean, new global). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/csprng.h"
#include "../host/fed_dp.h"
#include "../host/fedavg.h"
#include "../host/fedsec.h"
#include "../host/secagg.h"
#include <sodium.h>
#include "../host/fileio.h"
#include "../host/model_file.h"
#include "../host/mqtt.h"
#include "../host/train/trainer.h"
#include "cli.h"

static const char help[] =
    "usage: tritlm fed update (-m GLOBAL.tlm | --model-from-broker) --data TEXT (--steps N | --minutes M) (-o UPDATE.tlmu | --broker B)\n"
    "                         [--encode fp32|int8|t2] [--round R] [--client ID] [--topic T]\n"
    "                         [--key DEVICE.key --server-key SERVER.pub] [--tensors G]\n"
    "                         [--secure-agg --devices DEVICES.txt --update-clip C [--dp-noise Z]\n"
    "                          (--state STATE | --broker B [--reveal-timeout S])] [training options]\n"
    "       tritlm fed aggregate -m GLOBAL.tlm -o NEW.tlm [--clip C] [--server-lr A] [--json]\n"
    "                         [--broker B --expect N [--round R] [--timeout S] [--topic T]]\n"
    "                         [--key SERVER.key --devices DEVICES.txt]\n"
    "                         [--dp-noise Z --clip C [--dp-clients N] [--delta D] [--ledger FILE [--budget E]]]\n"
    "                         [--secure-agg] [--tensors G] [UPDATE.tlmu...]\n"
    "       tritlm fed reveal --key DEVICE.key --server-key SERVER.pub --devices DEVICES.txt --state STATE\n"
    "                         --request NEW.tlm.request -o REVEAL\n"
    "       tritlm fed keygen -o NAME   (writes NAME.key, secret, and NAME.pub)\n"
    "       tritlm fed info [-m GLOBAL.tlm] [--server-key SERVER.pub] [--json] MESSAGE...\n"
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
    "      --tensors G  train and send only these tensors, the rest frozen: a comma list of\n"
    "                   norms, embed, attn, ffn, layerN, all (default all)\n"
    "      --secure-agg --devices DEVICES.txt --update-clip C [--dp-noise Z]   a share for secure\n"
    "                   aggregation: the change clipped to C, rounded to the grid C/2^18, with this\n"
    "                   device's part of the noise (Z as the server's --dp-noise), plus masks shared\n"
    "                   with every device of the roster and a self mask; alone it is random. The\n"
    "                   server then names who dropped out and each sender reveals its self-mask\n"
    "                   seed and its keys with those: over MQTT this process waits for that request\n"
    "                   and answers; with files the seed waits in --state for 'fed reveal'\n"
    "      --broker B   also (or instead of -o) publish it to the MQTT broker B (HOST or HOST:PORT)\n"
    "                   on TOPIC/round/R/update, QoS 1, waiting for the broker's acknowledgement\n"
    "      --topic T    the topic prefix (default tritlm)\n"
    "      --model-from-broker   instead of -m: the global model the server keeps on TOPIC/global\n"
    "      --key DEVICE.key --server-key SERVER.pub   sign the update with the device's key and\n"
    "                   seal it to the server's (only the server can read it, only this device\n"
    "                   can have made it); a model from the broker must carry the server's\n"
    "                   signature, and its round is the update's unless --round says otherwise\n"
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
    "                      later get it; see update's --model-from-broker), signed with --key\n"
    "                      for round R + 1\n"
    "      --key SERVER.key --devices DEVICES.txt   take sealed updates only, each signed by a\n"
    "                      device enrolled in DEVICES.txt (lines 'CLIENT_ID PUBLIC_KEY', the key\n"
    "                      being the device's NAME.pub) and naming that device's client id\n"
    "      --dp-noise Z    differential privacy (DP-FedAvg): every update weighs 1, is clipped to\n"
    "                      --clip C and rounded to the grid C/2^18; the sum gets discrete Gaussian\n"
    "                      noise of sigma Z x (its sensitivity) and is divided by N clients. One\n"
    "                      round costs rho = 1/(2 Z^2) zCDP per device (adding or removing one\n"
    "                      update); the epsilon at D is printed\n"
    "      --tensors G     the round changes only these tensors (update's --tensors): updates\n"
    "                      with others are left out, and --dp-noise noises only these\n"
    "      --secure-agg    the server reads only the sum: the devices of --devices send shares\n"
    "                      (update's --secure-agg, with --update-clip equal to --clip; they add the\n"
    "                      noise, --dp-noise states its multiplier for the account); then the server\n"
    "                      names who dropped out (signed request: on TOPIC/round/R/request, or in\n"
    "                      NEW.tlm.request with files) and takes one reveal per share (the broker's\n"
    "                      TOPIC/round/R/reveal, or reveal files given with the shares); at least 2\n"
    "                      shares; --expect defaults to the roster\n"
    "      --dp-clients N  the mean's fixed denominator (default: --expect, or the files given)\n"
    "      --delta D       delta of the reported epsilon (default 1e-6)\n"
    "      --ledger FILE   JSON record of the rho spent over rounds (created if missing; locked\n"
    "                      while in use); --budget E refuses a round that would take the total\n"
    "                      epsilon at D past E\n"
    "reveal: a device's answer to the server's request in secure aggregation with files (the\n"
    "  --state of its 'fed update'; the state is removed after, so it answers once)\n"
    "info: what a message holds: an update's round, client, base model and entries (checked\n"
    "  against GLOBAL with -m); a sealed update's size (only the server can open it); a signed\n"
    "  model's round (its signature checked with --server-key). Exit 1 if any is damaged.\n"
    "keygen: a key pair for a device or the server (libsodium: Ed25519 signatures, X25519\n"
    "  sealed boxes). NAME.key is secret (mode 0600, never overwritten); NAME.pub is shared.\n";

enum { F_ENCODE = 2000, F_ROUND, F_CLIENT, F_CLIP, F_SLR, F_JSON, F_BROKER, F_TOPIC, F_EXPECT, F_TIMEOUT, F_FROM_BROKER,
       F_PUBLISH, F_KEY, F_SERVER_KEY, F_DEVICES, F_DP_NOISE, F_DP_CLIENTS, F_DELTA, F_LEDGER, F_BUDGET, F_TENSORS, F_SECURE, F_UPDATE_CLIP, F_STATE, F_REVEAL_TIMEOUT, F_REQUEST };

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

/* The first message on `topic` at `broker` within `timeout` seconds
 * (*data malloc'd); a timeout is an error naming the topic. */
static tlm_status fetch_first(const char *broker, const char *topic, double timeout, uint8_t **data, size_t *n,
                              tlm_error *err)
{
    tlm_mqtt *mq = NULL;
    first_message fm = {NULL, 0};
    int timed_out = 0;
    tlm_status st = tlm_mqtt_connect(&mq, broker, NULL, 30.0, err);
    if (!st) st = tlm_mqtt_subscribe(mq, topic, 30.0, err);
    if (!st) st = tlm_mqtt_receive(mq, timeout, keep_first, &fm, &timed_out, err);
    tlm_mqtt_close(mq);
    if (!st && timed_out) st = tlm_fail(err, TLM_ERR_IO, "nothing on %s within %.0f s", topic, timeout);
    if (!st && !fm.data) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    if (st) {
        free(fm.data);
        return st;
    }
    *data = fm.data;
    *n = fm.n;
    return TLM_OK;
}

/* A device's reveal for the server's signed request (secure aggregation's
 * second step), sealed to the server: checks the request is for this
 * round and model. */
static tlm_status make_reveal(const tlm_fed_keys *me, const tlm_fed_pub *server, const tlm_fed_roster *roster,
                              uint32_t round, uint32_t base_id, const uint8_t seed[32], const uint8_t *req, size_t req_n,
                              uint8_t **out, size_t *out_n, tlm_error *err)
{
    uint32_t r_round = 0, r_base = 0, nd = 0, *dropped = NULL;
    tlm_status st = tlm_secagg_request_verify(server, req, req_n, &r_round, &r_base, &dropped, &nd, err);
    if (!st && (r_round != round || r_base != base_id))
        st = tlm_fail(err, TLM_ERR_ARG, "the server's request is for round %u of model %08x, this share was round %u of "
                      "%08x", r_round, r_base, round, base_id);
    uint8_t *rev = NULL;
    size_t rn = 0;
    if (!st) st = tlm_secagg_reveal_make(me, roster, round, base_id, seed, dropped, nd, &rev, &rn, err);
    if (!st) st = tlm_fed_seal(me, server, rev, rn, out, out_n, err);
    if (rev) sodium_memzero(rev, rn);
    free(rev);
    free(dropped);
    return st;
}

/* A topic prefix without MQTT's wildcards (non-zero after a usage error). */
static int bad_topic(const char *cmd, const char *topic)
{
    if (*topic && !strpbrk(topic, "#+")) return 0;
    cli_usage_error(cmd, "--topic must be a plain topic without # or +, got '%s'", topic);
    return 1;
}

/* The device's keys wiped from memory (if read) and its roster freed. */
static void forget_secrets(tlm_fed_keys *k, tlm_fed_roster *r)
{
    if (k) tlm_fed_keys_wipe(k);
    tlm_fed_roster_free(r);
}

static int fed_update(int argc, char **argv)
{
    static const struct option own[] = {
        {"model", required_argument, 0, 'm'}, {"output", required_argument, 0, 'o'},
        {"encode", required_argument, 0, F_ENCODE}, {"round", required_argument, 0, F_ROUND},
        {"client", required_argument, 0, F_CLIENT}, {"help", no_argument, 0, 'h'},
        {"broker", required_argument, 0, F_BROKER}, {"topic", required_argument, 0, F_TOPIC},
        {"model-from-broker", no_argument, 0, F_FROM_BROKER}, {"key", required_argument, 0, F_KEY},
        {"server-key", required_argument, 0, F_SERVER_KEY}, {"tensors", required_argument, 0, F_TENSORS},
        {"secure-agg", no_argument, 0, F_SECURE}, {"devices", required_argument, 0, F_DEVICES},
        {"update-clip", required_argument, 0, F_UPDATE_CLIP}, {"dp-noise", required_argument, 0, F_DP_NOISE},
        {"state", required_argument, 0, F_STATE}, {"reveal-timeout", required_argument, 0, F_REVEAL_TIMEOUT}};
    enum { N_OWN = sizeof own / sizeof own[0] };
    struct option opts[N_OWN + CLI_TRAIN_LOOP_OPTION_COUNT];
    memcpy(opts, own, sizeof own);
    memcpy(opts + N_OWN, cli_train_loop_options, CLI_TRAIN_LOOP_OPTION_COUNT * sizeof cli_train_loop_options[0]);
    tlm_train_opts o;
    tlm_train_defaults(&o);
    o.eval_every = 0;
    o.ckpt_every = 0;
    const char *model = NULL, *out = NULL, *broker = NULL, *topic = "tritlm", *key = NULL, *server_key = NULL,
               *devices = NULL, *state = NULL;
    float reveal_timeout = 600.0f;
    tlm_fed_enc enc = TLM_FED_I8;
    tlm_fed_header h = {0, 0, 0, 0};
    int c, from_broker = 0, round_given = 0, secure = 0;
    double update_clip = 0.0;
    float z = 0.0f;
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
            round_given = 1;
            break;
        case F_CLIENT:
            if (!cli_parse_u32(optarg, 0, 0xFFFFFFFFu, &h.client))
                return cli_usage_error("fed update", "--client expects an integer, got '%s'", optarg);
            break;
        case F_BROKER: broker = optarg; break;
        case F_TOPIC: topic = optarg; break;
        case F_FROM_BROKER: from_broker = 1; break;
        case F_KEY: key = optarg; break;
        case F_SERVER_KEY: server_key = optarg; break;
        case F_TENSORS: o.train_only = optarg; break;
        case F_SECURE: secure = 1; break;
        case F_DEVICES: devices = optarg; break;
        case F_STATE: state = optarg; break;
        case F_REVEAL_TIMEOUT:
            if (!cli_parse_float(optarg, 0.1f, 1e6f, &reveal_timeout))
                return cli_usage_error("fed update", "--reveal-timeout expects seconds, got '%s'", optarg);
            break;
        case F_UPDATE_CLIP: {
            float f;
            if (!cli_parse_float(optarg, 1e-9f, 1e9f, &f))
                return cli_usage_error("fed update", "--update-clip expects a positive number, got '%s'", optarg);
            update_clip = strtod(optarg, NULL); /* as the server reads its --clip */
            break;
        }
        case F_DP_NOISE:
            if (!cli_parse_float(optarg, 1e-3f, (float)TLM_FED_DP_MAX_Z, &z))
                return cli_usage_error("fed update", "--dp-noise expects a multiplier in [0.001, %g], got '%s'",
                                       TLM_FED_DP_MAX_Z, optarg);
            break;
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
    if (!key != !server_key)
        return cli_usage_error("fed update", "--key DEVICE.key and --server-key SERVER.pub go together");
    if (secure && (!key || !devices || !(update_clip > 0)))
        return cli_usage_error("fed update", "--secure-agg needs --key, --server-key, --devices (the roster) and "
                               "--update-clip C (the server's --clip)");
    if (!secure && (devices || update_clip > 0 || z > 0 || state))
        return cli_usage_error("fed update", "--devices, --update-clip, --dp-noise and --state go with --secure-agg");
    if (secure && !broker && !state)
        return cli_usage_error("fed update", "--secure-agg without --broker needs --state FILE (kept secret until "
                               "'tritlm fed reveal' answers the server's request)");
    if (secure && broker && state)
        return cli_usage_error("fed update", "with --broker the device answers the server's request itself: no --state");
    if (out) {
        const char *in[] = {model, o.data, o.val, key, server_key, devices, state};
        if (cli_refuse_clobber("fed update", out, in, 7)) return TLM_EXIT_USAGE;
    }

    tlm_error err;
    tlm_fed_keys dev_keys;
    tlm_fed_pub server_pub;
    tlm_fed_roster roster = {0, NULL, NULL};
    if (key && (tlm_fed_keys_read(key, &dev_keys, &err) || tlm_fed_pub_read(server_key, &server_pub, &err)))
        return cli_fail("fed update", &err);
    if (secure && tlm_fed_roster_read(devices, &roster, &err)) {
        tlm_fed_keys_wipe(&dev_keys);
        return cli_fail("fed update", &err);
    }
    if (secure) { /* before any training: the roster must list this device's key as its client id */
        int listed = 0;
        for (uint32_t i = 0; i < roster.n; i++)
            listed |= roster.client[i] == h.client && !memcmp(roster.pub[i].sign_pk, dev_keys.pub.sign_pk, 32);
        if (!listed) {
            forget_secrets(&dev_keys, &roster);
            tlm_fail(&err, TLM_ERR_ARG, "%s does not list this device's key (%s) as client %u", devices, key, h.client);
            return cli_fail("fed update", &err);
        }
    }
    /* local training into a temporary folder, removed afterwards: the
     * local model and its logs stay on the device */
    char dirbuf[4096], local[4200], fetched[4200];
    if (tlm_temp_dir(dirbuf, sizeof dirbuf, "tritlm-fed", &err)) {
        forget_secrets(key ? &dev_keys : NULL, &roster);
        return cli_fail("fed update", &err);
    }
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
            const uint8_t *img = fm.data;
            size_t img_n = fm.n;
            uint32_t signed_round = 0;
            if (!s0 && server_key) { /* only a model the server signed */
                s0 = tlm_fed_verify_model(&server_pub, fm.data, fm.n, &img, &img_n, &signed_round, &err);
                if (!s0 && !round_given) h.round = signed_round;
                else if (!s0 && signed_round != h.round)
                    s0 = tlm_fail(&err, TLM_ERR_ARG, "the broker's model is for round %u, not --round %u", signed_round,
                                  h.round);
            }
            if (!s0) s0 = tlm_write_file_atomic(fetched, img, img_n, &err);
            free(fm.data);
            model = fetched;
        }
        tlm_mqtt_close(mq);
        if (s0) {
            tlm_remove_tree(dirbuf);
            forget_secrets(key ? &dev_keys : NULL, &roster);
            return cli_fail("fed update", &err);
        }
    }
    tlm_model_file g;
    if (tlm_model_file_open(&g, model, &err)) {
        tlm_remove_tree(dirbuf);
        forget_secrets(key ? &dev_keys : NULL, &roster);
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
    uint8_t *msg = NULL, seed[32];
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
            uint8_t *only = NULL;
            size_t values = gp.n;
            if (o.train_only) { /* the frozen tensors did not change: only the trained ones are sent */
                only = malloc(tlm_params_count(&gp));
                st = only ? tlm_params_select(&gp, o.train_only, only, &values, &err)
                          : tlm_fail(&err, TLM_ERR_NOMEM, "out of memory");
            }
            if (!st && secure) {
                tlm_secagg plan;
                st = tlm_secagg_plan(&plan, update_clip, z, roster.n, values, &err);
                if (!st)
                    st = tlm_fed_make_masked_update(&gp, &g.model, &lp, only, &h, &plan, &dev_keys, &roster, &rng, seed,
                                                    &msg, &bytes, &err);
            } else if (!st)
                st = tlm_fed_make_update(&gp, &g.model, &lp, only, enc, &h, &rng, &msg, &bytes, &err);
            free(only);
        }
    }
    if (!st && key) { /* what leaves the device: signed, sealed to the server */
        uint8_t *sealed = NULL;
        st = tlm_fed_seal(&dev_keys, &server_pub, msg, bytes, &sealed, &bytes, &err);
        free(msg);
        msg = sealed;
    }
    if (!st && out) st = tlm_write_file_atomic(out, msg, bytes, &err);
    if (!st && broker) {
        char id[64], t[600];
        snprintf(id, sizeof id, "tritlm-device-%u-%ld", h.client, (long)getpid());
        snprintf(t, sizeof t, "%s/round/%u/update", topic, h.round);
        st = tlm_mqtt_send(broker, id, t, msg, bytes, 0, &err);
        if (!st) fprintf(stderr, "fed update: published to %s on %s\n", t, broker);
    }
    const uint32_t base_id = tlm_fed_model_id(&g.model);
    if (!st && secure && state) { /* the seed waits, secret, for 'fed reveal' */
        char hex[65], line[160];
        sodium_bin2hex(hex, sizeof hex, seed, 32);
        const int len = snprintf(line, sizeof line, "tritlm-secagg-state-1 %u %08x %u %s\n", h.round, base_id, h.client, hex);
        st = tlm_write_secret_atomic(state, line, (size_t)len, &err);
        sodium_memzero(hex, sizeof hex);
        sodium_memzero(line, sizeof line);
        if (!st) fprintf(stderr, "fed update: self-mask seed kept in %s until 'tritlm fed reveal'\n", state);
    }
    if (!st && secure && broker) { /* the second step: the server's request, then this device's reveal */
        char t[600];
        snprintf(t, sizeof t, "%s/round/%u/request", topic, h.round);
        fprintf(stderr, "fed update: waiting up to %.0f s for the server's request on %s\n", reveal_timeout, t);
        uint8_t *req = NULL, *rev = NULL;
        size_t req_n = 0, rev_n = 0;
        st = fetch_first(broker, t, reveal_timeout, &req, &req_n, &err);
        if (!st) st = make_reveal(&dev_keys, &server_pub, &roster, h.round, base_id, seed, req, req_n, &rev, &rev_n, &err);
        if (!st) {
            snprintf(t, sizeof t, "%s/round/%u/reveal", topic, h.round);
            st = tlm_mqtt_send(broker, NULL, t, rev, rev_n, 0, &err);
            if (!st) fprintf(stderr, "fed update: reveal published to %s\n", t);
        }
        free(req);
        free(rev);
    }
    sodium_memzero(seed, sizeof seed);
    free(msg);
    tlm_params_free(&gp);
    tlm_params_free(&lp);
    if (lf_open) tlm_model_file_close(&lf);
    tlm_model_file_close(&g);
    forget_secrets(key ? &dev_keys : NULL, &roster);
    if (tlm_remove_tree(dirbuf) != 0) fprintf(stderr, "tritlm fed update: could not remove %s\n", dirbuf);
    if (st) return cli_fail("fed update", &err);
    fprintf(stderr, "fed update: %s: %zu bytes%s, round %u, %llu steps on %llu local tokens (weight %u)\n",
            out ? out : "sent", bytes, key ? " (signed, sealed)" : "", h.round, (unsigned long long)rep.steps,
            (unsigned long long)rep.data_tokens, h.n_examples);
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
        tlm_fed_validate(msg, msg_n, c->global, &info, &err)) {
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
    if (owned) sodium_memzero(owned, msg_n);
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

static int fed_aggregate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"output", required_argument, 0, 'o'},
        {"clip", required_argument, 0, F_CLIP}, {"server-lr", required_argument, 0, F_SLR},
        {"json", no_argument, 0, F_JSON}, {"help", no_argument, 0, 'h'}, {"broker", required_argument, 0, F_BROKER},
        {"topic", required_argument, 0, F_TOPIC}, {"expect", required_argument, 0, F_EXPECT},
        {"round", required_argument, 0, F_ROUND}, {"timeout", required_argument, 0, F_TIMEOUT},
        {"publish-model", no_argument, 0, F_PUBLISH}, {"key", required_argument, 0, F_KEY},
        {"devices", required_argument, 0, F_DEVICES}, {"dp-noise", required_argument, 0, F_DP_NOISE},
        {"dp-clients", required_argument, 0, F_DP_CLIENTS}, {"delta", required_argument, 0, F_DELTA},
        {"ledger", required_argument, 0, F_LEDGER}, {"budget", required_argument, 0, F_BUDGET},
        {"tensors", required_argument, 0, F_TENSORS}, {"secure-agg", no_argument, 0, F_SECURE}, {0, 0, 0, 0}};
    const char *model = NULL, *out = NULL, *broker = NULL, *topic = "tritlm", *key = NULL, *devices = NULL,
               *ledger = NULL, *tensors = NULL;
    uint32_t expect = 0, round = 0, dp_clients = 0;
    double clip = 0.0;
    float slr = 1.0f, timeout = 600.0f, z = 0.0f, budget = 0.0f;
    double delta = 1e-6;
    int json = 0, c, publish = 0, secure = 0, waiting = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 'h': fputs(help, stdout); return 0;
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
        case F_JSON: json = 1; break;
        case F_BROKER: broker = optarg; break;
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
        default: return cli_bad_option("fed aggregate", argv, c);
        }
    }
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
    if (!dp_clients) dp_clients = expect + n_files;
    if (bad_topic("fed aggregate", topic)) return TLM_EXIT_USAGE;
    {
        const char *in[] = {model, key, devices, ledger};
        if (cli_refuse_clobber("fed aggregate", out, in, 4)) return TLM_EXIT_USAGE;
        if (cli_refuse_clobber("fed aggregate", out, (const char *const *)(argv + optind), (size_t)(argc - optind)))
            return TLM_EXIT_USAGE;
    }
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
        collector col = {&g.model, &op, round, expect, 0, calloc(expect, sizeof(held_update)), rejected};
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
    }
    if (!st && secure && agg.accepted >= 2 && rs.n < agg.accepted) {
        /* the second step: name who dropped out (signed), then every sender's reveal */
        uint32_t *missing = malloc(roster.n * sizeof *missing);
        const uint32_t nd = missing ? tlm_fedavg_secure_missing(&agg, missing) : 0;
        uint8_t *req = NULL;
        size_t req_n = 0;
        st = missing ? tlm_secagg_request_sign(&server_keys, agg.sec_round, tlm_fed_model_id(&g.model), missing, nd, &req,
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
            st = tlm_mqtt_connect(&mq, broker, NULL, 30.0, &err);
            if (!st) st = tlm_mqtt_subscribe(mq, tr, 30.0, &err);
            if (!st) st = tlm_mqtt_send(broker, NULL, t, req, req_n, 1, &err);
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
    if (!st && secure) {
        st = tlm_fedavg_apply_secure(&agg, &p, slr, rs.r, rs.n, &err);
    } else if (!st && z > 0) {
        tlm_host_source src;
        tlm_rand rng;
        if (tlm_host_rand(&rng, &src)) st = tlm_fail(&err, TLM_ERR_RNG, "the system gave no randomness");
        if (!st) st = tlm_fedavg_apply_dp(&agg, &p, slr, &rng, &err);
    } else if (!st)
        tlm_fedavg_apply(&agg, &p, slr);
    /* the cost is recorded before the model exists */
    if (!st && z > 0 && ledger) st = write_fed_ledger(ledger, rho_before + rho, rounds_before + 1, &err);
    if (lock >= 0) close(lock);
    if (!st) st = tlm_vocab_from_model(&g.model, &v, &err);
    if (!st) st = tlm_params_to_image(&p, &v, g.model.bos_id, g.model.eos_id, &img, &bytes, &err);
    if (!st) st = tlm_write_file_atomic(out, img, bytes, &err);
    if (p_alloc) tlm_params_free(&p);
    if (!st && publish) {
        char t[600];
        snprintf(t, sizeof t, "%s/global", topic);
        uint8_t *signed_img = NULL;
        size_t signed_n = 0;
        if (key) st = tlm_fed_sign_model(&server_keys, round + 1, img, bytes, &signed_img, &signed_n, &err);
        if (!st) st = tlm_mqtt_send(broker, NULL, t, key ? signed_img : img, key ? signed_n : bytes, 1, &err);
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

/* tritlm fed keygen -o NAME */
static int fed_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *out = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_bad_option("fed keygen", argv, c);
        }
    }
    if (optind != argc) return cli_usage_error("fed keygen", "unexpected argument '%s'", argv[optind]);
    if (!out || !*out) return cli_usage_error("fed keygen", "missing -o NAME (writes NAME.key and NAME.pub)");
    tlm_error err;
    tlm_fed_keys k;
    tlm_status st = tlm_fed_keygen(&k, &err);
    if (!st) st = tlm_fed_keys_write(out, &k, &err);
    tlm_fed_keys_wipe(&k);
    if (st) return cli_fail("fed keygen", &err);
    fprintf(stderr, "fed keygen: %s.key (secret: keep it on this machine) and %s.pub (give it to the other side)\n", out,
            out);
    return 0;
}

/* tritlm fed reveal: secure aggregation's second step on a device, with
 * files: the seed kept by 'fed update --secure-agg --state' and the
 * server's signed request give the reveal; the state is then deleted, so
 * a device answers one request per share. */
static int fed_reveal(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, 0, F_KEY}, {"server-key", required_argument, 0, F_SERVER_KEY},
        {"devices", required_argument, 0, F_DEVICES}, {"state", required_argument, 0, F_STATE},
        {"request", required_argument, 0, F_REQUEST}, {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *key = NULL, *server_key = NULL, *devices = NULL, *state = NULL, *request = NULL, *out = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        switch (c) {
        case F_KEY: key = optarg; break;
        case F_SERVER_KEY: server_key = optarg; break;
        case F_DEVICES: devices = optarg; break;
        case F_STATE: state = optarg; break;
        case F_REQUEST: request = optarg; break;
        case 'o': out = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_bad_option("fed reveal", argv, c);
        }
    }
    if (optind != argc) return cli_usage_error("fed reveal", "unexpected argument '%s'", argv[optind]);
    if (!key || !server_key || !devices || !state || !request || !out)
        return cli_usage_error("fed reveal", "needs --key, --server-key, --devices, --state, --request and -o");
    {
        const char *in[] = {key, server_key, devices, state, request};
        if (cli_refuse_clobber("fed reveal", out, in, 5)) return TLM_EXIT_USAGE;
    }
    tlm_error err;
    tlm_fed_keys me;
    tlm_fed_pub server;
    tlm_fed_roster roster = {0, NULL, NULL};
    uint8_t *text = NULL, *req = NULL, *rev = NULL, seed[32];
    size_t tn = 0, req_n = 0, rev_n = 0;
    tlm_status st = tlm_fed_keys_read(key, &me, &err);
    int have_key = !st;
    if (!st) st = tlm_fed_pub_read(server_key, &server, &err);
    if (!st) st = tlm_fed_roster_read(devices, &roster, &err);
    if (!st) st = tlm_read_text(state, &text, &tn, &err);
    unsigned round = 0, base = 0, client = 0;
    char hex[80];
    if (!st && (sscanf((const char *)text, "tritlm-secagg-state-1 %u %x %u %70s", &round, &base, &client, hex) != 4 ||
                strlen(hex) != 64 || sodium_hex2bin(seed, 32, hex, 64, NULL, NULL, NULL) != 0))
        st = tlm_fail(&err, TLM_ERR_FORMAT, "%s is not a secure aggregation state ('fed update --secure-agg --state' writes one)",
                      state);
    if (text) sodium_memzero(text, tn);
    sodium_memzero(hex, sizeof hex);
    if (!st) st = tlm_read_file(request, &req, &req_n, &err);
    if (!st) st = make_reveal(&me, &server, &roster, round, base, seed, req, req_n, &rev, &rev_n, &err);
    if (!st) st = tlm_write_file_atomic(out, rev, rev_n, &err);
    if (!st && remove(state) != 0) /* consumed: no second answer from this share's seed */
        st = tlm_fail(&err, TLM_ERR_IO, "cannot remove %s after revealing: remove it by hand", state);
    sodium_memzero(seed, sizeof seed);
    if (have_key) tlm_fed_keys_wipe(&me);
    tlm_fed_roster_free(&roster);
    free(text);
    free(req);
    free(rev);
    if (st) return cli_fail("fed reveal", &err);
    fprintf(stderr, "fed reveal: %s for round %u (client %u); %s removed\n", out, round, client, state);
    return 0;
}

/* tritlm fed info [-m MODEL] [--server-key PUB] [--json] FILE... */
static const char *enc_name(tlm_fed_enc e)
{
    switch (e) {
    case TLM_FED_F32: return "fp32";
    case TLM_FED_I8: return "int8";
    case TLM_FED_T2: return "t2";
    case TLM_FED_MASKED: return "masked";
    }
    return "?";
}

static int fed_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"server-key", required_argument, 0, F_SERVER_KEY},
        {"json", no_argument, 0, F_JSON}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *server_key = NULL;
    int c, json = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case F_SERVER_KEY: server_key = optarg; break;
        case F_JSON: json = 1; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_bad_option("fed info", argv, c);
        }
    }
    if (optind == argc) return cli_usage_error("fed info", "no message given");
    tlm_error err;
    tlm_model_file g;
    tlm_fed_pub pub;
    if (server_key && tlm_fed_pub_read(server_key, &pub, &err)) return cli_fail("fed info", &err);
    if (model && tlm_model_file_open(&g, model, &err)) return cli_fail("fed info", &err);
    int bad = 0;
    cJSON *all = cJSON_CreateArray();
    for (int i = optind; i < argc; i++) {
        uint8_t *b = NULL;
        size_t n = 0;
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "file", argv[i]);
        cJSON_AddItemToArray(all, j);
        if (tlm_read_file(argv[i], &b, &n, &err)) {
            cJSON_AddStringToObject(j, "error", err.msg);
            if (!json) fprintf(stderr, "tritlm fed info: %s: %s\n", argv[i], err.msg);
            bad = 1;
            continue;
        }
        cJSON_AddNumberToObject(j, "bytes", (double)n);
        if (tlm_fed_looks_sealed(b, n)) {
            cJSON_AddStringToObject(j, "kind", "sealed update");
            if (!json) printf("%s: sealed update, %zu bytes (only the server's key opens it)\n", argv[i], n);
        } else if (n >= 4 && !memcmp(b, TLM_FED_SIGNED_MAGIC, 4)) {
            const uint8_t *img;
            size_t img_n;
            uint32_t round = n >= 12 ? (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24 : 0;
            cJSON_AddStringToObject(j, "kind", "signed model");
            cJSON_AddNumberToObject(j, "round", round);
            const char *sig = "not checked (give --server-key)";
            if (server_key) {
                if (tlm_fed_verify_model(&pub, b, n, &img, &img_n, &round, &err)) {
                    sig = err.msg;
                    bad = 1;
                } else {
                    sig = "verified";
                }
                cJSON_AddStringToObject(j, "signature", sig);
            }
            if (!json) printf("%s: signed model for round %u, %zu bytes; signature %s\n", argv[i], round, n, sig);
        } else {
            tlm_fed_info info;
            if (tlm_fed_validate(b, n, model ? &g.model : NULL, &info, &err)) {
                cJSON_AddStringToObject(j, "error", err.msg);
                if (!json) fprintf(stderr, "tritlm fed info: %s: %s\n", argv[i], err.msg);
                bad = 1;
                free(b);
                continue;
            }
            char base[16];
            snprintf(base, sizeof base, "%08x", info.h.base_crc);
            cJSON_AddStringToObject(j, "kind", "update");
            cJSON_AddNumberToObject(j, "round", info.h.round);
            cJSON_AddNumberToObject(j, "client", info.h.client);
            cJSON_AddStringToObject(j, "base_model_id", base);
            cJSON_AddNumberToObject(j, "examples", info.h.n_examples);
            if (!json)
                printf("%s: update, %zu bytes: round %u, client %u, base model %s%s, %u examples, %u entries\n", argv[i], n,
                       info.h.round, info.h.client, base, model ? " (this model)" : "", info.h.n_examples, info.n_entries);
            cJSON *es = cJSON_AddArrayToObject(j, "entries");
            for (uint32_t k = 0; k < info.n_entries; k++) {
                tlm_fed_entry e;
                tlm_fed_entry_at(b, k, &e);
                cJSON *ej = cJSON_CreateObject();
                cJSON_AddStringToObject(ej, "role", tlm_role_name(e.role));
                cJSON_AddNumberToObject(ej, "layer", e.layer);
                cJSON_AddStringToObject(ej, "encoding", enc_name(e.enc));
                cJSON_AddNumberToObject(ej, "values", e.count);
                cJSON_AddNumberToObject(ej, "scale", e.scale);
                cJSON_AddItemToArray(es, ej);
                if (!json)
                    printf("  %-12s layer %-3u %-6s %8u values, scale %g\n", tlm_role_name(e.role), e.layer, enc_name(e.enc),
                           e.count, (double)e.scale);
            }
        }
        free(b);
    }
    if (model) tlm_model_file_close(&g);
    if (json) {
        char *s = cJSON_PrintUnformatted(all);
        if (s) puts(s);
        free(s);
    }
    cJSON_Delete(all);
    return bad ? TLM_EXIT_FAIL : 0;
}

int cmd_fed(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "update")) return fed_update(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "aggregate")) return fed_aggregate(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "keygen")) return fed_keygen(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "info")) return fed_info(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "reveal")) return fed_reveal(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(help, stdout);
        return 0;
    }
    return cli_usage_error("fed", "expects 'update', 'aggregate', 'reveal', 'keygen' or 'info'%s%s", argc >= 2 ? ", got " : "", argc >= 2 ? argv[1] : "");
}
