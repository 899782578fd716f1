/* Arm semihosting for the firmware under QEMU (M-profile: BKPT 0xAB, the
 * operation in r0, its argument in r1). */
#ifndef TLM_FW_SEMIHOST_H
#define TLM_FW_SEMIHOST_H

#include <stdint.h>

#define SH_WRITE0 0x04u
#define SH_EXIT 0x18u
#define SH_EXIT_EXTENDED 0x20u
#define SH_APPLICATION_EXIT 0x20026u

static inline uintptr_t sh_call(uintptr_t op, uintptr_t arg)
{
    register uintptr_t r0 __asm__("r0") = op;
    register uintptr_t r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static inline void sh_puts(const char *s) { sh_call(SH_WRITE0, (uintptr_t)s); }

/* Ends QEMU with `code` as its exit status (SYS_EXIT_EXTENDED carries any
 * value; plain SYS_EXIT only success or failure). */
static inline __attribute__((noreturn)) void sh_exit(int code)
{
    uintptr_t block[2] = {SH_APPLICATION_EXIT, (uintptr_t)code};
    sh_call(SH_EXIT_EXTENDED, (uintptr_t)block);
    sh_call(SH_EXIT, code ? 0x20024u : SH_APPLICATION_EXIT);
    for (;;) {
    }
}

#endif
