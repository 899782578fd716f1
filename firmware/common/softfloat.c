/* The float routines of softfloat.h in place of libgcc's, for the cores
 * without an FPU (the compiler calls these for float operations). */
#include <stdint.h>

#include "softfloat.h"

float __mulsf3(float a, float b);
float __addsf3(float a, float b);
float __subsf3(float a, float b);
float __floatsisf(int32_t i);
float __floatunsisf(uint32_t u);

float __mulsf3(float a, float b) { return tlm_sf_float(tlm_sf_mul(tlm_sf_bits(a), tlm_sf_bits(b))); }
float __addsf3(float a, float b) { return tlm_sf_float(tlm_sf_add(tlm_sf_bits(a), tlm_sf_bits(b))); }
float __subsf3(float a, float b) { return tlm_sf_float(tlm_sf_add(tlm_sf_bits(a), tlm_sf_bits(b) ^ TLM_SF_SIGN)); }
float __floatsisf(int32_t i) { return tlm_sf_float(tlm_sf_from_i32(i)); }
float __floatunsisf(uint32_t u) { return tlm_sf_float(tlm_sf_from_u32(u, 0)); }
