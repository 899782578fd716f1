/* tritlm firmware: builds a model image into firmware for a microcontroller
 * target with firmware/build.sh, runs it in QEMU with the project's
 * instruction-counting plugin and reports what the firmware printed. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../host/classify.h"
#include "../host/device.h"
#include "../host/fedsec.h"
#include "../host/fileio.h"
#include "cli.h"
#include "fw_run.h"
#include "tritlm/tune.h"

static const char help[] =
    "usage: tritlm firmware (--target cortex-m7|cortex-m4|cortex-m0plus|esp32c3|lx106|stm32f405 | --device NAME)\n"
    "                       -m MODEL.tlm [--ctx N]\n"
    "                       [--ram-kb K] [--stack-kb S] [--kv-int8] [--embed asm|c] [-p PROMPT] [-n STEPS] [-o DIR]\n"
    "                       [--adapter UPDATE] [--server-key SERVER.pub] [--uart 1|2|3|6]\n"
    "                       [--interactive [--input FILE]] [--temp T [--top-p P] [--seed S]] [--run] [--json]\n"
    "                       [--classify LABELS [--greedy] [--min-confidence P --oos LABEL]]\n"
    "                       [--tune TEXT [--tune-steps N] [--tune-window W] [--lr LR] [--encode E] [--lora R]\n"
    "                        [--update FILE] [--client ID] [--round R] [--key DEVICE.key --server-key SERVER.pub]]\n"
    "\n"
    "Links MODEL into firmware for the target (the image in flash, read in place; the\n"
    "runtime's arena a static array sized for N positions; RAM capped at K KB, so a model\n"
    "that does not fit fails to link and the message says by how much). With --run, runs\n"
    "it in QEMU: the firmware checks its kernels, decodes greedily from PROMPT for STEPS\n"
    "positions and reports text, RAM, flash and instructions per token.\n"
    "\n"
    "targets: cortex-m7  Arm Cortex-M7, hard float (FPv5), DSP (QEMU mps2-an500)\n"
    "         cortex-m4  Arm Cortex-M4F, hard float (single-precision FPv4), DSP (QEMU\n"
    "                    mps2-an386): STM32F4, nRF52840 and the like\n"
    "         cortex-m0plus  Arm Cortex-M0+ (Armv6-M: no FPU, no DSP), the RP2040's core,\n"
    "                    run on QEMU mps2-an385's Cortex-M3 with unaligned accesses trapping\n"
    "         esp32c3    RV32IMC, the ESP32-C3's core (QEMU riscv32 virt, at most 400 KB)\n"
    "         lx106      Xtensa LX106 (QEMU sim), the stand-in for the ESP32's Xtensa LX6,\n"
    "                    for which neither Debian nor QEMU has a toolchain or machine\n"
    "         stm32f405  a real STM32F405/F407 image (Cortex-M4F at 168 MHz, 1 MB flash, 128 KB\n"
    "                    SRAM): DIR/fw.bin goes onto the board as it is (st-flash write fw.bin\n"
    "                    0x08000000, or dfu-util); the console is a USART at 115200 8N1; --run\n"
    "                    runs the same image on QEMU netduinoplus2\n"
    "\n"
    "  -t, --target T     one of the above\n"
    "      --device NAME  a device of 'tritlm quantize --device list': its core's target, its RAM\n"
    "                     as the budget (unless --ram-kb), its clock for the estimate, and a\n"
    "                     failure if the firmware is larger than its flash\n"
    "  -m, --model FILE   model image (.tlm)\n"
    "      --ctx N        context length the arena holds (default: the model's, at most 256)\n"
    "      --ram-kb K     RAM budget in KB (default 256, or all the target has if less)\n"
    "      --stack-kb S   the stack's share of that budget in KB (default 8); the firmware\n"
    "                     reports its peak (STACK) and exits 98 if it used all of it\n"
    "      --kv-int8      KV cache in int8 (a quarter of its RAM)\n"
    "      --adapter U    decode with the low-rank update U ('tritlm fed update --lora R\n"
    "                     --rank R -m MODEL') on top of the model: U goes into flash next to\n"
    "                     it, read in place; the arena grows by 4 bytes per tensor\n"
    "      --embed asm|c  how the image reaches flash: an assembler .incbin (default), or\n"
    "                     the C array of 'tritlm export c' (left in DIR; its header then\n"
    "                     sizes the arena), as a project without .incbin would use it\n"
    "  -p, --prompt TEXT  (default \"Once upon a time\")\n"
    "  -n, --steps N      positions to decode, counting BOS (default 128)\n"
    "      --classify L   instead of decoding, give PROMPT (and with --interactive each typed\n"
    "                     line) the label of file L that 'tritlm classify' would (L: one\n"
    "                     label a line, or TEXT<TAB>LABEL lines); reports the label, the\n"
    "                     forward passes and the instructions of one classification\n"
    "      --greedy       with --classify: the greedy search ('tritlm classify --greedy')\n"
    "      --min-confidence P --oos LABEL  with --classify: the device gives LABEL instead\n"
    "                     when its label's confidence is below P ('tritlm classify' alike)\n"
    "  -o, --out DIR      where the ELF and logs go (default tritlm-fw-TARGET)\n"
    "      --run          run it in QEMU and report\n"
    "      --tune TEXT    on-device fine-tuning instead of decoding: TEXT (the device's own,\n"
    "                     one line a story) goes into flash, the firmware tokenizes it and\n"
    "                     tunes the norm gains for N steps (default 8) over windows of W\n"
    "                     positions (default 16) at learning rate LR (default 0.01), the\n"
    "                     core's tlm_tune (the same as 'fed update --device-step'), and prints\n"
    "                     the change as a federated update; the arena is the tuner's\n"
    "      --encode E     the update's coding: fp32 (exact, default), int8 or t2 (stochastic\n"
    "                     rounding from a generator the QEMU firmware seeds with a constant;\n"
    "                     a device seeds it from its hardware RNG)\n"
    "      --lora R       with --tune: adapters of rank R on wq, wk, wv and wo instead of the\n"
    "                     gains (the same as 'fed update --device-step --lora R'; LR default\n"
    "                     0.003), sent as int8 low-rank factors the device can decode with\n"
    "      --update FILE  with --tune --run: write that update to FILE, for 'fed aggregate'\n"
    "      --client ID, --round R\n"
    "                     with --tune: the client id and round the update names (default 0:\n"
    "                     a server with --devices takes it only under the id its key is enrolled as)\n"
    "      --key DEVICE.key --server-key SERVER.pub\n"
    "                     with --tune: the firmware signs its update with the device's key and\n"
    "                     seals it to the server's (the core's own cryptography, no library),\n"
    "                     after using it; it prints only the sealed update, which 'fed\n"
    "                     aggregate --key SERVER.key --devices D' opens (the keys, and 32 bytes\n"
    "                     of entropy QEMU cannot give, are compiled in: OUT/tlm_fw_keys.h)\n"
    "      --server-key SERVER.pub (without --tune)\n"
    "                     MODEL is a signed model ('tritlm fed sign'): the firmware checks the\n"
    "                     server's signature on it before using it (exit status 10 if it fails)\n"
    "      --uart N       stm32f405: the console's USART, 1 (PA9 TX, PA10 RX; default), 2 (PA2,\n"
    "                     PA3), 3 (PB10, PB11) or 6 (PC6, PC7)\n"
    "      --temp T, --top-p P, --seed S\n"
    "                     sampled decoding instead of greedy, as 'tritlm generate -t T --top-p P\n"
    "                     --seed S' (the same text; seed default 1); typed prompts (--interactive)\n"
    "                     sample with seed S + k for the k-th\n"
    "      --interactive  stm32f405: after the fixed prompt, the board reads prompts typed on its\n"
    "                     console (echoed; Enter decodes one as its own TEXT line; Ctrl-D on an\n"
    "                     empty line ends); with --run, QEMU's console is typed the lines of\n"
    "      --input FILE   (the JSON's \"replies\"); to type yourself, build without --run and\n"
    "                     start qemu-system-arm -M netduinoplus2 -nographic -kernel DIR/fw.elf\n"
    "      --json         one JSON object on stdout (with --run)\n"
    "  -h, --help         this text\n"
    "\n"
    "Instruction counts are QEMU's executed instructions between the firmware's marker\n"
    "functions, per generated token; est_tokens_per_s divides a typical clock of the\n"
    "target's chip (Cortex-M7 480 MHz as in STM32H7, Cortex-M4 168 MHz as in STM32F407,\n"
    "ESP32-C3 160 MHz, ESP32 240 MHz for the Xtensa stand-in; --device: that part's clock) by\n"
    "them, taking one instruction per cycle: an estimate, not a measurement. Environment: TLM_FIRMWARE_DIR (firmware sources), TLM_PLUGIN (counting\n"
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

/* obj[key]: a TEXT line's escaped text s (n bytes; NULL: none), as bytes
 * again, valid UTF-8. */
static void add_fw_text(cJSON *obj, const char *key, const char *s, size_t n)
{
    char *t = malloc(n + 1);
    if (!t) return;
    const size_t len = unescape_text(s ? s : "", s ? n : 0, t);
    cli_json_add_text(obj, key, t, len);
    free(t);
}

/* "replies": for every `line` line after the first (the answers to the
 * lines typed with --interactive, in order), an object with its text as
 * `key`: TEXT lines as "text", CLASS lines as "label". */
static void add_replies(cJSON *root, const char *out, const char *line, const char *key)
{
    cJSON *arr = cJSON_AddArrayToObject(root, "replies");
    size_t len = 0;
    const char *v = cli_fw_field(out, line, &len); /* the fixed prompt's */
    while (arr && v && (v = cli_fw_field(v + len, line, &len))) {
        cJSON *item = cJSON_CreateObject();
        if (!item) return;
        add_fw_text(item, key, v, len);
        cJSON_AddItemToArray(arr, item);
    }
}

/* n hex digits (n even) into n / 2 bytes at out; 0 on a digit that is not one. */
static int unhex(const char *s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i + 1 < n; i += 2) {
        const int a = hex_value(s[i]), b = hex_value(s[i + 1]);
        if (a < 0 || b < 0) return 0;
        out[i / 2] = (uint8_t)(a * 16 + b);
    }
    return n % 2 == 0;
}

/* RAM (static, the arena in it, plus the painted stack) and flash of a run. */
static void add_memory(cJSON *root, const cli_fw_result *r)
{
    cJSON_AddNumberToObject(root, "ram_bytes", r->static_bytes + r->stack_bytes);
    cJSON_AddNumberToObject(root, "static_bytes", r->static_bytes);
    cJSON_AddNumberToObject(root, "stack_bytes", r->stack_bytes);
    cJSON_AddNumberToObject(root, "arena_bytes", r->arena_bytes);
    cJSON_AddNumberToObject(root, "flash_bytes", r->flash_bytes);
}

/* The device's flash and the firmware's exit status: 0 if both are fine. */
static int check_flash_exit(const tlm_device *dev, double flash_b, int have_exit, double exit_status, const char *dir)
{
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

/* What the tuning firmware printed (fw_tune.c): each step's loss as the
 * hex of its float's bits, the update in hex. Writes the update to `update`
 * if asked; prints JSON or the report. Returns 0 or an exit status. */
static int report_tune(const cli_fw_result *r, const char *target, const char *model, const char *text,
                       uint32_t steps, uint32_t window, double mhz, int json, const char *update, const char *dir)
{
    size_t ll = 0, ul = 0, pl = 0;
    const char *ls = cli_fw_field(r->out, "LOSSES", &ll), *us = cli_fw_field(r->out, "SEALED", &ul);
    const int sealed = us != NULL; /* then only the sealed update left the device */
    if (!sealed) us = cli_fw_field(r->out, "UPDATE", &ul);
    const char *ps = cli_fw_field(r->out, "UPDATE_BYTES", &pl);
    double losses[64];
    uint32_t nl = 0;
    uint8_t be[4]; /* each loss: its float's bits, big-endian, as "XXXXXXXX" words after the key */
    for (size_t i = 0; ls && i + 8 <= ll && nl < 64 && unhex(ls + i, 8, be); i += 9) {
        const uint32_t bits = (uint32_t)be[0] << 24 | (uint32_t)be[1] << 16 | (uint32_t)be[2] << 8 | be[3];
        float f;
        memcpy(&f, &bits, 4);
        losses[nl++] = f;
    }
    uint8_t *msg = us ? malloc(ul / 2 + 1) : NULL;
    size_t mb = 0;
    if (msg && unhex(us, ul, msg)) mb = ul / 2;
    else {
        free(msg);
        msg = NULL;
    }
    const double ram = r->static_bytes + r->stack_bytes;
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "target", target);
        cJSON_AddStringToObject(root, "model", model);
        cJSON_AddStringToObject(root, "tune_text", text);
        cJSON_AddNumberToObject(root, "tune_window", window);
        cJSON_AddNumberToObject(root, "tune_steps", steps);
        cJSON_AddNumberToObject(root, "tune_tokens", r->tune_tokens);
        cJSON *la = cJSON_AddArrayToObject(root, "losses");
        for (uint32_t i = 0; i < nl; i++) cJSON_AddItemToArray(la, cJSON_CreateNumber(losses[i]));
        cJSON_AddNumberToObject(root, "update_bytes", ps ? strtod(ps, NULL) : (double)mb);
        cJSON_AddBoolToObject(root, "sealed", sealed);
        if (sealed) cJSON_AddNumberToObject(root, "sealed_bytes", (double)mb);
        size_t tl = 0;
        const char *dt = cli_fw_field(r->out, "TEXT", &tl); /* --lora: decoded with the adapters just trained */
        if (dt) add_fw_text(root, "text", dt, tl);
        add_memory(root, r);
        if (r->have_insns) {
            cJSON_AddNumberToObject(root, "insns_per_step", r->insns_per_token);
            cJSON_AddNumberToObject(root, "clock_mhz", mhz);
            cJSON_AddNumberToObject(root, "est_seconds_per_step", r->insns_per_token / (mhz * 1e6));
        } else {
            cJSON_AddNullToObject(root, "insns_per_step");
        }
        cJSON_AddNumberToObject(root, "exit_status", r->exit_status);
        cli_json_emit(root);
    } else {
        printf("%s", r->out);
        if (r->have_exit && r->exit_status == 0) { /* else the firmware said why: nothing to sum up */
            printf("RAM %.0f (static incl. arena %.0f + stack %.0f)\n", ram, r->static_bytes, r->stack_bytes);
            if (nl) printf("LOSS first step %.4f, last step %.4f\n", losses[0], losses[nl - 1]);
        }
        if (r->have_insns && r->have_exit && r->exit_status == 0)
            printf("ESTIMATE %.2f s per step at %.0f MHz, one instruction per cycle\n", r->insns_per_token / (mhz * 1e6),
                   mhz);
    }
    int st = 0;
    if (update) {
        tlm_error err;
        if (!msg || mb == 0) {
            fprintf(stderr, "tritlm firmware: the firmware printed no update (its output: %s/run.out)\n", dir);
            st = TLM_EXIT_FAIL;
        } else if (tlm_write_file_atomic(update, msg, mb, &err)) {
            st = cli_fail("firmware", &err);
        }
    }
    free(msg);
    return st;
}

/* The report's first fields: what was built, for which context. */
static cJSON *json_start(const char *target, const char *model, double ctx, int kv8)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "target", target);
    cJSON_AddStringToObject(root, "model", model);
    cJSON_AddNumberToObject(root, "ctx", ctx);
    cJSON_AddBoolToObject(root, "kv_int8", kv8);
    return root;
}

/* mkdir -p: each component of path made if missing. */
static tlm_status mkdir_p(const char *path, tlm_error *err)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1;; s++) {
        const char c = *s;
        if (c != '/' && c != '\0') continue;
        *s = '\0';
        if (mkdir(p, 0777) && errno != EEXIST) return tlm_fail(err, TLM_ERR_IO, "cannot make %s: %s", p, strerror(errno));
        *s = c;
        if (!c) return TLM_OK;
    }
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
        {"device", required_argument, 0, 'D'}, {"tune", required_argument, 0, 'T'},
        {"tune-steps", required_argument, 0, 'S'}, {"tune-window", required_argument, 0, 'W'},
        {"lr", required_argument, 0, 'L'},     {"update", required_argument, 0, 'U'},
        {"encode", required_argument, 0, 'E'}, {"stack-kb", required_argument, 0, 'k'},
        {"adapter", required_argument, 0, 'A'}, {"lora", required_argument, 0, 'l'},
        {"key", required_argument, 0, 'Y'},    {"server-key", required_argument, 0, 'Z'},
        {"client", required_argument, 0, 'I'}, {"round", required_argument, 0, 'N'},
        {"uart", required_argument, 0, 'u'},   {"interactive", no_argument, 0, 'i'},
        {"input", required_argument, 0, 'F'},  {"temp", required_argument, 0, 'X'},
        {"top-p", required_argument, 0, 'P'},  {"seed", required_argument, 0, 's'},
        {"classify", required_argument, 0, 'C'}, {"greedy", no_argument, 0, 'G'},
        {"min-confidence", required_argument, 0, 'Q'}, {"oos", required_argument, 0, 'O'}, {0, 0, 0, 0}};
    const char *target = NULL, *model = NULL, *prompt = "Once upon a time", *outdir = NULL, *embed = "asm";
    uint32_t ctx = 0, ram_kb = 256, stack_kb = 8, steps = 128, tune_steps = 8, tune_window = 16, tune_lora = 0;
    uint32_t tune_client = 0, tune_round = 0, uart = 0;
    float tune_lr = 0.0f; /* 0: the core's default for what is tuned */
    int kv8 = 0, run = 0, json = 0, c, ram_given = 0, tune_opts = 0, interactive = 0;
    const char *input = NULL;
    float temp = 0.0f, top_p = 1.0f;
    uint64_t seed = 1;
    int sampling_opts = 0;
    const char *device = NULL, *tune = NULL, *update = NULL, *encode = NULL, *adapter = NULL;
    const char *seal_key = NULL, *seal_pub = NULL, *classify = NULL, *oos = NULL;
    int greedy = 0;
    float min_conf = 0.0f;
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
        case 'k':
            if (!cli_parse_u32(optarg, 1, 1024, &stack_kb)) return cli_usage_error("firmware", "--stack-kb expects 1..1024, got '%s'", optarg);
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
        case 'T': tune = optarg; break;
        case 'I':
            if (!cli_parse_u32(optarg, 0, 0xFFFFFFFFu, &tune_client))
                return cli_usage_error("firmware", "--client expects an integer, got '%s'", optarg);
            tune_opts = 1;
            break;
        case 'N':
            if (!cli_parse_u32(optarg, 0, 0xFFFFFFFFu, &tune_round))
                return cli_usage_error("firmware", "--round expects an integer, got '%s'", optarg);
            tune_opts = 1;
            break;
        case 'Y': seal_key = optarg; break;
        case 'Z': seal_pub = optarg; break;
        case 'S':
            if (!cli_parse_u32(optarg, 1, 1u << 20, &tune_steps))
                return cli_usage_error("firmware", "--tune-steps expects a positive integer, got '%s'", optarg);
            tune_opts = 1;
            break;
        case 'W':
            if (!cli_parse_u32(optarg, 1, 1u << 16, &tune_window))
                return cli_usage_error("firmware", "--tune-window expects a positive integer, got '%s'", optarg);
            tune_opts = 1;
            break;
        case 'L':
            if (!cli_parse_float(optarg, 1e-9f, 10.0f, &tune_lr))
                return cli_usage_error("firmware", "--lr expects a learning rate in (0, 10], got '%s'", optarg);
            tune_opts = 1;
            break;
        case 'U': update = optarg; break;
        case 'A': adapter = optarg; break;
        case 'l':
            if (!cli_parse_u32(optarg, 1, TLM_TUNE_MAX_RANK, &tune_lora))
                return cli_usage_error("firmware", "--lora expects a rank from 1 to %u, got '%s'", TLM_TUNE_MAX_RANK, optarg);
            tune_opts = 1;
            break;
        case 'E':
            if (strcmp(optarg, "fp32") && strcmp(optarg, "int8") && strcmp(optarg, "t2"))
                return cli_usage_error("firmware", "--encode expects fp32, int8 or t2, got '%s'", optarg);
            encode = optarg;
            tune_opts = 1;
            break;
        case 'u':
            if (!cli_parse_u32(optarg, 1, 6, &uart) || uart == 4 || uart == 5)
                return cli_usage_error("firmware", "--uart takes 1, 2, 3 or 6, got '%s'", optarg);
            break;
        case 'i': interactive = 1; break;
        case 'X':
            if (!cli_parse_float(optarg, 0.0f, 100.0f, &temp))
                return cli_usage_error("firmware", "--temp expects a temperature in [0, 100], got '%s'", optarg);
            break;
        case 'P':
            if (!cli_parse_float(optarg, 1e-6f, 1.0f, &top_p))
                return cli_usage_error("firmware", "--top-p expects a value in (0, 1], got '%s'", optarg);
            sampling_opts = 1;
            break;
        case 's':
            if (!cli_parse_u64(optarg, &seed)) return cli_usage_error("firmware", "--seed expects an integer, got '%s'", optarg);
            sampling_opts = 1;
            break;
        case 'F': input = optarg; break;
        case 'C': classify = optarg; break;
        case 'G': greedy = 1; break;
        case 'Q':
            if (cli_parse_confidence("firmware", optarg, &min_conf)) return TLM_EXIT_USAGE;
            break;
        case 'O': oos = optarg; break;
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
        if (target && strcmp(target, dev->target) && !(dev->board && !strcmp(target, dev->board)))
            return cli_usage_error("firmware", "%s has a %s core: leave out --target %s", device, dev->target, target);
        if (!target) target = dev->board ? dev->board : dev->target; /* a real board's image where there is one */
        if (!ram_given) ram_kb = dev->ram_kb;
    }
    if (!target) return cli_usage_error("firmware", "missing --target (cortex-m7, cortex-m4, cortex-m0plus, esp32c3, lx106 or stm32f405) or --device");
    if (!model) return cli_usage_error("firmware", "missing -m MODEL.tlm");
    const double mhz = dev ? (double)dev->mhz : cli_fw_target_mhz(target);
    if (mhz <= 0.0) return cli_usage_error("firmware", "unknown target '%s' (cortex-m7, cortex-m4, cortex-m0plus, esp32c3, lx106 or stm32f405)", target);
    if (!ram_given && !dev) ram_kb = cli_fw_target_ram_kb(target);
    if (uart && strcmp(target, "stm32f405")) return cli_usage_error("firmware", "--uart picks the stm32f405's console; the %s target's is fixed", target);
    if (interactive && strcmp(target, "stm32f405"))
        return cli_usage_error("firmware", "--interactive needs a console to type on: the stm32f405 target, not %s", target);
    if (input && !interactive) return cli_usage_error("firmware", "--input FILE types its lines for --interactive");
    if (interactive && run && !input)
        return cli_usage_error("firmware", "--interactive --run types the lines of --input FILE (to type yourself, build without --run and start qemu-system-arm -M netduinoplus2 -nographic -kernel DIR/fw.elf)");
    if (sampling_opts && !(temp > 0.0f)) return cli_usage_error("firmware", "--top-p and --seed go with --temp T (T > 0)");
    if (temp > 0.0f && tune) return cli_usage_error("firmware", "--temp samples the decoder's text: not with --tune");
    if (interactive && (tune || adapter)) return cli_usage_error("firmware", "--interactive decodes the model: not with --tune or --adapter");
    if (input && access(input, R_OK)) {
        fprintf(stderr, "tritlm firmware: cannot read %s: %s\n", input, strerror(errno));
        return TLM_EXIT_FAIL;
    }
    if (json && !run) return cli_usage_error("firmware", "--json reports a run: add --run");
    if (greedy && !classify) return cli_usage_error("firmware", "--greedy goes with --classify LABELS");
    if ((min_conf > 0.0f || oos) && !classify) return cli_usage_error("firmware", "--min-confidence and --oos go with --classify LABELS");
    if ((min_conf > 0.0f) != (oos != NULL)) return cli_usage_error("firmware", "--min-confidence and --oos go together");
    if (classify && (tune || temp > 0.0f)) return cli_usage_error("firmware", "--classify neither tunes nor samples: not with --tune or --temp");
    if (stack_kb >= ram_kb) return cli_usage_error("firmware", "--stack-kb %u leaves nothing of the %u KB of RAM", stack_kb, ram_kb);
    if (!tune && (tune_opts || update))
        return cli_usage_error("firmware", "--tune-steps, --tune-window, --lr, --encode, --lora, --client, --round and --update go with --tune TEXT");
    if (tune ? !seal_key != !seal_pub : seal_key != NULL) /* (--server-key alone, without --tune: a signed model) */
        return cli_usage_error("firmware", "--key and --server-key go together, with --tune TEXT (the device seals its update)");
    if (seal_pub) { /* read here for a clear message; build.sh takes the same lines */
        tlm_fed_keys k;
        tlm_fed_pub p;
        tlm_error err;
        tlm_status st = TLM_OK;
        if (seal_key) {
            st = tlm_fed_keys_read(seal_key, &k, &err);
            tlm_fed_keys_wipe(&k);
        }
        if (st || tlm_fed_pub_read(seal_pub, &p, &err)) return cli_fail("firmware", &err);
    }
    if (tune_lora && encode && strcmp(encode, "int8"))
        return cli_usage_error("firmware", "--lora sends its adapters as int8 factors: not --encode %s", encode);
    if (update && !run) return cli_usage_error("firmware", "--update writes what a run printed: add --run");
    if (tune && (kv8 || strcmp(embed, "asm")))
        return cli_usage_error("firmware", "--tune builds the tuner, not the decoder: no --kv-int8 or --embed c");
    if (tune && adapter) return cli_usage_error("firmware", "--adapter decodes with an update: not with --tune");
    if (adapter && access(adapter, R_OK)) {
        fprintf(stderr, "tritlm firmware: cannot read %s: %s\n", adapter, strerror(errno));
        return TLM_EXIT_FAIL;
    }
    if (tune && access(tune, R_OK)) {
        fprintf(stderr, "tritlm firmware: cannot read %s: %s\n", tune, strerror(errno));
        return TLM_EXIT_FAIL;
    }
    if (update) {
        const char *in[] = {model, tune};
        if (cli_refuse_clobber("firmware", update, in, 2)) return TLM_EXIT_USAGE;
    }
    if (access(model, R_OK)) {
        fprintf(stderr, "tritlm firmware: cannot read %s: %s\n", model, strerror(errno));
        return TLM_EXIT_FAIL;
    }

    char dir[4096];
    if (outdir) snprintf(dir, sizeof dir, "%s", outdir);
    else snprintf(dir, sizeof dir, "tritlm-fw-%s", target);
    char labels_path[4200];
    int32_t oos_index = -1;
    if (classify) { /* the labels as 'tritlm classify' reads them, one a line, for build.sh */
        uint8_t *lt;
        size_t ll;
        tlm_labels labels;
        tlm_error err;
        if (tlm_read_text(classify, &lt, &ll, &err)) return cli_fail("firmware", &err);
        tlm_status st = tlm_labels_parse((const char *)lt, ll, &labels, &err);
        free(lt);
        if (st) return cli_fail("firmware", &err);
        size_t total = 0;
        for (size_t i = 0; i < labels.n; i++) total += strlen(labels.name[i]) + 1;
        if (oos && (oos_index = tlm_labels_index(&labels, oos)) < 0) {
            tlm_labels_free(&labels);
            return cli_usage_error("firmware", "--oos '%s' is not one of the labels of %s", oos, classify);
        }
        char *joined = malloc(total + 1), *w = joined; /* (sprintf ends with a NUL) */
        for (size_t i = 0; joined && i < labels.n; i++) w += sprintf(w, "%s\n", labels.name[i]);
        tlm_labels_free(&labels);
        snprintf(labels_path, sizeof labels_path, "%s/labels.in.txt", dir);
        if (!joined) return cli_usage_error("firmware", "out of memory");
        if (mkdir_p(dir, &err) || tlm_write_file_atomic(labels_path, joined, total, &err)) st = TLM_ERR_IO;
        free(joined);
        if (st) return cli_fail("firmware", &err);
    }
    const cli_fw_job job = {.target = target, .model = model, .dir = dir, .prompt = prompt, .embed = embed,
                            .ctx = ctx, .ram_kb = ram_kb, .stack_kb = stack_kb, .steps = steps, .kv8 = kv8, .run = run, .adapter = adapter, .uart = uart,
                            .interactive = interactive, .input = input, .temp = temp, .top_p = top_p, .seed = seed,
                            .tune_text = tune, .tune_steps = tune_steps, .tune_window = tune_window, .tune_lr = tune_lr,
                            .tune_encode = encode, .tune_lora = tune_lora, .seal_key = seal_key, .seal_pub = seal_pub,
                            .tune_client = tune_client, .tune_round = tune_round,
                            .classify = classify ? labels_path : NULL, .greedy = greedy, .reject = oos != NULL,
                            .reject_unats = oos ? (uint32_t)(-log((double)min_conf) * 1e6 + 0.5) : 0,
                            .reject_label = oos ? (uint32_t)oos_index : 0};
    cli_fw_result r;
    if (cli_fw_build_run("firmware", &job, &r)) {
        cli_fw_result_free(&r);
        return TLM_EXIT_FAIL;
    }
    const char *out = r.out;
    const double exit_status = r.exit_status, stat_b = r.static_bytes, stack_b = r.stack_bytes;
    const double flash_b = r.flash_bytes, model_b = r.model_bytes, tokens = r.tokens;
    const double insns = r.insns_per_token;
    const int have_exit = r.have_exit, have_insns = r.have_insns;
    if (!run) {
        printf("%s", out);
        cli_fw_result_free(&r);
        return 0;
    }
    /* the arena is part of .bss, so static + stack is the whole RAM */
    const double ram = stat_b + stack_b;
    if (tune) {
        const int st = report_tune(&r, target, model, tune, tune_steps, tune_window, mhz, json, update, dir);
        cli_fw_result_free(&r);
        return st ? st : check_flash_exit(dev, flash_b, have_exit, exit_status, dir);
    }
    if (classify) {
        const double ins = r.insns_per_classification;
        if (json) {
            cJSON *root = json_start(target, model, r.ctx, kv8);
            cJSON_AddStringToObject(root, "search", greedy ? "greedy" : "exact");
            size_t len = 0, fl = 0;
            const char *v = cli_fw_field(out, "CLASS", &len), *f = cli_fw_field(out, "FORWARDS", &fl);
            add_fw_text(root, "label", v, v ? len : 0);
            cJSON_AddNumberToObject(root, "forwards", f ? strtod(f, NULL) : 0);
            const char *cp = cli_fw_field(out, "NLL_UNATS", &fl);
            cJSON_AddNumberToObject(root, "confidence", cp ? exp(-strtod(cp, NULL) / 1e6) : 0);
            if (interactive) add_replies(root, out, "CLASS", "label");
            add_memory(root, &r);
            cJSON_AddNumberToObject(root, "model_bytes", model_b);
            if (ins > 0) {
                cJSON_AddNumberToObject(root, "insns_per_classification", ins);
                cJSON_AddNumberToObject(root, "clock_mhz", mhz);
                cJSON_AddNumberToObject(root, "est_ms_per_classification", ins / (mhz * 1e3));
            } else {
                cJSON_AddNullToObject(root, "insns_per_classification");
            }
            cJSON_AddNumberToObject(root, "exit_status", exit_status);
            cli_json_emit(root);
        } else {
            printf("%s", out);
            printf("RAM %.0f (static incl. arena %.0f + stack %.0f)\n", ram, stat_b, stack_b);
            if (ins > 0) printf("ESTIMATE %.1f ms per classification at %.0f MHz, one instruction per cycle\n", ins / (mhz * 1e3), mhz);
        }
        cli_fw_result_free(&r);
        return check_flash_exit(dev, flash_b, have_exit, exit_status, dir);
    }
    size_t tl = 0;
    const char *text = cli_fw_field(out, "TEXT", &tl);
    if (json) {
        cJSON *root = json_start(target, model, r.ctx, kv8);
        if (adapter) {
            cJSON_AddStringToObject(root, "adapter", adapter);
            double ab = 0;
            size_t al = 0;
            const char *a = cli_fw_field(out, "ADAPTER", &al);
            if (a) ab = strtod(a, NULL);
            cJSON_AddNumberToObject(root, "adapter_bytes", ab);
        }
        add_fw_text(root, "text", text, tl);
        cJSON_AddNumberToObject(root, "tokens", tokens);
        if (interactive) add_replies(root, out, "TEXT", "text");
        size_t sl = 0;
        const char *sr = cli_fw_field(out, "SIGNED", &sl); /* "round R, the server's signature verified" */
        if (sr && sl > 6) cJSON_AddNumberToObject(root, "signed_round", strtod(sr + 6, NULL));
        add_memory(root, &r);
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
        size_t bl = 0;
        const char *bin = cli_fw_field(out, "BIN", &bl); /* stm32f405: the image a flasher takes */
        if (bin) cli_json_add_text(root, "bin", bin, bl);
        cli_json_emit(root);
    } else {
        printf("%s", out);
        printf("RAM %.0f (static incl. arena %.0f + stack %.0f)\n", ram, stat_b, stack_b);
        if (have_insns)
            printf("ESTIMATE %.1f tokens/s at %.0f MHz, one instruction per cycle\n", mhz * 1e6 / insns, mhz);
    }
    cli_fw_result_free(&r);
    return check_flash_exit(dev, flash_b, have_exit, exit_status, dir);
}
