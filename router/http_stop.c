/* http_stop.c - stop strings matched across token boundaries, never shown to the client. */
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

void http_stop_init(http_stop *m, const char *const *stop, unsigned n_stop)
{
    *m = (http_stop){.stop = stop, .n_stop = n_stop};
}

void http_stop_free(http_stop *m)
{
    free(m->held);
    free(m->out);
    *m = (http_stop){0};
}

static int s_reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    char *b = realloc(*buf, c);
    if (!b)
        return -1;
    *buf = b;
    *cap = c;
    return 0;
}

/* The longest k < strlen(stop) with held ending in stop[0..k), over every stop string:
 * those bytes may become a stop string with the next token, so they wait. A stop string
 * is valid UTF-8, so the cut falls on a character boundary of the text. */
static size_t s_holdback(const http_stop *m)
{
    size_t best = 0;
    for (unsigned i = 0; i < m->n_stop; i++) {
        size_t sl = strlen(m->stop[i]);
        size_t k = sl - 1 < m->n_held ? sl - 1 : m->n_held;
        for (; k > best; k--)
            if (!memcmp(m->held + m->n_held - k, m->stop[i], k)) {
                best = k;
                break;
            }
    }
    return best;
}

int http_stop_push(http_stop *m, const char *text, size_t len, const char **emit,
                   size_t *emit_len)
{
    *emit = "";
    *emit_len = 0;
    if (m->hit)
        return 1;
    if (m->n_stop == 0) {
        *emit = text;
        *emit_len = len;
        return 0;
    }
    if (s_reserve(&m->held, &m->cap_held, m->n_held + len + 1) != 0)
        return -1;
    memcpy(m->held + m->n_held, text, len);
    m->n_held += len;
    /* The earliest stop string wins: the held bytes never contain a whole one. */
    size_t cut = m->n_held;
    for (unsigned i = 0; i < m->n_stop; i++) {
        const char *p = memmem(m->held, m->n_held, m->stop[i], strlen(m->stop[i]));
        if (p && (size_t)(p - m->held) < cut) {
            cut = (size_t)(p - m->held);
            m->hit = true;
        }
    }
    size_t release = m->hit ? cut : m->n_held - s_holdback(m);
    if (s_reserve(&m->out, &m->cap_out, release + 1) != 0)
        return -1;
    memcpy(m->out, m->held, release);
    m->out[release] = '\0';
    if (m->hit) {
        m->n_held = 0;
    } else {
        memmove(m->held, m->held + release, m->n_held - release);
        m->n_held -= release;
    }
    *emit = m->out;
    *emit_len = release;
    return m->hit ? 1 : 0;
}

void http_stop_flush(http_stop *m, const char **emit, size_t *emit_len)
{
    *emit = "";
    *emit_len = 0;
    if (m->hit || m->n_held == 0)
        return;
    if (s_reserve(&m->out, &m->cap_out, m->n_held + 1) != 0)
        return;
    memcpy(m->out, m->held, m->n_held);
    m->out[m->n_held] = '\0';
    *emit = m->out;
    *emit_len = m->n_held;
    m->n_held = 0;
}
