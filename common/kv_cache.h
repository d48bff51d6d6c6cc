/* kv_cache.h - keys and values (F32 or F16) of a stage's layers, per sequence, in a fixed budget. */
#ifndef LLORCH_KV_CACHE_H
#define LLORCH_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Positions per block: a sequence holds whole blocks, taken from the shared pool as it
 * grows and returned when it is freed, so short sessions do not reserve a full context. */
#define KV_BLOCK_POSITIONS 32

/* How keys and values are stored. F16 halves the cache (llama.cpp's default type);
 * F32 keeps them exact. */
typedef enum kv_type {
    KV_TYPE_F32 = 0,
    KV_TYPE_F16 = 1,
} kv_type;

/* "f32", "f16". */
const char *kv_type_name(kv_type t);

/* Parses "f32" or "f16" (any case) into *out. -1 with err naming the accepted values. */
int kv_type_parse(const char *s, kv_type *out, llorch_error *err);

/* Bytes of one stored element of type t (4 or 2). */
size_t kv_type_size(kv_type t);

/* One sequence (a session) in the cache. */
typedef struct kv_seq {
    uint64_t seq_id;
    int in_use;
    int32_t n_pos;    /* positions [0, n_pos) hold keys and values */
    int32_t n_blocks; /* blocks[0 .. n_blocks) are held */
    int32_t *blocks;  /* (max_blocks_per_seq) pool block index of positions [32 b, 32 b + 32) */
} kv_seq;

/* The cache. A block holds, for every layer, keys then values of 32 positions:
 * elem pool[block][layer][2][KV_BLOCK_POSITIONS][kv_dim], elem a float (F32) or an
 * IEEE half (F16). Read the fields; change them only through the functions below. */
typedef struct kv_cache {
    int n_layers;             /* layers of the stage */
    int kv_dim;               /* elements per position per layer, for K and for V */
    kv_type type;
    int n_ctx;                /* positions per sequence at most */
    int max_seqs;
    int max_blocks_per_seq;   /* ceil(n_ctx / 32) */
    int n_blocks;             /* blocks in the pool */
    size_t block_bytes;
    unsigned char *pool;      /* n_blocks * block_bytes */
    int32_t *free_blocks;     /* stack of n_free block indices */
    int n_free;
    kv_seq *seqs;             /* (max_seqs) */
    int32_t *block_table;     /* backing of every seqs[i].blocks */
} kv_cache;

/* Bytes one position of one sequence costs over n_layers layers (K and V of type t). */
size_t kv_cache_bytes_per_position(int n_layers, int kv_dim, kv_type type);

/* Creates a cache of as many blocks as budget_bytes holds (but no more than max_seqs
 * full contexts need). The pool is allocated once, here; pages are touched only when
 * used. NULL with err when the budget does not hold one block (the message gives the
 * block size), a size is out of range, or memory runs out. Free with kv_cache_free. */
kv_cache *kv_cache_new(int n_layers, int kv_dim, kv_type type, int n_ctx, int max_seqs,
                       size_t budget_bytes, llorch_error *err);

/* Frees everything and sets *c to NULL. Safe on NULL. */
void kv_cache_free(kv_cache **c);

/* The slot of seq_id, or -1 when the cache does not hold it. */
int kv_cache_find(const kv_cache *c, uint64_t seq_id);

/* Positions held by seq_id (0 when absent). */
int32_t kv_cache_seq_len(const kv_cache *c, uint64_t seq_id);

/* All or nothing: makes each sequence seq_ids[i] hold exactly positions
 * [0, pos_end[i]) (creating it when new; a shorter pos_end drops the positions after
 * it), and writes its slot to slots[i]. Returns 0; on failure err is set and nothing
 * changes: LLORCH_ERR_NO_MEMORY when there are more new sequences than free slots or
 * the pool lacks the blocks (the message names the sequence and the budget), -1 when a
 * pos_end exceeds n_ctx. seq_ids must be distinct. Does not allocate. */
int kv_cache_reserve(kv_cache *c, const uint64_t *seq_ids, const int32_t *pos_end, int n,
                     int *slots, llorch_error *err);

/* Returns seq_id's blocks to the pool. Returns 1 when it was held, 0 when not. */
int kv_cache_free_seq(kv_cache *c, uint64_t seq_id);

/* Sequences held, for stats (free blocks: c->n_free). */
int kv_cache_n_seqs(const kv_cache *c);

/* Key (kv_dim elements of c->type) of position pos of the sequence in slot, for the
 * stage's layer `layer` (0-based within the stage). pos < that sequence's n_pos. */
static inline void *kv_cache_k_raw(const kv_cache *c, int slot, int layer, int32_t pos)
{
    const int32_t block = c->seqs[slot].blocks[pos / KV_BLOCK_POSITIONS];
    return c->pool + (size_t)block * c->block_bytes +
           ((size_t)layer * 2 * KV_BLOCK_POSITIONS + (size_t)(pos % KV_BLOCK_POSITIONS)) *
               (size_t)c->kv_dim * kv_type_size(c->type);
}

/* Value of the same position (kv_dim elements of c->type). */
static inline void *kv_cache_v_raw(const kv_cache *c, int slot, int layer, int32_t pos)
{
    return (unsigned char *)kv_cache_k_raw(c, slot, layer, pos) +
           (size_t)KV_BLOCK_POSITIONS * (size_t)c->kv_dim * kv_type_size(c->type);
}

/* The key as floats: only for a KV_TYPE_F32 cache. */
static inline float *kv_cache_k(const kv_cache *c, int slot, int layer, int32_t pos)
{
    return (float *)kv_cache_k_raw(c, slot, layer, pos);
}

/* The value as floats: only for a KV_TYPE_F32 cache. */
static inline float *kv_cache_v(const kv_cache *c, int slot, int layer, int32_t pos)
{
    return (float *)kv_cache_v_raw(c, slot, layer, pos);
}

/* The key as halves: only for a KV_TYPE_F16 cache. */
static inline uint16_t *kv_cache_k_f16(const kv_cache *c, int slot, int layer, int32_t pos)
{
    return (uint16_t *)kv_cache_k_raw(c, slot, layer, pos);
}

/* The value as halves: only for a KV_TYPE_F16 cache. */
static inline uint16_t *kv_cache_v_f16(const kv_cache *c, int slot, int layer, int32_t pos)
{
    return (uint16_t *)kv_cache_v_raw(c, slot, layer, pos);
}

#endif
