/* gguf.h - reading GGUF files (versions 1, 2, 3) without trusting a byte of them. */
#ifndef LLORCH_GGUF_H
#define LLORCH_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Metadata value types, numbered as in the GGUF specification. */
enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

/* Tensor element types llorch computes with, numbered as ggml numbers them.
 * Every other ggml type is refused at open time with the tensor's name. */
enum tensor_type {
    TENSOR_F32 = 0,
    TENSOR_F16 = 1,
    TENSOR_Q8_0 = 8,
    TENSOR_BF16 = 30,
};

#define Q8_0_BLOCK 32 /* elements per Q8_0 block: fp16 scale + 32 int8 = 34 bytes */
#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

/* Limits a file must stay within, on top of the checks against its size. Each is far
 * above any real model; they keep a hostile file from asking for huge allocations. */
#define GGUF_MAX_ALIGNMENT (1u << 21)   /* general.alignment: a power of two up to 2 MiB */
#define GGUF_MAX_KVS (1u << 20)         /* metadata entries */
#define GGUF_MAX_TENSORS (1u << 20)     /* tensor infos */
#define GGUF_MAX_ARRAY_DEPTH 4          /* arrays of arrays of ... */
#define GGUF_MAX_ARRAY_ENTRIES (1u << 24) /* strings + nested arrays over all arrays */
#define GGUF_MAX_KEY_LEN 65535          /* bytes, as the GGUF specification says */
#define GGUF_MAX_NAME_LEN 64            /* tensor name bytes, as ggml allows */

/* A string inside the file: not NUL-terminated, valid while the file is open. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct gguf_array gguf_array;

/* One metadata value. Integers are widened (u64 for unsigned kinds and bool,
 * i64 for signed kinds), floats to double; `type` keeps the kind in the file. */
typedef struct gguf_value {
    enum gguf_type type;
    union {
        uint64_t u64;
        int64_t i64;
        double f64;
        bool b;
        gguf_str str;
        gguf_array *arr;
    };
} gguf_value;

struct gguf_array {
    enum gguf_type elem_type;
    uint64_t n;
    const void *raw;   /* numeric/bool elements: n packed little-endian values in the file */
    gguf_str *strs;    /* elem_type == STRING: n strings */
    gguf_value *items; /* elem_type == ARRAY: n values, each of type ARRAY (nested) */
};

typedef struct gguf_kv {
    char *key; /* NUL-terminated copy */
    gguf_value value;
} gguf_kv;

typedef struct gguf_tensor {
    char *name; /* NUL-terminated copy */
    enum tensor_type type;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] varies fastest (row length); unused dims are 1 */
    uint64_t offset;            /* from the start of the data section */
    uint64_t n_bytes;
    const void *data; /* into the mapped file or buffer */
    uint32_t layout;  /* how data is arranged (enum weight_layout, kernels.h): 0 = GGUF
                         rows, as in every file; other values only in memory a loader
                         repacked */
} gguf_tensor;

typedef struct gguf_file {
    uint32_t version;
    uint64_t n_kv;
    gguf_kv *kvs;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t alignment;   /* general.alignment or 32 */
    uint64_t data_offset; /* start of the tensor data section in the file */
    const uint8_t *base;  /* the whole file, size bytes */
    uint64_t size;
    /* private */
    void *map;
    size_t map_size;
    char *path;              /* for messages; "(buffer)" for gguf_open_buffer */
    uint32_t *kv_index;      /* open-addressed hash: key -> index + 1, 0 = empty */
    uint64_t kv_index_cap;   /* power of two */
    uint32_t *tensor_index;  /* same for tensor names */
    uint64_t tensor_index_cap;
} gguf_file;

/* Opens, maps read-only and validates a GGUF file: header, every metadata value,
 * general.alignment, tensor infos (supported type, 1..4 non-zero dims, no element-count
 * overflow, whole Q8_0 blocks), tensor data (aligned, inside the file, no two tensors
 * overlapping), unique keys and tensor names, and the tokenizer's special token ids
 * (tokenizer.ggml.{bos,eos,unknown,padding,separator,seperator}_token_id) against
 * the length of tokenizer.ggml.tokens (-1, or 0xffffffff as uint32, means "none" and
 * passes), whose scores and token_type arrays must match its length.
 * Returns NULL and fills err (naming the path, the key or tensor, and what is wrong)
 * on any problem. Free with gguf_close. The host must be little-endian, as the file. */
gguf_file *gguf_open(const char *path, llorch_error *err);

/* Same over a caller-owned buffer, which must outlive the gguf_file (the fuzzer uses it). */
gguf_file *gguf_open_buffer(const void *data, size_t size, llorch_error *err);

/* Frees everything and sets *f to NULL. Safe on NULL and on *f == NULL. */
void gguf_close(gguf_file **f);

/* Look-ups; NULL when absent. */
const gguf_value *gguf_find(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Typed getters: 0 on success; -1 with err naming the key when it is absent, of a
 * kind that does not convert (integers convert between widths only when the value
 * fits), or out of range. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, llorch_error *err);
int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out, llorch_error *err);
int gguf_get_f32(const gguf_file *f, const char *key, float *out, llorch_error *err);
int gguf_get_bool(const gguf_file *f, const char *key, bool *out, llorch_error *err);
/* Copies into a NUL-terminated malloc'd string the caller frees. */
int gguf_get_string(const gguf_file *f, const char *key, char **out, llorch_error *err);
/* The array under key, which must hold elements of elem_type (GGUF_TYPE_COUNT = any). */
const gguf_array *gguf_get_array(const gguf_file *f, const char *key, enum gguf_type elem_type,
                                 llorch_error *err);

/* Element i of a numeric array converted to double / int64 (caller checks i < n). */
double gguf_array_f64(const gguf_array *a, uint64_t i);
int64_t gguf_array_i64(const gguf_array *a, uint64_t i);

/* Names: "F32", "Q8_0", ...; "uint32", "string", ...; "unknown(N)" never NULL. */
const char *tensor_type_name(int type);
const char *gguf_type_name(int type);

/* Bytes of a row of n elements of type; 0 when n is not a whole number of blocks
 * or the type is not supported. */
uint64_t tensor_row_bytes(enum tensor_type type, uint64_t n);
bool tensor_type_supported(int type);

/* Bytes of one element of a fixed-size metadata kind (uint8 .. float64, bool); 0 for
 * string, array and unknown kinds. */
uint64_t gguf_type_size(int type);

#endif
