/* What fw_main.c needs from the Cortex-M7 target. */
#ifndef TLM_FW_PORT_H
#define TLM_FW_PORT_H

#include <stdint.h>

#include "semihost.h"

extern uint32_t _sdata, _ebss, _flash_end;
uint32_t tlm_fw_stack_used(void);

static inline void fw_puts(const char *s) { sh_puts(s); }
static inline uint32_t fw_stack_used(void) { return tlm_fw_stack_used(); }
/* .data + .bss (the arena is in .bss) */
static inline uint32_t fw_static_ram(void) { return (uint32_t)((uintptr_t)&_ebss - (uintptr_t)&_sdata); }
static inline uint32_t fw_flash_bytes(void) { return (uint32_t)(uintptr_t)&_flash_end; }

#endif
