/* tritlm quantize --device: hardware-aware quantization. Measures what
 * each weight type costs a layer on the named device (loss on calibration
 * text on the host; flash, RAM and instructions per token in the device's
 * firmware under QEMU), chooses a type per layer with hwplan.c's exact
 * search and, once the model is written, checks the plan in QEMU. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../host/eval.h"
#include "../host/fileio.h"
#include "../host/hwplan.h"
#include "../host/model_file.h"
#include "../host/stories.h"
#include "cli.h"
#include "fw_run.h"
#include "hwaware.h"
#include "tritlm/runtime.h"

static const uint16_t hw_wtype[TLM_HW_NTYPES] = {TLM_WTYPE_F32, TLM_WTYPE_I8, TLM_WTYPE_T2, TLM_WTYPE_T3};
static const char *const hw_name[TLM_HW_NTYPES] = {"fp32", "int8", "t2", "t3"};

/* The first n stories of text (the calibration set): the bytes up to the
 * start of story n + 1, as the evaluation protocol splits them. */
static tlm_status first_stories(const char *text, size_t len, const char *sep, uint32_t n, size_t *prefix,
                                tlm_error *err)
{
    tlm_stories s;
    const tlm_status st = tlm_stories_split_by(text, len, sep, &s, err);
    if (st) return st;
    *prefix = s.n > n ? (size_t)(s.items[n].text - text) : len;
    tlm_stories_free(&s);
    return TLM_OK;
}

/* Calibration loss of p quantized under q. */
static tlm_status calib_loss(const tlm_params *p, const tlm_quant_cfg *q, const tlm_vocab *v, uint32_t bos, uint32_t eos,
                             const char *text, size_t len, const cli_hw_opts *o, double *loss, tlm_error *err)
{
    uint8_t *img = NULL;
    size_t bytes = 0;
    tlm_status st = tlm_quant_image(p, q, v, bos, eos, &img, &bytes, err);
    tlm_model m;
    if (!st) st = tlm_model_open(&m, img, bytes, err);
    if (!st) {
        tlm_eval_opts eo;
        memset(&eo, 0, sizeof eo);
        eo.ctx = o->ctx;
        eo.separator = o->separator;
        tlm_eval_result r;
        st = tlm_eval_text(&m, text, len, &eo, &r, err);
        if (!st) *loss = r.loss;
        tlm_eval_result_free(&r);
    }
    free(img);
    return st;
}

static tlm_status write_image(const tlm_params *p, const tlm_quant_cfg *q, const tlm_vocab *v, uint32_t bos,
                              uint32_t eos, const char *path, size_t *bytes, tlm_error *err)
{
    uint8_t *img = NULL;
    tlm_status st = tlm_quant_image(p, q, v, bos, eos, &img, bytes, err);
    if (!st) st = tlm_write_file_atomic(path, img, *bytes, err);
    free(img);
    return st;
}

/* Model bytes a measurement build may have (the targets' linker scripts
 * give flash 4 MB, and the firmware's code needs some of it). */
#define QEMU_MODEL_MAX ((size_t)3840u * 1024u)

/* One measurement build: its RAM (infinite if it did not fit the RAM
 * budget), flash and instructions per token. */
typedef struct {
    size_t image_bytes;
    double ram, flash, insns;
} fw_cost;

static int measure(const cli_hw_opts *o, const char *model, const char *dir, fw_cost *c)
{
    const cli_fw_job job = {.target = o->dev->target, .model = model, .dir = dir, .ctx = o->ctx,
                            .ram_kb = o->ram_kb, .steps = o->steps, .kv8 = 1, .run = 1, .quiet = 1};
    cli_fw_result r;
    const int bad = cli_fw_build_run("quantize", &job, &r);
    if (bad && r.script_status == 3) { /* too large for the RAM: this type cannot be used */
        cli_fw_result_free(&r);
        c->ram = INFINITY;
        c->flash = c->insns = 0;
        return 0;
    }
    const int ok = !bad && r.have_exit && r.exit_status == 0 && r.have_insns;
    if (!bad && !ok)
        fprintf(stderr, "tritlm quantize: the firmware of %s %s (run 'tritlm firmware --target %s -m %s --kv-int8 --run')\n",
                model, r.have_insns || !r.have_exit ? "failed" : "ran without instruction counts", o->dev->target, model);
    c->ram = r.static_bytes + r.stack_bytes;
    c->flash = r.flash_bytes;
    c->insns = r.insns_per_token;
    cli_fw_result_free(&r);
    return ok ? 0 : 1;
}

/* Two plans give the same trits (t2 and t3 pack the same ternary
 * weights, so they have the same loss). */
static int same_trits(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i] && !(a[i] >= TLM_HW_T2 && b[i] >= TLM_HW_T2)) return 0;
    return 1;
}

/* The plans worth measuring, from the search's `found` leaders (n items
 * each in cands, their sums in res; room for cap): the first LEADERS that
 * differ in their trits, then up to SWAPS plans made from the best by
 * swapping two layers' types (the same flash and instructions, since the
 * layers have one shape; more loss by the sum, which may misjudge it),
 * least added loss by the sum first. Returns how many. */
static size_t measured_candidates(const tlm_hw_item *items, size_t n, uint8_t *cands, tlm_hw_result *res, size_t found,
                                  size_t cap)
{
    enum { LEADERS = 4, SWAPS = 3 };
    const size_t L = n - 1u; /* the layers; the last item is the embedding */
    size_t kept = 0;
    for (size_t j = 0; j < found && kept < LEADERS; j++) {
        int dup = 0;
        for (size_t k = 0; k < kept && !dup; k++) dup = same_trits(cands + j * n, cands + k * n, n);
        if (dup) continue;
        memmove(cands + kept * n, cands + j * n, n);
        res[kept++] = res[j];
    }
    for (size_t added = 0; added < SWAPS && kept < cap; added++) {
        double best = INFINITY;
        size_t bi = 0, bj = 0;
        uint8_t *t = cands + kept * n; /* the next slot, as scratch */
        for (size_t i = 0; i < L; i++)
            for (size_t j = i + 1; j < L; j++) {
                const int ti = cands[i], tj = cands[j];
                if (same_trits(&cands[i], &cands[j], 1)) continue;
                memcpy(t, cands, n);
                t[i] = (uint8_t)tj;
                t[j] = (uint8_t)ti;
                int seen = 0;
                for (size_t k = 0; k < kept && !seen; k++) seen = !memcmp(cands + k * n, t, n);
                const double d = items[i].dloss[tj] + items[j].dloss[ti] - items[i].dloss[ti] - items[j].dloss[tj];
                if (!seen && d < best) {
                    best = d;
                    bi = i;
                    bj = j;
                }
            }
        if (!isfinite(best)) break;
        memcpy(t, cands, n);
        t[bi] = cands[bj];
        t[bj] = cands[bi];
        res[kept] = res[0];
        res[kept].dloss += best;
        kept++;
    }
    return kept;
}

int cli_hw_plan(const tlm_params *p, const tlm_vocab *v, uint32_t bos, uint32_t eos, tlm_quant_cfg *q,
                const cli_hw_opts *o, cJSON *json)
{
    const uint32_t L = p->hp.n_layers;
    if (L > TLM_QUANT_PLAN_MAX) {
        fprintf(stderr, "tritlm quantize: --device plans models of up to %u layers; this one has %u\n",
                TLM_QUANT_PLAN_MAX, L);
        return TLM_EXIT_USAGE;
    }
    tlm_error err;
    uint8_t *text = NULL;
    size_t tlen = 0;
    if (tlm_read_text(o->calib, &text, &tlen, &err) ||
        first_stories((const char *)text, tlen, o->separator, o->calib_stories, &tlen, &err)) {
        free(text);
        return cli_fail("quantize", &err);
    }

    int rc = TLM_EXIT_FAIL;
    char work[4096];
    if (tlm_temp_dir(work, sizeof work, "tritlm-hw", &err)) {
        free(text);
        return cli_fail("quantize", &err);
    }
    /* the measurement builds share one compiled core (firmware/build.sh) */
    const int own_cache = !getenv("TLM_FW_CACHE");
    if (own_cache) setenv("TLM_FW_CACHE", work, 1);

    /* ---- loss: each layer (and the embedding) alone at each type ---- */
    tlm_quant_cfg base = *q;
    base.n_plan = (uint16_t)L;
    base.keep_ternary = 1;
    memset(base.plan, TLM_WTYPE_F32, sizeof base.plan);
    base.embed = TLM_WTYPE_F32;
    double loss0 = 0, *dl = calloc((size_t)(L + 1u) * TLM_HW_NTYPES, sizeof *dl);
    tlm_hw_item *items = calloc(L + 1u, sizeof *items);
    uint8_t *choice = calloc(L + 1u, 1);
    if (!dl || !items || !choice) {
        fprintf(stderr, "tritlm quantize: out of memory\n");
        goto out;
    }
    fprintf(stderr, "quantize: measuring each layer's loss at int8 and ternary on %s (%zu bytes)\n", o->calib, tlen);
    if (calib_loss(p, &base, v, bos, eos, (const char *)text, tlen, o, &loss0, &err)) {
        rc = cli_fail("quantize", &err);
        goto out;
    }
    for (uint32_t i = 0; i <= L; i++) {
        for (int k = TLM_HW_I8; k <= TLM_HW_T3; k += 2) { /* t2 and t3 hold the same trits: one loss */
            tlm_quant_cfg c = base;
            if (i < L) c.plan[i] = (uint8_t)hw_wtype[k];
            else c.embed = hw_wtype[k];
            double l = 0;
            if (calib_loss(p, &c, v, bos, eos, (const char *)text, tlen, o, &l, &err)) {
                rc = cli_fail("quantize", &err);
                goto out;
            }
            dl[i * TLM_HW_NTYPES + k] = l - loss0;
        }
        dl[i * TLM_HW_NTYPES + TLM_HW_T2] = dl[i * TLM_HW_NTYPES + TLM_HW_T3];
    }

    /* ---- cost on the device: every layer at one type, the embedding at int8;
     * then the layers at int8 and the embedding at fp32 and t3 ---- */
    fw_cost lay[TLM_HW_NTYPES], emb[TLM_HW_NTYPES];
    memset(lay, 0, sizeof lay);
    memset(emb, 0, sizeof emb);
    fprintf(stderr, "quantize: measuring each weight type on %s's core (%s firmware in QEMU, context %u, %u positions)\n",
            o->dev->name, o->dev->target, o->ctx, o->steps);
    static const int order[TLM_HW_NTYPES + 2] = {TLM_HW_I8, TLM_HW_F32, TLM_HW_T2, TLM_HW_T3, TLM_HW_NTYPES,
                                                  TLM_HW_NTYPES + 1}; /* int8 first: if it does not fit, stop */
    for (int r = 0; r < TLM_HW_NTYPES + 2; r++) {
        const int run = order[r];
        tlm_quant_cfg c = base;
        fw_cost *dst;
        const int k = run < TLM_HW_NTYPES ? run : (run == TLM_HW_NTYPES ? TLM_HW_F32 : TLM_HW_T3);
        if (run < TLM_HW_NTYPES) {
            memset(c.plan, hw_wtype[k], sizeof c.plan);
            c.embed = TLM_WTYPE_I8;
            dst = &lay[k];
        } else {
            memset(c.plan, TLM_WTYPE_I8, sizeof c.plan);
            c.embed = hw_wtype[k];
            dst = &emb[k];
        }
        char path[4200], fwdir[4200];
        snprintf(path, sizeof path, "%s/m%d.tlm", work, run);
        snprintf(fwdir, sizeof fwdir, "%s/fw%d", work, run);
        if (write_image(p, &c, v, bos, eos, path, &dst->image_bytes, &err)) {
            rc = cli_fail("quantize", &err);
            goto out;
        }
        if (dst->image_bytes > QEMU_MODEL_MAX && run != TLM_HW_I8) {
            /* the emulator's flash is 4 MB: this type is left out (an fp32
             * model that large fits none of the devices either) */
            fprintf(stderr, "quantize: %s %s left out: the model with it everywhere (%zu bytes) is more than the "
                            "emulator's flash holds\n", run < TLM_HW_NTYPES ? "layers at" : "an embedding at",
                    hw_name[k], dst->image_bytes);
            dst->ram = INFINITY;
            continue;
        }
        if (measure(o, path, fwdir, dst)) goto out;
        if (run == TLM_HW_I8 && !isfinite(dst->ram)) break;
    }
    emb[TLM_HW_I8] = lay[TLM_HW_I8];
    if (!isfinite(lay[TLM_HW_I8].ram)) {
        /* even int8 does not fit: the context is what to cut (the arena of
         * the int8 build just written) */
        char path[4200];
        snprintf(path, sizeof path, "%s/m%d.tlm", work, TLM_HW_I8);
        tlm_model_file mf;
        uint32_t fit = 0;
        if (!tlm_model_file_open(&mf, path, &err)) {
            for (uint32_t ctx = o->ctx; ctx >= 16 && !fit; ctx -= ctx > 64 ? 16 : 8)
                if (tlm_runtime_arena_size_flags(&mf.model, ctx, TLM_RT_KV_INT8) + 12u * 1024u <= (size_t)o->ram_kb * 1024u)
                    fit = ctx;
            tlm_model_file_close(&mf);
        }
        fprintf(stderr, "tritlm quantize: at context %u the model's activations and int8 KV cache do not fit %s's %u KB of RAM%s",
                o->ctx, o->dev->name, o->ram_kb, fit ? "" : "\n");
        if (fit) fprintf(stderr, "; try --deploy-ctx %u\n", fit);
        rc = TLM_EXIT_FAIL;
        goto out;
    }

    /* ---- items: costs relative to the all-int8 build, shifted to >= 0 ---- */
    const fw_cost *b8 = &lay[TLM_HW_I8];
    const double code = b8->flash - (double)b8->image_bytes; /* the firmware without the model */
    double fixed_flash = b8->flash, fixed_insns = b8->insns;
    for (uint32_t i = 0; i <= L; i++) {
        tlm_hw_item *it = &items[i];
        const fw_cost *c = i < L ? lay : emb;
        const double share = i < L ? 1.0 / L : 1.0;
        for (int k = 0; k < TLM_HW_NTYPES; k++) {
            it->allowed[k] = i < L || k != TLM_HW_T2; /* the embedding's ternary is measured as t3 */
            it->dloss[k] = dl[i * TLM_HW_NTYPES + k];
            it->ram[k] = c[k].ram;
            it->flash[k] = ((double)c[k].image_bytes - (double)b8->image_bytes) * share;
            it->insns[k] = (c[k].insns - b8->insns) * share;
        }
        double mf = INFINITY, mi = INFINITY;
        for (int k = 0; k < TLM_HW_NTYPES; k++)
            if (it->allowed[k] && isfinite(it->ram[k])) {
                if (it->flash[k] < mf) mf = it->flash[k];
                if (it->insns[k] < mi) mi = it->insns[k];
            }
        if (!isfinite(mf)) mf = mi = 0;
        for (int k = 0; k < TLM_HW_NTYPES; k++) {
            it->flash[k] -= mf;
            it->insns[k] -= mi;
        }
        fixed_flash += mf;
        fixed_insns += mi;
    }
    const double flash_budget = (double)o->flash_kb * 1024.0, ram_budget = (double)o->ram_kb * 1024.0;
    const double insn_budget = o->min_tok_s > 0 ? (double)o->mhz * 1e6 / o->min_tok_s : 0.0;
    tlm_hw_budget b = {flash_budget - fixed_flash, insn_budget > 0 ? insn_budget - fixed_insns : 0.0, ram_budget,
                       o->quantum};
    if (insn_budget > 0 && b.insns <= 0) { /* not even the part no plan changes */
        fprintf(stderr, "tritlm quantize: nothing fits %s: the fastest plan needs %.0f instructions per token "
                        "(%.1f tokens/s at %u MHz); --min-tok-s %g allows %.0f\n", o->dev->name, fixed_insns,
                (double)o->mhz * 1e6 / fixed_insns, o->mhz, o->min_tok_s, insn_budget);
        rc = TLM_EXIT_FAIL;
        goto out;
    }
    /* the search adds the items' losses, which is exact for int8 but not
     * for several ternary layers together: the front's leaders are
     * measured on the calibration text and the least real loss wins */
    enum { SEARCHED = 64 };
    tlm_hw_result cand_res[SEARCHED];
    double measured[SEARCHED];
    size_t found = 0, pick = 0;
    uint8_t *cands = calloc((size_t)SEARCHED * (L + 1u), 1);
    if (!cands) {
        fprintf(stderr, "tritlm quantize: out of memory\n");
        goto out;
    }
    if (tlm_hw_plans(items, L + 1u, &b, SEARCHED, cands, cand_res, &found, &err)) {
        fprintf(stderr, "tritlm quantize: nothing fits %s: %s\n", o->dev->name, err.msg);
        free(cands);
        rc = TLM_EXIT_FAIL;
        goto out;
    }
    found = measured_candidates(items, L + 1u, cands, cand_res, found, SEARCHED);
    for (size_t j = 0; j < found; j++) {
        tlm_quant_cfg c = base;
        for (uint32_t l = 0; l < L; l++) c.plan[l] = (uint8_t)hw_wtype[cands[j * (L + 1u) + l]];
        c.embed = hw_wtype[cands[j * (L + 1u) + L]];
        if (calib_loss(p, &c, v, bos, eos, (const char *)text, tlen, o, &measured[j], &err)) {
            free(cands);
            rc = cli_fail("quantize", &err);
            goto out;
        }
        if (measured[j] < measured[pick]) pick = j;
    }
    memcpy(choice, cands + pick * (L + 1u), L + 1u);
    const tlm_hw_result res = cand_res[pick];
    q->n_plan = (uint16_t)L;
    for (uint32_t l = 0; l < L; l++) q->plan[l] = (uint8_t)hw_wtype[choice[l]];
    q->embed = hw_wtype[choice[L]];

    const double flash = fixed_flash + res.flash, insns = fixed_insns + res.insns;
    fprintf(stderr, "quantize: %s: %s; context %u, int8 KV cache\n", o->dev->name, o->dev->chip, o->ctx);
    fprintf(stderr, "  calibration loss with every weight fp32: %.4f; added by one item alone at int8 / ternary:\n", loss0);
    for (uint32_t i = 0; i <= L; i++) {
        char name[24];
        if (i < L) snprintf(name, sizeof name, "layer %u", i);
        else snprintf(name, sizeof name, "embedding");
        fprintf(stderr, "  %-10s %+8.4f / %+8.4f  -> %s\n", name, dl[i * TLM_HW_NTYPES + TLM_HW_I8],
                dl[i * TLM_HW_NTYPES + TLM_HW_T3], hw_name[choice[i]]);
    }
    fprintf(stderr,
            "  predicted: flash %.0f of %.0f bytes (firmware code %.0f), RAM %.0f of %.0f, %.0f instructions per token "
            "(about %.0f tokens/s at %u MHz), calibration loss %.4f (measured %.4f)\n",
            flash, flash_budget, code, res.ram, ram_budget, insns, (double)o->mhz * 1e6 / insns, o->mhz, loss0 + res.dloss,
            measured[pick]);
    if (!res.exact) fprintf(stderr, "  (the search's front was cut: the plan may not be the best)\n");
    if (found > 1) {
        fprintf(stderr, "  the search's best plans with different trits, and the best with two layers swapped; "
                        "calibration loss predicted (sum of the items) / measured:\n");
        for (size_t j = 0; j < found; j++) {
            char types[4 * TLM_QUANT_PLAN_MAX + 16];
            size_t tl = 0;
            for (uint32_t i = 0; i <= L && tl + 8 < sizeof types; i++)
                tl += (size_t)snprintf(types + tl, sizeof types - tl, "%s%s", i ? (i == L ? "; " : ",") : "",
                                       hw_name[cands[j * (L + 1u) + i]]);
            fprintf(stderr, "    %s %-40s %.4f / %.4f, %.0f instructions per token\n", j == pick ? "->" : "  ", types,
                    loss0 + cand_res[j].dloss, measured[j], fixed_insns + cand_res[j].insns);
        }
    }
    if (json) {
        cJSON *pj = cJSON_AddObjectToObject(json, "device");
        cJSON_AddStringToObject(pj, "name", o->dev->name);
        cJSON_AddStringToObject(pj, "target", o->dev->target);
        cJSON_AddNumberToObject(pj, "ram_bytes", ram_budget);
        cJSON_AddNumberToObject(pj, "flash_bytes", flash_budget);
        cJSON_AddNumberToObject(pj, "mhz", o->mhz);
        cJSON_AddNumberToObject(pj, "ctx", o->ctx);
        cJSON *arr = cJSON_AddArrayToObject(json, "plan");
        for (uint32_t i = 0; i <= L; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "item", i < L ? "layer" : "embedding");
            if (i < L) cJSON_AddNumberToObject(e, "layer", i);
            cJSON_AddStringToObject(e, "type", hw_name[choice[i]]);
            cJSON_AddNumberToObject(e, "dloss_int8", dl[i * TLM_HW_NTYPES + TLM_HW_I8]);
            cJSON_AddNumberToObject(e, "dloss_ternary", dl[i * TLM_HW_NTYPES + TLM_HW_T3]);
            cJSON_AddItemToArray(arr, e);
        }
        cJSON *pr = cJSON_AddObjectToObject(json, "predicted");
        cJSON_AddNumberToObject(pr, "flash_bytes", round(flash));
        cJSON_AddNumberToObject(pr, "ram_bytes", res.ram);
        cJSON_AddNumberToObject(pr, "insns_per_token", round(insns));
        cJSON_AddNumberToObject(pr, "est_tokens_per_s", (double)o->mhz * 1e6 / insns);
        cJSON_AddNumberToObject(pr, "calib_loss_fp32", loss0);
        cJSON_AddNumberToObject(pr, "calib_loss", loss0 + res.dloss);
        cJSON_AddNumberToObject(pr, "calib_loss_measured", measured[pick]);
        cJSON *ld = cJSON_AddArrayToObject(json, "candidates");
        for (size_t j = 0; j < found; j++) {
            cJSON *e = cJSON_CreateObject();
            cJSON *ty = cJSON_AddArrayToObject(e, "types");
            for (uint32_t i = 0; i <= L; i++) cJSON_AddItemToArray(ty, cJSON_CreateString(hw_name[cands[j * (L + 1u) + i]]));
            cJSON_AddNumberToObject(e, "calib_loss_predicted", loss0 + cand_res[j].dloss);
            cJSON_AddNumberToObject(e, "calib_loss_measured", measured[j]);
            cJSON_AddBoolToObject(e, "chosen", j == pick);
            cJSON_AddItemToArray(ld, e);
        }
    }
    free(cands);
    rc = 0;
out:
    free(dl);
    free(items);
    free(choice);
    free(text);
    /* the measurement builds are not the user's: remove them */
    if (own_cache) unsetenv("TLM_FW_CACHE");
    if (tlm_remove_tree(work) != 0) fprintf(stderr, "tritlm quantize: could not remove %s\n", work);
    return rc;
}

int cli_hw_verify(const char *model, const cli_hw_opts *o, cJSON *json)
{
    char work[4096];
    tlm_error err;
    if (tlm_temp_dir(work, sizeof work, "tritlm-hw", &err)) return cli_fail("quantize", &err);
    fw_cost c;
    memset(&c, 0, sizeof c);
    const int bad = measure(o, model, work, &c);
    tlm_remove_tree(work);
    if (bad || !isfinite(c.ram)) {
        fprintf(stderr, "tritlm quantize: the planned model %s in %s's firmware\n",
                bad ? "failed" : "did not fit the RAM", o->dev->name);
        return TLM_EXIT_FAIL;
    }
    const double flash_budget = (double)o->flash_kb * 1024.0;
    fprintf(stderr, "  measured (QEMU, %s): flash %.0f, RAM %.0f, %.0f instructions per token (about %.0f tokens/s at %u MHz)\n",
            o->dev->target, c.flash, c.ram, c.insns, (double)o->mhz * 1e6 / c.insns, o->mhz);
    if (json) {
        cJSON *m = cJSON_AddObjectToObject(json, "measured");
        cJSON_AddNumberToObject(m, "flash_bytes", c.flash);
        cJSON_AddNumberToObject(m, "ram_bytes", c.ram);
        cJSON_AddNumberToObject(m, "insns_per_token", c.insns);
        cJSON_AddNumberToObject(m, "est_tokens_per_s", (double)o->mhz * 1e6 / c.insns);
    }
    if (c.flash > flash_budget || c.ram > (double)o->ram_kb * 1024.0) {
        fprintf(stderr, "tritlm quantize: the planned model does not fit %s after all (flash %.0f of %.0f)\n",
                o->dev->name, c.flash, flash_budget);
        return TLM_EXIT_FAIL;
    }
    return 0;
}
