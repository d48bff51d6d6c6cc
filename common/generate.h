/* generate.h - in-process text generation: tokenize, run the prompt, sample token by token. */
#ifndef LLORCH_GENERATE_H
#define LLORCH_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "kv_cache.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

/* A loaded model with its tokenizer, ready to generate. */
typedef struct generator {
    model *m;
    tokenizer *tok;
    double load_ms; /* time to open, validate and bind the file */
} generator;

/* Opens the GGUF file at path (model_open + tokenizer_from_gguf) and checks that the
 * vocabulary matches the embedding. The weights are read from the mapped file until
 * model_place_weights(g->m) copies them onto huge pages (add its time to load_ms).
 * NULL with err on any problem. Free with generator_free. */
generator *generator_open(const char *path, llorch_error *err);

/* Frees the model and tokenizer; sets *g to NULL. Safe on NULL. */
void generator_free(generator **g);

typedef struct generate_params {
    const char *prompt;      /* text; BOS is prepended when the vocabulary says so */
    int n_predict;           /* tokens to generate at most (>= 0) */
    sampler_params sampling; /* temperature <= 0: greedy */
    int threads;             /* >= 1 */
    kv_type kv_type;         /* how the KV cache stores keys and values (0: F32) */
    int top_k_probs;         /* report the K most probable tokens of every step (0: none) */
    bool ignore_eos;         /* keep generating past the end-of-sequence token (benchmarks:
                                random-weight models then always make n_predict tokens) */
} generate_params;

/* One of the most probable tokens of a step: p = softmax of the raw logits (before
 * penalties and temperature), as llama.cpp reports probabilities. */
typedef struct generate_prob {
    int32_t id;
    float p;
} generate_prob;

typedef struct generate_result {
    int32_t *prompt_tokens; /* (n_prompt) */
    size_t n_prompt;
    int32_t *tokens;        /* (n_tokens) generated ids; an end-of-sequence token is not
                               included */
    size_t n_tokens;
    char *text;             /* the generated text (well-formed UTF-8), NUL-terminated */
    size_t text_len;
    const char *stop_reason; /* "eos", "length" (n_predict reached), "context" (the
                                model's context is full) or "cancelled" (by on_text) */
    generate_prob *top;      /* (n_tokens x top_k) when top_k_probs > 0, descending p */
    int top_k;
    double load_ms;
    double prompt_ms;          /* the prompt's forward pass */
    double prompt_tokens_per_s;
    double gen_ms;             /* the forward passes of the generated tokens, and sampling */
    double gen_tokens_per_s;   /* single-token forward passes per second */
} generate_result;

/* Called with each piece of generated text as soon as it is complete UTF-8. A
 * non-zero return stops generation (stop_reason "cancelled"). */
typedef int (*generate_text_fn)(void *user, const char *text, size_t len);

/* Generates from p->prompt: the prompt as one batch, then one token per step with a
 * sampler made from p->sampling, stopping at the vocabulary's EOS (unless
 * p->ignore_eos, which keeps the EOS token as an ordinary token), after n_predict
 * tokens or when the context is full. on_text (may be NULL) receives the text as it
 * comes. Fills *out (free with generate_result_free, also after an error). Returns 0,
 * or -1 with err (bad parameters, a prompt longer than the context, out of memory). */
int generate_run(generator *g, const generate_params *p, generate_text_fn on_text, void *user,
                 generate_result *out, llorch_error *err);

/* Frees what generate_run allocated and zeroes *r. */
void generate_result_free(generate_result *r);

#endif
