/* sampler.h - next-token selection from logits: penalties, top-k, top-p, min-p, temperature, seeded draw. */
#ifndef LLORCH_SAMPLER_H
#define LLORCH_SAMPLER_H

#include <stdint.h>

#include "error.h"

/* Seed value that asks sampler_new for a seed from the operating system
 * (different on every run), as llama.cpp's default seed does. */
#define SAMPLER_SEED_RANDOM UINT64_MAX

/* The defaults (llama.cpp's common ones), for sampler_params_default and for every other
 * place that spells sampling parameters (the wire's submit). */
#define SAMPLER_DEFAULT_TEMPERATURE 0.8f
#define SAMPLER_DEFAULT_TOP_K 40
#define SAMPLER_DEFAULT_TOP_P 0.95f
#define SAMPLER_DEFAULT_MIN_P 0.05f
#define SAMPLER_DEFAULT_PENALTY_LAST_N 64

/* What a sampler does to the logits of one step, in this order (llama.cpp's common
 * sampler chain): penalties -> top-k -> top-p -> min-p -> temperature -> draw.
 * The filters (top-k, top-p, min-p) see the penalised logits at temperature 1;
 * the temperature only shapes the final draw among the survivors, as in llama.cpp.
 * Every filter keeps at least one token. */
typedef struct sampler_params {
    float temperature;       /* <= 0: greedy (argmax of the penalised logits); default 0.8 */
    int top_k;               /* keep the k highest logits; 0 = off; default 40 */
    float top_p;             /* keep the smallest prefix (by probability) whose mass >= top_p;
                                [0, 1], 1 = off; default 0.95 */
    float min_p;             /* drop tokens with p < min_p * p_max; [0, 1], 0 = off; default 0.05 */
    int penalty_last_n;      /* how many of the latest accepted tokens the penalties look at;
                                0 = penalties off; default 64 */
    float repeat_penalty;    /* llama.cpp style, for tokens seen in the window: logit > 0 is
                                divided by it, logit <= 0 multiplied; > 0, 1 = off; default 1 */
    float frequency_penalty; /* OpenAI style: logit -= count * frequency_penalty; [-2, 2]; default 0 */
    float presence_penalty;  /* OpenAI style: logit -= presence_penalty if count > 0; [-2, 2]; default 0 */
    uint64_t seed;           /* same seed + same logits + same history = same tokens;
                                SAMPLER_SEED_RANDOM (default) draws one from the OS */
} sampler_params;

/* Opaque per-session sampler state: parameters, PRNG, penalty history, scratch. */
typedef struct sampler sampler;

/* The defaults listed in sampler_params (llama.cpp's common defaults). Cannot fail. */
sampler_params sampler_params_default(void);

/* Checks every field of p against the ranges documented in sampler_params.
 * Returns 0, or -1 with a message naming the field, its value and the valid range. */
int sampler_params_validate(const sampler_params *p, llorch_error *err);

/* Creates a sampler over a vocabulary of n_vocab tokens. All scratch memory is
 * allocated here, so sampler_sample never allocates. Returns NULL with err set on
 * invalid parameters or out of memory. The caller frees it with sampler_free. */
sampler *sampler_new(const sampler_params *p, int n_vocab, llorch_error *err);

/* Frees the sampler and sets *s to NULL. NULL or *s == NULL is allowed. */
void sampler_free(sampler **s);

/* The parameters the sampler was made with (the resolved seed in place of
 * SAMPLER_SEED_RANDOM). Cannot fail. */
sampler_params sampler_get_params(const sampler *s);

/* Forgets the penalty history and restarts the PRNG from the seed, so that the same
 * steps replayed after a reset give the same tokens. Cannot fail. */
void sampler_reset(sampler *s);

/* Records token as the latest one of the sequence (prompt or generated: the caller
 * chooses what the penalties should see). Tokens outside [0, n_vocab) are ignored.
 * Cannot fail; no allocation. */
void sampler_accept(sampler *s, int token);

/* Applies the repetition, frequency and presence penalties to logits[n_vocab] in place,
 * from the last penalty_last_n accepted tokens. The first step of sampler_sample;
 * public so that callers and tests can see exactly what it does. Cannot fail. */
void sampler_apply_penalties(const sampler *s, float *logits);

/* Runs the chain up to (not including) the draw: penalties (in place on logits),
 * top-k, top-p, min-p, temperature. Writes the surviving tokens to ids[] and their
 * renormalised probabilities (softmax of logit / temperature over the survivors) to
 * probs[], in descending probability order when top-k or top-p ran, in vocabulary
 * order otherwise. ids and probs must hold n_vocab entries. Greedy (temperature <= 0)
 * gives the single argmax with probability 1. Returns the number of survivors (>= 1).
 * Does not advance the PRNG. */
int sampler_distribution(sampler *s, float *logits, int *ids, float *probs);

/* Picks the next token from logits[n_vocab] (modified in place by the penalties).
 * Greedy when temperature <= 0 (the lowest id wins a tie), otherwise a draw from
 * sampler_distribution's result with the sampler's PRNG. Does not call
 * sampler_accept: the caller does, once the token is kept. No allocation. */
int sampler_sample(sampler *s, float *logits);

/* out[i] = exp(logits[i] - max) / sum: the probabilities llama.cpp reports (softmax of
 * the raw logits, temperature 1). out may equal logits. n >= 1. Cannot fail. */
void softmax_probs(const float *logits, int n, float *out);

/* Index of the largest of x[0..n), the lowest index on ties. n >= 1. */
int sampler_argmax(const float *x, int n);

#endif
