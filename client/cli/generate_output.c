/* generate_output.c - the JSON object and the summary line of `llorch generate`. */
#include "generate_output.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

static json_t *s_ids(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

int generate_output_json(const generate_output *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "prompt_tokens", s_ids(r->prompt_tokens, r->n_prompt));
    json_object_set_new(o, "tokens", s_ids(r->tokens, r->n_tokens));
    json_object_set_new(o, "text", json_stringn(r->text ? r->text : "", r->text_len));
    json_object_set_new(o, "stop_reason", json_string(r->stop_reason));
    json_t *t = json_object();
    json_object_set_new(t, "prompt_tokens_per_s", json_real(r->prompt_tokens_per_s));
    json_object_set_new(t, "gen_tokens_per_s", json_real(r->gen_tokens_per_s));
    json_object_set_new(t, "load_ms", json_real(r->load_ms));
    json_object_set_new(o, "timings", t);
    if (r->top_k > 0) {
        json_t *steps = json_array();
        for (size_t s = 0; s < r->n_tokens; s++) {
            json_t *step = json_array();
            for (int k = 0; k < r->top_k; k++) {
                const generate_prob *g = &r->top[s * (size_t)r->top_k + (size_t)k];
                json_array_append_new(step, json_pack("{s:i, s:f}", "id", (json_int_t)g->id,
                                                      "p", (double)g->p));
            }
            json_array_append_new(steps, step);
        }
        json_object_set_new(o, "top", steps);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!s) {
        fprintf(stderr, "llorch generate: cannot format the JSON output\n");
        return 1;
    }
    puts(s);
    free(s);
    return 0;
}

void generate_output_summary(const generate_output *o)
{
    /* stdout carries the text, stderr the summary: flush the text's end first so
     * that a terminal shows them on separate lines. */
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "llorch: stop: %s; prompt %zu tokens, %.1f tok/s; generated %zu tokens, "
                    "%.1f tok/s; load %.0f ms\n",
            o->stop_reason, o->n_prompt, o->prompt_tokens_per_s, o->n_tokens,
            o->gen_tokens_per_s, o->load_ms);
}
