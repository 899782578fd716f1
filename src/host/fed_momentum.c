#include "fed_momentum.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "tritlm/model.h"

enum { HEADER = 24, VERSION = 1 };

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t x)
{
    p[0] = (uint8_t)x, p[1] = (uint8_t)(x >> 8), p[2] = (uint8_t)(x >> 16), p[3] = (uint8_t)(x >> 24);
}

tlm_status tlm_fed_momentum_load(tlm_fed_momentum *m, const char *path, size_t n, uint32_t model_id, tlm_error *err)
{
    memset(m, 0, sizeof *m);
    if (n > UINT32_MAX) return tlm_fail(err, TLM_ERR_ARG, "too many parameters for a momentum state");
    m->v = calloc(n ? n : 1, sizeof *m->v);
    if (!m->v) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    m->n = n;
    if (access(path, F_OK) != 0 && errno == ENOENT) return TLM_OK; /* the first round: no velocity yet */
    uint8_t *b = NULL;
    size_t len = 0;
    tlm_status st = tlm_read_file(path, &b, &len, err);
    if (st) {
        tlm_fed_momentum_free(m);
        return st;
    }
    if (len < HEADER || memcmp(b, "TLMV", 4) != 0)
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s is not a momentum state (no TLMV header)", path);
    else if (get32(b + 4) != VERSION)
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: momentum state version %u, this build reads %u", path, get32(b + 4), VERSION);
    else if (get32(b + 12) != n || len != HEADER + 4 * (size_t)n)
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s holds %u values in %zu bytes; the model has %zu parameters", path, get32(b + 12),
                      len, n);
    else if (tlm_crc32(0, b + HEADER, 4 * n) != get32(b + 16))
        st = tlm_fail(err, TLM_ERR_FORMAT, "%s: momentum state damaged (checksum mismatch)", path);
    else if (get32(b + 8) != model_id)
        st = tlm_fail(err, TLM_ERR_ARG,
                      "%s belongs to another global model (id %08x, this one is %08x): use the state saved by the round "
                      "that wrote this model, or a new path to start the momentum from zero",
                      path, get32(b + 8), model_id);
    for (size_t i = 0; !st && i < n; i++) {
        const uint32_t u = get32(b + HEADER + 4 * i);
        memcpy(&m->v[i], &u, sizeof u);
        if (!isfinite(m->v[i]))
            st = tlm_fail(err, TLM_ERR_FORMAT, "%s: value %zu is not finite", path, i);
    }
    free(b);
    if (st) tlm_fed_momentum_free(m);
    else m->started = 1;
    return st;
}

void tlm_fed_momentum_free(tlm_fed_momentum *m)
{
    free(m->v);
    memset(m, 0, sizeof *m);
}

void tlm_fed_momentum_step(tlm_fed_momentum *m, float beta, float server_lr, const float *global, tlm_params *out)
{
    for (size_t i = 0; i < m->n; i++) {
        const float g = global[i];
        m->v[i] = beta * m->v[i] + (out->data[i] - g) / server_lr;
        out->data[i] = g + server_lr * m->v[i];
    }
}

tlm_status tlm_fed_momentum_save(const tlm_fed_momentum *m, const char *path, uint32_t model_id, tlm_error *err)
{
    const size_t len = HEADER + 4 * m->n;
    uint8_t *b = calloc(len, 1);
    if (!b) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    memcpy(b, "TLMV", 4);
    put32(b + 4, VERSION);
    put32(b + 8, model_id);
    put32(b + 12, (uint32_t)m->n);
    for (size_t i = 0; i < m->n; i++) {
        uint32_t u;
        memcpy(&u, &m->v[i], sizeof u);
        put32(b + HEADER + 4 * i, u);
    }
    put32(b + 16, tlm_crc32(0, b + HEADER, 4 * m->n));
    const tlm_status st = tlm_write_file_atomic(path, b, len, err);
    free(b);
    return st;
}
