/* vocab.h - the real vocabularies the fuzz targets tokenize with, built once per process. */
#ifndef LLORCH_FUZZ_VOCAB_H
#define LLORCH_FUZZ_VOCAB_H

#include "tokenizer.h"

/* The built-in vocabulary `llorch mkmodel` writes (2048 tokens: <unk>, <s>, </s>, 256
 * byte tokens, characters and English pieces), from a tiny model written to a private
 * temporary folder and removed at once: it needs nothing outside the checkout. Returns
 * the same tokenizer on every call (never freed: it lives as long as the process), or
 * NULL after printing why to stderr. */
const tokenizer *fuzz_vocab_builtin(void);

/* Llama's 32000-token SentencePiece vocabulary from the shared test data
 * ($LLORCH_SHARED or ../shared, vocab/ggml-vocab-llama-spm.gguf), or NULL (said once
 * on stderr) when that file is missing or unreadable: callers fall back to the
 * built-in one. Same lifetime as fuzz_vocab_builtin. */
const tokenizer *fuzz_vocab_shared(void);

#endif
