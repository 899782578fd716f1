/* What the two halves of 'tritlm fed' share: the usage text, the option
 * codes, the topic check, and the server's entry point (fed_aggregate.c). */
#ifndef TLM_CLI_FED_CLI_H
#define TLM_CLI_FED_CLI_H

#include "../host/mqtt.h"

extern const char cli_fed_help[];

/* getopt codes of the long options without a short form */
enum {
    F_ENCODE = 2000, F_ROUND, F_CLIENT, F_CLIP, F_SLR, F_JSON, F_BROKER, F_TOPIC, F_EXPECT, F_TIMEOUT, F_FROM_BROKER,
    F_PUBLISH, F_KEY, F_SERVER_KEY, F_DEVICES, F_DP_NOISE, F_DP_CLIENTS, F_DELTA, F_LEDGER, F_BUDGET, F_TENSORS,
    F_SECURE, F_DEVICE_STEP, F_RANK, F_UPDATE_CLIP, F_STATE, F_REVEAL_TIMEOUT, F_REQUEST, F_TLS_CA, F_TLS_CERT, F_TLS_KEY, F_USERNAME,
    F_PASSWORD_FILE, F_MOMENTUM, F_MOMENTUM_STATE
};

/* How both halves reach the broker: --broker and its TLS and login options
 * (entries for a getopt_long table). */
#define CLI_FED_BROKER_OPTIONS                                                                                       \
    {"broker", required_argument, 0, F_BROKER}, {"tls-ca", required_argument, 0, F_TLS_CA},                         \
        {"tls-cert", required_argument, 0, F_TLS_CERT}, {"tls-key", required_argument, 0, F_TLS_KEY},               \
        {"username", required_argument, 0, F_USERNAME}, {"password-file", required_argument, 0, F_PASSWORD_FILE}

typedef struct cli_broker {
    tlm_mqtt_broker b; /* b.addr NULL: no --broker */
    const char *password_file;
} cli_broker;

/* Takes c if it is one of CLI_FED_BROKER_OPTIONS (returns 1), else 0. */
int cli_fed_broker_option(int c, const char *arg, cli_broker *cb);
/* After parsing: the TLS and login options need --broker, a certificate its
 * key; reads the password file. 0, or the exit status after a message. */
int cli_fed_broker_ready(const char *cmd, cli_broker *cb);
/* Wipes the password read. */
void cli_fed_broker_forget(cli_broker *cb);

/* A topic prefix without MQTT's wildcards (non-zero after a usage error). */
int cli_fed_bad_topic(const char *cmd, const char *topic);

/* tritlm fed aggregate (argv[0] is "aggregate"). */
int cli_fed_aggregate(int argc, char **argv);

/* tritlm fed acl (argv[0] is "acl"). */
int cli_fed_acl(int argc, char **argv);

#endif
