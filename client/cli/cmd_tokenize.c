/* cmd_tokenize.c - `llorch tokenize`: text to token ids (and ids back to text) with a model's vocabulary. */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gguf.h"
#include "tokenizer.h"
#include "utf8.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch tokenize -m MODEL.gguf [--no-bos] [--no-special] [--json] TEXT\n"
            "       llorch tokenize -m MODEL.gguf --decode [--render-special] [--json] IDS\n"
            "\n"
            "Turns TEXT into token ids with the model's SentencePiece vocabulary, as\n"
            "llama.cpp's llama_tokenize does. TEXT \"-\" reads the text from stdin; put\n"
            "\"--\" before a TEXT that starts with '-'.\n"
            "\n"
            "  -m, --model PATH  the GGUF file whose vocabulary to use (a vocab-only file works)\n"
            "  --no-bos          do not put the BOS token in front (by default it is there\n"
            "                    when the vocabulary's add_bos_token says so; likewise EOS\n"
            "                    at the end for vocabularies with add_eos_token)\n"
            "  --no-special      read control-token text such as \"<s>\" as plain text (by\n"
            "                    default it becomes the control token)\n"
            "  --json            print {\"tokens\":[...]} (with --decode: {\"text\":\"...\"})\n"
            "  --decode          IDS (separated by spaces or commas) back to text, as\n"
            "                    llama.cpp's llama_detokenize does; ill-formed UTF-8 from byte\n"
            "                    tokens is printed as U+FFFD\n"
            "  --render-special  with --decode, show control tokens as their text (\"</s>\")\n"
            "  --help            this text\n"
            "\n"
            "Without --json, each token is printed on its own line as ID<TAB>PIECE, PIECE as\n"
            "the vocabulary spells it (\"\xE2\x96\x81\" for a space), with \\t, \\n, \\\\ and\n"
            "other control bytes escaped.\n");
}

/* Reads all of stdin into a malloc'd buffer. */
static char *s_read_stdin(size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, stdin);
        if (n < cap)
            break;
        cap *= 2;
        char *bigger = realloc(buf, cap);
        if (!bigger)
            free(buf);
        buf = bigger;
    }
    if (!buf || ferror(stdin)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static void s_print_piece(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\\')
            fputs("\\\\", stdout);
        else if (c < 0x20 || c == 0x7F)
            printf("\\x%02X", c);
        else
            putchar(c);
    }
}

static int s_encode(const tokenizer *t, const char *text, size_t len, unsigned flags, bool json)
{
    llorch_error err = {{0}};
    int32_t *ids;
    size_t n;
    if (tokenizer_encode(t, text, len, flags, &ids, &n, &err) != 0) {
        fprintf(stderr, "llorch tokenize: %s\n", err.msg);
        return 1;
    }
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, json_integer(ids[i]));
        json_t *obj = json_pack("{s:o}", "tokens", arr);
        char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
        json_decref(obj);
        if (!s) {
            free(ids);
            fprintf(stderr, "llorch tokenize: out of memory\n");
            return 1;
        }
        puts(s);
        free(s);
    } else {
        for (size_t i = 0; i < n; i++) {
            size_t piece_len;
            const char *piece = tokenizer_piece(t, ids[i], &piece_len);
            printf("%d\t", ids[i]);
            s_print_piece(piece, piece_len);
            putchar('\n');
        }
    }
    free(ids);
    return 0;
}

/* Parses "1 15043,3186" into ids; -1 with a message on anything else. */
static int s_parse_ids(const char *s, int32_t **ids, size_t *n)
{
    size_t cap = 16;
    *n = 0;
    *ids = malloc(cap * sizeof **ids);
    if (!*ids)
        return -1;
    for (;;) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n')
            s++;
        if (!*s)
            return 0;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < INT32_MIN || v > INT32_MAX) {
            fprintf(stderr, "llorch tokenize: '%.20s' is not a token id (IDS are integers "
                            "separated by spaces or commas)\n", s);
            return -1;
        }
        if (*n == cap) {
            cap *= 2;
            int32_t *bigger = realloc(*ids, cap * sizeof **ids);
            if (!bigger)
                return -1;
            *ids = bigger;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
}

static int s_decode(const tokenizer *t, const char *text, unsigned flags, bool json)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (s_parse_ids(text, &ids, &n) != 0) {
        free(ids);
        return 2;
    }
    llorch_error err = {{0}};
    char *raw;
    size_t raw_len;
    int rc = tokenizer_decode(t, ids, n, flags, &raw, &raw_len, &err);
    free(ids);
    if (rc != 0) {
        fprintf(stderr, "llorch tokenize: %s\n", err.msg);
        return 1;
    }
    char *clean = malloc(3 * raw_len + 1);
    if (!clean) {
        free(raw);
        fprintf(stderr, "llorch tokenize: out of memory\n");
        return 1;
    }
    size_t clean_len = utf8_sanitize(clean, raw, raw_len);
    free(raw);
    if (json) {
        json_t *obj = json_pack("{s:s%}", "text", clean, clean_len);
        char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
        json_decref(obj);
        if (s)
            puts(s);
        free(s);
    } else {
        fwrite(clean, 1, clean_len, stdout);
        putchar('\n');
    }
    free(clean);
    return 0;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL;
    bool json = false, bos = true, special = true, decode = false, render_special = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            s_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (++i >= argc) {
                fprintf(stderr, "llorch tokenize: %s needs a path\n", a);
                return 2;
            }
            model = argv[i];
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--no-bos")) {
            bos = false;
        } else if (!strcmp(a, "--no-special")) {
            special = false;
        } else if (!strcmp(a, "--decode")) {
            decode = true;
        } else if (!strcmp(a, "--render-special")) {
            render_special = true;
        } else if (!strcmp(a, "--")) {
            if (i + 1 < argc)
                text = argv[++i];
            if (i + 1 < argc) {
                fprintf(stderr, "llorch tokenize: give the text as one argument (quote it)\n");
                return 2;
            }
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "llorch tokenize: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (text) {
            fprintf(stderr, "llorch tokenize: give the text as one argument (quote it)\n");
            return 2;
        } else {
            text = a;
        }
    }
    if (!model || !text) {
        fprintf(stderr, "llorch tokenize: %s is missing\n\n", !model ? "-m MODEL" : "TEXT");
        s_usage(stderr);
        return 2;
    }

    llorch_error err = {{0}};
    gguf_file *f = gguf_open(model, &err);
    if (!f) {
        fprintf(stderr, "llorch tokenize: %s\n", err.msg);
        return 1;
    }
    tokenizer *t = tokenizer_from_gguf(f, &err);
    gguf_close(&f);
    if (!t) {
        fprintf(stderr, "llorch tokenize: %s: %s\n", model, err.msg);
        return 1;
    }

    char *input = NULL;
    size_t len = strlen(text);
    if (!strcmp(text, "-")) {
        input = s_read_stdin(&len);
        if (!input) {
            fprintf(stderr, "llorch tokenize: cannot read the text from stdin\n");
            tokenizer_free(&t);
            return 1;
        }
        text = input;
    }
    int rc;
    if (decode) {
        if (input) {
            char *z = realloc(input, len + 1); /* s_parse_ids reads a C string */
            if (z)
                z[len] = '\0';
            input = z;
            text = z;
        }
        rc = text ? s_decode(t, text, render_special ? TOKENIZER_DECODE_SPECIAL : 0, json) : 1;
    } else {
        unsigned flags = (bos ? TOKENIZE_ADD_SPECIAL : 0) | (special ? TOKENIZE_PARSE_SPECIAL : 0);
        rc = s_encode(t, text, len, flags, json);
    }
    free(input);
    tokenizer_free(&t);
    return rc;
}
