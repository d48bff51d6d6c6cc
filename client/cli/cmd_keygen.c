/* cmd_keygen.c - `llorch keygen`: a CurveZMQ key pair for tcp:// links between llorch processes. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "security.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch keygen --out PREFIX\n"
            "\n"
            "Writes a new CurveZMQ key pair: PREFIX.key (mode 0600, public and secret key)\n"
            "and PREFIX.pub (the public key alone), Z85 text. Existing files are never\n"
            "overwritten. Give a process its .key (--curve-secret), and put the .pub of the\n"
            "processes it admits in its allow-list (cat *.pub >> allow).\n");
}

int cmd_keygen(int argc, char **argv)
{
    const char *prefix = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            s_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            prefix = argv[++i];
        } else if (argv[i][0] != '-' && !prefix) {
            prefix = argv[i]; /* `llorch keygen NAME`, as docs/protocol.md shows it */
        } else {
            fprintf(stderr, "llorch keygen: unknown option %s\n\n", argv[i]);
            s_usage(stderr);
            return 2;
        }
    }
    if (!prefix || !*prefix) {
        s_usage(stderr);
        return 2;
    }
    char secret_path[4096], public_path[4096];
    if ((size_t)snprintf(secret_path, sizeof secret_path, "%s.key", prefix) >= sizeof secret_path ||
        (size_t)snprintf(public_path, sizeof public_path, "%s.pub", prefix) >= sizeof public_path) {
        fprintf(stderr, "llorch keygen: the prefix is too long\n");
        return 2;
    }
    llorch_error err = {0};
    security_keypair kp;
    if (security_keypair_generate(&kp, &err) != 0 ||
        security_keypair_save(&kp, secret_path, public_path, &err) != 0) {
        fprintf(stderr, "llorch keygen: %s\n", err.msg);
        return 1;
    }
    printf("%s\n", kp.public_key);
    fprintf(stderr, "llorch keygen: wrote %s (secret, keep private) and %s\n", secret_path,
            public_path);
    return 0;
}
