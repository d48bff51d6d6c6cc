/* cmd_inspect.c - `llorch inspect MODEL [--json]`: what a GGUF file holds, after validation. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gguf.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch inspect MODEL.gguf [--json]\n"
            "\n"
            "Validates a GGUF file (versions 1-3) and prints its version, architecture,\n"
            "hyperparameters, tokenizer summary and tensor table (name, type, shape,\n"
            "offset, bytes). Shapes list ne[0] (the row length) first, as GGUF stores them.\n"
            "\n"
            "  --json   one JSON object with the stable keys version, architecture, config\n"
            "           (the ARCH.* scalars without the prefix), vocab_size, tensors\n"
            "           ([{name,type,shape,offset,bytes}]), alignment, data_offset,\n"
            "           file_bytes, tensor_bytes, n_params and tokenizer\n"
            "  --help   this text\n");
}

static const char *const s_tokenizer_ids[] = {"bos_token_id", "eos_token_id", "unknown_token_id",
                                              "padding_token_id", "separator_token_id"};

/* llama.cpp writes and reads the separator id as "seperator"; accept both spellings. */
static const gguf_value *s_tokenizer_value(const gguf_file *f, const char *name)
{
    char key[96];
    snprintf(key, sizeof key, "tokenizer.ggml.%s", name);
    const gguf_value *v = gguf_find(f, key);
    if (!v && !strcmp(name, "separator_token_id"))
        v = gguf_find(f, "tokenizer.ggml.seperator_token_id");
    return v;
}
static const char *const s_tokenizer_flags[] = {"add_bos_token", "add_eos_token"};

static bool s_is_int(enum gguf_type t, bool *is_signed)
{
    *is_signed = t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
                 t == GGUF_TYPE_INT64;
    return *is_signed || t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 ||
           t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_UINT64;
}

/* A float32 value as the shortest decimal that reads back as the same float, so that
 * 1e-5 shows as 1e-05 and not as the widened 9.99999974737875e-06. */
static double s_float_value(const gguf_value *v, char *text, size_t cap)
{
    if (v->type == GGUF_TYPE_FLOAT32) {
        float f = (float)v->f64;
        for (int digits = 6; digits <= 9; digits++) {
            snprintf(text, cap, "%.*g", digits, (double)f);
            if (strtof(text, NULL) == f)
                break;
        }
    } else {
        snprintf(text, cap, "%.17g", v->f64);
    }
    return strtod(text, NULL);
}

/* Human text of a value: scalars in full, strings up to 60 bytes, arrays as a summary. */
static const char *s_value_text(const gguf_value *v, char *buf, size_t cap)
{
    bool sgn;
    if (s_is_int(v->type, &sgn)) {
        if (sgn)
            snprintf(buf, cap, "%" PRId64, v->i64);
        else
            snprintf(buf, cap, "%" PRIu64, v->u64);
    } else if (v->type == GGUF_TYPE_FLOAT32 || v->type == GGUF_TYPE_FLOAT64) {
        s_float_value(v, buf, cap);
    } else if (v->type == GGUF_TYPE_BOOL) {
        snprintf(buf, cap, "%s", v->b ? "true" : "false");
    } else if (v->type == GGUF_TYPE_STRING) {
        int n = v->str.len > 60 ? 60 : (int)v->str.len;
        snprintf(buf, cap, "\"%.*s\"%s", n, v->str.ptr, v->str.len > 60 ? "..." : "");
    } else if (v->type == GGUF_TYPE_ARRAY) {
        snprintf(buf, cap, "[%" PRIu64 " x %s]", v->arr->n, gguf_type_name(v->arr->elem_type));
    } else {
        snprintf(buf, cap, "?");
    }
    return buf;
}

/* A scalar value as JSON; NULL for arrays (config holds scalars only). */
static json_t *s_value_json(const gguf_value *v)
{
    bool sgn;
    char text[64];
    if (s_is_int(v->type, &sgn)) {
        if (sgn)
            return json_integer((json_int_t)v->i64);
        return v->u64 <= (uint64_t)INT64_MAX ? json_integer((json_int_t)v->u64)
                                             : json_real((double)v->u64);
    }
    if (v->type == GGUF_TYPE_FLOAT32 || v->type == GGUF_TYPE_FLOAT64)
        return json_real(s_float_value(v, text, sizeof text));
    if (v->type == GGUF_TYPE_BOOL)
        return json_boolean(v->b);
    if (v->type == GGUF_TYPE_STRING)
        return json_stringn_nocheck(v->str.ptr, (size_t)v->str.len);
    return NULL;
}

static char *s_string_or_null(const gguf_file *f, const char *key)
{
    const gguf_value *v = gguf_find(f, key);
    char *s = NULL;
    if (v && v->type == GGUF_TYPE_STRING && gguf_get_string(f, key, &s, NULL) == 0)
        return s;
    return NULL;
}

static uint64_t s_vocab_size(const gguf_file *f)
{
    const gguf_value *v = gguf_find(f, "tokenizer.ggml.tokens");
    return v && v->type == GGUF_TYPE_ARRAY ? v->arr->n : 0;
}

static uint64_t s_n_elems(const gguf_tensor *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

static int s_print_json(const gguf_file *f, const char *arch, bool arch_given)
{
    json_t *root = json_object(), *config = json_object(), *tok = json_object();
    json_t *tensors = json_array();
    size_t plen = strlen(arch);
    uint64_t tensor_bytes = 0, n_params = 0;

    json_object_set_new(root, "file_bytes", json_integer((json_int_t)f->size));
    json_object_set_new(root, "version", json_integer(f->version));
    json_object_set_new(root, "architecture", arch_given ? json_string(arch) : json_null());
    json_object_set_new(root, "alignment", json_integer((json_int_t)f->alignment));
    json_object_set_new(root, "data_offset", json_integer((json_int_t)f->data_offset));
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kvs[i];
        if (strncmp(kv->key, arch, plen) != 0 || kv->key[plen] != '.')
            continue;
        json_t *j = s_value_json(&kv->value);
        if (j)
            json_object_set_new(config, kv->key + plen + 1, j);
    }
    json_object_set_new(root, "config", config);
    json_object_set_new(root, "vocab_size", json_integer((json_int_t)s_vocab_size(f)));

    char *model = s_string_or_null(f, "tokenizer.ggml.model");
    json_object_set_new(tok, "model", model ? json_string(model) : json_null());
    free(model);
    for (size_t k = 0; k < sizeof s_tokenizer_ids / sizeof s_tokenizer_ids[0]; k++) {
        const gguf_value *v = s_tokenizer_value(f, s_tokenizer_ids[k]);
        json_t *j = v ? s_value_json(v) : NULL;
        json_object_set_new(tok, s_tokenizer_ids[k], j ? j : json_null());
    }
    for (size_t k = 0; k < sizeof s_tokenizer_flags / sizeof s_tokenizer_flags[0]; k++) {
        const gguf_value *v = s_tokenizer_value(f, s_tokenizer_flags[k]);
        json_t *j = v ? s_value_json(v) : NULL;
        json_object_set_new(tok, s_tokenizer_flags[k], j ? j : json_null());
    }
    json_object_set_new(root, "tokenizer", tok);

    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        json_t *shape = json_array();
        for (uint32_t d = 0; d < t->n_dims; d++)
            json_array_append_new(shape, json_integer((json_int_t)t->ne[d]));
        json_array_append_new(tensors, json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", t->name,
                                                 "type", tensor_type_name(t->type), "shape", shape,
                                                 "offset", (json_int_t)t->offset, "bytes",
                                                 (json_int_t)t->n_bytes));
        tensor_bytes += t->n_bytes;
        n_params += s_n_elems(t);
    }
    json_object_set_new(root, "tensors", tensors);
    json_object_set_new(root, "tensor_bytes", json_integer((json_int_t)tensor_bytes));
    json_object_set_new(root, "n_params", json_integer((json_int_t)n_params));

    /* 16 significant digits: enough for every float32 and keeps 1e-05 short. */
    int rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(16));
    fputc('\n', stdout);
    json_decref(root);
    return rc == 0 ? 0 : 1;
}

static void s_print_human(const gguf_file *f, const char *path, const char *arch)
{
    char text[128];
    size_t plen = strlen(arch);
    printf("file:          %s (%" PRIu64 " bytes)\n", path, f->size);
    printf("GGUF version:  %" PRIu32 "\n", f->version);
    printf("architecture:  %s\n", arch);
    char *name = s_string_or_null(f, "general.name");
    if (name)
        printf("name:          %s\n", name);
    free(name);
    printf("alignment:     %" PRIu64 " (tensor data from offset %" PRIu64 ")\n", f->alignment,
           f->data_offset);
    printf("metadata:      %" PRIu64 " keys\n", f->n_kv);

    printf("\nhyperparameters (%s.*):\n", arch);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kvs[i];
        if (strncmp(kv->key, arch, plen) == 0 && kv->key[plen] == '.')
            printf("  %-36s %s\n", kv->key + plen + 1, s_value_text(&kv->value, text, sizeof text));
    }

    printf("\ntokenizer:\n");
    char *model = s_string_or_null(f, "tokenizer.ggml.model");
    printf("  %-36s %s\n", "model", model ? model : "(none)");
    free(model);
    printf("  %-36s %" PRIu64 "\n", "vocab_size", s_vocab_size(f));
    for (size_t k = 0; k < sizeof s_tokenizer_ids / sizeof s_tokenizer_ids[0]; k++) {
        const gguf_value *v = s_tokenizer_value(f, s_tokenizer_ids[k]);
        if (v)
            printf("  %-36s %s\n", s_tokenizer_ids[k], s_value_text(v, text, sizeof text));
    }
    for (size_t k = 0; k < sizeof s_tokenizer_flags / sizeof s_tokenizer_flags[0]; k++) {
        const gguf_value *v = s_tokenizer_value(f, s_tokenizer_flags[k]);
        if (v)
            printf("  %-36s %s\n", s_tokenizer_flags[k], s_value_text(v, text, sizeof text));
    }

    int name_w = 4;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        int len = (int)strlen(f->tensors[i].name);
        name_w = len > name_w ? len : name_w;
    }
    printf("\ntensors (%" PRIu64 "):\n", f->n_tensors);
    if (f->n_tensors)
        printf("  %-*s %-5s %-26s %12s %12s\n", name_w, "name", "type", "shape", "offset", "bytes");
    uint64_t tensor_bytes = 0, n_params = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char shape[96];
        size_t o = 0;
        for (uint32_t d = 0; d < t->n_dims; d++)
            o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%" PRIu64, d ? " x " : "",
                                  t->ne[d]);
        printf("  %-*s %-5s %-26s %12" PRIu64 " %12" PRIu64 "\n", name_w, t->name,
               tensor_type_name(t->type), shape, t->offset, t->n_bytes);
        tensor_bytes += t->n_bytes;
        n_params += s_n_elems(t);
    }
    printf("\ntotal:         %" PRIu64 " tensors, %" PRIu64 " parameters, %" PRIu64
           " bytes of tensor data (%.2f MiB), file %" PRIu64 " bytes\n",
           f->n_tensors, n_params, tensor_bytes, (double)tensor_bytes / (1024.0 * 1024.0), f->size);
}

int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    bool as_json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            s_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = true;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "llorch inspect: unknown option '%s'\n", argv[i]);
            s_usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "llorch inspect: one MODEL at a time ('%s' and '%s' given)\n", path,
                    argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        s_usage(stderr);
        return 2;
    }
    llorch_error err = {{0}};
    gguf_file *f = gguf_open(path, &err);
    if (!f) {
        fprintf(stderr, "llorch inspect: %s\n", err.msg);
        return 1;
    }
    /* Without general.architecture, hyperparameters are looked for under llama.*. */
    char *arch = s_string_or_null(f, "general.architecture");
    const char *arch_name = arch ? arch : "llama";
    int rc = 0;
    if (as_json)
        rc = s_print_json(f, arch_name, arch != NULL);
    else
        s_print_human(f, path, arch_name);
    free(arch);
    gguf_close(&f);
    return rc;
}
