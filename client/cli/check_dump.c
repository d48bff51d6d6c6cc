/* check_dump.c - runs llama-dump (llama.cpp through cb_eval) and reads its tensors for `llorch check`. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static bool s_executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int dump_find(char *path, size_t cap, llorch_error *err)
{
    const char *env = getenv("LLORCH_LLAMA_DUMP");
    if (env && *env) {
        if (s_executable(env)) {
            snprintf(path, cap, "%s", env);
            return 1;
        }
        llorch_error_set(err, "LLORCH_LLAMA_DUMP=%s is not an executable file", env);
        return 0;
    }
    if (s_executable("build/ref/llama-dump")) {
        snprintf(path, cap, "build/ref/llama-dump");
        return 1;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            char candidate[PATH_MAX + 32];
            snprintf(candidate, sizeof candidate, "%s/../ref/llama-dump", self);
            if (s_executable(candidate)) {
                snprintf(path, cap, "%s", candidate);
                return 1;
            }
        }
    }
    llorch_error_set(err, "no llama-dump found ($LLORCH_LLAMA_DUMP unset; no build/ref/llama-dump here "
                          "nor beside the llorch binary; tests/reference/build_dump.sh builds it)");
    return 0;
}

/* The last non-empty line of a file, for error messages. */
static void s_last_line(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n)
            snprintf(out, cap, "%s", line);
    }
    fclose(f);
}

int dump_run(const char *bin, const char *model_path, const int32_t *tokens, int n_tokens,
             int threads, const char *match, const char *dir, llorch_error *err)
{
    size_t csv_cap = (size_t)n_tokens * 12 + 1;
    char *csv = malloc(csv_cap);
    if (!csv)
        return llorch_error_set(err, "out of memory");
    size_t off = 0;
    for (int i = 0; i < n_tokens; i++)
        off += (size_t)snprintf(csv + off, csv_cap - off, "%s%d", i ? "," : "", tokens[i]);
    char threads_s[16];
    snprintf(threads_s, sizeof threads_s, "%d", threads);
    const char *argv[16];
    int argc = 0;
    argv[argc++] = bin;
    argv[argc++] = "-m";
    argv[argc++] = model_path;
    argv[argc++] = "-t";
    argv[argc++] = csv;
    argv[argc++] = "-o";
    argv[argc++] = dir;
    argv[argc++] = "--kv";
    argv[argc++] = "f32";
    argv[argc++] = "--threads";
    argv[argc++] = threads_s;
    if (match) {
        argv[argc++] = "--match";
        argv[argc++] = match;
    }
    argv[argc] = NULL;

    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        free(csv);
        return llorch_error_set(err, "cannot create %s: %s", dir, strerror(errno));
    }
    char log_path[PATH_MAX];
    snprintf(log_path, sizeof log_path, "%s/llama-dump.log", dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        free(csv);
        return llorch_error_set(err, "cannot start %s: %s", bin, strerror(errno));
    }
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        execv(bin, (char *const *)argv);
        fprintf(stderr, "cannot run %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    free(csv);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return llorch_error_set(err, "waiting for %s: %s", bin, strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char last[512];
        s_last_line(log_path, last, sizeof last);
        return llorch_error_set(err, "%s failed (%s %d): %s (log: %s)", bin,
                                WIFEXITED(status) ? "exit status" : "signal",
                                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                                last[0] ? last : "no message", log_path);
    }
    return 0;
}

/* Reads n floats from dir/file into doubles. */
static int s_read_floats(const char *dir, const char *file, double *out, size_t n, llorch_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f)
        return llorch_error_set(err, "cannot open %s: %s", path, strerror(errno));
    float buf[1024];
    size_t done = 0;
    while (done < n) {
        size_t want = n - done < 1024 ? n - done : 1024;
        size_t got = fread(buf, sizeof(float), want, f);
        for (size_t i = 0; i < got; i++)
            out[done + i] = buf[i];
        done += got;
        if (got < want)
            break;
    }
    bool extra = fgetc(f) != EOF;
    fclose(f);
    if (done != n || extra)
        return llorch_error_set(err, "%s does not hold %zu float32 values", path, n);
    return 0;
}

/* The index entry called name made by op (NULL: any op), or NULL. */
static json_t *s_entry(json_t *tensors, const char *name, const char *op)
{
    size_t i;
    json_t *e;
    json_array_foreach(tensors, i, e) {
        const char *n = json_string_value(json_object_get(e, "name"));
        const char *o = json_string_value(json_object_get(e, "op"));
        if (n && !strcmp(n, name) && (!op || (o && !strcmp(o, op))))
            return e;
    }
    return NULL;
}

/* Where a llorch slot comes from in llama.cpp's graph, and the shape it must have
 * (ne0..ne2; for kq and kq_softmax ne0 is the padded KV cells, checked as >= T). */
typedef struct dump_source {
    enum check_slot slot;
    const char *name;
    const char *op;
} dump_source;

static const dump_source s_sources[] = {
    {CHECK_ATTN_NORM, "attn_norm-0", "MUL"},
    {CHECK_Q, "Qcur-0", "RESHAPE"},
    {CHECK_K, "Kcur-0", "RESHAPE"},
    {CHECK_V, "Vcur-0", "RESHAPE"},
    {CHECK_Q_ROPE, "Qcur-0", "ROPE"},
    {CHECK_K_ROPE, "Kcur-0", "ROPE"},
    {CHECK_KQ, "kq-0", "MUL_MAT"},
    {CHECK_KQ_SOFTMAX, "kq_soft_max-0", "SOFT_MAX"},
    {CHECK_ATTN_OUT, "kqv_out-0", "CONT"},
    {CHECK_ATTN_PROJ, "attn_out-0", "MUL_MAT"},
    {CHECK_FFN_OUT, "ffn_out-0", "MUL_MAT"},
    {CHECK_L_OUT, "l_out-0", "ADD"},
};

/* "attn_norm-0 (MUL)" for the bundle: which llama.cpp tensor a slot is compared with. */
const char *dump_source_name(enum check_slot slot)
{
    static char buf[CHECK_SLOT_COUNT][48];
    for (size_t i = 0; i < sizeof s_sources / sizeof s_sources[0]; i++)
        if (s_sources[i].slot == slot) {
            snprintf(buf[slot], sizeof buf[slot], "%s (%s)", s_sources[i].name, s_sources[i].op);
            return buf[slot];
        }
    return "?";
}

/* Loads one slot from its graph tensor. The attention tensors are [cells, T, heads]
 * with cells >= T (the cache is padded): the first T cells are kept. */
static int s_load_slot(const char *dir, json_t *tensors, const model_config *cfg, const dump_source *src,
                       int64_t T, check_tensor *out, llorch_error *err)
{
    json_t *e = s_entry(tensors, src->name, src->op);
    const char *file = e ? json_string_value(json_object_get(e, "file")) : NULL;
    if (!e || !file)
        return llorch_error_set(err, "llama-dump wrote no %s (%s) in %s", src->name, src->op, dir);
    json_t *jne = json_object_get(e, "ne");
    int64_t ne[4], want[4];
    for (int i = 0; i < 4; i++)
        ne[i] = json_integer_value(json_array_get(jne, (size_t)i));
    check_expected_shape(cfg, src->slot, T, want);
    bool attn = src->slot == CHECK_KQ || src->slot == CHECK_KQ_SOFTMAX;
    bool ok = (attn ? ne[0] >= T : ne[0] == want[0]) && ne[1] == want[1] && ne[2] == want[2] && ne[3] == 1;
    if (!ok)
        return llorch_error_set(err, "llama.cpp's %s (%s) is [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld]",
                                src->name, src->op, (long long)ne[0], (long long)ne[1], (long long)ne[2],
                                (long long)ne[3], (long long)want[0], (long long)want[1], (long long)want[2]);
    size_t n = (size_t)(ne[0] * ne[1] * ne[2]);
    double *raw = malloc(n * sizeof *raw);
    if (!raw)
        return llorch_error_set(err, "out of memory");
    if (s_read_floats(dir, file, raw, n, err) != 0 ||
        check_tensor_alloc(out, want[0], want[1], want[2], 1, err) != 0) {
        free(raw);
        return -1;
    }
    for (int64_t r = 0; r < want[1] * want[2]; r++) /* rows of ne0 values, first want[0] kept */
        memcpy(out->data + r * want[0], raw + r * ne[0], (size_t)want[0] * sizeof *raw);
    free(raw);
    return 0;
}

int dump_load(const char *dir, const model_config *cfg, int n_prompt, bool with_layer0,
              check_trace *out, llorch_error *err)
{
    memset(out, 0, sizeof *out);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/index.json", dir);
    json_error_t jerr;
    json_t *index = json_load_file(path, 0, &jerr);
    if (!index)
        return llorch_error_set(err, "cannot read %s: %s (line %d)", path, jerr.text, jerr.line);
    int rc = -1;
    json_t *tensors = json_object_get(index, "tensors");
    json_int_t n_tokens = json_integer_value(json_object_get(index, "n_tokens"));
    json_int_t n_vocab = json_integer_value(json_object_get(index, "n_vocab"));
    if (!json_is_array(tensors) || n_tokens < n_prompt || n_vocab != (json_int_t)cfg->vocab_size) {
        llorch_error_set(err, "%s: %lld tokens and a vocabulary of %lld, expected at least %d and %u", path,
                         (long long)n_tokens, (long long)n_vocab, n_prompt, cfg->vocab_size);
        goto done;
    }
    out->n_prompt = n_prompt;
    out->n_tokens = (int)n_tokens;
    out->n_vocab = (int)n_vocab;
    out->logits = malloc((size_t)n_tokens * (size_t)n_vocab * sizeof *out->logits);
    if (!out->logits) {
        llorch_error_set(err, "out of memory for llama.cpp's logits");
        goto done;
    }
    if (s_read_floats(dir, "logits.bin", out->logits, (size_t)n_tokens * (size_t)n_vocab, err) != 0)
        goto done;
    if (with_layer0)
        for (size_t i = 0; i < sizeof s_sources / sizeof s_sources[0]; i++)
            if (s_load_slot(dir, tensors, cfg, &s_sources[i], n_prompt, &out->layer0[s_sources[i].slot], err))
                goto done;
    rc = 0;
done:
    json_decref(index);
    if (rc != 0)
        check_trace_free(out);
    return rc;
}

void dump_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[PATH_MAX];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}
