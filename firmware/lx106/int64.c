/* 64-bit integer multiply and divide for the LX106: GCC emits calls to
 * these, and Debian's lx106 libgcc does not have them (they live in C in
 * GCC's libgcc2.c, which the assembly-only libgcc-extra.sh does not build).
 * Plain shift-and-subtract: the core divides 64-bit values only while
 * opening a model and formatting numbers, never per token. */
#include <stdint.h>

uint64_t __muldi3(uint64_t a, uint64_t b);
uint64_t __udivmoddi4(uint64_t n, uint64_t d, uint64_t *rem);
uint64_t __udivdi3(uint64_t n, uint64_t d);
uint64_t __umoddi3(uint64_t n, uint64_t d);
int64_t __divdi3(int64_t n, int64_t d);
int64_t __moddi3(int64_t n, int64_t d);

/* 32 x 32 -> 64 from 16-bit halves (a 64-bit product here would call
 * __muldi3 again) */
static uint64_t mul32x32(uint32_t a, uint32_t b)
{
    const uint32_t a0 = a & 0xFFFFu, a1 = a >> 16, b0 = b & 0xFFFFu, b1 = b >> 16;
    const uint32_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    const uint32_t mid = (p00 >> 16) + (p01 & 0xFFFFu) + (p10 & 0xFFFFu);
    const uint32_t lo = (p00 & 0xFFFFu) | (mid << 16);
    const uint32_t hi = p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16);
    return ((uint64_t)hi << 32) | lo;
}

uint64_t __muldi3(uint64_t a, uint64_t b)
{
    const uint32_t al = (uint32_t)a, bl = (uint32_t)b;
    const uint64_t lo = mul32x32(al, bl);
    const uint32_t cross = (uint32_t)(a >> 32) * bl + al * (uint32_t)(b >> 32);
    return lo + ((uint64_t)cross << 32);
}

uint64_t __udivmoddi4(uint64_t n, uint64_t d, uint64_t *rem)
{
    if (d == 0) { /* as the hardware-less libgcc would: no trap, a defined value */
        if (rem) *rem = n;
        return ~(uint64_t)0;
    }
    uint64_t q = 0, r = 0;
    for (int i = 63; i >= 0; i--) {
        r = (r << 1) | ((n >> i) & 1u);
        if (r >= d) {
            r -= d;
            q |= (uint64_t)1 << i;
        }
    }
    if (rem) *rem = r;
    return q;
}

uint64_t __udivdi3(uint64_t n, uint64_t d) { return __udivmoddi4(n, d, 0); }

uint64_t __umoddi3(uint64_t n, uint64_t d)
{
    uint64_t r;
    __udivmoddi4(n, d, &r);
    return r;
}

static uint64_t mag(int64_t v) { return v < 0 ? 0u - (uint64_t)v : (uint64_t)v; }

int64_t __divdi3(int64_t n, int64_t d)
{
    const uint64_t q = __udivmoddi4(mag(n), mag(d), 0);
    return (int64_t)((n < 0) != (d < 0) ? 0u - q : q);
}

int64_t __moddi3(int64_t n, int64_t d)
{
    uint64_t r;
    __udivmoddi4(mag(n), mag(d), &r);
    return (int64_t)(n < 0 ? 0u - r : r);
}
