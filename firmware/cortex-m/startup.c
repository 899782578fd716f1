/* Cortex-M7, Cortex-M4F and Cortex-M0+ startup for QEMU's mps2-an500,
 * mps2-an386 and mps2-an385 (the same memory map and semihosting): vector
 * table (faults go to the common FAULT report), FPU enable, stack painting,
 * console and exit through semihosting; the rest is common/fw_start.c. */
#include <stdint.h>

#include "fw_port.h"
#include "semihost.h"

extern uint32_t _estack;

void Reset_Handler(void);

void tlm_fault_c(void);

static void fault(void) { tlm_fault_c(); }

__attribute__((section(".isr_vector"), used)) const void *const tlm_vectors[16] = {
    &_estack, Reset_Handler, fault, fault, fault, fault, fault, 0, 0, 0, 0, fault, fault, 0, fault, fault,
};

void tlm_fw_puts(const char *s) { sh_puts(s); }

__attribute__((noreturn)) void tlm_fw_exit(int code) { sh_exit(code); }

#if defined(__ARM_ARCH_6M__)
/* Cortex-M0+ (Armv6-M, no FPU) on the Cortex-M3 of mps2-an385, which runs
 * Armv6-M code as it is: set CCR.UNALIGN_TRP first, so that an unaligned
 * word or halfword access faults as it would on the M0+ (the M3 would do
 * it), then paint the stack with Thumb-1 instructions only. */
__attribute__((naked, noreturn)) void Reset_Handler(void)
{
    __asm__ volatile(
        ".syntax unified\n"
        "ldr r0, =0xE000ED14\n ldr r1, [r0]\n movs r2, #8\n orrs r1, r2\n str r1, [r0]\n" /* CCR.UNALIGN_TRP */
        "dsb\n isb\n"
        "ldr r0, =_sstack\n mov r2, sp\n subs r2, #16\n ldr r1, =0xDEADBEEF\n"
        "1: cmp r0, r2\n bhs 2f\n str r1, [r0]\n adds r0, #4\n b 1b\n"
        "2: b tlm_reset_c\n");
}
#else
__attribute__((naked, noreturn)) void Reset_Handler(void)
{
    __asm__ volatile(
        "ldr r0, =0xE000ED88\n ldr r1, [r0]\n orr r1, r1, #(0xF << 20)\n str r1, [r0]\n" /* CP10/CP11 */
        "dsb\n isb\n"
        "ldr r0, =_sstack\n mov r2, sp\n sub r2, r2, #16\n ldr r1, =0xDEADBEEF\n"
        "1: cmp r0, r2\n bhs 2f\n str r1, [r0], #4\n b 1b\n"
        "2: b tlm_reset_c\n");
}
#endif
