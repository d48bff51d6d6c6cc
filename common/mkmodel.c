/* mkmodel.c - writes random-weight Llama GGUF models, fast and deterministically. */
#include "mkmodel.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp16.h"
#include "gguf_writer.h"
#include "rng.h"

#define CHUNK_BYTES (4u << 20) /* unit of work handed to a generator thread */
#define MAX_DIM (1u << 20)
#define MAX_THREADS 64

/* ---- the built-in vocabulary ---------------------------------------------------- */

/* Token types as llama.cpp numbers them. */
enum { TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_BYTE = 6 };

#define SPACE_MARK "\xe2\x96\x81" /* U+2581, SentencePiece's word-start marker */

static const char *const s_words[] = {
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on",
    "are", "with", "as", "I", "his", "they", "be", "at", "one", "have", "this", "from", "or",
    "had", "by", "not", "word", "but", "what", "some", "we", "can", "out", "other", "were",
    "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she", "which",
    "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write",
    "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two",
    "has", "look", "more", "day", "could", "go", "come", "did", "number", "sound", "no",
    "most", "people", "my", "over", "know", "water", "than", "call", "first", "who", "may",
    "down", "side", "been", "now", "find", "any", "new", "work", "part", "take", "get",
    "place", "made", "live", "where", "after", "back", "little", "only", "round", "man",
    "year", "came", "show", "every", "good", "me", "give", "our", "under", "name", "very",
    "through", "just", "form", "sentence", "great", "think", "say", "help", "low", "line",
    "differ", "turn", "cause", "much", "mean", "before", "move", "right", "boy", "old",
    "too", "same", "tell", "does", "set", "three", "want", "air", "well", "also", "play",
    "small", "end", "put", "home", "read", "hand", "port", "large", "spell", "add", "even",
    "land", "here", "must", "big", "high", "such", "follow", "act", "why", "ask", "men",
    "change", "went", "light", "kind", "off", "need", "house", "picture", "try", "us",
    "again", "animal", "point", "mother", "world", "near", "build", "self", "earth",
    "father", "head", "stand", "own", "page", "should", "country", "found", "answer",
    "school", "grow", "study", "still", "learn", "plant", "cover", "food", "sun", "four",
    "between", "state", "keep", "eye", "never", "last", "let", "thought", "city", "tree",
    "cross", "farm", "hard", "start", "might", "story", "saw", "far", "sea", "draw", "left",
    "late", "run", "while", "press", "close", "night", "real", "life", "few", "north",
    "open", "seem", "together", "next", "white", "children", "begin", "got", "walk",
    "example", "ease", "paper", "group", "always", "music", "those", "both", "mark",
    "often", "letter", "until", "mile", "river", "car", "feet", "care", "second", "book",
    "carry", "took", "science", "eat", "room", "friend", "began", "idea", "fish",
    "mountain", "stop", "once", "base", "hear", "horse", "cut", "sure", "watch", "color",
    "face", "wood", "main", "enough", "plain", "girl", "usual", "young", "ready", "above",
    "ever", "red", "list", "though", "feel", "talk", "bird", "soon", "body", "dog",
    "family", "direct", "pose", "leave", "song", "measure", "door", "product", "black",
    "short", "numeral", "class", "wind", "question", "happen", "complete", "ship", "area",
    "half", "rock", "order", "fire", "south", "problem", "piece", "told", "knew", "pass",
    "since", "top", "whole", "king", "space", "heard", "best", "hour", "better", "true",
    "during", "hundred", "five", "remember", "step", "early", "hold", "west", "ground",
    "interest", "reach", "fast", "verb", "sing", "listen", "six", "table", "travel",
    "less", "morning", "ten", "simple", "several", "toward", "war", "lay", "against",
    "pattern", "slow", "center", "love", "person", "money", "serve", "appear", "road",
    "map", "rain", "rule", "govern", "pull", "cold", "notice", "voice", "unit", "power",
    "town", "fine", "certain", "fly", "fall", "lead", "cry", "dark", "machine", "note",
    "wait", "plan", "figure", "star", "box", "noun", "field", "rest", "correct", "able",
    "pound", "done", "beauty", "drive", "stood", "contain", "front", "teach", "week",
    "final", "gave", "green", "oh", "quick", "develop", "ocean", "warm", "free", "minute",
    "strong", "special", "mind", "behind", "clear", "tail", "produce", "fact", "street",
    "inch", "multiply", "nothing", "course", "stay", "wheel", "full", "force", "blue",
    "object", "decide", "surface", "deep", "moon", "island", "foot", "system", "busy",
    "test", "record", "boat", "common", "gold", "possible", "plane", "dry", "wonder",
    "laugh", "thousand", "ago", "ran", "check", "game", "shape", "yes", "hot", "miss",
    "brought", "heat", "snow", "bed", "bring", "sit", "perhaps", "fill", "east", "weight",
    "language", "among", "Once", "upon", "The", "He", "She", "It", "They", "One", "day",
    "happy", "play", "park", "ball", "cat", "Lily", "Tom", "mom", "dad", "sad", "smiled",
    "named", "wanted", "loved", "saw", "went", "big", "nice", "fun", "toy",
};

/* Word endings, added without the word-start marker. */
static const char *const s_suffixes[] = {
    "s", "es", "ed", "ing", "er", "est", "ly", "tion", "ment", "ness", "ful", "able", "'s",
    "n't", "'t", "'re", "'ll", "'ve",
};

static const char s_chars[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()";

typedef struct vocab {
    char **tokens; /* (n) NUL-terminated UTF-8 pieces */
    float *scores; /* (n) SentencePiece log-probability-like scores */
    int32_t *types;
    uint32_t n, cap;
    uint32_t *slots; /* open-addressed set of token index + 1 (0 = empty), for dedup */
    uint32_t n_slots;
} vocab;

static uint64_t s_hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/* Adds a piece unless present or the vocabulary is full. Returns -1 only when out of
 * memory. */
static int s_vocab_add(vocab *v, const char *piece, int32_t type)
{
    if (v->n >= v->cap)
        return 0;
    uint32_t mask = v->n_slots - 1;
    uint32_t i = (uint32_t)s_hash_str(piece) & mask;
    for (; v->slots[i]; i = (i + 1) & mask)
        if (!strcmp(v->tokens[v->slots[i] - 1], piece))
            return 0;
    char *copy = strdup(piece);
    if (!copy)
        return -1;
    v->tokens[v->n] = copy;
    v->types[v->n] = type;
    /* Specials and bytes score 0 as in Llama's vocabulary; pieces get decreasing
     * scores so that earlier (more common) pieces win merges. */
    v->scores[v->n] = type == TOKEN_NORMAL ? -(float)v->n : 0.0f;
    v->n++;
    v->slots[i] = v->n;
    return 0;
}

/* Adds the word-start marker + every prefix of word (so SentencePiece merges can
 * build the whole word pair by pair), then the word itself. */
static int s_vocab_add_prefixes(vocab *v, const char *lead, const char *word)
{
    char piece[64];
    size_t lead_len = strlen(lead);
    for (size_t k = 1; k <= strlen(word) && lead_len + k < sizeof piece; k++) {
        memcpy(piece, lead, lead_len);
        memcpy(piece + lead_len, word, k);
        piece[lead_len + k] = '\0';
        if (s_vocab_add(v, piece, TOKEN_NORMAL))
            return -1;
    }
    return 0;
}

static void s_vocab_free(vocab *v)
{
    for (uint32_t i = 0; i < v->n; i++)
        free(v->tokens[i]);
    free(v->tokens);
    free(v->scores);
    free(v->types);
    free(v->slots);
    memset(v, 0, sizeof *v);
}

/* Builds the vocabulary in order: specials, bytes, characters, words, suffixes, then
 * letter pairs and triples (with and without the marker) until `size` tokens. With
 * size 0 it stops after the suffixes (to count the minimum). */
static int s_vocab_build(vocab *v, uint32_t size)
{
    memset(v, 0, sizeof *v);
    v->cap = size ? size : UINT32_MAX;
    uint32_t alloc = size ? size : 8192;
    v->n_slots = 1;
    while (v->n_slots < 2 * (alloc < 65536 ? 65536 : alloc))
        v->n_slots *= 2;
    v->tokens = calloc(alloc, sizeof *v->tokens);
    v->scores = calloc(alloc, sizeof *v->scores);
    v->types = calloc(alloc, sizeof *v->types);
    v->slots = calloc(v->n_slots, sizeof *v->slots);
    if (!v->tokens || !v->scores || !v->types || !v->slots)
        return -1;
    if (!size)
        v->cap = alloc;
    int rc = s_vocab_add(v, "<unk>", TOKEN_UNKNOWN) | s_vocab_add(v, "<s>", TOKEN_CONTROL) |
             s_vocab_add(v, "</s>", TOKEN_CONTROL);
    for (int b = 0; b < 256; b++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        rc |= s_vocab_add(v, piece, TOKEN_BYTE);
    }
    rc |= s_vocab_add(v, SPACE_MARK, TOKEN_NORMAL);
    for (const char *c = s_chars; *c; c++) {
        char one[2] = {*c, 0};
        rc |= s_vocab_add(v, one, TOKEN_NORMAL);
        rc |= s_vocab_add_prefixes(v, SPACE_MARK, one);
    }
    for (size_t i = 0; i < sizeof s_words / sizeof s_words[0]; i++)
        rc |= s_vocab_add_prefixes(v, SPACE_MARK, s_words[i]);
    for (size_t i = 0; i < sizeof s_suffixes / sizeof s_suffixes[0]; i++)
        rc |= s_vocab_add_prefixes(v, "", s_suffixes[i]);
    if (!size)
        return rc;
    for (int len = 2; len <= 3 && v->n < size; len++) {
        int combos = len == 2 ? 26 * 26 : 26 * 26 * 26;
        for (int marked = 1; marked >= 0; marked--)
            for (int c = 0; c < combos && v->n < size; c++) {
                char letters[4] = {0};
                for (int k = len - 1, x = c; k >= 0; k--, x /= 26)
                    letters[k] = (char)('a' + x % 26);
                rc |= s_vocab_add_prefixes(v, marked ? SPACE_MARK : "", letters);
            }
    }
    return rc;
}

static uint32_t s_vocab_count(uint32_t size)
{
    vocab v;
    uint32_t n = s_vocab_build(&v, size) ? 0 : v.n;
    s_vocab_free(&v);
    return n;
}

/* The bounds cost a vocabulary build each, so they are computed once per process. */
static uint32_t s_vocab_min, s_vocab_max;
static pthread_once_t s_vocab_bounds_once = PTHREAD_ONCE_INIT;

static void s_vocab_bounds(void)
{
    s_vocab_min = s_vocab_count(0);
    s_vocab_max = s_vocab_count(60000);
}

uint32_t mkmodel_builtin_vocab_min(void)
{
    pthread_once(&s_vocab_bounds_once, s_vocab_bounds);
    return s_vocab_min;
}

uint32_t mkmodel_builtin_vocab_max(void)
{
    pthread_once(&s_vocab_bounds_once, s_vocab_bounds);
    return s_vocab_max;
}

static int s_write_builtin_vocab(gguf_writer *w, uint32_t size, llorch_error *err)
{
    vocab v;
    if (s_vocab_build(&v, size)) {
        s_vocab_free(&v);
        return llorch_error_set(err, "mkmodel: out of memory building the vocabulary");
    }
    int rc = 0;
    if (v.n != size)
        rc = llorch_error_set(err, "mkmodel: the built-in vocabulary has %u..%u tokens; %u "
                                   "asked for", mkmodel_builtin_vocab_min(),
                              mkmodel_builtin_vocab_max(), size);
    if (!rc)
        rc = gguf_writer_set_string(w, "tokenizer.ggml.model", "llama", err) ||
             gguf_writer_set_string(w, "tokenizer.ggml.pre", "default", err) ||
             gguf_writer_set_string_array(w, "tokenizer.ggml.tokens",
                                          (const char *const *)v.tokens, v.n, err) ||
             gguf_writer_set_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, v.scores,
                                   v.n, err) ||
             gguf_writer_set_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v.types,
                                   v.n, err) ||
             gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1, err) ||
             gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2, err) ||
             gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0, err) ||
             gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true, err) ||
             gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false, err)
                 ? -1
                 : 0;
    s_vocab_free(&v);
    return rc;
}

/* Copies every tokenizer.* key of the vocabulary file; *n_vocab = its token count. */
static int s_copy_vocab(gguf_writer *w, const char *path, uint32_t *n_vocab, llorch_error *err)
{
    gguf_file *f = gguf_open(path, err);
    if (!f)
        return llorch_error_prefix(err, "mkmodel: vocabulary");
    int rc = 0;
    const gguf_value *tokens = gguf_find(f, "tokenizer.ggml.tokens");
    if (!tokens || tokens->type != GGUF_TYPE_ARRAY || tokens->arr->elem_type != GGUF_TYPE_STRING
        || tokens->arr->n == 0 || tokens->arr->n > UINT32_MAX)
        rc = llorch_error_set(err, "mkmodel: %s has no tokenizer.ggml.tokens string array "
                                   "(pass a vocabulary GGUF such as "
                                   "ggml-vocab-llama-spm.gguf)", path);
    else
        *n_vocab = (uint32_t)tokens->arr->n;
    for (uint64_t i = 0; i < f->n_kv && !rc; i++)
        if (!strncmp(f->kvs[i].key, "tokenizer.", 10))
            rc = gguf_writer_set_value(w, f->kvs[i].key, &f->kvs[i].value, err);
    gguf_close(&f);
    return rc;
}

/* ---- configuration ------------------------------------------------------------- */

int mkmodel_preset(const char *preset, mkmodel_config *cfg, llorch_error *err)
{
    mkmodel_config c = {
        .seed = 1, .std = 0.02f, .out_std = 0.5f, .norm_std = 0.1f, .rope_theta = 10000.0f,
        .rms_eps = 1e-5f, .n_threads = 2, .type = TENSOR_Q8_0, .vocab_size = 32000,
    };
    if (!preset || !strcmp(preset, "tiny")) {
        c.name = "llorch-tiny";
        c.dim = 256, c.n_layers = 4, c.n_heads = 8, c.n_kv_heads = 4, c.ffn_dim = 704;
        c.ctx = 2048, c.vocab_size = 2048, c.type = TENSOR_F32;
    } else if (!strcmp(preset, "llama2-7b")) {
        c.name = "llorch-random-llama2-7b";
        c.dim = 4096, c.n_layers = 32, c.n_heads = 32, c.n_kv_heads = 32, c.ffn_dim = 11008;
        c.ctx = 4096;
    } else if (!strcmp(preset, "tinyllama-1.1b")) {
        c.name = "llorch-random-tinyllama-1.1b";
        c.dim = 2048, c.n_layers = 22, c.n_heads = 32, c.n_kv_heads = 4, c.ffn_dim = 5632;
        c.ctx = 2048;
    } else {
        return llorch_error_set(err, "unknown preset '%s' (presets: tiny, llama2-7b, "
                                     "tinyllama-1.1b)", preset);
    }
    *cfg = c;
    return 0;
}

static bool s_positive_finite(float x)
{
    return isfinite(x) && x > 0.0f;
}

int mkmodel_validate(const mkmodel_config *c, llorch_error *err)
{
    if (!c)
        return llorch_error_set(err, "mkmodel: no configuration");
    struct { const char *what; uint32_t v; } dims[] = {
        {"dim", c->dim}, {"layers", c->n_layers}, {"heads", c->n_heads},
        {"kv-heads", c->n_kv_heads}, {"ffn", c->ffn_dim}, {"ctx", c->ctx},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v < 1 || dims[i].v > MAX_DIM)
            return llorch_error_set(err, "--%s %u is out of range (1..%u)", dims[i].what,
                                    dims[i].v, MAX_DIM);
    if (c->dim % c->n_heads)
        return llorch_error_set(err, "--dim %u is not divisible by --heads %u (head size = "
                                     "dim / heads)", c->dim, c->n_heads);
    if ((c->dim / c->n_heads) % 2)
        return llorch_error_set(err, "head size %u (dim %u / heads %u) is odd; RoPE rotates "
                                     "pairs, so it must be even", c->dim / c->n_heads, c->dim,
                                c->n_heads);
    if (c->n_heads % c->n_kv_heads)
        return llorch_error_set(err, "--heads %u is not a multiple of --kv-heads %u",
                                c->n_heads, c->n_kv_heads);
    if (c->type != TENSOR_F32 && c->type != TENSOR_F16 && c->type != TENSOR_Q8_0)
        return llorch_error_set(err, "mkmodel writes f32, f16 or q8_0 matrices, not type %d",
                                (int)c->type);
    if (c->type == TENSOR_Q8_0 && (c->dim % Q8_0_BLOCK || c->ffn_dim % Q8_0_BLOCK))
        return llorch_error_set(err, "q8_0 needs --dim and --ffn to be multiples of %d (got "
                                     "dim %u, ffn %u); pick other sizes or --type f32/f16",
                                Q8_0_BLOCK, c->dim, c->ffn_dim);
    if (!c->vocab_path && (c->vocab_size < mkmodel_builtin_vocab_min() ||
                           c->vocab_size > mkmodel_builtin_vocab_max()))
        return llorch_error_set(err, "the built-in vocabulary has %u..%u tokens, not %u (or "
                                     "give --vocab FILE.gguf)", mkmodel_builtin_vocab_min(),
                                mkmodel_builtin_vocab_max(), c->vocab_size);
    if (!s_positive_finite(c->std) || !s_positive_finite(c->out_std) ||
        !(isfinite(c->norm_std) && c->norm_std >= 0.0f))
        return llorch_error_set(err, "--std and --out-std must be positive numbers (got %g, "
                                     "%g)", (double)c->std, (double)c->out_std);
    if (!s_positive_finite(c->rope_theta) || !s_positive_finite(c->rms_eps))
        return llorch_error_set(err, "rope theta and rms epsilon must be positive numbers");
    if (c->n_threads < 1 || c->n_threads > MAX_THREADS)
        return llorch_error_set(err, "threads %d is out of range (1..%d)", c->n_threads,
                                MAX_THREADS);
    return 0;
}

/* ---- tensors ------------------------------------------------------------------- */

/* One tensor of the model; the generator's stream for row r is a function of
 * (seed, name, r) only, which is what makes output independent of thread count. */
typedef struct tensor_plan {
    char name[48];
    enum tensor_type type;
    uint32_t n_dims;
    uint64_t ne[2];    /* ne[0] = row length, ne[1] = rows */
    float mean, std;   /* values are mean + std * N(0, 1) */
    uint64_t stream;   /* hash of the name, mixed with the seed */
    uint64_t row_bytes;
} tensor_plan;

static void s_plan_one(tensor_plan *t, const mkmodel_config *c, const char *name,
                       enum tensor_type type, uint64_t ne0, uint64_t ne1, float mean, float sd)
{
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = ne1 > 0 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 > 0 ? ne1 : 1;
    t->mean = mean;
    t->std = sd;
    uint64_t s = c->seed ^ s_hash_str(name);
    t->stream = rng_splitmix64(&s);
    t->row_bytes = gguf_writer_tensor_bytes(type, 1, &t->ne[0]);
}

/* Fills plan (2 + 9 * n_layers + 2 entries) in file order; returns the count. */
static uint32_t s_plan(const mkmodel_config *c, uint32_t n_vocab, tensor_plan *plan)
{
    uint32_t n = 0;
    const uint32_t kv_dim = c->dim / c->n_heads * c->n_kv_heads;
    char name[48];
    s_plan_one(&plan[n++], c, "token_embd.weight", c->type, c->dim, n_vocab, 0, c->std);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        struct { const char *suffix; bool norm; uint32_t ne0, ne1; } layer[] = {
            {"attn_norm", true, c->dim, 0},      {"attn_q", false, c->dim, c->dim},
            {"attn_k", false, c->dim, kv_dim},    {"attn_v", false, c->dim, kv_dim},
            {"attn_output", false, c->dim, c->dim}, {"ffn_norm", true, c->dim, 0},
            {"ffn_gate", false, c->dim, c->ffn_dim}, {"ffn_down", false, c->ffn_dim, c->dim},
            {"ffn_up", false, c->dim, c->ffn_dim},
        };
        for (size_t i = 0; i < sizeof layer / sizeof layer[0]; i++) {
            snprintf(name, sizeof name, "blk.%u.%s.weight", l, layer[i].suffix);
            if (layer[i].norm)
                s_plan_one(&plan[n++], c, name, TENSOR_F32, layer[i].ne0, 0, 1.0f, c->norm_std);
            else
                s_plan_one(&plan[n++], c, name, c->type, layer[i].ne0, layer[i].ne1, 0, c->std);
        }
    }
    s_plan_one(&plan[n++], c, "output_norm.weight", TENSOR_F32, c->dim, 0, 1.0f, c->norm_std);
    s_plan_one(&plan[n++], c, "output.weight", c->type, c->dim, n_vocab, 0, c->out_std);
    return n;
}

/* Normal quantiles at (k + 0.5) / 65536: a 16-bit uniform indexes a standard normal
 * value, so one 64-bit draw gives four normals (tails to +-4.3) with one load each;
 * about 10x faster than Irwin-Hall or Box-Muller per value, which matters for 7 GB. */
static float s_normal_table[65536];
static pthread_once_t s_normal_table_once = PTHREAD_ONCE_INIT;

/* Inverse of the standard normal CDF: Acklam's rational approximation (relative
 * error 1.2e-9), then one Halley step on erfc to reach double precision. */
static double s_normal_quantile(double p)
{
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                               -2.759285104469687e+02, 1.383577518672690e+02,
                               -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                               -1.556989798598866e+02, 6.680131188771972e+01,
                               -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                               -2.400758277161838e+00, -2.549732539343734e+00,
                               4.374664141464968e+00, 2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                               2.445134137142996e+00, 3.754408661907416e+00};
    double x;
    if (p < 0.02425) {
        double q = sqrt(-2 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else if (p <= 1 - 0.02425) {
        double q = p - 0.5, r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    } else {
        double q = sqrt(-2 * log(1 - p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    double e = 0.5 * erfc(-x / sqrt(2.0)) - p;
    double u = e * sqrt(2 * M_PI) * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}

static void s_normal_table_init(void)
{
    /* Mirrored so that the table's mean is exactly zero. */
    for (int k = 0; k < 32768; k++) {
        float v = (float)s_normal_quantile((k + 0.5) / 65536.0);
        s_normal_table[k] = v;
        s_normal_table[65535 - k] = -v;
    }
}

/* The float values of one row (t->ne[0] of them). */
static void s_gen_row(const tensor_plan *t, uint64_t row, float *out)
{
    rng r;
    uint64_t s = t->stream + row * 0xd1342543de82ef95ull;
    rng_seed(&r, rng_splitmix64(&s));
    const float mean = t->mean, sd = t->std;
    const uint64_t n = t->ne[0];
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t x = rng_next(&r);
        out[i + 0] = mean + sd * s_normal_table[x & 0xffff];
        out[i + 1] = mean + sd * s_normal_table[(x >> 16) & 0xffff];
        out[i + 2] = mean + sd * s_normal_table[(x >> 32) & 0xffff];
        out[i + 3] = mean + sd * s_normal_table[x >> 48];
    }
    for (uint64_t x = rng_next(&r); i < n; i++, x >>= 16)
        out[i] = mean + sd * s_normal_table[x & 0xffff];
}

/* Q8_0 as ggml lays it out (d = max|x| / 127, q = x / d rounded), written for speed:
 * rounding by the 1.5 * 2^23 trick (to nearest even; ggml's roundf differs only on
 * exact halves, which these values practically never hit) keeps the loop free of
 * library calls so the compiler vectorizes it. */
static void s_quantize_q8_0(const float *x, uint8_t *out, uint64_t n)
{
    for (uint64_t b = 0; b < n / Q8_0_BLOCK; b++, x += Q8_0_BLOCK, out += 34) {
        float amax = 0.0f;
        for (int i = 0; i < Q8_0_BLOCK; i++) {
            float a = fabsf(x[i]);
            amax = a > amax ? a : amax;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t dh = f32_to_fp16(d);
        memcpy(out, &dh, 2);
        int8_t q[Q8_0_BLOCK];
        for (int i = 0; i < Q8_0_BLOCK; i++)
            q[i] = (int8_t)((x[i] * id + 12582912.0f) - 12582912.0f);
        memcpy(out + 2, q, Q8_0_BLOCK);
    }
}

/* One row in the file's format: out gets t->row_bytes bytes. tmp holds ne[0] floats. */
static void s_gen_row_bytes(const tensor_plan *t, uint64_t row, float *tmp, uint8_t *out)
{
    const uint64_t n = t->ne[0];
    s_gen_row(t, row, t->type == TENSOR_F32 ? (float *)(void *)out : tmp);
    if (t->type == TENSOR_F16) {
        uint16_t h;
        for (uint64_t i = 0; i < n; i++) {
            h = f32_to_fp16(tmp[i]);
            memcpy(out + 2 * i, &h, 2);
        }
    } else if (t->type == TENSOR_Q8_0) {
        s_quantize_q8_0(tmp, out, n);
    }
}

int mkmodel_tensor_row(const mkmodel_config *cfg, uint32_t vocab_size, const char *name,
                       uint64_t row, float *out, uint64_t n, llorch_error *err)
{
    if (mkmodel_validate(cfg, err))
        return -1;
    pthread_once(&s_normal_table_once, s_normal_table_init);
    tensor_plan *plan = calloc(4 + 9ull * cfg->n_layers, sizeof *plan);
    if (!plan)
        return llorch_error_set(err, "mkmodel: out of memory");
    uint32_t n_tensors = s_plan(cfg, vocab_size, plan);
    int rc = llorch_error_set(err, "mkmodel: no tensor '%s' in this model", name ? name : "");
    for (uint32_t i = 0; i < n_tensors; i++) {
        if (!name || strcmp(plan[i].name, name))
            continue;
        if (row >= plan[i].ne[1] || n != plan[i].ne[0]) {
            rc = llorch_error_set(err, "mkmodel: %s has %llu rows of %llu", name,
                                  (unsigned long long)plan[i].ne[1],
                                  (unsigned long long)plan[i].ne[0]);
        } else {
            s_gen_row(&plan[i], row, out);
            rc = 0;
        }
        break;
    }
    free(plan);
    return rc;
}

/* ---- parallel generation ------------------------------------------------------- */

/* A run of whole rows of one tensor, generated by one thread into one ring slot. */
typedef struct chunk {
    uint32_t tensor;
    uint64_t row_begin, row_end;
} chunk;

/* Generator threads take chunks in file order and fill ring slot (index % n_slots);
 * the calling thread writes slots in order and frees them. A slot is reused only
 * after its previous chunk was written, so memory stays at n_slots * CHUNK_BYTES. */
typedef struct gen_state {
    const tensor_plan *plan;
    const chunk *chunks;
    uint64_t n_chunks;
    uint8_t **slots;
    int64_t *slot_ready; /* chunk index whose bytes are in the slot, or -1 */
    uint32_t n_slots;
    uint64_t max_row;    /* longest row, in floats */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    uint64_t next_chunk; /* next chunk to claim */
    uint64_t n_written;  /* chunks written (their slots are free) */
    bool stop;
} gen_state;

static void *s_generator(void *arg)
{
    gen_state *g = arg;
    float *tmp = malloc(g->max_row * sizeof *tmp);
    for (;;) {
        pthread_mutex_lock(&g->lock);
        while (!g->stop && g->next_chunk < g->n_chunks &&
               g->next_chunk >= g->n_written + g->n_slots)
            pthread_cond_wait(&g->changed, &g->lock);
        if (g->stop || g->next_chunk >= g->n_chunks || !tmp) {
            if (!tmp)
                g->stop = true; /* out of memory: the writer sees stop and reports it */
            pthread_cond_broadcast(&g->changed);
            pthread_mutex_unlock(&g->lock);
            break;
        }
        uint64_t idx = g->next_chunk++;
        pthread_mutex_unlock(&g->lock);

        const chunk *ck = &g->chunks[idx];
        const tensor_plan *t = &g->plan[ck->tensor];
        uint8_t *out = g->slots[idx % g->n_slots];
        for (uint64_t r = ck->row_begin; r < ck->row_end; r++)
            s_gen_row_bytes(t, r, tmp, out + (r - ck->row_begin) * t->row_bytes);

        pthread_mutex_lock(&g->lock);
        g->slot_ready[idx % g->n_slots] = (int64_t)idx;
        pthread_cond_broadcast(&g->changed);
        pthread_mutex_unlock(&g->lock);
    }
    free(tmp);
    return NULL;
}

/* Splits every tensor into chunks of whole rows of at most CHUNK_BYTES (or one row). */
static chunk *s_make_chunks(const tensor_plan *plan, uint32_t n_tensors, uint64_t *n_chunks)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < n_tensors; i++) {
        uint64_t rows_per = CHUNK_BYTES / plan[i].row_bytes ? CHUNK_BYTES / plan[i].row_bytes : 1;
        n += (plan[i].ne[1] + rows_per - 1) / rows_per;
    }
    chunk *chunks = malloc(n * sizeof *chunks);
    if (!chunks)
        return NULL;
    uint64_t k = 0;
    for (uint32_t i = 0; i < n_tensors; i++) {
        uint64_t rows_per = CHUNK_BYTES / plan[i].row_bytes ? CHUNK_BYTES / plan[i].row_bytes : 1;
        for (uint64_t r = 0; r < plan[i].ne[1]; r += rows_per)
            chunks[k++] = (chunk){i, r, r + rows_per < plan[i].ne[1] ? r + rows_per : plan[i].ne[1]};
    }
    *n_chunks = n;
    return chunks;
}

/* Runs the generators and writes every chunk in order. */
static int s_write_data(gguf_writer *w, const mkmodel_config *c, const tensor_plan *plan,
                        uint32_t n_tensors, mkmodel_progress_fn progress, void *progress_ctx,
                        llorch_error *err)
{
    gen_state g = {.plan = plan, .n_slots = 2 * (uint32_t)c->n_threads + 2};
    uint64_t max_chunk = 0;
    g.chunks = s_make_chunks(plan, n_tensors, &g.n_chunks);
    for (uint32_t i = 0; i < n_tensors; i++) {
        uint64_t rows_per = CHUNK_BYTES / plan[i].row_bytes ? CHUNK_BYTES / plan[i].row_bytes : 1;
        if (rows_per > plan[i].ne[1])
            rows_per = plan[i].ne[1];
        if (rows_per * plan[i].row_bytes > max_chunk)
            max_chunk = rows_per * plan[i].row_bytes;
        if (plan[i].ne[0] > g.max_row)
            g.max_row = plan[i].ne[0];
    }
    g.slots = calloc(g.n_slots, sizeof *g.slots);
    g.slot_ready = malloc(g.n_slots * sizeof *g.slot_ready);
    bool ok = g.chunks && g.slots && g.slot_ready;
    for (uint32_t s = 0; ok && s < g.n_slots; s++) {
        g.slots[s] = malloc(max_chunk);
        g.slot_ready[s] = -1;
        ok = g.slots[s] != NULL;
    }
    pthread_t threads[MAX_THREADS];
    int n_started = 0;
    int rc = 0;
    if (!ok) {
        rc = llorch_error_set(err, "mkmodel: out of memory for the generation buffers");
        goto out;
    }
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.changed, NULL);
    for (; n_started < c->n_threads; n_started++)
        if (pthread_create(&threads[n_started], NULL, s_generator, &g))
            break;
    if (n_started == 0) {
        rc = llorch_error_set(err, "mkmodel: cannot start a generator thread");
        goto joined;
    }
    const uint64_t total = gguf_writer_file_bytes(w);
    for (uint64_t idx = 0; idx < g.n_chunks && !rc; idx++) {
        uint32_t slot = (uint32_t)(idx % g.n_slots);
        pthread_mutex_lock(&g.lock);
        while (g.slot_ready[slot] != (int64_t)idx && !g.stop)
            pthread_cond_wait(&g.changed, &g.lock);
        bool stopped = g.slot_ready[slot] != (int64_t)idx;
        pthread_mutex_unlock(&g.lock);
        if (stopped) {
            rc = llorch_error_set(err, "mkmodel: out of memory in a generator thread");
            break;
        }
        const chunk *ck = &g.chunks[idx];
        const tensor_plan *t = &plan[ck->tensor];
        if (ck->row_begin == 0)
            rc = gguf_writer_begin_tensor(w, t->name, err);
        if (!rc)
            rc = gguf_writer_write(w, g.slots[slot], (ck->row_end - ck->row_begin) * t->row_bytes,
                                   err);
        pthread_mutex_lock(&g.lock);
        g.slot_ready[slot] = -1;
        g.n_written++;
        pthread_cond_broadcast(&g.changed);
        pthread_mutex_unlock(&g.lock);
        if (progress && !rc)
            progress(progress_ctx, gguf_writer_bytes_written(w), total);
    }
joined:
    pthread_mutex_lock(&g.lock);
    g.stop = true;
    pthread_cond_broadcast(&g.changed);
    pthread_mutex_unlock(&g.lock);
    for (int i = 0; i < n_started; i++)
        pthread_join(threads[i], NULL);
    pthread_cond_destroy(&g.changed);
    pthread_mutex_destroy(&g.lock);
out:
    for (uint32_t s = 0; g.slots && s < g.n_slots; s++)
        free(g.slots[s]);
    free(g.slots);
    free(g.slot_ready);
    free((void *)g.chunks);
    return rc;
}

/* ---- the file ------------------------------------------------------------------ */

static uint32_t s_file_type(enum tensor_type t)
{
    return t == TENSOR_F32 ? 0 : t == TENSOR_F16 ? 1 : 7; /* ggml's ALL_F32, MOSTLY_F16, MOSTLY_Q8_0 */
}

int mkmodel_write(const mkmodel_config *c, const char *path, mkmodel_progress_fn progress,
                  void *progress_ctx, llorch_error *err)
{
    if (mkmodel_validate(c, err))
        return -1;
    pthread_once(&s_normal_table_once, s_normal_table_init);
    gguf_writer *w = gguf_writer_new(0);
    tensor_plan *plan = calloc(4 + 9ull * c->n_layers, sizeof *plan);
    if (!w || !plan) {
        gguf_writer_free(&w);
        free(plan);
        return llorch_error_set(err, "mkmodel: out of memory");
    }
    const uint32_t head_dim = c->dim / c->n_heads;
    int rc = gguf_writer_set_string(w, "general.architecture", "llama", err) ||
             gguf_writer_set_string(w, "general.name", c->name ? c->name : "llorch-random", err) ||
             gguf_writer_set_u32(w, "general.file_type", s_file_type(c->type), err) ||
             (c->type == TENSOR_Q8_0 &&
              gguf_writer_set_u32(w, "general.quantization_version", 2, err)) ||
             gguf_writer_set_u32(w, "llama.context_length", c->ctx, err) ||
             gguf_writer_set_u32(w, "llama.embedding_length", c->dim, err) ||
             gguf_writer_set_u32(w, "llama.block_count", c->n_layers, err) ||
             gguf_writer_set_u32(w, "llama.feed_forward_length", c->ffn_dim, err) ||
             gguf_writer_set_u32(w, "llama.rope.dimension_count", head_dim, err) ||
             gguf_writer_set_u32(w, "llama.attention.head_count", c->n_heads, err) ||
             gguf_writer_set_u32(w, "llama.attention.head_count_kv", c->n_kv_heads, err) ||
             gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c->rms_eps, err) ||
             gguf_writer_set_f32(w, "llama.rope.freq_base", c->rope_theta, err)
                 ? -1
                 : 0;
    uint32_t n_vocab = c->vocab_size;
    if (!rc)
        rc = c->vocab_path ? s_copy_vocab(w, c->vocab_path, &n_vocab, err)
                           : s_write_builtin_vocab(w, c->vocab_size, err);
    if (!rc)
        rc = gguf_writer_set_u32(w, "llama.vocab_size", n_vocab, err);
    uint32_t n_tensors = rc ? 0 : s_plan(c, n_vocab, plan);
    for (uint32_t i = 0; i < n_tensors && !rc; i++)
        rc = gguf_writer_add_tensor(w, plan[i].name, plan[i].type, plan[i].n_dims, plan[i].ne,
                                    err);
    if (!rc)
        rc = gguf_writer_open(w, path, err);
    if (!rc)
        rc = s_write_data(w, c, plan, n_tensors, progress, progress_ctx, err);
    if (!rc)
        rc = gguf_writer_finish(w, err);
    gguf_writer_free(&w);
    free(plan);
    return rc;
}
