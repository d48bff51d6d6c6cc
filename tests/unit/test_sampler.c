/* test_sampler.c - proves the sampling chain's distributions, filters, penalties and seeding. */
#include "testutil.h"

#include <math.h>

#include "sampler.h"

/* Parameters with every filter and penalty off, sampling at temperature t. */
static sampler_params s_plain(float t, uint64_t seed)
{
    sampler_params p = sampler_params_default();
    p.temperature = t;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.seed = seed;
    return p;
}

static sampler *s_make(const sampler_params *p, int n_vocab)
{
    llorch_error err = {{0}};
    sampler *s = sampler_new(p, n_vocab, &err);
    if (!s)
        fail_msg("sampler_new: %s", err.msg);
    return s;
}

/* Draws n tokens from fixed logits (copied fresh each time: sampling may edit them). */
static void s_histogram(sampler *s, const float *logits, int n_vocab, int draws, int *hist)
{
    float work[64];
    memset(hist, 0, (size_t)n_vocab * sizeof *hist);
    for (int i = 0; i < draws; i++) {
        memcpy(work, logits, (size_t)n_vocab * sizeof *work);
        int t = sampler_sample(s, work);
        assert_true(t >= 0 && t < n_vocab);
        hist[t]++;
    }
}

/* Pearson chi-square of observed counts against expected probabilities. */
static double s_chi_square(const int *hist, const float *probs, int n, int draws)
{
    double chi = 0.0;
    for (int i = 0; i < n; i++) {
        double e = probs[i] * draws;
        if (e > 0.0)
            chi += (hist[i] - e) * (hist[i] - e) / e;
        else if (hist[i] != 0)
            return INFINITY;
    }
    return chi;
}

static const float k_logits[8] = {1.0f, 2.5f, -0.5f, 0.3f, 2.0f, -1.2f, 1.7f, 0.0f};

/* Greedy (temperature <= 0) returns the argmax, whatever the seed, and ties go to the lowest id. */
static void test_greedy_is_argmax(void **state)
{
    (void)state;
    for (int t = 0; t < 2; t++) {
        sampler_params p = sampler_params_default();  /* filters on: they must not matter */
        p.temperature = t == 0 ? 0.0f : -1.0f;
        p.seed = 7 + (uint64_t)t;
        sampler *s = s_make(&p, 8);
        for (int i = 0; i < 100; i++) {
            float w[8];
            memcpy(w, k_logits, sizeof w);
            assert_int_equal(sampler_sample(s, w), 1);
        }
        sampler_free(&s);
        assert_null(s);
    }
    sampler_params p = s_plain(0.0f, 1);
    sampler *s = s_make(&p, 4);
    float tie[4] = {0.5f, 3.0f, 3.0f, 1.0f};
    assert_int_equal(sampler_sample(s, tie), 1);
    sampler_free(&s);
}

/* The same seed replays the same sequence; a reset replays it too; another seed differs. */
static void test_seed_reproducible(void **state)
{
    (void)state;
    sampler_params p = s_plain(1.0f, 1234);
    sampler *a = s_make(&p, 8), *b = s_make(&p, 8);
    p.seed = 1235;
    sampler *c = s_make(&p, 8);
    int seq_a[200], differ = 0;
    for (int i = 0; i < 200; i++) {
        float wa[8], wb[8], wc[8];
        memcpy(wa, k_logits, sizeof wa);
        memcpy(wb, k_logits, sizeof wb);
        memcpy(wc, k_logits, sizeof wc);
        seq_a[i] = sampler_sample(a, wa);
        assert_int_equal(seq_a[i], sampler_sample(b, wb));
        differ += seq_a[i] != sampler_sample(c, wc);
    }
    assert_true(differ > 20);
    sampler_reset(a);
    for (int i = 0; i < 200; i++) {
        float wa[8];
        memcpy(wa, k_logits, sizeof wa);
        assert_int_equal(seq_a[i], sampler_sample(a, wa));
    }
    assert_int_equal(sampler_get_params(a).seed, 1234);
    sampler_free(&a);
    sampler_free(&b);
    sampler_free(&c);

    /* The OS seed is resolved and reported, so a run can be replayed. */
    p.seed = SAMPLER_SEED_RANDOM;
    sampler *r = s_make(&p, 8);
    assert_true(sampler_get_params(r).seed != SAMPLER_SEED_RANDOM);
    sampler_free(&r);
}

/* 20000 draws at several temperatures match softmax(logits / T): chi-square with
 * 7 degrees of freedom below 24.3 (the 0.1% critical value), max |freq - p| < 0.015. */
static void test_frequencies_match_softmax(void **state)
{
    (void)state;
    const float temps[3] = {0.5f, 1.0f, 2.0f};
    const int draws = 20000;
    for (int ti = 0; ti < 3; ti++) {
        sampler_params p = s_plain(temps[ti], 42 + (uint64_t)ti);
        sampler *s = s_make(&p, 8);
        float scaled[8], expect[8];
        for (int i = 0; i < 8; i++)
            scaled[i] = k_logits[i] / temps[ti];
        softmax_probs(scaled, 8, expect);
        int hist[8];
        s_histogram(s, k_logits, 8, draws, hist);
        double chi = s_chi_square(hist, expect, 8, draws);
        double max_diff = 0.0;
        for (int i = 0; i < 8; i++)
            max_diff = fmax(max_diff, fabs((double)hist[i] / draws - expect[i]));
        if (chi > 24.3 || max_diff > 0.015)
            fail_msg("T=%g: chi-square %.2f (limit 24.3), max |freq - p| %.4f (limit 0.015)",
                     (double)temps[ti], chi, max_diff);
        sampler_free(&s);
    }
}

/* softmax_probs sums to 1, orders like the logits, and survives large logits. */
static void test_softmax_probs(void **state)
{
    (void)state;
    float big[3] = {1000.0f, 999.0f, -1000.0f}, out[3];
    softmax_probs(big, 3, out);
    assert_float_equal(out[0] + out[1] + out[2], 1.0f, 1e-6f);
    assert_float_equal(out[0], 1.0f / (1.0f + expf(-1.0f)), 1e-6f);
    assert_float_equal(out[2], 0.0f, 1e-30f);
    float in_place[8];
    memcpy(in_place, k_logits, sizeof in_place);
    softmax_probs(in_place, 8, in_place);
    double sum = 0.0;
    for (int i = 0; i < 8; i++)
        sum += in_place[i];
    assert_float_equal(sum, 1.0, 1e-6);
    assert_true(in_place[1] > in_place[4] && in_place[4] > in_place[6]);
}

/* Top-k: never a token outside the k best, and the k best keep their relative odds. */
static void test_top_k(void **state)
{
    (void)state;
    sampler_params p = s_plain(1.0f, 9);
    p.top_k = 3;  /* the best three: ids 1 (2.5), 4 (2.0), 6 (1.7) */
    sampler *s = s_make(&p, 8);
    int hist[8];
    s_histogram(s, k_logits, 8, 20000, hist);
    for (int i = 0; i < 8; i++)
        if (i != 1 && i != 4 && i != 6)
            assert_int_equal(hist[i], 0);
    float sub[3] = {2.5f, 2.0f, 1.7f}, expect3[3];
    softmax_probs(sub, 3, expect3);
    float expect[8] = {0};
    expect[1] = expect3[0];
    expect[4] = expect3[1];
    expect[6] = expect3[2];
    double chi = s_chi_square(hist, expect, 8, 20000);
    if (chi > 13.8)  /* 2 degrees of freedom, 0.1% */
        fail_msg("top-k frequencies: chi-square %.2f > 13.8", chi);

    /* The distribution lists exactly the k best, best first. */
    int ids[8];
    float probs[8];
    float w[8];
    memcpy(w, k_logits, sizeof w);
    assert_int_equal(sampler_distribution(s, w, ids, probs), 3);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 4);
    assert_int_equal(ids[2], 6);
    sampler_free(&s);

    /* Over a large vocabulary the heap selection agrees with a plain count. */
    enum { NV = 1000 };
    static float big[NV];
    uint64_t x = 77;
    for (int i = 0; i < NV; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        big[i] = (float)((x >> 40) % 10000) / 100.0f;
    }
    p.top_k = 50;
    s = s_make(&p, NV);
    static int big_ids[NV];
    static float big_probs[NV];
    static float work[NV];
    memcpy(work, big, sizeof work);
    int n = sampler_distribution(s, work, big_ids, big_probs);
    assert_int_equal(n, 50);
    for (int k = 0; k < n; k++) {
        int better = 0;  /* tokens strictly better than this one must all be inside */
        for (int i = 0; i < NV; i++)
            better += big[i] > big[big_ids[k]];
        assert_true(better < 50);
        if (k > 0)
            assert_true(big[big_ids[k - 1]] >= big[big_ids[k]]);
    }
    sampler_free(&s);
}

/* Top-p keeps the smallest most-likely set whose mass >= p and renormalises it. */
static void test_top_p(void **state)
{
    (void)state;
    float full[8];
    softmax_probs(k_logits, 8, full);
    /* Order by probability: 1, 4, 6, 0, 3, 7, 2, 5. */
    const int order[8] = {1, 4, 6, 0, 3, 7, 2, 5};
    const float ps[4] = {0.3f, 0.6f, 0.8f, 0.95f};
    for (int pi = 0; pi < 4; pi++) {
        int expect_n = 0;
        double mass = 0.0;
        while (mass < ps[pi])
            mass += full[order[expect_n++]];
        sampler_params p = s_plain(1.0f, 5 + (uint64_t)pi);
        p.top_p = ps[pi];
        sampler *s = s_make(&p, 8);
        int ids[8];
        float probs[8], w[8];
        memcpy(w, k_logits, sizeof w);
        int n = sampler_distribution(s, w, ids, probs);
        assert_int_equal(n, expect_n);
        double sum = 0.0;
        for (int i = 0; i < n; i++) {
            assert_int_equal(ids[i], order[i]);
            assert_float_equal(probs[i], full[ids[i]] / mass, 1e-5);
            sum += probs[i];
        }
        assert_float_equal(sum, 1.0, 1e-5);

        int hist[8];
        s_histogram(s, k_logits, 8, 20000, hist);
        float expect[8] = {0};
        for (int i = 0; i < n; i++)
            expect[ids[i]] = probs[i];
        double chi = s_chi_square(hist, expect, 8, 20000);
        if (chi > 24.3)
            fail_msg("top-p %g: chi-square %.2f > 24.3 (or a token outside the set)", (double)ps[pi], chi);
        sampler_free(&s);
    }
}

/* Min-p drops every token with p < min_p * p_max, keeps the rest renormalised. */
static void test_min_p(void **state)
{
    (void)state;
    float full[8];
    softmax_probs(k_logits, 8, full);
    float pmax = full[1];
    const float mps[3] = {0.05f, 0.3f, 0.7f};
    for (int mi = 0; mi < 3; mi++) {
        sampler_params p = s_plain(1.0f, 11 + (uint64_t)mi);
        p.min_p = mps[mi];
        sampler *s = s_make(&p, 8);
        int ids[8];
        float probs[8], w[8];
        memcpy(w, k_logits, sizeof w);
        int n = sampler_distribution(s, w, ids, probs);
        int expect_n = 0;
        double kept_mass = 0.0;
        for (int i = 0; i < 8; i++)
            if (full[i] >= mps[mi] * pmax) {
                expect_n++;
                kept_mass += full[i];
            }
        assert_int_equal(n, expect_n);
        for (int i = 0; i < n; i++) {
            assert_true(full[ids[i]] >= mps[mi] * pmax);
            assert_float_equal(probs[i], full[ids[i]] / kept_mass, 1e-5);
        }
        int hist[8];
        s_histogram(s, k_logits, 8, 20000, hist);
        for (int i = 0; i < 8; i++)
            if (full[i] < mps[mi] * pmax)
                assert_int_equal(hist[i], 0);
        sampler_free(&s);
    }
}

/* Temperature -> 0 concentrates on the argmax; a large temperature flattens to uniform. */
static void test_temperature_limits(void **state)
{
    (void)state;
    int ids[8];
    float probs[8], w[8];
    sampler_params p = s_plain(0.01f, 3);
    sampler *s = s_make(&p, 8);
    memcpy(w, k_logits, sizeof w);
    int n = sampler_distribution(s, w, ids, probs);
    assert_int_equal(n, 8);
    for (int i = 0; i < n; i++)
        assert_float_equal(probs[i], ids[i] == 1 ? 1.0f : 0.0f, 1e-6f);
    int hist[8];
    s_histogram(s, k_logits, 8, 2000, hist);
    assert_int_equal(hist[1], 2000);
    sampler_free(&s);

    p = s_plain(1e4f, 3);
    s = s_make(&p, 8);
    memcpy(w, k_logits, sizeof w);
    n = sampler_distribution(s, w, ids, probs);
    assert_int_equal(n, 8);
    for (int i = 0; i < n; i++)
        assert_float_equal(probs[i], 0.125f, 1e-3f);

    /* Entropy grows with the temperature. */
    double last_entropy = -1.0;
    const float temps[4] = {0.25f, 0.5f, 1.0f, 4.0f};
    for (int ti = 0; ti < 4; ti++) {
        sampler_free(&s);
        p = s_plain(temps[ti], 3);
        s = s_make(&p, 8);
        memcpy(w, k_logits, sizeof w);
        n = sampler_distribution(s, w, ids, probs);
        double h = 0.0;
        for (int i = 0; i < n; i++)
            h -= probs[i] > 0 ? probs[i] * log(probs[i]) : 0.0;
        assert_true(h > last_entropy);
        last_entropy = h;
    }
    sampler_free(&s);
}

/* Penalties change exactly the logits of tokens in the window, as specified:
 * repeat (logit > 0 divided, <= 0 multiplied), then - count*freq - presence. */
static void test_penalties_exact(void **state)
{
    (void)state;
    sampler_params p = s_plain(0.0f, 1);
    p.penalty_last_n = 4;
    p.repeat_penalty = 1.25f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.2f;
    sampler *s = s_make(&p, 8);
    /* History 0 2 2 5 2 7: the window of 4 holds 5 2 7 2... in order 2 5 2 7. */
    const int hist[6] = {0, 2, 2, 5, 2, 7};
    for (int i = 0; i < 6; i++)
        sampler_accept(s, hist[i]);
    sampler_accept(s, -1);   /* ignored */
    sampler_accept(s, 8);    /* ignored: outside the vocabulary */
    float w[8];
    memcpy(w, k_logits, sizeof w);
    sampler_apply_penalties(s, w);
    float expect[8];
    memcpy(expect, k_logits, sizeof expect);
    expect[2] = k_logits[2] * 1.25f - 2 * 0.5f - 0.2f;  /* -0.5: multiplied; count 2 */
    expect[5] = k_logits[5] * 1.25f - 1 * 0.5f - 0.2f;  /* -1.2, count 1 */
    expect[7] = k_logits[7] * 1.25f - 1 * 0.5f - 0.2f;  /* 0.0 counts as <= 0 */
    for (int i = 0; i < 8; i++)
        assert_float_equal(w[i], expect[i], 1e-6f);  /* token 0 left the window: untouched */

    /* A positive logit is divided; greedy sees the penalised logits. */
    sampler_reset(s);
    sampler_accept(s, 1);
    memcpy(w, k_logits, sizeof w);
    sampler_apply_penalties(s, w);
    assert_float_equal(w[1], 2.5f / 1.25f - 0.5f - 0.2f, 1e-6f);
    memcpy(w, k_logits, sizeof w);
    assert_int_equal(sampler_sample(s, w), 4);  /* 1.3 < 2.0 now */
    sampler_free(&s);

    /* Window 0 turns the penalties off. */
    p.penalty_last_n = 0;
    s = s_make(&p, 8);
    sampler_accept(s, 1);
    memcpy(w, k_logits, sizeof w);
    sampler_apply_penalties(s, w);
    assert_memory_equal(w, k_logits, sizeof w);
    sampler_free(&s);
}

/* Out-of-range parameters are rejected with a message naming the field. */
static void test_bad_params_rejected(void **state)
{
    (void)state;
    sampler_params p;
    llorch_error err;
#define EXPECT_BAD(stmt, word)                                         \
    do {                                                                \
        p = sampler_params_default();                                   \
        stmt;                                                           \
        memset(&err, 0, sizeof err);                                    \
        assert_null(sampler_new(&p, 8, &err));                          \
        if (!strstr(err.msg, word))                                     \
            fail_msg("message for " #stmt " lacks '%s': %s", word, err.msg); \
    } while (0)
    EXPECT_BAD(p.temperature = NAN, "temperature");
    EXPECT_BAD(p.temperature = INFINITY, "temperature");
    EXPECT_BAD(p.top_k = -1, "top_k");
    EXPECT_BAD(p.top_p = 1.5f, "top_p");
    EXPECT_BAD(p.top_p = -0.1f, "top_p");
    EXPECT_BAD(p.top_p = NAN, "top_p");
    EXPECT_BAD(p.min_p = 2.0f, "min_p");
    EXPECT_BAD(p.min_p = -0.5f, "min_p");
    EXPECT_BAD(p.penalty_last_n = -1, "penalty_last_n");
    EXPECT_BAD(p.repeat_penalty = 0.0f, "repeat_penalty");
    EXPECT_BAD(p.repeat_penalty = -1.0f, "repeat_penalty");
    EXPECT_BAD(p.frequency_penalty = 3.0f, "frequency_penalty");
    EXPECT_BAD(p.presence_penalty = -2.5f, "presence_penalty");
    p = sampler_params_default();
    memset(&err, 0, sizeof err);
    assert_null(sampler_new(&p, 0, &err));
    assert_non_null(strstr(err.msg, "vocabulary"));
    assert_null(sampler_new(NULL, 8, NULL));
    /* The defaults and the edges of each range are accepted. */
    p = sampler_params_default();
    assert_int_equal(sampler_params_validate(&p, NULL), 0);
    p.top_p = 0.0f;
    p.min_p = 1.0f;
    p.top_k = 0;
    p.frequency_penalty = -2.0f;
    p.presence_penalty = 2.0f;
    assert_int_equal(sampler_params_validate(&p, NULL), 0);
    sampler_free(NULL);
}

/* The full default chain on a realistic vocabulary: samples stay among the
 * top-k and min-p survivors, and the same seed replays. */
static void test_default_chain(void **state)
{
    (void)state;
    enum { NV = 512 };
    static float logits[NV], work[NV];
    uint64_t x = 99;
    for (int i = 0; i < NV; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        logits[i] = (float)((int64_t)(x >> 33) % 2000) / 200.0f;
    }
    sampler_params p = sampler_params_default();
    p.seed = 2024;
    sampler *a = s_make(&p, NV), *b = s_make(&p, NV);
    static int ids[NV];
    static float probs[NV];
    memcpy(work, logits, sizeof work);
    int n = sampler_distribution(a, work, ids, probs);
    assert_true(n >= 1 && n <= p.top_k);
    for (int i = 0; i < 300; i++) {
        memcpy(work, logits, sizeof work);
        int ta = sampler_sample(a, work);
        memcpy(work, logits, sizeof work);
        int tb = sampler_sample(b, work);
        assert_int_equal(ta, tb);
        int inside = 0;
        for (int k = 0; k < n; k++)
            inside |= ids[k] == ta;
        assert_true(inside);
    }
    sampler_free(&a);
    sampler_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_frequencies_match_softmax),
        cmocka_unit_test(test_softmax_probs),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_temperature_limits),
        cmocka_unit_test(test_penalties_exact),
        cmocka_unit_test(test_bad_params_rejected),
        cmocka_unit_test(test_default_chain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
