/* tritlm firmware: builds a model image into firmware for a microcontroller
 * target with firmware/build.sh, runs it in QEMU with the project's
 * instruction-counting plugin and reports what the firmware printed. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../host/device.h"
#include "cli.h"
#include "fw_run.h"

static const char help[] =
    "usage: tritlm firmware (--target cortex-m7|esp32c3|lx106 | --device NAME) -m MODEL.tlm [--ctx N] [--ram-kb K]\n"
    "                       [--kv-int8] [--embed asm|c] [-p PROMPT] [-n STEPS] [-o DIR] [--run] [--json]\n"
    "\n"
    "Links MODEL into firmware for the target (the image in flash, read in place; the\n"
    "runtime's arena a static array sized for N positions; RAM capped at K KB, so a model\n"
    "that does not fit fails to link and the message says by how much). With --run, runs\n"
    "it in QEMU: the firmware checks its kernels, decodes greedily from PROMPT for STEPS\n"
    "positions and reports text, RAM, flash and instructions per token.\n"
    "\n"
    "targets: cortex-m7  Arm Cortex-M7, hard float, DSP (QEMU mps2-an500)\n"
    "         esp32c3    RV32IMC, the ESP32-C3's core (QEMU riscv32 virt, at most 400 KB)\n"
    "         lx106      Xtensa LX106 (QEMU sim), the stand-in for the ESP32's Xtensa LX6,\n"
    "                    for which neither Debian nor QEMU has a toolchain or machine\n"
    "\n"
    "  -t, --target T     one of the above\n"
    "      --device NAME  a device of 'tritlm quantize --device list': its core's target, its RAM\n"
    "                     as the budget (unless --ram-kb), its clock for the estimate, and a\n"
    "                     failure if the firmware is larger than its flash\n"
    "  -m, --model FILE   model image (.tlm)\n"
    "      --ctx N        context length the arena holds (default 256)\n"
    "      --ram-kb K     RAM budget in KB (default 256)\n"
    "      --kv-int8      KV cache in int8 (a quarter of its RAM)\n"
    "      --embed asm|c  how the image reaches flash: an assembler .incbin (default), or\n"
    "                     the C array of 'tritlm export c' (left in DIR; its header then\n"
    "                     sizes the arena), as a project without .incbin would use it\n"
    "  -p, --prompt TEXT  (default \"Once upon a time\")\n"
    "  -n, --steps N      positions to decode, counting BOS (default 128)\n"
    "  -o, --out DIR      where the ELF and logs go (default tritlm-fw-TARGET)\n"
    "      --run          run it in QEMU and report\n"
    "      --json         one JSON object on stdout (with --run)\n"
    "  -h, --help         this text\n"
    "\n"
    "Instruction counts are QEMU's executed instructions between the firmware's marker\n"
    "functions, per generated token; est_tokens_per_s divides a typical clock of the\n"
    "target's chip (Cortex-M7 480 MHz as in STM32H7, ESP32-C3 160 MHz, ESP32 240 MHz for\n"
    "the Xtensa stand-in) by them, taking one instruction per cycle: an estimate, not a\n"
    "measurement. Environment: TLM_FIRMWARE_DIR (firmware sources), TLM_PLUGIN (counting\n"
    "plugin).\n";

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The firmware's TEXT line back to bytes: \n, \\ and \xHH (fw_main.c's
 * put_text). Writes at most n bytes to out; returns how many. */
static size_t unescape_text(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n && s[i + 1] == 'n') {
            out[o++] = '\n';
            i++;
        } else if (s[i] == '\\' && i + 1 < n && s[i + 1] == '\\') {
            out[o++] = '\\';
            i++;
        } else if (s[i] == '\\' && i + 3 < n && s[i + 1] == 'x' && hex_value(s[i + 2]) >= 0 && hex_value(s[i + 3]) >= 0) {
            out[o++] = (char)(hex_value(s[i + 2]) * 16 + hex_value(s[i + 3]));
            i += 3;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

int cmd_firmware(int argc, char **argv)
{
    static const struct option opts[] = {
        {"target", required_argument, 0, 't'}, {"model", required_argument, 0, 'm'},
        {"ctx", required_argument, 0, 'c'},    {"ram-kb", required_argument, 0, 'r'},
        {"kv-int8", no_argument, 0, 'K'},      {"prompt", required_argument, 0, 'p'},
        {"steps", required_argument, 0, 'n'},  {"out", required_argument, 0, 'o'},
        {"run", no_argument, 0, 'R'},          {"json", no_argument, 0, 'j'},
        {"embed", required_argument, 0, 'e'},  {"help", no_argument, 0, 'h'},
        {"device", required_argument, 0, 'D'},
        {0, 0, 0, 0}};
    const char *target = NULL, *model = NULL, *prompt = "Once upon a time", *outdir = NULL, *embed = "asm";
    uint32_t ctx = 256, ram_kb = 256, steps = 128;
    int kv8 = 0, run = 0, json = 0, c, ram_given = 0;
    const char *device = NULL;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":t:m:p:n:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 't': target = optarg; break;
        case 'm': model = optarg; break;
        case 'c':
            if (!cli_parse_u32(optarg, 1, 1u << 20, &ctx)) return cli_usage_error("firmware", "--ctx expects a positive integer, got '%s'", optarg);
            break;
        case 'r':
            if (!cli_parse_u32(optarg, 8, 4096, &ram_kb)) return cli_usage_error("firmware", "--ram-kb expects 8..4096, got '%s'", optarg);
            ram_given = 1;
            break;
        case 'n':
            if (!cli_parse_u32(optarg, 1, 1u << 20, &steps)) return cli_usage_error("firmware", "--steps expects a positive integer, got '%s'", optarg);
            break;
        case 'K': kv8 = 1; break;
        case 'e':
            if (strcmp(optarg, "asm") && strcmp(optarg, "c")) return cli_usage_error("firmware", "--embed takes asm or c, got '%s'", optarg);
            embed = optarg;
            break;
        case 'p': prompt = optarg; break;
        case 'D': device = optarg; break;
        case 'o': outdir = optarg; break;
        case 'R': run = 1; break;
        case 'j': json = 1; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_bad_option("firmware", argv, c);
        }
    }
    if (optind != argc) return cli_usage_error("firmware", "unexpected argument '%s'", argv[optind]);
    const tlm_device *dev = NULL;
    if (device) {
        dev = tlm_device_find(device);
        if (!dev) return cli_usage_error("firmware", "unknown device '%s' ('tritlm quantize --device list' lists them)", device);
        if (target && strcmp(target, dev->target))
            return cli_usage_error("firmware", "%s has a %s core: leave out --target %s", device, dev->target, target);
        target = dev->target;
        if (!ram_given) ram_kb = dev->ram_kb;
    }
    if (!target) return cli_usage_error("firmware", "missing --target (cortex-m7, esp32c3 or lx106) or --device");
    if (!model) return cli_usage_error("firmware", "missing -m MODEL.tlm");
    const double mhz = dev ? (double)dev->mhz : cli_fw_target_mhz(target);
    if (mhz <= 0.0) return cli_usage_error("firmware", "unknown target '%s' (cortex-m7, esp32c3 or lx106)", target);
    if (json && !run) return cli_usage_error("firmware", "--json reports a run: add --run");
    if (access(model, R_OK)) {
        fprintf(stderr, "tritlm firmware: cannot read %s: %s\n", model, strerror(errno));
        return TLM_EXIT_FAIL;
    }

    char dir[4096];
    if (outdir) snprintf(dir, sizeof dir, "%s", outdir);
    else snprintf(dir, sizeof dir, "tritlm-fw-%s", target);
    const cli_fw_job job = {.target = target, .model = model, .dir = dir, .prompt = prompt, .embed = embed,
                            .ctx = ctx, .ram_kb = ram_kb, .steps = steps, .kv8 = kv8, .run = run};
    cli_fw_result r;
    if (cli_fw_build_run("firmware", &job, &r)) {
        cli_fw_result_free(&r);
        return TLM_EXIT_FAIL;
    }
    const char *out = r.out;
    const double exit_status = r.exit_status, stat_b = r.static_bytes, stack_b = r.stack_bytes;
    const double arena_b = r.arena_bytes, flash_b = r.flash_bytes, model_b = r.model_bytes, tokens = r.tokens;
    const double insns = r.insns_per_token;
    const int have_exit = r.have_exit, have_insns = r.have_insns;
    if (!run) {
        printf("%s", out);
        cli_fw_result_free(&r);
        return 0;
    }
    /* the arena is part of .bss, so static + stack is the whole RAM */
    const double ram = stat_b + stack_b;
    size_t tl = 0;
    const char *text = cli_fw_field(out, "TEXT", &tl);
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "target", target);
        cJSON_AddStringToObject(root, "model", model);
        cJSON_AddNumberToObject(root, "ctx", ctx);
        cJSON_AddBoolToObject(root, "kv_int8", kv8);
        char *t = malloc(tl + 1);
        if (t) {
            const size_t n = unescape_text(text ? text : "", text ? tl : 0, t);
            cli_json_add_text(root, "text", t, n);
            free(t);
        }
        cJSON_AddNumberToObject(root, "tokens", tokens);
        cJSON_AddNumberToObject(root, "ram_bytes", ram);
        cJSON_AddNumberToObject(root, "static_bytes", stat_b);
        cJSON_AddNumberToObject(root, "stack_bytes", stack_b);
        cJSON_AddNumberToObject(root, "arena_bytes", arena_b);
        cJSON_AddNumberToObject(root, "flash_bytes", flash_b);
        cJSON_AddNumberToObject(root, "model_bytes", model_b);
        if (have_insns) {
            cJSON_AddNumberToObject(root, "insns_per_token", insns);
            cJSON_AddNumberToObject(root, "clock_mhz", mhz);
            cJSON_AddNumberToObject(root, "est_tokens_per_s", mhz * 1e6 / insns);
        } else {
            cJSON_AddNullToObject(root, "insns_per_token");
        }
        cJSON_AddNumberToObject(root, "exit_status", exit_status);
        char elf[4200];
        snprintf(elf, sizeof elf, "%s/fw.elf", dir);
        cJSON_AddStringToObject(root, "elf", elf);
        char *s = cJSON_PrintUnformatted(root);
        if (s) puts(s);
        free(s);
        cJSON_Delete(root);
    } else {
        printf("%s", out);
        printf("RAM %.0f (static incl. arena %.0f + stack %.0f)\n", ram, stat_b, stack_b);
        if (have_insns)
            printf("ESTIMATE %.1f tokens/s at %.0f MHz, one instruction per cycle\n", mhz * 1e6 / insns, mhz);
    }
    cli_fw_result_free(&r);
    if (dev && flash_b > (double)dev->flash_kb * 1024.0) {
        fprintf(stderr, "tritlm firmware: the firmware needs %.0f bytes of flash, %.0f more than %s has (%u KB)\n", flash_b,
                flash_b - (double)dev->flash_kb * 1024.0, dev->name, dev->flash_kb);
        return TLM_EXIT_FAIL;
    }
    if (!have_exit || exit_status != 0) {
        fprintf(stderr, "tritlm firmware: the firmware exited with status %.0f (QEMU's messages: %s/run.err)\n",
                exit_status, dir);
        return TLM_EXIT_FAIL;
    }
    return 0;
}
