/* error.h - the error value every llorch library call fills in on failure. */
#ifndef LLORCH_ERROR_H
#define LLORCH_ERROR_H

#include <stddef.h>

/* A failed call returns -1 (or NULL) and writes a one-line message here that says
 * what was wrong and, where it can, what to do. A NULL llorch_error is allowed:
 * the message is then dropped. */
typedef struct llorch_error {
    char msg[512];
} llorch_error;

/* Formats the message into err (if not NULL). Always returns -1 so that a caller
 * can write `return llorch_error_set(err, "...")`. */
int llorch_error_set(llorch_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (for adding context on the way up). */
int llorch_error_prefix(llorch_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
