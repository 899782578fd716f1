/* LX106 (call0 ABI) entry for qemu-system-xtensa -M sim -cpu lx106
 * -semihosting: stack, stack painting for the high-water mark, then C
 * (startup.c). QEMU starts the core at 0x50000000, not at the ELF entry,
 * so a stub there jumps to _start. */
    .section .text.start, "ax"
    .global _start
    .align 4
_start:
    j       1f                   /* over the literal pool */
    .align 4
    .literal_position
1:  movi    a1, _estack
    movi    a2, _sstack
    addi    a4, a1, -16
    movi    a3, 0xDEADBEEF
2:  bgeu    a2, a4, 3f
    s32i    a3, a2, 0
    addi    a2, a2, 4
    j       2b
3:  movi    a0, 0
    call0   tlm_reset_c
4:  j       4b

    .section .reset, "ax"
    .global _reset
_reset:
    movi    a0, 0x401
    slli    a0, a0, 20           /* 0x40100000: _start */
    jx      a0

/* Exception vectors at the lx106's reset VECBASE (0x40000000, instram0):
 * kernel, user and double exceptions all go to tlm_fault_entry, which
 * prints FAULT and exits 99. The literal sits below the vectors for l32r. */
    .section .vectors, "ax"
    .global _vectors
_vectors:
    .word   tlm_fault_entry
    .org    0x30                 /* KernelExceptionVector */
    l32r    a0, _vectors
    jx      a0
    .org    0x50                 /* UserExceptionVector */
    l32r    a0, _vectors
    jx      a0
    .org    0x70                 /* DoubleExceptionVector */
    l32r    a0, _vectors
    jx      a0

    .section .text.fault, "ax"
    .align 4
    .literal_position
    .global tlm_fault_entry
tlm_fault_entry:
    movi    a1, _estack
    call0   tlm_fault_c
5:  j       5b
