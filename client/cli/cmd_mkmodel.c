/* cmd_mkmodel.c - `llorch mkmodel` (placeholder until the command lands). */
#include <stdio.h>

#include "cli.h"

int cmd_mkmodel(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llorch mkmodel: not built yet\n");
    return 1;
}
