/* vocab.c - the fuzz targets' vocabularies: mkmodel's built-in one and the shared Llama one. */
#include "vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "mkmodel.h"

static tokenizer *s_from_file(const char *path, llorch_error *err)
{
    gguf_file *f = gguf_open(path, err);
    if (!f)
        return NULL;
    tokenizer *t = tokenizer_from_gguf(f, err);
    gguf_close(&f);
    return t;
}

/* The smallest model mkmodel accepts around the tiny preset's vocabulary: its tensors
 * are a few tens of KiB, so writing it costs milliseconds. */
static tokenizer *s_builtin(llorch_error *err)
{
    mkmodel_config c;
    if (mkmodel_preset("tiny", &c, err) != 0)
        return NULL;
    c.dim = 8, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1, c.ffn_dim = 8, c.ctx = 16;
    c.n_threads = 1;
    const char *tmp = getenv("TMPDIR");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/llorch-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        llorch_error_set(err, "cannot make a temporary folder %s", dir);
        return NULL;
    }
    snprintf(path, sizeof path, "%s/vocab.gguf", dir);
    tokenizer *t = NULL;
    if (mkmodel_write(&c, path, NULL, NULL, err) == 0)
        t = s_from_file(path, err);
    unlink(path);
    rmdir(dir);
    return t;
}

const tokenizer *fuzz_vocab_builtin(void)
{
    static tokenizer *t;
    static bool tried;
    if (!tried) {
        tried = true;
        llorch_error err = {0};
        if (!(t = s_builtin(&err)))
            fprintf(stderr, "fuzz: cannot build the built-in vocabulary: %s\n", err.msg);
    }
    return t;
}

const tokenizer *fuzz_vocab_shared(void)
{
    static tokenizer *t;
    static bool tried;
    if (!tried) {
        tried = true;
        const char *root = getenv("LLORCH_SHARED");
        char path[4096];
        snprintf(path, sizeof path, "%s/vocab/ggml-vocab-llama-spm.gguf",
                 root && *root ? root : "../shared");
        llorch_error err = {0};
        if (access(path, R_OK) != 0)
            fprintf(stderr, "fuzz: %s is missing: only the built-in vocabulary is fuzzed "
                            "(set LLORCH_SHARED to the shared test data's folder)\n", path);
        else if (!(t = s_from_file(path, &err)))
            fprintf(stderr, "fuzz: cannot read the vocabulary %s: %s\n", path, err.msg);
    }
    return t;
}
