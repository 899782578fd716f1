#include <stdio.h>
/* Every layer's backward pass, and the whole model's, against central
 * finite differences of the forward pass. The probe loss is
 * L = sum_i r_i y_i with fixed random r (so dL/dy = r), summed in double. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../src/host/nn/layers.h"
#include "../src/host/train/model_grad.h"
#include "testutil.h"

static uint64_t rng = 99;

static float *randv(size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)((tu_uniform(&rng) * 2 - 1) * scale);
    return v;
}

static float *zeros(size_t n) { return calloc(n, sizeof(float)); }

static double probe(const float *y, const float *r, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

typedef double (*loss_fn)(void *ctx);

/* Compares analytic gradient g of x (n values) with central differences
 * of f; checks every value (or `samples` random ones). */
static void check(const char *what, loss_fn f, void *ctx, float *x, const float *g, size_t n, size_t samples, float eps,
                  double tol_abs, double tol_rel)
{
    double worst = 0;
    for (size_t s = 0; s < (samples ? samples : n); s++) {
        size_t i = samples ? (size_t)(tu_rand(&rng) % n) : s;
        const float keep = x[i];
        x[i] = keep + eps;
        const double up = f(ctx);
        x[i] = keep - eps;
        const double down = f(ctx);
        x[i] = keep;
        const double fd = (up - down) / (2.0 * eps);
        const double err = fabs(fd - g[i]);
        const double allowed = tol_abs + tol_rel * fmax(fabs(fd), fabs(g[i]));
        if (err / allowed > worst) worst = err / allowed;
        if (err > allowed) fail_msg("%s[%zu]: analytic %.6g, finite difference %.6g", what, i, (double)g[i], fd);
    }
    print_message("%-28s worst error %.2f of tolerance\n", what, worst);
}

/* ---- linear ---- */
typedef struct { float *X, *W, *Y, *r, *wt; uint32_t T, n, d; } lin_ctx;
static double lin_loss(void *c)
{
    lin_ctx *k = c;
    tlm_linear_fwd(k->Y, k->X, k->W, k->T, k->n, k->d, k->wt);
    return probe(k->Y, k->r, (size_t)k->T * k->d);
}
static void test_linear(void **state)
{
    (void)state;
    lin_ctx k = {.T = 7, .n = 19, .d = 21};
    k.X = randv(7 * 19, 1);
    k.W = randv(21 * 19, 1);
    k.Y = zeros(7 * 21);
    k.r = randv(7 * 21, 1);
    k.wt = zeros(21 * 19);
    float *dX = zeros(7 * 19), *dW = zeros(21 * 19), *dyt = zeros(21 * 7);
    tlm_linear_bwd(dX, dW, k.r, k.X, k.W, k.T, k.n, k.d, dyt);
    check("linear dX", lin_loss, &k, k.X, dX, 7 * 19, 0, 1e-2f, 2e-3, 1e-2);
    check("linear dW", lin_loss, &k, k.W, dW, 21 * 19, 0, 1e-2f, 2e-3, 1e-2);
    free(k.X); free(k.W); free(k.Y); free(k.r); free(k.wt); free(dX); free(dW); free(dyt);
}

/* ---- rmsnorm ---- */
typedef struct { float *X, *w, *Y, *inv, *r; uint32_t T, n; } rms_ctx;
static double rms_loss(void *c)
{
    rms_ctx *k = c;
    tlm_rmsnorm_fwd(k->Y, k->inv, k->X, k->w, k->T, k->n, 1e-5f);
    return probe(k->Y, k->r, (size_t)k->T * k->n);
}
static void test_rmsnorm(void **state)
{
    (void)state;
    rms_ctx k = {.T = 5, .n = 16};
    k.X = randv(80, 1.5f);
    k.w = randv(16, 1);
    k.Y = zeros(80);
    k.inv = zeros(5);
    k.r = randv(80, 1);
    rms_loss(&k);
    float *dX = zeros(80), *dw = zeros(16);
    tlm_rmsnorm_bwd(dX, dw, k.r, k.X, k.inv, k.w, k.T, k.n);
    check("rmsnorm dX", rms_loss, &k, k.X, dX, 80, 0, 1e-2f, 2e-3, 1e-2);
    check("rmsnorm dw", rms_loss, &k, k.w, dw, 16, 0, 1e-2f, 2e-3, 1e-2);
    free(k.X); free(k.w); free(k.Y); free(k.inv); free(k.r); free(dX); free(dw);
}

/* ---- rope ---- */
typedef struct { float *X, *Y, *r; uint32_t T, width, hs; } rope_ctx;
static double rope_loss(void *c)
{
    rope_ctx *k = c;
    memcpy(k->Y, k->X, (size_t)k->T * k->width * sizeof(float));
    tlm_rope_fwd(k->Y, k->T, k->width, k->hs, 10000.0f);
    return probe(k->Y, k->r, (size_t)k->T * k->width);
}
static void test_rope(void **state)
{
    (void)state;
    rope_ctx k = {.T = 9, .width = 24, .hs = 8};
    k.X = randv(9 * 24, 1);
    k.Y = zeros(9 * 24);
    k.r = randv(9 * 24, 1);
    float *dX = malloc(9 * 24 * sizeof(float));
    memcpy(dX, k.r, 9 * 24 * sizeof(float));
    tlm_rope_bwd(dX, k.T, k.width, k.hs, 10000.0f);
    check("rope dX", rope_loss, &k, k.X, dX, 9 * 24, 0, 1e-2f, 2e-3, 1e-2);
    free(k.X); free(k.Y); free(k.r); free(dX);
}

/* ---- attention ---- */
typedef struct { float *Q, *K, *V, *O, *lse, *r, *scratch; uint32_t T, nh, nkv, hs; } att_ctx;
static double att_loss(void *c)
{
    att_ctx *k = c;
    tlm_attention_fwd(k->O, k->lse, k->Q, k->K, k->V, k->T, k->nh, k->nkv, k->hs, k->scratch);
    return probe(k->O, k->r, (size_t)k->T * k->nh * k->hs);
}
/* hs 4 and 6 take the generic path, hs 8 its own instance; groups of 2
 * heads per kv head go through the backward pass in pairs, groups of 1 and 3
 * one by one; T = 9, 11, 13 and 21 end partway through a vector of positions. */
static void check_attention(uint32_t T, uint32_t nh, uint32_t nkv, uint32_t hs)
{
    att_ctx k = {.T = T, .nh = nh, .nkv = nkv, .hs = hs};
    const size_t qn = (size_t)T * nh * hs, kn = (size_t)T * nkv * hs;
    k.Q = randv(qn, 1.5f);
    k.K = randv(kn, 1.5f);
    k.V = randv(kn, 1);
    k.O = zeros(qn);
    k.lse = zeros((size_t)T * nh);
    k.r = randv(qn, 1);
    k.scratch = zeros(tlm_attention_scratch_floats(T, nkv, hs));
    float *dQ = zeros(qn), *dK = zeros(kn), *dV = zeros(kn);
    att_loss(&k); /* the backward pass reads the forward's log-sum-exps */
    tlm_attention_bwd(dQ, dK, dV, k.r, k.Q, k.K, k.V, k.lse, k.T, k.nh, k.nkv, k.hs, k.scratch);
    check("attention dQ", att_loss, &k, k.Q, dQ, qn, 0, 1e-2f, 2e-3, 1e-2);
    check("attention dK", att_loss, &k, k.K, dK, kn, 0, 1e-2f, 2e-3, 1e-2);
    check("attention dV", att_loss, &k, k.V, dV, kn, 0, 1e-2f, 2e-3, 1e-2);
    free(k.Q); free(k.K); free(k.V); free(k.O); free(k.lse); free(k.r); free(k.scratch); free(dQ); free(dK); free(dV);
}
static void test_attention(void **state)
{
    (void)state;
    check_attention(11, 4, 2, 4);
    check_attention(21, 4, 2, 8);
    check_attention(9, 3, 1, 6);
    check_attention(13, 2, 2, 8);
}

/* ---- swiglu ---- */
typedef struct { float *A, *B, *H, *r; size_t n; } sw_ctx;
static double sw_loss(void *c)
{
    sw_ctx *k = c;
    tlm_swiglu_fwd(k->H, k->A, k->B, k->n);
    return probe(k->H, k->r, k->n);
}
static void test_swiglu(void **state)
{
    (void)state;
    sw_ctx k = {.n = 50};
    k.A = randv(50, 4);
    k.B = randv(50, 2);
    k.H = zeros(50);
    k.r = randv(50, 1);
    float *dA = zeros(50), *dB = zeros(50);
    tlm_swiglu_bwd(dA, dB, k.r, k.A, k.B, k.n);
    check("swiglu dA", sw_loss, &k, k.A, dA, 50, 0, 1e-2f, 2e-3, 1e-2);
    check("swiglu dB", sw_loss, &k, k.B, dB, 50, 0, 1e-2f, 2e-3, 1e-2);
    free(k.A); free(k.B); free(k.H); free(k.r); free(dA); free(dB);
}

/* ---- embedding (repeated tokens accumulate) ---- */
typedef struct { float *E, *X, *r; const uint32_t *tok; uint32_t T, dim; } emb_ctx;
static double emb_loss(void *c)
{
    emb_ctx *k = c;
    tlm_embed_fwd(k->X, k->E, k->tok, k->T, k->dim);
    return probe(k->X, k->r, (size_t)k->T * k->dim);
}
static void test_embed(void **state)
{
    (void)state;
    static const uint32_t tok[6] = {3, 1, 3, 0, 4, 3};
    emb_ctx k = {.tok = tok, .T = 6, .dim = 5};
    k.E = randv(6 * 5, 1);
    k.X = zeros(6 * 5);
    k.r = randv(6 * 5, 1);
    float *dE = zeros(6 * 5);
    tlm_embed_bwd(dE, k.r, tok, 6, 5);
    check("embedding dE", emb_loss, &k, k.E, dE, 30, 0, 1e-2f, 2e-3, 1e-2);
    free(k.E); free(k.X); free(k.r); free(dE);
}

/* ---- cross-entropy ---- */
typedef struct { float *L, *tmp; const uint32_t *tgt; uint32_t T, V; } xe_ctx;
static double xe_loss(void *c)
{
    xe_ctx *k = c;
    memcpy(k->tmp, k->L, (size_t)k->T * k->V * sizeof(float));
    return tlm_xent_fwd_bwd(k->tmp, k->tgt, k->T, k->V, 1.0f);
}
static void test_xent(void **state)
{
    (void)state;
    static const uint32_t tgt[4] = {2, 0, 9, 9};
    xe_ctx k = {.tgt = tgt, .T = 4, .V = 10};
    k.L = randv(40, 3);
    k.tmp = zeros(40);
    float *g = malloc(40 * sizeof(float));
    memcpy(g, k.L, 40 * sizeof(float));
    double loss = tlm_xent_fwd_bwd(g, tgt, 4, 10, 1.0f);
    /* the loss itself against a direct double computation */
    double want = 0;
    for (int t = 0; t < 4; t++) {
        double s = 0;
        for (int i = 0; i < 10; i++) s += exp(k.L[t * 10 + i]);
        want += log(s) - k.L[t * 10 + tgt[t]];
    }
    assert_true(fabs(loss - want) < 1e-5 * want);
    check("cross-entropy dlogits", xe_loss, &k, k.L, g, 40, 0, 1e-2f, 2e-3, 1e-2);
    free(k.L); free(k.tmp); free(g);
}

/* ---- distillation: (1 - a) CE + a KL(teacher || softmax) ---- */
typedef struct { float *L; const float *P; const uint32_t *tgt; uint32_t T, V; double a; } kd_ctx;
static double kd_loss(void *c)
{
    kd_ctx *k = c;
    double J = 0;
    for (uint32_t t = 0; t < k->T; t++) {
        const float *l = k->L + (size_t)t * k->V, *p = k->P + (size_t)t * k->V;
        double mx = l[0], s = 0;
        for (uint32_t i = 1; i < k->V; i++) mx = fmax(mx, l[i]);
        for (uint32_t i = 0; i < k->V; i++) s += exp(l[i] - mx);
        const double lse = mx + log(s);
        J += (1 - k->a) * (lse - l[k->tgt[t]]);
        for (uint32_t i = 0; i < k->V; i++) J += k->a * p[i] * (log(p[i]) - (l[i] - lse));
    }
    return J;
}
static void test_distill(void **state)
{
    (void)state;
    static const uint32_t tgt[3] = {1, 7, 7};
    float *P = randv(30, 1);
    for (int t = 0; t < 3; t++) {
        double s = 0;
        for (int i = 0; i < 10; i++) s += P[t * 10 + i] = (float)exp(2 * P[t * 10 + i]);
        for (int i = 0; i < 10; i++) P[t * 10 + i] = (float)(P[t * 10 + i] / s);
    }
    kd_ctx k = {.P = P, .tgt = tgt, .T = 3, .V = 10, .a = 0.3};
    k.L = randv(30, 3);
    float *g = malloc(30 * sizeof(float));
    memcpy(g, k.L, 30 * sizeof(float));
    const double ce = tlm_xent_distill_fwd_bwd(g, tgt, P, 0.3f, 3, 10, 1.0f);
    double want = 0;
    for (int t = 0; t < 3; t++) {
        double s = 0;
        for (int i = 0; i < 10; i++) s += exp(k.L[t * 10 + i]);
        want += log(s) - k.L[t * 10 + tgt[t]];
    }
    assert_true(fabs(ce - want) < 1e-5 * want); /* the reported loss is the cross-entropy */
    check("distillation dlogits", kd_loss, &k, k.L, g, 30, 0, 1e-2f, 2e-3, 1e-2);
    free(k.L); free(P); free(g);
}

/* ---- whole model ---- */
typedef struct { tlm_params *p; tlm_train_ws *ws; const uint32_t *in, *tgt; uint32_t T; } model_ctx;
static double model_loss(void *c)
{
    model_ctx *k = c;
    return tlm_model_fwd_bwd(k->p, NULL, k->in, k->tgt, k->T, 1.0f, k->ws);
}

static void check_model(int shared, float dropout)
{
    tlm_hparams hp = {.dim = 16, .hidden_dim = 24, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .vocab_size = 23,
                      .seq_len = 16, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .shared_classifier = shared};
    tlm_params p, g;
    assert_int_equal(tlm_params_alloc(&p, &hp, NULL), TLM_OK);
    assert_int_equal(tlm_params_alloc(&g, &hp, NULL), TLM_OK);
    tlm_params_init(&p, 5);
    /* larger weights than the training init, so that every path matters */
    for (size_t i = 0; i < p.n; i++) p.data[i] *= 8.0f;
    for (uint32_t l = 0; l < 2; l++)
        for (uint32_t i = 0; i < 16; i++) {
            p.layers[l].attn_norm[i] = 0.5f + (float)tu_uniform(&rng);
            p.layers[l].ffn_norm[i] = 0.5f + (float)tu_uniform(&rng);
        }
    tlm_train_ws *ws;
    assert_int_equal(tlm_train_ws_new(&ws, &hp, 10, NULL), TLM_OK);
    uint32_t in[10], tgt[10];
    for (int t = 0; t < 10; t++) {
        in[t] = (uint32_t)(tu_rand(&rng) % 23);
        tgt[t] = (uint32_t)(tu_rand(&rng) % 23);
    }
    double plain = 0.0;
    if (dropout > 0.0f) plain = tlm_model_fwd_bwd(&p, NULL, in, tgt, 10, 1.0f, ws);
    tlm_train_ws_set_dropout(ws, dropout, 77);
    const double loss = tlm_model_fwd_bwd(&p, &g, in, tgt, 10, 1.0f, ws);
    if (dropout > 0.0f) assert_true(fabs(loss - plain) > 1e-3 * plain); /* the mask did something */
    model_ctx k = {&p, ws, in, tgt, 10};
    const uint32_t n = tlm_params_count(&p);
    for (uint32_t i = 0; i < n; i++) {
        tlm_param_tensor t, gt;
        tlm_params_tensor(&p, i, &t);
        tlm_params_tensor(&g, i, &gt);
        char name[64];
        snprintf(name, sizeof name, "model %s%s %s l%u", shared ? "shared" : "separate", dropout > 0.0f ? " dropout" : "",
                 tlm_role_name(t.role), t.layer);
        check(name, model_loss, &k, t.data, gt.data, (size_t)t.rows * t.cols, 12, 3e-3f, 5e-3, 2e-2);
    }
    tlm_train_ws_free(ws);
    tlm_params_free(&p);
    tlm_params_free(&g);
}

static void test_whole_model(void **state)
{
    (void)state;
    check_model(0, 0.0f);
    check_model(1, 0.0f);
}

/* With dropout the loss is a fixed function of the weights for a fixed
 * mask seed, so its gradient must match finite differences too. */
static void test_whole_model_dropout(void **state)
{
    (void)state;
    check_model(0, 0.3f);
    check_model(1, 0.5f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),    cmocka_unit_test(test_rmsnorm), cmocka_unit_test(test_rope),
        cmocka_unit_test(test_attention), cmocka_unit_test(test_swiglu),  cmocka_unit_test(test_embed),
        cmocka_unit_test(test_xent),      cmocka_unit_test(test_distill),      cmocka_unit_test(test_whole_model),
        cmocka_unit_test(test_whole_model_dropout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
