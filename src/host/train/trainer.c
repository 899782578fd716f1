#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../core/ops.h"
#include "../classify.h"
#include "../csprng.h"
#include "../eval.h"
#include "../fileio.h"
#include "../image_build.h"
#include "../llama2c.h"
#include "../model_file.h"
#include "../privacy.h"
#include "../proc.h"
#include "../progress.h"
#include "adamw.h"
#include "checkpoint.h"
#include "../nn/layers.h"
#include "corpus.h"
#include "lora.h"
#include "model_grad.h"
#include "rng.h"
#include "trainer.h"

#define DEFAULT_CTX 256u /* the window without --ctx (tlm_train_opts.ctx 0) */

void tlm_train_defaults(tlm_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->hp = (tlm_hparams){.dim = 64, .hidden_dim = 172, .n_layers = 5, .n_heads = 8, .n_kv_heads = 4,
                          .rope_theta = 10000.0f, .norm_eps = 1e-5f, .shared_classifier = 1};
    o->batch = 16;
    o->ctx = 0; /* a fresh model: DEFAULT_CTX; --init: the model's seq_len, at most that */
    o->lr = 1e-3f;
    o->min_lr_frac = 0.1f;
    o->weight_decay = 0.1f;
    o->clip = 1.0f;
    o->seed = 1337;
    o->eval_every = 200;
    o->ckpt_every = 200;
}

/* ---- one step's gradients on all threads ---- */
typedef struct {
    const tlm_params *p;
    tlm_params *g;
    tlm_train_ws *ws;
    const tlm_params *teacher;
    tlm_train_ws *tws;
    float *tprobs, alpha;
    const uint32_t *tokens;
    const uint32_t *targets; /* NULL: the next tokens */
    const uint64_t *starts;
    uint32_t batch, T, stride, first;
    float scale;
    float dropout;
    uint64_t drop_seed;   /* this step's; each window mixes in its index */
    const tlm_privatizer *priv; /* the inputs through it (the targets and the teacher's inputs clean) */
    uint32_t *pin;        /* T privatized inputs */
    float *pscratch;      /* TLM_PRIV_SCRATCH_FLOATS(dim) */
    double loss;
} grad_job;

/* Window b's inputs through the privatizer, with noise from this step's
 * seed and b; the tokens of labels (with --label-loss) stay as they are. */
static const uint32_t *privatized(const grad_job *j, uint32_t b, const uint32_t *w)
{
    tlm_chacha cc;
    tlm_rand rnd;
    tlm_chacha_seed(&cc, (j->drop_seed ^ 0x5851F42D4C957F2Dull) + (uint64_t)b * 0x9E3779B97F4A7C15ull);
    tlm_rand_init(&rnd, tlm_chacha_fill, &cc);
    const uint32_t *lab = j->targets ? j->targets + j->starts[b] : NULL;
    for (uint32_t t = 0; t < j->T; t++)
        j->pin[t] = lab && lab[t] != TLM_NO_TARGET ? w[t] : tlm_privatize_token(j->priv, &rnd, w[t], j->pscratch);
    return j->pin;
}

static void *grad_worker(void *arg)
{
    grad_job *j = arg;
    memset(j->g->data, 0, j->g->n * sizeof(float));
    j->loss = 0;
    for (uint32_t b = j->first; b < j->batch; b += j->stride) {
        const uint32_t *w = j->tokens + j->starts[b], *tg = (j->targets ? j->targets : j->tokens) + j->starts[b] + 1;
        tlm_train_ws_set_dropout(j->ws, j->dropout, j->drop_seed + (uint64_t)b * 0xD1B54A32D192ED03ull);
        const uint32_t *in = j->priv ? privatized(j, b, w) : w; /* what the model reads */
        if (j->teacher) {
            const uint32_t V = j->p->hp.vocab_size;
            tlm_model_logits(j->teacher, w, j->T, j->tws);
            memcpy(j->tprobs, tlm_train_ws_logits(j->tws), (size_t)j->T * V * sizeof(float));
            for (uint32_t t = 0; t < j->T; t++) tlm_softmax(j->tprobs + (size_t)t * V, V);
            j->loss += tlm_model_fwd_bwd_distill(j->p, j->g, in, tg, j->T, j->scale, j->tprobs, j->alpha, j->ws);
        } else {
            j->loss += tlm_model_fwd_bwd(j->p, j->g, in, tg, j->T, j->scale, j->ws);
        }
    }
    return NULL;
}

typedef struct {
    tlm_params p;
    tlm_params avg;       /* the weight average, when the run keeps one (validated and saved) */
    tlm_params pq;        /* QAT: the quantized weights the forward pass uses */
    tlm_params teacher;   /* distillation teacher */
    int qat, distill;
    tlm_quant_cfg qcfg;
    float alpha;
    tlm_train_ws **tws;
    float **tprobs;
    tlm_params *grads;
    tlm_train_ws **ws;
    grad_job *jobs;
    pthread_t *tids;
    int threads;
    const tlm_privatizer *priv; /* inputs privatized (opts priv_mech), with per-thread buffers */
    uint32_t **pin;
    float **pscratch;
} trainer_state;

/* The weights to validate and save: the running average if the run keeps
 * one, else the current weights. */
static const tlm_params *out_weights(trainer_state *s, const tlm_adamw *opt)
{
    if (!opt->ema) return &s->p;
    memcpy(s->avg.data, opt->ema, s->p.n * sizeof(float));
    return &s->avg;
}

/* Gradients of the batch, reduced in thread order (deterministic for a
 * given thread count); returns the mean loss over the batch's targets. */
static double batch_gradients(trainer_state *s, const tlm_corpus *c, const uint64_t *starts, uint32_t batch,
                              uint32_t T, float dropout, uint64_t drop_seed)
{
    double count = (double)batch * T;
    if (c->targets) { /* only some positions are targets: the mean is over them */
        size_t k = 0;
        for (uint32_t b = 0; b < batch; b++)
            for (uint32_t t = 0; t < T; t++) k += c->targets[starts[b] + 1 + t] != TLM_NO_TARGET;
        count = k ? (double)k : 1.0;
    }
    for (int k = 0; k < s->threads; k++)
        s->jobs[k] = (grad_job){.p = s->qat ? &s->pq : &s->p, .g = &s->grads[k], .ws = s->ws[k],
                                .teacher = s->distill ? &s->teacher : NULL, .tws = s->distill ? s->tws[k] : NULL,
                                .tprobs = s->distill ? s->tprobs[k] : NULL, .alpha = s->alpha,
                                .tokens = c->tokens, .targets = c->targets, .starts = starts,
                                .batch = batch, .T = T, .stride = (uint32_t)s->threads, .first = (uint32_t)k,
                                .scale = 1.0f / (float)count, .dropout = dropout,
                                .drop_seed = drop_seed, .priv = s->priv, .pin = s->priv ? s->pin[k] : NULL,
                                .pscratch = s->priv ? s->pscratch[k] : NULL};
    int started = 0;
    for (int k = 1; k < s->threads; k++)
        if (pthread_create(&s->tids[k], NULL, grad_worker, &s->jobs[k]) == 0) started = k;
        else break;
    grad_worker(&s->jobs[0]);
    for (int k = 1; k <= started; k++) pthread_join(s->tids[k], NULL);
    for (int k = started + 1; k < s->threads; k++) grad_worker(&s->jobs[k]); /* threads that failed to start */
    double loss = s->jobs[0].loss;
    for (int k = 1; k < s->threads; k++) {
        for (size_t i = 0; i < s->p.n; i++) s->grads[0].data[i] += s->grads[k].data[i];
        loss += s->jobs[k].loss;
    }
    return loss / count;
}

/* Keeps the rows of a CSV log whose first field is below `step` (resume). */
static void truncate_log(const char *path, uint64_t step)
{
    uint8_t *text;
    size_t n;
    if (tlm_read_file(path, &text, &n, NULL)) return;
    char *out = malloc(n + 1);
    size_t k = 0;
    char *save = NULL;
    int header = 1;
    for (char *line = strtok_r((char *)text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (header || strtoull(line, NULL, 10) < step) k += (size_t)sprintf(out + k, "%s\n", line);
        header = 0;
    }
    tlm_write_file_atomic(path, out, k, NULL);
    free(out);
    free(text);
}

static FILE *open_log(const char *path, const char *header, int resume, uint64_t step)
{
    if (resume) {
        truncate_log(path, step);
        FILE *f = fopen(path, "a");
        if (f) return f;
    }
    FILE *f = fopen(path, "w");
    if (f) fprintf(f, "%s\n", header);
    return f;
}

/* out with each ' doubled, as a gnuplot single-quoted string needs. */
static void gp_quote(const char *s, char *q, size_t cap)
{
    size_t k = 0;
    for (; *s && k + 3 < cap; s++) {
        if (*s == '\'') q[k++] = '\'';
        q[k++] = *s;
    }
    q[k] = 0;
}

static void plot(const char *out_path, int quiet)
{
    char out[2048], gp[10240];
    gp_quote(out_path, out, sizeof out);
    snprintf(gp, sizeof gp,
             "set terminal pngcairo size 1000,560 font 'sans,10'\n"
             "set output '%s.png'\n"
             "set datafile separator ','\n"
             "set title 'tritlm train: %s'\n"
             "set xlabel 'step'\nset ylabel 'cross-entropy (nats)'\nset grid\nset key top right\n"
             "plot '%s.train.csv' using 1:3 with lines lc rgb '#9ecae1' title 'train (batch)', "
             "'' using 1:3 smooth bezier lw 2 lc rgb '#08519c' title 'train (smoothed)', "
             "'%s.val.csv' using 1:2 with linespoints pt 7 lw 2 lc rgb '#d94801' title 'validation'\n",
             out, out, out, out);
    char path[4096];
    snprintf(path, sizeof path, "%s.plot.gp", out_path);
    if (tlm_write_file_atomic(path, gp, strlen(gp), NULL)) return;
    char *argv[] = {"gnuplot", path, NULL};
    if (tlm_run(argv, NULL, 1) != 0) {
        if (!quiet)
            fprintf(stderr, "train: gnuplot failed or is not installed (apt-get install gnuplot-nox); the logs are in %s.*.csv\n",
                    out_path);
    } else if (!quiet) {
        fprintf(stderr, "train: loss curve in %s.png\n", out_path);
    }
}

/* The image training produces: fp32, or the quantized model of a QAT run. */
static tlm_status make_image(const tlm_params *p, const tlm_quant_cfg *q, const tlm_vocab *v, uint32_t bos,
                             uint32_t eos, uint8_t **img, size_t *bytes, tlm_error *err)
{
    return q ? tlm_quant_image(p, q, v, bos, eos, img, bytes, err) : tlm_params_to_image(p, v, bos, eos, img, bytes, err);
}

/* That image opened as a model (*img: free it, also on failure). */
static tlm_status open_image(const tlm_params *p, const tlm_quant_cfg *q, const tlm_vocab *v, uint32_t bos, uint32_t eos,
                             uint8_t **img, tlm_model *m, tlm_error *err)
{
    size_t bytes;
    *img = NULL;
    tlm_status st = make_image(p, q, v, bos, eos, img, &bytes, err);
    return st ? st : tlm_model_open(m, *img, bytes, err);
}

/* Validation: loss and top-1 on the text (with label_only, on its labels
 * and line ends, what --label-loss trains). */
static tlm_status validate(const tlm_params *p, const tlm_quant_cfg *q, const tlm_vocab *v, uint32_t bos, uint32_t eos,
                           const char *text, size_t len, const char *sep, int label_only, const tlm_privatizer *priv,
                           int threads, tlm_eval_result *r, tlm_error *err)
{
    uint8_t *img;
    tlm_model m;
    tlm_status st = open_image(p, q, v, bos, eos, &img, &m, err);
    /* privatized inputs with the same noise at every validation */
    tlm_eval_opts eo = {.threads = threads, .separator = sep, .label_only = label_only, .priv = priv, .priv_seeded = 1,
                        .priv_seed = 1};
    if (!st) st = tlm_eval_text(&m, text, len, &eo, r, err);
    free(img);
    return st;
}

/* The trained model's classification accuracy on --val among the labels
 * of the training text (tlm_classify_text, exact search). */
static tlm_status val_accuracy(const tlm_params *p, const tlm_quant_cfg *q, const tlm_vocab *v, uint32_t bos,
                               uint32_t eos, const tlm_labels *labels, const char *text, size_t len,
                               const tlm_privatizer *priv, int threads, tlm_cls_result *cr, tlm_error *err)
{
    uint8_t *img;
    tlm_model m;
    tlm_status st = open_image(p, q, v, bos, eos, &img, &m, err);
    const tlm_cls_opts co = {.threads = threads, .mode = TLM_CLASSIFY_EXACT, .priv = priv, .priv_seeded = 1, .priv_seed = 1};
    if (!st) st = tlm_classify_text(&m, labels, text, len, &co, cr, err);
    free(img);
    return st;
}

static tlm_status save_model(const char *path, const tlm_params *p, const tlm_quant_cfg *q, const tlm_vocab *v,
                             uint32_t bos, uint32_t eos, tlm_error *err)
{
    uint8_t *img;
    size_t bytes;
    tlm_status st = make_image(p, q, v, bos, eos, &img, &bytes, err);
    if (st) return st;
    st = tlm_write_file_atomic(path, img, bytes, err);
    free(img);
    return st;
}

tlm_status tlm_train(const tlm_train_opts *o, tlm_train_report *rep, tlm_error *err)
{
    trainer_state s;
    memset(&s, 0, sizeof s);
    memset(rep, 0, sizeof *rep);
    tlm_vocab vocab = {0};
    tlm_adamw opt = {0};
    tlm_corpus corpus = {0};
    tlm_ckpt_meta meta = {0};
    tlm_labels labels = {0};
    tlm_model tm;              /* the starting weights' image: tokenizer, and the privatizer's embeddings */
    tlm_privatizer priv;
    void *priv_index = NULL;
    uint8_t *tok_img = NULL, *val_text = NULL;
    size_t val_len = 0;
    uint64_t *starts = NULL;
    FILE *train_log = NULL, *val_log = NULL;
    uint32_t bos = 1, eos = 2;
    tlm_status st = TLM_OK;
    char path[4096];
    const int resume = o->resume != NULL;
    uint8_t *frozen = NULL; /* per tensor, with train_only */
    tlm_lora lora = {0};
    const char *train_only = o->train_only;

    if (!o->out) return tlm_fail(err, TLM_ERR_ARG, "missing -o MODEL.tlm");
    if (!o->data) return tlm_fail(err, TLM_ERR_ARG, "missing --data FILE");
    if (o->init_average && !(o->init && tlm_ckpt_is(o->init)))
        return tlm_fail(err, TLM_ERR_ARG, "--init-average needs --init with a checkpoint (MODEL.tlm.ckpt)");

    /* ---- model, tokenizer and optimizer: from a checkpoint, a model, or fresh ---- */
    if (resume) {
        st = tlm_ckpt_load(o->resume, &meta, &s.p, &vocab, &bos, &eos, &opt, err);
        if (st) goto out;
    } else {
        if (o->init && tlm_ckpt_is(o->init)) {
            /* a checkpoint's weights (a QAT run's latent fp32 weights), with
             * a fresh optimizer and schedule: the next stage of a run */
            tlm_ckpt_meta cm;
            tlm_adamw old = {0};
            st = tlm_ckpt_load(o->init, &cm, &s.p, &vocab, &bos, &eos, &old, err);
            if (!st && o->init_average) {
                /* the average is what the stage's image and validations were
                 * made from; its latest weights can be well behind it */
                if (old.ema)
                    memcpy(s.p.data, old.ema, s.p.n * sizeof(float));
                else
                    st = tlm_fail(err, TLM_ERR_ARG, "%s holds no weight average (its run had no --ema)", o->init);
            }
            tlm_adamw_free(&old);
            free(cm.lora_state); /* (a stage starts without the adapters of the run before) */
            if (st) goto out;
        } else if (o->init) {
            tlm_model_file mf;
            st = tlm_model_file_open(&mf, o->init, err);
            if (st) goto out;
            st = tlm_params_from_model(&s.p, &mf.model, err);
            if (!st) st = tlm_vocab_from_model(&mf.model, &vocab, err);
            /* QAT from a ternary model starts where the model is */
            if (!st && o->qat) tlm_quant_latent_init(&s.p, o->qat);
            bos = mf.model.bos_id;
            eos = mf.model.eos_id;
            tlm_model_file_close(&mf);
            if (st) goto out;
        } else {
            if (!o->tokenizer) {
                st = tlm_fail(err, TLM_ERR_ARG, "a fresh model needs --tokenizer TOK.bin (or --init MODEL.tlm to continue one)");
                goto out;
            }
            st = tlm_llama2c_read_tokenizer(o->tokenizer, 0, &vocab, err);
            if (st) goto out;
            tlm_hparams hp = o->hp;
            hp.vocab_size = vocab.n;
            hp.seq_len = o->ctx ? o->ctx : DEFAULT_CTX;
            st = tlm_params_alloc(&s.p, &hp, err);
            if (st) goto out;
            tlm_params_init(&s.p, o->seed);
        }
        st = tlm_adamw_init(&opt, s.p.n, err);
        if (st) goto out;
        opt.weight_decay = o->weight_decay;
        if (o->ema > 0.0f) {
            st = tlm_adamw_ema_init(&opt, &s.p, o->ema, err);
            if (st) goto out;
        }
        meta = (tlm_ckpt_meta){.batch = o->batch,
                               .ctx = o->ctx ? o->ctx : s.p.hp.seq_len < DEFAULT_CTX ? s.p.hp.seq_len : DEFAULT_CTX,
                               .warmup = o->warmup, .total_steps = o->steps,
                               .seed = o->seed, .lr = o->lr, .min_lr_frac = o->min_lr_frac,
                               .weight_decay = o->weight_decay, .clip = o->clip, .beta1 = opt.beta1, .beta2 = opt.beta2,
                               .dropout = o->dropout};
        tlm_rng r;
        tlm_rng_seed(&r, o->seed * 0x9E3779B97F4A7C15ull + 1u);
        meta.rng_state = r.state;
        if (meta.ctx > s.p.hp.seq_len) {
            st = tlm_fail(err, TLM_ERR_ARG, "--ctx %u exceeds the model's seq_len %u", meta.ctx, s.p.hp.seq_len);
            goto out;
        }
        if (!meta.total_steps && !(o->minutes > 0)) {
            st = tlm_fail(err, TLM_ERR_ARG, "give --steps N or --minutes M");
            goto out;
        }
    }
    /* a resumed run trains what it trained (the CLI refuses --tensors and --lora with --resume) */
    const uint32_t lora_rank = resume ? meta.lora_rank : o->lora_rank;
    const float lora_alpha = resume ? meta.lora_alpha : o->lora_alpha > 0.0f ? o->lora_alpha : (float)o->lora_rank;
    if (resume && o->lora_rank && o->lora_rank != meta.lora_rank) {
        st = tlm_fail(err, TLM_ERR_ARG, "the checkpoint's run trains %s, not adapters of rank %u",
                      meta.lora_rank ? "adapters of another rank" : "no adapters", o->lora_rank);
        goto out;
    }
    if (resume && meta.train_only[0]) { /* the run trains what it trained */
        if (o->train_only && strcmp(o->train_only, meta.train_only)) {
            st = tlm_fail(err, TLM_ERR_ARG, "the checkpoint's run trains '%s', not '%s'", meta.train_only, o->train_only);
            goto out;
        }
        train_only = meta.train_only;
    } else if (resume && o->train_only) {
        st = tlm_fail(err, TLM_ERR_ARG, "the checkpoint's run trains every tensor, not '%s'", o->train_only);
        goto out;
    }
    if (lora_rank) {
        if (o->qat) {
            st = tlm_fail(err, TLM_ERR_ARG, "adapters do not go with --qat (a quantized forward pass needs the whole matrices)");
            goto out;
        }
        if (!train_only) train_only = TLM_LORA_DEFAULT_TENSORS;
    }
    if (train_only) {
        if (!resume) { /* recorded in the checkpoints, so that the run can resume */
            if (strlen(train_only) > TLM_CKPT_SELECT_MAX) {
                st = tlm_fail(err, TLM_ERR_ARG, "--tensors: at most %u characters", TLM_CKPT_SELECT_MAX);
                goto out;
            }
            snprintf(meta.train_only, sizeof meta.train_only, "%s", train_only);
        }
        frozen = malloc(tlm_params_count(&s.p));
        if (!frozen) {
            st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
            goto out;
        }
        size_t trained = 0;
        st = tlm_params_select(&s.p, train_only, frozen, &trained, err);
        if (st) goto out;
        if (!trained) {
            st = tlm_fail(err, TLM_ERR_ARG, "the selection '%s' trains nothing", train_only);
            goto out;
        }
        if (lora_rank) {
            /* adapters on the selected matrices; the selected gains train as
             * they are; every matrix is frozen for AdamW */
            st = tlm_lora_init(&lora, &s.p, frozen, lora_rank, lora_alpha, meta.seed, err);
            if (!st && resume) st = tlm_lora_restore(&lora, meta.lora_state, meta.lora_values, meta.lora_base, err);
            if (st) goto out;
            trained = lora.values;
            for (uint32_t i = 0; i < tlm_params_count(&s.p); i++) {
                tlm_param_tensor t;
                tlm_params_tensor(&s.p, i, &t);
                if (t.rows == 1 && frozen[i]) trained += t.cols;
                frozen[i] = !(frozen[i] && t.rows == 1);
            }
            if (!o->quiet)
                fprintf(stderr, "train: adapters of rank %u (scale %g) on %u matrices of '%s': %zu trained values, the model's %zu frozen\n",
                        lora.rank, (double)lora.scale, lora.n, train_only, trained, s.p.n);
        } else {
            for (uint32_t i = 0; i < tlm_params_count(&s.p); i++) frozen[i] = !frozen[i];
            if (!o->quiet) fprintf(stderr, "train: training %zu of %zu parameters (%s), the rest frozen\n", trained, s.p.n, train_only);
        }
        opt.frozen = frozen;
    }
    s.threads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (s.threads < 1) s.threads = 1;
    if (resume && meta.threads && (int)meta.threads != s.threads && !o->quiet)
        fprintf(stderr, "train: warning: the checkpoint ran on %u threads, this run uses %d: the result will differ from an uninterrupted run\n",
                meta.threads, s.threads);
    meta.threads = (uint32_t)s.threads;
    const uint32_t T = meta.ctx, B = meta.batch;
    if (!resume && o->qat) {
        st = tlm_quant_check(o->qat, &s.p.hp, err);
        if (st) goto out;
        meta.qat = 1;
        meta.qcfg = *o->qat;
    }
    if (!resume) meta.distill = o->teacher ? o->distill : 0.0f;
    s.qat = meta.qat != 0;
    s.qcfg = meta.qcfg;
    s.alpha = meta.distill;
    if (meta.distill > 0.0f && !o->teacher) {
        st = tlm_fail(err, TLM_ERR_ARG, "this run distills from a teacher: give --teacher MODEL.tlm again");
        goto out;
    }
    if (s.qat) {
        st = tlm_params_alloc(&s.pq, &s.p.hp, err);
        if (st) goto out;
    }
    if (o->teacher && meta.distill > 0.0f) {
        tlm_model_file mf;
        st = tlm_model_file_open(&mf, o->teacher, err);
        if (st) goto out;
        if (mf.model.hp.vocab_size != s.p.hp.vocab_size) {
            tlm_model_file_close(&mf);
            st = tlm_fail(err, TLM_ERR_ARG, "teacher %s has %u tokens, the model %u", o->teacher, mf.model.hp.vocab_size,
                          s.p.hp.vocab_size);
            goto out;
        }
        st = tlm_params_from_model(&s.teacher, &mf.model, err);
        tlm_model_file_close(&mf);
        if (st) goto out;
        if (s.teacher.hp.seq_len < T) {
            st = tlm_fail(err, TLM_ERR_ARG, "teacher's seq_len %u is shorter than --ctx %u", s.teacher.hp.seq_len, T);
            goto out;
        }
        s.distill = 1;
    }

    if (opt.ema) {
        st = tlm_params_alloc(&s.avg, &s.p.hp, err);
        if (st) goto out;
    }

    /* ---- data ---- */
    {
        uint8_t *img;
        size_t bytes;
        st = tlm_params_to_image(&s.p, &vocab, bos, eos, &img, &bytes, err);
        if (st) goto out;
        tok_img = img;
        st = tlm_model_open(&tm, tok_img, bytes, err);
        if (!st && o->label_loss && (!o->separator || strcmp(o->separator, "\n")))
            st = tlm_fail(err, TLM_ERR_ARG, "--label-loss needs --split lines (TEXT<TAB>LABEL on each line)");
        if (!st) st = tlm_corpus_load(&corpus, &tm, o->data, o->separator, o->label_loss, err);
        if (st) goto out;
        if (corpus.n < (size_t)T + 2) {
            st = tlm_fail(err, TLM_ERR_ARG, "%s has %llu tokens, fewer than --ctx %u + 2: give more text or a smaller --ctx",
                          o->data, (unsigned long long)corpus.n, T);
            goto out;
        }
        if (o->val) {
            st = tlm_read_text(o->val, &val_text, &val_len, err);
            if (st) goto out;
        }
        if ((o->priv_mech != 0) != (o->priv_epsilon > 0.0f)) {
            st = tlm_fail(err, TLM_ERR_ARG, "--privatize and --epsilon go together");
            goto out;
        }
        if (o->priv_mech) {
            st = tlm_privatizer_init(&priv, &tm, (tlm_mech)o->priv_mech, o->priv_epsilon, err);
            if (!st) st = tlm_privatizer_index_alloc(&priv, &priv_index, err);
            if (st) goto out;
            s.priv = &priv;
        }
        if (o->val && o->label_loss) { /* the label set, and every --val label in it, before any step */
            uint8_t *dt;
            size_t dl;
            st = tlm_read_text(o->data, &dt, &dl, err);
            if (!st) st = tlm_labels_parse((const char *)dt, dl, &labels, err);
            free(dt);
            if (!st) st = tlm_labels_check_lines(&labels, (const char *)val_text, val_len, o->val, err);
            if (st) goto out;
        }
    }

    /* ---- per-thread buffers ---- */
    s.grads = calloc((size_t)s.threads, sizeof *s.grads);
    s.ws = calloc((size_t)s.threads, sizeof *s.ws);
    s.jobs = calloc((size_t)s.threads, sizeof *s.jobs);
    s.tids = calloc((size_t)s.threads, sizeof *s.tids);
    starts = calloc(B, sizeof *starts);
    if (!s.grads || !s.ws || !s.jobs || !s.tids || !starts) {
        st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (s.priv) {
        s.pin = calloc((size_t)s.threads, sizeof *s.pin);
        s.pscratch = calloc((size_t)s.threads, sizeof *s.pscratch);
        for (int k = 0; k < s.threads && s.pin && s.pscratch; k++) {
            s.pin[k] = malloc((size_t)T * sizeof **s.pin);
            s.pscratch[k] = malloc(TLM_PRIV_SCRATCH_FLOATS(s.p.hp.dim) * sizeof **s.pscratch);
            if (!s.pin[k] || !s.pscratch[k]) break;
        }
        if (!s.pin || !s.pscratch || !s.pin[s.threads - 1] || !s.pscratch[s.threads - 1]) {
            st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    for (int k = 0; k < s.threads && !st; k++) {
        st = tlm_params_alloc(&s.grads[k], &s.p.hp, err);
        if (!st) st = tlm_train_ws_new(&s.ws[k], &s.p.hp, T, err);
        if (!st && s.qat) { /* int8 activations into every product the quantizer makes integer */
            tlm_train_ws_set_act_q8(s.ws[k], 0, tlm_quant_type_of(&s.qcfg, TLM_ROLE_CLASSIFIER, 0) != TLM_WTYPE_F32);
            for (uint32_t l = 0; l < s.p.hp.n_layers; l++)
                tlm_train_ws_set_act_q8_layer(s.ws[k], l, tlm_quant_type_of(&s.qcfg, TLM_ROLE_WQ, l) != TLM_WTYPE_F32);
        }
    }
    if (st) goto out;
    if (s.distill) {
        s.tws = calloc((size_t)s.threads, sizeof *s.tws);
        s.tprobs = calloc((size_t)s.threads, sizeof *s.tprobs);
        if (!s.tws || !s.tprobs) {
            st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (int k = 0; k < s.threads && !st; k++) {
            st = tlm_train_ws_new(&s.tws[k], &s.teacher.hp, T, err);
            s.tprobs[k] = malloc((size_t)T * s.p.hp.vocab_size * sizeof(float));
            if (!st && !s.tprobs[k]) st = tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        }
        if (st) goto out;
    }

    snprintf(path, sizeof path, "%s.train.csv", o->out);
    train_log = open_log(path, "step,lr,loss,grad_norm,tokens_per_s,elapsed_s", resume, meta.step);
    snprintf(path, sizeof path, "%s.val.csv", o->out);
    val_log = open_log(path, "step,val_loss,val_top1,val_tokens", resume, meta.step);
    if (!train_log || !val_log) {
        st = tlm_fail(err, TLM_ERR_IO, "cannot write the logs beside %s", o->out);
        goto out;
    }
    rep->params = s.p.n;
    rep->data_tokens = corpus.n;
    if (!o->quiet)
        fprintf(stderr, "train: %llu parameters, %llu training tokens in %llu stories, batch %u x %u, %d threads%s\n",
                (unsigned long long)s.p.n, (unsigned long long)corpus.n, (unsigned long long)corpus.stories, B, T,
                s.threads, resume ? ", resumed" : "");
    if (!o->quiet && corpus.stories == 1 && !o->separator)
        fprintf(stderr, "train: note: the whole file is one story (no <|endoftext|> in it), so windows run across its "
                        "lines; --split lines makes each line a story (utterances, messages)\n");

    /* ---- loop ---- */
    const double t_start = tlm_now() - meta.elapsed;
    double eval_secs = 0, last_line = 0, recent[20] = {0};
    int n_recent = 0;
    tlm_rng rng = {meta.rng_state};
    if (!resume && val_text && o->eval_every) {
        tlm_eval_result r;
        double t0 = tlm_now();
        st = validate(out_weights(&s, &opt), s.qat ? &s.qcfg : NULL, &vocab, bos, eos, (const char *)val_text, val_len, o->separator, o->label_loss, s.priv, s.threads, &r, err);
        if (st) goto out;
        eval_secs = tlm_now() - t0;
        if (!o->quiet && r.stories == 1 && r.truncated)
            fprintf(stderr, "train: note: --val is one story (no <|endoftext|> in it) and validation scores only its "
                            "first %u tokens; --split lines makes each line a story\n", T);
        fprintf(val_log, "0,%.6f,%.6f,%llu\n", r.loss, r.top1, (unsigned long long)r.tokens);
        fflush(val_log);
        rep->val_loss = r.loss;
        rep->val_top1 = r.top1;
    }
    const uint64_t first_step = meta.step;
    const double t_loop = tlm_now();
    while (!meta.total_steps || meta.step < meta.total_steps) {
        uint64_t total = meta.total_steps ? meta.total_steps : (uint64_t)1 << 40;
        uint64_t warm = meta.warmup ? meta.warmup : (meta.total_steps ? (total / 10 < 100 ? total / 10 : 100) : 100);
        if (warm == 0) warm = 1;
        const float lr = tlm_lr_at(meta.step, total, warm, meta.lr, meta.min_lr_frac);
        for (uint32_t b = 0; b < B; b++) starts[b] = tlm_rng_below(&rng, corpus.n - T - 1);
        const double t0 = tlm_now();
        if (s.qat) tlm_quant_fake(&s.p, &s.pq, &s.qcfg); /* straight-through: gradients land on s.p */
        const double loss = batch_gradients(&s, &corpus, starts, B, T, meta.dropout,
                                            (meta.seed ^ 0xA0761D6478BD642Full) * 0x9E3779B97F4A7C15ull + meta.step * 0xE7037ED1A0B428DBull);
        if (lora.n) tlm_lora_backward(&lora, &s.grads[0]); /* the matrices' gradients onto their adapters */
        if (frozen) /* a frozen tensor's gradient neither steps nor counts in the clipping norm */
            for (uint32_t i = 0; i < tlm_params_count(&s.grads[0]); i++)
                if (frozen[i]) {
                    tlm_param_tensor g;
                    tlm_params_tensor(&s.grads[0], i, &g);
                    memset(g.data, 0, (size_t)g.rows * g.cols * sizeof(float));
                }
        const double gnorm = tlm_clip_grad_with(&s.grads[0], lora.grad, lora.values, meta.clip);
        tlm_adamw_step(&opt, &s.p, &s.grads[0], lr);
        if (lora.n) {
            tlm_lora_step(&lora, &opt, lr);
            tlm_lora_apply(&lora, &s.p); /* the effective weights for the next step, the average and the output */
        }
        tlm_adamw_ema_update(&opt, &s.p);
        meta.step++;
        meta.tokens_seen += (uint64_t)B * T;
        const double now = tlm_now(), step_secs = now - t0;
        recent[n_recent++ % 20] = loss;
        fprintf(train_log, "%llu,%.6g,%.6f,%.4f,%.0f,%.2f\n", (unsigned long long)meta.step, lr, loss, gnorm,
                B * T / step_secs, now - t_start);
        if (!isfinite(loss)) {
            st = tlm_fail(err, TLM_ERR_ARG, "loss became %f at step %llu: lower --lr", loss, (unsigned long long)meta.step);
            goto out;
        }
        const uint64_t done = meta.step - first_step;
        if (o->minutes > 0 && !resume && (done == 5 || done == 50 || done == 200 || done == 1000)) {
            /* time budget: the steps that fit, counting periodic validation
             * and the final one; re-estimated a few times early on because
             * step times on a shared machine vary */
            const double per_step = (now - t_loop) / (double)done;
            const double per_eval = o->eval_every ? eval_secs / o->eval_every : 0;
            const double budget = o->minutes * 60.0 - (now - t_start) - eval_secs;
            uint64_t more = budget > 0 ? (uint64_t)(budget / (per_step + per_eval)) : 0;
            meta.total_steps = meta.step + more;
            if (!o->quiet)
                fprintf(stderr, "%strain: %.3f s per step; %llu steps fit in %.1f minutes\n", o->progress ? "\n" : "",
                        per_step, (unsigned long long)meta.total_steps, o->minutes);
        }
        /* never run past the budget: stop early (with the final validation
         * and checkpoint) when the next step would not fit */
        if (o->minutes > 0 && meta.total_steps > meta.step &&
            (now - t_start) + step_secs + eval_secs > o->minutes * 60.0) {
            if (!o->quiet) fprintf(stderr, "%strain: time budget reached at step %llu of %llu\n", o->progress ? "\n" : "",
                                   (unsigned long long)meta.step, (unsigned long long)meta.total_steps);
            meta.total_steps = meta.step;
        }
        const int last = meta.total_steps && meta.step >= meta.total_steps;
        if (val_text && o->eval_every && (meta.step % o->eval_every == 0 || last)) {
            tlm_eval_result r;
            double e0 = tlm_now();
            st = validate(out_weights(&s, &opt), s.qat ? &s.qcfg : NULL, &vocab, bos, eos, (const char *)val_text, val_len, o->separator, o->label_loss, s.priv, s.threads, &r, err);
            if (st) goto out;
            eval_secs = tlm_now() - e0;
            fprintf(val_log, "%llu,%.6f,%.6f,%llu\n", (unsigned long long)meta.step, r.loss, r.top1, (unsigned long long)r.tokens);
            fflush(val_log);
            rep->val_loss = r.loss;
            rep->val_top1 = r.top1;
            if (!o->quiet) fprintf(stderr, "%sstep %llu: validation loss %.4f, top-1 %.4f\n", o->progress ? "\n" : "",
                                   (unsigned long long)meta.step, r.loss, r.top1);
        }
        const int stop = o->stop_after && meta.step >= o->stop_after;
        if ((o->ckpt_every && meta.step % o->ckpt_every == 0) || last || stop) {
            fflush(train_log);
            meta.elapsed = tlm_now() - t_start;
            meta.rng_state = rng.state;
            snprintf(path, sizeof path, "%s.ckpt", o->out);
            st = tlm_ckpt_save(path, &meta, &s.p, &vocab, bos, eos, &opt, &lora, err);
            if (!st) st = save_model(o->out, out_weights(&s, &opt), s.qat ? &s.qcfg : NULL, &vocab, bos, eos, err);
            if (st) goto out;
        }
        if (!o->quiet && (o->progress ? now - last_line > 0.5 : now - last_line > 30.0)) {
            last_line = now;
            const double el = now - t_start;
            const double left = meta.total_steps ? el / meta.step * (double)(meta.total_steps - meta.step) : 0;
            fprintf(stderr, "%sstep %llu/%llu  loss %.4f  lr %.2e  %.0f tok/s  %.0fs elapsed  %.0fs left%s",
                    o->progress ? "\r" : "", (unsigned long long)meta.step, (unsigned long long)meta.total_steps, loss,
                    lr, B * T / step_secs, el, left, o->progress ? "   " : "\n");
        }
        if (stop) break;
    }
    if (!o->quiet && o->progress) fprintf(stderr, "\n");
    if (val_text && o->label_loss && labels.n >= 2) {
        tlm_cls_result cr;
        st = val_accuracy(out_weights(&s, &opt), s.qat ? &s.qcfg : NULL, &vocab, bos, eos, &labels,
                          (const char *)val_text, val_len, s.priv, s.threads, &cr, err);
        if (st) goto out;
        rep->val_classified = cr.n.labelled;
        rep->val_accuracy = cr.n.labelled ? (double)cr.n.correct / (double)cr.n.labelled : 0;
        tlm_cls_label_stats *ls = calloc(labels.n, sizeof *ls);
        st = ls ? tlm_cls_report(&cr, labels.n, ls, NULL, &rep->val_macro_f1, err) : tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        free(ls);
        if (!st && !o->quiet)
            fprintf(stderr, "train: classification accuracy on %s: %.4f (%zu of %zu lines; %zu labels from %s; macro F1 %.4f; %.1f s)\n",
                    o->val, rep->val_accuracy, cr.n.correct, cr.n.labelled, labels.n, o->data, rep->val_macro_f1, cr.seconds);
        tlm_cls_result_free(&cr);
        if (st) goto out;
    }
    rep->steps = meta.step;
    rep->tokens = meta.tokens_seen;
    rep->seconds = tlm_now() - t_start;
    rep->tokens_per_s = rep->seconds > 0 ? (double)meta.tokens_seen / rep->seconds : 0;
    {
        int k = n_recent < 20 ? n_recent : 20;
        for (int i = 0; i < k; i++) rep->train_loss += recent[i] / k;
    }
    fclose(train_log);
    fclose(val_log);
    train_log = val_log = NULL;
    if (!o->no_plot && (!o->stop_after || meta.step < o->stop_after)) plot(o->out, o->quiet);
out:
    if (train_log) fclose(train_log);
    if (val_log) fclose(val_log);
    for (int k = 0; k < s.threads && s.grads; k++) tlm_params_free(&s.grads[k]);
    for (int k = 0; k < s.threads && s.ws; k++) tlm_train_ws_free(s.ws[k]);
    for (int k = 0; k < s.threads && s.tws; k++) tlm_train_ws_free(s.tws[k]);
    for (int k = 0; k < s.threads && s.tprobs; k++) free(s.tprobs[k]);
    free(s.tws);
    free(s.tprobs);
    tlm_params_free(&s.pq);
    tlm_params_free(&s.avg);
    tlm_params_free(&s.teacher);
    for (int k = 0; k < s.threads && s.pin; k++) free(s.pin[k]);
    for (int k = 0; k < s.threads && s.pscratch; k++) free(s.pscratch[k]);
    free(s.pin);
    free(s.pscratch);
    free(priv_index);
    free(s.grads);
    free(s.ws);
    free(s.jobs);
    free(s.tids);
    free(starts);
    free(tok_img);
    free(val_text);
    tlm_labels_free(&labels);
    tlm_corpus_free(&corpus);
    tlm_adamw_free(&opt);
    free(frozen);
    tlm_lora_free(&lora);
    free(meta.lora_state);
    tlm_vocab_free(&vocab);
    tlm_params_free(&s.p);
    return st;
}
