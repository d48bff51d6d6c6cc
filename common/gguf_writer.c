/* gguf_writer.c - GGUF v3 writer: metadata in memory, tensor data streamed to disk. */
#include "gguf_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_WRITE_VERSION 3u
#define WRITE_BUFFER_BYTES (8u << 20)
#define MAX_KEY_BYTES 65535u
#define MAX_TENSOR_NAME_BYTES 63u /* ggml keeps names in char[64] */

typedef struct byte_buf {
    uint8_t *data;
    size_t len, cap;
} byte_buf;

typedef struct tensor_decl {
    char *name;
    enum tensor_type type;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t offset;  /* from the start of the data section, aligned */
    uint64_t n_bytes; /* unpadded */
} tensor_decl;

enum writer_state { STATE_DECLARING, STATE_OPEN, STATE_FINISHED };

struct gguf_writer {
    uint32_t alignment;
    enum writer_state state;
    bool failed;
    llorch_error first_error; /* repeated by every call after a failure */

    byte_buf meta; /* serialized key/value pairs */
    char **keys;   /* for the duplicate check */
    uint64_t n_kv, keys_cap;

    tensor_decl *tensors;
    uint64_t n_tensors, tensors_cap;
    uint64_t data_bytes; /* end of the last tensor's padded data */

    /* while open */
    char *path, *part_path;
    int fd;
    uint8_t *buf; /* WRITE_BUFFER_BYTES of pending output */
    size_t buf_len;
    uint64_t bytes_written; /* handed to the file or the buffer */
    uint64_t current;       /* index of the tensor being written; n_tensors before the first */
    uint64_t current_done;  /* bytes of it written so far */
};

/* ---- errors -------------------------------------------------------------------- */

/* Records a failure so later calls repeat it; returns -1. */
static int s_fail(gguf_writer *w, llorch_error *err)
{
    if (w && !w->failed) {
        w->failed = true;
        w->first_error = err ? *err : (llorch_error){{0}};
    }
    return -1;
}

static int s_check_usable(gguf_writer *w, llorch_error *err)
{
    if (!w)
        return llorch_error_set(err, "gguf writer: no writer (NULL)");
    if (w->failed) {
        if (err)
            *err = w->first_error;
        return -1;
    }
    return 0;
}

/* ---- in-memory serialization --------------------------------------------------- */

static int s_buf_put(byte_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static int s_put_u32(byte_buf *b, uint32_t v) { return s_buf_put(b, &v, 4); }
static int s_put_u64(byte_buf *b, uint64_t v) { return s_buf_put(b, &v, 8); }

static int s_put_str(byte_buf *b, const char *s, uint64_t len)
{
    return s_put_u64(b, len) || s_buf_put(b, s, (size_t)len) ? -1 : 0;
}

/* Bytes of one element of a fixed-size value type; 0 for string/array/unknown. */
static size_t s_scalar_size(enum gguf_type t)
{
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

/* Starts a key/value pair: checks the state and the key, records the key, writes
 * it and the value type. The caller then appends the value. */
static int s_begin_kv(gguf_writer *w, const char *key, enum gguf_type type, llorch_error *err)
{
    if (s_check_usable(w, err))
        return -1;
    if (w->state != STATE_DECLARING) {
        llorch_error_set(err, "gguf writer: metadata key '%s' set after the file was opened "
                              "(set every key before gguf_writer_open)", key ? key : "(null)");
        return s_fail(w, err);
    }
    if (!key || !*key || strlen(key) > MAX_KEY_BYTES) {
        llorch_error_set(err, "gguf writer: a metadata key must be 1..%u bytes", MAX_KEY_BYTES);
        return s_fail(w, err);
    }
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) {
            llorch_error_set(err, "gguf writer: duplicate metadata key '%s'", key);
            return s_fail(w, err);
        }
    if (w->n_kv == w->keys_cap) {
        uint64_t cap = w->keys_cap ? w->keys_cap * 2 : 32;
        char **k = realloc(w->keys, cap * sizeof *k);
        if (!k)
            goto oom;
        w->keys = k;
        w->keys_cap = cap;
    }
    char *copy = strdup(key);
    if (!copy)
        goto oom;
    w->keys[w->n_kv++] = copy;
    if (s_put_str(&w->meta, key, strlen(key)) || s_put_u32(&w->meta, (uint32_t)type))
        goto oom;
    return 0;
oom:
    llorch_error_set(err, "gguf writer: out of memory adding key '%s'", key);
    return s_fail(w, err);
}

static int s_oom(gguf_writer *w, const char *key, llorch_error *err)
{
    llorch_error_set(err, "gguf writer: out of memory writing key '%s'", key);
    return s_fail(w, err);
}

static int s_set_scalar(gguf_writer *w, const char *key, enum gguf_type type, const void *v,
                        llorch_error *err)
{
    if (s_begin_kv(w, key, type, err))
        return -1;
    if (s_buf_put(&w->meta, v, s_scalar_size(type)))
        return s_oom(w, key, err);
    return 0;
}

int gguf_writer_set_u8(gguf_writer *w, const char *key, uint8_t v, llorch_error *err)
{
    return s_set_scalar(w, key, GGUF_TYPE_UINT8, &v, err);
}
int gguf_writer_set_i8(gguf_writer *w, const char *key, int8_t v, llorch_error *err)
{
    return s_set_scalar(w, key, GGUF_TYPE_INT8, &v, err);
}
int gguf_writer_set_u16(gguf_writer *w, const char *key, uint16_t v, llorch_error *err)
{
    return s_set_scalar(w, key, GGUF_TYPE_UINT16, &v, err);
}
int gguf_writer_set_i16(gguf_writer *w, const char *key, int16_t v, llorch_error *err)
{
    return s_set_scalar(w, key, GGUF_TYPE_INT16, &v, err);
}
int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v, llorch_error *err)
{
    return s_set_scalar(w, key, GGUF_TYPE_UINT32, &v, err);
}
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v, llorch_error *err)
{
    return s_set_scalar(w, key, GGUF_TYPE_INT32, &v, err);
}
int gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v, llorch_error *err)
{
    return s_set_scalar(w, key, GGUF_TYPE_UINT64, &v, err);
}
int gguf_writer_set_i64(gguf_writer *w, const char *key, int64_t v, llorch_error *err)
{
    return s_set_scalar(w, key, GGUF_TYPE_INT64, &v, err);
}
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v, llorch_error *err)
{
    return s_set_scalar(w, key, GGUF_TYPE_FLOAT32, &v, err);
}
int gguf_writer_set_f64(gguf_writer *w, const char *key, double v, llorch_error *err)
{
    return s_set_scalar(w, key, GGUF_TYPE_FLOAT64, &v, err);
}
int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v, llorch_error *err)
{
    uint8_t b = v ? 1 : 0;
    return s_set_scalar(w, key, GGUF_TYPE_BOOL, &b, err);
}

int gguf_writer_set_string(gguf_writer *w, const char *key, const char *v, llorch_error *err)
{
    if (s_begin_kv(w, key, GGUF_TYPE_STRING, err))
        return -1;
    if (s_put_str(&w->meta, v ? v : "", v ? strlen(v) : 0))
        return s_oom(w, key, err);
    return 0;
}

int gguf_writer_set_array(gguf_writer *w, const char *key, enum gguf_type elem_type,
                          const void *values, uint64_t n, llorch_error *err)
{
    size_t size = s_scalar_size(elem_type);
    if (s_check_usable(w, err))
        return -1;
    if (size == 0) {
        llorch_error_set(err, "gguf writer: key '%s': gguf_writer_set_array takes numeric or "
                              "bool elements, not value type %d", key ? key : "(null)",
                         (int)elem_type);
        return s_fail(w, err);
    }
    if (n > SIZE_MAX / size) {
        llorch_error_set(err, "gguf writer: key '%s': array of %llu elements is too large",
                         key ? key : "(null)", (unsigned long long)n);
        return s_fail(w, err);
    }
    if (s_begin_kv(w, key, GGUF_TYPE_ARRAY, err))
        return -1;
    if (s_put_u32(&w->meta, (uint32_t)elem_type) || s_put_u64(&w->meta, n) ||
        s_buf_put(&w->meta, values, (size_t)n * size))
        return s_oom(w, key, err);
    return 0;
}

int gguf_writer_set_string_array(gguf_writer *w, const char *key, const char *const *strs,
                                 uint64_t n, llorch_error *err)
{
    if (s_begin_kv(w, key, GGUF_TYPE_ARRAY, err))
        return -1;
    if (s_put_u32(&w->meta, GGUF_TYPE_STRING) || s_put_u64(&w->meta, n))
        return s_oom(w, key, err);
    for (uint64_t i = 0; i < n; i++) {
        const char *s = strs[i] ? strs[i] : "";
        if (s_put_str(&w->meta, s, strlen(s)))
            return s_oom(w, key, err);
    }
    return 0;
}

/* Appends an array's body (element type, count, elements) as the reader holds it. */
static int s_put_array_body(byte_buf *b, const gguf_array *a, int depth)
{
    if (!a || depth > 64)
        return -1;
    if (s_put_u32(b, (uint32_t)a->elem_type) || s_put_u64(b, a->n))
        return -1;
    if (a->elem_type == GGUF_TYPE_STRING) {
        for (uint64_t i = 0; i < a->n; i++)
            if (s_put_str(b, a->strs[i].ptr, a->strs[i].len))
                return -1;
        return 0;
    }
    if (a->elem_type == GGUF_TYPE_ARRAY) {
        for (uint64_t i = 0; i < a->n; i++)
            if (a->items[i].type != GGUF_TYPE_ARRAY ||
                s_put_array_body(b, a->items[i].arr, depth + 1))
                return -1;
        return 0;
    }
    size_t size = s_scalar_size(a->elem_type);
    if (size == 0 || a->n > SIZE_MAX / size)
        return -1;
    return s_buf_put(b, a->raw, (size_t)a->n * size);
}

int gguf_writer_set_value(gguf_writer *w, const char *key, const gguf_value *v,
                          llorch_error *err)
{
    if (s_check_usable(w, err))
        return -1;
    if (!v || v->type >= GGUF_TYPE_COUNT) {
        llorch_error_set(err, "gguf writer: key '%s': no value or an unknown value type",
                         key ? key : "(null)");
        return s_fail(w, err);
    }
    switch (v->type) {
    case GGUF_TYPE_UINT8: return gguf_writer_set_u8(w, key, (uint8_t)v->u64, err);
    case GGUF_TYPE_INT8: return gguf_writer_set_i8(w, key, (int8_t)v->i64, err);
    case GGUF_TYPE_UINT16: return gguf_writer_set_u16(w, key, (uint16_t)v->u64, err);
    case GGUF_TYPE_INT16: return gguf_writer_set_i16(w, key, (int16_t)v->i64, err);
    case GGUF_TYPE_UINT32: return gguf_writer_set_u32(w, key, (uint32_t)v->u64, err);
    case GGUF_TYPE_INT32: return gguf_writer_set_i32(w, key, (int32_t)v->i64, err);
    case GGUF_TYPE_UINT64: return gguf_writer_set_u64(w, key, v->u64, err);
    case GGUF_TYPE_INT64: return gguf_writer_set_i64(w, key, v->i64, err);
    case GGUF_TYPE_FLOAT32: return gguf_writer_set_f32(w, key, (float)v->f64, err);
    case GGUF_TYPE_FLOAT64: return gguf_writer_set_f64(w, key, v->f64, err);
    case GGUF_TYPE_BOOL: return gguf_writer_set_bool(w, key, v->b, err);
    case GGUF_TYPE_STRING:
        if (s_begin_kv(w, key, GGUF_TYPE_STRING, err))
            return -1;
        if (s_put_str(&w->meta, v->str.ptr, v->str.len))
            return s_oom(w, key, err);
        return 0;
    case GGUF_TYPE_ARRAY:
        if (s_begin_kv(w, key, GGUF_TYPE_ARRAY, err))
            return -1;
        if (s_put_array_body(&w->meta, v->arr, 0)) {
            llorch_error_set(err, "gguf writer: key '%s': cannot copy the array (out of memory "
                                  "or a malformed array value)", key);
            return s_fail(w, err);
        }
        return 0;
    default:
        break;
    }
    return -1;
}

/* ---- tensor infos -------------------------------------------------------------- */

static const char *s_tensor_type_name(enum tensor_type type)
{
    switch (type) {
    case TENSOR_F32: return "F32";
    case TENSOR_F16: return "F16";
    case TENSOR_BF16: return "BF16";
    case TENSOR_Q8_0: return "Q8_0";
    default: return "unsupported";
    }
}

static uint64_t s_align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

uint64_t gguf_writer_tensor_bytes(enum tensor_type type, uint32_t n_dims, const uint64_t *ne)
{
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return 0;
    uint64_t n_rows = 1;
    for (uint32_t d = 1; d < n_dims; d++) {
        if (ne[d] == 0 || n_rows > UINT64_MAX / ne[d])
            return 0;
        n_rows *= ne[d];
    }
    uint64_t row_bytes;
    switch (type) {
    case TENSOR_F32:
        row_bytes = ne[0] <= UINT64_MAX / 4 ? ne[0] * 4 : 0;
        break;
    case TENSOR_F16:
    case TENSOR_BF16:
        row_bytes = ne[0] <= UINT64_MAX / 2 ? ne[0] * 2 : 0;
        break;
    case TENSOR_Q8_0:
        row_bytes = ne[0] % Q8_0_BLOCK == 0 ? ne[0] / Q8_0_BLOCK * sizeof(uint16_t) * 17 : 0;
        break;
    default:
        return 0;
    }
    if (row_bytes == 0 || n_rows > (UINT64_MAX / 2) / row_bytes)
        return 0;
    return row_bytes * n_rows;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, enum tensor_type type,
                           uint32_t n_dims, const uint64_t *ne, llorch_error *err)
{
    if (s_check_usable(w, err))
        return -1;
    const char *shown = name ? name : "(null)";
    if (w->state != STATE_DECLARING) {
        llorch_error_set(err, "gguf writer: tensor '%s' declared after the file was opened",
                         shown);
        return s_fail(w, err);
    }
    if (!name || !*name || strlen(name) > MAX_TENSOR_NAME_BYTES) {
        llorch_error_set(err, "gguf writer: tensor name '%s' must be 1..%u bytes", shown,
                         MAX_TENSOR_NAME_BYTES);
        return s_fail(w, err);
    }
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name)) {
            llorch_error_set(err, "gguf writer: duplicate tensor name '%s'", name);
            return s_fail(w, err);
        }
    uint64_t n_bytes = gguf_writer_tensor_bytes(type, n_dims, ne);
    if (n_bytes == 0) {
        llorch_error_set(err, "gguf writer: tensor '%s': bad shape or type (%u dims, type %s; "
                              "need 1..%d dims of >= 1, type F32, F16, BF16 or Q8_0, and for "
                              "Q8_0 a row length that is a multiple of %d)",
                         name, n_dims, s_tensor_type_name(type), GGUF_MAX_DIMS, Q8_0_BLOCK);
        return s_fail(w, err);
    }
    if (w->n_tensors == w->tensors_cap) {
        uint64_t cap = w->tensors_cap ? w->tensors_cap * 2 : 64;
        tensor_decl *t = realloc(w->tensors, cap * sizeof *t);
        if (!t)
            goto oom;
        w->tensors = t;
        w->tensors_cap = cap;
    }
    tensor_decl *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name)
        goto oom;
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->offset = w->data_bytes;
    t->n_bytes = n_bytes;
    w->data_bytes = s_align_up(t->offset + n_bytes, w->alignment);
    w->n_tensors++;
    return 0;
oom:
    llorch_error_set(err, "gguf writer: out of memory declaring tensor '%s'", name);
    return s_fail(w, err);
}

/* Serializes the header, metadata (plus general.alignment if not default is already
 * among them) and tensor infos. */
static int s_build_header(const gguf_writer *w, byte_buf *out)
{
    if (s_put_u32(out, GGUF_MAGIC) || s_put_u32(out, GGUF_WRITE_VERSION) ||
        s_put_u64(out, w->n_tensors) || s_put_u64(out, w->n_kv) ||
        s_buf_put(out, w->meta.data, w->meta.len))
        return -1;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const tensor_decl *t = &w->tensors[i];
        if (s_put_str(out, t->name, strlen(t->name)) || s_put_u32(out, t->n_dims))
            return -1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if (s_put_u64(out, t->ne[d]))
                return -1;
        if (s_put_u32(out, (uint32_t)t->type) || s_put_u64(out, t->offset))
            return -1;
    }
    return 0;
}

static uint64_t s_infos_bytes(const gguf_writer *w)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < w->n_tensors; i++)
        n += 8 + strlen(w->tensors[i].name) + 4 + 8ull * w->tensors[i].n_dims + 4 + 8;
    return n;
}

uint64_t gguf_writer_file_bytes(const gguf_writer *w)
{
    if (!w)
        return 0;
    uint64_t header = 24 + w->meta.len + s_infos_bytes(w);
    return s_align_up(header, w->alignment) + w->data_bytes;
}

/* ---- the file ------------------------------------------------------------------ */

gguf_writer *gguf_writer_new(uint32_t alignment)
{
    if (alignment == 0)
        alignment = GGUF_DEFAULT_ALIGNMENT;
    if (alignment & (alignment - 1))
        return NULL;
    gguf_writer *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->alignment = alignment;
    w->fd = -1;
    if (alignment != GGUF_DEFAULT_ALIGNMENT &&
        gguf_writer_set_u32(w, "general.alignment", alignment, NULL)) {
        gguf_writer_free(&w);
        return NULL;
    }
    return w;
}

void gguf_writer_free(gguf_writer **pw)
{
    if (!pw || !*pw)
        return;
    gguf_writer *w = *pw;
    if (w->fd >= 0) {
        close(w->fd);
        if (w->state != STATE_FINISHED && w->part_path)
            unlink(w->part_path);
    }
    for (uint64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    free(w->keys);
    for (uint64_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    free(w->meta.data);
    free(w->buf);
    free(w->path);
    free(w->part_path);
    free(w);
    *pw = NULL;
}

/* write(2) until all of p is out; names the file and the system error. */
static int s_write_all(gguf_writer *w, const uint8_t *p, size_t n, llorch_error *err)
{
    while (n > 0) {
        ssize_t k = write(w->fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int e = k < 0 ? errno : EIO;
            llorch_error_set(err, "writing %s: %s%s", w->part_path, strerror(e),
                             e == ENOSPC || e == EDQUOT
                                 ? " (the disk is full: free some space or write elsewhere)"
                                 : "");
            return s_fail(w, err);
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int s_flush(gguf_writer *w, llorch_error *err)
{
    if (w->buf_len == 0)
        return 0;
    size_t n = w->buf_len;
    w->buf_len = 0;
    return s_write_all(w, w->buf, n, err);
}

/* Buffers n bytes; large blocks bypass the buffer once it is flushed. */
static int s_emit(gguf_writer *w, const void *data, size_t n, llorch_error *err)
{
    if (w->buf_len + n > WRITE_BUFFER_BYTES) {
        if (s_flush(w, err))
            return -1;
        if (n >= WRITE_BUFFER_BYTES / 2) {
            if (s_write_all(w, data, n, err))
                return -1;
            w->bytes_written += n;
            return 0;
        }
    }
    memcpy(w->buf + w->buf_len, data, n);
    w->buf_len += n;
    w->bytes_written += n;
    return 0;
}

static int s_emit_zeros(gguf_writer *w, uint64_t n, llorch_error *err)
{
    static const uint8_t zeros[256];
    while (n > 0) {
        size_t k = n > sizeof zeros ? sizeof zeros : (size_t)n;
        if (s_emit(w, zeros, k, err))
            return -1;
        n -= k;
    }
    return 0;
}

int gguf_writer_open(gguf_writer *w, const char *path, llorch_error *err)
{
    if (s_check_usable(w, err))
        return -1;
    if (w->state != STATE_DECLARING) {
        llorch_error_set(err, "gguf writer: already opened");
        return s_fail(w, err);
    }
    if (!path || !*path) {
        llorch_error_set(err, "gguf writer: no output path");
        return s_fail(w, err);
    }
    byte_buf header = {0};
    w->path = strdup(path);
    w->part_path = malloc(strlen(path) + 6);
    w->buf = malloc(WRITE_BUFFER_BYTES);
    if (!w->path || !w->part_path || !w->buf || s_build_header(w, &header)) {
        free(header.data);
        llorch_error_set(err, "gguf writer: out of memory opening %s", path);
        return s_fail(w, err);
    }
    sprintf(w->part_path, "%s.part", path);
    w->fd = open(w->part_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int e = errno;
        free(header.data);
        llorch_error_set(err, "cannot create %s: %s (check that the folder exists and is "
                              "writable)", w->part_path, strerror(e));
        return s_fail(w, err);
    }
    /* Reserving the whole file up front turns a full disk into an error now rather
     * than after gigabytes, and spares the filesystem allocating block by block. */
    int fe = posix_fallocate(w->fd, 0, (off_t)gguf_writer_file_bytes(w));
    if (fe == ENOSPC || fe == EDQUOT || fe == EFBIG) {
        free(header.data);
        llorch_error_set(err, "cannot write %s: %s (%llu bytes needed: free some space or "
                              "write elsewhere)", w->part_path, strerror(fe),
                         (unsigned long long)gguf_writer_file_bytes(w));
        return s_fail(w, err);
    }
    w->state = STATE_OPEN;
    w->current = w->n_tensors;
    int rc = s_emit(w, header.data, header.len, err);
    free(header.data);
    if (rc)
        return -1;
    return s_emit_zeros(w, s_align_up(w->bytes_written, w->alignment) - w->bytes_written, err);
}

/* Data section offset of the file: where tensor offsets count from. */
static uint64_t s_data_start(const gguf_writer *w)
{
    return gguf_writer_file_bytes(w) - w->data_bytes;
}

static int s_check_current_complete(gguf_writer *w, llorch_error *err)
{
    if (w->current < w->n_tensors && w->current_done != w->tensors[w->current].n_bytes) {
        const tensor_decl *t = &w->tensors[w->current];
        llorch_error_set(err, "gguf writer: tensor '%s' got %llu of its %llu bytes", t->name,
                         (unsigned long long)w->current_done, (unsigned long long)t->n_bytes);
        return s_fail(w, err);
    }
    return 0;
}

int gguf_writer_begin_tensor(gguf_writer *w, const char *name, llorch_error *err)
{
    if (s_check_usable(w, err))
        return -1;
    if (w->state != STATE_OPEN) {
        llorch_error_set(err, "gguf writer: tensor data before gguf_writer_open or after finish");
        return s_fail(w, err);
    }
    if (s_check_current_complete(w, err))
        return -1;
    uint64_t next = w->current == w->n_tensors ? 0 : w->current + 1;
    if (next >= w->n_tensors || !name || strcmp(w->tensors[next].name, name)) {
        llorch_error_set(err, "gguf writer: tensor '%s' begun out of order (expected '%s': "
                              "data goes in the order tensors were declared)",
                         name ? name : "(null)",
                         next < w->n_tensors ? w->tensors[next].name : "no more tensors");
        return s_fail(w, err);
    }
    uint64_t target = s_data_start(w) + w->tensors[next].offset;
    if (s_emit_zeros(w, target - w->bytes_written, err))
        return -1;
    w->current = next;
    w->current_done = 0;
    return 0;
}

int gguf_writer_write(gguf_writer *w, const void *data, size_t n, llorch_error *err)
{
    if (s_check_usable(w, err))
        return -1;
    if (w->state != STATE_OPEN || w->current >= w->n_tensors) {
        llorch_error_set(err, "gguf writer: data written with no tensor begun");
        return s_fail(w, err);
    }
    const tensor_decl *t = &w->tensors[w->current];
    if (n > t->n_bytes - w->current_done) {
        llorch_error_set(err, "gguf writer: tensor '%s' holds %llu bytes; %llu more is too "
                              "many", t->name, (unsigned long long)t->n_bytes,
                         (unsigned long long)(w->current_done + n));
        return s_fail(w, err);
    }
    if (s_emit(w, data, n, err))
        return -1;
    w->current_done += n;
    return 0;
}

int gguf_writer_finish(gguf_writer *w, llorch_error *err)
{
    if (s_check_usable(w, err))
        return -1;
    if (w->state != STATE_OPEN) {
        llorch_error_set(err, "gguf writer: finish without an open file");
        return s_fail(w, err);
    }
    if (s_check_current_complete(w, err))
        return -1;
    uint64_t written = w->current == w->n_tensors ? 0 : w->current + 1;
    if (written != w->n_tensors) {
        llorch_error_set(err, "gguf writer: %s: only %llu of %llu tensors were written",
                         w->path, (unsigned long long)written,
                         (unsigned long long)w->n_tensors);
        return s_fail(w, err);
    }
    if (s_emit_zeros(w, gguf_writer_file_bytes(w) - w->bytes_written, err) || s_flush(w, err))
        return -1;
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0) {
        int e = errno;
        unlink(w->part_path);
        llorch_error_set(err, "writing %s: %s", w->part_path, strerror(e));
        return s_fail(w, err);
    }
    if (rename(w->part_path, w->path) != 0) {
        int e = errno;
        unlink(w->part_path);
        llorch_error_set(err, "cannot rename %s to %s: %s", w->part_path, w->path, strerror(e));
        return s_fail(w, err);
    }
    w->state = STATE_FINISHED;
    return 0;
}

uint64_t gguf_writer_bytes_written(const gguf_writer *w)
{
    return w ? w->bytes_written : 0;
}
