/* Next-token sampling: greedy, temperature, nucleus (top-p). The generator
 * is PCG32 (O'Neill 2014): small state, good statistics, fully seedable. */
#include <math.h>

#include "ops.h"
#include "tritlm/sampler.h"

uint32_t tlm_sampler_next_u32(tlm_sampler *s)
{
    uint64_t old = s->state;
    s->state = old * 6364136223846793005ull + s->inc;
    uint32_t xs = (uint32_t)(((old >> 18) ^ old) >> 27);
    uint32_t rot = (uint32_t)(old >> 59);
    return (xs >> rot) | (xs << ((32u - rot) & 31u));
}

void tlm_sampler_init(tlm_sampler *s, float temperature, float top_p, uint64_t seed)
{
    s->temperature = temperature;
    s->top_p = top_p;
    s->state = 0;
    s->inc = (seed << 1) | 1u;
    (void)tlm_sampler_next_u32(s);
    s->state += seed;
    (void)tlm_sampler_next_u32(s);
}

/* Uniform in [0, 1) with 24 bits. */
static float uniform01(tlm_sampler *s) { return (float)(tlm_sampler_next_u32(s) >> 8) * (1.0f / 16777216.0f); }

uint32_t tlm_argmax(const float *v, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

typedef struct {
    float p;
    uint32_t id;
} cand;

size_t tlm_sampler_scratch_bytes(uint32_t n) { return (size_t)n * sizeof(cand); }

/* x sorts before y: higher probability first, lower id on ties. */
static int before(const cand *x, const cand *y) { return x->p > y->p || (x->p == y->p && x->id < y->id); }

static void sift_down(cand *a, size_t root, size_t n)
{
    for (;;) {
        size_t child = 2u * root + 1u;
        if (child >= n) return;
        if (child + 1u < n && before(&a[child], &a[child + 1u])) child++;
        if (!before(&a[root], &a[child])) return;
        cand t = a[root];
        a[root] = a[child];
        a[child] = t;
        root = child;
    }
}

/* Heap sort into `before` order (in place, no recursion). */
static void sort_cands(cand *a, size_t n)
{
    for (size_t i = n / 2u; i-- > 0;) sift_down(a, i, n);
    for (size_t end = n; end > 1; end--) {
        cand t = a[0];
        a[0] = a[end - 1u];
        a[end - 1u] = t;
        sift_down(a, 0, end - 1u);
    }
}

static uint32_t sample_full(const float *p, uint32_t n, float coin)
{
    float cdf = 0.0f;
    for (uint32_t i = 0; i < n; i++) {
        cdf += p[i];
        if (coin < cdf) return i;
    }
    return n - 1u; /* rounding left the sum just below coin */
}

static uint32_t sample_top_p(const float *p, uint32_t n, float top_p, float coin, cand *c)
{
    /* A token below (1 - top_p) / (n - 1) cannot be needed to reach top_p:
     * even all such tokens together hold less than 1 - top_p. */
    const float cutoff = n > 1 ? (1.0f - top_p) / (float)(n - 1u) : 0.0f;
    size_t m = 0;
    for (uint32_t i = 0; i < n; i++)
        if (p[i] >= cutoff) c[m++] = (cand){p[i], i};
    sort_cands(c, m);
    float cum = 0.0f;
    size_t last = m - 1u;
    for (size_t i = 0; i < m; i++) {
        cum += c[i].p;
        if (cum > top_p) {
            last = i;
            break;
        }
    }
    float r = coin * cum, acc = 0.0f;
    for (size_t i = 0; i <= last; i++) {
        acc += c[i].p;
        if (r < acc) return c[i].id;
    }
    return c[last].id;
}

uint32_t tlm_sample(tlm_sampler *s, float *logits, uint32_t n, void *scratch)
{
    if (!(s->temperature > 0.0f)) return tlm_argmax(logits, n);
    for (uint32_t i = 0; i < n; i++) logits[i] /= s->temperature;
    tlm_softmax(logits, n);
    float coin = uniform01(s);
    if (s->top_p > 0.0f && s->top_p < 1.0f) return sample_top_p(logits, n, s->top_p, coin, (cand *)scratch);
    return sample_full(logits, n, coin);
}
