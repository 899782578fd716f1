/* What fw_main.c needs from a target; each target's startup.c defines
 * these, its linker script the symbols. */
#ifndef TLM_FW_PORT_H
#define TLM_FW_PORT_H

#include <stdint.h>

extern uint32_t _sdata, _ebss, _flash_end;

void tlm_fw_puts(const char *s);      /* console: semihosting, UART or simcall */
uint32_t tlm_fw_stack_used(void);     /* painted stack's high-water mark */
__attribute__((noreturn)) void tlm_fw_exit(int code);
int tlm_fw_getc(void);                /* the console's next byte, waiting for it: only on targets with
                                         an input console (stm32f405), for TLM_FW_INTERACTIVE */
uint32_t tlm_fw_cycles(void);         /* the core's cycle counter: only where TLM_FW_CYCLES (stm32f405) */

static inline void fw_puts(const char *s) { tlm_fw_puts(s); }
static inline uint32_t fw_stack_used(void) { return tlm_fw_stack_used(); }
/* .data + .bss (the arena is in .bss) */
static inline uint32_t fw_static_ram(void) { return (uint32_t)((uintptr_t)&_ebss - (uintptr_t)&_sdata); }
/* code, read-only data and the model image */
static inline uint32_t fw_flash_bytes(void) { return (uint32_t)(uintptr_t)&_flash_end; }

#endif
