/* testutil.h - helpers shared by the cmocka unit tests. */
#ifndef LLORCH_TESTUTIL_H
#define LLORCH_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

/* The read-only shared test data (real vocab, stories260K). It lies beside the
 * checkout as ../shared; LLORCH_SHARED overrides. Returns a static path to rel
 * inside it, or fails the test with a message naming what is missing. */
static inline const char *test_shared_path(const char *rel)
{
    static char path[4096];
    const char *root = getenv("LLORCH_SHARED");
    snprintf(path, sizeof path, "%s/%s", root ? root : "../shared", rel);
    if (access(path, R_OK) != 0) {
        fail_msg("test data missing: %s (the shared test data lies beside the checkout as "
                 "../shared; set LLORCH_SHARED to its folder)", path);
    }
    return path;
}

/* A fresh temporary file path (the file is created empty); caller unlinks. */
static inline const char *test_tmp_path(const char *suffix)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/llorch-test-XXXXXX%s", suffix ? suffix : "");
    int fd = mkstemps(path, suffix ? (int)strlen(suffix) : 0);
    if (fd < 0)
        fail_msg("cannot create a temporary file");
    close(fd);
    return path;
}

#endif
