/* check_points.h - the 12 checkpoints of `llorch check`: comparisons, tolerances, proof bundle. */
#ifndef LLORCH_CHECK_POINTS_H
#define LLORCH_CHECK_POINTS_H

#include <stdbool.h>
#include <stdint.h>

#include "check.h"
#include "error.h"
#include "gguf.h"
#include "model.h"
#include "tokenizer.h"

#define CHECK_N_GEN 10 /* tokens of the end-to-end greedy checkpoint */

/* Everything the checkpoints are computed from. Nothing is owned. */
typedef struct check_inputs {
    const char *model_path;
    const char *prompt;
    const int32_t *tokens;        /* (n_prompt) the prompt's tokens, BOS first */
    int n_prompt;
    const model_config *cfg;
    const gguf_file *file;        /* for the weight type */
    const tokenizer *tok;         /* to show the continuation as text */
    const int32_t *gen;           /* (n_gen) llorch's greedy continuation */
    int n_gen;
    const check_trace *mine;      /* llorch: layer 0 and the prompt's logits */
    const check_trace *ref64;     /* float64: the prompt and gen[0..n_gen-1) */
    const check_trace *llama;     /* llama.cpp on the prompt; NULL when absent */
    const check_trace *llama_cont; /* llama.cpp's logits over the prompt and gen[0..n_gen-1) */
    const char *llama_dump_path;  /* the llama-dump binary used; NULL when absent */
    const char *reference_note;   /* why llama.cpp was not used, or "" */
    int threads;
    const char *bundle_dir;       /* exists */
} check_inputs;

/* Computes the 12 checkpoints against every reference present, writes
 * bundle_dir/NN_name.json for each and bundle_dir/summary.json, and prints a table
 * (or, with json, summary.json) on stdout. Returns 1 when every checkpoint passes
 * against every reference, 0 when one fails, -1 with err when a file cannot be
 * written or memory runs out. */
int check_points_write(const check_inputs *in, bool json, llorch_error *err);

#endif
