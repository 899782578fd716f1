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

#ifdef TLM_FW_CYCLES
#include "fw_port.h"

uint64_t fw_cycles_total;
uint32_t fw_cycles_tokens;
#endif

#ifdef TLM_FW_TEMP
tlm_sampler fw_sampler;
#endif

uint32_t fw_decode(tlm_runtime *rt, const tlm_model *m, const uint32_t *ids, size_t n_prompt, uint32_t steps,
                   uint32_t *out_ids, int counted)
{
    fw_put_str("TEXT ");
    uint32_t token = ids[0], pos = 0;
    while (pos < steps) {
        float *logits;
#ifdef TLM_FW_CYCLES
        const uint32_t c0 = counted ? tlm_fw_cycles() : 0u;
#endif
        if (counted) tlm_fw_token_begin();
        tlm_runtime_forward(rt, token, pos, &logits);
#ifdef TLM_FW_TEMP /* (no draw while the prompt is forced: as the host's generate) */
        const uint32_t best = pos + 1u < n_prompt ? 0u : tlm_sample(&fw_sampler, logits, m->hp.vocab_size, rt->sample_scratch);
#else
        const uint32_t best = tlm_argmax(logits, m->hp.vocab_size);
#endif
        if (counted) tlm_fw_token_end();
#ifdef TLM_FW_CYCLES
        if (counted) {
            const uint32_t c1 = tlm_fw_cycles();
            if (c1 != c0) { /* (a counter that does not run counts nothing) */
                fw_cycles_total += c1 - c0;
                fw_cycles_tokens++;
            }
        }
#endif
        const uint32_t next = pos + 1u < n_prompt ? ids[pos + 1u] : best;
        out_ids[pos++] = next;
#ifndef TLM_FW_NO_STOP
        if (next == m->bos_id) break;
#endif
        const uint8_t *piece;
        const size_t k = tlm_decode_piece(m, token, next, &piece);
        fw_put_text(piece, k);
#ifdef TLM_FW_STREAM /* each token out as it comes (a board's console), still one TEXT line */
        fw_flush();
#endif
        token = next;
    }
    fw_put_str("\n");
    fw_flush();
    return pos;
}
