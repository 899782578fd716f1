/* Low-rank adapters (src/host/train/lora.c): the effective weights against
 * a plain triple loop, the adapters' gradients against central finite
 * differences of the model's loss, and a fine-tuning run through the
 * trainer: only the selected tensors change, each adapted matrix by a
 * change of rank at most R, the unselected ones bit for bit kept, and the
 * loss on the text goes down. */
#define _GNU_SOURCE
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/host/eval.h"
#include "../src/host/fileio.h"
#include "../src/host/model_file.h"
#include "../src/host/train/lora.h"
#include "../src/host/train/model_grad.h"
#include "../src/host/train/params.h"
#include "../src/host/train/trainer.h"
#include "testutil.h"

static const tu_tiny tiny = {.dim = 16, .hidden = 24, .layers = 2, .heads = 4, .kv_heads = 2, .seq_len = 32,
                             .n_merges = 0, .shared = 1};

static void load_tiny(tlm_params *p, uint64_t seed)
{
    uint8_t *img;
    size_t n;
    tu_build_tiny(&tiny, seed, &img, &n);
    tlm_model m;
    assert_int_equal(tlm_model_open(&m, img, n, NULL), TLM_OK);
    assert_int_equal(tlm_params_from_model(p, &m, NULL), TLM_OK);
    free(img);
}

/* B filled with random values, so that both adapters' gradients are alive. */
static void randomize_b(tlm_lora *lo, uint64_t seed)
{
    for (uint32_t k = 0; k < lo->n; k++)
        for (size_t j = 0; j < (size_t)lo->t[k].rows * lo->rank; j++) lo->t[k].b[j] = (float)(tu_uniform(&seed) - 0.5) * 0.2f;
}

static void test_apply_is_base_plus_product(void **state)
{
    (void)state;
    tlm_params p;
    load_tiny(&p, 3);
    tlm_lora lo;
    tlm_error err;
    assert_int_equal(tlm_lora_init(&lo, &p, NULL, 3, 5.0f, 7, &err), TLM_OK);
    /* attn and ffn matrices of 2 layers */
    assert_int_equal(lo.n, 2u * 7u);
    /* B = 0 at the start: applying gives the model back exactly */
    tlm_params q;
    load_tiny(&q, 3);
    tlm_lora_apply(&lo, &q);
    assert_memory_equal(p.data, q.data, p.n * sizeof(float));
    randomize_b(&lo, 11);
    tlm_lora_apply(&lo, &q);
    double worst = 0;
    for (uint32_t k = 0; k < lo.n; k++) {
        const tlm_lora_tensor *a = &lo.t[k];
        tlm_param_tensor w0, w;
        tlm_params_tensor(&p, a->index, &w0);
        tlm_params_tensor(&q, a->index, &w);
        for (uint32_t i = 0; i < a->rows; i++)
            for (uint32_t j = 0; j < a->cols; j++) {
                double ba = 0;
                for (uint32_t r = 0; r < lo.rank; r++) ba += (double)a->b[i * lo.rank + r] * a->a[(size_t)r * a->cols + j];
                const double want = w0.data[(size_t)i * a->cols + j] + 5.0 / 3.0 * ba;
                const double d = fabs(want - w.data[(size_t)i * a->cols + j]);
                if (d > worst) worst = d;
            }
    }
    assert_true(worst < 1e-6);
    /* the tensors without adapters (embedding, norms) are untouched */
    for (uint32_t i = 0; i < tlm_params_count(&p); i++) {
        tlm_param_tensor t0, t1;
        tlm_params_tensor(&p, i, &t0);
        tlm_params_tensor(&q, i, &t1);
        if (t0.role == TLM_ROLE_TOK_EMBED || t0.rows == 1)
            assert_memory_equal(t0.data, t1.data, (size_t)t0.rows * t0.cols * sizeof(float));
    }
    /* refusals */
    tlm_lora bad;
    assert_int_equal(tlm_lora_init(&bad, &p, NULL, 0, 1.0f, 1, &err), TLM_ERR_ARG);
    assert_int_equal(tlm_lora_init(&bad, &p, NULL, 9, 9.0f, 1, &err), TLM_ERR_ARG); /* wk, wv are 8 x 16 */
    assert_non_null(strstr(err.msg, "exceeds"));
    uint8_t none[64] = {0};
    assert_int_equal(tlm_lora_init(&bad, &p, none, 2, 2.0f, 1, &err), TLM_ERR_ARG);
    tlm_lora_free(&lo);
    tlm_params_free(&p);
    tlm_params_free(&q);
}

static double loss_of(tlm_lora *lo, tlm_params *p, const uint32_t *tok, uint32_t T, tlm_train_ws *ws)
{
    tlm_lora_apply(lo, p);
    return tlm_model_fwd_bwd(p, NULL, tok, tok + 1, T, 1.0f, ws);
}

static void test_gradient_finite_differences(void **state)
{
    (void)state;
    tlm_params p, g;
    load_tiny(&p, 5);
    assert_int_equal(tlm_params_alloc(&g, &p.hp, NULL), TLM_OK);
    /* adapters on every matrix, the embedding included, rank 2, scale 3/2 */
    uint8_t mask[64];
    assert_int_equal(tlm_params_select(&p, "all", mask, NULL, NULL), TLM_OK);
    tlm_lora lo;
    assert_int_equal(tlm_lora_init(&lo, &p, mask, 2, 3.0f, 9, NULL), TLM_OK);
    assert_int_equal(lo.n, 1u + 2u * 7u);
    randomize_b(&lo, 13);
    enum { T = 12 };
    uint32_t tok[T + 1];
    uint64_t s = 21;
    for (int i = 0; i <= T; i++) tok[i] = (uint32_t)(tu_rand(&s) % p.hp.vocab_size);
    tlm_train_ws *ws;
    assert_int_equal(tlm_train_ws_new(&ws, &p.hp, T, NULL), TLM_OK);
    tlm_lora_apply(&lo, &p);
    memset(g.data, 0, g.n * sizeof(float));
    tlm_model_fwd_bwd(&p, &g, tok, tok + 1, T, 1.0f, ws);
    tlm_lora_backward(&lo, &g);
    /* the adapted tensors' own gradients are consumed; a gain's is not */
    for (uint32_t k = 0; k < lo.n; k++) {
        tlm_param_tensor t;
        tlm_params_tensor(&g, lo.t[k].index, &t);
        for (size_t j = 0; j < (size_t)t.rows * t.cols; j++) assert_true(t.data[j] == 0.0f);
    }
    int gain_alive = 0;
    for (size_t j = 0; j < p.hp.dim; j++) gain_alive |= g.final_norm[j] != 0.0f;
    assert_true(gain_alive);
    double gmax = 0;
    for (size_t j = 0; j < lo.values; j++) gmax = fmax(gmax, fabs(lo.grad[j]));
    assert_true(gmax > 0);
    /* central differences on a spread of A and B entries of every matrix */
    double worst = 0;
    int checked = 0;
    const float h = 3e-3f;
    for (uint32_t k = 0; k < lo.n; k++) {
        tlm_lora_tensor *a = &lo.t[k];
        for (int which = 0; which < 2; which++) {
            float *v = which ? a->b : a->a, *gv = which ? a->gb : a->ga;
            const size_t n = (size_t)lo.rank * (which ? a->rows : a->cols);
            for (size_t j = k % 3; j < n; j += 5) {
                const float keep = v[j];
                v[j] = keep + h;
                const double up = loss_of(&lo, &p, tok, T, ws);
                v[j] = keep - h;
                const double down = loss_of(&lo, &p, tok, T, ws);
                v[j] = keep;
                const double fd = (up - down) / (2.0 * h), d = fabs(fd - gv[j]);
                if (d > worst) worst = d;
                checked++;
            }
        }
    }
    printf("finite differences on %d adapter values: worst error %.2e of the largest gradient %.3e\n", checked, worst, gmax);
    assert_true(checked > 200);
    assert_true(worst < 2e-3 * gmax);
    tlm_train_ws_free(ws);
    tlm_lora_free(&lo);
    tlm_params_free(&p);
    tlm_params_free(&g);
}

/* Rank of a rows x cols matrix by Gaussian elimination with full pivoting:
 * pivots above tol times the largest entry. */
static int rank_of(const float *m, uint32_t rows, uint32_t cols, double tol)
{
    double *a = malloc((size_t)rows * cols * sizeof *a), big = 0;
    for (size_t i = 0; i < (size_t)rows * cols; i++) {
        a[i] = m[i];
        big = fmax(big, fabs(a[i]));
    }
    int rank = 0;
    for (uint32_t step = 0; step < rows && step < cols; step++) {
        uint32_t pr = step, pc = step;
        double best = 0;
        for (uint32_t i = step; i < rows; i++)
            for (uint32_t j = step; j < cols; j++)
                if (fabs(a[(size_t)i * cols + j]) > best) {
                    best = fabs(a[(size_t)i * cols + j]);
                    pr = i;
                    pc = j;
                }
        if (best <= tol * big) break;
        rank++;
        for (uint32_t j = 0; j < cols; j++) { /* rows step and pr */
            const double t = a[(size_t)step * cols + j];
            a[(size_t)step * cols + j] = a[(size_t)pr * cols + j];
            a[(size_t)pr * cols + j] = t;
        }
        for (uint32_t i = 0; i < rows; i++) { /* columns step and pc */
            const double t = a[(size_t)i * cols + step];
            a[(size_t)i * cols + step] = a[(size_t)i * cols + pc];
            a[(size_t)i * cols + pc] = t;
        }
        for (uint32_t i = step + 1; i < rows; i++) {
            const double f = a[(size_t)i * cols + step] / a[(size_t)step * cols + step];
            for (uint32_t j = step; j < cols; j++) a[(size_t)i * cols + j] -= f * a[(size_t)step * cols + j];
        }
    }
    free(a);
    return rank;
}

static double text_loss(const char *model, const char *text)
{
    tlm_model_file mf;
    assert_int_equal(tlm_model_file_open(&mf, model, NULL), TLM_OK);
    tlm_eval_opts eo = {.threads = 1, .separator = "\n"};
    tlm_eval_result r;
    assert_int_equal(tlm_eval_text(&mf.model, text, strlen(text), &eo, &r, NULL), TLM_OK);
    const double loss = r.loss;
    tlm_eval_result_free(&r);
    tlm_model_file_close(&mf);
    return loss;
}

static void test_fine_tuning_run(void **state)
{
    (void)state;
    const tu_tiny wide = {.dim = 32, .hidden = 48, .layers = 2, .heads = 4, .kv_heads = 2, .seq_len = 64,
                          .n_merges = 0, .shared = 1};
    uint8_t *img;
    size_t n;
    tu_build_tiny(&wide, 17, &img, &n);
    char *base = strdup(tu_tmp("lora_base.tlm")), *text = strdup(tu_tmp("lora_text.txt")),
         *out = strdup(tu_tmp("lora_out.tlm"));
    assert_int_equal(tlm_write_file_atomic(base, img, n, NULL), TLM_OK);
    free(img);
    static const char lines[] = "set an alarm for seven\nwhat is the weather today\nplay some jazz music\n"
                                "set a timer for ten minutes\nwhat is on my calendar\nturn the lights off\n";
    assert_int_equal(tlm_write_file_atomic(text, lines, strlen(lines), NULL), TLM_OK);
    tlm_train_opts o;
    tlm_train_defaults(&o);
    o.data = text;
    o.separator = "\n";
    o.init = base;
    o.out = out;
    o.ctx = 24;
    o.batch = 4;
    o.steps = 30;
    o.lr = 1e-2f;
    o.warmup = 3;
    o.threads = 2;
    o.eval_every = 0;
    o.ckpt_every = 0;
    o.quiet = 1;
    o.lora_rank = 2;
    o.lora_alpha = 4.0f;
    o.train_only = "attn,norms";
    tlm_train_report r;
    tlm_error err;
    assert_int_equal(tlm_train(&o, &r, &err), TLM_OK);
    const double before = text_loss(base, lines), after = text_loss(out, lines);
    printf("adapters of rank 2 on attention, gains trained: loss on the text %.4f -> %.4f\n", before, after);
    assert_true(after < before - 0.5);
    tlm_model_file m0, m1;
    assert_int_equal(tlm_model_file_open(&m0, base, NULL), TLM_OK);
    assert_int_equal(tlm_model_file_open(&m1, out, NULL), TLM_OK);
    tlm_params p0, p1;
    assert_int_equal(tlm_params_from_model(&p0, &m0.model, NULL), TLM_OK);
    assert_int_equal(tlm_params_from_model(&p1, &m1.model, NULL), TLM_OK);
    int adapted = 0, gains = 0;
    for (uint32_t i = 0; i < tlm_params_count(&p0); i++) {
        tlm_param_tensor t0, t1;
        tlm_params_tensor(&p0, i, &t0);
        tlm_params_tensor(&p1, i, &t1);
        const size_t cnt = (size_t)t0.rows * t0.cols;
        const int attn = t0.role >= TLM_ROLE_WQ && t0.role <= TLM_ROLE_WO;
        if (t0.rows == 1) { /* gains: trained as they are */
            assert_true(memcmp(t0.data, t1.data, cnt * sizeof(float)) != 0);
            gains++;
        } else if (attn) { /* a change of rank 1 or 2 */
            float *d = malloc(cnt * sizeof *d);
            for (size_t j = 0; j < cnt; j++) d[j] = t1.data[j] - t0.data[j];
            const int rk = rank_of(d, t0.rows, t0.cols, 1e-4);
            assert_true(rk >= 1 && rk <= 2);
            free(d);
            adapted++;
        } else { /* embedding, feed-forward: kept bit for bit */
            assert_memory_equal(t0.data, t1.data, cnt * sizeof(float));
        }
    }
    assert_int_equal(adapted, 2 * 4);
    assert_int_equal(gains, 2 * 2 + 1);
    tlm_params_free(&p0);
    tlm_params_free(&p1);
    tlm_model_file_close(&m0);
    tlm_model_file_close(&m1);
    /* not with quantization-aware training; a rank larger than a matrix */
    tlm_quant_cfg q;
    tlm_quant_defaults(&q);
    o.qat = &q;
    assert_int_equal(tlm_train(&o, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "--qat"));
    o.qat = NULL;
    o.lora_rank = 40;
    assert_int_equal(tlm_train(&o, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "exceeds"));
    /* checkpoints record the adapters: interrupted at step 11 and resumed, the same model bit for bit */
    uint8_t *whole, *again;
    size_t nw, na;
    assert_int_equal(tlm_read_file(out, &whole, &nw, NULL), TLM_OK);
    o.lora_rank = 2;
    o.stop_after = 11;
    assert_int_equal(tlm_train(&o, &r, &err), TLM_OK);
    char ck[4200];
    snprintf(ck, sizeof ck, "%s.ckpt", out);
    tlm_train_opts res;
    tlm_train_defaults(&res);
    res.data = text;
    res.separator = "\n";
    res.out = out;
    res.resume = ck;
    res.threads = 2;
    res.quiet = 1;
    assert_int_equal(tlm_train(&res, &r, &err), TLM_OK);
    assert_int_equal(r.steps, 30);
    assert_int_equal(tlm_read_file(out, &again, &na, NULL), TLM_OK);
    assert_int_equal(na, nw);
    assert_memory_equal(again, whole, nw);
    free(whole);
    free(again);
    /* a resumed run keeps its adapters' rank */
    res.lora_rank = 3;
    assert_int_equal(tlm_train(&res, &r, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "not adapters of rank 3"));
    free(base);
    free(text);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_is_base_plus_product),
        cmocka_unit_test(test_gradient_finite_differences),
        cmocka_unit_test(test_fine_tuning_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
