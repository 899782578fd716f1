/* Model image format, version 1: on-disk constants. docs/FORMAT.md is the
 * normative description; this header mirrors it for readers in C. */
#ifndef TRITLM_FORMAT_H
#define TRITLM_FORMAT_H

#include <stdint.h>

#define TLM_MAGIC "TRLM"          /* 4 bytes at offset 0 */
#define TLM_FORMAT_VERSION 1u
#define TLM_HEADER_BYTES 128u
#define TLM_TENSOR_ENTRY_BYTES 64u
#define TLM_ALIGN 64u             /* every tensor and scale block starts on this */

/* Header field offsets (all little-endian). */
enum {
    TLM_H_MAGIC = 0,           /* char[4] "TRLM" */
    TLM_H_VERSION = 4,         /* u32 */
    TLM_H_HEADER_BYTES = 8,    /* u32, 128 */
    TLM_H_FLAGS = 12,          /* u32, TLM_FLAG_* */
    TLM_H_IMAGE_BYTES = 16,    /* u64, length of the whole image */
    TLM_H_CRC32 = 24,          /* u32, CRC-32 of the image with this field zero */
    TLM_H_DIM = 28,            /* u32 */
    TLM_H_HIDDEN_DIM = 32,     /* u32 */
    TLM_H_N_LAYERS = 36,       /* u32 */
    TLM_H_N_HEADS = 40,        /* u32 */
    TLM_H_N_KV_HEADS = 44,     /* u32 */
    TLM_H_VOCAB_SIZE = 48,     /* u32 */
    TLM_H_SEQ_LEN = 52,        /* u32 */
    TLM_H_ROPE_THETA = 56,     /* f32 */
    TLM_H_NORM_EPS = 60,       /* f32 */
    TLM_H_N_TENSORS = 64,      /* u32 */
    TLM_H_TENSOR_ENTRY_BYTES = 68, /* u32, 64 */
    TLM_H_TENSOR_TABLE_OFFSET = 72, /* u64 */
    TLM_H_VOCAB_OFFSET = 80,   /* u64 */
    TLM_H_VOCAB_BYTES = 88,    /* u64 */
    TLM_H_MAX_TOKEN_LEN = 96,  /* u32 */
    TLM_H_BOS_ID = 100,        /* u32 */
    TLM_H_EOS_ID = 104,        /* u32 */
    TLM_H_RESERVED = 108       /* 20 bytes, must be zero */
};

#define TLM_FLAG_SHARED_CLASSIFIER 0x1u
#define TLM_FLAGS_KNOWN (TLM_FLAG_SHARED_CLASSIFIER)

/* Tensor table entry field offsets (relative to the entry). */
enum {
    TLM_T_ROLE = 0,         /* u16 tlm_role */
    TLM_T_LAYER = 2,        /* u16 */
    TLM_T_WTYPE = 4,        /* u16 tlm_wtype */
    TLM_T_SCALE_KIND = 6,   /* u16 tlm_scale_kind */
    TLM_T_ROWS = 8,         /* u32 */
    TLM_T_COLS = 12,        /* u32 */
    TLM_T_GROUP = 16,       /* u32, weights per scale group (per-group scales only) */
    TLM_T_PARAM = 20,       /* u32, type-specific parameter, 0 unless the type says */
    TLM_T_DATA_OFFSET = 24, /* u64 */
    TLM_T_DATA_BYTES = 32,  /* u64 */
    TLM_T_SCALE_OFFSET = 40,/* u64 */
    TLM_T_SCALE_BYTES = 48, /* u64 */
    TLM_T_RESERVED = 56     /* 8 bytes, must be zero */
};

/* What a tensor is for. The table lists the required tensors in canonical
 * order (see docs/FORMAT.md), then optional auxiliary tensors. */
typedef enum tlm_role {
    TLM_ROLE_TOK_EMBED = 1,  /* vocab x dim */
    TLM_ROLE_ATTN_NORM = 2,  /* 1 x dim, per layer */
    TLM_ROLE_WQ = 3,         /* dim x dim */
    TLM_ROLE_WK = 4,         /* kv_dim x dim */
    TLM_ROLE_WV = 5,         /* kv_dim x dim */
    TLM_ROLE_WO = 6,         /* dim x dim */
    TLM_ROLE_FFN_NORM = 7,   /* 1 x dim */
    TLM_ROLE_W1 = 8,         /* hidden x dim (gate) */
    TLM_ROLE_W2 = 9,         /* dim x hidden (down) */
    TLM_ROLE_W3 = 10,        /* hidden x dim (up) */
    TLM_ROLE_FINAL_NORM = 11,/* 1 x dim */
    TLM_ROLE_CLASSIFIER = 12,/* vocab x dim, absent when shared with TOK_EMBED */
    TLM_ROLE_ROPE_REAL = 13, /* optional, seq_len x head_size/2: llama2.c's stored table */
    TLM_ROLE_ROPE_IMAG = 14  /* optional, idem; the runtime computes RoPE itself */
} tlm_role;

#define TLM_LAYER_ROLES 9 /* ATTN_NORM .. W3 */

/* How a tensor's scale block is laid out. Scales are f32. */
typedef enum tlm_scale_kind {
    TLM_SCALE_NONE = 0,      /* scale_bytes 0 */
    TLM_SCALE_TENSOR = 1,    /* one f32 */
    TLM_SCALE_ROW = 2,       /* rows f32 */
    TLM_SCALE_GROUP = 3      /* rows * ceil(cols/group) f32, row-major */
} tlm_scale_kind;

#endif
