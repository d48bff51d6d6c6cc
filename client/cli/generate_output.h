/* generate_output.h - what `llorch generate` prints, the same for every way it runs. */
#ifndef LLORCH_GENERATE_OUTPUT_H
#define LLORCH_GENERATE_OUTPUT_H

#include <stddef.h>
#include <stdint.h>

#include "generate.h"

/* One finished generation, in-process or through a pipeline. Nothing is owned. */
typedef struct generate_output {
    const int32_t *prompt_tokens; /* (n_prompt) */
    size_t n_prompt;
    const int32_t *tokens;        /* (n_tokens) generated ids */
    size_t n_tokens;
    const char *text;             /* (text_len) generated text */
    size_t text_len;
    const char *stop_reason;      /* "eos", "length", ... */
    double prompt_tokens_per_s, gen_tokens_per_s, load_ms;
    const generate_prob *top;     /* (n_tokens x top_k) when top_k > 0 */
    int top_k;
} generate_output;

/* Prints the stable JSON object (prompt_tokens, tokens, text, stop_reason, timings,
 * top) as one line on stdout. Returns 0, or 1 with a message on stderr. */
int generate_output_json(const generate_output *o);

/* Ends the streamed text with a newline and prints the one-line summary on stderr. */
void generate_output_summary(const generate_output *o);

#endif
