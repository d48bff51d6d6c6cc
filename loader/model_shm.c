/* model_shm.c - validates a GGUF model, digests its tensors and copies them into shared memory. */
#include "loader.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "log.h"
#include "model.h"
#include "proc.h"

/* Models at least this large log progress even without --progress. */
#define LOADER_PROGRESS_BYTES (512ull << 20)
/* Bytes digested or copied between progress checks. */
#define LOADER_STEP_BYTES (64ull << 20)

typedef struct progress {
    const char *phase;  /* "digest", "copy" */
    uint64_t total_bytes;
    uint64_t done_bytes;
    int64_t start_ms;
    int64_t last_ms;
    int last_pct;
    bool on;
} progress;

static void s_progress_start(progress *p, const char *phase, uint64_t total, bool on)
{
    *p = (progress){.phase = phase, .total_bytes = total, .on = on, .last_pct = -1};
    p->start_ms = p->last_ms = proc_now_ms();
}

/* Logs a line every 10% (and at least once a second when on) with the throughput. */
static void s_progress_add(progress *p, uint64_t bytes)
{
    p->done_bytes += bytes;
    if (!p->on || !p->total_bytes)
        return;
    const int64_t now = proc_now_ms();
    const int pct = (int)(100.0 * (double)p->done_bytes / (double)p->total_bytes);
    if (pct / 10 == p->last_pct / 10 && now - p->last_ms < 1000 && p->done_bytes < p->total_bytes)
        return;
    const double secs = (double)(now - p->start_ms) / 1000.0;
    log_info("%s: %3d%% %.1f of %.1f MB, %.0f MB/s", p->phase, pct, p->done_bytes / 1e6,
             p->total_bytes / 1e6, secs > 0 ? p->done_bytes / 1e6 / secs : 0.0);
    p->last_pct = pct;
    p->last_ms = now;
}

static void s_hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = 0;
}

static int s_wire_config(const model_config *c, wire_model_config *w, llorch_error *err)
{
    /* The wire carries no head size: a worker derives it as n_embd / n_heads. */
    if (c->head_dim * c->n_heads != c->dim)
        return llorch_error_set(err, "attention.key_length %u is not embedding_length / "
                                     "head_count (%u / %u): llorch's pipeline does not serve "
                                     "such models yet", c->head_dim, c->dim, c->n_heads);
    *w = (wire_model_config){.arch = "llama", .n_vocab = c->vocab_size, .n_embd = c->dim,
                             .n_layers = c->n_layers, .n_heads = c->n_heads,
                             .n_kv_heads = c->n_kv_heads, .n_ff = c->ffn_dim,
                             .n_ctx_train = c->context_length, .n_rot = c->rope_dim,
                             .rope_freq_base = c->rope_freq_base, .rms_norm_eps = c->norm_eps};
    return 0;
}

/* The manifest's tokenizer, from the tokenizer built out of the file. */
static int s_tokenizer(loader_model *lm, const model_config *c, llorch_error *err)
{
    const tokenizer *t = lm->tok;
    if (t->n_vocab != c->vocab_size)
        return llorch_error_set(err, "the vocabulary has %u tokens but the model %u",
                                t->n_vocab, c->vocab_size);
    lm->pieces = calloc(t->n_vocab, sizeof *lm->pieces);
    lm->piece_lens = calloc(t->n_vocab, sizeof *lm->piece_lens);
    lm->types = calloc(t->n_vocab, sizeof *lm->types);
    if (!lm->pieces || !lm->piece_lens || !lm->types)
        return llorch_error_set(err, "out of memory for the vocabulary");
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        size_t len;
        lm->pieces[i] = tokenizer_piece(t, (int32_t)i, &len);
        lm->piece_lens[i] = (uint32_t)len;
        lm->types[i] = t->types[i];
    }
    lm->manifest.tokenizer = (wire_tokenizer){
        .model = "llama", .n_tokens = t->n_vocab, .pieces = lm->pieces,
        .piece_lens = lm->piece_lens, .scores = t->scores, .types = lm->types,
        .bos_id = t->bos_id, .eos_id = t->eos_id, .unk_id = t->unk_id, .add_bos = t->add_bos,
        .add_eos = t->add_eos, .add_space_prefix = t->add_space_prefix};
    return 0;
}

/* Digests every tensor of f into lm->tensors[i].digest, and the model id over them. */
static int s_digest(loader_model *lm, const gguf_file *f, bool verbose, llorch_error *err)
{
    progress p;
    s_progress_start(&p, "digest", lm->data_bytes, verbose);
    crypto_generichash_state all;
    crypto_generichash_init(&all, NULL, 0, WIRE_DIGEST_BYTES);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        crypto_generichash_state st;
        crypto_generichash_init(&st, NULL, 0, WIRE_DIGEST_BYTES);
        for (uint64_t off = 0; off < t->n_bytes; off += LOADER_STEP_BYTES) {
            uint64_t n = t->n_bytes - off < LOADER_STEP_BYTES ? t->n_bytes - off
                                                               : LOADER_STEP_BYTES;
            crypto_generichash_update(&st, (const uint8_t *)t->data + off, n);
            s_progress_add(&p, n);
            if (proc_stop_signal())
                return llorch_error_set(err, "interrupted by signal %d while digesting",
                                        proc_stop_signal());
        }
        crypto_generichash_final(&st, lm->tensors[i].digest, WIRE_DIGEST_BYTES);
        crypto_generichash_update(&all, lm->tensors[i].digest, WIRE_DIGEST_BYTES);
    }
    uint8_t id[WIRE_DIGEST_BYTES];
    crypto_generichash_final(&all, id, sizeof id);
    s_hex(id, 8, lm->model_id);
    return 0;
}

/* Creates the segment (exclusively) and copies the tensors to their offsets. */
static int s_segment(loader_model *lm, const gguf_file *f, const loader_options *o,
                     bool verbose, llorch_error *err)
{
    if (o->shm_name) {
        if (o->shm_name[0] != '/' || strchr(o->shm_name + 1, '/') || strlen(o->shm_name) < 2 ||
            strlen(o->shm_name) >= sizeof lm->segment_name)
            return llorch_error_set(err, "--shm-name '%s': give one name starting with '/', "
                                         "e.g. /llorch-7b", o->shm_name);
        snprintf(lm->segment_name, sizeof lm->segment_name, "%s", o->shm_name);
    } else {
        snprintf(lm->segment_name, sizeof lm->segment_name, "/llorch-%.8s-%ld", lm->model_id,
                 (long)getpid());
    }
    int fd = shm_open(lm->segment_name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0)
        return llorch_error_set(err, "cannot create shared memory segment %s: %s%s",
                                lm->segment_name, strerror(errno),
                                errno == EEXIST ? " (another loader uses the name, or a "
                                                  "stale one: remove /dev/shm" : "");
    lm->segment_owned = true;
    /* Reserve the pages now: a full /dev/shm is an error here, not a SIGBUS later. */
    int rc = posix_fallocate(fd, 0, (off_t)lm->segment_bytes);
    if (rc != 0) {
        close(fd);
        return llorch_error_set(err, "cannot reserve %" PRIu64 " bytes in %s: %s (is /dev/shm "
                                     "large enough?)", lm->segment_bytes, lm->segment_name,
                                strerror(rc));
    }
    void *map = mmap(NULL, lm->segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return llorch_error_set(err, "cannot map segment %s: %s", lm->segment_name,
                                strerror(errno));
    lm->segment = map;
    progress p;
    s_progress_start(&p, "copy", lm->data_bytes, verbose);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        for (uint64_t off = 0; off < t->n_bytes; off += LOADER_STEP_BYTES) {
            uint64_t n = t->n_bytes - off < LOADER_STEP_BYTES ? t->n_bytes - off
                                                               : LOADER_STEP_BYTES;
            memcpy(lm->segment + lm->tensors[i].offset + off, (const uint8_t *)t->data + off, n);
            s_progress_add(&p, n);
            if (proc_stop_signal())
                return llorch_error_set(err, "interrupted by signal %d while copying",
                                        proc_stop_signal());
        }
    }
    return 0;
}

loader_model *loader_model_load(const loader_options *o, llorch_error *err)
{
    const int64_t t0 = proc_now_ms();
    if (sodium_init() < 0) {
        llorch_error_set(err, "libsodium cannot initialise");
        return NULL;
    }
    loader_model *lm = calloc(1, sizeof *lm);
    if (!lm) {
        llorch_error_set(err, "out of memory");
        return NULL;
    }
    gguf_file *f = gguf_open(o->model_path, err);
    if (!f)
        goto fail;
    model_config cfg;
    if (model_config_from_gguf(f, &cfg, err) < 0)
        goto fail_named;
    /* Every layer's tensors present with the shapes the config implies. */
    model_weights w = {0};
    if (model_weights_bind(&w, &cfg, f->tensors, f->n_tensors, 0, cfg.n_layers, err) < 0)
        goto fail_named;
    model_weights_free(&w);
    if (s_wire_config(&cfg, &lm->manifest.config, err) < 0)
        goto fail_named;
    lm->tok = tokenizer_from_gguf(f, err);
    if (!lm->tok || s_tokenizer(lm, &cfg, err) < 0)
        goto fail_named;
    if (f->n_tensors > WIRE_MAX_TENSORS) {
        llorch_error_set(err, "%" PRIu64 " tensors; the manifest holds at most %u",
                         f->n_tensors, WIRE_MAX_TENSORS);
        goto fail_named;
    }
    if (proc_host_id(lm->host_id, sizeof lm->host_id, err) < 0)
        goto fail;

    /* Layout: every tensor at a page boundary, in file order. */
    const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    lm->tensors = calloc(f->n_tensors, sizeof *lm->tensors);
    lm->names = calloc(f->n_tensors, sizeof *lm->names);
    if (!lm->tensors || !lm->names) {
        llorch_error_set(err, "out of memory for the tensor table");
        goto fail;
    }
    uint64_t end = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        wire_tensor_info *ti = &lm->tensors[i];
        snprintf(lm->names[i], sizeof lm->names[i], "%s", t->name);
        ti->name = lm->names[i];
        ti->type = (uint32_t)t->type;
        ti->n_dims = t->n_dims;
        memcpy(ti->ne, t->ne, sizeof ti->ne);
        ti->offset = (end + page - 1) / page * page;
        ti->n_bytes = t->n_bytes;
        end = ti->offset + ti->n_bytes;
        lm->data_bytes += ti->n_bytes;
    }
    lm->segment_bytes = (end + page - 1) / page * page;
    const bool verbose = o->progress || lm->segment_bytes >= LOADER_PROGRESS_BYTES;
    log_info("model %s: %u layers, dim %u, vocab %u, %" PRIu64 " tensors, %.1f MB",
             o->model_path, cfg.n_layers, cfg.dim, cfg.vocab_size, f->n_tensors,
             lm->segment_bytes / 1e6);

    if (s_digest(lm, f, verbose, err) < 0 || s_segment(lm, f, o, verbose, err) < 0)
        goto fail;

    lm->manifest.model_id = lm->model_id;
    lm->manifest.host_id = lm->host_id;
    lm->manifest.segment_name = lm->segment_name;
    lm->manifest.segment_bytes = lm->segment_bytes;
    lm->manifest.n_tensors = (uint32_t)f->n_tensors;
    lm->manifest.tensors = lm->tensors;
    wire_message m = {.type = WIRE_MANIFEST, .manifest = lm->manifest};
    if (wire_encode(&m, &lm->manifest_msg, err) < 0) {
        llorch_error_prefix(err, "manifest");
        goto fail;
    }
    gguf_close(&f);
    lm->load_ms = (double)(proc_now_ms() - t0);
    return lm;

fail_named:
    llorch_error_prefix(err, "%s", o->model_path);
fail:
    gguf_close(&f);
    loader_model_free(&lm);
    return NULL;
}

void loader_model_free(loader_model **plm)
{
    if (!plm || !*plm)
        return;
    loader_model *lm = *plm;
    if (lm->segment)
        munmap(lm->segment, lm->segment_bytes);
    if (lm->segment_owned && shm_unlink(lm->segment_name) != 0)
        log_warn("cannot remove segment %s: %s", lm->segment_name, strerror(errno));
    wire_msg_free(&lm->manifest_msg);
    tokenizer_free(&lm->tok);
    free(lm->pieces);
    free(lm->piece_lens);
    free(lm->types);
    free(lm->names);
    free(lm->tensors);
    free(lm);
    *plm = NULL;
}
