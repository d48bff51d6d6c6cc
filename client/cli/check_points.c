/* check_points.c - the 12 checkpoints of `llorch check`: comparisons, tolerances, proof bundle. */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_points.h"
#include "kernels.h"
#include "sampler.h"
#include "utf8.h"

#define SOURCE_LLAMA "llama.cpp v0.4.0 cb_eval"
#define SOURCE_REF64 "float64 reference"

/* The coarsest matrix type of the model decides the tolerances: F32 < F16 < BF16 < Q8_0. */
enum weight_class { WEIGHT_F32, WEIGHT_F16, WEIGHT_BF16, WEIGHT_Q8_0, WEIGHT_CLASS_COUNT };
static const char *const s_class_names[WEIGHT_CLASS_COUNT] = {"F32", "F16", "BF16", "Q8_0"};

/* What a checkpoint compares: activations (1-7), logits (8, 9), probabilities (11). */
enum value_kind { KIND_ACT, KIND_LOGIT, KIND_PROB, KIND_COUNT };

/* A comparison passes when max_abs_error <= atol + rtol * max|reference| (the scale
 * term lets one rule serve tensors of different sizes: raw attention scores are ~10x
 * the normed activations, logits of a sharp model have std ~8). */
typedef struct tolerance {
    double atol, rtol;
} tolerance;

/* Tolerances per weight type, set from what was measured on this CPU (AVX2) against
 * llama.cpp v0.4.0 and the float64 reference, over stories260K and generated models of
 * several shapes (dims 128-288, GQA/MQA/plain heads) and prompts of 5-35 tokens.
 * Largest errors seen are in brackets, as a fraction of the reference's scale (max|b|).
 *
 * F32: llorch and llama.cpp compute in float32 with float32 activations and an F32 KV
 * cache; they differ in the order of additions only (~1e-7 per dot product). Seen:
 * activations [5e-7 relative], attention scores 1.1e-5 on a scale of 25, logits
 * [7e-6 abs on stories260K], probabilities [3e-8]. reference.md records 2e-5 on
 * logits for an exact F32 pass; 1e-4 + 1e-5 * scale keeps a 5-10x margin while any
 * real bug (a wrong RoPE pair, a missing scale or mask) moves values by 1e-1 or more.
 * Probabilities: 1e-5 (the engine's own requirement is 1e-4 for top-5).
 *
 * F16 (and BF16): activations are rounded to F16 (BF16) before each matmul, by ggml,
 * by llorch and by the reference (which emulates it); float32 noise moving a value
 * across a rounding boundary changes it by one ulp (F16 ~1e-3 relative, BF16 ~8e-3).
 * Seen for F16: activations [4e-6 abs], logits [7e-3 on a scale of 27, 2.5e-4
 * relative], probabilities [3e-4]; bounds: 2e-3 relative on activations and logits,
 * 1e-3 on probabilities (the engine's requirement). BF16 is scaled from F16 by the
 * mantissa width (8x) and has not been measured (no BF16 model is generated).
 *
 * Q8_0: activations are quantized to Q8_0 (blocks of 32, scale max|x|/127) before
 * each matmul, by llama.cpp, by llorch and by the reference; most runs agree with
 * llama.cpp bit for bit. But a 1e-7 difference can flip the rounding of one quant, a
 * whole step (max|x|/127 of its block, ~0.8%) on one input of the next matmul, and
 * the flips compound through the layers. Seen: layer-0 activations [5e-4 relative,
 * one flip], logits [1.1% of a scale of 39 (0.43), against llama.cpp and the
 * reference alike], probabilities [5.5e-2 where a flip hit a near tie at the top:
 * softmax is 1/2-Lipschitz in the max norm, so 0.43 on a logit allows up to ~0.2].
 * Bounds: activations 1e-4 + 5e-3 * scale, logits 1e-3 + 3e-2 * scale (reference.md
 * sees 0.55-0.8 between llama.cpp and an exact, unquantized pass on logits of std 8),
 * probabilities 0.1. The layer-0 checkpoints stay tight; a real bug in any of them
 * is off by the tensor's whole scale.
 *
 * Tokens (argmax, greedy): equal, except at a near tie: where the reference's logits
 * for its token and llorch's are within the logit bound above (reported). */
static const tolerance s_tol[WEIGHT_CLASS_COUNT][KIND_COUNT] = {
    [WEIGHT_F32] = {{1e-4, 1e-5}, {1e-4, 1e-5}, {1e-5, 0}},
    [WEIGHT_F16] = {{1e-4, 2e-3}, {1e-3, 2e-3}, {1e-3, 0}},
    [WEIGHT_BF16] = {{1e-3, 1.6e-2}, {1e-2, 1.6e-2}, {1e-2, 0}},
    [WEIGHT_Q8_0] = {{1e-4, 5e-3}, {1e-3, 3e-2}, {1e-1, 0}},
};

static enum weight_class s_weight_class(const gguf_file *f)
{
    enum weight_class c = WEIGHT_F32;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (t->n_dims < 2)
            continue; /* norm vectors */
        enum weight_class tc = t->type == TENSOR_Q8_0  ? WEIGHT_Q8_0
                               : t->type == TENSOR_BF16 ? WEIGHT_BF16
                               : t->type == TENSOR_F16  ? WEIGHT_F16
                                                        : WEIGHT_F32;
        if (tc > c)
            c = tc;
    }
    return c;
}

/* One reference side of a checkpoint, in the order the bundle lists them. */
typedef struct reference {
    const char *source;
    const check_trace *prompt; /* layer 0 and the prompt's logits */
    const check_trace *cont;   /* logits over the prompt and the continuation */
    bool is_llama;
} reference;

/* The outcome of one comparison, kept for the table and the summary. */
typedef struct outcome {
    double max_abs, max_rel, tolerance;
    bool pass;
} outcome;

static json_t *s_shape(const int64_t *ne, int n)
{
    json_t *a = json_array();
    while (n > 1 && ne[n - 1] == 1)
        n--;
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ne[i]));
    return a;
}

/* A double as JSON: a real, or null when it is not finite (JSON has no inf/nan). */
static json_t *s_real(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* Fills the headline fields (shared by a comparison and its parts). */
static void s_put_diff(json_t *o, const check_diff *d, double bound, bool pass)
{
    json_object_set_new(o, "max_abs_error", s_real(d->finite ? d->max_abs : INFINITY));
    json_object_set_new(o, "max_rel_error", s_real(d->finite ? d->max_rel : INFINITY));
    json_object_set_new(o, "tolerance", json_real(bound));
    json_object_set_new(o, "reference_scale", json_real(d->ref_scale));
    json_object_set_new(o, "values_compared", json_integer(d->n));
    json_object_set_new(o, "worst_index", json_integer(d->worst));
    json_object_set_new(o, "pass", json_boolean(pass));
}

/* Compares a list of layer-0 slots with one reference. Every part has its own
 * tolerance (atol + rtol * its scale); the comparison's headline is the part closest
 * to (or furthest past) its tolerance. kq is compared where the key is not after the
 * query (j <= t): llorch and the reference write -inf there, llama.cpp the raw dot
 * product, since its mask is applied inside the softmax. */
static json_t *s_compare_slots(const check_inputs *in, const reference *ref, const enum check_slot *slots,
                               int n_slots, tolerance tol, outcome *oc)
{
    json_t *cmp = json_object(), *parts = json_array();
    json_object_set_new(cmp, "reference_source", json_string(ref->source));
    double worst_ratio = -1;
    check_diff headline = {0};
    double headline_tol = 0;
    oc->pass = true;
    oc->max_rel = 0;
    for (int p = 0; p < n_slots; p++) {
        enum check_slot s = slots[p];
        const check_tensor *a = &in->mine->layer0[s], *b = &ref->prompt->layer0[s];
        int64_t n = check_tensor_count(a);
        bool *mask = NULL;
        if (s == CHECK_KQ) {
            mask = malloc((size_t)n * sizeof *mask);
            for (int64_t i = 0; mask && i < n; i++) {
                int64_t j = i % a->ne[0], t = (i / a->ne[0]) % a->ne[1];
                mask[i] = j <= t;
            }
        }
        check_diff d = check_compare(a->data, b->data, n, mask);
        free(mask);
        double limit = tol.atol + tol.rtol * d.ref_scale;
        bool pass = d.finite && d.max_abs <= limit;
        double ratio = d.finite ? d.max_abs / limit : INFINITY;
        json_t *part = json_object();
        json_object_set_new(part, "tensor", json_string(check_slot_name(s)));
        json_object_set_new(part, "reference_tensor",
                            json_string(ref->is_llama ? dump_source_name(s) : check_slot_name(s)));
        json_object_set_new(part, "shape", s_shape(a->ne, 4));
        s_put_diff(part, &d, limit, pass);
        json_array_append_new(parts, part);
        oc->pass = oc->pass && pass;
        oc->max_rel = fmax(oc->max_rel, d.finite ? d.max_rel : INFINITY);
        if (ratio > worst_ratio) {
            worst_ratio = ratio;
            headline = d;
            headline_tol = limit;
        }
    }
    oc->max_abs = headline.finite ? headline.max_abs : INFINITY;
    oc->tolerance = headline_tol;
    json_object_set_new(cmp, "shape", json_copy(json_object_get(json_array_get(parts, 0), "shape")));
    s_put_diff(cmp, &headline, headline_tol, oc->pass);
    json_object_set_new(cmp, "max_rel_error", s_real(oc->max_rel));
    json_object_set_new(cmp, "parts", parts);
    return cmp;
}

/* Compares two dense value lists as one part (logits, probabilities). */
static json_t *s_compare_values(const reference *ref, const char *ref_tensor, const double *a, const double *b,
                                int64_t n, const int64_t *ne, int n_dims, tolerance tol, outcome *oc)
{
    check_diff d = check_compare(a, b, n, NULL);
    double limit = tol.atol + tol.rtol * d.ref_scale;
    oc->pass = d.finite && d.max_abs <= limit;
    oc->max_abs = d.finite ? d.max_abs : INFINITY;
    oc->max_rel = d.finite ? d.max_rel : INFINITY;
    oc->tolerance = limit;
    json_t *cmp = json_object();
    json_object_set_new(cmp, "reference_source", json_string(ref->source));
    json_object_set_new(cmp, "reference_tensor", json_string(ref_tensor));
    json_object_set_new(cmp, "shape", s_shape(ne, n_dims));
    s_put_diff(cmp, &d, limit, oc->pass);
    return cmp;
}

static int s_argmax_d(const double *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static json_t *s_int_array(const int32_t *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    return a;
}

/* Compares token lists: the error is the number of positions that differ, the
 * tolerance 0. A difference where the reference's own logits for the two tokens are
 * within the logit bound of each other (a near tie, which rounding may break either
 * way) is listed under near_ties and not counted. ref_rows holds the reference's
 * logits row of every compared position (V values each). */
static json_t *s_compare_tokens(const reference *ref, const char *ref_tensor, const int32_t *mine,
                                const int32_t *theirs, int n, const double *ref_rows, int V, tolerance tol,
                                outcome *oc)
{
    int mismatches = 0, first = -1;
    json_t *ties = json_array();
    for (int i = 0; i < n; i++) {
        if (mine[i] == theirs[i])
            continue;
        const double *row = ref_rows + (size_t)i * (size_t)V;
        double scale = 0;
        for (int v = 0; v < V; v++)
            scale = fmax(scale, fabs(row[v]));
        double gap = row[theirs[i]] - row[mine[i]], limit = tol.atol + tol.rtol * scale;
        if (gap <= limit) {
            json_array_append_new(ties, json_pack("{s:i,s:i,s:i,s:f,s:f}", "position", i, "llorch_token", mine[i],
                                                  "reference_token", theirs[i], "reference_logit_gap", gap,
                                                  "logit_bound", limit));
            continue;
        }
        mismatches++;
        if (first < 0)
            first = i;
    }
    oc->max_abs = mismatches;
    oc->max_rel = (double)mismatches / n;
    oc->tolerance = 0;
    oc->pass = mismatches == 0;
    json_t *cmp = json_object();
    json_object_set_new(cmp, "reference_source", json_string(ref->source));
    json_object_set_new(cmp, "reference_tensor", json_string(ref_tensor));
    json_object_set_new(cmp, "shape", json_pack("[i]", n));
    json_object_set_new(cmp, "max_abs_error", json_integer(mismatches));
    json_object_set_new(cmp, "max_rel_error", json_real(oc->max_rel));
    json_object_set_new(cmp, "tolerance", json_integer(0));
    json_object_set_new(cmp, "error_unit", json_string("tokens that differ (near ties excepted)"));
    json_object_set_new(cmp, "first_mismatch", first < 0 ? json_null() : json_integer(first));
    json_object_set_new(cmp, "near_ties", ties);
    json_object_set_new(cmp, "llorch_tokens", s_int_array(mine, n));
    json_object_set_new(cmp, "reference_tokens", s_int_array(theirs, n));
    json_object_set_new(cmp, "pass", json_boolean(oc->pass));
    return cmp;
}

/* The k most probable (id, p) of probs[0..n), as a JSON array. */
static json_t *s_top(const double *probs, int n, int k)
{
    json_t *a = json_array();
    bool *used = calloc((size_t)n, sizeof *used);
    for (int r = 0; used && r < k && r < n; r++) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (!used[i] && (best < 0 || probs[i] > probs[best]))
                best = i;
        used[best] = true;
        json_array_append_new(a, json_pack("{s:i,s:f}", "id", best, "p", probs[best]));
    }
    free(used);
    return a;
}

/* Softmax of a logits row in double. */
static void s_softmax_d(const double *x, int n, double *out)
{
    double max = x[s_argmax_d(x, n)], sum = 0;
    for (int i = 0; i < n; i++)
        sum += out[i] = exp(x[i] - max);
    for (int i = 0; i < n; i++)
        out[i] /= sum;
}

/* Builds comparison `r` of checkpoint `cp` (1..12). */
static json_t *s_checkpoint_cmp(const check_inputs *in, int cp, const reference *ref, enum weight_class wc,
                                outcome *oc)
{
    const int T = in->n_prompt, V = (int)in->cfg->vocab_size;
    const double *mine_last = in->mine->logits + (size_t)(T - 1) * (size_t)V;
    const double *ref_last = ref->prompt->logits + (size_t)(T - 1) * (size_t)V;
    static const enum check_slot s1[] = {CHECK_ATTN_NORM}, s2[] = {CHECK_Q, CHECK_K, CHECK_V},
                                 s3[] = {CHECK_Q_ROPE, CHECK_K_ROPE}, s4[] = {CHECK_KQ, CHECK_KQ_SOFTMAX},
                                 s5[] = {CHECK_ATTN_OUT, CHECK_ATTN_PROJ}, s6[] = {CHECK_FFN_OUT},
                                 s7[] = {CHECK_L_OUT};
    switch (cp) {
    case 1: return s_compare_slots(in, ref, s1, 1, s_tol[wc][KIND_ACT], oc);
    case 2: return s_compare_slots(in, ref, s2, 3, s_tol[wc][KIND_ACT], oc);
    case 3: return s_compare_slots(in, ref, s3, 2, s_tol[wc][KIND_ACT], oc);
    case 4: return s_compare_slots(in, ref, s4, 2, s_tol[wc][KIND_ACT], oc);
    case 5: return s_compare_slots(in, ref, s5, 2, s_tol[wc][KIND_ACT], oc);
    case 6: return s_compare_slots(in, ref, s6, 1, s_tol[wc][KIND_ACT], oc);
    case 7: return s_compare_slots(in, ref, s7, 1, s_tol[wc][KIND_ACT], oc);
    case 8: {
        int64_t ne[2] = {V, T};
        return s_compare_values(ref, ref->is_llama ? "logits (llama_get_logits_ith, every position)" : "logits",
                                in->mine->logits, ref->prompt->logits, (int64_t)T * V, ne, 2,
                                s_tol[wc][KIND_LOGIT], oc);
    }
    case 9: {
        int id = s_argmax_d(mine_last, V);
        int64_t ne[1] = {1};
        json_t *c = s_compare_values(ref, "logit of llorch's argmax token at the last position", &mine_last[id],
                                     &ref_last[id], 1, ne, 1, s_tol[wc][KIND_LOGIT], oc);
        json_object_set_new(c, "token", json_integer(id));
        json_object_set_new(c, "llorch_logit", json_real(mine_last[id]));
        json_object_set_new(c, "reference_logit", json_real(ref_last[id]));
        return c;
    }
    case 10: {
        int32_t *a = malloc(2 * (size_t)T * sizeof *a), *b = a + T;
        if (!a)
            return NULL;
        for (int t = 0; t < T; t++) {
            a[t] = s_argmax_d(in->mine->logits + (size_t)t * (size_t)V, V);
            b[t] = s_argmax_d(ref->prompt->logits + (size_t)t * (size_t)V, V);
        }
        json_t *c = s_compare_tokens(ref, "argmax of the logits at every prompt position", a, b, T,
                                     ref->prompt->logits, V, s_tol[wc][KIND_LOGIT], oc);
        free(a);
        return c;
    }
    case 11: {
        float *lf = malloc((size_t)V * sizeof *lf);
        double *pm = malloc((size_t)V * sizeof *pm), *pr = malloc((size_t)V * sizeof *pr);
        json_t *c = NULL;
        if (lf && pm && pr) {
            for (int i = 0; i < V; i++)
                lf[i] = (float)mine_last[i];
            softmax_probs(lf, V, lf); /* what llorch reports */
            for (int i = 0; i < V; i++)
                pm[i] = lf[i];
            s_softmax_d(ref_last, V, pr);
            int64_t ne[1] = {V};
            c = s_compare_values(ref, "softmax of the last position's logits (whole vocabulary)", pm, pr, V, ne, 1,
                                 s_tol[wc][KIND_PROB], oc);
            json_object_set_new(c, "llorch_top5", s_top(pm, V, 5));
            json_object_set_new(c, "reference_top5", s_top(pr, V, 5));
        }
        free(lf);
        free(pm);
        free(pr);
        return c;
    }
    case 12: {
        int32_t b[CHECK_N_GEN];
        if (in->n_gen > CHECK_N_GEN)
            return NULL;
        for (int g = 0; g < in->n_gen; g++)
            b[g] = s_argmax_d(ref->cont->logits + (size_t)(T - 1 + g) * (size_t)V, V);
        return s_compare_tokens(ref, ref->is_llama ? "argmax of llama.cpp's logits over the prompt and llorch's "
                                                     "continuation (teacher-forced)"
                                                   : "argmax of the float64 logits over the prompt and llorch's "
                                                     "continuation (teacher-forced)",
                                in->gen, b, in->n_gen, ref->cont->logits + (size_t)(T - 1) * (size_t)V, V,
                                s_tol[wc][KIND_LOGIT], oc);
    }
    }
    return NULL;
}

static const struct {
    const char *name;
    const char *what;
} s_points[12] = {
    {"rmsnorm", "RMSNorm output: attn_norm of layer 0 (after the norm weight), every prompt token"},
    {"qkv", "Q, K and V projections of layer 0, before RoPE"},
    {"rope", "Q and K of layer 0 after RoPE (adjacent pairs)"},
    {"attention_scores", "attention scores of layer 0: raw q.k (causal entries) and the scaled, masked softmax"},
    {"attention_output", "attention output of layer 0: heads concatenated before wo, and after wo"},
    {"ffn_output", "SwiGLU FFN output of layer 0 (after ffn_down)"},
    {"block_output", "output of the first block (l_out, layer 0, residual included)"},
    {"logits", "logits of every prompt position"},
    {"selected_logit", "the logit of llorch's argmax token at the last position"},
    {"argmax", "argmax of the logits at every prompt position"},
    {"softmax", "softmax probabilities over the whole vocabulary at the last position"},
    {"greedy_10", "end to end: llorch's 10-token greedy continuation reproduced by the reference"},
};

static int s_write_json(json_t *o, const char *dir, const char *file, llorch_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (json_dump_file(o, path, JSON_INDENT(2) | JSON_ENSURE_ASCII) != 0)
        return llorch_error_set(err, "cannot write %s", path);
    return 0;
}

static void s_print_cell(const outcome *o, bool present, bool tokens)
{
    if (!present)
        printf("  %-25s", "-");
    else if (tokens)
        printf("  %2.0f tokens differ      %-4s", o->max_abs, o->pass ? "" : "FAIL");
    else
        printf("  %8.2e <= %8.2e %-4s", o->max_abs, o->tolerance, o->pass ? "" : "FAIL");
}

int check_points_write(const check_inputs *in, bool json, llorch_error *err)
{
    enum weight_class wc = s_weight_class(in->file);
    reference refs[2];
    int n_refs = 0;
    if (in->llama)
        refs[n_refs++] = (reference){SOURCE_LLAMA, in->llama, in->llama_cont, true};
    refs[n_refs++] = (reference){SOURCE_REF64, in->ref64, in->ref64, false};

    const char *run_id = strrchr(in->bundle_dir, '/');
    run_id = run_id && run_id[1] ? run_id + 1 : in->bundle_dir;
    json_t *tokens = s_int_array(in->tokens, in->n_prompt);
    json_t *summary = json_object(), *list = json_array();
    outcome table[12][2];
    int n_pass = 0, rc = -1;

    for (int cp = 1; cp <= 12; cp++) {
        json_t *o = json_object(), *cmps = json_array();
        bool pass = true;
        for (int r = 0; r < n_refs; r++) {
            json_t *c = s_checkpoint_cmp(in, cp, &refs[r], wc, &table[cp - 1][r]);
            if (!c) {
                llorch_error_set(err, "out of memory computing checkpoint %d", cp);
                json_decref(o);
                json_decref(cmps);
                goto done;
            }
            pass = pass && table[cp - 1][r].pass;
            json_array_append_new(cmps, c);
        }
        json_t *first = json_array_get(cmps, 0);
        json_object_set_new(o, "checkpoint", json_integer(cp));
        json_object_set_new(o, "name", json_string(s_points[cp - 1].name));
        json_object_set_new(o, "description", json_string(s_points[cp - 1].what));
        json_object_set_new(o, "model", json_string(in->model_path));
        json_object_set_new(o, "prompt", json_string(in->prompt));
        json_object_set_new(o, "tokens", json_copy(tokens));
        json_object_set_new(o, "weight_type", json_string(s_class_names[wc]));
        json_object_set_new(o, "reference_source", json_copy(json_object_get(first, "reference_source")));
        json_object_set_new(o, "shape", json_copy(json_object_get(first, "shape")));
        json_object_set_new(o, "max_abs_error", json_copy(json_object_get(first, "max_abs_error")));
        json_object_set_new(o, "max_rel_error", json_copy(json_object_get(first, "max_rel_error")));
        json_object_set_new(o, "tolerance", json_copy(json_object_get(first, "tolerance")));
        json_object_set_new(o, "tolerance_rule",
                            json_string(cp == 10 || cp == 12
                                            ? "the number of tokens that differ must be 0"
                                            : "max_abs_error <= atol + rtol * max|reference|, per compared tensor "
                                              "(the headline is the tensor closest to its bound)"));
        json_object_set_new(o, "pass", json_boolean(pass));
        json_object_set_new(o, "comparisons", cmps);
        char file[64];
        snprintf(file, sizeof file, "%02d_%s.json", cp, s_points[cp - 1].name);
        json_t *line = json_pack("{s:i,s:s,s:s,s:O,s:O,s:O,s:b}", "checkpoint", cp, "name", s_points[cp - 1].name,
                                 "file", file, "max_abs_error", json_object_get(first, "max_abs_error"),
                                 "tolerance", json_object_get(first, "tolerance"), "reference_source",
                                 json_object_get(first, "reference_source"), "pass", pass);
        int wrc = s_write_json(o, in->bundle_dir, file, err);
        json_decref(o);
        if (wrc != 0 || !line || json_array_append_new(list, line) != 0) {
            if (wrc == 0)
                llorch_error_set(err, "out of memory building summary.json");
            goto done;
        }
        n_pass += pass;
    }

    char *raw = NULL;
    size_t raw_len = 0;
    char *text = NULL;
    size_t text_len = 0;
    if (tokenizer_decode(in->tok, in->gen, (size_t)in->n_gen, TOKENIZER_DECODE_CONTINUE, &raw, &raw_len, NULL) == 0 &&
        (text = malloc(3 * raw_len + 1)))
        text_len = utf8_sanitize(text, raw, raw_len);
    free(raw);
    json_t *sources = json_array();
    for (int r = 0; r < n_refs; r++)
        json_array_append_new(sources, json_string(refs[r].source));
    json_object_set_new(summary, "run_id", json_string(run_id));
    json_object_set_new(summary, "bundle", json_string(in->bundle_dir));
    json_object_set_new(summary, "model", json_string(in->model_path));
    json_object_set_new(summary, "prompt", json_string(in->prompt));
    json_object_set_new(summary, "tokens", json_copy(tokens));
    json_object_set_new(summary, "weight_type", json_string(s_class_names[wc]));
    json_object_set_new(summary, "reference_sources", sources);
    json_object_set_new(summary, "llama_dump", in->llama_dump_path ? json_string(in->llama_dump_path) : json_null());
    json_object_set_new(summary, "reference_note", json_string(in->reference_note));
    json_object_set_new(summary, "threads", json_integer(in->threads));
    json_object_set_new(summary, "kernel_isa", json_string(kernel_isa_name(kernel_isa_active())));
    json_object_set_new(summary, "generated_tokens", s_int_array(in->gen, in->n_gen));
    json_object_set_new(summary, "generated_text", text ? json_stringn(text, text_len) : json_null());
    json_object_set_new(summary, "passed", json_integer(n_pass));
    json_object_set_new(summary, "failed", json_integer(12 - n_pass));
    json_object_set_new(summary, "all_pass", json_boolean(n_pass == 12));
    json_object_set_new(summary, "checkpoints", list);
    list = NULL;
    free(text);
    if (s_write_json(summary, in->bundle_dir, "summary.json", err) != 0)
        goto done;

    if (json) {
        char *s = json_dumps(summary, JSON_INDENT(2) | JSON_ENSURE_ASCII);
        if (s)
            puts(s);
        free(s);
    } else {
        printf("llorch check: %s, \"%s\" (%d tokens), %s weights\n", in->model_path, in->prompt, in->n_prompt,
               s_class_names[wc]);
        if (in->llama_dump_path)
            printf("references: %s (%s), %s\n", SOURCE_LLAMA, in->llama_dump_path, SOURCE_REF64);
        else
            printf("references: %s (%s)\n", SOURCE_REF64, in->reference_note);
        printf("\n %2s  %-17s  %-25s  %-25s  %s\n", "#", "checkpoint", in->llama ? "llama.cpp: |err| <= tol" : "-",
               "float64: |err| <= tol", "result");
        for (int cp = 1; cp <= 12; cp++) {
            bool tokens_cp = cp == 10 || cp == 12;
            printf(" %2d  %-17s", cp, s_points[cp - 1].name);
            bool pass = true;
            for (int r = 0; r < 2; r++) {
                bool present = in->llama ? true : r == 1;
                int idx = in->llama ? r : 0;
                s_print_cell(&table[cp - 1][idx], present, tokens_cp);
                if (present)
                    pass = pass && table[cp - 1][idx].pass;
            }
            printf("  %s\n", pass ? "PASS" : "FAIL");
        }
        printf("\n%d of 12 checkpoints pass; bundle: %s/\n", n_pass, in->bundle_dir);
    }
    rc = n_pass == 12 ? 1 : 0;
done:
    json_decref(list);
    json_decref(tokens);
    json_decref(summary);
    return rc;
}
