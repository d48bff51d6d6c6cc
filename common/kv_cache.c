/* kv_cache.c - a pool of fixed-size blocks shared by sequences, handed out as they grow. */
#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *kv_type_name(kv_type t)
{
    return t == KV_TYPE_F16 ? "f16" : t == KV_TYPE_F32 ? "f32" : "?";
}

int kv_type_parse(const char *s, kv_type *out, llorch_error *err)
{
    if (s && !strcasecmp(s, "f32"))
        *out = KV_TYPE_F32;
    else if (s && !strcasecmp(s, "f16"))
        *out = KV_TYPE_F16;
    else
        return llorch_error_set(err, "kv type '%s': give f32 or f16", s ? s : "");
    return 0;
}

size_t kv_type_size(kv_type t)
{
    return t == KV_TYPE_F16 ? sizeof(uint16_t) : sizeof(float);
}

size_t kv_cache_bytes_per_position(int n_layers, int kv_dim, kv_type type)
{
    return (size_t)n_layers * 2 * (size_t)kv_dim * kv_type_size(type);
}

kv_cache *kv_cache_new(int n_layers, int kv_dim, kv_type type, int n_ctx, int max_seqs,
                       size_t budget_bytes, llorch_error *err)
{
    if (type != KV_TYPE_F32 && type != KV_TYPE_F16) {
        llorch_error_set(err, "kv cache: unknown type %d (f32 or f16)", (int)type);
        return NULL;
    }
    if (n_layers < 1 || kv_dim < 1 || n_ctx < 1 || max_seqs < 1 || max_seqs > (1 << 20)) {
        llorch_error_set(err, "kv cache: layers %d, kv dim %d, context %d and max sequences %d "
                              "must all be positive (sequences at most 1M)",
                         n_layers, kv_dim, n_ctx, max_seqs);
        return NULL;
    }
    const size_t block_bytes = kv_cache_bytes_per_position(n_layers, kv_dim, type) * KV_BLOCK_POSITIONS;
    const int max_blocks_per_seq = (n_ctx + KV_BLOCK_POSITIONS - 1) / KV_BLOCK_POSITIONS;
    size_t n_blocks = budget_bytes / block_bytes;
    if ((uint64_t)n_blocks > (uint64_t)max_blocks_per_seq * (uint64_t)max_seqs)
        n_blocks = (size_t)max_blocks_per_seq * (size_t)max_seqs;
    if (n_blocks > INT32_MAX)
        n_blocks = INT32_MAX;
    if (n_blocks == 0) {
        llorch_error_set(err, "kv cache budget of %zu bytes does not hold one block of %d "
                              "positions (%zu bytes); give a larger budget",
                         budget_bytes, KV_BLOCK_POSITIONS, block_bytes);
        return NULL;
    }
    kv_cache *c = calloc(1, sizeof *c);
    if (!c) {
        llorch_error_set(err, "out of memory for the kv cache");
        return NULL;
    }
    c->n_layers = n_layers;
    c->kv_dim = kv_dim;
    c->type = type;
    c->n_ctx = n_ctx;
    c->max_seqs = max_seqs;
    c->max_blocks_per_seq = max_blocks_per_seq;
    c->n_blocks = (int)n_blocks;
    c->block_bytes = block_bytes;
    c->pool = malloc(n_blocks * block_bytes);
    c->free_blocks = malloc(n_blocks * sizeof *c->free_blocks);
    c->seqs = calloc((size_t)max_seqs, sizeof *c->seqs);
    c->block_table = malloc((size_t)max_seqs * (size_t)max_blocks_per_seq * sizeof(int32_t));
    if (!c->pool || !c->free_blocks || !c->seqs || !c->block_table) {
        llorch_error_set(err, "out of memory for a kv cache of %zu bytes", n_blocks * block_bytes);
        kv_cache_free(&c);
        return NULL;
    }
    /* Lowest block on top of the stack, so a lone sequence uses the pool in order. */
    for (size_t i = 0; i < n_blocks; i++)
        c->free_blocks[i] = (int32_t)(n_blocks - 1 - i);
    c->n_free = (int)n_blocks;
    for (int s = 0; s < max_seqs; s++)
        c->seqs[s].blocks = c->block_table + (size_t)s * (size_t)max_blocks_per_seq;
    return c;
}

void kv_cache_free(kv_cache **pc)
{
    if (!pc || !*pc)
        return;
    kv_cache *c = *pc;
    free(c->pool);
    free(c->free_blocks);
    free(c->seqs);
    free(c->block_table);
    free(c);
    *pc = NULL;
}

int kv_cache_find(const kv_cache *c, uint64_t seq_id)
{
    for (int s = 0; s < c->max_seqs; s++)
        if (c->seqs[s].in_use && c->seqs[s].seq_id == seq_id)
            return s;
    return -1;
}

int32_t kv_cache_seq_len(const kv_cache *c, uint64_t seq_id)
{
    int s = kv_cache_find(c, seq_id);
    return s < 0 ? 0 : c->seqs[s].n_pos;
}

static int32_t s_blocks_for(int32_t n_pos)
{
    return (n_pos + KV_BLOCK_POSITIONS - 1) / KV_BLOCK_POSITIONS;
}

int kv_cache_reserve(kv_cache *c, const uint64_t *seq_ids, const int32_t *pos_end, int n,
                     int *slots, llorch_error *err)
{
    /* First pass: check everything and count, changing nothing. */
    int64_t blocks_needed = 0, blocks_released = 0;
    int new_seqs = 0, free_slots = 0;
    for (int s = 0; s < c->max_seqs; s++)
        free_slots += !c->seqs[s].in_use;
    for (int i = 0; i < n; i++) {
        if (pos_end[i] < 0 || pos_end[i] > c->n_ctx)
            return llorch_error_set(err, "sequence %llu: position %d is beyond the context of %d",
                                    (unsigned long long)seq_ids[i], pos_end[i] - 1, c->n_ctx);
        int slot = kv_cache_find(c, seq_ids[i]);
        int32_t have = slot < 0 ? 0 : c->seqs[slot].n_blocks;
        int32_t want = s_blocks_for(pos_end[i]);
        if (want > have)
            blocks_needed += want - have;
        else
            blocks_released += have - want;
        new_seqs += slot < 0;
    }
    if (new_seqs > free_slots) {
        llorch_error_set(err, "kv cache holds at most %d sequences and %d are in use; "
                              "free finished sequences first",
                         c->max_seqs, c->max_seqs - free_slots);
        return LLORCH_ERR_NO_MEMORY;
    }
    if (blocks_needed > c->n_free + blocks_released) {
        const size_t need = (size_t)blocks_needed * c->block_bytes;
        llorch_error_set(err, "kv cache budget exhausted: sequence %llu%s needs %zu more "
                              "bytes (%lld blocks of %d positions), %d of %d blocks free "
                              "(budget %zu bytes); free sequences or raise the budget",
                         (unsigned long long)seq_ids[0], n > 1 ? " and others" : "", need,
                         (long long)blocks_needed, KV_BLOCK_POSITIONS, c->n_free, c->n_blocks,
                         (size_t)c->n_blocks * c->block_bytes);
        return LLORCH_ERR_NO_MEMORY;
    }
    /* Second pass: shrink first (freeing blocks), then grow. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            int slot = kv_cache_find(c, seq_ids[i]);
            int32_t want = s_blocks_for(pos_end[i]);
            if (pass == 0) {
                if (slot < 0 || c->seqs[slot].n_blocks <= want)
                    continue;
                kv_seq *q = &c->seqs[slot];
                while (q->n_blocks > want)
                    c->free_blocks[c->n_free++] = q->blocks[--q->n_blocks];
                q->n_pos = pos_end[i];
                slots[i] = slot;
                continue;
            }
            if (slot < 0) {
                for (slot = 0; c->seqs[slot].in_use; slot++) {
                }
                c->seqs[slot] = (kv_seq){.seq_id = seq_ids[i], .in_use = 1,
                                         .blocks = c->seqs[slot].blocks};
            }
            kv_seq *q = &c->seqs[slot];
            while (q->n_blocks < want)
                q->blocks[q->n_blocks++] = c->free_blocks[--c->n_free];
            q->n_pos = pos_end[i];
            slots[i] = slot;
        }
    }
    return 0;
}

int kv_cache_free_seq(kv_cache *c, uint64_t seq_id)
{
    int slot = kv_cache_find(c, seq_id);
    if (slot < 0)
        return 0;
    kv_seq *q = &c->seqs[slot];
    while (q->n_blocks > 0)
        c->free_blocks[c->n_free++] = q->blocks[--q->n_blocks];
    q->in_use = 0;
    q->n_pos = 0;
    return 1;
}

int kv_cache_n_seqs(const kv_cache *c)
{
    int n = 0;
    for (int s = 0; s < c->max_seqs; s++)
        n += c->seqs[s].in_use;
    return n;
}
