/* check_trace.c - traced tensors of `llorch check` and how two of them are compared. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static const char *const s_slot_names[CHECK_SLOT_COUNT] = {
    "attn_norm", "q", "k", "v", "q_rope", "k_rope", "kq", "kq_softmax",
    "attn_out", "attn_proj", "ffn_out", "l_out",
};

const char *check_slot_name(enum check_slot slot)
{
    return slot >= 0 && slot < CHECK_SLOT_COUNT ? s_slot_names[slot] : "?";
}

int check_slot_find(const char *name)
{
    for (int i = 0; i < CHECK_SLOT_COUNT; i++)
        if (!strcmp(name, s_slot_names[i]))
            return i;
    return -1;
}

void check_expected_shape(const model_config *cfg, enum check_slot slot, int64_t n_prompt, int64_t ne[4])
{
    ne[3] = 1;
    switch (slot) {
    case CHECK_Q:
    case CHECK_Q_ROPE:
        ne[0] = cfg->head_dim, ne[1] = cfg->n_heads, ne[2] = n_prompt;
        break;
    case CHECK_K:
    case CHECK_V:
    case CHECK_K_ROPE:
        ne[0] = cfg->head_dim, ne[1] = cfg->n_kv_heads, ne[2] = n_prompt;
        break;
    case CHECK_KQ:
    case CHECK_KQ_SOFTMAX:
        ne[0] = n_prompt, ne[1] = n_prompt, ne[2] = cfg->n_heads;
        break;
    case CHECK_ATTN_OUT:
        ne[0] = cfg->q_dim, ne[1] = n_prompt, ne[2] = 1;
        break;
    default: /* attn_norm, attn_proj, ffn_out, l_out */
        ne[0] = cfg->dim, ne[1] = n_prompt, ne[2] = 1;
        break;
    }
}

int64_t check_tensor_count(const check_tensor *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

int check_tensor_alloc(check_tensor *t, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3,
                       llorch_error *err)
{
    free(t->data);
    t->data = NULL;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->ne[3] = ne3;
    int64_t n = check_tensor_count(t);
    if (n <= 0)
        return llorch_error_set(err, "tensor of %lld values", (long long)n);
    t->data = calloc((size_t)n, sizeof *t->data);
    if (!t->data)
        return llorch_error_set(err, "out of memory for %lld values", (long long)n);
    return 0;
}

void check_trace_free(check_trace *tr)
{
    for (int i = 0; i < CHECK_SLOT_COUNT; i++)
        free(tr->layer0[i].data);
    free(tr->logits);
    memset(tr, 0, sizeof *tr);
}

check_diff check_compare(const double *a, const double *b, int64_t n, const bool *mask)
{
    check_diff d = {.finite = true, .worst = -1};
    for (int64_t i = 0; i < n; i++) {
        if (mask && !mask[i])
            continue;
        if (!isfinite(a[i]) || !isfinite(b[i])) {
            d.finite = false;
            continue;
        }
        d.ref_scale = fmax(d.ref_scale, fabs(b[i]));
    }
    /* A value within 1e-3 of the tensor's scale of zero is compared as if it had
     * that size: the relative error of a near-zero value says nothing. */
    double floor_abs = 1e-3 * d.ref_scale;
    for (int64_t i = 0; i < n; i++) {
        if (mask && !mask[i])
            continue;
        d.n++;
        if (!isfinite(a[i]) || !isfinite(b[i]))
            continue;
        double e = fabs(a[i] - b[i]);
        if (e > d.max_abs || d.worst < 0) {
            d.max_abs = fmax(d.max_abs, e);
            d.worst = i;
        }
        double denom = fmax(fabs(b[i]), floor_abs);
        if (denom > 0)
            d.max_rel = fmax(d.max_rel, e / denom);
        else if (e > 0)
            d.max_rel = INFINITY;
    }
    return d;
}

void check_diff_merge(check_diff *acc, const check_diff *d)
{
    if (acc->n == 0) { /* the first part */
        *acc = *d;
        return;
    }
    if (d->max_abs > acc->max_abs)
        acc->worst = d->worst;
    acc->max_abs = fmax(acc->max_abs, d->max_abs);
    acc->max_rel = fmax(acc->max_rel, d->max_rel);
    acc->ref_scale = fmax(acc->ref_scale, d->ref_scale);
    acc->n += d->n;
    acc->finite = acc->finite && d->finite;
}
