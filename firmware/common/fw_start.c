/* What every target's startup shares, after its assembly has set the stack
 * pointer and painted the stack: .data from flash, .bss zeroed, main's
 * status out through the target's exit, the painted stack's high-water
 * mark, the stack's overflow check (exit 98), and the fault report (FAULT,
 * exit 99). */
#include <stdint.h>

#include "fw_port.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
extern int main(void);

#define STACK_PAINT 0xDEADBEEFu

uint32_t tlm_fw_stack_used(void)
{
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == STACK_PAINT) p++;
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

__attribute__((noreturn, used)) void tlm_fault_c(void)
{
    tlm_fw_puts("FAULT\n");
    tlm_fw_exit(99);
}

__attribute__((noreturn, used)) void tlm_reset_c(void)
{
    volatile uint32_t *src = &_sidata, *dst = &_sdata; /* volatile: no memcpy call before .data exists */
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    const int status = main();
    /* The stack's lowest word still painted, or the stack ran into the
     * static RAM below it (the arena's end): its values, and everything
     * printed, may be wrong. */
    if (_sstack != STACK_PAINT) {
        tlm_fw_puts("ERROR stack: the firmware used its whole stack region and may have written past it into "
                    "static RAM; give it more (build.sh --stack-kb, tritlm firmware --stack-kb)\n");
        tlm_fw_exit(98);
    }
    tlm_fw_exit(status);
}
