/* cmd_tokenize.c - `llorch tokenize` (placeholder until the command lands). */
#include <stdio.h>

#include "cli.h"

int cmd_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llorch tokenize: not built yet\n");
    return 1;
}
