/* tritlm fed: federated fine-tuning, a device's side (update: train
 * locally from the global model, encode, protect and send the change;
 * reveal: secure aggregation's second step), keys and message inspection.
 * The server's side, 'fed aggregate', is in fed_aggregate.c; the broker's
 * access list, 'fed acl', in fed_acl.c. */
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
#include "../host/fileio.h"
#include "../host/model_file.h"
#include "../host/mqtt.h"
#include "../host/train/lora.h"
#include "../host/train/trainer.h"
#include "cli.h"
#include "fed_cli.h"
#include "../host/tune_local.h"
#include "tritlm/tune.h"

const char cli_fed_help[] =
    "usage: tritlm fed update (-m GLOBAL.tlm | --model-from-broker) --data TEXT (--steps N | --minutes M) (-o UPDATE.tlmu | --broker B)\n"
    "                         [--encode fp32|int8|t2] [--round R] [--client ID] [--topic T]\n"
    "                         [--key DEVICE.key --server-key SERVER.pub] [--tensors G] [--device-step]\n"
    "                         [--secure-agg --devices DEVICES.txt --update-clip C [--dp-noise Z]\n"
    "                          (--state STATE | --broker B [--reveal-timeout S])] [training options]\n"
    "       tritlm fed aggregate -m GLOBAL.tlm -o NEW.tlm [--clip C] [--server-lr A] [--json]\n"
    "                         [--server-momentum B --momentum-state FILE]\n"
    "                         [--broker B --expect N [--round R] [--timeout S] [--topic T]]\n"
    "                         [--key SERVER.key --devices DEVICES.txt]\n"
    "                         [--dp-noise Z --clip C [--dp-clients N] [--delta D] [--ledger FILE [--budget E]]]\n"
    "                         [--secure-agg] [--tensors G] [UPDATE.tlmu...]\n"
    "       tritlm fed reveal --key DEVICE.key --server-key SERVER.pub --devices DEVICES.txt --state STATE\n"
    "                         --request NEW.tlm.request -o REVEAL\n"
    "       tritlm fed keygen -o NAME   (writes NAME.key, secret, and NAME.pub)\n"
    "       tritlm fed sign --key SERVER.key -m MODEL.tlm --round R -o MODEL.tlmg\n"
    "       tritlm fed acl --devices DEVICES.txt -o ACL [--topic T] [--server-user U] [--device-user PREFIX]\n"
    "       tritlm fed info [-m GLOBAL.tlm] [--server-key SERVER.pub] [--key SERVER.key --devices D] [--json]\n"
    "                       MESSAGE...\n"
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
    "      --lora R     low-rank adapters of rank R on the matrices of --tensors (default attn,ffn;\n"
    "                   'tritlm train --help'): each matrix changes by rank R at most\n"
    "      --rank R     send each matrix's change as two int8 factors of rank R (R (rows + cols)\n"
    "                   values instead of rows x cols) where that is smaller: exact up to the\n"
    "                   rounding when the change has rank R (after --lora R), else its leading\n"
    "                   rank-R part; int8 only, not with --secure-agg\n"
    "      --device-step   tune with the device's own training step (the core's tlm_tune, what\n"
    "                   a microcontroller runs in firmware): the norm gains only, Adam over\n"
    "                   --steps windows of --ctx tokens (default 32) taken in order through the\n"
    "                   text, at --lr (default 1e-2); weights of any type, read in place. With\n"
    "                   --lora R: adapters of rank R on wq, wk, wv and wo instead (alpha R/2,\n"
    "                   --lr default 3e-3, A from --seed), sent as the core writes them: rank-R\n"
    "                   int8 factors, which a device can also decode with (--adapter)\n"
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
    "      --tls-ca CA.crt [--tls-cert C.crt --tls-key C.key]   reach the broker over TLS\n"
    "                   (default port 8883), checking its certificate against CA.crt and its\n"
    "                   host name; with a client certificate if the broker asks for one\n"
    "      --username U --password-file F   log in to the broker (the password is F's first\n"
    "                   line; F must not be readable by others)\n"
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
    "      --server-momentum B  with --momentum-state FILE: server momentum (FedAvgM): the\n"
    "                      velocity V = B x V + mean change, NEW = GLOBAL + A x V; FILE keeps V\n"
    "                      from round to round (written atomically after NEW; missing: V starts\n"
    "                      at 0; refused if it belongs to another model than GLOBAL)\n"
    "      --json          a JSON summary on stdout\n"
    "      --broker B      also take updates from MQTT: subscribe to TOPIC/round/R/update on B\n"
    "                      and collect until N updates passed the checks or S seconds passed\n"
    "                      (default 600); a device's second update in a round, or one for another\n"
    "                      round, is left out; they are averaged in the order of their client ids\n"
    "      --expect N, --round R, --timeout S, --topic T\n"
    "      --tls-ca, --tls-cert, --tls-key, --username, --password-file   as update's\n"
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
    "  against GLOBAL with -m); a sealed update's size (with the server's --key and --devices:\n"
    "  its signer and what it holds); a signed model's round (its signature checked with\n"
    "  --server-key). Exit 1 if any is damaged.\n"
    "keygen: a key pair for a device or the server (libsodium: Ed25519 signatures, X25519\n"
    "  sealed boxes). NAME.key is secret (mode 0600, never overwritten); NAME.pub is shared.\n"
    "sign: the server's signature on a model for round R, as --publish-model sends it, as a file\n"
    "  (a device's first model, or an image to flash: 'tritlm firmware -m MODEL.tlmg\n"
    "  --server-key SERVER.pub' checks it on the device before using it).\n"
    "acl: a Mosquitto access list (its acl_file) for the roster: user U (default server) reads\n"
    "  and writes TOPIC/#; each enrolled device, user PREFIX<CLIENT_ID> (default device1,\n"
    "  device2, ...), may only publish updates and reveals and read the requests and the global\n"
    "  model, so that no device can read another's update. Logins (password_file) stay the\n"
    "  broker's: mosquitto_passwd -b USERS device1 PASSWORD.\n";



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

int cli_fed_broker_option(int c, const char *arg, cli_broker *cb)
{
    switch (c) {
    case F_BROKER: cb->b.addr = arg; return 1;
    case F_TLS_CA: cb->b.ca_file = arg; return 1;
    case F_TLS_CERT: cb->b.cert_file = arg; return 1;
    case F_TLS_KEY: cb->b.key_file = arg; return 1;
    case F_USERNAME: cb->b.username = arg; return 1;
    case F_PASSWORD_FILE: cb->password_file = arg; return 1;
    default: return 0;
    }
}

int cli_fed_broker_ready(const char *cmd, cli_broker *cb)
{
    const tlm_mqtt_broker *b = &cb->b;
    if (!b->addr && (b->ca_file || b->cert_file || b->key_file || b->username || cb->password_file))
        return cli_usage_error(cmd, "--tls-ca, --tls-cert, --tls-key, --username and --password-file go with --broker");
    if (!b->cert_file != !b->key_file) return cli_usage_error(cmd, "--tls-cert and --tls-key go together");
    if (b->cert_file && !b->ca_file) return cli_usage_error(cmd, "--tls-cert needs --tls-ca (the broker's CA)");
    if (cb->password_file && !b->username) return cli_usage_error(cmd, "--password-file needs --username");
    if (cb->password_file) {
        tlm_error err;
        if (tlm_mqtt_read_password(&cb->b, cb->password_file, &err)) return cli_fail(cmd, &err);
    }
    return 0;
}

void cli_fed_broker_forget(cli_broker *cb)
{
    tlm_secret_wipe(cb->b.password, sizeof cb->b.password);
}

/* The first message on `topic` at `broker` within `timeout` seconds
 * (*data malloc'd); a timeout is an error naming the topic. */
static tlm_status fetch_first(const tlm_mqtt_broker *broker, const char *topic, double timeout, uint8_t **data, size_t *n,
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
        CLI_FED_BROKER_OPTIONS, {"topic", required_argument, 0, F_TOPIC},
        {"model-from-broker", no_argument, 0, F_FROM_BROKER}, {"key", required_argument, 0, F_KEY},
        {"server-key", required_argument, 0, F_SERVER_KEY}, {"tensors", required_argument, 0, F_TENSORS},
        {"secure-agg", no_argument, 0, F_SECURE}, {"devices", required_argument, 0, F_DEVICES},
        {"update-clip", required_argument, 0, F_UPDATE_CLIP}, {"dp-noise", required_argument, 0, F_DP_NOISE},
        {"state", required_argument, 0, F_STATE}, {"reveal-timeout", required_argument, 0, F_REVEAL_TIMEOUT},
        {"device-step", no_argument, 0, F_DEVICE_STEP}, {"rank", required_argument, 0, F_RANK}};
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
    int c, from_broker = 0, round_given = 0, secure = 0, device_step = 0, ctx_given = 0, lr_given = 0, li = -1;
    uint32_t rank = 0;
    cli_broker cb;
    memset(&cb, 0, sizeof cb);
    double update_clip = 0.0;
    float z = 0.0f;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:o:h", opts, &li)) != -1) {
        if (c != '?' && c != ':' && li >= 0) { /* the device step has its own defaults for these two */
            ctx_given |= !strcmp(opts[li].name, "ctx");
            lr_given |= !strcmp(opts[li].name, "lr");
        }
        li = -1;
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 'h': fputs(cli_fed_help, stdout); return 0;
        case F_DEVICE_STEP: device_step = 1; break;
        case F_RANK:
            if (!cli_parse_u32(optarg, 1, 255, &rank)) return cli_usage_error("fed update", "--rank expects 1..255, got '%s'", optarg);
            break;
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
            if (cli_fed_broker_option(c, optarg, &cb)) break;
            const int r = cli_train_loop_option("fed update", c, optarg, &o);
            if (r > 0) return r;
            if (r < 0) return cli_bad_option("fed update", argv, c);
        }
        }
    }
    if (optind != argc) return cli_usage_error("fed update", "unexpected argument '%s'", argv[optind]);
    broker = cb.b.addr;
    if (from_broker && (model || !broker))
        return cli_usage_error("fed update", "--model-from-broker takes the model from --broker B, instead of -m");
    if (!model && !from_broker) return cli_usage_error("fed update", "missing -m GLOBAL.tlm (or --model-from-broker)");
    if (!out && !broker) return cli_usage_error("fed update", "missing -o UPDATE.tlmu or --broker B");
    if (cli_fed_bad_topic("fed update", topic)) return TLM_EXIT_USAGE;
    if (!o.data) return cli_usage_error("fed update", "missing --data TEXT (the device's own text)");
    if (!o.steps && !(o.minutes > 0)) return cli_usage_error("fed update", "give --steps N or --minutes M");
    if (o.steps && o.minutes > 0) return cli_usage_error("fed update", "give --steps or --minutes, not both");
    if (o.resume) return cli_usage_error("fed update", "--resume is not for updates");
    if (device_step && (o.minutes > 0 || o.steps > 0xFFFFFFFFu))
        return cli_usage_error("fed update", "--device-step takes --steps N (a device counts steps, not minutes)");
    if (device_step && o.train_only && strcmp(o.train_only, "norms"))
        return cli_usage_error("fed update", "--device-step tunes the norms only, not --tensors %s", o.train_only);
    if (device_step && o.lora_rank && (rank || secure || enc != TLM_FED_I8))
        return cli_usage_error("fed update", "--device-step --lora R sends its adapters as rank-R int8 factors: no --rank, "
                               "--encode or --secure-agg");
    if (device_step && o.priv_mech)
        return cli_usage_error("fed update", "--privatize trains on the host: not with --device-step");
    if (device_step && o.label_loss)
        return cli_usage_error("fed update", "--label-loss trains on the host: not with --device-step (the core's tuner scores every token)");
    if (device_step && !o.lora_rank) o.train_only = "norms";
    if (o.lora_alpha > 0.0f && !o.lora_rank) return cli_usage_error("fed update", "--lora-alpha goes with --lora R");
    if (o.lora_rank && !o.train_only && !device_step)
        o.train_only = TLM_LORA_DEFAULT_TENSORS; /* the adapted matrices: what changes and is sent */
    if (rank && (enc != TLM_FED_I8 || secure))
        return cli_usage_error("fed update", "--rank sends int8 factors: not with --encode %s", secure ? "masked shares (--secure-agg)"
                                                                                                     : enc == TLM_FED_F32 ? "fp32" : "t2");
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

    const int br = cli_fed_broker_ready("fed update", &cb);
    if (br) return br;
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
        tlm_status s0;
        if (from_broker) {
            char t[600];
            snprintf(t, sizeof t, "%s/global", topic);
            uint8_t *data = NULL;
            size_t dn = 0;
            s0 = fetch_first(&cb.b, t, 30.0, &data, &dn, &err);
            const uint8_t *img = data;
            size_t img_n = dn;
            uint32_t signed_round = 0;
            if (!s0 && server_key) { /* only a model the server signed */
                s0 = tlm_fed_verify_model(&server_pub, data, dn, &img, &img_n, &signed_round, &err);
                if (!s0 && !round_given) h.round = signed_round;
                else if (!s0 && signed_round != h.round)
                    s0 = tlm_fail(&err, TLM_ERR_ARG, "the broker's model is for round %u, not --round %u", signed_round,
                                  h.round);
            }
            if (!s0) s0 = tlm_write_file_atomic(fetched, img, img_n, &err);
            free(data);
            model = fetched;
        } else { /* the broker must be reachable before any training */
            tlm_mqtt *mq = NULL;
            s0 = tlm_mqtt_connect(&mq, &cb.b, NULL, 30.0, &err);
            tlm_mqtt_close(mq);
        }
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
    o.init = model;
    o.out = local;
    o.no_plot = 1; /* its folder is removed when the update is written */
    o.progress = isatty(2);
    tlm_train_report rep;
    memset(&rep, 0, sizeof rep);
    tlm_params gp, lp;
    memset(&gp, 0, sizeof gp);
    memset(&lp, 0, sizeof lp);
    tlm_model_file lf;
    int lf_open = 0;
    uint8_t *msg = NULL, seed[32];
    size_t bytes = 0;
    tlm_status st;
    if (device_step) { /* the core's tuning step, as a device runs it */
        tlm_tune_local_opts to = {o.data, o.separator, ctx_given ? o.ctx : 32u, (uint32_t)o.steps,
                                  lr_given ? o.lr : o.lora_rank ? TLM_TUNE_LORA_LR : TLM_TUNE_LR, o.lora_rank,
                                  o.lora_alpha > 0.0f ? o.lora_alpha : TLM_TUNE_LORA_ALPHA(o.lora_rank), o.seed};
        if (to.window >= g.model.hp.seq_len) to.window = g.model.hp.seq_len - 1u;
        tlm_tune_local_report tr;
        if (o.lora_rank) { /* the update as the core writes it */
            tlm_host_source src;
            tlm_rand rng;
            st = tlm_host_rand(&rng, &src) ? tlm_fail(&err, TLM_ERR_RNG, "the system gave no randomness") : TLM_OK;
            if (!st) st = tlm_tune_local_update(&g.model, &to, &h, &rng, &msg, &bytes, &tr, &err);
        } else {
            st = tlm_tune_local(&g.model, &to, &lp, &tr, &err);
        }
        if (!st) {
            rep.data_tokens = tr.data_tokens;
            rep.steps = o.steps;
            fprintf(stderr, "fed update: device step: %s, window %u, %llu steps, training loss %.4f -> %.4f\n",
                    o.lora_rank ? "adapters of wq, wk, wv, wo" : "norm gains", to.window, (unsigned long long)o.steps,
                    tr.first_loss, tr.last_loss);
        }
    } else {
        st = tlm_train(&o, &rep, &err);
        if (!st) st = tlm_model_file_open(&lf, local, &err);
        if (!st) {
            lf_open = 1;
            st = tlm_params_from_model(&lp, &lf.model, &err);
        }
    }
    if (!st && !msg) st = tlm_params_from_model(&gp, &g.model, &err);
    if (!st && !msg) {
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
                st = tlm_fed_make_update_rank(&gp, &g.model, &lp, only, enc, rank, &h, &rng, &msg, &bytes, &err);
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
        st = tlm_mqtt_send(&cb.b, id, t, msg, bytes, 0, &err);
        if (!st) fprintf(stderr, "fed update: published to %s on %s\n", t, broker);
    }
    const uint32_t base_id = tlm_fed_model_id(&g.model);
    if (!st && secure && state) { /* the seed waits, secret, for 'fed reveal' */
        st = tlm_secagg_state_write(state, h.round, base_id, h.client, seed, &err);
        if (!st) fprintf(stderr, "fed update: self-mask seed kept in %s until 'tritlm fed reveal'\n", state);
    }
    if (!st && secure && broker) { /* the second step: the server's request, then this device's reveal */
        char t[600];
        snprintf(t, sizeof t, "%s/round/%u/request", topic, h.round);
        fprintf(stderr, "fed update: waiting up to %.0f s for the server's request on %s\n", reveal_timeout, t);
        uint8_t *req = NULL, *rev = NULL;
        size_t req_n = 0, rev_n = 0;
        st = fetch_first(&cb.b, t, reveal_timeout, &req, &req_n, &err);
        if (!st) st = tlm_secagg_answer(&dev_keys, &server_pub, &roster, h.round, base_id, seed, req, req_n, &rev, &rev_n, &err);
        if (!st) {
            snprintf(t, sizeof t, "%s/round/%u/reveal", topic, h.round);
            st = tlm_mqtt_send(&cb.b, NULL, t, rev, rev_n, 0, &err);
            if (!st) fprintf(stderr, "fed update: reveal published to %s\n", t);
        }
        free(req);
        free(rev);
    }
    tlm_secret_wipe(seed, sizeof seed);
    free(msg);
    tlm_params_free(&gp);
    tlm_params_free(&lp);
    if (lf_open) tlm_model_file_close(&lf);
    tlm_model_file_close(&g);
    forget_secrets(key ? &dev_keys : NULL, &roster);
    cli_fed_broker_forget(&cb);
    if (tlm_remove_tree(dirbuf) != 0) fprintf(stderr, "tritlm fed update: could not remove %s\n", dirbuf);
    if (st) return cli_fail("fed update", &err);
    fprintf(stderr, "fed update: %s: %zu bytes%s, round %u, %llu steps on %llu local tokens (weight %u)\n",
            out ? out : "sent", bytes, key ? " (signed, sealed)" : "", h.round, (unsigned long long)rep.steps,
            (unsigned long long)rep.data_tokens, h.n_examples);
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
        case 'h': fputs(cli_fed_help, stdout); return 0;
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

/* tritlm fed sign --key SERVER.key -m MODEL.tlm --round R -o MODEL.tlmg */
static int fed_sign(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, 0, F_KEY},        {"model", required_argument, 0, 'm'},
        {"round", required_argument, 0, F_ROUND},    {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},               {0, 0, 0, 0}};
    const char *key = NULL, *model = NULL, *out = NULL;
    uint32_t round = 0;
    int c, have_round = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case F_KEY: key = optarg; break;
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case F_ROUND:
            if (!cli_parse_u32(optarg, 0, 0xFFFFFFFFu, &round))
                return cli_usage_error("fed sign", "--round expects an integer, got '%s'", optarg);
            have_round = 1;
            break;
        case 'h': fputs(cli_fed_help, stdout); return 0;
        default: return cli_bad_option("fed sign", argv, c);
        }
    }
    if (optind != argc) return cli_usage_error("fed sign", "unexpected argument '%s'", argv[optind]);
    if (!key || !model || !out || !have_round)
        return cli_usage_error("fed sign", "needs --key SERVER.key, -m MODEL.tlm, --round R and -o MODEL.tlmg");
    const char *in[] = {key, model};
    if (cli_refuse_clobber("fed sign", out, in, 2)) return TLM_EXIT_USAGE;
    tlm_error err;
    tlm_fed_keys k;
    tlm_model_file g;
    if (tlm_fed_keys_read(key, &k, &err)) return cli_fail("fed sign", &err);
    if (tlm_model_file_open(&g, model, &err)) { /* only a valid image gets the server's signature */
        tlm_fed_keys_wipe(&k);
        return cli_fail("fed sign", &err);
    }
    uint8_t *sm = NULL;
    size_t sn = 0;
    tlm_status st = tlm_fed_sign_model(&k, round, (const uint8_t *)g.map.addr, g.map.bytes, &sm, &sn, &err);
    tlm_fed_keys_wipe(&k);
    tlm_model_file_close(&g);
    if (!st) st = tlm_write_file_atomic(out, sm, sn, &err);
    free(sm);
    if (st) return cli_fail("fed sign", &err);
    fprintf(stderr, "fed sign: %s, %zu bytes, signed for round %u\n", out, sn, round);
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
        case 'h': fputs(cli_fed_help, stdout); return 0;
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
    uint8_t *req = NULL, *rev = NULL, seed[32];
    size_t req_n = 0, rev_n = 0;
    uint32_t round = 0, base = 0, client = 0;
    tlm_status st = tlm_fed_keys_read(key, &me, &err);
    int have_key = !st;
    if (!st) st = tlm_fed_pub_read(server_key, &server, &err);
    if (!st) st = tlm_fed_roster_read(devices, &roster, &err);
    if (!st) st = tlm_secagg_state_read(state, &round, &base, &client, seed, &err);
    if (!st) st = tlm_read_file(request, &req, &req_n, &err);
    if (!st) st = tlm_secagg_answer(&me, &server, &roster, round, base, seed, req, req_n, &rev, &rev_n, &err);
    if (!st) st = tlm_write_file_atomic(out, rev, rev_n, &err);
    if (!st && remove(state) != 0) /* consumed: no second answer from this share's seed */
        st = tlm_fail(&err, TLM_ERR_IO, "cannot remove %s after revealing: remove it by hand", state);
    tlm_secret_wipe(seed, sizeof seed);
    if (have_key) tlm_fed_keys_wipe(&me);
    tlm_fed_roster_free(&roster);
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
    case TLM_FED_LOWRANK_I8: return "lowrank-int8";
    }
    return "?";
}

static int fed_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"server-key", required_argument, 0, F_SERVER_KEY},
        {"key", required_argument, 0, F_KEY},   {"devices", required_argument, 0, F_DEVICES},
        {"json", no_argument, 0, F_JSON}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *server_key = NULL, *key = NULL, *devices = NULL;
    int c, json = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case F_SERVER_KEY: server_key = optarg; break;
        case F_KEY: key = optarg; break;
        case F_DEVICES: devices = optarg; break;
        case F_JSON: json = 1; break;
        case 'h': fputs(cli_fed_help, stdout); return 0;
        default: return cli_bad_option("fed info", argv, c);
        }
    }
    if (optind == argc) return cli_usage_error("fed info", "no message given");
    if (!key != !devices)
        return cli_usage_error("fed info", "--key SERVER.key and --devices DEVICES.txt go together (they open sealed updates)");
    tlm_error err;
    tlm_model_file g;
    tlm_fed_pub pub;
    tlm_fed_keys server;
    tlm_fed_roster roster = {0};
    if (server_key && tlm_fed_pub_read(server_key, &pub, &err)) return cli_fail("fed info", &err);
    if (key) {
        if (tlm_fed_keys_read(key, &server, &err)) return cli_fail("fed info", &err);
        if (tlm_fed_roster_read(devices, &roster, &err)) {
            forget_secrets(&server, &roster);
            return cli_fail("fed info", &err);
        }
    }
    if (model && tlm_model_file_open(&g, model, &err)) {
        forget_secrets(key ? &server : NULL, &roster);
        return cli_fail("fed info", &err);
    }
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
            fprintf(stderr, "tritlm fed info: %s: %s\n", argv[i], err.msg); /* also with --json: errors go to stderr */
            bad = 1;
            continue;
        }
        cJSON_AddNumberToObject(j, "bytes", (double)n);
        if (tlm_fed_looks_sealed(b, n) && key) { /* the server's view: opened, its signer checked, then as an update */
            uint8_t *opened = NULL;
            size_t on = 0;
            uint32_t who = 0;
            if (tlm_fed_unseal(&server, &roster, b, n, &opened, &on, &who, &err)) {
                cJSON_AddStringToObject(j, "kind", "sealed update");
                cJSON_AddStringToObject(j, "error", err.msg);
                fprintf(stderr, "tritlm fed info: %s: %s\n", argv[i], err.msg);
                bad = 1;
                free(b);
                continue;
            }
            cJSON_AddNumberToObject(j, "sealed_bytes", (double)n);
            cJSON_AddNumberToObject(j, "signed_by_client", who);
            if (!json) printf("%s: sealed update, %zu bytes, signed by client %u's enrolled key; inside:\n", argv[i], n, who);
            free(b);
            b = opened;
            n = on;
            cJSON_ReplaceItemInObject(j, "bytes", cJSON_CreateNumber((double)n));
        }
        if (tlm_fed_looks_sealed(b, n)) {
            cJSON_AddStringToObject(j, "kind", "sealed update");
            if (!json) printf("%s: sealed update, %zu bytes (only the server's key opens it: --key, --devices)\n", argv[i], n);
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
                fprintf(stderr, "tritlm fed info: %s: %s\n", argv[i], err.msg); /* also with --json: errors go to stderr */
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
                if (e.rank) cJSON_AddNumberToObject(ej, "rank", e.rank);
                cJSON_AddItemToArray(es, ej);
                if (!json && e.rank)
                    printf("  %-12s layer %-3u %-6s %8u values as rank %u factors (%u x %u, %u x %u)\n", tlm_role_name(e.role),
                           e.layer, enc_name(e.enc), e.count, e.rank, e.rows, e.rank, e.rank, e.count / e.rows);
                else if (!json)
                    printf("  %-12s layer %-3u %-6s %8u values, scale %g\n", tlm_role_name(e.role), e.layer, enc_name(e.enc),
                           e.count, (double)e.scale);
            }
        }
        free(b);
    }
    if (model) tlm_model_file_close(&g);
    forget_secrets(key ? &server : NULL, &roster);
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
    if (argc >= 2 && !strcmp(argv[1], "aggregate")) return cli_fed_aggregate(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "keygen")) return fed_keygen(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "sign")) return fed_sign(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "info")) return fed_info(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "reveal")) return fed_reveal(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "acl")) return cli_fed_acl(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(cli_fed_help, stdout);
        return 0;
    }
    return cli_usage_error("fed", "expects 'update', 'aggregate', 'reveal', 'keygen', 'sign', 'info' or 'acl'%s%s", argc >= 2 ? ", got " : "", argc >= 2 ? argv[1] : "");
}
