/* ESP32-C3 stand-in startup (RV32IMC on QEMU virt): .data from flash,
 * .bss zeroed, main's status out through the sifive_test device; traps
 * print FAULT and exit 99. */
#include <stdint.h>

#include "fw_port.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
extern int main(void);

#define STACK_PAINT 0xDEADBEEFu
#define TEST_DEVICE ((volatile uint32_t *)0x100000u)

__attribute__((noreturn)) void tlm_fw_exit(int code)
{
    *TEST_DEVICE = code ? ((uint32_t)code << 16) | 0x3333u : 0x5555u;
    for (;;) {
    }
}

void tlm_fw_puts(const char *s)
{
    volatile uint8_t *uart = (volatile uint8_t *)0x10000000u; /* ns16550a */
    for (; *s; s++) {
        while (!(uart[5] & 0x20u)) {
        }
        uart[0] = (uint8_t)*s;
    }
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
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    tlm_fw_exit(main());
}
