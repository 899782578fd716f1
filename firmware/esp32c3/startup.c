/* ESP32-C3 stand-in (RV32IMC on QEMU virt): console on the 16550 UART,
 * exit status through the sifive_test device (the rest of the startup is
 * in start.S and common/fw_start.c). */
#include <stdint.h>

#include "fw_port.h"

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
