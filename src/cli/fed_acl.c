/* tritlm fed acl --devices DEVICES.txt -o ACL [--topic T] [--server-user U]
 * [--device-user PREFIX]: the Mosquitto access list for a roster, under
 * which the server reads and writes the federation's topics and each
 * enrolled device may only send updates and reveals and read the requests
 * and the global model. */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../host/fedsec.h"
#include "../host/fileio.h"
#include "cli.h"
#include "fed_cli.h"

int cli_fed_acl(int argc, char **argv)
{
    static const struct option opts[] = {
        {"devices", required_argument, 0, 'd'},     {"output", required_argument, 0, 'o'},
        {"topic", required_argument, 0, 't'},       {"server-user", required_argument, 0, 's'},
        {"device-user", required_argument, 0, 'u'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *devices = NULL, *out = NULL, *topic = "tritlm", *server = "server", *prefix = "device";
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': devices = optarg; break;
        case 'o': out = optarg; break;
        case 't': topic = optarg; break;
        case 's': server = optarg; break;
        case 'u': prefix = optarg; break;
        case 'h': fputs(cli_fed_help, stdout); return 0;
        default: return cli_bad_option("fed acl", argv, c);
        }
    }
    if (optind != argc) return cli_usage_error("fed acl", "unexpected argument '%s'", argv[optind]);
    if (!devices) return cli_usage_error("fed acl", "missing --devices DEVICES.txt (the roster: lines 'CLIENT_ID PUBLIC_KEY')");
    if (!out || !*out) return cli_usage_error("fed acl", "missing -o ACL");
    if (cli_fed_bad_topic("fed acl", topic)) return TLM_EXIT_USAGE;
    /* names and the topic go into the file as words: no spaces or control bytes */
    if (!*server) return cli_usage_error("fed acl", "--server-user must not be empty");
    const char *words[3] = {server, prefix, topic};
    for (int i = 0; i < 3; i++)
        for (const unsigned char *p = (const unsigned char *)words[i]; *p; p++)
            if (*p <= ' ' || *p == 0x7F)
                return cli_usage_error("fed acl", "user names and the topic are single words, got '%s'", words[i]);
    const char *in[] = {devices};
    if (cli_refuse_clobber("fed acl", out, in, 1)) return TLM_EXIT_USAGE;
    tlm_error err;
    tlm_fed_roster r;
    if (tlm_fed_roster_read(devices, &r, &err)) return cli_fail("fed acl", &err);
    char dev_user[256];
    for (uint32_t i = 0; i < r.n; i++) { /* a device's name must not be the server's */
        snprintf(dev_user, sizeof dev_user, "%s%u", prefix, (unsigned)r.client[i]);
        if (!strcmp(dev_user, server)) {
            const unsigned id = (unsigned)r.client[i];
            tlm_fed_roster_free(&r);
            return cli_usage_error("fed acl", "device %u's user name %s is the server's (--server-user, --device-user)",
                                   id, dev_user);
        }
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        tlm_fed_roster_free(&r);
        fprintf(stderr, "tritlm fed acl: out of memory\n");
        return TLM_EXIT_FAIL;
    }
    const unsigned n = (unsigned)r.n;
    fprintf(f, "# Mosquitto acl_file written by 'tritlm fed acl' from %s: %u device(s)\n", devices, n);
    fprintf(f, "# the server reads and writes every topic of the federation\nuser %s\ntopic readwrite %s/#\n", server, topic);
    for (uint32_t i = 0; i < r.n; i++)
        fprintf(f,
                "\n# client %u: sends updates and reveals; reads requests and the global model\nuser %s%u\n"
                "topic write %s/round/+/update\ntopic write %s/round/+/reveal\ntopic read %s/round/+/request\n"
                "topic read %s/global\n",
                (unsigned)r.client[i], prefix, (unsigned)r.client[i], topic, topic, topic, topic);
    const int bad = ferror(f);
    fclose(f);
    tlm_fed_roster_free(&r);
    tlm_status st = bad || !text ? tlm_fail(&err, TLM_ERR_IO, "out of memory") : tlm_write_file_atomic(out, text, len, &err);
    free(text);
    if (st) return cli_fail("fed acl", &err);
    fprintf(stderr, "fed acl: %s (%s and %u device(s)); point the broker's acl_file at it\n", out, server, n);
    return 0;
}
