/* RV32IMC entry for qemu-system-riscv32 -M virt -bios none (machine mode,
 * hart 0): global pointer, stack, trap vector, stack painting for the
 * high-water mark, then C (startup.c). */
    .section .text.start, "ax"
    .global _start
_start:
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop
    la      sp, _estack
    la      t0, tlm_trap
    .option push
    .option arch, +zicsr
    csrw    mtvec, t0
    .option pop
    la      t0, _sstack
    addi    t2, sp, -16
    li      t1, 0xDEADBEEF
1:  bgeu    t0, t2, 2f
    sw      t1, 0(t0)
    addi    t0, t0, 4
    j       1b
2:  j       tlm_reset_c

    .balign 4
    .global tlm_trap
tlm_trap:                        /* any exception: report and exit 99 */
    la      sp, _estack
    j       tlm_fault_c
