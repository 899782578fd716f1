/* Building a model into firmware and running it in QEMU (firmware/build.sh
 * with the instruction-counting plugin), for `tritlm firmware` and for the
 * hardware-aware planner of `tritlm quantize --device`, which measures
 * each weight type on the device's core. */
#ifndef TLM_CLI_FW_RUN_H
#define TLM_CLI_FW_RUN_H

#include <stddef.h>
#include <stdint.h>

typedef struct cli_fw_job {
    const char *target;  /* cortex-m7, cortex-m4, cortex-m0plus, esp32c3, lx106 or stm32f405 */
    const char *model;   /* the image to link */
    const char *dir;     /* where the ELF and logs go */
    const char *prompt;
    const char *embed;   /* asm or c */
    uint32_t ctx, ram_kb, steps; /* ctx 0: the model's seq_len, at most 256 */
    uint32_t stack_kb;   /* the stack's region in KB; 0: build.sh's default (8) */
    int kv8, run;
    uint32_t uart;       /* stm32f405: the console's USART (1, 2, 3 or 6); 0: build.sh's default (1) */
    int interactive;     /* stm32f405: prompts typed on the console after the fixed one (build.sh --interactive) */
    float temp, top_p;   /* temp > 0: sampled decoding (build.sh -t, --top-p, --seed), as tritlm generate's */
    uint64_t seed;
    const char *input;   /* with interactive and run: the lines QEMU's console is typed (build.sh --input) */
    const char *adapter; /* a low-rank update to decode with (build.sh --adapter); NULL: none */
    const char *classify; /* labels, one a line: classify the prompt instead of decoding (build.sh --classify) */
    int greedy;          /* with classify: the greedy search (build.sh --greedy) */
    int reject;          /* with classify: a label less sure than reject_unats (minus its log
                            confidence in millionths of a nat) becomes label reject_label
                            (build.sh --reject UNATS LABEL_INDEX) */
    uint32_t reject_unats, reject_label;
    const char *tune_text; /* on-device tuning on this text instead of decoding (build.sh --tune) */
    uint32_t tune_steps, tune_window;
    float tune_lr;       /* 0: the core's default (TLM_TUNE_LR, TLM_TUNE_LORA_LR) */
    const char *tune_encode; /* fp32 (NULL), int8 or t2: the update's coding */
    uint32_t tune_lora;  /* > 0: tune adapters of this rank (build.sh --tune-lora; the update int8) */
    uint32_t tune_client, tune_round; /* the update's client id and round (build.sh --client, --round) */
    const char *seal_key, *seal_pub; /* with tune_text: seal the update on the device (build.sh --key, --server-key);
                                        seal_pub alone: the model is signed, checked on the device */
    int quiet;           /* the build's messages to /dev/null, and none of ours if the model does
                          * not fit the RAM (script_status 3: the caller asked whether it does) */
} cli_fw_job;

typedef struct cli_fw_result {
    char *out;           /* what the build and the firmware printed (malloc'd) */
    int script_status;   /* build.sh's exit status (3: the model does not fit the RAM; 4: nor the
                            board's flash) */
    int have_exit, have_insns;
    double ctx;          /* the context the arena was sized for (build.sh's CTX line) */
    double exit_status, static_bytes, stack_bytes, arena_bytes, flash_bytes, model_bytes, insns_per_token, tokens;
    double tune_tokens;  /* with tune_text: the text's tokens (insns_per_token then counts a step) */
    double insns_per_classification; /* with classify (0 if not counted) */
} cli_fw_result;

/* The typical clock (MHz) of the chip a target stands for; 0 if unknown. */
double cli_fw_target_mhz(const char *target);

/* The target's default RAM budget in KB: 256, or all it has if less. */
uint32_t cli_fw_target_ram_kb(const char *target);

/* Runs the job. Returns 0 if the script ran to the end (then res holds its
 * report; with run, check res->have_exit and res->exit_status), else
 * non-zero after printing why on stderr (prefixed with cmd). */
int cli_fw_build_run(const char *cmd, const cli_fw_job *job, cli_fw_result *res);
void cli_fw_result_free(cli_fw_result *res);

/* The value of the report's line "KEY value" (not terminated: *len bytes). */
const char *cli_fw_field(const char *out, const char *key, size_t *len);

#endif
