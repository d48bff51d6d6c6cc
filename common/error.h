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

/* Failures a caller acts on differently from the rest. A call whose contract names one
 * returns it instead of -1 (the message is filled in all the same); any other failure is
 * -1, so `< 0` still tells failure from success. Callers decide by the value, never by
 * the message's text. */
enum {
    LLORCH_ERR_NO_MEMORY = -2, /* a memory budget (a KV cache's blocks or slots) is full */
};

/* Formats the message into err (if not NULL). Always returns -1 so that a caller
 * can write `return llorch_error_set(err, "...")`. */
int llorch_error_set(llorch_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (for adding context on the way up). */
int llorch_error_prefix(llorch_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
