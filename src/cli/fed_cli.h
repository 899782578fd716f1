/* What the two halves of 'tritlm fed' share: the usage text, the option
 * codes, the topic check, and the server's entry point (fed_aggregate.c). */
#ifndef TLM_CLI_FED_CLI_H
#define TLM_CLI_FED_CLI_H

extern const char cli_fed_help[];

/* getopt codes of the long options without a short form */
enum {
    F_ENCODE = 2000, F_ROUND, F_CLIENT, F_CLIP, F_SLR, F_JSON, F_BROKER, F_TOPIC, F_EXPECT, F_TIMEOUT, F_FROM_BROKER,
    F_PUBLISH, F_KEY, F_SERVER_KEY, F_DEVICES, F_DP_NOISE, F_DP_CLIENTS, F_DELTA, F_LEDGER, F_BUDGET, F_TENSORS,
    F_SECURE, F_UPDATE_CLIP, F_STATE, F_REVEAL_TIMEOUT, F_REQUEST
};

/* A topic prefix without MQTT's wildcards (non-zero after a usage error). */
int cli_fed_bad_topic(const char *cmd, const char *topic);

/* tritlm fed aggregate (argv[0] is "aggregate"). */
int cli_fed_aggregate(int argc, char **argv);

#endif
