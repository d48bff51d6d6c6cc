/* sampler.c - the sampling chain (penalties, top-k, top-p, min-p, temperature, draw) with its own PRNG. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* One surviving token of the current step. */
typedef struct candidate {
    int id;
    float logit;
} candidate;

struct sampler {
    sampler_params params;  /* validated; seed resolved */
    int n_vocab;
    uint64_t rng[4];        /* xoshiro256** state */

    /* Penalty window: the last penalty_last_n accepted tokens in a ring. */
    int *history;           /* (penalty_last_n,) token ids, slot = index % penalty_last_n */
    uint64_t n_accepted;    /* tokens accepted since creation or reset */
    int *counts;            /* (n_vocab,) occurrences of each token inside the window */
    uint64_t *last_index;   /* (n_vocab,) accept index of the token's latest occurrence */

    candidate *cand;        /* (n_vocab,) scratch for one step */
    float *probs;           /* (n_vocab,) scratch: probabilities of cand */
};

/* ---- PRNG: splitmix64 to expand the seed, xoshiro256** to draw ---------------- */

static uint64_t s_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t s_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t s_next(uint64_t st[4])
{
    uint64_t result = s_rotl(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = s_rotl(st[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double s_uniform(uint64_t st[4])
{
    return (double)(s_next(st) >> 11) * (1.0 / 9007199254740992.0);
}

static void s_seed_rng(sampler *s)
{
    uint64_t x = s->params.seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = s_splitmix64(&x);
}

static uint64_t s_os_seed(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    /* The sentinel itself is not a usable resolved seed: the params must show what ran. */
    return seed == SAMPLER_SEED_RANDOM ? seed - 1 : seed;
}

/* ---- parameters ------------------------------------------------------------------ */

sampler_params sampler_params_default(void)
{
    sampler_params p = {
        .temperature = SAMPLER_DEFAULT_TEMPERATURE,
        .top_k = SAMPLER_DEFAULT_TOP_K,
        .top_p = SAMPLER_DEFAULT_TOP_P,
        .min_p = SAMPLER_DEFAULT_MIN_P,
        .penalty_last_n = SAMPLER_DEFAULT_PENALTY_LAST_N,
        .repeat_penalty = 1.0f,
        .frequency_penalty = 0.0f,
        .presence_penalty = 0.0f,
        .seed = SAMPLER_SEED_RANDOM,
    };
    return p;
}

/* Upper bound for penalty_last_n: a window larger than any context is a mistake. */
#define SAMPLER_MAX_LAST_N (1 << 20)

int sampler_params_validate(const sampler_params *p, llorch_error *err)
{
    if (!p)
        return llorch_error_set(err, "sampler: no parameters given");
    if (!isfinite(p->temperature))
        return llorch_error_set(err, "sampler: temperature %g is not a finite number "
                                "(use 0 for greedy, e.g. 0.8 for sampling)", (double)p->temperature);
    if (p->top_k < 0)
        return llorch_error_set(err, "sampler: top_k %d is negative (use 0 to turn top-k off, "
                                "or a count of tokens to keep)", p->top_k);
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return llorch_error_set(err, "sampler: top_p %g is outside [0, 1] (1 turns it off)",
                                (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return llorch_error_set(err, "sampler: min_p %g is outside [0, 1] (0 turns it off)",
                                (double)p->min_p);
    if (p->penalty_last_n < 0 || p->penalty_last_n > SAMPLER_MAX_LAST_N)
        return llorch_error_set(err, "sampler: penalty_last_n %d is outside [0, %d] "
                                "(0 turns the penalties off)", p->penalty_last_n, SAMPLER_MAX_LAST_N);
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty))
        return llorch_error_set(err, "sampler: repeat_penalty %g must be a finite number > 0 "
                                "(1 turns it off, 1.1 is typical)", (double)p->repeat_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return llorch_error_set(err, "sampler: frequency_penalty %g is outside [-2, 2] (0 turns it off)",
                                (double)p->frequency_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return llorch_error_set(err, "sampler: presence_penalty %g is outside [-2, 2] (0 turns it off)",
                                (double)p->presence_penalty);
    return 0;
}

/* ---- life cycle ------------------------------------------------------------------ */

sampler *sampler_new(const sampler_params *p, int n_vocab, llorch_error *err)
{
    if (sampler_params_validate(p, err) != 0)
        return NULL;
    if (n_vocab < 1) {
        llorch_error_set(err, "sampler: vocabulary size %d must be at least 1", n_vocab);
        return NULL;
    }
    sampler *s = calloc(1, sizeof *s);
    if (!s) {
        llorch_error_set(err, "sampler: out of memory");
        return NULL;
    }
    s->params = *p;
    s->n_vocab = n_vocab;
    if (s->params.seed == SAMPLER_SEED_RANDOM)
        s->params.seed = s_os_seed();
    size_t nv = (size_t)n_vocab;
    s->history = calloc(p->penalty_last_n > 0 ? (size_t)p->penalty_last_n : 1, sizeof *s->history);
    s->counts = calloc(nv, sizeof *s->counts);
    s->last_index = calloc(nv, sizeof *s->last_index);
    s->cand = malloc(nv * sizeof *s->cand);
    s->probs = malloc(nv * sizeof *s->probs);
    if (!s->history || !s->counts || !s->last_index || !s->cand || !s->probs) {
        sampler_free(&s);
        llorch_error_set(err, "sampler: out of memory for a vocabulary of %d tokens", n_vocab);
        return NULL;
    }
    sampler_reset(s);
    return s;
}

void sampler_free(sampler **s)
{
    if (!s || !*s)
        return;
    sampler *x = *s;
    free(x->history);
    free(x->counts);
    free(x->last_index);
    free(x->cand);
    free(x->probs);
    free(x);
    *s = NULL;
}

sampler_params sampler_get_params(const sampler *s)
{
    return s->params;
}

void sampler_reset(sampler *s)
{
    s->n_accepted = 0;
    memset(s->counts, 0, (size_t)s->n_vocab * sizeof *s->counts);
    s_seed_rng(s);
}

void sampler_accept(sampler *s, int token)
{
    int window = s->params.penalty_last_n;
    if (token < 0 || token >= s->n_vocab || window == 0)
        return;
    size_t slot = (size_t)(s->n_accepted % (uint64_t)window);
    if (s->n_accepted >= (uint64_t)window)
        s->counts[s->history[slot]]--;  /* the oldest token leaves the window */
    s->history[slot] = token;
    s->counts[token]++;
    s->last_index[token] = s->n_accepted;
    s->n_accepted++;
}

/* ---- the chain ------------------------------------------------------------------- */

void sampler_apply_penalties(const sampler *s, float *logits)
{
    const sampler_params *p = &s->params;
    int window = p->penalty_last_n;
    if (window == 0 || s->n_accepted == 0)
        return;
    if (p->repeat_penalty == 1.0f && p->frequency_penalty == 0.0f && p->presence_penalty == 0.0f)
        return;
    uint64_t first = s->n_accepted > (uint64_t)window ? s->n_accepted - (uint64_t)window : 0;
    for (uint64_t i = first; i < s->n_accepted; i++) {
        int t = s->history[i % (uint64_t)window];
        if (s->last_index[t] != i)
            continue;  /* each distinct token once: at its latest occurrence */
        int count = s->counts[t];
        /* Dividing a positive logit and multiplying a negative one both lower it. */
        if (logits[t] <= 0.0f)
            logits[t] *= p->repeat_penalty;
        else
            logits[t] /= p->repeat_penalty;
        logits[t] -= (float)count * p->frequency_penalty + (count > 0 ? p->presence_penalty : 0.0f);
    }
}

int sampler_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

void softmax_probs(const float *logits, int n, float *out)
{
    float max = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > max)
            max = logits[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        float e = expf(logits[i] - max);
        out[i] = e;
        sum += e;
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        out[i] *= inv;
}

/* Total order of candidates: higher logit first, lower id first on ties, so that
 * the kept set never depends on the sort algorithm. */
static int s_better(const candidate *a, const candidate *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int s_cmp_desc(const void *pa, const void *pb)
{
    const candidate *a = pa, *b = pb;
    return s_better(a, b) ? -1 : s_better(b, a) ? 1 : 0;
}

/* Sifts h[i] down a heap whose root is the worst candidate. */
static void s_sift_down(candidate *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, worst = i;
        if (l < n && s_better(&h[worst], &h[l]))
            worst = l;
        if (r < n && s_better(&h[worst], &h[r]))
            worst = r;
        if (worst == i)
            return;
        candidate t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

/* Moves the k best of c[0..n) to c[0..k) in descending order: a size-k heap of the
 * best so far, O(n log k), then a heap sort of the k. */
static void s_top_k(candidate *c, int n, int k)
{
    for (int i = k / 2 - 1; i >= 0; i--)
        s_sift_down(c, k, i);
    for (int i = k; i < n; i++) {
        if (s_better(&c[i], &c[0])) {
            c[0] = c[i];
            s_sift_down(c, k, 0);
        }
    }
    /* Popping the worst to the end leaves the best first. */
    for (int end = k - 1; end > 0; end--) {
        candidate t = c[0];
        c[0] = c[end];
        c[end] = t;
        s_sift_down(c, end, 0);
    }
}

/* Softmax of c[0..n).logit / temperature into probs; returns nothing, sums to 1. */
static void s_softmax_cand(const candidate *c, int n, float temperature, float *probs)
{
    float max = c[0].logit;
    for (int i = 1; i < n; i++)
        if (c[i].logit > max)
            max = c[i].logit;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        float e = expf((c[i].logit - max) / temperature);
        probs[i] = e;
        sum += e;
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        probs[i] *= inv;
}

/* Penalties through temperature on the internal scratch; returns the survivor count
 * with s->cand / s->probs filled. */
static int s_run_chain(sampler *s, float *logits)
{
    const sampler_params *p = &s->params;
    int nv = s->n_vocab;
    sampler_apply_penalties(s, logits);

    if (p->temperature <= 0.0f) {
        s->cand[0].id = sampler_argmax(logits, nv);
        s->cand[0].logit = logits[s->cand[0].id];
        s->probs[0] = 1.0f;
        return 1;
    }

    int n = nv;
    for (int i = 0; i < nv; i++) {
        s->cand[i].id = i;
        s->cand[i].logit = logits[i];
    }
    int sorted = 0;
    if (p->top_k > 0 && p->top_k < n) {
        s_top_k(s->cand, n, p->top_k);
        n = p->top_k;
        sorted = 1;
    }
    if (p->top_p < 1.0f) {
        if (!sorted) {
            qsort(s->cand, (size_t)n, sizeof *s->cand, s_cmp_desc);
            sorted = 1;
        }
        s_softmax_cand(s->cand, n, 1.0f, s->probs);
        double cum = 0.0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += s->probs[i];
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (p->min_p > 0.0f && n > 1) {
        /* p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p): no softmax needed. */
        float max = s->cand[0].logit;
        for (int i = 1; i < n; i++)
            if (s->cand[i].logit > max)
                max = s->cand[i].logit;
        float threshold = max + logf(p->min_p);
        int kept = 0;
        for (int i = 0; i < n; i++)
            if (s->cand[i].logit >= threshold)
                s->cand[kept++] = s->cand[i];
        n = kept;  /* >= 1: the maximum always passes */
    }
    s_softmax_cand(s->cand, n, p->temperature, s->probs);
    return n;
}

int sampler_distribution(sampler *s, float *logits, int *ids, float *probs)
{
    int n = s_run_chain(s, logits);
    for (int i = 0; i < n; i++) {
        ids[i] = s->cand[i].id;
        probs[i] = s->probs[i];
    }
    return n;
}

int sampler_sample(sampler *s, float *logits)
{
    int n = s_run_chain(s, logits);
    if (n == 1)
        return s->cand[0].id;
    double u = s_uniform(s->rng);
    double cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += s->probs[i];
        if (u < cum)
            return s->cand[i].id;
    }
    return s->cand[n - 1].id;  /* u fell in the rounding gap of the sum */
}
