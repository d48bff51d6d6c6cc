/* cmd_check.c - `llorch check` (placeholder until the command lands). */
#include <stdio.h>

#include "cli.h"

int cmd_check(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llorch check: not built yet\n");
    return 1;
}
