/* The float routines of softfloat.h in place of libgcc's, for the cores
 * without an FPU (the compiler calls these for float operations): RV32 and
 * the Cortex-M0+. */
#include <stdint.h>

#include "softfloat.h"

float __mulsf3(float a, float b);
float __addsf3(float a, float b);
float __subsf3(float a, float b);
float __floatsisf(int32_t i);
float __floatunsisf(uint32_t u);
float __divsf3(float a, float b);

#if defined(__ARM_ARCH_6M__) /* MULS gives the low 32 bits only, and nothing divides */
float __mulsf3(float a, float b) { return tlm_sf_float(tlm_sf_mul32(tlm_sf_bits(a), tlm_sf_bits(b))); }
float __divsf3(float a, float b) { return tlm_sf_float(tlm_sf_div_shift(tlm_sf_bits(a), tlm_sf_bits(b))); }
#else
float __mulsf3(float a, float b) { return tlm_sf_float(tlm_sf_mul(tlm_sf_bits(a), tlm_sf_bits(b))); }
float __divsf3(float a, float b) { return tlm_sf_float(tlm_sf_div(tlm_sf_bits(a), tlm_sf_bits(b))); }
#endif
float __addsf3(float a, float b) { return tlm_sf_float(tlm_sf_add(tlm_sf_bits(a), tlm_sf_bits(b))); }
float __subsf3(float a, float b) { return tlm_sf_float(tlm_sf_add(tlm_sf_bits(a), tlm_sf_bits(b) ^ TLM_SF_SIGN)); }
float __floatsisf(int32_t i) { return tlm_sf_float(tlm_sf_from_i32(i)); }
float __floatunsisf(uint32_t u) { return tlm_sf_float(tlm_sf_from_u32(u, 0)); }

#if defined(__ARM_EABI__) /* the names Arm's run-time ABI calls them by (the Cortex-M0+) */
float __aeabi_fmul(float a, float b) __attribute__((alias("__mulsf3")));
float __aeabi_fadd(float a, float b) __attribute__((alias("__addsf3")));
float __aeabi_fsub(float a, float b) __attribute__((alias("__subsf3")));
float __aeabi_fdiv(float a, float b) __attribute__((alias("__divsf3")));
float __aeabi_i2f(int32_t i) __attribute__((alias("__floatsisf")));
float __aeabi_ui2f(uint32_t u) __attribute__((alias("__floatunsisf")));
#endif
