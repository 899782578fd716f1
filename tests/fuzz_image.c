/* libFuzzer harness for the device core's handling of untrusted model
 * images: any bytes, with the checksum resealed so that the structural
 * checks alone stand between them and the runtime, must either be refused
 * with a message or open, decode a few positions (fp32 and int8 KV cache)
 * and tokenize text without a fault, under ASan and UBSan, the text coming
 * back from decoding whenever the vocabulary has a space token. A device that
 * receives a model over the air runs exactly this code on it.
 * Build and run: scripts/fuzz.sh (clang's -fsanitize=fuzzer). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/host/image_build.h"
#include "tritlm/model.h"
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"
#include "tritlm/tokenizer.h"

static void decode_some(const tlm_model *m, uint32_t flags)
{
    const uint32_t ctx = m->hp.seq_len < 6 ? m->hp.seq_len : 6;
    const size_t ab = tlm_runtime_arena_size_flags(m, ctx, flags);
    if (ab == 0 || ab > (64u << 20)) return;
    void *arena = malloc(ab);
    if (!arena) return;
    tlm_runtime rt;
    tlm_error err;
    if (tlm_runtime_init_flags(&rt, m, ctx, flags, arena, ab, &err) == TLM_OK) {
        uint32_t tok = m->bos_id;
        for (uint32_t pos = 0; pos < ctx; pos++) {
            float *logits;
            if (tlm_runtime_forward(&rt, tok, pos, &logits) != TLM_OK) break;
            tok = tlm_argmax(logits, m->hp.vocab_size);
            const uint8_t *piece;
            volatile size_t len = tlm_decode_piece(m, m->bos_id, tok, &piece);
            (void)len;
        }
    } else if (!err.msg[0]) {
        abort(); /* a refusal must say why */
    }
    free(arena);
}

/* Encodes text with the image's vocabulary; when the vocabulary has a
 * space token (the encoder's leading space, which decoding drops after
 * BOS), decoding must give the text back, whatever the merges are. */
static void tokenize(const tlm_model *m, const char *text, size_t n)
{
    enum { MAX = 96 };
    if (n > MAX) n = MAX;
    const size_t cap = TLM_ENCODE_MAX_IDS(n);
    uint32_t ids[TLM_ENCODE_MAX_IDS(MAX)];
    int32_t scratch[TLM_ENCODE_SCRATCH(TLM_ENCODE_MAX_IDS(MAX))];
    uint8_t back[MAX];
    size_t got = 0, k = 0;
    if (tlm_encode(m, text, n, TLM_ENCODE_BOS, ids, cap, scratch, &got) != TLM_OK) return;
    if (got > cap) abort();
    const int exact = tlm_token_lookup(m, " ", 1) >= 0;
    for (size_t i = 0; i < got; i++) {
        if (ids[i] >= m->hp.vocab_size) abort();
        const uint8_t *piece;
        const size_t len = tlm_decode_piece(m, i ? ids[i - 1] : m->bos_id, ids[i], &piece);
        if (exact && i) {
            if (k + len > n) abort();
            memcpy(back + k, piece, len);
            k += len;
        }
    }
    if (exact && (k != n || memcmp(back, text, n))) abort();
}

static void tokenize_some(const tlm_model *m, const uint8_t *data, size_t size)
{
    static const char text[] = "Once upon a time, a caf\xc3\xa9 \xff\xfe <s> <0x41> 42!";
    tokenize(m, text, sizeof text - 1);
    /* and the input's last bytes, which mutations reach */
    const size_t n = size < 48 ? size : 48;
    tokenize(m, (const char *)data + size - n, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < TLM_HEADER_BYTES || size > (2u << 20)) return 0;
    uint8_t *img = aligned_alloc(64, (size + 63) & ~(size_t)63);
    if (!img) return 0;
    memcpy(img, data, size);
    tlm_image_reseal(img, size);
    tlm_model m;
    tlm_error err;
    if (tlm_model_open(&m, img, size, &err) == TLM_OK) {
        decode_some(&m, 0);
        decode_some(&m, TLM_RT_KV_INT8);
        tokenize_some(&m, data, size);
    } else if (!err.msg[0]) {
        abort();
    }
    free(img);
    return 0;
}
