/* Opens a model image and runs one forward pass: enough to pull the
 * loader, the runtime and the kernels into the link. */
#include <stdint.h>

#include "tritlm/tritlm.h"

extern const uint8_t model_image[];
extern const uint32_t model_image_len;
static uint8_t arena[64 * 1024];

int main(void)
{
    tlm_model m;
    tlm_runtime rt;
    tlm_error err;
    float *logits;
    if (tlm_model_open(&m, model_image, model_image_len, &err)) return 1;
    if (tlm_runtime_init(&rt, &m, 16, arena, sizeof arena, &err)) return 2;
    if (tlm_runtime_forward(&rt, m.bos_id, 0, &logits)) return 3;
    return (int)tlm_argmax(logits, m.hp.vocab_size);
}

/* The image would come from 'tritlm export c' or .incbin; a placeholder
 * keeps this a link check. */
_Alignas(64) const uint8_t model_image[64];
const uint32_t model_image_len = sizeof model_image;
