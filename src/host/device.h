/* Named microcontrollers for hardware-aware quantization: which firmware
 * target has their core, and the RAM, flash and clock a model gets. */
#ifndef TLM_HOST_DEVICE_H
#define TLM_HOST_DEVICE_H

#include <stddef.h>
#include <stdint.h>

typedef struct tlm_device {
    const char *name;   /* what users type: stm32h743, esp32c3, ... */
    const char *target; /* the firmware target (QEMU) with its core: cortex-m7, cortex-m4, esp32c3, lx106 */
    const char *chip;   /* one line for listings */
    uint32_t ram_kb;    /* RAM for the firmware's statics, stack and the model's arena */
    uint32_t flash_kb;  /* flash for the firmware's code and the model image */
    uint32_t mhz;       /* the core's usual top clock */
    const char *board;  /* the target of an image for the part itself, which `tritlm firmware
                           --device` builds (stm32f405), or NULL: the emulated target above,
                           which `quantize --device` measures on either way */
} tlm_device;

size_t tlm_device_count(void);
const tlm_device *tlm_device_at(size_t i);
/* NULL if no device has that name. */
const tlm_device *tlm_device_find(const char *name);

#endif
