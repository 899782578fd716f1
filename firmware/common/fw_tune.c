/* Firmware main for on-device fine-tuning (firmware/build.sh --tune TEXT):
 * the device's own text, linked into flash (text.S), is tokenized on the
 * device (one line a story, BOS first, as 'tritlm fed update --split lines'
 * reads a file), the core's tuning step (tritlm/tune.h) moves the model's
 * norm gains for a number of steps, and the change goes out as a federated
 * update in hex: the text itself never leaves. The arena is
 * a static array of the tuning arena's size; the QEMU plugin counts each
 * step between tlm_fw_token_begin and tlm_fw_token_end.
 *
 * Build-time macros: TLM_FW_ARENA_BYTES, TLM_FW_TUNE_WINDOW,
 * TLM_FW_TUNE_STEPS, TLM_FW_TUNE_LR, TLM_FW_TEXT_IDS (room for the text's
 * tokens), TLM_FW_ROUND, TLM_FW_CLIENT, TLM_FW_TUNE_ENC (the update's
 * coding, a tlm_fed_enc: 0 fp32, 1 int8, 2 t2), TLM_FW_SEED (int8 and t2
 * round stochastically: QEMU has no random source, so the generator is
 * seeded with this constant; a device seeds it from its hardware RNG);
 * TLM_FW_TUNE_LORA (> 0: adapters of that rank on wq, wk, wv and wo
 * instead of the gains, alpha rank / 2, their A drawn from TLM_FW_SEED;
 * the update then int8 low-rank factors; then the firmware decodes with
 * that update as an adapter on top of the model, greedily from the prompt
 * of TLM_FW_PROMPT_BYTES for TLM_FW_STEPS positions, int8 KV cache, and
 * prints the TEXT line: the device using what it learned); TLM_FW_SEAL
 * (defined: the update is signed with the device's key and sealed to the
 * server's by the core's tlm_seal_update before it is printed, as SEALED
 * instead of UPDATE; tlm_fw_keys.h, which build.sh writes from the key
 * files, holds the device's Ed25519 seed, the server's X25519 key and 32
 * bytes of entropy drawn at build time, QEMU having no random source: a
 * device takes those from its hardware RNG). */
#include <stdint.h>
#include <string.h>

#include "fw_decode.h"
#include "fw_io.h"
#include "tritlm/fed.h"
#include "tritlm/runtime.h"
#include "tritlm/tokenizer.h"
#include "tritlm/tune.h"
#ifdef TLM_FW_SEAL
#include "tlm_fw_keys.h"
#include "tritlm/seal.h"
#define SEAL_ROOM TLM_SEAL_OVERHEAD /* the update is built this far in, and sealed in place */
#else
#define SEAL_ROOM 0u
#endif

extern const uint8_t tlm_fw_model[];
extern const uint8_t tlm_fw_model_end[];
extern const uint8_t tlm_fw_text[];
extern const uint8_t tlm_fw_text_end[];

#ifndef TLM_FW_ROUND
#define TLM_FW_ROUND 0u
#endif
#ifndef TLM_FW_CLIENT
#define TLM_FW_CLIENT 0u
#endif
#ifndef TLM_FW_TUNE_ENC
#define TLM_FW_TUNE_ENC 0u
#endif
#ifndef TLM_FW_SEED
#define TLM_FW_SEED 1u
#endif
#ifndef TLM_FW_TUNE_LORA
#define TLM_FW_TUNE_LORA 0u
#endif
#ifndef TLM_FW_TUNE_LR /* the tools' default for what is tuned */
#define TLM_FW_TUNE_LR (TLM_FW_TUNE_LORA ? TLM_TUNE_LORA_LR : TLM_TUNE_LR)
#endif

static uint8_t arena[TLM_FW_ARENA_BYTES + SEAL_ROOM] __attribute__((aligned(64)));
static uint32_t ids[TLM_FW_TEXT_IDS];
static float losses[TLM_FW_TUNE_STEPS];

static int is_strip(uint8_t c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* The text's lines, stripped, empty ones skipped, each encoded with BOS;
 * scratch: `scratch_n` int32 values. Returns the token count, or -1. */
static long encode_lines(const tlm_model *m, int32_t *scratch, size_t scratch_n)
{
    const uint8_t *p = tlm_fw_text, *end = tlm_fw_text_end;
    size_t n = 0;
    while (p < end) {
        const uint8_t *nl = p;
        while (nl < end && *nl != '\n') nl++;
        const uint8_t *a = p, *b = nl;
        while (a < b && is_strip(*a)) a++;
        while (b > a && is_strip(b[-1])) b--;
        const size_t len = (size_t)(b - a), cap = TLM_ENCODE_MAX_IDS(len);
        if (len) {
            size_t k = 0;
            if (n + cap > TLM_FW_TEXT_IDS || TLM_ENCODE_SCRATCH(cap) > scratch_n) return -1;
            if (tlm_encode(m, (const char *)a, len, TLM_ENCODE_BOS, ids + n, cap, scratch, &k)) return -1;
            n += k;
        }
        p = nl + 1;
    }
    return (long)n;
}

int main(void)
{
    tlm_model m;
    tlm_error err;
    if (tlm_model_open(&m, tlm_fw_model, (size_t)(tlm_fw_model_end - tlm_fw_model), &err))
        return fw_fail("model", err.msg, 2);
    /* the arena is free until the tuner takes it: the tokenizer's scratch */
    const long n = encode_lines(&m, (int32_t *)(void *)arena, sizeof arena / sizeof(int32_t));
    if (n < 0) return fw_fail("the text does not encode in the room built for it", NULL, 4);
    fw_put_str("TUNE_TOKENS ");
    fw_put_u32((uint32_t)n);
    fw_put_str("\n");
    fw_flush();
    tlm_tune tu;
    if (tlm_tune_init_lora(&tu, &m, TLM_FW_TUNE_WINDOW, TLM_FW_TUNE_LORA, TLM_TUNE_LORA_ALPHA(TLM_FW_TUNE_LORA),
                           TLM_FW_SEED, arena, sizeof arena, &err))
        return fw_fail("tuner", err.msg, 3);
    size_t cursor = 0;
    for (uint32_t s = 0; s < TLM_FW_TUNE_STEPS; s++) {
        tlm_fw_token_begin();
        const tlm_status st = tlm_tune_run(&tu, ids, (size_t)n, 1, TLM_FW_TUNE_LR, &cursor, losses + s, &err);
        tlm_fw_token_end();
        if (st) return fw_fail("tuning step", err.msg, 5);
    }
    fw_put_str("LOSSES");
    for (uint32_t s = 0; s < TLM_FW_TUNE_STEPS; s++) {
        uint32_t bits;
        memcpy(&bits, &losses[s], 4);
        fw_put_str(" ");
        const uint8_t be[4] = {(uint8_t)(bits >> 24), (uint8_t)(bits >> 16), (uint8_t)(bits >> 8), (uint8_t)bits};
        fw_put_hex(be, 4);
    }
    fw_put_str("\n");
    fw_flush();
    /* the update, built in the arena's activation room (free between steps) */
    tlm_fed_writer w;
    const tlm_fed_header h = {TLM_FW_ROUND, TLM_FW_CLIENT, tlm_fed_model_id(&m), (uint32_t)n};
    uint8_t *msg = (uint8_t *)(void *)(tu.ws + tlm_tune_update_scratch(&tu)); /* past tlm_tune_add_update's room */
    const size_t cap = (size_t)(arena + sizeof arena - msg);
    uint8_t *upd = msg + SEAL_ROOM;
    size_t bytes = 0;
    tlm_chacha cc;
    tlm_rand rnd;
    tlm_chacha_seed(&cc, TLM_FW_SEED);
    tlm_rand_init(&rnd, tlm_chacha_fill, &cc);
    if (tlm_fed_begin(&w, upd, cap - SEAL_ROOM, &h, &err) ||
        tlm_tune_add_update(&tu, &w, (tlm_fed_enc)TLM_FW_TUNE_ENC, &rnd, &err) ||
        tlm_fed_finish(&w, &bytes, &err))
        return fw_fail("update", err.msg, 6);
#ifndef TLM_FW_SEAL
    fw_put_str("UPDATE ");
    fw_put_hex(upd, bytes);
    fw_put_str("\n");
#endif
    fw_put_str("UPDATE_BYTES ");
    fw_put_u32((uint32_t)bytes);
    fw_put_str("\n");
    fw_flush();
#if TLM_FW_TUNE_LORA > 0
    { /* decode with the adapters just trained; the runtime takes the arena's room before the update */
        static const unsigned char prompt[TLM_FW_PROMPT_LEN + 1u] = {TLM_FW_PROMPT_BYTES 0};
        static uint32_t pids[TLM_FW_PROMPT_CAP], dout[TLM_FW_STEPS];
        static int32_t pscratch[TLM_ENCODE_SCRATCH(TLM_FW_PROMPT_CAP)];
        const uint32_t ctx = TLM_FW_STEPS < m.hp.seq_len ? TLM_FW_STEPS : m.hp.seq_len;
        size_t np = 0;
        tlm_runtime rt;
        if (tlm_encode(&m, (const char *)prompt, TLM_FW_PROMPT_LEN, TLM_ENCODE_BOS, pids, TLM_FW_PROMPT_CAP, pscratch, &np))
            return fw_fail("prompt does not encode", NULL, 8);
        if (tlm_runtime_init_flags(&rt, &m, ctx, TLM_RT_KV_INT8 | TLM_RT_ADAPTER, arena, (size_t)(msg - arena), &err) ||
            tlm_runtime_use_adapter(&rt, upd, bytes, &err))
            return fw_fail("decoding with the adapters", err.msg, 8);
        fw_decode(&rt, &m, pids, np, ctx, dout, 0);
    }
#endif
#ifdef TLM_FW_SEAL
    { /* what leaves the device: signed and sealed, after the device has used it */
        static const uint8_t seed[32] = TLM_FW_SEAL_SEED, server[32] = TLM_FW_SEAL_SERVER,
                             entropy[32] = TLM_FW_SEAL_ENTROPY;
        size_t sealed = 0;
        tlm_fw_seal_begin();
        const tlm_status st = tlm_seal_update(msg, cap, upd, bytes, seed, server, entropy, &sealed, &err);
        tlm_fw_seal_end();
        if (st) return fw_fail("sealing the update", err.msg, 9);
        fw_put_str("SEALED ");
        fw_put_hex(msg, sealed);
        fw_put_str("\n");
        fw_flush();
    }
#endif
    fw_put_memory((uint32_t)sizeof arena);
    fw_flush();
    return 0;
}
