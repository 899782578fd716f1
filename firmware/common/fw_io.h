/* What every firmware main prints with (one console line at a time,
 * buffered) and the marker functions the QEMU plugin counts between. */
#ifndef TLM_FW_IO_H
#define TLM_FW_IO_H

#include <stddef.h>
#include <stdint.h>

/* A region the plugin counts (one token, or one tuning step), the
 * privatization of one token (build.sh --count priv), the sealing of
 * an update (--count seal) and one classification (--classify). */
void tlm_fw_token_begin(void);
void tlm_fw_token_end(void);
void tlm_fw_priv_begin(void);
void tlm_fw_priv_end(void);
void tlm_fw_seal_begin(void);
void tlm_fw_seal_end(void);
void tlm_fw_classify_begin(void);
void tlm_fw_classify_end(void);

void fw_flush(void); /* writes out the buffered part of the line */
void fw_put_bytes(const uint8_t *p, size_t n); /* a NUL byte prints as '?' */
void fw_put_str(const char *s);
void fw_put_u32(uint32_t v);
void fw_put_hex(const uint8_t *p, size_t n); /* lowercase, no separators */
size_t fw_line_used(void);                   /* bytes buffered */

/* The memory lines every run ends with: STACK (the painted stack's
 * high-water mark), STATIC (.data + .bss, the arena included), ARENA and
 * FLASH, each on its own line. */
void fw_put_memory(uint32_t arena_bytes);

/* "ERROR what[: detail]" on its own line; returns status, for main to exit with. */
int fw_fail(const char *what, const char *detail, int status);

#endif
