#include <string.h>

#include "llama2c.h"
#include "model_file.h"
#include "train/checkpoint.h"
#include "tritlm/fed.h"
#include "tritlm/seal.h"

/* What a file that is not a model image is instead, when it is one of the
 * project's other files or a llama2.c checkpoint, and what to do
 * with it; NULL otherwise. (TLM_ERROR_MSG_BYTES holds the path and this.) */
static const char *what_instead(const char *path, const uint8_t *b, size_t n)
{
    if (n >= 4 && !memcmp(b, TLM_SEAL_SIGNED_MAGIC, 4))
        return "a signed model: devices check it (tritlm firmware --server-key); here use the image it signs";
    if (n >= 4 && (!memcmp(b, TLM_FED_MAGIC, 4) || !memcmp(b, TLM_SEAL_SEALED_MAGIC, 4)))
        return "a federated update (tritlm fed info reads it)";
    if (tlm_ckpt_is(path)) return "a training checkpoint (tritlm train --resume); its model is the -o file";
    if (tlm_llama2c_looks_like(b, n)) return "a llama2.c checkpoint: convert it with tritlm import llama2c";
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
        const char *hint = st == TLM_ERR_MAGIC ? what_instead(path, f->map.addr, f->map.bytes) : NULL;
        if (hint) tlm_fail(err, st, "%s is not a model image: %s", path, hint);
        else tlm_fail(err, st, "%s: %s", path, inner.msg);
        tlm_unmap_file(&f->map);
    }
    return st;
}

void tlm_model_file_close(tlm_model_file *f) { tlm_unmap_file(&f->map); }
