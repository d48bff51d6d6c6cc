/* http_config.c - the HTTP API's options, its config file, and API keys checked in constant time. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

void http_config_init(http_config *c)
{
    *c = (http_config){.max_body_bytes = 1u << 20, .max_tokens = 4096,
                       .default_max_tokens = 256, .max_concurrent = 16, .max_queue = 64,
                       .timeout_s = 600, .keepalive_s = 15};
}

void http_config_usage(FILE *out)
{
    fprintf(out,
            "HTTP API (OpenAI-compatible; docs/http.md):\n"
            "  --http ADDR:PORT        serve /v1/completions, /v1/chat/completions, /v1/models,\n"
            "                          /health, /metrics (e.g. 127.0.0.1:8080, *:8080)\n"
            "  --http-max-body BYTES   largest request body, K/M suffixes (default 1M)\n"
            "  --http-max-prompt-tokens N  longest prompt (default: the model's context - 1)\n"
            "  --http-max-tokens N     largest max_tokens a request may ask for (default 4096)\n"
            "  --http-default-max-tokens N  max_tokens when a request gives none (default 256)\n"
            "  --http-max-concurrent N requests generating at once (default 16)\n"
            "  --http-max-queue N      requests waiting for those; more get 429 (default 64)\n"
            "  --http-timeout S        longest request, queueing included (default 600)\n"
            "  --http-keepalive S      SSE keep-alive comment after S silent seconds (default 15)\n"
            "  --http-model-name NAME  the model's name in /v1/models (default: its id)\n"
            "  --api-key-file FILE     require Authorization: Bearer KEY, one key per line\n"
            "                          (/health stays public)\n"
            "  --config FILE           read these settings from FILE: `name = value` lines,\n"
            "                          names as above without the dashes, '#' comments\n");
}

static int s_unsigned(const char *name, const char *v, unsigned long long lo,
                      unsigned long long hi, bool suffixes, unsigned long long *out,
                      llorch_error *err)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*v))
        return llorch_error_set(err, "%s wants a number in %llu..%llu, got '%s'", name, lo, hi, v);
    unsigned long long n = strtoull(v, &end, 10);
    if (suffixes && *end && !end[1]) {
        unsigned shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' || *end == 'm' ? 20
                         : *end == 'G' || *end == 'g' ? 30 : 0;
        if (shift && n <= (ULLONG_MAX >> shift)) {
            n <<= shift;
            end++;
        }
    }
    if (errno || end == v || *end || n < lo || n > hi)
        return llorch_error_set(err, "%s wants a number in %llu..%llu%s, got '%s'", name, lo, hi,
                                suffixes ? " (K/M/G suffixes allowed)" : "", v);
    *out = n;
    return 0;
}

static int s_config_file(http_config *c, const char *path, int depth, llorch_error *err);

int http_config_option(http_config *c, const char *name, const char *v, llorch_error *err)
{
    unsigned long long n;
    struct { const char *name; unsigned long long lo, hi; unsigned *field; } uints[] = {
        {"--http-max-prompt-tokens", 0, 1u << 24, &c->max_prompt_tokens},
        {"--http-max-tokens", 1, 1u << 20, &c->max_tokens},
        {"--http-default-max-tokens", 1, 1u << 20, &c->default_max_tokens},
        {"--http-max-concurrent", 1, 4096, &c->max_concurrent},
        {"--http-max-queue", 0, 1u << 16, &c->max_queue},
        {"--http-timeout", 1, 86400, &c->timeout_s},
        {"--http-keepalive", 1, 3600, &c->keepalive_s},
    };
    for (size_t i = 0; i < sizeof uints / sizeof uints[0]; i++) {
        if (strcmp(name, uints[i].name))
            continue;
        if (s_unsigned(name, v, uints[i].lo, uints[i].hi, false, &n, err) != 0)
            return -1;
        *uints[i].field = (unsigned)n;
        if (c->default_max_tokens > c->max_tokens)
            c->default_max_tokens = c->max_tokens;
        return 1;
    }
    if (!strcmp(name, "--http-max-body")) {
        if (s_unsigned(name, v, 64, 1ull << 30, true, &n, err) != 0)
            return -1;
        c->max_body_bytes = (size_t)n;
        return 1;
    }
    struct { const char *name; char *field; size_t cap; } strs[] = {
        {"--http", c->listen, sizeof c->listen},
        {"--http-model-name", c->model_name, sizeof c->model_name},
        {"--api-key-file", c->api_key_file, sizeof c->api_key_file},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if (strcmp(name, strs[i].name))
            continue;
        if (!*v || strlen(v) >= strs[i].cap)
            return llorch_error_set(err, "%s wants a value of 1..%zu bytes", name,
                                    strs[i].cap - 1);
        snprintf(strs[i].field, strs[i].cap, "%s", v);
        return 1;
    }
    if (!strcmp(name, "--config"))
        return s_config_file(c, v, 0, err) == 0 ? 1 : -1;
    return 0;
}

static char *s_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int s_config_file(http_config *c, const char *path, int depth, llorch_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return llorch_error_set(err, "cannot open the config file %s: %s", path, strerror(errno));
    char line[2048];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = s_trim(line);
        if (!*s)
            continue;
        char *sep = strpbrk(s, "= \t");
        if (!sep) {
            rc = llorch_error_set(err, "%s line %d: '%s' has no value: write `name = value`",
                                  path, lineno, s);
            break;
        }
        *sep = '\0';
        char *value = s_trim(sep + 1);
        if (*value == '=')
            value = s_trim(value + 1);
        char name[128];
        snprintf(name, sizeof name, "%s%s", strncmp(s, "--", 2) ? "--" : "", s);
        if (!strcmp(name, "--config") && depth > 0) {
            rc = llorch_error_set(err, "%s line %d: config files do not nest", path, lineno);
            break;
        }
        int applied = http_config_option(c, name, value, err);
        if (applied == 0)
            rc = llorch_error_set(err, "%s line %d: unknown setting '%s' (see llorch-router "
                                  "--help, HTTP API)", path, lineno, s);
        else if (applied < 0)
            rc = llorch_error_prefix(err, "%s line %d", path, lineno);
    }
    fclose(f);
    return rc;
}

/* ---- API keys ---- */

int http_keys_load(http_keys *k, const char *path, llorch_error *err)
{
    *k = (http_keys){0};
    if (sodium_init() < 0)
        return llorch_error_set(err, "libsodium failed to initialise");
    FILE *f = fopen(path, "r");
    if (!f)
        return llorch_error_set(err, "cannot open the API key file %s: %s", path,
                                strerror(errno));
    char line[1024];
    size_t cap = 0;
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *key = s_trim(line);
        if (!*key)
            continue;
        if (k->n == cap) {
            cap = cap ? cap * 2 : 8;
            void *grown = realloc(k->digests, cap * sizeof *k->digests);
            if (!grown) {
                rc = llorch_error_set(err, "out of memory");
                break;
            }
            k->digests = grown;
        }
        crypto_generichash(k->digests[k->n++], HTTP_KEY_DIGEST_BYTES, (const uint8_t *)key,
                           strlen(key), NULL, 0);
        sodium_memzero(line, sizeof line);
    }
    fclose(f);
    if (rc == 0 && k->n == 0)
        rc = llorch_error_set(err, "the API key file %s holds no keys: put one key per line",
                              path);
    if (rc != 0)
        http_keys_free(k);
    return rc;
}

bool http_keys_check(const http_keys *k, const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return false;
    const char *key = authorization + 7;
    while (*key == ' ')
        key++;
    size_t len = strlen(key);
    while (len && key[len - 1] == ' ')
        len--;
    if (len == 0)
        return false;
    /* Digests have a fixed length whatever the key's, so the comparison's time says
     * nothing about how much of a key matched. */
    uint8_t d[HTTP_KEY_DIGEST_BYTES];
    crypto_generichash(d, sizeof d, (const uint8_t *)key, len, NULL, 0);
    int match = 0;
    for (size_t i = 0; i < k->n; i++)
        match |= sodium_memcmp(d, k->digests[i], sizeof d) == 0;
    return match != 0;
}

void http_keys_free(http_keys *k)
{
    if (k->digests)
        sodium_memzero(k->digests, k->n * sizeof *k->digests);
    free(k->digests);
    *k = (http_keys){0};
}
