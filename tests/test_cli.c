/* The tritlm executable as a user runs it: conformance with llama2.c's
 * greedy output, --help everywhere, clear errors and exit codes, JSON. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "../src/host/fileio.h"
#include "../src/host/model_file.h"
#include "../src/host/train/params.h"
#include "testutil.h"

static char *out_text, *err_text; /* owned by tu_run */
static const char *model;

#define run(...) tu_run(&out_text, &err_text, __VA_ARGS__)

static void test_conformance_greedy_200(void **state)
{
    (void)state;
    assert_int_equal(run("generate -m '%s' -n 200 -t 0", model), 0);
    uint8_t *want;
    size_t n;
    assert_int_equal(tlm_read_file(tu_data("llama2c/stories260K_greedy_200steps_expected.txt"), &want, &n, NULL), TLM_OK);
    assert_int_equal(strlen(out_text), n);
    assert_memory_equal(out_text, want, n);
    assert_non_null(strstr(err_text, "tok/s"));
    free(want);
}

static void test_prompt_and_seed(void **state)
{
    (void)state;
    assert_int_equal(run("generate -m '%s' -p 'Once upon a time, Tom' -n 40 -t 0", model), 0);
    assert_ptr_equal(strstr(out_text, "Once upon a time, Tom"), out_text);
    assert_int_equal(run("generate -m '%s' -n 60 -t 1.0 --top-p 0.9 --seed 5", model), 0);
    char *first = strdup(out_text);
    assert_int_equal(run("generate -m '%s' -n 60 -t 1.0 --top-p 0.9 --seed 5", model), 0);
    assert_string_equal(first, out_text);
    assert_int_equal(run("generate -m '%s' -n 60 -t 1.0 --top-p 0.9 --seed 6", model), 0);
    assert_string_not_equal(first, out_text);
    free(first);
}

/* The file at path holds exactly want[0..n). */
static void assert_file_holds(const char *path, const void *want, size_t n)
{
    uint8_t *got;
    size_t got_n;
    assert_int_equal(tlm_read_file(path, &got, &got_n, NULL), TLM_OK);
    assert_int_equal(got_n, n);
    assert_memory_equal(got, want, n);
    free(got);
}

/* --stories: story k is the text a single run with seed S+k prints, in
 * order, whatever the thread count; the file is a corpus eval reads. */
static void test_story_corpus(void **state)
{
    (void)state;
    enum { N = 7 };
    char *want = NULL;
    size_t want_len = 0;
    FILE *w = open_memstream(&want, &want_len);
    assert_non_null(w);
    for (int k = 0; k < N; k++) {
        assert_int_equal(run("generate -m '%s' -p 'Tom' -n 48 -t 1 --top-p 1 --seed %d", model, 40 + k), 0);
        fprintf(w, "%s<|endoftext|>\n", out_text);
    }
    fclose(w);
    assert_int_equal(run("generate -m '%s' -p 'Tom' -n 48 -t 1 --top-p 1 --seed 40 --stories %d --threads 1", model, N), 0);
    assert_string_equal(out_text, want);
    assert_non_null(strstr(err_text, "7 stories"));
    assert_int_equal(run("generate -m '%s' -p 'Tom' -n 48 -t 1 --top-p 1 --seed 40 --stories %d --threads 3 -o '%s'",
                         model, N, tu_tmp("corpus.txt")), 0);
    assert_file_holds(tu_tmp("corpus.txt"), want, want_len);
    free(want);
    assert_int_equal(run("eval -m '%s' --text '%s' --json", model, tu_tmp("corpus.txt")), 0);
    cJSON *j = cJSON_Parse(out_text);
    assert_non_null(j);
    assert_int_equal((int)cJSON_GetObjectItem(j, "stories")->valuedouble, N);
    cJSON_Delete(j);
    assert_int_equal(run("generate -m '%s' -o '%s'", model, tu_tmp("x.txt")), 2);
    assert_non_null(strstr(err_text, "go with --stories"));
    assert_int_equal(run("generate -m '%s' --stories 0", model), 2);
    assert_int_equal(run("generate -m '%s' --stories 1 -o '%s'", model, model), 2); /* the model is not overwritten */
    assert_int_equal(run("generate -m '%s' --stories 2 --privatize dx --epsilon 5", model), 2);
    assert_non_null(strstr(err_text, "not with --stories"));
    assert_int_equal(run("generate -m '%s' --stories 2 -n 8 -o /nonexistent/dir/c.txt", model), 1);
}

static void test_help_everywhere(void **state)
{
    (void)state;
    const char *cmds[] = {"import", "export", "generate", "eval", "info"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        assert_int_equal(run("%s --help", cmds[i]), 0);
        assert_non_null(strstr(out_text, "usage: tritlm"));
    }
    assert_int_equal(run("--help"), 0);
    assert_int_equal(run("%s", ""), 2);
    assert_int_equal(run("frobnicate"), 2);
    assert_non_null(strstr(err_text, "unknown command"));
}

static void test_usage_errors(void **state)
{
    (void)state;
    assert_int_equal(run("generate -m '%s' --bogus", model), 2);
    assert_non_null(strstr(err_text, "--bogus"));
    assert_int_equal(run("generate -m '%s' -n abc", model), 2);
    assert_non_null(strstr(err_text, "-n expects"));
    assert_int_equal(run("generate -m '%s' -t -1", model), 2);
    assert_int_equal(run("generate -m '%s' --top-p 1.5", model), 2);
    assert_int_equal(run("generate"), 2);
    assert_non_null(strstr(err_text, "missing -m"));
    assert_int_equal(run("eval -m '%s'", model), 2);
    assert_int_equal(run("eval -m '%s' --text x --ctx 1", model), 2);
    assert_int_equal(run("eval -m '%s' --text x --split paragraphs", model), 2);
    assert_non_null(strstr(err_text, "--split expects stories or lines"));
    assert_int_equal(run("eval -m '%s' --text x --stride 8", model), 2);
    assert_non_null(strstr(err_text, "--stride goes with --windows"));
    assert_int_equal(run("eval -m '%s' --text '%s' --ctx 64 --windows --stride 64", model, tu_data("tinystories/dev.txt")), 1);
    assert_non_null(strstr(err_text, "below the context"));
    assert_int_equal(run("import llama2c a b"), 2);
    assert_int_equal(run("import gguf a b -o c"), 2);
    assert_int_equal(run("info"), 2);
    assert_int_equal(run("generate -m"), 2);
    assert_non_null(strstr(err_text, "needs a value"));
    assert_int_equal(run("export c '%s' -o '%s'", model, tu_tmp("x.h")), 2);
    assert_non_null(strstr(err_text, ".c file"));
    assert_int_equal(run("export c '%s' -o '%s' --name 'a b'", model, tu_tmp("x.c")), 2);
    assert_non_null(strstr(err_text, "not a C identifier"));
    assert_int_equal(run("export c '%s' -o '%s' --ctx 0", model, tu_tmp("x.c")), 2);
    assert_int_equal(run("export c '%s' -o '%s'", model, tu_tmp("a\\\"b.c")), 2);
    assert_non_null(strstr(err_text, "quotes"));
    assert_int_equal(run("export c '%s' -o '%s' --tokenizer-out t.bin", model, tu_tmp("x.c")), 2);
    assert_int_equal(run("export llama2c '%s' -o '%s' --name m", model, tu_tmp("x.bin")), 2);
    assert_int_equal(run("export c '%s' -o '%s' --ctx 4096", model, tu_tmp("x.c")), 1);
    assert_non_null(strstr(err_text, "seq_len"));
    /* per-layer types and hardware-aware quantization: options, exit status, message (or NULL) */
    static const struct {
        const char *opts, *msg;
    } quant_usage[] = {
        {"--layer-types int8,t9", "--layer-types expects"},
        {"--layer-types int8,,t3", "--layer-types expects"},
        {"--layer-types int8,t3", "2 entries for a model of 5 layers"},
        {"--device nosuch --calib x", "unknown device 'nosuch'"},
        {"--device stm32f722", "--calib"},
        {"--device stm32f722 --calib x --layer-types int8", "leave out --layer-types"},
        {"--min-tok-s 10", "go with --device"},
        {"--device stm32f722 --calib x --flash-kb 0", "--flash-kb expects"},
    };
    for (size_t i = 0; i < sizeof quant_usage / sizeof quant_usage[0]; i++) {
        assert_int_equal(run("quantize -m '%s' -o '%s' %s", model, tu_tmp("x.tlm"), quant_usage[i].opts), 2);
        assert_non_null(strstr(err_text, quant_usage[i].msg));
    }
    assert_int_equal(run("quantize --device list"), 0);
    assert_non_null(strstr(out_text, "stm32h743"));
    assert_non_null(strstr(out_text, "esp8266"));
}

static void test_bad_files(void **state)
{
    (void)state;
    assert_int_equal(run("generate -m /nonexistent/model.tlm"), 1);
    assert_non_null(strstr(err_text, "cannot open"));
    uint8_t *m;
    size_t n;
    assert_int_equal(tlm_read_file(model, &m, &n, NULL), TLM_OK);
    assert_int_equal(tlm_write_file_atomic(tu_tmp("cut.tlm"), m, n / 3, NULL), TLM_OK);
    assert_int_equal(run("info '%s'", tu_tmp("cut.tlm")), 1);
    assert_non_null(strstr(err_text, "truncated"));
    m[n / 2] ^= 1;
    assert_int_equal(tlm_write_file_atomic(tu_tmp("flip.tlm"), m, n, NULL), TLM_OK);
    assert_int_equal(run("generate -m '%s' -n 5", tu_tmp("flip.tlm")), 1);
    assert_non_null(strstr(err_text, "checksum"));
    assert_int_equal(run("eval -m '%s' --text /nonexistent.txt", model), 1);
    /* a failed import leaves an existing output untouched */
    assert_int_equal(tlm_write_file_atomic(tu_tmp("keep.tlm"), "old", 3, NULL), TLM_OK);
    assert_int_equal(run("import llama2c '%s' '%s' -o '%s'", tu_tmp("cut.tlm"), tu_data("llama2c/tok512.bin"), tu_tmp("keep.tlm")), 1);
    uint8_t *k;
    assert_int_equal(tlm_read_file(tu_tmp("keep.tlm"), &k, &n, NULL), TLM_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(k, "old", 3);
    free(k);
    /* so does a failed export to C, and it writes no header */
    assert_int_equal(tlm_write_file_atomic(tu_tmp("keep.c"), "old", 3, NULL), TLM_OK);
    assert_int_equal(run("export c '%s' -o '%s'", tu_tmp("flip.tlm"), tu_tmp("keep.c")), 1);
    assert_non_null(strstr(err_text, "checksum"));
    assert_int_equal(tlm_read_file(tu_tmp("keep.c"), &k, &n, NULL), TLM_OK);
    assert_int_equal(n, 3);
    free(k);
    assert_int_not_equal(tlm_read_file(tu_tmp("keep.h"), &k, &n, NULL), TLM_OK);
    free(m);
    /* a UTF-16 text file (a NUL after every ASCII letter) is refused where
     * text is read, at its first NUL, not trained or scored as garbage */
    static const char utf16[] = "O\0n\0c\0e\0 \0u\0p\0o\0n\0";
    assert_int_equal(tlm_write_file_atomic(tu_tmp("utf16.txt"), utf16, sizeof utf16 - 1, NULL), TLM_OK);
    assert_int_equal(run("eval -m '%s' --text '%s'", model, tu_tmp("utf16.txt")), 1);
    assert_non_null(strstr(err_text, "byte 1 is NUL"));
    assert_int_equal(run("tokenizer train --vocab 300 -o '%s' '%s'", tu_tmp("t16.bin"), tu_tmp("utf16.txt")), 1);
    assert_non_null(strstr(err_text, "UTF-16"));
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --steps 1 -o '%s'", tu_tmp("utf16.txt"),
                         tu_data("llama2c/tok512.bin"), tu_tmp("t16.tlm")), 1);
    assert_non_null(strstr(err_text, "byte 1 is NUL"));
    /* an output that is one of the inputs (by any name) is refused before
     * anything is written: the training text and the model stay as they were */
    static const char story[] = "Tom had a red ball. He liked it.\n";
    assert_int_equal(tlm_write_file_atomic(tu_tmp("mine.txt"), story, sizeof story - 1, NULL), TLM_OK);
    unlink(tu_tmp("alias.txt"));
    assert_int_equal(symlink(tu_tmp("mine.txt"), tu_tmp("alias.txt")), 0);
    assert_int_equal(run("train --data '%s' --tokenizer '%s' --steps 1 -o '%s'", tu_tmp("mine.txt"), tu_data("llama2c/tok512.bin"),
                         tu_tmp("mine.txt")), 2);
    assert_non_null(strstr(err_text, "would replace it"));
    assert_int_equal(run("tokenizer train --vocab 300 -o '%s' '%s'", tu_tmp("alias.txt"), tu_tmp("mine.txt")), 2);
    assert_int_equal(run("export llama2c '%s' -o '%s'", model, model), 2);
    assert_int_equal(run("quantize -m '%s' -o '%s' --qat --data '%s' --steps 1", model, tu_tmp("mine.txt"), tu_tmp("mine.txt")), 2);
    assert_int_equal(tlm_read_file(tu_tmp("mine.txt"), &k, &n, NULL), TLM_OK);
    assert_int_equal(n, sizeof story - 1);
    assert_memory_equal(k, story, n);
    free(k);
    assert_int_equal(run("info '%s'", model), 0); /* the model still opens */
    /* the project's other files, and llama2.c's, given where a model image
     * goes: the error says what the file is and what takes it */
    assert_int_equal(run("info '%s'", tu_data("llama2c/stories260K.bin")), 1);
    assert_non_null(strstr(err_text, "import llama2c"));
    assert_int_equal(run("fed keygen -o '%s'", tu_tmp("hint_srv")), 0);
    assert_int_equal(run("fed sign --key '%s' -m '%s' --round 1 -o '%s'", tu_tmp("hint_srv.key"), model, tu_tmp("hint.tlmg")), 0);
    assert_int_equal(run("generate -m '%s' -n 2", tu_tmp("hint.tlmg")), 1);
    assert_non_null(strstr(err_text, "a signed model"));
    assert_int_equal(run("fed update -m '%s' --data '%s' --steps 1 --ctx 8 --batch 1 --threads 1 -o '%s'", model,
                         tu_tmp("mine.txt"), tu_tmp("hint.tlmu")), 0);
    assert_int_equal(run("eval -m '%s' --text '%s'", tu_tmp("hint.tlmu"), tu_tmp("mine.txt")), 1);
    assert_non_null(strstr(err_text, "a federated update"));
    assert_int_equal(run("info '%s'", tu_data("llama2c/tok512.bin")), 1); /* anything else: the plain reason */
    assert_non_null(strstr(err_text, "magic is not"));
    assert_null(strstr(err_text, "is not a model image"));
}

static void test_json_outputs(void **state)
{
    (void)state;
    assert_int_equal(run("info '%s' --json --ctx 128", model), 0);
    cJSON *o = cJSON_Parse(out_text);
    assert_non_null(o);
    assert_int_equal((int)cJSON_GetObjectItem(o, "arena_bytes")->valuedouble > 0, 1);
    assert_int_equal((int)cJSON_GetObjectItem(cJSON_GetObjectItem(o, "hparams"), "dim")->valuedouble, 64);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "tensors")), 2 + 45 + 2);
    uint8_t *m;
    size_t n;
    assert_int_equal(tlm_read_file(model, &m, &n, NULL), TLM_OK);
    assert_true(cJSON_GetObjectItem(o, "image_bytes")->valuedouble == (double)n);
    free(m);
    cJSON_Delete(o);

    assert_int_equal(run("eval -m '%s' --text '%s' --ctx 64 --json", model, tu_data("tinystories/dev.txt")), 0);
    o = cJSON_Parse(out_text);
    assert_non_null(o);
    const char *keys[] = {"loss", "perplexity", "top1", "tokens", "stories", "truncated"};
    for (size_t i = 0; i < 6; i++) assert_non_null(cJSON_GetObjectItem(o, keys[i]));
    double loss = cJSON_GetObjectItem(o, "loss")->valuedouble;
    assert_true(fabs(exp(loss) - cJSON_GetObjectItem(o, "perplexity")->valuedouble) < 1e-6 * exp(loss));
    assert_true(cJSON_GetObjectItem(o, "stories")->valuedouble == 300);
    const double cut = cJSON_GetObjectItem(o, "truncated")->valuedouble;
    assert_true(cut > 0);
    assert_true(cJSON_GetObjectItem(o, "windows")->valuedouble == 300);
    /* the protocol's cut is reported on stderr, with the way around it */
    assert_non_null(strstr(err_text, "stories were longer than the context"));
    assert_non_null(strstr(err_text, "--windows"));
    cJSON_Delete(o);
    assert_int_equal(run("eval -m '%s' --text '%s' --ctx 64 --windows --json", model, tu_data("tinystories/dev.txt")), 0);
    o = cJSON_Parse(out_text);
    assert_non_null(o);
    assert_true(cJSON_GetObjectItem(o, "truncated")->valuedouble == 0);
    assert_true(cJSON_GetObjectItem(o, "windows")->valuedouble > 300 + cut);
    assert_null(strstr(err_text, "longer than the context"));
    cJSON_Delete(o);
    /* a text with no separator but many lines: one story, and the hint to split lines */
    {
        char buf[4096];
        size_t k = 0;
        for (int i = 0; i < 60; i++) k += (size_t)snprintf(buf + k, sizeof buf - k, "Tom saw a big dog number %d.\n", i);
        assert_int_equal(tlm_write_file_atomic(tu_tmp("lines.txt"), buf, k, NULL), TLM_OK);
    }
    assert_int_equal(run("eval -m '%s' --text '%s' --ctx 64", model, tu_tmp("lines.txt")), 0);
    assert_non_null(strstr(err_text, "--split lines"));
    assert_non_null(strstr(out_text, "stories 1 "));
    assert_int_equal(run("eval -m '%s' --text '%s' --ctx 64 --split lines --json", model, tu_tmp("lines.txt")), 0);
    o = cJSON_Parse(out_text);
    assert_non_null(o);
    assert_true(cJSON_GetObjectItem(o, "stories")->valuedouble == 60);
    assert_true(cJSON_GetObjectItem(o, "truncated")->valuedouble == 0);
    assert_null(strstr(err_text, "note"));
    cJSON_Delete(o);

    /* a model against itself: no difference, and an interval of width 0 */
    assert_int_equal(run("eval -m '%s' --text '%s' --ctx 64 --versus '%s' --resamples 200 --json", model,
                         tu_data("tinystories/dev.txt"), model), 0);
    o = cJSON_Parse(out_text);
    assert_non_null(o);
    cJSON *v = cJSON_GetObjectItem(o, "versus");
    assert_non_null(v);
    assert_true(cJSON_GetObjectItem(v, "loss")->valuedouble == loss);
    assert_true(cJSON_GetObjectItem(v, "loss_diff")->valuedouble == 0);
    cJSON *ci = cJSON_GetObjectItem(v, "loss_diff_ci95");
    assert_int_equal(cJSON_GetArraySize(ci), 2);
    assert_true(cJSON_GetArrayItem(ci, 0)->valuedouble == 0 && cJSON_GetArrayItem(ci, 1)->valuedouble == 0);
    cJSON_Delete(o);
    assert_int_equal(run("eval -m '%s' --text x --versus '%s' --privatize rr --epsilon 2", model, model), 2);
    assert_non_null(strstr(err_text, "--versus"));
    assert_int_equal(run("eval -m '%s' --text x --versus '%s' --resamples 5", model, model), 2);
    assert_int_equal(run("eval -m '%s' --text '%s' --versus /nonexistent.tlm", model, tu_data("tinystories/dev.txt")), 1);
    /* an evaluation refused before it starts leaves nothing to free */
    assert_int_equal(run("eval -m '%s' --text '%s' --ctx 4096 --versus '%s'", model, tu_data("tinystories/dev.txt"), model), 1);
    assert_non_null(strstr(err_text, "seq_len"));
}

static void test_export_import_cycle(void **state)
{
    (void)state;
    assert_int_equal(run("export llama2c '%s' -o '%s' --tokenizer-out '%s'", model, tu_tmp("x.bin"), tu_tmp("x_tok.bin")), 0);
    assert_int_equal(run("import llama2c '%s' '%s' -o '%s'", tu_tmp("x.bin"), tu_tmp("x_tok.bin"), tu_tmp("x.tlm")), 0);
    uint8_t *a;
    size_t na, nb;
    assert_int_equal(tlm_read_file(model, &a, &nb, NULL), TLM_OK);
    assert_file_holds(tu_tmp("x.tlm"), a, nb);
    free(a);
    /* a file name that is no identifier gives one; the header declares it */
    assert_int_equal(run("export c '%s' -o '%s'", model, tu_tmp("9 lives.c")), 0);
    assert_int_equal(tlm_read_file(tu_tmp("9 lives.h"), &a, &na, NULL), TLM_OK);
    char decl[96];
    snprintf(decl, sizeof decl, "#define model_9_lives_BYTES %zuu", nb);
    assert_non_null(strstr((char *)a, decl));
    assert_non_null(strstr((char *)a, "extern const uint8_t model_9_lives[model_9_lives_BYTES];"));
    free(a);
    assert_int_equal(tlm_read_file(tu_tmp("9 lives.c"), &a, &na, NULL), TLM_OK);
    assert_non_null(strstr((char *)a, "#include \"9 lives.h\""));
    free(a);
}

/* Parameters of a model file. */
static void params_of(const char *path, tlm_params *p)
{
    tlm_model_file f;
    assert_int_equal(tlm_model_file_open(&f, path, NULL), TLM_OK);
    assert_int_equal(tlm_params_from_model(p, &f.model, NULL), TLM_OK);
    tlm_model_file_close(&f);
}

/* Server momentum (FedAvgM) over two rounds, against the recursion
 * computed here in double from the models: the round's change is what the
 * same aggregation without momentum makes (P = G + A x mean change), the
 * velocity V1 = (G1 - M) / A, then V2 = B V1 + (P2 - G1) / A and G2 = G1 +
 * A V2; the first round equals the plain one (V starts at 0). Also
 * --server-lr itself against train --init's model, and a state that is for
 * another model, damaged or cut short, refused with nothing written. */
static double max_rel(const tlm_params *a, const double *b)
{
    double worst = 0;
    for (size_t i = 0; i < a->n; i++) worst = fmax(worst, fabs((double)a->data[i] - b[i]) / (1.0 + fabs(b[i])));
    return worst;
}

static void test_fed_momentum(void **state)
{
    (void)state;
    const char *txt = tu_data("tinystories/dev.txt");
    const char *common = "--steps 3 --batch 2 --ctx 64 --threads 1 --lr 1e-3 --encode fp32";
    char ms[512], g1[512], g2[512];
    snprintf(ms, sizeof ms, "%s", tu_tmp("mom.state"));
    snprintf(g1, sizeof g1, "%s", tu_tmp("mom_g1.tlm"));
    snprintf(g2, sizeof g2, "%s", tu_tmp("mom_g2.tlm"));
    /* round 1 */
    assert_int_equal(run("fed update -m '%s' --data '%s' %s --seed 5 -o '%s'", model, txt, common, tu_tmp("m1.tlmu")), 0);
    assert_int_equal(run("train --init '%s' --data '%s' --steps 3 --batch 2 --ctx 64 --threads 1 --lr 1e-3 --seed 5 "
                         "--eval-every 0 --ckpt-every 0 -o '%s'",
                         model, txt, tu_tmp("m_local.tlm")),
                     0);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' --server-lr 0.5", model, tu_tmp("m_p1.tlm"), tu_tmp("m1.tlmu")), 0);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' --server-lr 0.5 --server-momentum 0.9 --momentum-state '%s'", model,
                         g1, tu_tmp("m1.tlmu"), ms),
                     0);
    assert_non_null(strstr(err_text, "velocity started"));
    tlm_params m0, loc, p1, q1, p2, q2;
    params_of(model, &m0);
    params_of(tu_tmp("m_local.tlm"), &loc);
    params_of(tu_tmp("m_p1.tlm"), &p1);
    params_of(g1, &q1);
    const size_t n = m0.n;
    double *want = malloc(n * sizeof *want), *v1 = malloc(n * sizeof *v1);
    assert_non_null(want);
    assert_non_null(v1);
    for (size_t i = 0; i < n; i++) want[i] = m0.data[i] + 0.5 * ((double)loc.data[i] - m0.data[i]);
    assert_true(max_rel(&p1, want) < 1e-6); /* --server-lr: half the device's change */
    assert_true(max_rel(&q1, want) < 1e-6); /* no velocity yet: the plain round */
    /* round 2, from the first round's model */
    assert_int_equal(run("fed update -m '%s' --data '%s' %s --seed 6 -o '%s'", g1, txt, common, tu_tmp("m2.tlmu")), 0);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' --server-lr 0.5", g1, tu_tmp("m_p2.tlm"), tu_tmp("m2.tlmu")), 0);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' --server-lr 0.5 --server-momentum 0.9 --momentum-state '%s' --json", g1,
                         g2, tu_tmp("m2.tlmu"), ms),
                     0);
    assert_non_null(strstr(err_text, "velocity carried on"));
    assert_non_null(strstr(out_text, "\"momentum\":{\"beta\":0.9"));
    assert_non_null(strstr(out_text, "\"carried_on\":true}"));
    params_of(tu_tmp("m_p2.tlm"), &p2);
    params_of(g2, &q2);
    double moved = 0;
    for (size_t i = 0; i < n; i++) {
        v1[i] = ((double)q1.data[i] - m0.data[i]) / 0.5;
        const double v2 = 0.9 * v1[i] + ((double)p2.data[i] - q1.data[i]) / 0.5;
        want[i] = q1.data[i] + 0.5 * v2;
        moved = fmax(moved, fabs((double)q2.data[i] - p2.data[i]));
    }
    assert_true(max_rel(&q2, want) < 1e-5);
    assert_true(moved > 1e-4); /* the velocity did move the model beyond the plain round */
    /* the state now names G2: with G1 again it is refused, nothing written */
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' --server-momentum 0.9 --momentum-state '%s'", g1, tu_tmp("m_x.tlm"),
                         tu_tmp("m2.tlmu"), ms),
                     1);
    assert_non_null(strstr(err_text, "belongs to another global model"));
    assert_int_equal(access(tu_tmp("m_x.tlm"), F_OK), -1);
    /* damaged, cut short, not a state */
    uint8_t *b;
    size_t nb;
    assert_int_equal(tlm_read_file(ms, &b, &nb, NULL), TLM_OK);
    assert_int_equal(nb, 24 + 4 * n);
    const struct {
        size_t at, len;
        uint8_t flip;
        const char *why;
    } bad[] = {{nb / 2, nb, 0x04, "checksum"}, {0, nb - 4, 0, "values in"}, {0, nb, 0x20, "TLMV"}};
    for (int k = 0; k < 3; k++) {
        b[bad[k].at] ^= bad[k].flip;
        assert_int_equal(tlm_write_file_atomic(tu_tmp("m_bad.state"), b, bad[k].len, NULL), TLM_OK);
        b[bad[k].at] ^= bad[k].flip;
        assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' --server-momentum 0.9 --momentum-state '%s'", g2,
                             tu_tmp("m_x.tlm"), tu_tmp("m2.tlmu"), tu_tmp("m_bad.state")),
                         1);
        assert_non_null(strstr(err_text, bad[k].why));
        assert_int_equal(access(tu_tmp("m_x.tlm"), F_OK), -1);
    }
    free(b);
    /* the options go together; the state is no input's path */
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' --server-momentum 0.9", g1, tu_tmp("m_x.tlm"), tu_tmp("m2.tlmu")), 2);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' --momentum-state '%s'", g1, tu_tmp("m_x.tlm"), tu_tmp("m2.tlmu"), ms), 2);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' --server-momentum 1.5 --momentum-state '%s'", g1, tu_tmp("m_x.tlm"),
                         tu_tmp("m2.tlmu"), ms),
                     2);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' --server-momentum 0.9 --momentum-state '%s'", g1, tu_tmp("m_x.tlm"),
                         tu_tmp("m2.tlmu"), g1),
                     2);
    free(want);
    free(v1);
    tlm_params *all[] = {&m0, &loc, &p1, &q1, &p2, &q2};
    for (int k = 0; k < 6; k++) tlm_params_free(all[k]);
}

/* One federated round with files: an fp32 update aggregated alone gives the
 * model that `tritlm train --init` makes from the same text and seed
 * (training is deterministic); its weight is the text's token count; a
 * damaged update is left out, and with nothing left nothing is written. */
static void test_fed_round(void **state)
{
    (void)state;
    const char *txt = tu_data("tinystories/dev.txt");
    const char *common = "--steps 3 --batch 2 --ctx 64 --seed 5 --threads 1 --lr 1e-3";
    assert_int_equal(run("fed update -m '%s' --data '%s' %s --encode fp32 --client 9 -o '%s'", model, txt, common,
                         tu_tmp("u.tlmu")), 0);
    assert_int_equal(run("train --init '%s' --data '%s' %s --eval-every 0 --ckpt-every 0 -o '%s'", model, txt, common,
                         tu_tmp("local.tlm")), 0);
    assert_non_null(strstr(err_text, "training tokens"));
    const unsigned long long tokens = strtoull(strstr(err_text, "parameters, ") + 12, NULL, 10);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' --json", model, tu_tmp("new.tlm"), tu_tmp("u.tlmu")), 0);
    assert_non_null(strstr(out_text, "\"accepted\":1"));
    tlm_params n, l;
    params_of(tu_tmp("new.tlm"), &n);
    params_of(tu_tmp("local.tlm"), &l);
    assert_int_equal(n.n, l.n);
    double worst = 0;
    for (size_t i = 0; i < n.n; i++) worst = fmax(worst, fabs((double)n.data[i] - l.data[i]) / (1.0 + fabs(l.data[i])));
    assert_true(worst < 1e-6);
    tlm_params_free(&n);
    tlm_params_free(&l);
    uint8_t *u;
    size_t nu;
    assert_int_equal(tlm_read_file(tu_tmp("u.tlmu"), &u, &nu, NULL), TLM_OK);
    assert_true(nu > 40);
    assert_int_equal((unsigned long long)(u[28] | u[29] << 8 | u[30] << 16 | (uint32_t)u[31] << 24), tokens);
    assert_int_equal(u[20], 9); /* the client id */
    /* damaged: left out, and with nothing left no model is written */
    u[nu / 2] ^= 0x10;
    FILE *f = fopen(tu_tmp("bad.tlmu"), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(u, 1, nu, f), nu);
    fclose(f);
    free(u);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s'", model, tu_tmp("new2.tlm"), tu_tmp("bad.tlmu")), 1);
    assert_non_null(strstr(err_text, "checksum"));
    assert_int_equal(access(tu_tmp("new2.tlm"), F_OK), -1);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s' '%s'", model, tu_tmp("new2.tlm"), tu_tmp("bad.tlmu"),
                         tu_tmp("u.tlmu")), 0);
    assert_non_null(strstr(err_text, "1 left out"));
    /* fed info: the update's header and entries; the damaged one refused with its reason */
    assert_int_equal(run("fed info -m '%s' '%s' --json", model, tu_tmp("u.tlmu")), 0);
    assert_non_null(strstr(out_text, "\"kind\":\"update\""));
    assert_non_null(strstr(out_text, "\"client\":9"));
    assert_non_null(strstr(out_text, "\"encoding\":\"fp32\""));
    assert_int_equal(run("fed info '%s' '%s'", tu_tmp("u.tlmu"), tu_tmp("bad.tlmu")), 1);
    assert_non_null(strstr(err_text, "checksum"));
    /* --device-step: the core's tuning step, norms only, its token count as the weight */
    assert_int_equal(run("fed update -m '%s' --data '%s' --device-step --steps 2 --ctx 16 --encode fp32 -o '%s'", model,
                         txt, tu_tmp("d.tlmu")), 0);
    assert_non_null(strstr(err_text, "device step: norm gains, window 16, 2 steps"));
    assert_int_equal(run("fed info -m '%s' '%s' --json", model, tu_tmp("d.tlmu")), 0);
    assert_non_null(strstr(out_text, "\"role\":\"attn_norm\""));
    assert_null(strstr(out_text, "\"role\":\"wq\""));
    /* --device-step --lora: the core's step on adapters of wq, wk, wv, wo, sent as low-rank int8 factors */
    assert_int_equal(run("fed update -m '%s' --data '%s' --device-step --lora 2 --steps 2 --ctx 16 -o '%s'", model, txt,
                         tu_tmp("dl.tlmu")), 0);
    assert_non_null(strstr(err_text, "adapters of wq, wk, wv, wo"));
    assert_int_equal(run("fed info -m '%s' '%s' --json", model, tu_tmp("dl.tlmu")), 0);
    assert_non_null(strstr(out_text, "\"encoding\":\"lowrank-int8\""));
    assert_non_null(strstr(out_text, "\"role\":\"wo\""));
    assert_null(strstr(out_text, "\"role\":\"w1\""));
    assert_null(strstr(out_text, "\"role\":\"attn_norm\""));
    assert_int_equal(run("eval -m '%s' --text '%s' --adapter '%s'", model, txt, tu_tmp("dl.tlmu")), 0);
    /* --lora: adapters of rank 2 on the attention and feed-forward matrices;
     * the update holds those matrices only, not the gains or the embedding */
    assert_int_equal(run("fed update -m '%s' --data '%s' --lora 2 --steps 2 --ctx 16 --batch 2 --encode fp32 -o '%s'",
                         model, txt, tu_tmp("l.tlmu")), 0);
    assert_non_null(strstr(err_text, "adapters of rank 2"));
    assert_int_equal(run("fed info -m '%s' '%s' --json", model, tu_tmp("l.tlmu")), 0);
    assert_non_null(strstr(out_text, "\"role\":\"wq\""));
    assert_non_null(strstr(out_text, "\"role\":\"w2\""));
    assert_null(strstr(out_text, "\"role\":\"attn_norm\""));
    assert_null(strstr(out_text, "\"role\":\"tok_embed\""));
    /* --rank 2: the same kind of change as rank-2 int8 factors, a fraction of the bytes; the server takes it */
    assert_int_equal(run("fed update -m '%s' --data '%s' --lora 2 --rank 2 --steps 2 --ctx 16 --batch 2 -o '%s'", model, txt,
                         tu_tmp("lr.tlmu")), 0);
    assert_int_equal(run("fed info -m '%s' '%s' --json", model, tu_tmp("lr.tlmu")), 0);
    assert_non_null(strstr(out_text, "\"encoding\":\"lowrank-int8\""));
    assert_non_null(strstr(out_text, "\"rank\":2"));
    {
        struct stat sl, sd;
        assert_int_equal(stat(tu_tmp("lr.tlmu"), &sl), 0);
        assert_int_equal(stat(tu_tmp("l.tlmu"), &sd), 0);
        assert_true(sl.st_size * 2 < sd.st_size / 4); /* under half the bytes of int8 (the fp32 update above: 4x int8) */
    }
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s'", model, tu_tmp("lra.tlm"), tu_tmp("lr.tlmu")), 0);
    /* ... or the device decodes with it on top of the model as it is (--adapter): the same loss and greedy text
     * as the model the server merged it into; an update that is not low-rank is refused with the reason */
    {
        double la, lm;
        char text_a[4096], text_m[4096];
        assert_int_equal(run("eval -m '%s' --text '%s' --adapter '%s' --json", model, txt, tu_tmp("lr.tlmu")), 0);
        assert_non_null(strstr(out_text, "\"loss\":"));
        la = strtod(strstr(out_text, "\"loss\":") + 7, NULL);
        assert_int_equal(run("eval -m '%s' --text '%s' --token-by-token --json", tu_tmp("lra.tlm"), txt), 0);
        lm = strtod(strstr(out_text, "\"loss\":") + 7, NULL);
        assert_int_equal(run("eval -m '%s' --text '%s' --json", model, txt), 0);
        const double l0 = strtod(strstr(out_text, "\"loss\":") + 7, NULL);
        print_message("--adapter: loss %.8f, merged model %.8f, without %.8f\n", la, lm, l0);
        assert_true(fabs(la - lm) < 1e-5 && fabs(la - l0) > 1e-4); /* (two steps: a small change) */
        assert_int_equal(run("generate -m '%s' -p 'The' -n 24 -t 0 --adapter '%s'", model, tu_tmp("lr.tlmu")), 0);
        snprintf(text_a, sizeof text_a, "%s", out_text);
        assert_int_equal(run("generate -m '%s' -p 'The' -n 24 -t 0", tu_tmp("lra.tlm")), 0);
        snprintf(text_m, sizeof text_m, "%s", out_text);
        assert_string_equal(text_a, text_m);
        assert_int_equal(run("eval -m '%s' --text '%s' --adapter '%s'", model, txt, tu_tmp("l.tlmu")), 1);
        assert_non_null(strstr(err_text, "not a low-rank change"));
        assert_int_equal(run("generate -m '%s' -n 4 --adapter '%s'", model, tu_tmp("l.tlmu")), 1);
        assert_non_null(strstr(err_text, "not a low-rank change"));
        assert_int_equal(run("eval -m '%s' --text '%s' --adapter '%s'", tu_tmp("lra.tlm"), txt, tu_tmp("lr.tlmu")), 1);
        assert_non_null(strstr(err_text, "another model"));
        assert_int_equal(run("eval -m '%s' --text '%s' --adapter '%s' --versus '%s'", model, txt, tu_tmp("lr.tlmu"),
                             model), 2);
        assert_int_equal(run("generate -m '%s' -n 4 --adapter '%s'", model, tu_tmp("missing.tlmu")), 1);
    }
    /* fed sign: the server's signature on a model as a file; fed info checks it with the server's key
     * (libsodium), and only with that key; the file is never overwritten, a non-model never signed */
    assert_int_equal(run("fed keygen -o '%s'", tu_tmp("srv")), 0);
    assert_int_equal(run("fed keygen -o '%s'", tu_tmp("other")), 0);
    assert_int_equal(run("fed sign --key '%s' -m '%s' --round 7 -o '%s'", tu_tmp("srv.key"), model, tu_tmp("m.tlmg")), 0);
    assert_int_equal(run("fed info --server-key '%s' '%s'", tu_tmp("srv.pub"), tu_tmp("m.tlmg")), 0);
    assert_non_null(strstr(out_text, "signed model for round 7"));
    assert_non_null(strstr(out_text, "verified"));
    assert_int_equal(run("fed info --server-key '%s' '%s'", tu_tmp("other.pub"), tu_tmp("m.tlmg")), 1);
    assert_int_equal(run("fed sign --key '%s' -m '%s' --round 7 -o '%s'", tu_tmp("srv.key"), txt, tu_tmp("t.tlmg")), 1);
    assert_int_equal(run("fed sign --key '%s' -m '%s' --round 7 -o '%s'", tu_tmp("srv.key"), model, model), 2);
    /* ... and the server's view of a sealed update: opened with its key and roster, its signer named */
    assert_int_equal(run("fed keygen -o '%s'", tu_tmp("dev3")), 0);
    {
        tlm_fed_pub pub;
        assert_int_equal(tlm_fed_pub_read(tu_tmp("dev3.pub"), &pub, NULL), TLM_OK);
        const uint32_t id3 = 3, id4 = 4; /* the device enrolled as client 3, and the same key as client 4 */
        tu_write_roster(tu_tmp("roster3.txt"), &id3, &pub, 1);
        tu_write_roster(tu_tmp("roster4.txt"), &id4, &pub, 1);
    }
    assert_int_equal(run("fed update -m '%s' --data '%s' --steps 1 --ctx 16 --batch 1 --client 3 --key '%s' --server-key '%s' "
                         "-o '%s'", model, txt, tu_tmp("dev3.key"), tu_tmp("srv.pub"), tu_tmp("s3.tlmu")), 0);
    assert_int_equal(run("fed info '%s'", tu_tmp("s3.tlmu")), 0);
    assert_non_null(strstr(out_text, "only the server's key opens it"));
    assert_int_equal(run("fed info -m '%s' --key '%s' --devices '%s' --json '%s'", model, tu_tmp("srv.key"),
                         tu_tmp("roster3.txt"), tu_tmp("s3.tlmu")), 0);
    assert_non_null(strstr(out_text, "\"signed_by_client\":3"));
    assert_non_null(strstr(out_text, "\"kind\":\"update\""));
    assert_int_equal(run("fed info --key '%s' --devices '%s' '%s'", tu_tmp("srv.key"), tu_tmp("roster4.txt"), tu_tmp("s3.tlmu")), 1);
    assert_non_null(strstr(err_text, "names client 3"));
    assert_int_equal(run("fed info --key '%s' --devices '%s' '%s'", tu_tmp("other.key"), tu_tmp("roster3.txt"), tu_tmp("s3.tlmu")), 1);
    assert_non_null(strstr(err_text, "cannot be opened"));
    /* a ternary global model: a round that tunes the gains leaves every matrix in its packing, byte for byte
     * (the new model is as large as the old); a round that changes matrices writes those in fp32, and says so */
    assert_int_equal(run("quantize -m '%s' -o '%s' --pack t2", model, tu_tmp("gt.tlm")), 0);
    assert_int_equal(run("fed update -m '%s' --data '%s' --tensors norms --steps 2 --ctx 16 --batch 2 -o '%s'",
                         tu_tmp("gt.tlm"), txt, tu_tmp("gn.tlmu")), 0);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s'", tu_tmp("gt.tlm"), tu_tmp("gt1.tlm"), tu_tmp("gn.tlmu")), 0);
    assert_null(strstr(err_text, "written in fp32"));
    {
        tlm_model_file a, b;
        assert_int_equal(tlm_model_file_open(&a, tu_tmp("gt.tlm"), NULL), TLM_OK);
        assert_int_equal(tlm_model_file_open(&b, tu_tmp("gt1.tlm"), NULL), TLM_OK);
        assert_int_equal(a.model.image_bytes, b.model.image_bytes);
        int gains_changed = 0;
        assert_int_equal(a.model.n_tensors, b.model.n_tensors);
        for (uint32_t i = 0; i < a.model.n_tensors; i++) {
            tlm_tensor ta, tb;
            tlm_model_tensor_at(&a.model, i, &ta);
            tlm_model_tensor_at(&b.model, i, &tb);
            assert_int_equal(ta.wtype, tb.wtype);
            assert_int_equal(ta.data_bytes, tb.data_bytes);
            const int same = !memcmp(ta.data, tb.data, ta.data_bytes);
            if (ta.rows > 1) assert_true(same); /* matrices and the embedding: untouched */
            else gains_changed += !same;
        }
        assert_true(gains_changed > 0);
        tlm_model_file_close(&a);
        tlm_model_file_close(&b);
    }
    assert_int_equal(run("fed update -m '%s' --data '%s' --tensors attn --steps 2 --ctx 16 --batch 2 -o '%s'",
                         tu_tmp("gt.tlm"), txt, tu_tmp("ga.tlmu")), 0);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s'", tu_tmp("gt.tlm"), tu_tmp("gt2.tlm"), tu_tmp("ga.tlmu")), 0);
    assert_non_null(strstr(err_text, "quantized tensors changed and are written in fp32"));
    /* usage */
    assert_int_equal(run("fed"), 2);
    assert_int_equal(run("fed update -m '%s' -o '%s' --steps 1", model, tu_tmp("x.tlmu")), 2);
    assert_non_null(strstr(err_text, "--data"));
    assert_int_equal(run("fed update -m '%s' --data '%s' --steps 1 --encode q4 -o '%s'", model, txt, tu_tmp("x.tlmu")), 2);
    assert_int_equal(run("fed aggregate -m '%s' -o '%s'", model, tu_tmp("x.tlm")), 2);
    assert_non_null(strstr(err_text, "no updates"));
    assert_int_equal(run("fed aggregate -m '%s' -o '%s' '%s'", model, model, tu_tmp("u.tlmu")), 2);
    /* the protection options: each wrong combination is a usage error that names what is missing */
    char upd[4096];
    snprintf(upd, sizeof upd, "%s", tu_tmp("u.tlmu"));
    static const struct {
        const char *args, *says;
    } bad[] = {
        {"fed aggregate -m M -o O --dp-noise 1 U", "--clip"},
        {"fed aggregate -m M -o O --ledger L.json U", "--dp-noise"},
        {"fed aggregate -m M -o O --dp-noise 1 --clip 1 --budget 3 U", "--ledger"},
        {"fed aggregate -m M -o O --dp-noise 0 --clip 1 U", "--dp-noise"},
        {"fed aggregate -m M -o O --key K U", "--devices"},
        {"fed aggregate -m M -o O --secure-agg --clip 1 U", "--key"},
        {"fed update -m M --data T --steps 1 -o O --key K", "--server-key"},
        {"fed update -m M --data T --steps 1 -o O --secure-agg", "--secure-agg needs"},
        {"fed update -m M --data T --steps 1 -o O --update-clip 1", "go with --secure-agg"},
        {"fed update -m M --data T --steps 1 -o O --secure-agg --key K --server-key K --devices D --update-clip 1",
         "--state"},
        {"fed reveal --key K --server-key K --devices D --state S -o O", "--request"},
        {"fed update -m M --data T --steps 1 -o O --tls-ca K", "go with --broker"},
        {"fed update -m M --data T --steps 1 --broker 127.0.0.1:1 --tls-ca K --tls-cert K", "--tls-key go together"},
        {"fed update -m M --data T --steps 1 --broker 127.0.0.1:1 --tls-cert K --tls-key K", "--tls-cert needs --tls-ca"},
        {"fed aggregate -m M -o O --broker 127.0.0.1:1 --expect 1 --password-file K", "needs --username"},
        {"fed aggregate -m M -o O --username u U", "go with --broker"},
        {"fed update -m M --data T --minutes 1 -o O --device-step", "--device-step takes --steps"},
        {"fed update -m M --data T --steps 1 -o O --device-step --tensors attn", "norms only"},
        {"fed update -m M --data T --steps 1 -o O --device-step --lora 2 --rank 2", "no --rank"},
        {"fed update -m M --data T --steps 1 -o O --device-step --lora 2 --encode fp32", "int8 factors"},
        {"fed update -m M --data T --steps 1 -o O --lora-alpha 2", "goes with --lora"},
        {"fed update -m M --data T --steps 1 -o O --lora 0", "--lora expects"},
        {"fed update -m M --data T --steps 1 -o O --rank 2 --encode fp32", "--rank sends int8 factors"},
        {"fed update -m M --data T --steps 1 -o O --rank 0", "--rank expects"},
        {"fed keygen", "-o NAME"},
        {"firmware --target cortex-m7 -m M --tune T --key K", "--key and --server-key go together"},
        {"fed sign --key K -m M -o O", "--round R"},
        {"firmware --target cortex-m7 -m M --key K --server-key K", "with --tune TEXT"},
        {"fed keygen -o K extra", "unexpected"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cmd[8192];
        size_t n = 0;
        for (const char *p = bad[i].args; *p && n < sizeof cmd - 4200; p++) {
            /* M, T, U, O, K and L.json: the model, the text, an update, outputs and a key that need not exist */
            if (p[0] == 'M' && (p[1] == ' ' || !p[1])) n += (size_t)snprintf(cmd + n, sizeof cmd - n, "'%s'", model);
            else if (p[0] == 'T' && p[1] == ' ') n += (size_t)snprintf(cmd + n, sizeof cmd - n, "'%s'", txt);
            else if (p[0] == 'U' && !p[1]) n += (size_t)snprintf(cmd + n, sizeof cmd - n, "'%s'", upd);
            else cmd[n++] = *p;
            cmd[n] = 0;
        }
        assert_int_equal(run("%s", cmd), 2);
        if (!strstr(err_text, bad[i].says)) print_message("'%s' said: %s\n", cmd, err_text);
        assert_non_null(strstr(err_text, bad[i].says));
    }
}

/* Entries of a directory besides . and .. */
static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* The atomic writers: a stream committed gives exactly its bytes with mode
 * 0644; an aborted one or a failed rename leaves the target as it was and
 * no temporary file behind; a missing directory is named in the error. */
static void test_atomic_files(void **state)
{
    (void)state;
    const char *dir = tu_tmp("atomic");
    assert_int_equal(mkdir(dir, 0755), 0);
    char path[600], sub[600];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    snprintf(sub, sizeof sub, "%s/sub", dir);
    tlm_atomic_file a;
    tlm_error err;
    assert_int_equal(tlm_atomic_open(&a, path, &err), TLM_OK);
    for (int i = 0; i < 1000; i++) fprintf(a.f, "line %d\n", i);
    assert_int_equal(entries(dir), 1); /* the temporary file; the target does not exist yet */
    assert_int_equal(tlm_atomic_commit(&a, &err), TLM_OK);
    uint8_t *got;
    size_t n;
    assert_int_equal(tlm_read_file(path, &got, &n, NULL), TLM_OK);
    size_t off = 0;
    for (int i = 0; i < 1000; i++) {
        char want[32];
        const int k = snprintf(want, sizeof want, "line %d\n", i);
        assert_true(off + (size_t)k <= n);
        assert_memory_equal(got + off, want, (size_t)k);
        off += (size_t)k;
    }
    assert_int_equal(off, n);
    free(got);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0644);
    assert_int_equal(entries(dir), 1);

    assert_int_equal(tlm_atomic_open(&a, path, &err), TLM_OK);
    fputs("half", a.f);
    tlm_atomic_abort(&a);
    assert_int_equal(entries(dir), 1);
    assert_int_equal(tlm_read_file(path, &got, &n, NULL), TLM_OK);
    assert_int_equal(n, off);
    free(got);

    assert_int_equal(mkdir(sub, 0755), 0); /* a directory where the file should go: the rename fails */
    assert_int_equal(tlm_atomic_open(&a, sub, &err), TLM_OK);
    fputs("x", a.f);
    assert_int_equal(tlm_atomic_commit(&a, &err), TLM_ERR_IO);
    assert_non_null(strstr(err.msg, "cannot rename"));
    assert_int_equal(tlm_write_file_atomic(sub, "x", 1, &err), TLM_ERR_IO);
    assert_int_equal(entries(dir), 2);
    assert_int_equal(entries(sub), 0);

    char missing[700];
    snprintf(missing, sizeof missing, "%s/none/out.txt", dir);
    assert_int_equal(tlm_write_file_atomic(missing, "x", 1, &err), TLM_ERR_IO);
    assert_non_null(strstr(err.msg, missing));
}

int main(void)
{
    model = strdup(tu_tmp("stories260K.tlm"));
    if (run("import llama2c '%s' '%s' -o '%s'", tu_data("llama2c/stories260K.bin"), tu_data("llama2c/tok512.bin"), model) != 0) {
        fprintf(stderr, "import failed: %s\n", err_text);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conformance_greedy_200), cmocka_unit_test(test_prompt_and_seed),
        cmocka_unit_test(test_story_corpus),
        cmocka_unit_test(test_help_everywhere),        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_bad_files),              cmocka_unit_test(test_json_outputs),
        cmocka_unit_test(test_export_import_cycle),    cmocka_unit_test(test_atomic_files),
        cmocka_unit_test(test_fed_round), cmocka_unit_test(test_fed_momentum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
