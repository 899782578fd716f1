/* LX106 on QEMU's sim machine: console and exit status through the
 * simulator's simcall interface (the rest of the startup is in start.S,
 * with the exception vectors, and common/fw_start.c). */
#include <stdint.h>

#include "fw_port.h"

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
