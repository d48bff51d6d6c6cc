/* cmd_generate.c - `llorch generate` (placeholder until the command lands). */
#include <stdio.h>

#include "cli.h"

int cmd_generate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llorch generate: not built yet\n");
    return 1;
}
