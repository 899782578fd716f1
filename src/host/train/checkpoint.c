#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/le.h"
#include "../fileio.h"
#include "checkpoint.h"

/* Version 2 checksums the whole file (the header with its CRC field read
 * as zero); version 1 checksummed only what follows the header, so a
 * damaged learning rate or step went unnoticed. Version 1 files still load. */
#define CKPT_MAGIC "TLMCKPT2"
#define CKPT_MAGIC_V1 "TLMCKPT1"
#define CKPT_HEADER 256u

enum {
    C_THREADS = 8, C_BATCH = 12, C_CTX = 16, C_WARMUP = 20, C_STEP = 24, C_TOTAL = 32, C_SEED = 40, C_RNG = 48,
    C_LR = 56, C_MINLR = 60, C_WD = 64, C_CLIP = 68, C_B1 = 72, C_B2 = 76, C_ELAPSED = 80, C_TOKENS = 88,
    C_ADAM_T = 96, C_IMAGE_BYTES = 104, C_NPARAMS = 112, C_CRC = 120,
    /* quantization-aware runs */
    C_QAT = 128, C_QMETHOD = 132, C_QSPARSITY = 136, C_QTHRESH = 140, C_QSCALE = 144, C_QPACK = 146,
    C_QEMBED = 148, C_QGROUP = 152, C_DISTILL = 156,
    C_DROPOUT = 160, C_EMA = 164,
    /* a per-layer plan: its length, then one weight type per layer */
    C_QNPLAN = 168, C_QPLAN = 172,
    /* the length of the selection text at the end of the file (0: every tensor trains) */
    C_SELECT = 236,
    C_LORA = 240, C_LORA_ALPHA = 244, /* a run with adapters: their rank and alpha, */
    C_LORA_VALUES = 248                 /* and the floats of their values (u64) */
};
_Static_assert(C_QPLAN + TLM_QUANT_PLAN_MAX <= C_SELECT && C_LORA_VALUES + 8 <= CKPT_HEADER, "the fields must fit the header");

int tlm_ckpt_is(const char *path)
{
    char magic[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    const size_t n = fread(magic, 1, sizeof magic, f);
    fclose(f);
    return n == sizeof magic && (memcmp(magic, CKPT_MAGIC, 8) == 0 || memcmp(magic, CKPT_MAGIC_V1, 8) == 0);
}

/* The checksum of a version 2 file of n bytes. */
static uint32_t ckpt_crc(const uint8_t *buf, size_t n)
{
    static const uint8_t zero[4] = {0};
    uint32_t crc = tlm_crc32(0, buf, C_CRC);
    crc = tlm_crc32(crc, zero, sizeof zero);
    return tlm_crc32(crc, buf + C_CRC + 4, n - C_CRC - 4);
}

void tlm_ckpt_reseal(uint8_t *buf, size_t n)
{
    if (n < CKPT_HEADER || memcmp(buf, CKPT_MAGIC, 8) != 0) return;
    const uint64_t img = tlm_rd64(buf + C_IMAGE_BYTES);
    if (img >= TLM_HEADER_BYTES && img <= n - CKPT_HEADER) tlm_image_reseal(buf + CKPT_HEADER, (size_t)img);
    tlm_wr32(buf + C_CRC, ckpt_crc(buf, n));
}

/* Can the run go on from these settings? (A checkpoint written by tritlm
 * always passes; this stops a damaged or hand-made one from training on
 * NaN learning rates or an impossible schedule.) */
static int ckpt_meta_ok(const tlm_ckpt_meta *m, const tlm_hparams *hp)
{
    return m->batch && m->ctx && m->ctx <= hp->seq_len && m->step <= m->total_steps && m->qat <= 1 &&
           (!m->qat || tlm_quant_check(&m->qcfg, hp, NULL) == TLM_OK) && m->distill >= 0.0f && m->distill <= 1.0f &&
           m->dropout >= 0.0f && m->dropout <= 0.9f && isfinite(m->lr) && m->lr >= 0.0f && m->min_lr_frac >= 0.0f &&
           m->min_lr_frac <= 1.0f && isfinite(m->weight_decay) && m->weight_decay >= 0.0f && isfinite(m->clip) &&
           m->clip >= 0.0f && m->beta1 >= 0.0f && m->beta1 < 1.0f && m->beta2 >= 0.0f && m->beta2 < 1.0f &&
           isfinite(m->elapsed) && m->elapsed >= 0.0;
}

tlm_status tlm_ckpt_save(const char *path, const tlm_ckpt_meta *meta, const tlm_params *p, const tlm_vocab *v,
                         uint32_t bos, uint32_t eos, const tlm_adamw *opt, const tlm_lora *lora, tlm_error *err)
{
    uint8_t *img;
    size_t img_bytes;
    tlm_status st = tlm_params_to_image(p, v, bos, eos, &img, &img_bytes, err);
    if (st) return st;
    const int has_ema = opt->ema != NULL && opt->ema_decay > 0.0f;
    const size_t sel = strlen(meta->train_only);
    if (sel > TLM_CKPT_SELECT_MAX) {
        free(img);
        return tlm_fail(err, TLM_ERR_ARG, "the selection of tensors is longer than %u characters", TLM_CKPT_SELECT_MAX);
    }
    const size_t moments = img_bytes + (has_ema ? 3u : 2u) * p->n * sizeof(float);
    const size_t lv = lora && lora->n ? lora->values : 0u, lb = lora && lora->n ? lora->base_values : 0u;
    const size_t total = CKPT_HEADER + moments + sel + (3u * lv + lb) * sizeof(float);
    uint8_t *buf = calloc(1, total);
    if (!buf) {
        free(img);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory writing a checkpoint");
    }
    memcpy(buf, CKPT_MAGIC, 8);
    tlm_wr32(buf + C_THREADS, meta->threads);
    tlm_wr32(buf + C_BATCH, meta->batch);
    tlm_wr32(buf + C_CTX, meta->ctx);
    tlm_wr32(buf + C_WARMUP, meta->warmup);
    tlm_wr64(buf + C_STEP, meta->step);
    tlm_wr64(buf + C_TOTAL, meta->total_steps);
    tlm_wr64(buf + C_SEED, meta->seed);
    tlm_wr64(buf + C_RNG, meta->rng_state);
    tlm_wrf32(buf + C_LR, meta->lr);
    tlm_wrf32(buf + C_MINLR, meta->min_lr_frac);
    tlm_wrf32(buf + C_WD, meta->weight_decay);
    tlm_wrf32(buf + C_CLIP, meta->clip);
    tlm_wrf32(buf + C_B1, meta->beta1);
    tlm_wrf32(buf + C_B2, meta->beta2);
    memcpy(buf + C_ELAPSED, &meta->elapsed, 8);
    tlm_wr64(buf + C_TOKENS, meta->tokens_seen);
    tlm_wr64(buf + C_ADAM_T, opt->t);
    tlm_wr64(buf + C_IMAGE_BYTES, img_bytes);
    tlm_wr64(buf + C_NPARAMS, p->n);
    tlm_wrf32(buf + C_DROPOUT, meta->dropout);
    tlm_wrf32(buf + C_EMA, has_ema ? opt->ema_decay : 0.0f);
    tlm_wr32(buf + C_QAT, meta->qat);
    if (meta->qat) {
        tlm_wr32(buf + C_QMETHOD, (uint32_t)meta->qcfg.method);
        tlm_wrf32(buf + C_QSPARSITY, meta->qcfg.sparsity);
        tlm_wrf32(buf + C_QTHRESH, meta->qcfg.threshold);
        tlm_wr16(buf + C_QSCALE, meta->qcfg.scale_kind);
        tlm_wr16(buf + C_QPACK, meta->qcfg.pack);
        tlm_wr16(buf + C_QEMBED, meta->qcfg.embed);
        tlm_wr32(buf + C_QGROUP, meta->qcfg.group);
        tlm_wrf32(buf + C_DISTILL, meta->distill);
        tlm_wr32(buf + C_QNPLAN, meta->qcfg.n_plan);
        memcpy(buf + C_QPLAN, meta->qcfg.plan, meta->qcfg.n_plan);
    }
    memcpy(buf + CKPT_HEADER, img, img_bytes);
    memcpy(buf + CKPT_HEADER + img_bytes, opt->m, p->n * sizeof(float));
    memcpy(buf + CKPT_HEADER + img_bytes + p->n * sizeof(float), opt->v, p->n * sizeof(float));
    if (has_ema) memcpy(buf + CKPT_HEADER + img_bytes + 2u * p->n * sizeof(float), opt->ema, p->n * sizeof(float));
    tlm_wr32(buf + C_SELECT, (uint32_t)sel);
    tlm_wr32(buf + C_LORA, lv ? lora->rank : 0u);
    tlm_wrf32(buf + C_LORA_ALPHA, lv ? lora->scale * (float)lora->rank : 0.0f);
    tlm_wr64(buf + C_LORA_VALUES, lv);
    if (lv) {
        uint8_t *at = buf + CKPT_HEADER + moments + sel;
        memcpy(at, lora->data, lv * sizeof(float));
        memcpy(at + lv * sizeof(float), lora->m, lv * sizeof(float));
        memcpy(at + 2u * lv * sizeof(float), lora->v, lv * sizeof(float));
        memcpy(at + 3u * lv * sizeof(float), lora->base, lb * sizeof(float));
    }
    memcpy(buf + CKPT_HEADER + moments, meta->train_only, sel);
    tlm_wr32(buf + C_CRC, ckpt_crc(buf, total));
    st = tlm_write_file_atomic(path, buf, total, err);
    free(buf);
    free(img);
    return st;
}

tlm_status tlm_ckpt_load(const char *path, tlm_ckpt_meta *meta, tlm_params *p, tlm_vocab *v, uint32_t *bos,
                         uint32_t *eos, tlm_adamw *opt, tlm_error *err)
{
    meta->lora_state = NULL; /* (the caller frees it, whatever the outcome) */
    uint8_t *buf;
    size_t n;
    tlm_status st = tlm_read_file(path, &buf, &n, err);
    if (st) return st;
    uint8_t *img = NULL;
    const int v1 = n >= CKPT_HEADER && memcmp(buf, CKPT_MAGIC_V1, 8) == 0;
    if (n < CKPT_HEADER || (!v1 && memcmp(buf, CKPT_MAGIC, 8) != 0)) {
        st = tlm_fail(err, TLM_ERR_MAGIC, "%s is not a tritlm training checkpoint", path);
        goto out;
    }
    const uint64_t img_bytes = tlm_rd64(buf + C_IMAGE_BYTES), np = tlm_rd64(buf + C_NPARAMS);
    const float ema_decay = tlm_rdf32(buf + C_EMA);
    const int has_ema = ema_decay > 0.0f;
    if (!(ema_decay >= 0.0f && ema_decay < 1.0f)) {
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: inconsistent training state in the checkpoint", path);
        goto out;
    }
    const uint32_t sel = v1 ? 0u : tlm_rd32(buf + C_SELECT);
    const uint64_t lv = v1 ? 0u : tlm_rd64(buf + C_LORA_VALUES);
    const uint64_t fixed = CKPT_HEADER + img_bytes + (has_ema ? 12u : 8u) * np + sel;
    /* what follows the selection: the adapters' values, m and v, then their base (at least one float) */
    if (img_bytes > n || np > n / 8u || sel > TLM_CKPT_SELECT_MAX || lv > n / 12u || fixed > n ||
        (lv ? (n - fixed) % 4u || (n - fixed) / 4u <= 3u * lv : fixed != n)) {
        st = tlm_fail(err, TLM_ERR_TRUNCATED, "%s: checkpoint size does not match its header (truncated?)", path);
        goto out;
    }
    if ((v1 ? tlm_crc32(0, buf + CKPT_HEADER, n - CKPT_HEADER) : ckpt_crc(buf, n)) != tlm_rd32(buf + C_CRC)) {
        st = tlm_fail(err, TLM_ERR_CHECKSUM, "%s: checkpoint checksum mismatch: the file is damaged", path);
        goto out;
    }
    if (posix_memalign((void **)&img, TLM_ALIGN, img_bytes ? img_bytes : 1)) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(img, buf + CKPT_HEADER, img_bytes);
    tlm_model m;
    st = tlm_model_open(&m, img, img_bytes, err);
    if (st) goto out;
    st = tlm_params_from_model(p, &m, err);
    if (st) goto out;
    if (p->n != np) {
        tlm_params_free(p);
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: optimizer state does not match the model", path);
        goto out;
    }
    st = tlm_vocab_from_model(&m, v, err);
    if (st) {
        tlm_params_free(p);
        goto out;
    }
    *bos = m.bos_id;
    *eos = m.eos_id;
    st = tlm_adamw_init(opt, np, err);
    if (st) {
        tlm_params_free(p);
        tlm_vocab_free(v);
        goto out;
    }
    memcpy(opt->m, buf + CKPT_HEADER + img_bytes, np * 4u);
    memcpy(opt->v, buf + CKPT_HEADER + img_bytes + np * 4u, np * 4u);
    if (has_ema) {
        opt->ema = malloc(np * 4u);
        if (!opt->ema) {
            tlm_params_free(p);
            tlm_vocab_free(v);
            tlm_adamw_free(opt);
            st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
            goto out;
        }
        memcpy(opt->ema, buf + CKPT_HEADER + img_bytes + 2u * np * 4u, np * 4u);
        opt->ema_decay = ema_decay;
    }
    opt->t = tlm_rd64(buf + C_ADAM_T);
    meta->threads = tlm_rd32(buf + C_THREADS);
    meta->batch = tlm_rd32(buf + C_BATCH);
    meta->ctx = tlm_rd32(buf + C_CTX);
    meta->warmup = tlm_rd32(buf + C_WARMUP);
    meta->step = tlm_rd64(buf + C_STEP);
    meta->total_steps = tlm_rd64(buf + C_TOTAL);
    meta->seed = tlm_rd64(buf + C_SEED);
    meta->rng_state = tlm_rd64(buf + C_RNG);
    meta->lr = tlm_rdf32(buf + C_LR);
    meta->min_lr_frac = tlm_rdf32(buf + C_MINLR);
    meta->weight_decay = tlm_rdf32(buf + C_WD);
    meta->clip = tlm_rdf32(buf + C_CLIP);
    meta->beta1 = tlm_rdf32(buf + C_B1);
    meta->beta2 = tlm_rdf32(buf + C_B2);
    memcpy(&meta->elapsed, buf + C_ELAPSED, 8);
    meta->tokens_seen = tlm_rd64(buf + C_TOKENS);
    meta->qat = tlm_rd32(buf + C_QAT);
    tlm_quant_defaults(&meta->qcfg);
    meta->distill = 0.0f;
    meta->dropout = tlm_rdf32(buf + C_DROPOUT);
    meta->lora_rank = v1 ? 0u : tlm_rd32(buf + C_LORA);
    memcpy(meta->train_only, buf + fixed - sel, sel);
    meta->train_only[sel] = 0;
    for (uint32_t i = 0; i < sel; i++)
        if (meta->train_only[i] < 0x20 || meta->train_only[i] > 0x7e) {
            st = tlm_fail(err, TLM_ERR_FORMAT, "%s: the recorded selection of tensors is not text", path);
            break;
        }
    meta->lora_alpha = v1 ? 0.0f : tlm_rdf32(buf + C_LORA_ALPHA);
    meta->lora_values = meta->lora_base = 0;
    if (!st && (!lv != !meta->lora_rank || (lv && !(meta->lora_alpha > 0.0f && meta->lora_alpha < 1e30f))))
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: inconsistent adapters in the checkpoint", path);
    if (!st && lv) {
        meta->lora_values = (size_t)lv;
        meta->lora_base = (size_t)((n - fixed) / 4u - 3u * lv);
        meta->lora_state = malloc((size_t)(n - fixed));
        if (!meta->lora_state) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        else memcpy(meta->lora_state, buf + fixed, (size_t)(n - fixed));
    }
    if (st) {
        tlm_params_free(p);
        tlm_vocab_free(v);
        tlm_adamw_free(opt);
        goto out;
    }
    if (meta->qat) {
        meta->qcfg.method = (tlm_qmethod)tlm_rd32(buf + C_QMETHOD);
        meta->qcfg.sparsity = tlm_rdf32(buf + C_QSPARSITY);
        meta->qcfg.threshold = tlm_rdf32(buf + C_QTHRESH);
        meta->qcfg.scale_kind = tlm_rd16(buf + C_QSCALE);
        meta->qcfg.pack = tlm_rd16(buf + C_QPACK);
        meta->qcfg.embed = tlm_rd16(buf + C_QEMBED);
        meta->qcfg.group = tlm_rd32(buf + C_QGROUP);
        meta->distill = tlm_rdf32(buf + C_DISTILL);
        const uint32_t np = tlm_rd32(buf + C_QNPLAN);
        /* a plan too long for the header is refused by tlm_quant_check below */
        meta->qcfg.n_plan = (uint16_t)(np > TLM_QUANT_PLAN_MAX ? 0xFFFFu : np);
        if (np <= TLM_QUANT_PLAN_MAX) memcpy(meta->qcfg.plan, buf + C_QPLAN, np);
    }
    opt->beta1 = meta->beta1;
    opt->beta2 = meta->beta2;
    opt->weight_decay = meta->weight_decay;
    if (!ckpt_meta_ok(meta, &p->hp)) {
        free(meta->lora_state);
        meta->lora_state = NULL;
        tlm_params_free(p);
        tlm_vocab_free(v);
        tlm_adamw_free(opt);
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: inconsistent training state in the checkpoint", path);
    }
out:
    free(img);
    free(buf);
    return st;
}
