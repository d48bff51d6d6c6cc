/* testutil.h - helpers shared by the cmocka unit tests. */
#ifndef LLORCH_TESTUTIL_H
#define LLORCH_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "mkmodel.h"

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

/* A random-weight Q8_0 model at path under build/test-models/ (written once: 2 layers,
 * dim 128, 4 heads and 2 KV heads, context 256, the built-in vocabulary cut to
 * vocab_size, FFN ffn_dim wide), named name. Returns path, or fails the test. */
static inline const char *test_q8_model(const char *path, const char *name, uint32_t ffn_dim,
                                        uint32_t vocab_size)
{
    if (access(path, R_OK) == 0)
        return path;
    mkmodel_config c;
    assert_int_equal(mkmodel_preset("tiny", &c, NULL), 0);
    c.name = name;
    c.dim = 128;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.ffn_dim = ffn_dim;
    c.ctx = 256;
    c.vocab_size = vocab_size;
    c.type = TENSOR_Q8_0;
    mkdir("build", 0755);
    mkdir("build/test-models", 0755);
    llorch_error err;
    if (mkmodel_write(&c, path, NULL, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    return path;
}

#endif
