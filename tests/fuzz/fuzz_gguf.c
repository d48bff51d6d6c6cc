/* fuzz_gguf.c - libFuzzer target: gguf_open_buffer over any bytes, then every value read. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

/* Keeps the reads below from being optimised away. */
static volatile uint64_t s_sink;

static void s_touch(const void *p, uint64_t n)
{
    const uint8_t *b = p;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < n; i++)
        sum += b[i];
    s_sink += sum;
}

static void s_walk_array(const gguf_array *a, int depth)
{
    if (depth > GGUF_MAX_ARRAY_DEPTH)
        abort(); /* the reader promised a bounded depth */
    for (uint64_t i = 0; i < a->n; i++) {
        switch (a->elem_type) {
        case GGUF_TYPE_STRING:
            s_touch(a->strs[i].ptr, a->strs[i].len);
            break;
        case GGUF_TYPE_ARRAY:
            if (a->items[i].type != GGUF_TYPE_ARRAY || !a->items[i].arr)
                abort();
            s_walk_array(a->items[i].arr, depth + 1);
            break;
        default:
            s_sink += (uint64_t)gguf_array_i64(a, i);
            s_sink += (uint64_t)(gguf_array_f64(a, i) != 0.0);
            break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llorch_error err;
    err.msg[0] = '\0';
    gguf_file *f = gguf_open_buffer(data, size, &err);
    if (!f) {
        if (err.msg[0] == '\0')
            abort(); /* every refusal must say why */
        return 0;
    }
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kvs[i];
        if (gguf_find(f, kv->key) != &kv->value)
            abort();
        if (kv->value.type == GGUF_TYPE_STRING)
            s_touch(kv->value.str.ptr, kv->value.str.len);
        else if (kv->value.type == GGUF_TYPE_ARRAY)
            s_walk_array(kv->value.arr, 1);
        uint64_t u64;
        float f32;
        bool b;
        char *s = NULL;
        s_sink += (uint64_t)gguf_get_u64(f, kv->key, &u64, &err);
        s_sink += (uint64_t)gguf_get_f32(f, kv->key, &f32, &err);
        s_sink += (uint64_t)gguf_get_bool(f, kv->key, &b, &err);
        if (gguf_get_string(f, kv->key, &s, &err) == 0)
            free(s);
        s_sink += (uint64_t)(uintptr_t)gguf_get_array(f, kv->key, GGUF_TYPE_COUNT, &err);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (gguf_find_tensor(f, t->name) != t || t->n_bytes == 0)
            abort();
        /* first and last byte of the data must be inside the buffer */
        const uint8_t *d = t->data;
        if (d < data || d + t->n_bytes > data + size)
            abort();
        s_sink += d[0] + d[t->n_bytes - 1];
    }
    gguf_close(&f);
    return 0;
}
