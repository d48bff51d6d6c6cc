/* cli.h - the subcommands of the `llorch` command-line tool. */
#ifndef LLORCH_CLI_H
#define LLORCH_CLI_H

#include <stdbool.h>

/* Each subcommand gets argv from its own name on (argv[0] = "inspect", ...) and
 * returns the process exit status: 0 success, 1 failure, 2 usage error. */
int cmd_inspect(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_up(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_stats(int argc, char **argv);

/* `llorch generate` through a pipeline (generate_remote.c): wanted when argv has
 * --router, --workers or --split; same flags and output as the in-process command. */
bool generate_remote_wanted(int argc, char **argv);
int cmd_generate_remote(int argc, char **argv);

#endif
