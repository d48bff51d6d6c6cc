/* cli.h - the subcommands of the `llorch` command-line tool. */
#ifndef LLORCH_CLI_H
#define LLORCH_CLI_H

/* Each subcommand gets argv from its own name on (argv[0] = "inspect", ...) and
 * returns the process exit status: 0 success, 1 failure, 2 usage error. */
int cmd_inspect(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_check(int argc, char **argv);

#endif
