/* cmd_inspect.c - `llorch inspect` (placeholder until the command lands). */
#include <stdio.h>

#include "cli.h"

int cmd_inspect(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llorch inspect: not built yet\n");
    return 1;
}
