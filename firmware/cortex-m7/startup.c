/* Cortex-M7 startup for QEMU's mps2-an500: vector table, FPU enable, stack
 * painting (for the high-water mark), .data/.bss, then main's status out
 * through semihosting. Faults print FAULT and exit 99. */
#include <stdint.h>

#include "fw_port.h"
#include "semihost.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
extern int main(void);

#define STACK_PAINT 0xDEADBEEFu

void Reset_Handler(void);

static void fault(void)
{
    sh_puts("FAULT\n");
    sh_exit(99);
}

__attribute__((section(".isr_vector"), used)) const void *const tlm_vectors[16] = {
    &_estack, Reset_Handler, fault, fault, fault, fault, fault, 0, 0, 0, 0, fault, fault, 0, fault, fault,
};

void tlm_fw_puts(const char *s) { sh_puts(s); }

__attribute__((noreturn)) void tlm_fw_exit(int code) { sh_exit(code); }

uint32_t tlm_fw_stack_used(void)
{
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == STACK_PAINT) p++;
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

__attribute__((naked, noreturn)) void Reset_Handler(void)
{
    __asm__ volatile(
        "ldr r0, =0xE000ED88\n ldr r1, [r0]\n orr r1, r1, #(0xF << 20)\n str r1, [r0]\n" /* CP10/CP11 */
        "dsb\n isb\n"
        "ldr r0, =_sstack\n mov r2, sp\n sub r2, r2, #16\n ldr r1, =0xDEADBEEF\n"
        "1: cmp r0, r2\n bhs 2f\n str r1, [r0], #4\n b 1b\n"
        "2: b tlm_reset_c\n");
}

__attribute__((noreturn, used)) void tlm_reset_c(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    sh_exit(main());
}
