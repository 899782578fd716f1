/* 'tritlm export c': the shipped ternary model, exported at build time
 * (tests/CMakeLists.txt) and compiled into this test with -Wall -Wextra
 * -Werror, is the model file byte for byte, 64-byte aligned, runs in an
 * arena of exactly the size its header states, and generates what
 * 'tritlm generate' generates from the file. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/host/fileio.h"
#include "shipped_ternary.h"
#include "testutil.h"
#include "tritlm/tritlm.h"

static char *out_text, *err_text; /* owned by tu_run */
#define run(...) tu_run(&out_text, &err_text, __VA_ARGS__)

static _Alignas(64) uint8_t arena[shipped_ternary_ARENA_BYTES_KV_INT8];
static _Alignas(64) uint8_t arena_f32kv[shipped_ternary_ARENA_BYTES];

static void test_bytes_and_alignment(void **state)
{
    (void)state;
    uint8_t *file;
    size_t n;
    assert_int_equal(tlm_read_file(TLM_EXPORTED_MODEL, &file, &n, NULL), TLM_OK);
    assert_int_equal(n, shipped_ternary_BYTES);
    assert_int_equal(sizeof shipped_ternary, n);
    assert_memory_equal(shipped_ternary, file, n);
    assert_int_equal(tlm_crc32(0, file, n), shipped_ternary_CRC32);
    assert_int_equal((uintptr_t)shipped_ternary % 64u, 0);
    free(file);
}

static void test_arena_figures(void **state)
{
    (void)state;
    tlm_model m;
    tlm_runtime rt;
    tlm_error err;
    assert_int_equal(tlm_model_open(&m, shipped_ternary, sizeof shipped_ternary, &err), TLM_OK);
    const uint32_t ctx = shipped_ternary_CTX;
    assert_int_equal(ctx, 64);
    /* the stated sizes are enough, and one byte less is not */
    assert_int_equal(tlm_runtime_init_flags(&rt, &m, ctx, TLM_RT_KV_INT8, arena, sizeof arena, &err), TLM_OK);
    assert_int_equal(tlm_runtime_init_flags(&rt, &m, ctx, TLM_RT_KV_INT8, arena, sizeof arena - 1, &err), TLM_ERR_ARENA);
    assert_int_equal(tlm_runtime_init(&rt, &m, ctx, arena_f32kv, sizeof arena_f32kv, &err), TLM_OK);
    assert_int_equal(tlm_runtime_init(&rt, &m, ctx, arena_f32kv, sizeof arena_f32kv - 1, &err), TLM_ERR_ARENA);
    /* and they are what 'tritlm info' reports for that context */
    assert_int_equal(run("info '%s' --ctx 64", TLM_EXPORTED_MODEL), 0);
    char want[160];
    snprintf(want, sizeof want, "arena at ctx 64: %u bytes (%u with the KV cache in int8)",
             (unsigned)shipped_ternary_ARENA_BYTES, (unsigned)shipped_ternary_ARENA_BYTES_KV_INT8);
    assert_non_null(strstr(out_text, want));
}

static void test_generates_like_the_file(void **state)
{
    (void)state;
    tlm_model m;
    tlm_runtime rt;
    assert_int_equal(tlm_model_open(&m, shipped_ternary, sizeof shipped_ternary, NULL), TLM_OK);
    assert_int_equal(tlm_runtime_init_flags(&rt, &m, 64, TLM_RT_KV_INT8, arena, sizeof arena, NULL), TLM_OK);
    char text[4096];
    size_t n = 0;
    uint32_t tok = m.bos_id;
    for (uint32_t pos = 0; pos < 64; pos++) { /* -n 64: positions 0..63, as llama2.c */
        float *lg;
        assert_int_equal(tlm_runtime_forward(&rt, tok, pos, &lg), TLM_OK);
        const uint32_t next = tlm_argmax(lg, m.hp.vocab_size);
        if (next == m.bos_id) break;
        const uint8_t *p;
        const size_t pl = tlm_decode_piece(&m, tok, next, &p);
        assert_true(n + pl + 2 < sizeof text);
        memcpy(text + n, p, pl);
        n += pl;
        tok = next;
    }
    text[n++] = '\n';
    text[n] = 0;
    assert_true(n > 40); /* a story, not an early stop */
    assert_int_equal(run("generate -m '%s' -t 0 -n 64 --kv-int8", TLM_EXPORTED_MODEL), 0);
    assert_string_equal(out_text, text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_and_alignment),
        cmocka_unit_test(test_arena_figures),
        cmocka_unit_test(test_generates_like_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
