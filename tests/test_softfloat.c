/* The firmware's integer binary32 arithmetic (multiply, divide, add,
 * subtract, integer to float) (firmware/common/softfloat.h,
 * linked into the builds for cores without an FPU) against this machine's
 * hardware floating point (both multiplies: tlm_sf_mul and tlm_sf_mul32; both divisions: tlm_sf_div and tlm_sf_div_shift), which is IEEE 754 with round-to-nearest-even
 * and subnormals kept (x86-64 SSE, no flush to zero): every special class
 * against every other, random operands over the whole range, operands
 * whose products land in the subnormal range and at overflow, and
 * significands short enough that products round from exact ties. NaN
 * results must be NaN (payloads are not compared). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../firmware/common/softfloat.h"
#include "testutil.h"

#define bits_of tlm_sf_bits
#define float_of tlm_sf_float

static int is_nan(uint32_t b) { return (b & 0x7FFFFFFFu) > TLM_SF_INF; }

static volatile float sink_a, sink_b; /* keep the compiler from folding the reference */

static uint32_t hw_mul(uint32_t a, uint32_t b)
{
    sink_a = float_of(a);
    sink_b = float_of(b);
    return bits_of(sink_a * sink_b);
}

static uint32_t hw_add(uint32_t a, uint32_t b)
{
    sink_a = float_of(a);
    sink_b = float_of(b);
    return bits_of(sink_a + sink_b);
}

static uint32_t hw_div(uint32_t a, uint32_t b)
{
    sink_a = float_of(a);
    sink_b = float_of(b);
    return bits_of(sink_a / sink_b);
}

static unsigned long mismatches;

/* One operation on (a, b) by the hardware and by softfloat.h: the same
 * bits, or both NaN; the first mismatches are printed. */
static void check_op(const char *op, uint32_t (*hw)(uint32_t, uint32_t), uint32_t (*sf)(uint32_t, uint32_t),
                     uint32_t a, uint32_t b)
{
    const uint32_t want = hw(a, b), got = sf(a, b);
    if (want == got || (is_nan(want) && is_nan(got))) return;
    if (mismatches++ < 10) print_message("%s %08x %08x: hardware %08x, softfloat %08x\n", op, a, b, want, got);
}

/* both multiplies: the 64-bit product (RV32) and the one from 32-bit
 * multiplies (Armv6-M) */
static void check_mul(uint32_t a, uint32_t b)
{
    check_op("mul", hw_mul, tlm_sf_mul, a, b);
    check_op("mul32", hw_mul, tlm_sf_mul32, a, b);
}
static void check_add(uint32_t a, uint32_t b) { check_op("add", hw_add, tlm_sf_add, a, b); }
/* both divisions: 8 bits per 32-bit division (RV32) and one per step (Armv6-M) */
static void check_div(uint32_t a, uint32_t b)
{
    check_op("div", hw_div, tlm_sf_div, a, b);
    check_op("div_shift", hw_div, tlm_sf_div_shift, a, b);
}

static const uint32_t specials[] = {
    0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x00000002u, 0x00000003u, 0x003FFFFFu, 0x00400000u,
    0x007FFFFFu, 0x807FFFFFu, 0x00800000u, 0x80800000u, 0x00800001u, 0x01000000u, 0x0C000000u, 0x33800000u,
    0x34000000u, 0x3E800000u, 0x3F000000u, 0x3F7FFFFFu, 0x3F800000u, 0xBF800000u, 0x3F800001u, 0x3FC00000u,
    0x40000000u, 0x40490FDBu, 0x4B000000u, 0x5F000000u, 0x7E800000u, 0x7EFFFFFFu, 0x7F000000u, 0x7F7FFFFFu,
    0xFF7FFFFFu, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0x7FBFFFFFu, 0x7FFFFFFFu,
};

static void test_mul_specials(void **state)
{
    (void)state;
    mismatches = 0;
    const size_t n = sizeof specials / sizeof specials[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            check_mul(specials[i], specials[j]);
            check_mul(specials[i] ^ TLM_SF_SIGN, specials[j]);
        }
    assert_int_equal(mismatches, 0);
}

/* check(a, b) for n pairs of random 32-bit patterns (the whole range). */
static void check_random_pairs(void (*check)(uint32_t, uint32_t), uint64_t *rng, int n)
{
    for (int i = 0; i < n; i++) {
        const uint64_t r = tu_rand(rng);
        check((uint32_t)r, (uint32_t)(r >> 32));
    }
}

static void test_mul_random(void **state)
{
    (void)state;
    mismatches = 0;
    uint64_t rng = 0x5EEDF00Dull;
    check_random_pairs(check_mul, &rng, 2000000);
    assert_int_equal(mismatches, 0);
}

/* Exponent fields that sum to near 127 - 24 (products in and below the
 * subnormal range) and to near 254 + 127 (products at overflow). */
static void test_mul_underflow_overflow(void **state)
{
    (void)state;
    mismatches = 0;
    uint64_t rng = 0xB0DEull;
    for (int i = 0; i < 1000000; i++) {
        const uint64_t r = tu_rand(&rng), s = tu_rand(&rng);
        const int32_t ea = (int32_t)(r % 254u) + 1;
        const int32_t target = (i & 1) ? 127 - 30 + (int32_t)(s % 34u) : 254 + 127 - 3 + (int32_t)(s % 6u);
        int32_t eb = target - ea;
        if (eb < 0 || eb > 254) continue;
        const uint32_t a = (uint32_t)(r >> 40 & 0x7FFFFFu) | (uint32_t)ea << 23 | (uint32_t)(r >> 63) << 31;
        const uint32_t b = (uint32_t)(s >> 20 & 0x7FFFFFu) | (uint32_t)eb << 23; /* eb 0: a subnormal operand */
        check_mul(a, b);
    }
    assert_int_equal(mismatches, 0);
}

/* Significands of at most 12 bits: the 48-bit product's low half is mostly
 * zero, so exact results and exact ties (to even) are common. */
static void test_mul_ties(void **state)
{
    (void)state;
    mismatches = 0;
    uint64_t rng = 0x71E5ull;
    unsigned long ties = 0;
    for (int i = 0; i < 1000000; i++) {
        const uint64_t r = tu_rand(&rng);
        const uint32_t a = 0x3F800000u | ((uint32_t)r & 0x7FF000u), b = 0x3F800000u | ((uint32_t)(r >> 32) & 0x7FF800u);
        const uint64_t p = (uint64_t)((a & 0x7FFFFFu) | 0x800000u) * ((b & 0x7FFFFFu) | 0x800000u);
        const uint32_t low = (p >> 47) ? (uint32_t)(p & 0xFFFFFFu) : (uint32_t)((p << 1) & 0xFFFFFFu);
        ties += low == 0x800000u;
        check_mul(a, b);
        check_mul(a ^ 0x3F000000u ^ 0x00800000u, b); /* the same significands at a subnormal product scale */
    }
    assert_true(ties > 1000); /* the test does reach ties */
    /* significands whose product is 2^47 + s, 0 < s < 2^24, at the scale
     * where 2^47 is half the smallest subnormal: only the bits shifted out
     * (s) tell "just above half, round up" from "a tie, to even (zero)" */
    for (uint32_t mb = 0x800001u; mb < 0x1000000u; mb += 61u) {
        const uint32_t ma = (uint32_t)(((1ull << 47) + mb - 1u) / mb);
        if (ma < 0x800000u || ma > 0xFFFFFFu || (uint64_t)ma * mb == 1ull << 47) continue;
        check_mul((52u << 23) | (ma & 0x7FFFFFu), (51u << 23) | (mb & 0x7FFFFFu));
    }
    /* deep underflow (24 to 40 bits below the smallest normal) */
    for (int i = 0; i < 1000000; i++) {
        const uint64_t r = tu_rand(&rng);
        const uint32_t ea = 30u + (uint32_t)(r % 50u), eb = 87u + (uint32_t)(r >> 8) % 17u - ea;
        check_mul((ea << 23) | ((uint32_t)(r >> 16) & 0x7FF000u), (eb << 23) | ((uint32_t)(r >> 40) & 0x7FF800u));
    }
    assert_int_equal(mismatches, 0);
}

/* check(a, b) for every pair of special classes, each with either sign. */
static void check_special_pairs(void (*check)(uint32_t, uint32_t))
{
    mismatches = 0;
    const size_t n = sizeof specials / sizeof specials[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            for (uint32_t s = 0; s < 4u; s++) check(specials[i] ^ (s & 1u) << 31, specials[j] ^ (s >> 1) << 31);
    assert_int_equal(mismatches, 0);
}

static void test_add_specials(void **state)
{
    (void)state;
    check_special_pairs(check_add);
}

/* Random operands over the whole range, then operands of nearby exponents
 * (exponent differences 0 to 30, both signs: carries, cancellation down to
 * subnormals, the sticky bit), with full and with short significands (ties). */
static void test_add_random(void **state)
{
    (void)state;
    mismatches = 0;
    uint64_t rng = 0xADD5ull;
    check_random_pairs(check_add, &rng, 2000000);
    for (int i = 0; i < 3000000; i++) {
        const uint64_t r = tu_rand(&rng), s = tu_rand(&rng);
        const uint32_t ea = (uint32_t)(r % 256u), d = (uint32_t)(s % 31u);
        const uint32_t eb = ea >= d ? ea - d : 0u;
        uint32_t mmask = (i % 3 == 0) ? 0x7FF000u : 0x7FFFFFu;
        const uint32_t a = (uint32_t)(r >> 63) << 31 | (ea == 255u ? 254u : ea) << 23 | ((uint32_t)(r >> 8) & mmask);
        const uint32_t b = (uint32_t)(s >> 63) << 31 | eb << 23 | ((uint32_t)(s >> 8) & mmask);
        check_add(a, b);
        check_add(b, a);
    }
    assert_int_equal(mismatches, 0);
}

static void test_div_specials(void **state)
{
    (void)state;
    check_special_pairs(check_div);
}

/* Random operands over the whole range; quotients near the overflow and
 * down through the subnormals (exponent differences of -150 to -100 and
 * 125 to 130, subnormal operands among them); divisors that are powers of
 * two, whose quotients are exact until they are shifted into the
 * subnormal range, where they tie (to even) or round; significands of 12
 * bits over each other, whose quotients are often exact. */
static void test_div_random(void **state)
{
    (void)state;
    mismatches = 0;
    uint64_t rng = 0xD1Dull;
    check_random_pairs(check_div, &rng, 2000000);
    for (int i = 0; i < 1000000; i++) {
        const uint64_t r = tu_rand(&rng), s = tu_rand(&rng);
        const int32_t d = (i & 1) ? -150 + (int32_t)(s % 51u) : 125 + (int32_t)(s % 6u);
        const int32_t ea = (int32_t)(r % 256u), eb = ea - d;
        if (ea > 254 || eb < 0 || eb > 254) continue;
        check_div((uint32_t)ea << 23 | (uint32_t)(r >> 40 & 0x7FFFFFu) | (uint32_t)(r >> 63) << 31,
                  (uint32_t)eb << 23 | (uint32_t)(s >> 20 & 0x7FFFFFu));
    }
    for (int i = 0; i < 1000000; i++) {
        const uint64_t r = tu_rand(&rng);
        const uint32_t ea = 1u + (uint32_t)(r % 60u), eb = 127u + (uint32_t)(r >> 8) % 40u;
        check_div(ea << 23 | (uint32_t)(r >> 20 & 0x7FFFFFu), eb << 23);           /* a power of two */
        check_div(0x3F800000u | ((uint32_t)r & 0x7FF000u), 0x3F800000u | ((uint32_t)(r >> 32) & 0x7FF800u));
    }
    assert_int_equal(mismatches, 0);
}

/* Integer to float, as check_op's operations (the second operand unused). */
static uint32_t hw_from_u32(uint32_t u, uint32_t unused)
{
    (void)unused;
    sink_a = (float)u;
    return bits_of(sink_a);
}
static uint32_t hw_from_i32(uint32_t i, uint32_t unused)
{
    (void)unused;
    sink_a = (float)(int32_t)i;
    return bits_of(sink_a);
}
static uint32_t sf_from_u32(uint32_t u, uint32_t unused)
{
    (void)unused;
    return tlm_sf_from_u32(u, 0);
}
static uint32_t sf_from_i32(uint32_t i, uint32_t unused)
{
    (void)unused;
    return tlm_sf_from_i32((int32_t)i);
}

static void test_int_to_float(void **state)
{
    (void)state;
    mismatches = 0;
    uint64_t rng = 0x1D7Full;
    for (int i = 0; i < 3000000; i++) {
        const uint64_t r = tu_rand(&rng);
        /* every magnitude class: a random value shifted down by 0..31 bits */
        const uint32_t u = (uint32_t)r >> (uint32_t)(r >> 59), w = ((uint32_t)(r >> 32) | 1u) << (uint32_t)(r >> 59 & 31u);
        const uint32_t vals[4] = {u, w, u ^ 0x80000000u, (uint32_t)(r >> 20)};
        for (int k = 0; k < 4; k++) {
            check_op("u32", hw_from_u32, sf_from_u32, vals[k], 0);
            check_op("i32", hw_from_i32, sf_from_i32, vals[k], 0);
        }
    }
    const int32_t edges[] = {0, 1, -1, 16777216, 16777217, 16777219, -16777217, 2147483647, -2147483647 - 1, 33554431,
                             2147483584, 2147483520, 2147483583};
    for (size_t k = 0; k < sizeof edges / sizeof edges[0]; k++) check_op("i32", hw_from_i32, sf_from_i32, (uint32_t)edges[k], 0);
    assert_int_equal(mismatches, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mul_specials),
        cmocka_unit_test(test_mul_random),
        cmocka_unit_test(test_mul_underflow_overflow),
        cmocka_unit_test(test_mul_ties),
        cmocka_unit_test(test_add_specials),
        cmocka_unit_test(test_add_random),
        cmocka_unit_test(test_int_to_float),
        cmocka_unit_test(test_div_specials),
        cmocka_unit_test(test_div_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
