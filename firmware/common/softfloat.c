/* The float routines of softfloat.h in place of libgcc's, for the cores
 * without an FPU (the compiler calls these for float operations). */
#include <stdint.h>
#include <string.h>

#include "softfloat.h"

float __mulsf3(float a, float b);
float __addsf3(float a, float b);
float __subsf3(float a, float b);
float __floatsisf(int32_t i);
float __floatunsisf(uint32_t u);

static uint32_t bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, 4);
    return f;
}

float __mulsf3(float a, float b) { return from_bits(tlm_sf_mul(bits(a), bits(b))); }
float __addsf3(float a, float b) { return from_bits(tlm_sf_add(bits(a), bits(b))); }
float __subsf3(float a, float b) { return from_bits(tlm_sf_add(bits(a), bits(b) ^ TLM_SF_SIGN)); }
float __floatsisf(int32_t i) { return from_bits(tlm_sf_from_i32(i)); }
float __floatunsisf(uint32_t u) { return from_bits(tlm_sf_from_u32(u, 0)); }
