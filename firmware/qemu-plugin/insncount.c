/* QEMU TCG plugin (API v1, QEMU 7.2): counts every executed guest
 * instruction, and those executed between calls of two marker functions
 * found by symbol name (start=SYM,stop=SYM). Prints on stderr at exit:
 *   insncount: total=N region=M region_calls=K
 * With profile=N it also prints the N functions that executed the most
 * instructions over the whole run ("insnprof: COUNT SYMBOL").
 * Single vCPU (microcontroller machines). No QEMU headers needed: the few
 * API functions used are declared here. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct {
    const char *target_name;
    struct { int min, cur; } version;
    bool system_emulation;
    union { struct { int smp_vcpus, max_vcpus; } system; };
} qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum { CB_NO_REGS = 0 };
enum { INLINE_ADD_U64 = 0 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*vcpu_udata_cb)(unsigned int, void *);
typedef void (*udata_cb)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *, int, void *, uint64_t);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *, vcpu_udata_cb, int, void *);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
const char *qemu_plugin_insn_symbol(const struct qemu_plugin_insn *);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb, void *);

#define EXPORT __attribute__((visibility("default")))
EXPORT int qemu_plugin_version = 1;

static uint64_t total, region, region_from, calls;
static bool inside;
static const char *start_sym, *stop_sym;

#define PROF_MAX 1024
static int profile_top;
static struct prof_entry {
    const char *sym;
    uint64_t count;
} prof[PROF_MAX];
static size_t n_prof;

static uint64_t *prof_counter(const char *sym)
{
    for (size_t i = 0; i < n_prof; i++)
        if (prof[i].sym == sym || !strcmp(prof[i].sym, sym)) return &prof[i].count;
    if (n_prof == PROF_MAX) return NULL;
    prof[n_prof].sym = sym;
    return &prof[n_prof++].count;
}

static int by_count(const void *a, const void *b)
{
    const uint64_t x = ((const struct prof_entry *)a)->count, y = ((const struct prof_entry *)b)->count;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void on_start(unsigned int cpu, void *u)
{
    (void)cpu;
    (void)u;
    inside = true;
    region_from = total;
}

static void on_stop(unsigned int cpu, void *u)
{
    (void)cpu;
    (void)u;
    if (!inside) return;
    region += total - region_from;
    calls++;
    inside = false;
}

static void on_tb(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    for (size_t i = 0, n = qemu_plugin_tb_n_insns(tb); i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        /* one inline add per instruction: exact even when a block exits early */
        qemu_plugin_register_vcpu_insn_exec_inline(insn, INLINE_ADD_U64, &total, 1);
        const char *sym = qemu_plugin_insn_symbol(insn);
        if (!sym) continue;
        if (profile_top) {
            uint64_t *c = prof_counter(sym);
            if (c) qemu_plugin_register_vcpu_insn_exec_inline(insn, INLINE_ADD_U64, c, 1);
        }
        if (start_sym && !strcmp(sym, start_sym)) qemu_plugin_register_vcpu_insn_exec_cb(insn, on_start, CB_NO_REGS, NULL);
        if (stop_sym && !strcmp(sym, stop_sym)) qemu_plugin_register_vcpu_insn_exec_cb(insn, on_stop, CB_NO_REGS, NULL);
    }
}

static void on_exit_cb(qemu_plugin_id_t id, void *u)
{
    (void)id;
    (void)u;
    fprintf(stderr, "insncount: total=%llu region=%llu region_calls=%llu\n", (unsigned long long)total,
            (unsigned long long)region, (unsigned long long)calls);
    if (!profile_top) return;
    qsort(prof, n_prof, sizeof prof[0], by_count);
    for (size_t i = 0; i < n_prof && i < (size_t)profile_top; i++)
        fprintf(stderr, "insnprof: %llu %s\n", (unsigned long long)prof[i].count, prof[i].sym);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "start=", 6)) start_sym = argv[i] + 6;
        else if (!strncmp(argv[i], "stop=", 5)) stop_sym = argv[i] + 5;
        else if (!strncmp(argv[i], "profile=", 8)) profile_top = atoi(argv[i] + 8);
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    return 0;
}
