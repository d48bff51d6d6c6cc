/* gguf.c - the GGUF parser: checks every count, length and offset before using it. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian GGUF fields straight from memory: little-endian hosts only"
#endif

/* Cursor over the file while parsing. Every read goes through s_read*, which refuse
 * to step past `size`, so no other code indexes the bytes unchecked. */
typedef struct parser {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    uint32_t version;
    const char *label;      /* the path, for messages */
    uint64_t array_entries; /* strings and nested arrays allocated so far */
    llorch_error *err;
} parser;

/* Writes "label: message" and returns -1. */
static int s_fail(const parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int s_fail(const parser *p, const char *fmt, ...)
{
    char msg[sizeof p->err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return llorch_error_set(p->err, "%s: %s", p->label, msg);
}

/* A printable, bounded rendering of file bytes for messages (names may hold anything). */
static const char *s_show(char *buf, size_t cap, const char *ptr, uint64_t len)
{
    size_t o = 0;
    for (uint64_t i = 0; i < len && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)ptr[i];
        if (c >= 0x20 && c < 0x7f)
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        if (i + 1 < len && o + 8 >= cap) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
    }
    buf[o] = '\0';
    return buf;
}

static uint64_t s_left(const parser *p)
{
    return p->size - p->pos;
}

static int s_read(parser *p, void *out, uint64_t n, const char *what)
{
    if (n > s_left(p))
        return s_fail(p, "truncated: %s needs %" PRIu64 " bytes at offset %" PRIu64
                         " but the file ends at %" PRIu64,
                      what, n, p->pos, p->size);
    memcpy(out, p->base + p->pos, (size_t)n);
    p->pos += n;
    return 0;
}

static int s_read_u32(parser *p, uint32_t *out, const char *what)
{
    return s_read(p, out, 4, what);
}

/* Counts, lengths and dims: 32-bit in version 1, 64-bit after. */
static int s_count_size(const parser *p)
{
    return p->version == 1 ? 4 : 8;
}

static int s_read_count(parser *p, uint64_t *out, const char *what)
{
    if (p->version == 1) {
        uint32_t v = 0;
        if (s_read_u32(p, &v, what))
            return -1;
        *out = v;
        return 0;
    }
    return s_read(p, out, 8, what);
}

static int s_read_str(parser *p, gguf_str *out, const char *what)
{
    uint64_t len = 0;
    if (s_read_count(p, &len, what))
        return -1;
    if (len > s_left(p))
        return s_fail(p, "%s has length %" PRIu64 " at offset %" PRIu64
                         ", more than the %" PRIu64 " bytes left in the file",
                      what, len, p->pos, s_left(p));
    out->ptr = (const char *)p->base + p->pos;
    out->len = len;
    p->pos += len;
    return 0;
}

/* A key or tensor name: 1..max_len bytes, no NUL inside, copied NUL-terminated. */
static int s_read_name(parser *p, char **out, uint64_t max_len, const char *what)
{
    gguf_str s;
    char show[80];
    if (s_read_str(p, &s, what))
        return -1;
    if (s.len == 0)
        return s_fail(p, "%s at offset %" PRIu64 " is empty", what, p->pos);
    if (s.len > max_len)
        return s_fail(p, "%s '%s' is %" PRIu64 " bytes long (at most %" PRIu64 " allowed)", what,
                      s_show(show, sizeof show, s.ptr, s.len), s.len, max_len);
    if (memchr(s.ptr, '\0', (size_t)s.len))
        return s_fail(p, "%s '%s' contains a NUL byte", what,
                      s_show(show, sizeof show, s.ptr, s.len));
    *out = malloc((size_t)s.len + 1);
    if (!*out)
        return s_fail(p, "out of memory copying a %s", what);
    memcpy(*out, s.ptr, (size_t)s.len);
    (*out)[s.len] = '\0';
    return 0;
}

static void s_array_free(gguf_array *a)
{
    if (!a)
        return;
    if (a->items)
        for (uint64_t i = 0; i < a->n; i++)
            s_array_free(a->items[i].arr);
    free(a->items);
    free(a->strs);
    free(a);
}

static int s_read_array(parser *p, gguf_array **out, int depth, const char *key);

/* Reads one value of kind `type` into v. depth counts enclosing arrays. */
static int s_read_value(parser *p, uint32_t type, gguf_value *v, int depth, const char *key)
{
    uint8_t b1 = 0;
    uint16_t b2 = 0;
    uint32_t b4 = 0;
    uint64_t b8 = 0;
    char what[128];
    snprintf(what, sizeof what, "the value of key '%.80s'", key);
    v->type = (enum gguf_type)type;
    switch (type) {
    case GGUF_TYPE_UINT8: if (s_read(p, &b1, 1, what)) return -1; v->u64 = b1; return 0;
    case GGUF_TYPE_INT8: if (s_read(p, &b1, 1, what)) return -1; v->i64 = (int8_t)b1; return 0;
    case GGUF_TYPE_UINT16: if (s_read(p, &b2, 2, what)) return -1; v->u64 = b2; return 0;
    case GGUF_TYPE_INT16: if (s_read(p, &b2, 2, what)) return -1; v->i64 = (int16_t)b2; return 0;
    case GGUF_TYPE_UINT32: if (s_read(p, &b4, 4, what)) return -1; v->u64 = b4; return 0;
    case GGUF_TYPE_INT32: if (s_read(p, &b4, 4, what)) return -1; v->i64 = (int32_t)b4; return 0;
    case GGUF_TYPE_UINT64: return s_read(p, &v->u64, 8, what);
    case GGUF_TYPE_INT64: if (s_read(p, &b8, 8, what)) return -1; v->i64 = (int64_t)b8; return 0;
    case GGUF_TYPE_FLOAT32: {
        float f = 0;
        if (s_read(p, &f, 4, what))
            return -1;
        v->f64 = f;
        return 0;
    }
    case GGUF_TYPE_FLOAT64: return s_read(p, &v->f64, 8, what);
    case GGUF_TYPE_BOOL:
        if (s_read(p, &b1, 1, what))
            return -1;
        if (b1 > 1)
            return s_fail(p, "key '%.80s': bool value is %u (must be 0 or 1)", key, b1);
        v->u64 = 0; /* widened as u64 0/1; `b` reads the low byte */
        v->b = b1 != 0;
        return 0;
    case GGUF_TYPE_STRING: return s_read_str(p, &v->str, what);
    case GGUF_TYPE_ARRAY: v->arr = NULL; return s_read_array(p, &v->arr, depth + 1, key);
    default:
        return s_fail(p, "key '%.80s' has an unknown value type %u (valid types are 0..12)", key,
                      type);
    }
}

static int s_read_array(parser *p, gguf_array **out, int depth, const char *key)
{
    uint32_t elem_type = 0;
    uint64_t n = 0;
    char what[128];
    snprintf(what, sizeof what, "the array of key '%.80s'", key);
    if (depth > GGUF_MAX_ARRAY_DEPTH)
        return s_fail(p, "key '%.80s': arrays nested more than %d deep", key,
                      GGUF_MAX_ARRAY_DEPTH);
    if (s_read_u32(p, &elem_type, what) || s_read_count(p, &n, what))
        return -1;
    gguf_array *a = calloc(1, sizeof *a);
    if (!a)
        return s_fail(p, "out of memory reading key '%.80s'", key);
    *out = a;
    a->elem_type = (enum gguf_type)elem_type;
    uint64_t elem_size = gguf_type_size(elem_type);
    if (elem_size) {
        if (n > s_left(p) / elem_size)
            return s_fail(p, "key '%.80s': array of %" PRIu64 " %s values does not fit in the %"
                             PRIu64 " bytes left in the file",
                          key, n, gguf_type_name((int)elem_type), s_left(p));
        a->n = n;
        a->raw = p->base + p->pos;
        if (elem_type == GGUF_TYPE_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (p->base[p->pos + i] > 1)
                    return s_fail(p, "key '%.80s': bool element %" PRIu64
                                     " is %u (must be 0 or 1)",
                                  key, i, p->base[p->pos + i]);
        p->pos += n * elem_size;
        return 0;
    }
    if (elem_type != GGUF_TYPE_STRING && elem_type != GGUF_TYPE_ARRAY)
        return s_fail(p, "key '%.80s': array has an unknown element type %u (valid types are "
                         "0..12)",
                      key, elem_type);
    /* The smallest encoding of one element bounds n by the bytes left. */
    uint64_t min_elem = (uint64_t)s_count_size(p) + (elem_type == GGUF_TYPE_ARRAY ? 4 : 0);
    if (n > s_left(p) / min_elem)
        return s_fail(p, "key '%.80s': array of %" PRIu64 " %ss does not fit in the %" PRIu64
                         " bytes left in the file",
                      key, n, gguf_type_name((int)elem_type), s_left(p));
    if (n > GGUF_MAX_ARRAY_ENTRIES - p->array_entries)
        return s_fail(p, "key '%.80s': the arrays of this file hold more than %u strings and "
                         "arrays in all, more than llorch accepts",
                      key, GGUF_MAX_ARRAY_ENTRIES);
    p->array_entries += n;
    if (n == 0)
        return 0;
    if (elem_type == GGUF_TYPE_STRING) {
        a->strs = calloc((size_t)n, sizeof *a->strs);
        if (!a->strs)
            return s_fail(p, "out of memory reading key '%.80s'", key);
        a->n = n;
        for (uint64_t i = 0; i < n; i++)
            if (s_read_str(p, &a->strs[i], what))
                return -1;
        return 0;
    }
    a->items = calloc((size_t)n, sizeof *a->items);
    if (!a->items)
        return s_fail(p, "out of memory reading key '%.80s'", key);
    a->n = n;
    for (uint64_t i = 0; i < n; i++) {
        a->items[i].type = GGUF_TYPE_ARRAY;
        if (s_read_array(p, &a->items[i].arr, depth + 1, key))
            return -1;
    }
    return 0;
}

/* ---- name index (open addressing, FNV-1a) ------------------------------------ */

static uint64_t s_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int s_index_new(uint32_t **index, uint64_t *cap, uint64_t n)
{
    uint64_t c = 16;
    while (c < 2 * n)
        c *= 2;
    *index = calloc((size_t)c, sizeof **index);
    *cap = c;
    return *index ? 0 : -1;
}

/* Slot of name: holds its index + 1, or 0 where it would be inserted. */
static uint64_t s_index_slot(const uint32_t *index, uint64_t cap, const char *name,
                             const char *(*name_of)(const void *items, uint32_t i),
                             const void *items)
{
    uint64_t slot = s_hash(name) & (cap - 1);
    while (index[slot] && strcmp(name_of(items, index[slot] - 1), name) != 0)
        slot = (slot + 1) & (cap - 1);
    return slot;
}

static const char *s_kv_name(const void *items, uint32_t i)
{
    return ((const gguf_kv *)items)[i].key;
}

static const char *s_tensor_name(const void *items, uint32_t i)
{
    return ((const gguf_tensor *)items)[i].name;
}

/* ---- header, metadata, tensor infos ------------------------------------------ */

static int s_parse_header(gguf_file *f, parser *p)
{
    uint8_t magic[4];
    if (p->size < 4)
        return s_fail(p, "not a GGUF file: only %" PRIu64 " bytes long", p->size);
    s_read(p, magic, 4, "magic");
    if (memcmp(magic, "GGUF", 4) != 0)
        return s_fail(p, "not a GGUF file: bad magic %02x %02x %02x %02x (expected 'GGUF')",
                      magic[0], magic[1], magic[2], magic[3]);
    if (s_read_u32(p, &p->version, "the version"))
        return -1;
    if (p->version < 1 || p->version > 3)
        return s_fail(p, "unsupported GGUF version %" PRIu32 " (llorch reads versions 1, 2 and 3%s)",
                      p->version,
                      (p->version & 0xffffu) == 0 ? "; this looks like a big-endian file" : "");
    f->version = p->version;
    if (s_read_count(p, &f->n_tensors, "the tensor count") ||
        s_read_count(p, &f->n_kv, "the metadata count"))
        return -1;
    /* Smallest encodings: a kv is a key length, a 1-byte key, a type and a 1-byte value;
     * a tensor info is a name length, a 1-byte name, n_dims, one dim, a type, an offset. */
    uint64_t cs = (uint64_t)s_count_size(p);
    uint64_t min_kv = cs + 1 + 4 + 1, min_ti = cs + 1 + 4 + cs + 4 + 8;
    if (f->n_kv > GGUF_MAX_KVS || f->n_kv > s_left(p) / min_kv)
        return s_fail(p, "absurd metadata count %" PRIu64 ": the %" PRIu64 " bytes left in the "
                         "file hold at most %" PRIu64 " (llorch accepts up to %u)",
                      f->n_kv, s_left(p), s_left(p) / min_kv, GGUF_MAX_KVS);
    if (f->n_tensors > GGUF_MAX_TENSORS ||
        f->n_tensors > (s_left(p) - f->n_kv * min_kv) / min_ti)
        return s_fail(p, "absurd tensor count %" PRIu64 ": the %" PRIu64 " bytes left in the "
                         "file hold at most %" PRIu64 " (llorch accepts up to %u)",
                      f->n_tensors, s_left(p), (s_left(p) - f->n_kv * min_kv) / min_ti,
                      GGUF_MAX_TENSORS);
    return 0;
}

static int s_parse_kvs(gguf_file *f, parser *p)
{
    if (f->n_kv && !(f->kvs = calloc((size_t)f->n_kv, sizeof *f->kvs)))
        return s_fail(p, "out of memory for %" PRIu64 " metadata entries", f->n_kv);
    if (s_index_new(&f->kv_index, &f->kv_index_cap, f->n_kv))
        return s_fail(p, "out of memory indexing metadata");
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kvs[i];
        uint32_t type = 0;
        char what[64];
        snprintf(what, sizeof what, "metadata key %" PRIu64, i);
        if (s_read_name(p, &kv->key, GGUF_MAX_KEY_LEN, what))
            return -1;
        uint64_t slot = s_index_slot(f->kv_index, f->kv_index_cap, kv->key, s_kv_name, f->kvs);
        if (f->kv_index[slot])
            return s_fail(p, "duplicate key '%.80s' (entries %" PRIu32 " and %" PRIu64 ")", kv->key,
                          f->kv_index[slot] - 1, i);
        f->kv_index[slot] = (uint32_t)i + 1;
        snprintf(what, sizeof what, "the type of key '%.40s'", kv->key);
        if (s_read_u32(p, &type, what) || s_read_value(p, type, &kv->value, 0, kv->key))
            return -1;
    }
    return 0;
}

static int s_parse_alignment(gguf_file *f, parser *p)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_value *v = gguf_find(f, "general.alignment");
    if (!v)
        return 0;
    uint64_t a;
    switch (v->type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_UINT16: case GGUF_TYPE_UINT32: case GGUF_TYPE_UINT64:
        a = v->u64;
        break;
    case GGUF_TYPE_INT8: case GGUF_TYPE_INT16: case GGUF_TYPE_INT32: case GGUF_TYPE_INT64:
        a = v->i64 < 0 ? 0 : (uint64_t)v->i64;
        break;
    default:
        return s_fail(p, "general.alignment has type %s; it must be an integer",
                      gguf_type_name(v->type));
    }
    if (a == 0 || (a & (a - 1)) != 0 || a > GGUF_MAX_ALIGNMENT)
        return s_fail(p, "bad general.alignment %" PRIu64 ": it must be a power of two from 1 "
                         "to %u",
                      a, GGUF_MAX_ALIGNMENT);
    f->alignment = a;
    return 0;
}

static int s_parse_tensor_info(gguf_file *f, parser *p, uint64_t i)
{
    gguf_tensor *t = &f->tensors[i];
    char what[64];
    snprintf(what, sizeof what, "the name of tensor %" PRIu64, i);
    if (s_read_name(p, &t->name, GGUF_MAX_NAME_LEN, what))
        return -1;
    uint64_t slot = s_index_slot(f->tensor_index, f->tensor_index_cap, t->name, s_tensor_name,
                                 f->tensors);
    if (f->tensor_index[slot])
        return s_fail(p, "duplicate tensor name '%s' (tensors %" PRIu32 " and %" PRIu64 ")",
                      t->name, f->tensor_index[slot] - 1, i);
    f->tensor_index[slot] = (uint32_t)i + 1;
    snprintf(what, sizeof what, "the shape of tensor '%s'", t->name);
    if (s_read_u32(p, &t->n_dims, what))
        return -1;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return s_fail(p, "tensor '%s' has %" PRIu32 " dimensions (1 to %d allowed)", t->name,
                      t->n_dims, GGUF_MAX_DIMS);
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d < t->n_dims && s_read_count(p, &t->ne[d], what))
            return -1;
        if (t->ne[d] == 0)
            return s_fail(p, "tensor '%s' has a zero-sized dimension %" PRIu32, t->name, d);
        if (t->ne[d] > (uint64_t)INT64_MAX / n_elems)
            return s_fail(p, "tensor '%s': element count overflows (shape %" PRIu64 " x %" PRIu64
                             " x %" PRIu64 " x %" PRIu64 " as read so far)",
                          t->name, t->ne[0], d >= 1 ? t->ne[1] : 1, d >= 2 ? t->ne[2] : 1,
                          d >= 3 ? t->ne[3] : 1);
        n_elems *= t->ne[d];
    }
    uint32_t type = 0;
    snprintf(what, sizeof what, "the type of tensor '%s'", t->name);
    if (s_read_u32(p, &type, what))
        return -1;
    if (!tensor_type_supported((int)type))
        return s_fail(p, "tensor '%s' has type %s (%" PRIu32 "), which llorch does not support "
                         "(it reads F32, F16, BF16 and Q8_0; convert the model to one of them)",
                      t->name, tensor_type_name((int)type), type);
    t->type = (enum tensor_type)type;
    uint64_t row_bytes = tensor_row_bytes(t->type, t->ne[0]);
    if (row_bytes == 0 && t->type != TENSOR_Q8_0)
        return s_fail(p, "tensor '%s': byte size overflows", t->name);
    if (row_bytes == 0)
        return s_fail(p, "tensor '%s' is %s with rows of %" PRIu64 " elements, which is not a "
                         "multiple of the block size %d",
                      t->name, tensor_type_name(t->type), t->ne[0], Q8_0_BLOCK);
    uint64_t n_rows = n_elems / t->ne[0];
    if (n_rows > UINT64_MAX / row_bytes)
        return s_fail(p, "tensor '%s': byte size overflows", t->name);
    t->n_bytes = row_bytes * n_rows;
    snprintf(what, sizeof what, "the offset of tensor '%s'", t->name);
    if (s_read(p, &t->offset, 8, what))
        return -1;
    if (t->offset % f->alignment != 0)
        return s_fail(p, "tensor '%s' data offset %" PRIu64 " is not a multiple of the "
                         "alignment %" PRIu64,
                      t->name, t->offset, f->alignment);
    return 0;
}

typedef struct span {
    uint64_t offset;
    uint64_t index;
} span;

static int s_by_offset(const void *a, const void *b)
{
    uint64_t oa = ((const span *)a)->offset, ob = ((const span *)b)->offset;
    return oa < ob ? -1 : oa > ob;
}

/* Tensor data must lie inside the data section without overlapping. */
static int s_check_tensor_data(gguf_file *f, parser *p)
{
    uint64_t data_bytes = f->size - f->data_offset;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset > data_bytes)
            return s_fail(p, "tensor '%s' data offset %" PRIu64 " is past the end of the file "
                             "(the data section holds %" PRIu64 " bytes)",
                          t->name, t->offset, data_bytes);
        if (t->n_bytes > data_bytes - t->offset)
            return s_fail(p, "truncated: tensor '%s' needs %" PRIu64 " bytes at data offset %"
                             PRIu64 " but the file ends %" PRIu64 " bytes short",
                          t->name, t->n_bytes, t->offset, t->n_bytes - (data_bytes - t->offset));
        t->data = f->base + f->data_offset + t->offset;
    }
    if (f->n_tensors < 2)
        return 0;
    span *order = malloc((size_t)f->n_tensors * sizeof *order);
    if (!order)
        return s_fail(p, "out of memory checking tensor layout");
    for (uint64_t i = 0; i < f->n_tensors; i++)
        order[i] = (span){f->tensors[i].offset, i};
    qsort(order, (size_t)f->n_tensors, sizeof *order, s_by_offset);
    int rc = 0;
    for (uint64_t k = 0; k + 1 < f->n_tensors && rc == 0; k++) {
        const gguf_tensor *a = &f->tensors[order[k].index], *b = &f->tensors[order[k + 1].index];
        if (a->offset + a->n_bytes > b->offset)
            rc = s_fail(p, "tensors '%s' (data bytes %" PRIu64 "..%" PRIu64 ") and '%s' (from %"
                           PRIu64 ") overlap",
                        a->name, a->offset, a->offset + a->n_bytes, b->name, b->offset);
    }
    free(order);
    return rc;
}

static const char *const s_special_keys[] = {
    "tokenizer.ggml.bos_token_id",     "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.separator_token_id",
    "tokenizer.ggml.seperator_token_id", /* the spelling llama.cpp writes and reads */
};

/* The vocabulary's parallel arrays and special ids must agree with its length. */
static int s_check_vocab(gguf_file *f, parser *p)
{
    const gguf_value *tokens = gguf_find(f, "tokenizer.ggml.tokens");
    if (!tokens)
        return 0;
    if (tokens->type != GGUF_TYPE_ARRAY || tokens->arr->elem_type != GGUF_TYPE_STRING)
        return s_fail(p, "tokenizer.ggml.tokens must be an array of strings");
    uint64_t n_vocab = tokens->arr->n;
    const char *parallel[] = {"tokenizer.ggml.scores", "tokenizer.ggml.token_type"};
    for (size_t k = 0; k < 2; k++) {
        const gguf_value *v = gguf_find(f, parallel[k]);
        if (v && (v->type != GGUF_TYPE_ARRAY || v->arr->n != n_vocab))
            return s_fail(p, "%s must be an array of %" PRIu64 " values, one per token "
                             "(it has %" PRIu64 ")",
                          parallel[k], n_vocab, v->type == GGUF_TYPE_ARRAY ? v->arr->n : 0);
    }
    for (size_t k = 0; k < sizeof s_special_keys / sizeof s_special_keys[0]; k++) {
        const gguf_value *v = gguf_find(f, s_special_keys[k]);
        if (!v)
            continue;
        int64_t id;
        switch (v->type) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_UINT16: case GGUF_TYPE_UINT32: case GGUF_TYPE_UINT64:
            id = v->u64 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v->u64;
            break;
        case GGUF_TYPE_INT8: case GGUF_TYPE_INT16: case GGUF_TYPE_INT32: case GGUF_TYPE_INT64:
            id = v->i64;
            break;
        default:
            return s_fail(p, "%s has type %s; it must be an integer token id", s_special_keys[k],
                          gguf_type_name(v->type));
        }
        /* -1, also stored as uint32 0xffffffff, is llama.cpp's "no such token" */
        if (id == -1 || (v->type == GGUF_TYPE_UINT32 && id == UINT32_MAX))
            continue;
        if (id < 0 || (uint64_t)id >= n_vocab)
            return s_fail(p, "bad special token id: %s = %" PRId64 " is out of range (the "
                             "vocabulary has %" PRIu64 " tokens, ids 0..%" PRId64 ")",
                          s_special_keys[k], id, n_vocab, (int64_t)n_vocab - 1);
    }
    return 0;
}

static gguf_file *s_parse(gguf_file *f, const char *label, llorch_error *err)
{
    parser p = {.base = f->base, .size = f->size, .label = label, .err = err};
    if (s_parse_header(f, &p) || s_parse_kvs(f, &p) || s_parse_alignment(f, &p))
        goto fail;
    if (f->n_tensors && !(f->tensors = calloc((size_t)f->n_tensors, sizeof *f->tensors))) {
        s_fail(&p, "out of memory for %" PRIu64 " tensor infos", f->n_tensors);
        goto fail;
    }
    if (s_index_new(&f->tensor_index, &f->tensor_index_cap, f->n_tensors)) {
        s_fail(&p, "out of memory indexing tensors");
        goto fail;
    }
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (s_parse_tensor_info(f, &p, i))
            goto fail;
    /* The data section starts at the next multiple of the alignment. */
    uint64_t pad = (f->alignment - p.pos % f->alignment) % f->alignment;
    f->data_offset = p.pos + pad;
    if (f->n_tensors && f->data_offset > f->size) {
        s_fail(&p, "truncated: the tensor data section would start at offset %" PRIu64
                   " but the file ends at %" PRIu64,
               f->data_offset, f->size);
        goto fail;
    }
    if (f->data_offset > f->size) /* no tensors: an absent data section is fine */
        f->data_offset = f->size;
    if (s_check_tensor_data(f, &p) || s_check_vocab(f, &p))
        goto fail;
    return f;
fail:
    gguf_close(&f);
    return NULL;
}

gguf_file *gguf_open_buffer(const void *data, size_t size, llorch_error *err)
{
    gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup("(buffer)"))) {
        free(f);
        llorch_error_set(err, "out of memory opening a GGUF buffer");
        return NULL;
    }
    if (!data)
        size = 0;
    f->base = data;
    f->size = size;
    return s_parse(f, f->path, err);
}

gguf_file *gguf_open(const char *path, llorch_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        llorch_error_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        llorch_error_set(err, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size < 4) {
        llorch_error_set(err, "%s: not a GGUF file: only %lld bytes long", path,
                         (long long)st.st_size);
        close(fd);
        return NULL;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        llorch_error_set(err, "%s: cannot map %lld bytes: %s", path, (long long)st.st_size,
                         strerror(map_errno));
        return NULL;
    }
    gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        munmap(map, (size_t)st.st_size);
        llorch_error_set(err, "%s: out of memory", path);
        return NULL;
    }
    f->map = map;
    f->map_size = (size_t)st.st_size;
    f->base = map;
    f->size = (uint64_t)st.st_size;
    return s_parse(f, f->path, err);
}

void gguf_close(gguf_file **fp)
{
    if (!fp || !*fp)
        return;
    gguf_file *f = *fp;
    for (uint64_t i = 0; f->kvs && i < f->n_kv; i++) {
        free(f->kvs[i].key);
        if (f->kvs[i].value.type == GGUF_TYPE_ARRAY)
            s_array_free(f->kvs[i].value.arr);
    }
    for (uint64_t i = 0; f->tensors && i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    free(f->kv_index);
    free(f->tensor_index);
    if (f->map)
        munmap(f->map, f->map_size);
    free(f->path);
    free(f);
    *fp = NULL;
}

/* ---- look-ups ----------------------------------------------------------------- */

const gguf_value *gguf_find(const gguf_file *f, const char *key)
{
    if (!f || !key || !f->kv_index)
        return NULL;
    uint64_t slot = s_index_slot(f->kv_index, f->kv_index_cap, key, s_kv_name, f->kvs);
    return f->kv_index[slot] ? &f->kvs[f->kv_index[slot] - 1].value : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    if (!f || !name || !f->tensor_index)
        return NULL;
    uint64_t slot = s_index_slot(f->tensor_index, f->tensor_index_cap, name, s_tensor_name,
                                 f->tensors);
    return f->tensor_index[slot] ? &f->tensors[f->tensor_index[slot] - 1] : NULL;
}
