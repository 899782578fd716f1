/* Firmware main, the same on every target: opens the model image linked
 * into flash (read in place), carves the runtime from a static arena sized
 * at build time, decodes greedily from a fixed prompt, and reports the text,
 * the token ids, stack and static RAM through the target's console. The
 * instructions of each token (forward pass and argmax) are counted by the
 * QEMU plugin between tlm_fw_token_begin and tlm_fw_token_end.
 *
 * Build-time macros (firmware/build.sh): TLM_FW_CTX, TLM_FW_STEPS,
 * TLM_FW_PROMPT_BYTES (its byte values, each followed by a comma),
 * TLM_FW_PROMPT_LEN, TLM_FW_ARENA_BYTES, TLM_FW_PROMPT_CAP, TLM_FW_RT_FLAGS (runtime
 * flags, e.g. TLM_RT_KV_INT8); TLM_FW_MODEL_C when the image comes as the C
 * array of 'tritlm export c' (build.sh --embed c) instead of model.S;
 * TLM_FW_ADAPTER when adapter.S links a low-rank update to decode with
 * (build.sh --adapter; TLM_FW_RT_FLAGS then has TLM_RT_ADAPTER);
 * TLM_FW_NO_STOP to decode all TLM_FW_STEPS positions, past BOS (fw_decode.c);
 * TLM_FW_SIGNED when model.S links a signed model ('tritlm fed sign'):
 * the server's signature is checked with the core's tlm_seal_verify_model
 * against the key in tlm_fw_keys.h (build.sh --server-key) before the image
 * inside is opened; exit 10 if it does not verify.
 * TLM_FW_TEMP, TLM_FW_TOP_P, TLM_FW_SEED (build.sh -t, --top-p, --seed):
 * sampled decoding instead of greedy, the fixed prompt with seed S and the
 * k-th typed prompt with S + k, as 'tritlm generate --seed' would.
 * TLM_FW_INTERACTIVE (build.sh --interactive; targets with tlm_fw_getc):
 * after the fixed prompt's report, prompts typed on the console, one a
 * line (echoed; Backspace edits; at most TLM_FW_LINE_CAP bytes), each
 * decoded from position 0 as its own TEXT line, until Ctrl-D on an empty
 * line.
 * TLM_FW_CLASSIFY (build.sh --classify LABELS; 0 exact, 1 greedy: see
 * tritlm/classify.h): instead of decoding, the fixed prompt (and each typed
 * line) gets the label of tlm_fw_labels.h whose line "TEXT<TAB>LABEL" the
 * model finds the most probable, printed as CLASS, FORWARDS and
 * NLL_UNATS lines (with TLM_FW_REJECT_UNATS, build.sh --reject: label
 * TLM_FW_REJECT_LABEL instead past that NLL_UNATS), as
 * 'tritlm classify' would give it; the plugin counts each classification
 * between tlm_fw_classify_begin and tlm_fw_classify_end. */
#include <stdint.h>
#include <string.h>

#include "fw_decode.h"
#include "fw_io.h"
#include "tritlm/dp.h"
#ifdef TLM_FW_SIGNED
#include "tlm_fw_keys.h"
#include "tritlm/seal.h"
#endif
#include "tritlm/runtime.h"
#include "tritlm/sampler.h"
#include "tritlm/tokenizer.h"

#ifdef TLM_FW_MODEL_C
#include "tlm_fw_model_c.h"
#define FW_MODEL tlm_fw_model_c
#define FW_MODEL_BYTES ((size_t)tlm_fw_model_c_BYTES)
#else
extern const uint8_t tlm_fw_model[];
extern const uint8_t tlm_fw_model_end[];
#define FW_MODEL tlm_fw_model
#define FW_MODEL_BYTES ((size_t)(tlm_fw_model_end - tlm_fw_model))
#endif

#ifdef TLM_FW_ADAPTER
extern const uint8_t tlm_fw_adapter[];
extern const uint8_t tlm_fw_adapter_end[];
#endif

#ifndef TLM_FW_RT_FLAGS
#define TLM_FW_RT_FLAGS 0u
#endif
#ifndef TLM_FW_LINE_CAP
#define TLM_FW_LINE_CAP 256u
#endif
/* The fixed prompt's tokens are needed to decode it or to privatize them;
 * a classifying build encodes the prompt with each label instead. */
#if !defined(TLM_FW_CLASSIFY) || defined(TLM_FW_PRIV_MECH)
#define FW_PROMPT_IDS 1
#endif

static uint8_t arena[TLM_FW_ARENA_BYTES] __attribute__((aligned(64)));
#ifdef FW_PROMPT_IDS
static uint32_t ids[TLM_FW_PROMPT_CAP];
static int32_t enc_scratch[TLM_ENCODE_SCRATCH(TLM_FW_PROMPT_CAP)];
#endif
#ifndef TLM_FW_CLASSIFY
static uint32_t out_ids[TLM_FW_STEPS];
#endif

/* Bit-exactness of this target's fast kernels against the portable
 * reference, on random packed data of awkward shapes (done before the
 * decode, outside the counted region, in the arena the runtime takes over
 * afterwards: no static RAM of its own). Rows up to ST_ROWS, columns up to
 * the widest that fits the arena (at most ST_COLS). Returns the number of
 * cases checked, or -1 on a mismatch. */
#define ST_ROWS 8u
#define ST_COLS 160u

static size_t st_align(size_t v) { return (v + 63u) & ~(size_t)63u; }

/* Arena bytes the self-test takes with rows of up to `cols` columns. */
static size_t st_need(uint32_t cols)
{
    return st_align(ST_ROWS * cols) + st_align(ST_ROWS * cols * sizeof(float)) + st_align(cols * sizeof(float)) +
           2u * st_align(ST_ROWS * sizeof(float)) + st_align(TLM_ACT_Q8_LUT_BYTES(cols));
}

static int kernel_selftest(uint8_t *mem, size_t bytes)
{
    uint32_t max_cols = ST_COLS;
    while (max_cols > 8u && st_need(max_cols) > bytes) max_cols /= 2u;
    if (st_need(max_cols) > bytes) return 0;
    uint8_t *st_data = mem;
    float *st_scales = (float *)(void *)(mem + st_align(ST_ROWS * max_cols));
    float *st_x = st_scales + st_align(ST_ROWS * max_cols * sizeof(float)) / sizeof(float);
    float *st_a = st_x + st_align(max_cols * sizeof(float)) / sizeof(float);
    float *st_b = st_a + st_align(ST_ROWS * sizeof(float)) / sizeof(float);
    int8_t *st_act = (int8_t *)(void *)(st_b + st_align(ST_ROWS * sizeof(float)) / sizeof(float));
    uint32_t s = 12345u, cases = 0;
#define NEXT() (s = s * 1664525u + 1013904223u, s >> 8)
    for (uint32_t type = TLM_WTYPE_I8; type < TLM_WTYPE_COUNT; type++) {
        tlm_matvec_q8_fn simd = tlm_wtype_matvec_q8_simd(type);
        if (!simd) continue;
        for (int iter = 0; iter < 40; iter++) {
            tlm_tensor t;
            memset(&t, 0, sizeof t);
            t.wtype = (uint16_t)type;
            t.rows = 1u + NEXT() % ST_ROWS;
            t.cols = 1u + NEXT() % max_cols;
            const uint32_t kinds[3] = {TLM_SCALE_TENSOR, TLM_SCALE_ROW, TLM_SCALE_GROUP};
            t.scale_kind = (uint16_t)kinds[iter % 3];
            t.group = t.scale_kind == TLM_SCALE_GROUP ? 1u + NEXT() % t.cols : 0u;
            if (type == TLM_WTYPE_TS) t.param = t.cols;
            const uint32_t rb = (uint32_t)tlm_wtype_row_bytes(type, t.cols, t.param);
            for (uint32_t r = 0; r < t.rows; r++)
                for (uint32_t b = 0; b < rb; b++) {
                    uint32_t v = NEXT() & 0xFFu;
                    if (type == TLM_WTYPE_I8 && v == 0x80u) v = 0x7Fu;
                    if (type == TLM_WTYPE_T2) v &= ~((v & (v >> 1)) & 0x55u); /* no code 3 */
                    if (type == TLM_WTYPE_T3) v %= 243u;
                    st_data[r * rb + b] = (uint8_t)v;
                }
            for (uint32_t i = 0; i < ST_ROWS * max_cols; i++) st_scales[i] = (float)(NEXT() % 1000u) * 0.001f + 0.01f;
            for (uint32_t i = 0; i < t.cols; i++) st_x[i] = (float)((int32_t)(NEXT() % 2001u) - 1000) * 0.01f;
            t.data = st_data;
            t.scales = st_scales;
            tlm_act_q8 a;
            tlm_act_q8_quantize(&a, st_x, t.cols, st_act);
            tlm_wtype_get(type)->matvec_q8_ref(st_a, &a, &t);
            simd(st_b, &a, &t);
            if (memcmp(st_a, st_b, t.rows * sizeof(float)) != 0) return -1;
            cases++;
        }
    }
#undef NEXT
    return (int)cases;
}

#ifdef TLM_FW_CLASSIFY
#include "tlm_fw_labels.h"
#include "tritlm/classify.h"

#ifdef TLM_FW_INTERACTIVE
#define CLS_TEXT_CAP (TLM_FW_PROMPT_LEN > TLM_FW_LINE_CAP ? TLM_FW_PROMPT_LEN : TLM_FW_LINE_CAP)
#else
#define CLS_TEXT_CAP TLM_FW_PROMPT_LEN
#endif
/* The candidates' shared tokens (at most one per byte of the text, with
 * BOS, the dummy prefix and the TAB), then each label's own (one per byte,
 * and room for merges reaching back into the text). */
#define CLS_IDS_CAP (CLS_TEXT_CAP + 4u + TLM_FW_LABEL_BYTES + 8u * TLM_FW_N_LABELS)
static uint32_t cls_ids[CLS_IDS_CAP], cls_off[TLM_FW_N_LABELS + 1u], cls_order[TLM_FW_N_LABELS];
static float cls_scores[TLM_FW_N_LABELS];
static char cls_line[CLS_TEXT_CAP + 1u + TLM_FW_LABEL_MAX];

/* "TEXT<TAB>LABEL i" encoded with BOS into ids (cap of them; the encoder's
 * scratch after them in the arena): 0 and *n, or -1. */
static int cls_encode(const tlm_model *m, const char *text, size_t len, const char *label, uint32_t *ids, size_t cap,
                      size_t *n)
{
    const size_t ll = strlen(label);
    memcpy(cls_line, text, len);
    cls_line[len] = '\t';
    memcpy(cls_line + len + 1, label, ll);
    return tlm_encode(m, cls_line, len + 1 + ll, TLM_ENCODE_BOS, ids, cap, (int32_t *)(void *)(ids + cap), n) ? -1 : 0;
}

static int runtime_start(tlm_runtime *rt, const tlm_model *m);

/* Classifies text[0..len) as 'tritlm classify' does: the candidates are
 * encoded twice with the arena as scratch (first to find the tokens they
 * all share, then to keep each label's own), the runtime is set up over
 * the arena again, and a line longer than the context loses its first
 * tokens. Prints CLASS and FORWARDS; 0, or a status after fw_fail. */
static int classify(tlm_runtime *rt, const tlm_model *m, const char *text, size_t len)
{
    const size_t cap = TLM_ENCODE_MAX_IDS(len + 1u + TLM_FW_LABEL_MAX);
    if (len > CLS_TEXT_CAP || cap * (1u + TLM_ENCODE_SCRATCH(1)) * sizeof(uint32_t) > sizeof arena)
        return fw_fail("classify", "the text is too long for the arena", 4);
    uint32_t *tmp = (uint32_t *)(void *)arena;
    const char *label = (const char *)tlm_fw_label_text;
    uint32_t shared = 0, longest = 0;
    for (uint32_t i = 0; i < TLM_FW_N_LABELS; i++, label += strlen(label) + 1) {
        size_t n;
        if (cls_encode(m, text, len, label, tmp, cap, &n)) return fw_fail("classify", "a candidate does not encode", 4);
        uint32_t k = 0;
        if (i == 0) { /* the first candidate is the reference the others share tokens with */
            if (n > CLS_IDS_CAP) return fw_fail("classify", "the text's tokens do not fit", 4);
            memcpy(cls_ids, tmp, n * sizeof *tmp);
            k = (uint32_t)n;
        } else {
            while (k < n && k < shared && tmp[k] == cls_ids[k]) k++;
        }
        shared = k;
        if (n > longest) longest = (uint32_t)n;
    }
    uint32_t w = shared;
    label = (const char *)tlm_fw_label_text;
    for (uint32_t i = 0; i < TLM_FW_N_LABELS; i++, label += strlen(label) + 1) {
        size_t n;
        cls_encode(m, text, len, label, tmp, cap, &n); /* (it encoded above) */
        if (w + (n - shared) > CLS_IDS_CAP) return fw_fail("classify", "the labels' tokens do not fit", 4);
        cls_off[i] = w - shared;
        memcpy(cls_ids + w, tmp + shared, (n - shared) * sizeof *tmp);
        w += (uint32_t)(n - shared);
    }
    cls_off[TLM_FW_N_LABELS] = w - shared;
    const uint32_t cut = longest > TLM_FW_CTX ? longest - TLM_FW_CTX : 0u;
    if (cut >= shared) return fw_fail("classify", "a label alone is longer than the context", 4);
    const int st = runtime_start(rt, m);
    if (st) return st;
    tlm_classify_result r;
    tlm_fw_classify_begin();
    const tlm_status cs = tlm_classify(rt, cls_ids + cut, shared - cut, cls_ids + shared, cls_off, TLM_FW_N_LABELS,
                                       m->bos_id, (tlm_classify_mode)TLM_FW_CLASSIFY, cls_order, cls_scores, &r);
    tlm_fw_classify_end();
    if (cs) return fw_fail("classify", tlm_status_str(cs), 4);
    /* minus the log of the label's probability given the tokens every
     * candidate shares, in millionths of a nat: 'tritlm classify''s
     * confidence is exp(-NLL_UNATS / 1e6) */
    const float nll = r.shared - r.score;
    const uint32_t unats = nll < 4000.0f ? (uint32_t)(nll * 1e6f + 0.5f) : 4000000000u;
    uint32_t best = r.best;
#ifdef TLM_FW_REJECT_UNATS
    if (unats > TLM_FW_REJECT_UNATS) best = TLM_FW_REJECT_LABEL; /* less sure than asked: "none of these" */
#endif
    label = (const char *)tlm_fw_label_text;
    for (uint32_t i = 0; i < best; i++) label += strlen(label) + 1;
    fw_put_str("CLASS ");
    fw_put_text((const uint8_t *)label, strlen(label)); /* (escaped as TEXT lines are) */
    fw_put_str("\nFORWARDS ");
    fw_put_u32(r.forwards);
    fw_put_str("\nNLL_UNATS ");
    fw_put_u32(unats);
    fw_put_str("\n");
    fw_flush();
    return 0;
}
#endif

#ifdef FW_PROMPT_IDS
/* "LABEL id id ..." on one line (wrapped into several writes). */
static void put_ids(const char *label, const uint32_t *v, size_t n)
{
    fw_put_str(label);
    for (size_t i = 0; i < n; i++) {
        fw_put_str(" ");
        fw_put_u32(v[i]);
        if (fw_line_used() > 120) fw_flush();
    }
    fw_put_str("\n");
    fw_flush();
}
#endif

/* The runtime over the arena, with the linked adapter on top (the update
 * stays in flash; the runtime keeps 4 bytes per tensor to find its
 * entries): 0, or the status fw_fail reported. */
static int runtime_start(tlm_runtime *rt, const tlm_model *m)
{
    tlm_error err;
    if (tlm_runtime_init_flags(rt, m, TLM_FW_CTX, TLM_FW_RT_FLAGS, arena, sizeof arena, &err))
        return fw_fail("runtime", err.msg, 3);
#ifdef TLM_FW_ADAPTER
    if (tlm_runtime_use_adapter(rt, tlm_fw_adapter, (size_t)(tlm_fw_adapter_end - tlm_fw_adapter), &err))
        return fw_fail("adapter", err.msg, 7);
#endif
    return 0;
}

#ifdef TLM_FW_INTERACTIVE
#include "fw_port.h"

/* A line from the console into buf (at most cap bytes, the rest of a
 * longer line dropped), echoed as typed: its length, or -1 for Ctrl-D on
 * an empty line. CR or LF ends it (an empty line is 0); Backspace and DEL
 * take back a byte; other control bytes are ignored. */
static int read_line(char *buf, uint32_t cap)
{
    uint32_t n = 0;
    for (;;) {
        const int c = tlm_fw_getc();
        if (c == 4 && n == 0) return -1;
        if (c == '\r' || c == '\n') {
            if (n) tlm_fw_puts("\n");
            return (int)n;
        }
        if (c == 8 || c == 127) {
            if (n) {
                n--;
                tlm_fw_puts("\b \b");
            }
            continue;
        }
        if (c < 0x20 || n >= cap) continue;
        buf[n++] = (char)c;
        const char e[2] = {(char)c, 0};
        tlm_fw_puts(e);
    }
}

/* Prompts from the console until Ctrl-D. Each is encoded with the arena as
 * the encoder's scratch (the runtime is set up over the arena again
 * afterwards: a new prompt starts at position 0, nothing before it is
 * kept), then decoded greedily for up to `steps` positions. */
static int chat(tlm_runtime *rt, const tlm_model *m, uint32_t steps)
{
    static char line[TLM_FW_LINE_CAP];
#ifndef TLM_FW_CLASSIFY
    static uint32_t lids[TLM_FW_LINE_CAP + 3u];
#endif
    /* the encoder needs TLM_ENCODE_SCRATCH(cap) int32 values: as many ids as the arena allows */
    size_t cap = sizeof arena / (sizeof(int32_t) * TLM_ENCODE_SCRATCH(1));
    cap = cap < TLM_FW_LINE_CAP + 3u ? cap : TLM_FW_LINE_CAP + 3u;
    if (cap < 4u) return fw_fail("the arena is too small to encode typed prompts", NULL, 4);
#ifdef TLM_FW_TEMP
    uint64_t typed = 0;
#endif
#ifdef TLM_FW_CLASSIFY
    fw_put_str("READY type a line to classify and Enter; Ctrl-D on an empty line ends\n");
#else
    fw_put_str("READY type a prompt and Enter; Ctrl-D on an empty line ends\n");
#endif
    fw_flush();
    for (int ask = 1;;) {
        if (ask) tlm_fw_puts("> ");
        const int n = read_line(line, (uint32_t)cap - 3u);
        if (n < 0) {
            tlm_fw_puts("\n");
            return 0;
        }
        ask = n > 0; /* (an empty line: the same prompt goes on) */
        if (n == 0) continue;
#ifdef TLM_FW_CLASSIFY
        (void)steps;
        const int cst = classify(rt, m, line, (size_t)n);
        if (cst) return cst;
#else
        size_t k = 0;
        if (tlm_encode(m, line, (size_t)n, TLM_ENCODE_BOS, lids, cap, (int32_t *)(void *)arena, &k)) {
            fw_put_str("ERROR the prompt does not encode\n");
            fw_flush();
            continue;
        }
        const int st = runtime_start(rt, m);
        if (st) return st;
#ifdef TLM_FW_TEMP
        tlm_sampler_init(&fw_sampler, TLM_FW_TEMP, TLM_FW_TOP_P, (uint64_t)TLM_FW_SEED + ++typed);
#endif
        fw_decode(rt, m, lids, k, steps, out_ids, 0);
#endif
    }
}
#endif

int main(void)
{
#ifdef TLM_FW_FAULT_TEST
    /* tests: a load from unmapped memory (or, on the Cortex-M0+, a word
     * load from an address that is not a multiple of 4) must end in the
     * fault handler; the address through a volatile, so that the compiler
     * cannot split the load into aligned pieces */
    fw_put_str("FAULT TEST\n");
    fw_flush();
    volatile uintptr_t fault_at = TLM_FW_FAULT_TEST;
    fw_put_u32(*(volatile const uint32_t *)fault_at);
    fw_flush();
#endif
    const int checked = kernel_selftest(arena, sizeof arena);
    if (checked < 0) return fw_fail("SIMD kernel differs from the reference", NULL, 5);
    fw_put_str("KERNELS ");
    fw_put_u32((uint32_t)checked);
    fw_put_str(" cases bit-exact\n");
    fw_flush();
    tlm_model m;
    tlm_error err;
    const uint8_t *img = FW_MODEL;
    size_t img_bytes = FW_MODEL_BYTES;
#ifdef TLM_FW_SIGNED
    { /* only a model the server signed runs */
        static const uint8_t server[32] = TLM_FW_SIGNED_BY;
        uint32_t round = 0;
        tlm_fw_seal_begin();
        const tlm_status st = tlm_seal_verify_model(FW_MODEL, FW_MODEL_BYTES, server, &img, &img_bytes, &round, &err);
        tlm_fw_seal_end();
        if (st) return fw_fail("refused", err.msg, 10);
        fw_put_str("SIGNED round ");
        fw_put_u32(round);
        fw_put_str(", the server's signature verified\n");
        fw_flush();
    }
#endif
    if (tlm_model_open(&m, img, img_bytes, &err))
        return fw_fail("model", err.msg, 2);
    tlm_runtime rt;
    const int started = runtime_start(&rt, &m);
    if (started) return started;
#ifdef TLM_FW_ADAPTER
    fw_put_str("ADAPTER ");
    fw_put_u32((uint32_t)(tlm_fw_adapter_end - tlm_fw_adapter));
    fw_put_str("\n");
#endif
    static const unsigned char prompt[TLM_FW_PROMPT_LEN + 1u] = {TLM_FW_PROMPT_BYTES 0};
#ifdef FW_PROMPT_IDS
    size_t n_prompt = 0;
    if (tlm_encode(&m, (const char *)prompt, TLM_FW_PROMPT_LEN, TLM_ENCODE_BOS, ids, TLM_FW_PROMPT_CAP, enc_scratch,
                   &n_prompt))
        return fw_fail("prompt does not encode", NULL, 4);
#endif
#ifdef TLM_FW_PRIV_MECH
    /* privatize the prompt's tokens with seeded noise (TLM_FW_PRIV_SEED) and
     * print the ids: the host's `tritlm privatize --seed` must print the same */
    {
        static uint32_t priv_out[TLM_FW_PROMPT_CAP];
        static float priv_scratch[TLM_PRIV_SCRATCH_FLOATS(1024)];
        static tlm_privatizer p; /* 4 KB with the radius table: not on the stack */
        tlm_chacha cc;
        tlm_rand rnd;
        if (m.hp.dim > 1024 || tlm_privatizer_init(&p, &m, (tlm_mech)TLM_FW_PRIV_MECH, TLM_FW_PRIV_EPS, &err))
            return fw_fail("privatizer", NULL, 6);
#if defined(TLM_FW_PRIV_INDEX_BYTES) && TLM_FW_PRIV_INDEX_BYTES > 0
        static uint8_t priv_index[TLM_FW_PRIV_INDEX_BYTES] __attribute__((aligned(16)));
        if (tlm_privatizer_index_bytes(&p) > sizeof priv_index) return fw_fail("privacy index", NULL, 6);
        tlm_privatizer_set_index(&p, priv_index);
#endif
        tlm_chacha_seed(&cc, TLM_FW_PRIV_SEED);
        tlm_rand_init(&rnd, tlm_chacha_fill, &cc);
        for (size_t i = 0; i < n_prompt; i++) {
            const int counted = tlm_priv_in_domain(&p, ids[i]); /* BOS passes through uncounted */
            if (counted) tlm_fw_priv_begin();
            priv_out[i] = tlm_privatize_token(&p, &rnd, ids[i], priv_scratch);
            if (counted) tlm_fw_priv_end();
        }
        put_ids("PRIV", priv_out, n_prompt);
    }
#endif
    const uint32_t steps = TLM_FW_STEPS < TLM_FW_CTX ? TLM_FW_STEPS : TLM_FW_CTX;
#ifdef TLM_FW_CLASSIFY
    (void)steps;
    const int cst = classify(&rt, &m, (const char *)prompt, TLM_FW_PROMPT_LEN);
    if (cst) return cst;
#else
#ifdef TLM_FW_TEMP
    tlm_sampler_init(&fw_sampler, TLM_FW_TEMP, TLM_FW_TOP_P, (uint64_t)TLM_FW_SEED);
#endif
    const uint32_t pos = fw_decode(&rt, &m, ids, n_prompt, steps, out_ids, 1);
    put_ids("IDS", out_ids, pos);
    fw_put_str("TOKENS ");
    fw_put_u32(pos);
    fw_put_str("\n");
#endif
#ifdef TLM_FW_CYCLES
    if (fw_cycles_tokens) { /* measured by the chip itself (never under QEMU, which has no DWT) */
        fw_put_str("CYCLES_PER_TOKEN ");
        fw_put_u32((uint32_t)(fw_cycles_total / fw_cycles_tokens));
        fw_put_str("\n");
    }
#endif
    fw_put_memory((uint32_t)sizeof arena);
    fw_put_str("MODEL ");
    fw_put_u32((uint32_t)FW_MODEL_BYTES);
    fw_put_str("\n");
    fw_flush();
#ifdef TLM_FW_INTERACTIVE
    return chat(&rt, &m, steps);
#else
    return 0;
#endif
}
