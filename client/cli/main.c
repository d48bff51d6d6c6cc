/* main.c - `llorch`: one binary, a subcommand per job. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "log.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command s_commands[] = {
    {"inspect", cmd_inspect, "show a GGUF model's header, config and tensors"},
    {"mkmodel", cmd_mkmodel, "write a random-weight Llama GGUF model"},
    {"tokenize", cmd_tokenize, "turn text into token ids with a model's vocabulary"},
    {"generate", cmd_generate, "generate text from a prompt"},
    {"check", cmd_check, "run the 12 correctness checkpoints and write a proof bundle"},
    {"up", cmd_up, "start a loader, workers and a router on this host"},
    {"stats", cmd_stats, "show a running router's counters"},
    {"keygen", cmd_keygen, "write a CurveZMQ key pair for tcp:// links"},
};

static void s_usage(FILE *out)
{
    fprintf(out, "usage: llorch COMMAND [options]   (llorch COMMAND --help for its options)\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof s_commands / sizeof s_commands[0]; i++)
        fprintf(out, "  %-10s %s\n", s_commands[i].name, s_commands[i].summary);
}

int main(int argc, char **argv)
{
    log_init("llorch", LOG_WARN);
    if (argc < 2) {
        s_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        s_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof s_commands / sizeof s_commands[0]; i++)
        if (!strcmp(argv[1], s_commands[i].name))
            return s_commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "llorch: unknown command '%s'\n\n", argv[1]);
    s_usage(stderr);
    return 2;
}
