/* Training end to end on small data: a tiny model memorizes a tiny corpus,
 * runs are deterministic, a resumed run ends bit-identical to an
 * uninterrupted one, a next stage starts from a checkpoint's latest weights
 * or (--init-average) from its weight average, a checkpoint write killed
 * midway leaves the previous checkpoint loadable, and the tokenizer trainer
 * is deterministic and lossless. */
#define _GNU_SOURCE
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "../src/host/bpe_train.h"
#include "../src/host/eval.h"
#include "../src/host/model_file.h"
#include "../src/host/quant.h"
#include "../src/host/fileio.h"
#include "../src/host/llama2c.h"
#include "../src/host/stories.h"
#include "../src/host/train/checkpoint.h"
#include "../src/host/train/trainer.h"
#include "testutil.h"
#include "tritlm/tokenizer.h"

static const char corpus_text[] =
    "Tom had a red ball. He liked to play with it in the sun.\n<|endoftext|>\n"
    "Sue saw a big dog. The dog was happy and ran to her.\n<|endoftext|>\n"
    "One day, a cat sat on a mat. It was warm and the cat slept.\n<|endoftext|>\n";

static char *corpus_path, *tok_path;

static void write_text(const char *path, const char *s)
{
    assert_int_equal(tlm_write_file_atomic(path, s, strlen(s), NULL), TLM_OK);
}

static int setup(void **state)
{
    (void)state;
    corpus_path = strdup(tu_tmp("corpus.txt"));
    tok_path = strdup(tu_tmp("tok.bin"));
    write_text(corpus_path, corpus_text);
    const char *texts[1] = {corpus_text};
    size_t lens[1] = {strlen(corpus_text)};
    tlm_bpe_opts bo = {.vocab_size = 300, .char_coverage = 1.0};
    tlm_vocab v;
    if (tlm_bpe_train(texts, lens, 1, &bo, &v, NULL)) return -1;
    uint8_t *bin;
    size_t n;
    if (tlm_vocab_to_llama2c(&v, &bin, &n, NULL) || tlm_write_file_atomic(tok_path, bin, n, NULL)) return -1;
    free(bin);
    tlm_vocab_free(&v);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(corpus_path);
    free(tok_path);
    return 0;
}

static tlm_train_opts tiny_opts(const char *out)
{
    tlm_train_opts o;
    tlm_train_defaults(&o);
    o.hp.dim = 32;
    o.hp.hidden_dim = 48;
    o.hp.n_layers = 2;
    o.hp.n_heads = 4;
    o.hp.n_kv_heads = 2;
    o.data = corpus_path;
    o.tokenizer = tok_path;
    o.out = out;
    o.ctx = 24;
    o.batch = 4;
    o.steps = 40;
    o.lr = 1e-2f;
    o.warmup = 5;
    o.threads = 2;
    o.eval_every = 0;
    o.ckpt_every = 0;
    o.quiet = 1;
    return o;
}

/* Options that resume the run whose output is `out` from its checkpoint
 * (path written to ck, cap bytes). */
static tlm_train_opts resume_opts(const char *out, char *ck, size_t cap)
{
    tlm_train_opts o = tiny_opts(out);
    snprintf(ck, cap, "%s.ckpt", out);
    o.resume = ck;
    o.tokenizer = NULL;
    return o;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    uint8_t *b;
    assert_int_equal(tlm_read_file(path, &b, n, NULL), TLM_OK);
    return b;
}

/* the two files hold the same bytes */
static int same_file(const char *x, const char *y)
{
    uint8_t *a, *b;
    size_t na, nb;
    assert_int_equal(tlm_read_file(x, &a, &na, NULL), TLM_OK);
    assert_int_equal(tlm_read_file(y, &b, &nb, NULL), TLM_OK);
    const int same = na == nb && memcmp(a, b, na) == 0;
    free(a);
    free(b);
    return same;
}

static void test_overfits_tiny_corpus(void **state)
{
    (void)state;
    tlm_train_opts o = tiny_opts(tu_tmp("overfit.tlm"));
    o.steps = 300;
    o.weight_decay = 0.0f;
    o.val = corpus_path;
    o.eval_every = 300;
    tlm_train_report r;
    tlm_error err;
    assert_int_equal(tlm_train(&o, &r, &err), TLM_OK);
    print_message("tiny corpus after %llu steps: train loss %.4f, eval loss %.4f, top-1 %.3f\n", (unsigned long long)r.steps,
                  r.train_loss, r.val_loss, r.val_top1);
    assert_true(r.train_loss < 0.15);
    assert_true(r.val_loss < 0.3);
    assert_true(r.val_top1 > 0.9);
}

static void test_deterministic_and_resume(void **state)
{
    (void)state;
    tlm_train_opts a = tiny_opts(strdup(tu_tmp("a.tlm")));
    tlm_train_opts b = tiny_opts(strdup(tu_tmp("b.tlm")));
    tlm_train_opts c = tiny_opts(strdup(tu_tmp("c.tlm")));
    tlm_train_report r;
    assert_int_equal(tlm_train(&a, &r, NULL), TLM_OK);
    assert_int_equal(tlm_train(&b, &r, NULL), TLM_OK);
    size_t na, nb, nc;
    uint8_t *ma = slurp(a.out, &na), *mb = slurp(b.out, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ma, mb, na);
    /* interrupted at step 17, then resumed to 40 */
    c.stop_after = 17;
    assert_int_equal(tlm_train(&c, &r, NULL), TLM_OK);
    assert_int_equal(r.steps, 17);
    char ck[600];
    tlm_train_opts d = resume_opts(c.out, ck, sizeof ck);
    assert_int_equal(tlm_train(&d, &r, NULL), TLM_OK);
    assert_int_equal(r.steps, 40);
    uint8_t *mc = slurp(c.out, &nc);
    assert_int_equal(na, nc);
    assert_memory_equal(ma, mc, na);
    /* a different seed gives a different model */
    tlm_train_opts e = tiny_opts(strdup(tu_tmp("e.tlm")));
    e.seed = 7;
    assert_int_equal(tlm_train(&e, &r, NULL), TLM_OK);
    size_t ne;
    uint8_t *me = slurp(e.out, &ne);
    assert_true(ne != na || memcmp(ma, me, na) != 0);
    /* a weight average with a vanishing decay is the weights themselves
     * (to float rounding: the update is ema += (1 - d) (p - ema)) */
    tlm_train_opts z = tiny_opts(strdup(tu_tmp("z.tlm")));
    z.ema = 1e-7f;
    assert_int_equal(tlm_train(&z, &r, NULL), TLM_OK);
    {
        tlm_model_file fa, fz;
        tlm_params pa, pz;
        assert_int_equal(tlm_model_file_open(&fa, a.out, NULL), TLM_OK);
        assert_int_equal(tlm_model_file_open(&fz, z.out, NULL), TLM_OK);
        assert_int_equal(tlm_params_from_model(&pa, &fa.model, NULL), TLM_OK);
        assert_int_equal(tlm_params_from_model(&pz, &fz.model, NULL), TLM_OK);
        assert_int_equal(pa.n, pz.n);
        double worst = 0;
        for (size_t i = 0; i < pa.n; i++) {
            const double d = fabs((double)pa.data[i] - pz.data[i]) / (fabs(pa.data[i]) + 1e-3);
            worst = d > worst ? d : worst;
        }
        print_message("ema with decay 1e-7 vs none: worst relative difference %.2e\n", worst);
        assert_true(worst < 1e-5);
        tlm_params_free(&pa);
        tlm_params_free(&pz);
        tlm_model_file_close(&fa);
        tlm_model_file_close(&fz);
    }
    /* a real one saves different weights, and resumes exactly (the
     * average travels in the checkpoint) */
    tlm_train_opts g = tiny_opts(strdup(tu_tmp("g.tlm"))), h = tiny_opts(strdup(tu_tmp("h.tlm")));
    g.ema = h.ema = 0.9f;
    assert_int_equal(tlm_train(&g, &r, NULL), TLM_OK);
    h.stop_after = 17;
    assert_int_equal(tlm_train(&h, &r, NULL), TLM_OK);
    char hck[600];
    tlm_train_opts hr = resume_opts(h.out, hck, sizeof hck);
    assert_int_equal(tlm_train(&hr, &r, NULL), TLM_OK);
    size_t ng, nh;
    uint8_t *mg = slurp(g.out, &ng), *mh = slurp(h.out, &nh);
    assert_int_equal(ng, nh);
    assert_memory_equal(mg, mh, ng);
    assert_true(ng != na || memcmp(mg, ma, na) != 0);
    free(mg); free(mh); free((char *)z.out); free((char *)g.out); free((char *)h.out);
    free(ma); free(mb); free(mc); free(me);
    free((char *)a.out); free((char *)b.out); free((char *)c.out); free((char *)e.out);
}

/* Quantization-aware training: the ternary model learns the tiny corpus
 * far beyond what post-training quantization of the fp32 model keeps, the
 * output holds ternary types, and an interrupted QAT run with distillation
 * resumes to the bit-identical model. */
static void test_qat(void **state)
{
    (void)state;
    tlm_train_opts f = tiny_opts(strdup(tu_tmp("qfp.tlm")));
    f.steps = 300;
    f.weight_decay = 0.0f;
    tlm_train_report r;
    assert_int_equal(tlm_train(&f, &r, NULL), TLM_OK);

    tlm_quant_cfg q;
    tlm_quant_defaults(&q);
    tlm_train_opts a = tiny_opts(strdup(tu_tmp("qa.tlm")));
    a.tokenizer = NULL;
    a.init = f.out;
    a.qat = &q;
    a.steps = 200;
    a.weight_decay = 0.0f;
    a.val = corpus_path;
    a.eval_every = 200;
    assert_int_equal(tlm_train(&a, &r, NULL), TLM_OK);
    const double qat_loss = r.val_loss;
    /* PTQ of the fp32 model, same quantizer */
    tlm_model_file mf;
    assert_int_equal(tlm_model_file_open(&mf, f.out, NULL), TLM_OK);
    tlm_params p;
    tlm_vocab v;
    assert_int_equal(tlm_params_from_model(&p, &mf.model, NULL), TLM_OK);
    assert_int_equal(tlm_vocab_from_model(&mf.model, &v, NULL), TLM_OK);
    uint8_t *img;
    size_t bytes;
    assert_int_equal(tlm_quant_image(&p, &q, &v, mf.model.bos_id, mf.model.eos_id, &img, &bytes, NULL), TLM_OK);
    tlm_model pm;
    assert_int_equal(tlm_model_open(&pm, img, bytes, NULL), TLM_OK);
    tlm_eval_opts eo = {.threads = 2};
    tlm_eval_result er;
    assert_int_equal(tlm_eval_text(&pm, corpus_text, strlen(corpus_text), &eo, &er, NULL), TLM_OK);
    print_message("tiny corpus: QAT loss %.4f, PTQ loss %.4f\n", qat_loss, er.loss);
    assert_true(qat_loss < 0.5 * er.loss);
    assert_true(qat_loss < 1.0);
    free(img);
    tlm_params_free(&p);
    tlm_vocab_free(&v);
    tlm_model_file_close(&mf);
    tlm_model_file qf;
    assert_int_equal(tlm_model_file_open(&qf, a.out, NULL), TLM_OK);
    tlm_tensor t;
    assert_int_equal(tlm_model_tensor(&qf.model, TLM_ROLE_W2, 1, &t), 0);
    assert_true(t.wtype == TLM_WTYPE_T3 || t.wtype == TLM_WTYPE_TS);
    tlm_model_file_close(&qf);

    /* distilled QAT: uninterrupted vs interrupted at 9 and resumed */
    tlm_train_opts b = a, c = a;
    b.out = strdup(tu_tmp("qb.tlm"));
    c.out = strdup(tu_tmp("qc.tlm"));
    b.steps = c.steps = 25;
    b.val = c.val = NULL;
    b.eval_every = c.eval_every = 0;
    b.teacher = c.teacher = f.out;
    b.distill = c.distill = 0.5f;
    q.sparsity = 0.6f;
    q.pack = TLM_WTYPE_TS;
    /* with a per-layer plan (int8, then sparse ternary), which the
     * checkpoint must carry for the resumed run to match */
    q.n_plan = 2;
    q.plan[0] = TLM_WTYPE_I8;
    q.plan[1] = TLM_WTYPE_TS;
    assert_int_equal(tlm_train(&b, &r, NULL), TLM_OK);
    c.stop_after = 9;
    assert_int_equal(tlm_train(&c, &r, NULL), TLM_OK);
    char ck[600];
    tlm_train_opts d = resume_opts(c.out, ck, sizeof ck);
    d.teacher = f.out; /* the checkpoint knows it is a distilled QAT run, not the teacher's path */
    tlm_quant_cfg other;
    tlm_quant_defaults(&other);
    d.qat = &other; /* ignored on resume: the checkpoint's settings win */
    assert_int_equal(tlm_train(&d, &r, NULL), TLM_OK);
    assert_int_equal(r.steps, 25);
    size_t nb, nc;
    uint8_t *mb = slurp(b.out, &nb), *mc = slurp(c.out, &nc);
    assert_int_equal(nb, nc);
    assert_memory_equal(mb, mc, nb);
    tlm_model planned;
    uint8_t *aligned = tu_exact_copy(mb, nb); /* a model opens from an aligned buffer; malloc's may not be */
    assert_int_equal(tlm_model_open(&planned, aligned, nb, NULL), TLM_OK);
    for (uint32_t l = 0; l < 2; l++)
        for (uint32_t role = TLM_ROLE_WQ; role <= TLM_ROLE_W3; role++) {
            if (role == TLM_ROLE_FFN_NORM) continue;
            assert_int_equal(tlm_model_tensor(&planned, (tlm_role)role, l, &t), 0);
            assert_int_equal(t.wtype, q.plan[l]);
        }
    /* resuming a distilled run without its teacher is refused */
    d.teacher = NULL;
    tlm_error err;
    assert_int_equal(tlm_train(&d, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "--teacher"));

    /* a next QAT stage: --init with the first stage's checkpoint trains from
     * its latent fp32 weights, exactly as from those weights written out as
     * an fp32 image by hand */
    char ack[600];
    snprintf(ack, sizeof ack, "%s.ckpt", a.out);
    tlm_ckpt_meta cm;
    tlm_params lp;
    tlm_vocab lv;
    tlm_adamw lopt = {0};
    uint32_t lbos, leos;
    assert_int_equal(tlm_ckpt_load(ack, &cm, &lp, &lv, &lbos, &leos, &lopt, NULL), TLM_OK);
    uint8_t *limg;
    size_t lbytes;
    assert_int_equal(tlm_params_to_image(&lp, &lv, lbos, leos, &limg, &lbytes, NULL), TLM_OK);
    char *latent = strdup(tu_tmp("latent.tlm"));
    assert_int_equal(tlm_write_file_atomic(latent, limg, lbytes, NULL), TLM_OK);
    tlm_quant_cfg q2;
    tlm_quant_defaults(&q2);
    tlm_train_opts g = tiny_opts(strdup(tu_tmp("qg.tlm"))), h = tiny_opts(strdup(tu_tmp("qh.tlm")));
    g.tokenizer = h.tokenizer = NULL;
    g.qat = h.qat = &q2;
    g.steps = h.steps = 12;
    g.init = ack;
    h.init = latent;
    assert_int_equal(tlm_train(&g, &r, NULL), TLM_OK);
    assert_int_equal(tlm_train(&h, &r, NULL), TLM_OK);
    size_t ng, nh;
    uint8_t *mg = slurp(g.out, &ng), *mh = slurp(h.out, &nh);
    assert_int_equal(ng, nh);
    assert_memory_equal(mg, mh, ng);
    /* and it did train: the stage's output is not the first stage's */
    size_t na2;
    uint8_t *ma2 = slurp(a.out, &na2);
    assert_true(na2 != ng || memcmp(ma2, mg, ng) != 0);
    free(ma2);
    free(mg);
    free(mh);
    free(limg);
    free(latent);
    free((char *)g.out);
    free((char *)h.out);
    tlm_params_free(&lp);
    tlm_vocab_free(&lv);
    tlm_adamw_free(&lopt);
    free(mb);
    free(aligned);
    free(mc);
    free((char *)f.out); free((char *)a.out); free((char *)b.out); free((char *)c.out);
}

/* --init CKPT --init-average: the next stage starts from the checkpoint's
 * weight average, which for an fp32 run is exactly the image the run saved,
 * so it trains to the same bytes as --init IMAGE; without the flag it starts
 * from the latest weights, which differ. Refused without an average or
 * without a checkpoint. */
static void test_init_average(void **state)
{
    (void)state;
    tlm_train_report r;
    tlm_train_opts a = tiny_opts(strdup(tu_tmp("avg_a.tlm")));
    a.ema = 0.9f;
    a.steps = 15;
    assert_int_equal(tlm_train(&a, &r, NULL), TLM_OK);
    char ck[600];
    snprintf(ck, sizeof ck, "%s.ckpt", a.out);
    tlm_train_opts g = tiny_opts(strdup(tu_tmp("avg_g.tlm"))), h = tiny_opts(strdup(tu_tmp("avg_h.tlm"))),
                   k = tiny_opts(strdup(tu_tmp("avg_k.tlm")));
    g.tokenizer = h.tokenizer = k.tokenizer = NULL;
    g.steps = h.steps = k.steps = 6;
    g.init = k.init = ck;
    g.init_average = 1;
    h.init = a.out;
    assert_int_equal(tlm_train(&g, &r, NULL), TLM_OK);
    assert_int_equal(tlm_train(&h, &r, NULL), TLM_OK);
    assert_int_equal(tlm_train(&k, &r, NULL), TLM_OK);
    size_t ng, nh, nk;
    uint8_t *mg = slurp(g.out, &ng), *mh = slurp(h.out, &nh), *mk = slurp(k.out, &nk);
    assert_int_equal(ng, nh);
    assert_memory_equal(mg, mh, ng);
    assert_int_equal(ng, nk);
    assert_true(memcmp(mg, mk, ng) != 0);

    tlm_error err;
    /* a checkpoint without an average */
    tlm_train_opts n = tiny_opts(strdup(tu_tmp("avg_n.tlm")));
    n.steps = 3;
    assert_int_equal(tlm_train(&n, &r, NULL), TLM_OK);
    char nck[600];
    snprintf(nck, sizeof nck, "%s.ckpt", n.out);
    tlm_train_opts bad = tiny_opts(tu_tmp("avg_bad.tlm"));
    bad.tokenizer = NULL;
    bad.init = nck;
    bad.init_average = 1;
    assert_int_equal(tlm_train(&bad, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "no weight average"));
    /* an image is not a checkpoint */
    bad.init = a.out;
    assert_int_equal(tlm_train(&bad, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "checkpoint"));
    free(mg); free(mh); free(mk);
    free((char *)a.out); free((char *)g.out); free((char *)h.out); free((char *)k.out); free((char *)n.out);
}

/* Fine-tuning a model whose context is shorter than 256 without giving
 * --ctx trains on windows of the model's own seq_len: the same run as with
 * --ctx set to it (before, the default of 256 was refused); a longer --ctx
 * is still refused. */
static void test_init_default_ctx(void **state)
{
    (void)state;
    tlm_train_report r;
    tlm_train_opts a = tiny_opts(strdup(tu_tmp("dctx_a.tlm"))); /* seq_len 24 */
    a.steps = 6;
    assert_int_equal(tlm_train(&a, &r, NULL), TLM_OK);
    tlm_train_opts d = tiny_opts(strdup(tu_tmp("dctx_d.tlm"))), e = tiny_opts(strdup(tu_tmp("dctx_e.tlm")));
    d.tokenizer = e.tokenizer = NULL;
    d.init = e.init = a.out;
    d.steps = e.steps = 4;
    d.ctx = 0; /* as tlm_train_defaults leaves it */
    assert_int_equal(tlm_train(&d, &r, NULL), TLM_OK);
    assert_int_equal(tlm_train(&e, &r, NULL), TLM_OK); /* --ctx 24 */
    assert_true(same_file(d.out, e.out));
    tlm_train_opts defaults;
    tlm_train_defaults(&defaults);
    assert_int_equal(defaults.ctx, 0);
    e.ctx = 32;
    tlm_error err;
    assert_int_equal(tlm_train(&e, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "seq_len 24"));
    free((char *)a.out);
    free((char *)d.out);
    free((char *)e.out);
}

/* Training a selection of tensors: the frozen ones come out bit for bit
 * as they went in (weight decay included), the selected ones change;
 * selecting all is the same run as selecting nothing; the groups select
 * what they say; bad selections and resuming are refused. */
static void test_train_only(void **state)
{
    (void)state;
    tlm_train_report r;
    tlm_train_opts a = tiny_opts(strdup(tu_tmp("only_a.tlm")));
    a.steps = 12;
    assert_int_equal(tlm_train(&a, &r, NULL), TLM_OK);
    tlm_train_opts f = tiny_opts(strdup(tu_tmp("only_f.tlm"))), all = tiny_opts(strdup(tu_tmp("only_all.tlm"))),
                   plain = tiny_opts(strdup(tu_tmp("only_plain.tlm")));
    f.tokenizer = all.tokenizer = plain.tokenizer = NULL;
    f.init = all.init = plain.init = a.out;
    f.steps = all.steps = plain.steps = 8;
    f.weight_decay = 0.5f;
    f.train_only = "norms,layer1";
    all.train_only = "all";
    assert_int_equal(tlm_train(&f, &r, NULL), TLM_OK);
    assert_int_equal(tlm_train(&all, &r, NULL), TLM_OK);
    assert_int_equal(tlm_train(&plain, &r, NULL), TLM_OK);
    assert_true(same_file(all.out, plain.out));
    tlm_model_file m0, m1;
    assert_int_equal(tlm_model_file_open(&m0, a.out, NULL), TLM_OK);
    assert_int_equal(tlm_model_file_open(&m1, f.out, NULL), TLM_OK);
    tlm_params p0, p1;
    assert_int_equal(tlm_params_from_model(&p0, &m0.model, NULL), TLM_OK);
    assert_int_equal(tlm_params_from_model(&p1, &m1.model, NULL), TLM_OK);
    const uint32_t nt = tlm_params_count(&p0);
    uint8_t mask[64];
    size_t values = 0;
    assert_int_equal(tlm_params_select(&p0, "norms,layer1", mask, &values, NULL), TLM_OK);
    int selected = 0;
    for (uint32_t i = 0; i < nt; i++) {
        tlm_param_tensor t0, t1;
        tlm_params_tensor(&p0, i, &t0);
        tlm_params_tensor(&p1, i, &t1);
        const size_t bytes = (size_t)t0.rows * t0.cols * sizeof(float);
        const int is_norm = t0.role == TLM_ROLE_ATTN_NORM || t0.role == TLM_ROLE_FFN_NORM || t0.role == TLM_ROLE_FINAL_NORM;
        const int in_layer1 = t0.role >= TLM_ROLE_ATTN_NORM && t0.role <= TLM_ROLE_W3 && t0.layer == 1;
        assert_int_equal(mask[i], is_norm || in_layer1);
        if (mask[i]) {
            selected++;
            assert_true(memcmp(t0.data, t1.data, bytes) != 0);
        } else {
            assert_memory_equal(t0.data, t1.data, bytes);
        }
    }
    /* 5 norms (2 per layer and the final one) and layer 1's 9 tensors, 2 of them norms already */
    assert_int_equal(selected, 5 + 9 - 2);
    size_t want = 5u * 32u;
    for (uint32_t i = 0; i < nt; i++) {
        tlm_param_tensor t;
        tlm_params_tensor(&p0, i, &t);
        if (t.layer == 1 && t.role >= TLM_ROLE_WQ && t.role <= TLM_ROLE_W3 && t.role != TLM_ROLE_FFN_NORM)
            want += (size_t)t.rows * t.cols;
    }
    assert_int_equal(values, want);
    tlm_error err;
    const char *bad[] = {"", "nrm", "layer2", "norms,", "layer-1", "layerx"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_not_equal(tlm_params_select(&p0, bad[i], mask, NULL, &err), TLM_OK);
    tlm_params_free(&p0);
    tlm_params_free(&p1);
    tlm_model_file_close(&m0);
    tlm_model_file_close(&m1);
    /* the checkpoint records the selection: interrupted at step 3 and resumed, the same model bit for bit */
    tlm_train_opts g = f;
    g.out = strdup(tu_tmp("only_g.tlm"));
    g.stop_after = 3;
    assert_int_equal(tlm_train(&g, &r, NULL), TLM_OK);
    char ck[600];
    tlm_train_opts res = resume_opts(g.out, ck, sizeof ck);
    assert_int_equal(tlm_train(&res, &r, &err), TLM_OK);
    assert_int_equal(r.steps, 8);
    assert_true(same_file(f.out, g.out));
    /* ... which a resumed run cannot change, nor add to a run that trained everything */
    res.train_only = "norms";
    assert_int_equal(tlm_train(&res, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "trains 'norms,layer1', not 'norms'"));
    tlm_train_opts res_all = resume_opts(a.out, ck, sizeof ck);
    res_all.train_only = "norms";
    res_all.steps = 14;
    assert_int_equal(tlm_train(&res_all, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "trains every tensor"));
    free((char *)a.out); free((char *)f.out); free((char *)all.out); free((char *)plain.out); free((char *)g.out);
}

static void test_killed_checkpoint_write(void **state)
{
    (void)state;
    /* a checkpoint of a larger model, so that a write takes a while */
    tlm_hparams hp = {.dim = 128, .hidden_dim = 384, .n_layers = 4, .n_heads = 4, .n_kv_heads = 4, .vocab_size = 300,
                      .seq_len = 64, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .shared_classifier = 1};
    tlm_params p;
    assert_int_equal(tlm_params_alloc(&p, &hp, NULL), TLM_OK);
    tlm_params_init(&p, 3);
    tlm_adamw opt;
    assert_int_equal(tlm_adamw_init(&opt, p.n, NULL), TLM_OK);
    tlm_vocab v;
    assert_int_equal(tlm_llama2c_read_tokenizer(tok_path, 300, &v, NULL), TLM_OK);
    tlm_ckpt_meta meta = {.threads = 1, .batch = 2, .ctx = 16, .total_steps = 10, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f};
    const char *path = strdup(tu_tmp("kill.ckpt"));
    assert_int_equal(tlm_ckpt_save(path, &meta, &p, &v, 1, 2, &opt, NULL, NULL), TLM_OK);
    uint64_t rng = 5;
    int killed_midway = 0;
    for (int round = 0; round < 12; round++) {
        pid_t child = fork();
        if (child == 0) {
            for (uint64_t s = 1;; s++) {
                meta.step = s % 10;
                tlm_ckpt_save(path, &meta, &p, &v, 1, 2, &opt, NULL, NULL);
            }
        }
        struct timespec ts = {0, (long)(1000000 + tu_rand(&rng) % 20000000)};
        nanosleep(&ts, NULL);
        kill(child, SIGKILL);
        int status;
        waitpid(child, &status, 0);
        killed_midway += WIFSIGNALED(status);
        tlm_ckpt_meta m2;
        tlm_params p2;
        tlm_vocab v2;
        tlm_adamw o2;
        uint32_t bos, eos;
        tlm_error err;
        tlm_status st = tlm_ckpt_load(path, &m2, &p2, &v2, &bos, &eos, &o2, &err);
        if (st) fail_msg("round %d: checkpoint not loadable after a kill: %s", round, err.msg);
        assert_int_equal(p2.n, p.n);
        tlm_params_free(&p2);
        tlm_vocab_free(&v2);
        tlm_adamw_free(&o2);
    }
    assert_int_equal(killed_midway, 12);
    /* leftover temporary files are the only trace of the kills */
    tlm_params_free(&p);
    tlm_adamw_free(&opt);
    tlm_vocab_free(&v);
    free((char *)path);
}

static void test_damaged_checkpoint(void **state)
{
    (void)state;
    tlm_train_opts c = tiny_opts(strdup(tu_tmp("dmg.tlm")));
    c.stop_after = 3;
    tlm_train_report r;
    assert_int_equal(tlm_train(&c, &r, NULL), TLM_OK);
    char ck[600];
    snprintf(ck, sizeof ck, "%s.ckpt", c.out);
    size_t n;
    uint8_t *b = slurp(ck, &n);
    tlm_ckpt_meta m;
    tlm_params p;
    tlm_vocab v;
    tlm_adamw o;
    uint32_t bos, eos;
    tlm_error err;
    assert_int_equal(tlm_write_file_atomic(tu_tmp("cut.ckpt"), b, n - 10, NULL), TLM_OK);
    assert_int_equal(tlm_ckpt_load(tu_tmp("cut.ckpt"), &m, &p, &v, &bos, &eos, &o, &err), TLM_ERR_TRUNCATED);
    b[n / 2] ^= 4;
    assert_int_equal(tlm_write_file_atomic(tu_tmp("flip.ckpt"), b, n, NULL), TLM_OK);
    assert_int_equal(tlm_ckpt_load(tu_tmp("flip.ckpt"), &m, &p, &v, &bos, &eos, &o, &err), TLM_ERR_CHECKSUM);
    assert_int_equal(tlm_ckpt_load(corpus_path, &m, &p, &v, &bos, &eos, &o, &err), TLM_ERR_MAGIC);
    b[n / 2] ^= 4;
    /* the header is checksummed too: a flipped bit of the learning rate (offset 56) */
    b[57] ^= 0x40;
    assert_int_equal(tlm_write_file_atomic(tu_tmp("hdr.ckpt"), b, n, NULL), TLM_OK);
    assert_int_equal(tlm_ckpt_load(tu_tmp("hdr.ckpt"), &m, &p, &v, &bos, &eos, &o, &err), TLM_ERR_CHECKSUM);
    /* a header that checks out but cannot be trained from (NaN learning rate) */
    const float nan_lr = NAN;
    memcpy(b + 56, &nan_lr, 4);
    const uint8_t zero[4] = {0};
    uint32_t crc = tlm_crc32(tlm_crc32(tlm_crc32(0, b, 120), zero, 4), b + 124, n - 124);
    memcpy(b + 120, &crc, 4);
    assert_int_equal(tlm_write_file_atomic(tu_tmp("nan.ckpt"), b, n, NULL), TLM_OK);
    assert_int_equal(tlm_ckpt_load(tu_tmp("nan.ckpt"), &m, &p, &v, &bos, &eos, &o, &err), TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "inconsistent training state"));
    free(b);
    /* a version 1 file (checksum over what follows the header) still loads, to the same weights */
    b = slurp(ck, &n);
    memcpy(b, "TLMCKPT1", 8);
    crc = tlm_crc32(0, b + 256, n - 256);
    memcpy(b + 120, &crc, 4);
    assert_int_equal(tlm_write_file_atomic(tu_tmp("v1.ckpt"), b, n, NULL), TLM_OK);
    tlm_params p1;
    assert_int_equal(tlm_ckpt_load(tu_tmp("v1.ckpt"), &m, &p1, &v, &bos, &eos, &o, &err), TLM_OK);
    tlm_adamw_free(&o);
    tlm_vocab_free(&v);
    assert_int_equal(tlm_ckpt_load(ck, &m, &p, &v, &bos, &eos, &o, &err), TLM_OK);
    assert_int_equal(p1.n, p.n);
    assert_memory_equal(p1.data, p.data, p.n * sizeof(float));
    tlm_params_free(&p1);
    tlm_params_free(&p);
    tlm_adamw_free(&o);
    tlm_vocab_free(&v);
    free(b);
    free((char *)c.out);
}

/* ---- tokenizer training on real text ---- */
static void test_tokenizer_training(void **state)
{
    (void)state;
    uint8_t *text;
    size_t len;
    assert_int_equal(tlm_read_file(tu_data("tinystories/dev.txt"), &text, &len, NULL), TLM_OK);
    const char *texts[1] = {(const char *)text};
    tlm_bpe_opts bo = {.vocab_size = 512, .char_coverage = 0.9995};
    tlm_vocab v1, v2;
    assert_int_equal(tlm_bpe_train(texts, &len, 1, &bo, &v1, NULL), TLM_OK);
    assert_int_equal(tlm_bpe_train(texts, &len, 1, &bo, &v2, NULL), TLM_OK);
    assert_int_equal(v1.n, 512);
    uint8_t *b1, *b2;
    size_t n1, n2;
    assert_int_equal(tlm_vocab_to_llama2c(&v1, &b1, &n1, NULL), TLM_OK);
    assert_int_equal(tlm_vocab_to_llama2c(&v2, &b2, &n2, NULL), TLM_OK);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1); /* deterministic */
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        assert_int_equal(v1.lens[3 + b], 6);
        assert_memory_equal(v1.strs[3 + b], name, 6);
    }
    /* a model image carrying the vocabulary, to encode with */
    tlm_hparams hp = {.dim = 8, .hidden_dim = 8, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1, .vocab_size = 512,
                      .seq_len = 8, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .shared_classifier = 1};
    tlm_params p;
    assert_int_equal(tlm_params_alloc(&p, &hp, NULL), TLM_OK);
    uint8_t *img;
    size_t ib;
    assert_int_equal(tlm_params_to_image(&p, &v1, 1, 2, &img, &ib, NULL), TLM_OK);
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, img, ib, NULL), TLM_OK);
    /* lossless on the text (with its mis-encoded bytes) and on unseen characters */
    static const char extra[] = "Zoë's caf\xC3\xA9 \xE2\x82\xAC 42 \xF0\x9F\x98\x80 \x80\xFF end";
    const char *samples[2] = {(const char *)text, extra};
    size_t sl[2] = {len, sizeof extra - 1};
    size_t tokens = 0;
    for (int k = 0; k < 2; k++) {
        size_t cap = TLM_ENCODE_MAX_IDS(sl[k]), n = 0;
        uint32_t *ids = malloc(cap * 4);
        int32_t *scr = malloc(TLM_ENCODE_SCRATCH(cap) * 4);
        assert_int_equal(tlm_encode(&m, samples[k], sl[k], TLM_ENCODE_BOS, ids, cap, scr, &n), TLM_OK);
        uint8_t *back = malloc(sl[k] + 1);
        size_t o = 0;
        for (size_t i = 1; i < n; i++) {
            const uint8_t *pc;
            size_t pl = tlm_decode_piece(&m, ids[i - 1], ids[i], &pc);
            memcpy(back + o, pc, pl);
            o += pl;
        }
        assert_int_equal(o, sl[k]);
        assert_memory_equal(back, samples[k], sl[k]);
        if (k == 0) tokens = n;
        free(ids); free(scr); free(back);
    }
    print_message("dev.txt: %zu bytes -> %zu tokens with a trained 512-token vocabulary\n", len, tokens);
    assert_true(tokens * 2 < len); /* merges compress: fewer than one token per two bytes */
    free(img); free(b1); free(b2); free(text);
    tlm_params_free(&p);
    tlm_vocab_free(&v1);
    tlm_vocab_free(&v2);
}

/* ---- the command line ---- */
static char *run_out, *run_err; /* owned by tu_run */
#define run(...) tu_run(&run_out, &run_err, __VA_ARGS__)

static int err_has(const char *s) { return strstr(run_err, s) != NULL; }

static void test_cli_train_and_export(void **state)
{
    (void)state;
    char *model = strdup(tu_tmp("cli.tlm"));
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --dim 32 --hidden 48 --layers 2 --heads 4 --kv-heads 2 "
                         "--ctx 24 --batch 4 --steps 30 --lr 1e-2 --eval-every 0 -o '%s' --json", corpus_path, tok_path, model), 0);
    /* exported to llama2.c and imported again: the same greedy text */
    assert_int_equal(run("generate -m '%s' -n 24 -t 0", model), 0);
    char *g1 = strdup(run_out);
    assert_int_equal(run("export llama2c '%s' -o '%s' --tokenizer-out '%s'", model, tu_tmp("x.bin"), tu_tmp("x_tok.bin")), 0);
    assert_int_equal(run("import llama2c '%s' '%s' -o '%s'", tu_tmp("x.bin"), tu_tmp("x_tok.bin"), tu_tmp("x.tlm")), 0);
    assert_int_equal(run("generate -m '%s' -n 24 -t 0", tu_tmp("x.tlm")), 0);
    assert_true(strlen(g1) > 1);
    assert_string_equal(g1, run_out);
    free(g1);
    /* fine-tuning the trained model */
    assert_int_equal(run("train --data '%s' --init '%s' --ctx 24 --batch 4 --steps 5 --lr 1e-4 --eval-every 0 -o '%s'",
                         corpus_path, model, tu_tmp("ft.tlm")), 0);
    /* logs and plot */
    char p[700];
    snprintf(p, sizeof p, "%s.train.csv", model);
    size_t n;
    uint8_t *csv = slurp(p, &n);
    assert_non_null(strstr((char *)csv, "step,lr,loss"));
    free(csv);
    /* the loss plot, for a name with a quote and a space (gnuplot runs
     * without a shell; its script quotes the name), where gnuplot is installed */
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        char dir[600], out[700], png[720];
        snprintf(dir, sizeof dir, "%s", tu_tmp(""));
        snprintf(out, sizeof out, "%s/it's a model.tlm", dir);
        snprintf(png, sizeof png, "%s.png", out);
        remove(png);
        assert_int_equal(run("train --data '%s' --init '%s' --ctx 24 --batch 4 --steps 4 --eval-every 2 --val '%s' -o '%s/it'\\''s a model.tlm'",
                             corpus_path, model, corpus_path, dir), 0);
        uint8_t *img = slurp(png, &n);
        assert_true(n > 8 && memcmp(img, "\x89PNG", 4) == 0);
        free(img);
    }
    free(model);
}

/* The training tokens and story count in train's first line on stderr. */
static void corpus_line(unsigned long long *tokens, unsigned long long *stories)
{
    const char *p = strstr(run_err, "parameters, ");
    assert_non_null(p);
    assert_int_equal(sscanf(p, "parameters, %llu training tokens in %llu stories", tokens, stories), 2);
}

/* 1 when the two files hold the same bytes. */

/* --split lines: the tiny corpus one story a line (CRLF, a blank line)
 * gives the token stream that its <|endoftext|> form gives. */
static void test_cli_split_lines(void **state)
{
    (void)state;
    write_text(tu_tmp("lines.txt"), "Tom had a red ball. He liked to play with it in the sun.\r\n\n"
                                    "Sue saw a big dog. The dog was happy and ran to her.\n"
                                    "  One day, a cat sat on a mat. It was warm and the cat slept.");
    const char *shape = "--dim 32 --hidden 48 --layers 1 --heads 4 --ctx 16 --batch 2 --steps 2 --eval-every 1";
    unsigned long long tl, sl, ts, ss;
    assert_int_equal(run("train --data '%s' --val '%s' --split lines --tokenizer '%s' %s -o '%s'", tu_tmp("lines.txt"),
                         tu_tmp("lines.txt"), tok_path, shape, tu_tmp("l.tlm")), 0);
    corpus_line(&tl, &sl);
    assert_null(strstr(run_err, "note:"));
    /* without --split lines, a --val that is one story longer than the context is pointed out,
     * and so is training data that is one story */
    assert_int_equal(run("train --data '%s' --val '%s' --tokenizer '%s' %s -o '%s'", tu_tmp("lines.txt"),
                         tu_tmp("lines.txt"), tok_path, shape, tu_tmp("n.tlm")), 0);
    assert_true(err_has("validation scores only its first 16 tokens; --split lines"));
    assert_true(err_has("the whole file is one story (no <|endoftext|> in it), so windows run across its lines"));
    assert_int_equal(run("train --data '%s' --val '%s' --tokenizer '%s' %s -o '%s'", corpus_path, corpus_path, tok_path,
                         shape, tu_tmp("s.tlm")), 0);
    corpus_line(&ts, &ss);
    assert_null(strstr(run_err, "windows run across")); /* three stories: no note */
    assert_int_equal(sl, 3);
    assert_int_equal(ss, 3);
    assert_int_equal(tl, ts);
    /* the same start, the same data and seed: the same model */
    assert_true(same_file(tu_tmp("l.tlm"), tu_tmp("s.tlm")));
    assert_int_equal(run("train --data '%s' --split words --tokenizer '%s' %s -o x.tlm", corpus_path, tok_path, shape), 2);
    assert_true(err_has("--split expects stories or lines"));
    /* and the tokenizer trained on either form is the same file */
    assert_int_equal(run("tokenizer train --vocab 280 --split lines -o '%s' '%s'", tu_tmp("tl.bin"), tu_tmp("lines.txt")), 0);
    assert_int_equal(run("tokenizer train --vocab 280 -o '%s' '%s'", tu_tmp("ts.bin"), corpus_path), 0);
    assert_true(same_file(tu_tmp("tl.bin"), tu_tmp("ts.bin")));
    /* without it, the lines are one story: a leading space only at the first */
    assert_int_equal(run("tokenizer train --vocab 280 -o '%s' '%s'", tu_tmp("t1.bin"), tu_tmp("lines.txt")), 0);
    assert_false(same_file(tu_tmp("t1.bin"), tu_tmp("ts.bin")));
}

static void test_cli_bad_arguments(void **state)
{
    (void)state;
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --dim 0 --steps 3 -o x.tlm", corpus_path, tok_path), 2);
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --dim 30 --heads 4 --steps 3 -o x.tlm", corpus_path, tok_path), 2);
    assert_true(err_has("must divide"));
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --heads 8 --kv-heads 3 --steps 3 -o x.tlm", corpus_path, tok_path), 2);
    /* without --kv-heads, heads that the default 4 does not divide get as many kv heads */
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --dim 24 --hidden 32 --layers 1 --heads 6 --ctx 16 --batch 2 "
                         "--steps 1 --eval-every 0 -o '%s'", corpus_path, tok_path, tu_tmp("kv6.tlm")), 0);
    assert_int_equal(run("info '%s' --json", tu_tmp("kv6.tlm")), 0);
    assert_non_null(strstr(run_out, "\"n_heads\":6,\"n_kv_heads\":6,"));
    assert_int_equal(run("train --data '%s' --tokenizer '%s' -o x.tlm", corpus_path, tok_path), 2);
    assert_true(err_has("--steps"));
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --steps 3 --minutes 1 -o x.tlm", corpus_path, tok_path), 2);
    assert_int_equal(run("train --data /nonexistent.txt --tokenizer '%s' --steps 3 -o '%s'", tok_path, tu_tmp("x.tlm")), 1);
    assert_true(err_has("cannot open"));
    assert_int_equal(run("train --data '%s' --tokenizer /nonexistent.bin --steps 3 -o '%s'", corpus_path, tu_tmp("x.tlm")), 1);
    write_text(tu_tmp("corrupt.tlm"), "TRLM this is not a model");
    assert_int_equal(run("train --data '%s' --init '%s' --steps 3 -o '%s'", corpus_path, tu_tmp("corrupt.tlm"), tu_tmp("x.tlm")), 1);
    assert_true(err_has("corrupt.tlm"));
    assert_int_equal(run("train --data '%s' --init '%s' --dim 64 --steps 3 -o x.tlm", corpus_path, tu_tmp("corrupt.tlm")), 2);
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --init-average --steps 3 -o x.tlm", corpus_path, tok_path), 2);
    assert_true(err_has("--init-average goes with --init"));
    assert_int_equal(run("train --data '%s' --resume '%s' -o '%s'", corpus_path, corpus_path, tu_tmp("x.tlm")), 1);
    assert_true(err_has("not a tritlm training checkpoint"));
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --ctx 500 --steps 3 -o '%s'", corpus_path, tok_path, tu_tmp("x.tlm")), 1);
    assert_true(err_has("fewer than --ctx"));
    assert_int_equal(run("tokenizer train --vocab 100 '%s'", corpus_path), 2);
    assert_int_equal(run("tokenizer train --vocab 300 -o '%s' /nonexistent.txt", tu_tmp("t.bin")), 1);
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --lora-alpha 4 --steps 3 -o x.tlm", corpus_path, tok_path), 2);
    assert_true(err_has("--lora-alpha goes with --lora"));
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --lora 2 --qat --steps 3 -o x.tlm", corpus_path, tok_path), 2);
    assert_true(err_has("--lora does not go with --qat"));
    assert_int_equal(run("train --data '%s' --resume x.ckpt --lora 2 -o x.tlm", corpus_path), 2);
    assert_true(err_has("--lora does not go with --resume"));
    assert_int_equal(run("train --data '%s' --resume x.ckpt --tensors norms -o x.tlm", corpus_path), 2);
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --tensors nrm --steps 3 -o '%s'", corpus_path, tok_path,
                         tu_tmp("x.tlm")), 1);
    assert_true(err_has("unknown group 'nrm'"));
    assert_int_equal(run("quantize -m x.tlm -o y.tlm --lora 2"), 2);
    assert_true(err_has("'tritlm train'"));
    assert_int_equal(run("train --help"), 0);
    assert_int_equal(run("tokenizer train --help"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overfits_tiny_corpus),  cmocka_unit_test(test_deterministic_and_resume),
        cmocka_unit_test(test_qat), cmocka_unit_test(test_init_average), cmocka_unit_test(test_train_only),
        cmocka_unit_test(test_init_default_ctx),
        cmocka_unit_test(test_killed_checkpoint_write), cmocka_unit_test(test_damaged_checkpoint),
        cmocka_unit_test(test_cli_train_and_export), cmocka_unit_test(test_cli_split_lines),
        cmocka_unit_test(test_cli_bad_arguments),
        cmocka_unit_test(test_tokenizer_training),
    };
    if (getenv("TLM_TEST_FILTER")) cmocka_set_test_filter(getenv("TLM_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
