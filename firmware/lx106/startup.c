/* LX106 startup on QEMU's sim machine: .data from flash, .bss zeroed,
 * output and main's status through the simulator's simcall interface;
 * exceptions print FAULT and exit 99 (vectors in start.S). */
#include <stdint.h>

#include "fw_port.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
extern int main(void);

#define STACK_PAINT 0xDEADBEEFu

static int simcall(int nr, int a, const void *b, int c)
{
    register int a2 __asm__("a2") = nr;
    register int a3 __asm__("a3") = a;
    register const void *a4 __asm__("a4") = b;
    register int a5 __asm__("a5") = c;
    __asm__ volatile("simcall" : "+r"(a2) : "r"(a3), "r"(a4), "r"(a5) : "memory");
    return a2;
}

__attribute__((noreturn)) void tlm_fw_exit(int code)
{
    simcall(1, code, 0, 0); /* SYS_exit */
    for (;;) {
    }
}

void tlm_fw_puts(const char *s)
{
    int n = 0;
    while (s[n]) n++;
    simcall(4, 1, s, n); /* SYS_write to stdout */
}

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
    tlm_fw_exit(main());
}
