#include <string.h>

#include "model_file.h"
#include "tritlm/fed.h"
#include "tritlm/seal.h"

/* What a file that is not a model image is instead, when it is one of the
 * project's other files or looks like a llama2.c checkpoint, and what to do
 * with it; NULL otherwise. (TLM_ERROR_MSG_BYTES holds the path and this.) */
static const char *what_instead(const uint8_t *b, size_t n)
{
    if (n >= 4 && !memcmp(b, TLM_SEAL_SIGNED_MAGIC, 4))
        return "a signed model: devices check it (tritlm firmware --server-key); here use the image it signs";
    if (n >= 4 && (!memcmp(b, TLM_FED_MAGIC, 4) || !memcmp(b, TLM_SEAL_SEALED_MAGIC, 4)))
        return "a federated update (tritlm fed info reads it)";
    if (n >= 7 && !memcmp(b, "TLMCKPT", 7)) return "a training checkpoint (tritlm train --resume); its model is the -o file";
    if (n >= 4 && !memcmp(b, "ak42", 4)) return "a llama2.c checkpoint: convert it with tritlm import llama2c";
    if (n >= 28) { /* llama2.c's legacy header: dim, hidden, layers, heads, kv heads, vocab (< 0: not shared), seq_len */
        int32_t h[7];
        memcpy(h, b, sizeof h);
        int ok = h[0] > 0 && h[3] > 0 && h[4] > 0 && h[0] % h[3] == 0 && h[3] % h[4] == 0 && h[5] != 0;
        for (int i = 0; i < 7; i++) ok = ok && h[i] <= (1 << 20) && h[i] >= -(1 << 20);
        if (ok && h[1] > 0 && h[2] > 0 && h[6] > 0)
            return "it looks like a llama2.c checkpoint: convert it with tritlm import llama2c";
    }
    return NULL;
}

tlm_status tlm_model_file_open(tlm_model_file *f, const char *path, tlm_error *err)
{
    memset(f, 0, sizeof *f);
    tlm_status st = tlm_map_file(path, &f->map, err);
    if (st) return st;
    st = tlm_model_open(&f->model, f->map.addr, f->map.bytes, err);
    if (st) {
        tlm_error inner = *err;
        const char *hint = st == TLM_ERR_MAGIC ? what_instead(f->map.addr, f->map.bytes) : NULL;
        if (hint) tlm_fail(err, st, "%s is not a model image: %s", path, hint);
        else tlm_fail(err, st, "%s: %s", path, inner.msg);
        tlm_unmap_file(&f->map);
    }
    return st;
}

void tlm_model_file_close(tlm_model_file *f) { tlm_unmap_file(&f->map); }
