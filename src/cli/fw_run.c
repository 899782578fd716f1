/* firmware/build.sh as a function: see fw_run.h. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/proc.h"
#include "fw_run.h"

#ifndef TLM_FIRMWARE_DIR
#define TLM_FIRMWARE_DIR "firmware"
#endif
#ifndef TLM_PLUGIN_PATH
#define TLM_PLUGIN_PATH ""
#endif

static const struct {
    const char *name;
    double mhz;
    uint32_t ram_kb; /* the default RAM budget: 256 KB, or all the target has if less */
} targets[] = {{"cortex-m7", 480.0, 256},     {"cortex-m4", 168.0, 256}, {"cortex-m0plus", 133.0, 256},
               {"esp32c3", 160.0, 256},       {"lx106", 240.0, 256},     {"stm32f405", 168.0, 128}};

double cli_fw_target_mhz(const char *target)
{
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        if (!strcmp(target, targets[i].name)) return targets[i].mhz;
    return 0.0;
}

uint32_t cli_fw_target_ram_kb(const char *target)
{
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        if (!strcmp(target, targets[i].name)) return targets[i].ram_kb;
    return 256;
}

const char *cli_fw_field(const char *out, const char *key, size_t *len)
{
    const size_t k = strlen(key);
    for (const char *p = out; p && *p;) {
        if (!strncmp(p, key, k) && p[k] == ' ') {
            const char *v = p + k + 1, *e = strchr(v, '\n');
            *len = e ? (size_t)(e - v) : strlen(v);
            return v;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NULL;
}

static int field_num(const char *out, const char *key, double *v)
{
    size_t n;
    const char *s = cli_fw_field(out, key, &n);
    if (!s) return 0;
    char buf[32];
    if (n >= sizeof buf) return 0;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    *v = strtod(buf, &end);
    return end != buf;
}

int cli_fw_build_run(const char *cmd, const cli_fw_job *job, cli_fw_result *res)
{
    memset(res, 0, sizeof *res);
    res->exit_status = -1;
    char script[4096], self[4096], num[16][24];
    const char *fwdir = getenv("TLM_FIRMWARE_DIR");
    snprintf(script, sizeof script, "%s/build.sh", fwdir && *fwdir ? fwdir : TLM_FIRMWARE_DIR);
    if (access(script, R_OK)) {
        fprintf(stderr, "tritlm %s: no firmware sources at %s (set TLM_FIRMWARE_DIR to tritlm's firmware/)\n", cmd,
                script);
        return 1;
    }
    const ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    self[sl > 0 ? sl : 0] = 0;
    if (sl > 0) setenv("TLM_BIN", self, 1); /* build.sh asks this tritlm for the arena size */
    const char *plugin = getenv("TLM_PLUGIN");
    if (!plugin || !*plugin) {
        if (*TLM_PLUGIN_PATH && !access(TLM_PLUGIN_PATH, R_OK)) setenv("TLM_PLUGIN", TLM_PLUGIN_PATH, 1);
        else if (job->run) fprintf(stderr, "tritlm %s: the instruction-counting plugin is missing; no counts\n", cmd);
    }
    snprintf(num[0], sizeof num[0], "%u", job->ctx);
    snprintf(num[1], sizeof num[1], "%u", job->ram_kb);
    snprintf(num[2], sizeof num[2], "%u", job->steps);
    char *args[56];
    int k = 0;
    args[k++] = "sh";
    args[k++] = script;
    args[k++] = (char *)job->target;
    args[k++] = (char *)job->model;
    args[k++] = (char *)job->dir;
    if (job->ctx) { /* else build.sh takes the model's seq_len, at most 256 */
        args[k++] = "--ctx";
        args[k++] = num[0];
    }
    args[k++] = "--ram-kb";
    args[k++] = num[1];
    if (job->stack_kb) {
        snprintf(num[6], sizeof num[6], "%u", job->stack_kb);
        args[k++] = "--stack-kb";
        args[k++] = num[6];
    }
    args[k++] = "-p";
    args[k++] = (char *)(job->prompt ? job->prompt : "Once upon a time");
    args[k++] = "-n";
    args[k++] = num[2];
    if (job->kv8) args[k++] = "--kv-int8";
    if (job->adapter) {
        args[k++] = "--adapter";
        args[k++] = (char *)job->adapter;
    }
    args[k++] = "--embed";
    args[k++] = (char *)(job->embed ? job->embed : "asm");
    if (job->interactive) args[k++] = "--interactive";
    if (job->temp > 0.0f) {
        snprintf(num[11], sizeof num[11], "%.9g", (double)job->temp);
        snprintf(num[12], sizeof num[12], "%.9g", (double)job->top_p);
        snprintf(num[13], sizeof num[13], "%llu", (unsigned long long)job->seed);
        args[k++] = "-t";
        args[k++] = num[11];
        args[k++] = "--top-p";
        args[k++] = num[12];
        args[k++] = "--seed";
        args[k++] = num[13];
    }
    if (job->input) {
        args[k++] = "--input";
        args[k++] = (char *)job->input;
    }
    if (job->uart) {
        snprintf(num[10], sizeof num[10], "%u", job->uart);
        args[k++] = "--uart";
        args[k++] = num[10];
    }
    if (job->run) args[k++] = "--run";
    if (job->classify) {
        args[k++] = "--classify";
        args[k++] = (char *)job->classify;
        if (job->greedy) args[k++] = "--greedy";
        if (job->reject) {
            snprintf(num[14], sizeof num[14], "%u", job->reject_unats);
            snprintf(num[15], sizeof num[15], "%u", job->reject_label);
            args[k++] = "--reject";
            args[k++] = num[14];
            args[k++] = num[15];
        }
    }
    if (job->tune_text) {
        snprintf(num[3], sizeof num[3], "%u", job->tune_steps);
        snprintf(num[4], sizeof num[4], "%u", job->tune_window);
        args[k++] = "--tune";
        args[k++] = (char *)job->tune_text;
        args[k++] = "--tune-steps";
        args[k++] = num[3];
        args[k++] = "--tune-window";
        args[k++] = num[4];
        if (job->tune_lr > 0.0f) { /* else build.sh leaves it to the core's default */
            snprintf(num[5], sizeof num[5], "%.9g", (double)job->tune_lr);
            args[k++] = "--lr";
            args[k++] = num[5];
        }
        args[k++] = "--encode";
        args[k++] = (char *)(job->tune_encode ? job->tune_encode : job->tune_lora ? "int8" : "fp32");
        if (job->tune_lora) {
            snprintf(num[7], sizeof num[7], "%u", job->tune_lora);
            args[k++] = "--tune-lora";
            args[k++] = num[7];
        }
        snprintf(num[8], sizeof num[8], "%u", job->tune_client);
        snprintf(num[9], sizeof num[9], "%u", job->tune_round);
        args[k++] = "--client";
        args[k++] = num[8];
        args[k++] = "--round";
        args[k++] = num[9];
    }
    if (job->seal_key) {
        args[k++] = "--key";
        args[k++] = (char *)job->seal_key;
    }
    if (job->seal_pub) {
        args[k++] = "--server-key";
        args[k++] = (char *)job->seal_pub;
    }
    args[k] = NULL;

    res->script_status = tlm_run(args, &res->out, job->quiet);
    if (res->script_status != 0 || !res->out) {
        if (job->quiet && res->script_status == 3) return 1; /* the caller asked whether it fits */
        fprintf(stderr, "tritlm %s: building %s for %s failed (%s)\n", cmd, job->model, job->target,
                res->script_status == 3   ? "the model does not fit the RAM budget"
                : res->script_status == 4 ? "the firmware does not fit the board's flash"
                : job->quiet              ? "run 'tritlm firmware' on it to see why"
                                          : "see the messages above");
        return 1;
    }
    const char *out = res->out;
    res->have_exit = field_num(out, "EXIT", &res->exit_status);
    field_num(out, "STATIC", &res->static_bytes);
    field_num(out, "STACK", &res->stack_bytes);
    field_num(out, "ARENA", &res->arena_bytes);
    field_num(out, "FLASH", &res->flash_bytes);
    field_num(out, "MODEL", &res->model_bytes);
    field_num(out, "TOKENS", &res->tokens);
    if (!field_num(out, "CTX", &res->ctx)) res->ctx = job->ctx;
    field_num(out, "TUNE_TOKENS", &res->tune_tokens);
    res->have_insns = field_num(out, "INSNS_PER_TOKEN", &res->insns_per_token) && res->insns_per_token > 0;
    field_num(out, "INSNS_PER_CLASSIFICATION", &res->insns_per_classification);
    return 0;
}

void cli_fw_result_free(cli_fw_result *res)
{
    free(res->out);
    res->out = NULL;
}
