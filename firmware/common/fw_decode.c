/* Greedy decoding on the console (fw_decode.h). */
#include "fw_decode.h"

#include "fw_io.h"
#include "tritlm/sampler.h"
#include "tritlm/tokenizer.h"

void fw_put_text(const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        const uint8_t c = p[i];
        if (c == '\n') fw_put_str("\\n");
        else if (c == '\\') fw_put_str("\\\\");
        else if (c < 0x20u || c == 0x7Fu) {
            const uint8_t e[4] = {'\\', 'x', (uint8_t)hex[c >> 4], (uint8_t)hex[c & 15u]};
            fw_put_bytes(e, sizeof e);
        } else fw_put_bytes(&c, 1);
    }
}

uint32_t fw_decode(tlm_runtime *rt, const tlm_model *m, const uint32_t *ids, size_t n_prompt, uint32_t steps,
                   uint32_t *out_ids, int counted)
{
    fw_put_str("TEXT ");
    uint32_t token = ids[0], pos = 0;
    while (pos < steps) {
        float *logits;
        if (counted) tlm_fw_token_begin();
        tlm_runtime_forward(rt, token, pos, &logits);
        const uint32_t best = tlm_argmax(logits, m->hp.vocab_size);
        if (counted) tlm_fw_token_end();
        const uint32_t next = pos + 1u < n_prompt ? ids[pos + 1u] : best;
        out_ids[pos++] = next;
#ifndef TLM_FW_NO_STOP
        if (next == m->bos_id) break;
#endif
        const uint8_t *piece;
        const size_t k = tlm_decode_piece(m, token, next, &piece);
        fw_put_text(piece, k);
        token = next;
    }
    fw_put_str("\n");
    fw_flush();
    return pos;
}
