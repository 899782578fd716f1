/* libFuzzer harness for the files the host tool reads from users: training
 * checkpoints (--resume, --init), llama2.c checkpoints and tokenizers
 * (import, train --tokenizer) and model images expanded to fp32 for
 * training and quantization, text (the tokenizer must give any bytes
 * back, and so must one trained on them), redaction, federated update messages (what a
 * server reads from devices), key files and rosters, and sealed updates
 * and signed models as a broker could forge them (signed models also
 * through the device core's check). The first byte picks
 * the reader (modulo 10;
 * for tokenizers, its quotient is the token count asked for); the rest is
 * the file, with its checksums resealed so that the structural checks are
 * what is tested. Each reader must refuse with a message or succeed, and a
 * success must hold up: an imported image opens in the device core, a
 * tokenizer written back reads back the same, a checkpoint's parameters
 * match its model. Build and run: scripts/fuzz.sh BUILD OUT SECONDS host. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/core/le.h"
#include "../src/host/bpe_train.h"
#include "../src/host/fedsec.h"
#include "../src/host/secagg.h"
#include "../src/host/image_build.h"
#include "../src/host/llama2c.h"
#include "../src/host/train/checkpoint.h"
#include "../src/host/train/params.h"
#include "tritlm/dp.h"
#include "tritlm/fed.h"
#include "tritlm/model.h"
#include "tritlm/runtime.h"
#include "tritlm/seal.h"
#include "tritlm/tokenizer.h"

enum { READ_CKPT, READ_LLAMA2C, READ_TOKENIZER, READ_IMAGE, READ_TEXT, TRAIN_TOKENIZER, REDACT, READ_FED, READ_KEYS,
       OPEN_SEALED, READERS };

static char dir[64];
static const char *const names[] = {"f.ckpt", "c.bin", "t.bin", "tok.bin", "again.bin", "k.txt", "k2.txt"};

static void remove_dir(void)
{
    char p[96];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* A file of the process's own directory (one of names). */
static const char *path_of(const char *name)
{
    static char p[2][96];
    static int k;
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/tlm-fuzz-host-XXXXXX");
        if (!mkdtemp(dir)) abort();
        atexit(remove_dir);
    }
    k ^= 1;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static void put(const char *path, const uint8_t *d, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(d, 1, n, f) != n) abort();
    fclose(f);
}

static void refused(tlm_status st, const tlm_error *err)
{
    if (st != TLM_OK && !err->msg[0]) abort(); /* a refusal must say why */
}

static void read_ckpt(uint8_t *b, size_t n)
{
    tlm_ckpt_reseal(b, n);
    const char *path = path_of("f.ckpt");
    put(path, b, n);
    tlm_ckpt_meta meta;
    tlm_params p;
    tlm_vocab v;
    tlm_adamw opt;
    uint32_t bos, eos;
    tlm_error err = {0};
    tlm_status st = tlm_ckpt_load(path, &meta, &p, &v, &bos, &eos, &opt, &err);
    refused(st, &err);
    if (st) return;
    if (v.n != p.hp.vocab_size || bos >= v.n || eos >= v.n || meta.ctx > p.hp.seq_len) abort();
    if (!meta.lora_state != !meta.lora_rank) abort();
    free(meta.lora_state);
    tlm_params_free(&p);
    tlm_vocab_free(&v);
    tlm_adamw_free(&opt);
}

static void read_llama2c(const uint8_t *b, size_t n)
{
    if (n < 4) return;
    size_t split = tlm_rd32(b);
    b += 4, n -= 4;
    if (split > n) split = n;
    const char *ck = path_of("c.bin"), *tok = path_of("t.bin");
    put(ck, b, split);
    put(tok, b + split, n - split);
    uint8_t *image = NULL;
    size_t bytes = 0;
    tlm_error err = {0};
    tlm_status st = tlm_llama2c_import(ck, tok, &image, &bytes, &err);
    refused(st, &err);
    if (st) return;
    /* what import writes, the device core must accept */
    uint8_t *aligned = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!aligned) abort();
    memcpy(aligned, image, bytes);
    tlm_model m;
    if (tlm_model_open(&m, aligned, bytes, &err) != TLM_OK) abort();
    free(aligned);
    free(image);
}

/* want: tokens to read (0: as many as the file holds) */
static void read_tokenizer(const uint8_t *b, size_t n, uint32_t want)
{
    const char *path = path_of("tok.bin");
    put(path, b, n);
    tlm_vocab v, w;
    tlm_error err = {0};
    tlm_status st = tlm_llama2c_read_tokenizer(path, want, &v, &err);
    refused(st, &err);
    if (st) return;
    /* written back and read again, it is the same vocabulary */
    uint8_t *out;
    size_t bytes;
    if (tlm_vocab_to_llama2c(&v, &out, &bytes, &err) != TLM_OK) abort();
    const char *again = path_of("again.bin");
    put(again, out, bytes);
    free(out);
    if (tlm_llama2c_read_tokenizer(again, v.n, &w, &err) != TLM_OK || w.n != v.n) abort();
    for (uint32_t i = 0; i < v.n; i++)
        if (w.lens[i] != v.lens[i] || memcmp(w.strs[i], v.strs[i], v.lens[i]) || w.scores[i] != v.scores[i]) abort();
    tlm_vocab_free(&v);
    tlm_vocab_free(&w);
}

static void read_image(const uint8_t *b, size_t n)
{
    if (n < TLM_HEADER_BYTES) return;
    uint8_t *img = aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (!img) abort();
    memcpy(img, b, n);
    tlm_image_reseal(img, n);
    tlm_model m;
    tlm_error err = {0};
    if (tlm_model_open(&m, img, n, &err) == TLM_OK) {
        tlm_params p;
        tlm_vocab v;
        tlm_status st = tlm_params_from_model(&p, &m, &err);
        refused(st, &err);
        if (st == TLM_OK) tlm_params_free(&p);
        st = tlm_vocab_from_model(&m, &v, &err);
        refused(st, &err);
        if (st == TLM_OK) {
            if (v.n != m.hp.vocab_size) abort();
            tlm_vocab_free(&v);
        }
    }
    free(img);
}

/* Any bytes encode, and decode back to themselves (the byte-fallback
 * tokenizer loses nothing). */
static void round_trip(const tlm_model *m, const uint8_t *text, size_t n)
{
    const size_t cap = TLM_ENCODE_MAX_IDS(n);
    uint32_t *ids = malloc(cap * sizeof *ids);
    int32_t *scratch = malloc(TLM_ENCODE_SCRATCH(cap) * sizeof *scratch);
    uint8_t *back = malloc(n + 1);
    if (!ids || !scratch || !back) abort();
    size_t got = 0, k = 0;
    if (tlm_encode(m, (const char *)text, n, TLM_ENCODE_BOS, ids, cap, scratch, &got) != TLM_OK) abort();
    if (got < 1 || ids[0] != m->bos_id) abort();
    for (size_t i = 1; i < got; i++) {
        if (ids[i] >= m->hp.vocab_size) abort();
        const uint8_t *piece;
        const size_t len = tlm_decode_piece(m, ids[i - 1], ids[i], &piece);
        if (k + len > n) abort();
        memcpy(back + k, piece, len);
        k += len;
    }
    if (k != n || memcmp(back, text, n)) abort();
    free(ids);
    free(scratch);
    free(back);
}

/* The model whose tokenizer encodes the text of READ_TEXT: TLM_FUZZ_MODEL. */
static const tlm_model *text_model(void)
{
    static tlm_model m;
    static uint8_t *img;
    if (img) return &m;
    const char *path = getenv("TLM_FUZZ_MODEL");
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) {
        fprintf(stderr, "fuzz_host: set TLM_FUZZ_MODEL to a model image\n");
        abort();
    }
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    img = aligned_alloc(64, ((size_t)n + 63) & ~(size_t)63);
    if (!img || fread(img, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
    tlm_error err;
    if (tlm_model_open(&m, img, (size_t)n, &err) != TLM_OK) {
        fprintf(stderr, "fuzz_host: %s\n", err.msg);
        abort();
    }
    return &m;
}

/* A tokenizer trained on the text (stories split where the text has
 * <|endoftext|>) must give the whole text back. */
static void train_tokenizer(const uint8_t *text, size_t n)
{
    if (n > 8192) return;
    tlm_bpe_opts o = {.vocab_size = 300, .char_coverage = 0.9995};
    const char *t = (const char *)text;
    tlm_vocab v;
    tlm_error err = {0};
    tlm_status st = tlm_bpe_train(&t, &n, 1, &o, &v, &err);
    refused(st, &err);
    if (st) return;
    tlm_hparams hp = {.dim = 8, .hidden_dim = 8, .n_layers = 1, .n_heads = 1, .n_kv_heads = 1, .vocab_size = v.n,
                      .seq_len = 8, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .shared_classifier = 1};
    tlm_params p;
    if (tlm_params_alloc(&p, &hp, &err) != TLM_OK) abort();
    uint8_t *image, *aligned;
    size_t bytes;
    if (tlm_params_to_image(&p, &v, 1, 2, &image, &bytes, &err) != TLM_OK) abort();
    aligned = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!aligned) abort();
    memcpy(aligned, image, bytes);
    tlm_model m;
    if (tlm_model_open(&m, aligned, bytes, &err) != TLM_OK) abort();
    round_trip(&m, text, n);
    free(aligned);
    free(image);
    tlm_params_free(&p);
    tlm_vocab_free(&v);
}

/* Redaction fits the documented bound, leaves no run of two digits, and
 * redacting its output again changes nothing. */
static void redact(const uint8_t *text, size_t n)
{
    if (n > 8192) return;
    const size_t cap = 4 * n + 16;
    char *out = malloc(cap), *again = malloc(cap);
    if (!out || !again) abort();
    const size_t k = tlm_redact((const char *)text, n, out, cap);
    if (k > cap) abort();
    for (size_t i = 1; i < k; i++)
        if (out[i - 1] >= '0' && out[i - 1] <= '9' && out[i] >= '0' && out[i] <= '9') abort();
    if (tlm_redact(out, k, again, 4 * k + 16 <= cap ? 4 * k + 16 : cap) != k || memcmp(out, again, k)) abort();
    /* a buffer one byte short is refused, not overrun */
    if (k && tlm_redact((const char *)text, n, out, k - 1) != (size_t)-1) abort();
    free(out);
    free(again);
}

static const tlm_model *text_model(void);

/* The same bytes as an adapter of TLM_FUZZ_MODEL (base id set, checksum
 * resealed): refused with a message, or attached and decoded with. */
static void use_adapter(uint8_t *b, size_t n)
{
    if (n < TLM_FED_HEADER_BYTES) return;
    const tlm_model *m = text_model();
    tlm_wr32(b + 24, tlm_fed_model_id(m));
    memset(b + 12, 0, 4);
    tlm_wr32(b + 12, tlm_crc32(0, b, n));
    tlm_error err = {0};
    const tlm_status st = tlm_runtime_adapter_check(m, b, n, &err);
    refused(st, &err);
    if (st != TLM_OK) return;
    const uint32_t flags = TLM_RT_ADAPTER | (b[n / 2] & 1u ? TLM_RT_KV_INT8 : 0u);
    const size_t ab = tlm_runtime_arena_size_flags(m, 4, flags);
    void *arena = malloc(ab);
    tlm_runtime rt;
    if (!arena || tlm_runtime_init_flags(&rt, m, 4, flags, arena, ab, NULL) ||
        tlm_runtime_use_adapter(&rt, b, n, NULL))
        abort();
    for (uint32_t t = 0; t < 4; t++) {
        float *lg;
        if (tlm_runtime_forward(&rt, (t * 97u + b[t % n]) % m->hp.vocab_size, t, &lg)) abort();
    }
    free(arena);
}

/* A federated update (checksum resealed): refused with a message, or every
 * entry decodes to finite values within its scale, and an fp32 entry
 * written again gives the same bytes. */
static void read_fed_entries(uint8_t *b, size_t n)
{
    if (n >= TLM_FED_HEADER_BYTES) {
        memset(b + 12, 0, 4);
        tlm_wr32(b + 12, tlm_crc32(0, b, n));
    }
    tlm_fed_info info;
    tlm_error err = {0};
    const tlm_status st = tlm_fed_validate(b, n, NULL, &info, &err);
    refused(st, &err);
    if (st != TLM_OK) return;
    for (uint32_t i = 0; i < info.n_entries; i++) {
        tlm_fed_entry e;
        tlm_fed_entry_at(b, i, &e);
        float *v = malloc((size_t)e.count * sizeof *v);
        if (!v) abort();
        tlm_fed_entry_decode(&e, v);
        float sb;
        memcpy(&sb, e.data, sizeof sb); /* a low-rank entry's B scale (little-endian host) */
        const float bound = e.enc == TLM_FED_I8       ? 127.0f * e.scale
                            : e.enc == TLM_FED_MASKED ? 2147483648.0f * e.scale
                            : e.enc == TLM_FED_LOWRANK_I8 ? (float)(4112895.0 * sb * e.scale)
                                                      : e.scale;
        for (uint32_t k = 0; k < e.count; k++)
            if (!(v[k] == v[k]) || (e.enc != TLM_FED_F32 && !(fabsf(v[k]) <= bound))) abort();
        if (e.enc == TLM_FED_F32) {
            const size_t eb = tlm_fed_entry_bytes(TLM_FED_F32, e.count);
            uint8_t *again = malloc(TLM_FED_HEADER_BYTES + eb);
            tlm_fed_writer w;
            tlm_fed_header h = {0, 0, 0, 0};
            if (!again || tlm_fed_begin(&w, again, TLM_FED_HEADER_BYTES + eb, &h, NULL) ||
                tlm_fed_add(&w, e.role, e.layer, TLM_FED_F32, v, e.count, NULL, NULL) ||
                memcmp(again + TLM_FED_HEADER_BYTES, e.data - TLM_FED_ENTRY_BYTES, eb) != 0)
                abort();
            free(again);
        }
        free(v);
    }
}

/* An update: its entries, then the same bytes as an adapter. */
static void read_fed(uint8_t *b, size_t n)
{
    read_fed_entries(b, n);
    use_adapter(b, n);
}

/* Key files and rosters as text: each reader refuses with a message or
 * succeeds; an enrolled key written out again reads back the same, and a
 * roster written out from what was read reads back the same. */
static void read_keys(const uint8_t *b, size_t n)
{
    if (n > 65536) return;
    char path[96], again[96];
    snprintf(path, sizeof path, "%s/k.txt", dir);
    snprintf(again, sizeof again, "%s/k2.txt", dir);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f)) abort();
    tlm_error err = {0};
    tlm_fed_pub p, p2;
    tlm_status st = tlm_fed_pub_read(path, &p, &err);
    refused(st, &err);
    tlm_fed_keys k;
    st = tlm_fed_keys_read(path, &k, &err);
    refused(st, &err);
    tlm_fed_roster r, r2;
    st = tlm_fed_roster_read(path, &r, &err);
    refused(st, &err);
    if (st != TLM_OK) return;
    f = fopen(again, "wb");
    if (!f) abort();
    for (uint32_t i = 0; i < r.n; i++) {
        char t[TLM_FED_PUB_TEXT];
        tlm_fed_pub_text(&r.pub[i], t);
        fprintf(f, "%u %s\n", r.client[i], t);
        if (i == 0) {
            FILE *g = fopen(path, "wb");
            if (!g || fprintf(g, "%s\n", t) < 0 || fclose(g)) abort();
        }
    }
    if (fclose(f)) abort();
    if (tlm_fed_roster_read(again, &r2, NULL) != TLM_OK || r2.n != r.n ||
        memcmp(r2.client, r.client, r.n * sizeof *r.client) || memcmp(r2.pub, r.pub, r.n * sizeof *r.pub))
        abort();
    if (tlm_fed_pub_read(path, &p2, NULL) != TLM_OK || memcmp(&p2, &r.pub[0], sizeof p2)) abort();
    (void)p;
    tlm_fed_roster_free(&r);
    tlm_fed_roster_free(&r2);
}

/* Bytes arriving where a sealed update or a signed model is expected: a
 * forger without the keys gets a refusal with a message, never an update
 * or a model. */
static void open_sealed(const uint8_t *b, size_t n)
{
    static tlm_fed_keys server, device;
    static tlm_fed_roster roster;
    static int ready;
    if (!ready) {
        if (tlm_fed_keygen(&server, NULL) || tlm_fed_keygen(&device, NULL)) abort();
        roster.n = 1;
        roster.client = malloc(sizeof *roster.client);
        roster.pub = malloc(sizeof *roster.pub);
        if (!roster.client || !roster.pub) abort();
        roster.client[0] = 7;
        roster.pub[0] = device.pub;
        ready = 1;
    }
    uint8_t *msg = NULL;
    size_t msg_n = 0;
    uint32_t client = 0, round = 0;
    tlm_error err = {0};
    if (tlm_fed_unseal(&server, &roster, b, n, &msg, &msg_n, &client, &err) == TLM_OK) abort();
    if (!err.msg[0] || msg) abort();
    const uint8_t *img = NULL;
    size_t img_n = 0;
    err.msg[0] = 0;
    if (tlm_fed_verify_model(&server.pub, b, n, &img, &img_n, &round, &err) == TLM_OK) abort();
    if (!err.msg[0]) abort();
    err.msg[0] = 0; /* and by the device core's own check (tritlm/seal.h), as a device reads it */
    if (tlm_seal_verify_model(b, n, server.pub.sign_pk, &img, &img_n, &round, &err) == TLM_OK) abort();
    if (!err.msg[0]) abort();
    /* a forged request for reveals is refused; a reveal is parsed or refused, and parsed holds its count */
    uint32_t base = 0, nd = 0, *dropped = NULL;
    err.msg[0] = 0;
    if (tlm_secagg_request_verify(&server.pub, b, n, &round, &base, &dropped, &nd, &err) == TLM_OK || !err.msg[0]) abort();
    tlm_secagg_reveal r;
    err.msg[0] = 0;
    if (tlm_secagg_reveal_parse(b, n, &r, &err) == TLM_OK) {
        if (n != 56u + 36u * (size_t)r.n_dropped) abort();
        tlm_secagg_reveal_free(&r);
    } else if (!err.msg[0]) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (4u << 20)) return 0;
    uint8_t *b = malloc(size);
    if (!b) return 0;
    memcpy(b, data + 1, size - 1);
    switch (data[0] % READERS) {
    case READ_CKPT: read_ckpt(b, size - 1); break;
    case READ_LLAMA2C: read_llama2c(b, size - 1); break;
    case READ_TOKENIZER: read_tokenizer(b, size - 1, data[0] / READERS); break;
    case READ_IMAGE: read_image(b, size - 1); break;
    case READ_TEXT:
        if (size - 1 <= 8192) round_trip(text_model(), b, size - 1);
        break;
    case TRAIN_TOKENIZER: train_tokenizer(b, size - 1); break;
    case READ_FED: read_fed(b, size - 1); break;
    case READ_KEYS: read_keys(b, size - 1); break;
    case OPEN_SEALED: open_sealed(b, size - 1); break;
    default: redact(b, size - 1); break;
    }
    free(b);
    return 0;
}
