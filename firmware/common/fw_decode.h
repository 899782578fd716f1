/* Greedy decoding with the text on one console line, shared by the
 * decoding firmware (fw_main.c) and the tuning firmware (fw_tune.c), which
 * decodes with the adapters it trained. */
#ifndef TLM_FW_DECODE_H
#define TLM_FW_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "tritlm/runtime.h"

/* Text: a newline as \n, a backslash as \\, other control bytes (and DEL)
 * as \xHH; everything else, UTF-8 included, as is ('tritlm firmware' undoes
 * it). */
void fw_put_text(const uint8_t *p, size_t n);

/* With TLM_FW_STREAM (the stm32f405 board) each token's text leaves the
 * console as soon as it is decoded, not once a line's buffer is full.
 * With TLM_FW_TEMP (build.sh -t T [--top-p P] --seed S): the sampler the
 * decoder draws from after the prompt instead of taking the argmax, as
 * 'tritlm generate -t T --top-p P --seed S' does; fw_main.c seeds it. */
#ifdef TLM_FW_TEMP
#include "tritlm/sampler.h"
extern tlm_sampler fw_sampler;
#endif

/* Runs positions 0 .. steps-1 from ids[0] (the prompt's n_prompt tokens
 * forced, then the argmax or, with TLM_FW_TEMP, a sampled token), printing "TEXT ..." and a newline; out_ids
 * gets each position's next token. counted: each forward pass and argmax
 * between the plugin's markers. Stops early at BOS unless TLM_FW_NO_STOP.
 * Returns the positions run. */
uint32_t fw_decode(tlm_runtime *rt, const tlm_model *m, const uint32_t *ids, size_t n_prompt, uint32_t steps,
                   uint32_t *out_ids, int counted);

/* With TLM_FW_CYCLES (a target whose core counts its cycles): the cycles
 * of the counted tokens so far, read around the plugin's markers (outside
 * what the plugin counts), and how many tokens. Zero where the counter
 * does not run (QEMU). */
#ifdef TLM_FW_CYCLES
extern uint64_t fw_cycles_total;
extern uint32_t fw_cycles_tokens;
#endif

#endif
