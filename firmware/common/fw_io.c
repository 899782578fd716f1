/* See fw_io.h. */
#include <string.h>

#include "fw_io.h"
#include "fw_port.h"

__attribute__((noinline)) void tlm_fw_token_begin(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void tlm_fw_token_end(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void tlm_fw_priv_begin(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void tlm_fw_priv_end(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void tlm_fw_seal_begin(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void tlm_fw_seal_end(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void tlm_fw_classify_begin(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void tlm_fw_classify_end(void) { __asm__ volatile("" ::: "memory"); }

static char line[160];
static size_t line_n;

void fw_flush(void)
{
    line[line_n] = 0;
    fw_puts(line);
    line_n = 0;
}

void fw_put_bytes(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (line_n + 1 >= sizeof line) fw_flush();
        line[line_n++] = p[i] ? (char)p[i] : '?';
    }
}

void fw_put_str(const char *s) { fw_put_bytes((const uint8_t *)s, strlen(s)); }

void fw_put_u32(uint32_t v)
{
    char b[12];
    int k = 11;
    b[k] = 0;
    do {
        b[--k] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    fw_put_str(b + k);
}

void fw_put_hex(const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        const uint8_t e[2] = {(uint8_t)hex[p[i] >> 4], (uint8_t)hex[p[i] & 15u]};
        fw_put_bytes(e, 2);
    }
}

size_t fw_line_used(void) { return line_n; }

void fw_put_memory(uint32_t arena_bytes)
{
    fw_put_str("STACK ");
    fw_put_u32(fw_stack_used());
    fw_put_str("\nSTATIC ");
    fw_put_u32(fw_static_ram());
    fw_put_str("\nARENA ");
    fw_put_u32(arena_bytes);
    fw_put_str("\nFLASH ");
    fw_put_u32(fw_flash_bytes());
    fw_put_str("\n");
}

int fw_fail(const char *what, const char *detail, int status)
{
    fw_put_str("ERROR ");
    fw_put_str(what);
    if (detail) {
        fw_put_str(": ");
        fw_put_str(detail);
    }
    fw_put_str("\n");
    fw_flush();
    return status;
}
