/* Firmware main, the same on every target: opens the model image linked
 * into flash (read in place), carves the runtime from a static arena sized
 * at build time, decodes greedily from a fixed prompt, and reports the text,
 * the token ids, stack and static RAM through the target's console. The
 * instructions of each token (forward pass and argmax) are counted by the
 * QEMU plugin between tlm_fw_token_begin and tlm_fw_token_end.
 *
 * Build-time macros (firmware/build.sh): TLM_FW_CTX, TLM_FW_STEPS,
 * TLM_FW_PROMPT, TLM_FW_ARENA_BYTES, TLM_FW_PROMPT_CAP. */
#include <stdint.h>
#include <string.h>

#include "fw_port.h"
#include "tritlm/runtime.h"
#include "tritlm/tokenizer.h"

extern const uint8_t tlm_fw_model[];
extern const uint8_t tlm_fw_model_end[];

static uint8_t arena[TLM_FW_ARENA_BYTES] __attribute__((aligned(64)));
static uint32_t ids[TLM_FW_PROMPT_CAP];
static int32_t enc_scratch[TLM_ENCODE_SCRATCH(TLM_FW_PROMPT_CAP)];
static uint32_t out_ids[TLM_FW_STEPS];

__attribute__((noinline)) void tlm_fw_token_begin(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void tlm_fw_token_end(void) { __asm__ volatile("" ::: "memory"); }

static char line[160];
static size_t line_n;

static void flush(void)
{
    line[line_n] = 0;
    fw_puts(line);
    line_n = 0;
}

static void put_bytes(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (line_n + 1 >= sizeof line) flush();
        line[line_n++] = p[i] ? (char)p[i] : '?';
    }
}

static void put_str(const char *s) { put_bytes((const uint8_t *)s, strlen(s)); }

static void put_u32(uint32_t v)
{
    char b[12];
    int k = 11;
    b[k] = 0;
    do {
        b[--k] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    put_str(b + k);
}

static uint32_t argmax(const float *x, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int main(void)
{
    tlm_model m;
    tlm_error err;
    if (tlm_model_open(&m, tlm_fw_model, (size_t)(tlm_fw_model_end - tlm_fw_model), &err)) {
        put_str("ERROR model: ");
        put_str(err.msg);
        put_str("\n");
        flush();
        return 2;
    }
    tlm_runtime rt;
    if (tlm_runtime_init(&rt, &m, TLM_FW_CTX, arena, sizeof arena, &err)) {
        put_str("ERROR runtime: ");
        put_str(err.msg);
        put_str("\n");
        flush();
        return 3;
    }
    static const char prompt[] = TLM_FW_PROMPT;
    size_t n_prompt = 0;
    if (tlm_encode(&m, prompt, sizeof prompt - 1u, TLM_ENCODE_BOS, ids, TLM_FW_PROMPT_CAP, enc_scratch, &n_prompt)) {
        put_str("ERROR prompt does not encode\n");
        flush();
        return 4;
    }
    put_str("TEXT ");
    uint32_t token = ids[0], pos = 0, steps = TLM_FW_STEPS < TLM_FW_CTX ? TLM_FW_STEPS : TLM_FW_CTX;
    while (pos < steps) {
        float *logits;
        tlm_fw_token_begin();
        tlm_runtime_forward(&rt, token, pos, &logits);
        const uint32_t best = argmax(logits, m.hp.vocab_size);
        tlm_fw_token_end();
        const uint32_t next = pos + 1u < n_prompt ? ids[pos + 1u] : best;
        out_ids[pos++] = next;
        if (next == m.bos_id) break;
        const uint8_t *piece;
        const size_t k = tlm_decode_piece(&m, token, next, &piece);
        put_bytes(piece, k);
        token = next;
    }
    put_str("\n");
    flush();
    put_str("IDS");
    for (uint32_t i = 0; i < pos; i++) {
        put_str(" ");
        put_u32(out_ids[i]);
        if (line_n > 120) flush();
    }
    put_str("\n");
    flush();
    put_str("TOKENS ");
    put_u32(pos);
    put_str("\nSTACK ");
    put_u32(fw_stack_used());
    put_str("\nSTATIC ");
    put_u32(fw_static_ram());
    put_str("\nARENA ");
    put_u32((uint32_t)sizeof arena);
    put_str("\nFLASH ");
    put_u32(fw_flash_bytes());
    put_str("\nMODEL ");
    put_u32((uint32_t)(tlm_fw_model_end - tlm_fw_model));
    put_str("\n");
    flush();
    return 0;
}
