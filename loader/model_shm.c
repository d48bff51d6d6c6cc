/* model_shm.c - validates a GGUF model, digests its tensors and copies them into shared memory. */
#include "loader.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "hugemem.h"
#include "kernels.h"
#include "log.h"
#include "model.h"
#include "proc.h"

/* Models at least this large log progress even without --progress. */
#define LOADER_PROGRESS_BYTES (512ull << 20)
/* Bytes read, then digested or copied, at a time (and between checks for a stop signal). */
#define LOADER_STEP_BYTES (4ull << 20)
/* Segment bytes one thread copies and then collapses onto huge pages (a multiple of
 * 2 MiB). */
#define LOADER_REGION_BYTES (32ull << 20)
#define LOADER_MAX_THREADS 16

/* One pass over all tensors, spread over the CPUs a tensor at a time: each tensor is read
 * from the file in steps, repacked when its layout is not the file's (a step is then whole
 * 16-row groups, which repack on their own), digested (BLAKE2b-256, in order, the bytes as
 * written) and written to its offset in the segment, so the file is read once. The
 * calling thread reports progress once a second. Tensor bytes are read with pread, never
 * through the mapping: a file cut short while loading is a read error, not a SIGBUS.
 * write(2) into the segment, not memcpy into a mapping: no page fault per page, and a
 * full /dev/shm is an error here instead of a SIGBUS. */
typedef struct pass {
    loader_model *lm;
    const gguf_file *f;
    int src;                     /* the GGUF file */
    int fd;                      /* the segment */
    uint8_t *map;                /* the segment mapped, for MADV_COLLAPSE */
    uint64_t buf_bytes;          /* each thread's buffers: LOADER_STEP_BYTES, or one 16-row
                                    group of the widest repacked matrix when larger */
    bool repacking;              /* some tensor is repacked: threads need a second buffer */
    atomic_uint_fast64_t *region_left; /* [n_regions] tensor bytes not yet written */
    uint64_t n_regions;
    atomic_uint_fast64_t next_tensor;
    atomic_uint_fast64_t huge_bytes;  /* bytes collapsed onto 2 MiB pages */
    atomic_bool collapse_off;    /* the kernel refused once: stop asking */
    atomic_uint_fast64_t done_bytes;
    atomic_int running;
    atomic_int read_errno;       /* first failed read (EIO: the file shrank) */
    atomic_int write_errno;      /* first failed write (ENOSPC: /dev/shm full) */
} pass;

static void s_fail(atomic_int *slot, int e)
{
    int zero = 0;
    atomic_compare_exchange_strong(slot, &zero, e ? e : EIO);
}

static uint64_t s_file_offset(const pass *p, uint64_t i)
{
    return (uint64_t)((const uint8_t *)p->f->tensors[i].data - p->f->base);
}

/* The end of the piece of [at, end) that lies in at's region. */
static uint64_t s_region_end(uint64_t at, uint64_t end)
{
    const uint64_t r_end = (at / LOADER_REGION_BYTES + 1) * LOADER_REGION_BYTES;
    return r_end < end ? r_end : end;
}

/* Moves segment region r ([r * LOADER_REGION_BYTES, + LOADER_REGION_BYTES)) onto 2 MiB
 * pages (hugemem_collapse) as soon as all its tensor bytes are written, while its small
 * pages are fresh: the pages it frees are reused by the next region, so the segment
 * never needs twice its size, and on a VM this is much faster than collapsing the
 * finished segment. */
static void s_region_written(pass *p, uint64_t r, uint64_t n)
{
    if (atomic_fetch_sub(&p->region_left[r], n) != n || atomic_load(&p->collapse_off))
        return;
    const uint64_t r0 = r * LOADER_REGION_BYTES;
    const uint64_t r1 = r0 + LOADER_REGION_BYTES < p->lm->segment_bytes ? r0 + LOADER_REGION_BYTES
                                                                        : p->lm->segment_bytes;
    const size_t got = hugemem_collapse(p->map + r0, r1 - r0);
    atomic_fetch_add(&p->huge_bytes, got);
    if (got == 0 && r1 - r0 >= 2 * HUGEMEM_PAGE)
        atomic_store(&p->collapse_off, true); /* this kernel (or shmem_enabled=deny) */
}

/* Writes n bytes of buf at segment offset at, and accounts them to their regions. */
static bool s_write(pass *p, const uint8_t *buf, uint64_t n, uint64_t at)
{
    for (uint64_t put = 0; put < n;) {
        ssize_t w = pwrite(p->fd, buf + put, n - put, (off_t)(at + put));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            s_fail(&p->write_errno, w < 0 ? errno : EIO);
            return false;
        }
        put += (uint64_t)w;
    }
    for (uint64_t lo = at, hi; lo < at + n; lo = hi) {
        hi = s_region_end(lo, at + n);
        s_region_written(p, lo / LOADER_REGION_BYTES, hi - lo);
    }
    return true;
}

/* Bytes of one 16-row group of a repacked matrix; 0 for a tensor in the file's order. */
static uint64_t s_group_bytes(const wire_tensor_info *ti)
{
    return ti->layout == WEIGHT_LAYOUT_ROWS ? 0 : ti->n_bytes / ti->ne[1] * KERNEL_R16_ROWS;
}

/* buf and packed are p->buf_bytes each (packed only when p->repacking). */
static void s_load_tensor(pass *p, uint64_t i, uint8_t *buf, uint8_t *packed)
{
    const wire_tensor_info *ti = &p->lm->tensors[i];
    const uint64_t group = s_group_bytes(ti);
    const uint64_t step = group ? p->buf_bytes / group * group : LOADER_STEP_BYTES;
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, WIRE_DIGEST_BYTES);
    for (uint64_t off = 0; off < ti->n_bytes && !proc_stop_signal(); off += step) {
        const uint64_t n = ti->n_bytes - off < step ? ti->n_bytes - off : step;
        if (proc_pread_all(p->src, buf, n, s_file_offset(p, i) + off) != 0) {
            s_fail(&p->read_errno, errno);
            return;
        }
        const uint8_t *out = buf;
        if (group) {
            kernel_repack_rows((enum weight_layout)ti->layout, buf, packed,
                               (int64_t)(n / group * KERNEL_R16_ROWS), (int64_t)ti->ne[0]);
            out = packed;
        }
        crypto_generichash_update(&st, out, n);
        if (!s_write(p, out, n, ti->offset + off))
            return;
        atomic_fetch_add(&p->done_bytes, n);
    }
    crypto_generichash_final(&st, p->lm->tensors[i].digest, WIRE_DIGEST_BYTES);
}

static void *s_pass_thread(void *arg)
{
    pass *p = arg;
    uint8_t *buf = malloc(p->buf_bytes);
    uint8_t *packed = p->repacking ? malloc(p->buf_bytes) : NULL;
    const bool ready = buf && (packed || !p->repacking);
    if (!ready)
        s_fail(&p->read_errno, ENOMEM);
    while (ready) {
        uint64_t i = atomic_fetch_add(&p->next_tensor, 1);
        if (i >= p->f->n_tensors || proc_stop_signal() || atomic_load(&p->write_errno) ||
            atomic_load(&p->read_errno))
            break;
        s_load_tensor(p, i, buf, packed);
    }
    free(buf);
    free(packed);
    atomic_fetch_sub(&p->running, 1);
    return NULL;
}

/* Counts each region's tensor bytes into p->region_left (allocated here). */
static int s_regions(pass *p)
{
    p->n_regions = (p->lm->segment_bytes + LOADER_REGION_BYTES - 1) / LOADER_REGION_BYTES;
    p->region_left = calloc(p->n_regions ? p->n_regions : 1, sizeof *p->region_left);
    if (!p->region_left)
        return -1;
    for (uint64_t r = 0; r < p->n_regions; r++)
        atomic_init(&p->region_left[r], 0);
    for (uint64_t i = 0; i < p->f->n_tensors; i++) {
        const wire_tensor_info *ti = &p->lm->tensors[i];
        const uint64_t end = ti->offset + ti->n_bytes;
        for (uint64_t lo = ti->offset, hi; lo < end; lo = hi) {
            hi = s_region_end(lo, end);
            atomic_fetch_add(&p->region_left[lo / LOADER_REGION_BYTES], hi - lo);
        }
    }
    return 0;
}

/* Reads, digests and copies every tensor into the segment (fd, mapped at lm->segment). */
static int s_run_pass(loader_model *lm, const gguf_file *f, int fd, bool verbose,
                      llorch_error *err)
{
    pass p = {.lm = lm, .f = f, .fd = fd, .map = (uint8_t *)lm->segment,
              .buf_bytes = LOADER_STEP_BYTES};
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const uint64_t group = s_group_bytes(&lm->tensors[i]);
        p.repacking |= group > 0;
        if (group > p.buf_bytes)
            p.buf_bytes = group;
    }
    atomic_init(&p.huge_bytes, 0);
    atomic_init(&p.collapse_off, false);
    if (s_regions(&p) < 0)
        return llorch_error_set(err, "out of memory for the segment's region table");
    p.src = open(f->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (p.src < 0 || fstat(p.src, &st) != 0 || (uint64_t)st.st_size != f->size) {
        const int e = p.src < 0 ? errno : 0;
        if (p.src >= 0)
            close(p.src);
        free(p.region_left);
        return llorch_error_set(err, "cannot read %s: %s", f->path,
                                e ? strerror(e) : "the file changed since it was opened");
    }
    atomic_init(&p.read_errno, 0);
    atomic_init(&p.write_errno, 0);
    atomic_init(&p.next_tensor, 0);
    atomic_init(&p.done_bytes, 0);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int n_threads = cpus < 1 ? 1 : cpus > LOADER_MAX_THREADS ? LOADER_MAX_THREADS : (int)cpus;
    atomic_init(&p.running, n_threads);
    pthread_t threads[LOADER_MAX_THREADS];
    int started = 0;
    for (; started < n_threads; started++)
        if (pthread_create(&threads[started], NULL, s_pass_thread, &p) != 0)
            break;
    if (started == 0) {
        atomic_store(&p.running, 1);
        s_pass_thread(&p);
    } else {
        atomic_fetch_sub(&p.running, n_threads - started);
    }
    const int64_t t0 = proc_now_ms();
    int64_t last = t0;
    while (atomic_load(&p.running) > 0) {
        usleep(20000);
        const int64_t now = proc_now_ms();
        if (!verbose || now - last < 1000)
            continue;
        last = now;
        const uint64_t done = atomic_load(&p.done_bytes);
        log_info("copy: %3d%% %.1f of %.1f MB, %.0f MB/s",
                 (int)(100.0 * done / (double)(lm->data_bytes ? lm->data_bytes : 1)), done / 1e6,
                 lm->data_bytes / 1e6, done / 1e6 / ((now - t0) / 1000.0));
    }
    for (int k = 0; k < started; k++)
        pthread_join(threads[k], NULL);
    close(p.src);
    free(p.region_left);
    if (proc_stop_signal())
        return llorch_error_set(err, "interrupted by signal %d while copying the tensors",
                                proc_stop_signal());
    if (atomic_load(&p.read_errno))
        return llorch_error_set(err, "cannot read the tensors of %s: %s (did the file change "
                                "while loading?)", f->path, strerror(atomic_load(&p.read_errno)));
    if (atomic_load(&p.write_errno))
        return llorch_error_set(err, "cannot write %.1f MB into segment %s: %s (is /dev/shm "
                                "large enough? df -h /dev/shm)", lm->segment_bytes / 1e6,
                                lm->segment_name, strerror(atomic_load(&p.write_errno)));
    if (verbose) {
        const double secs = (proc_now_ms() - t0) / 1000.0;
        log_info("copy: 100%% %.1f MB read, digested and copied in %.1f s, %.0f MB/s, "
                 "%d threads", lm->data_bytes / 1e6, secs,
                 secs > 0 ? lm->data_bytes / 1e6 / secs : 0.0, started ? started : 1);
    }
    const uint64_t huge = atomic_load(&p.huge_bytes);
    if (huge > 0)
        log_info("segment %s: %.1f of %.1f MB on 2 MiB pages", lm->segment_name, huge / 1e6,
                 lm->segment_bytes / 1e6);
    else if (lm->segment_bytes >= 2 * HUGEMEM_PAGE)
        log_info("segment %s stays on 4 KiB pages: the kernel does not collapse shared "
                 "memory (MADV_COLLAPSE needs Linux 6.1)", lm->segment_name);
    return 0;
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

/* The model id: BLAKE2b over the tensors' digests (after the copy has made them). */
static void s_model_id(loader_model *lm, const gguf_file *f)
{
    crypto_generichash_state all;
    crypto_generichash_init(&all, NULL, 0, WIRE_DIGEST_BYTES);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        crypto_generichash_update(&all, lm->tensors[i].digest, WIRE_DIGEST_BYTES);
    uint8_t id[WIRE_DIGEST_BYTES];
    crypto_generichash_final(&all, id, sizeof id);
    s_hex(id, 8, lm->model_id);
}

/* A short tag for the segment's name, known before the tensors are read: BLAKE2b over the
 * file size and the tensor table (names, types, shapes, offsets). */
static void s_layout_tag(const gguf_file *f, char out[17])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 8);
    crypto_generichash_update(&st, (const uint8_t *)&f->size, sizeof f->size);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        const uint64_t fields[2] = {(uint64_t)t->type, t->offset};
        crypto_generichash_update(&st, (const uint8_t *)t->name, strlen(t->name));
        crypto_generichash_update(&st, (const uint8_t *)fields, sizeof fields);
        crypto_generichash_update(&st, (const uint8_t *)t->ne, sizeof t->ne);
    }
    uint8_t tag[8];
    crypto_generichash_final(&st, tag, sizeof tag);
    s_hex(tag, sizeof tag, out);
}

/* Creates the segment (exclusively) and copies the tensors to their offsets, digesting
 * them on the way. */
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
        char tag[17];
        s_layout_tag(f, tag);
        snprintf(lm->segment_name, sizeof lm->segment_name, "/llorch-%.8s-%ld", tag,
                 (long)getpid());
    }
    int fd = shm_open(lm->segment_name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0)
        return llorch_error_set(err, "cannot create shared memory segment %s: %s%s",
                                lm->segment_name, strerror(errno),
                                errno == EEXIST ? " (another loader uses the name, or a "
                                                  "stale one: remove /dev/shm" : "");
    lm->segment_owned = true;
    if (ftruncate(fd, (off_t)lm->segment_bytes) != 0) {
        int e = errno;
        close(fd);
        return llorch_error_set(err, "cannot size segment %s to %" PRIu64 " bytes: %s",
                                lm->segment_name, lm->segment_bytes, strerror(e));
    }
    /* Mapped read-only (the copy writes with pwrite; the loader reads the segment to
     * serve chunks), 2 MiB-aligned for the collapse. */
    void *map = hugemem_map(fd, lm->segment_bytes, PROT_READ);
    if (!map) {
        const int e = errno;
        close(fd);
        return llorch_error_set(err, "cannot map segment %s: %s", lm->segment_name,
                                strerror(e));
    }
    lm->segment = map;
    const int rc = s_run_pass(lm, f, fd, verbose, err);
    close(fd);
    return rc;
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
    uint32_t n_repacked = 0;
    enum weight_layout repacked_to = WEIGHT_LAYOUT_ROWS;
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
        const enum weight_layout layout =
            o->layout_rows || t->n_dims != 2
                ? WEIGHT_LAYOUT_ROWS
                : kernel_preferred_layout(t->type, (int64_t)t->ne[1], (int64_t)t->ne[0]);
        ti->layout = (uint32_t)layout;
        if (layout != WEIGHT_LAYOUT_ROWS) {
            n_repacked++;
            repacked_to = layout;
        }
        end = ti->offset + ti->n_bytes;
        lm->data_bytes += ti->n_bytes;
    }
    lm->segment_bytes = (end + page - 1) / page * page;
    const bool verbose = o->progress || lm->segment_bytes >= LOADER_PROGRESS_BYTES;
    log_info("model %s: %u layers, dim %u, vocab %u, %" PRIu64 " tensors, %.1f MB",
             o->model_path, cfg.n_layers, cfg.dim, cfg.vocab_size, f->n_tensors,
             lm->segment_bytes / 1e6);

    if (s_segment(lm, f, o, verbose, err) < 0)
        goto fail;
    if (n_repacked)
        log_info("repacked %u Q8_0 matrices into %s for the %s kernels", n_repacked,
                 weight_layout_name(repacked_to), kernel_isa_name(kernel_isa_active()));
    else if (o->layout_rows)
        log_info("every tensor keeps the GGUF row order (--layout rows)");
    s_model_id(lm, f);

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
        hugemem_unmap((void *)lm->segment, lm->segment_bytes);
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
