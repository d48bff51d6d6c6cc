/* http_chat.c - chat messages rendered with the Llama-2 chat template. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

/* Meta's reference (llama/generation.py, chat_completion) and the Hugging Face
 * template of Llama-2-chat: every user/assistant pair is "<s>[INST] {user} [/INST]
 * {assistant} </s>", the system prompt goes inside the first [INST] between <<SYS>>
 * markers, and contents are trimmed. The text is tokenized with special-token parsing,
 * so "<s>" and "</s>" become BOS and EOS, and text after them gets SentencePiece's
 * space prefix as llama.cpp does. */

/* A message's text: a string, or an array of {"type": "text", "text": ...} parts
 * joined. NULL with *fail otherwise. *owned is set when the result was allocated. */
static char *s_content(const json_t *msg, size_t index, bool *owned, http_fail *fail)
{
    const json_t *c = json_object_get(msg, "content");
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", index);
    *owned = false;
    if (json_is_string(c)) {
        return (char *)json_string_value(c);
    }
    if (!json_is_array(c)) {
        http_fail_set(fail, 400, "invalid_request_error", "invalid_type", param,
                      "%s must be a string or an array of text parts", param);
        return NULL;
    }
    size_t total = 1, i;
    const json_t *part;
    json_array_foreach(c, i, part) {
        const json_t *type = json_object_get(part, "type");
        const json_t *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 ||
            !json_is_string(text)) {
            http_fail_set(fail, 400, "invalid_request_error", "invalid_value", param,
                          "%s[%zu] must be {\"type\": \"text\", \"text\": \"...\"}: this "
                          "model reads text only", param, i);
            return NULL;
        }
        total += json_string_length(text);
    }
    char *s = malloc(total);
    if (!s) {
        http_fail_set(fail, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    size_t n = 0;
    json_array_foreach(c, i, part) {
        const json_t *text = json_object_get(part, "text");
        memcpy(s + n, json_string_value(text), json_string_length(text));
        n += json_string_length(text);
    }
    s[n] = '\0';
    *owned = true;
    return s;
}

typedef struct s_buf {
    char *p;
    size_t len, cap;
    bool oom;
} s_buf;

static void s_put(s_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (http_buf_append(&b->p, &b->len, &b->cap, s, n) != 0)
        b->oom = true;
}

static void s_puts(s_buf *b, const char *s)
{
    s_put(b, s, strlen(s));
}

/* Appends s without leading and trailing whitespace. */
static void s_put_trimmed(s_buf *b, const char *s)
{
    size_t n = strlen(s);
    while (n && strchr(" \t\r\n", *s)) {
        s++;
        n--;
    }
    while (n && strchr(" \t\r\n", s[n - 1]))
        n--;
    s_put(b, s, n);
}

char *http_chat_render(const json_t *messages, http_fail *fail)
{
    if (!json_is_array(messages))
        return http_fail_set(fail, 400, "invalid_request_error", "invalid_type", "messages",
                             "messages must be an array of {\"role\", \"content\"} objects"),
               NULL;
    const size_t n = json_array_size(messages);
    if (n == 0)
        return http_fail_set(fail, 400, "invalid_request_error", "invalid_value", "messages",
                             "messages is empty: give at least one user message"),
               NULL;
    s_buf b = {0};
    const char *system = NULL;
    bool system_owned = false;
    size_t first = 0;
    const char *expect = "user";
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(messages, i);
        const json_t *role = json_object_get(m, "role");
        char param[64];
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!json_is_object(m) || !json_is_string(role)) {
            http_fail_set(fail, 400, "invalid_request_error", "invalid_type", param,
                          "messages[%zu] must be an object with a string role", i);
            goto fail;
        }
        const char *r = json_string_value(role);
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")) {
            http_fail_set(fail, 400, "invalid_request_error", "invalid_value", param,
                          "%s is '%s': use system, user or assistant", param, r);
            goto fail;
        }
        if (!strcmp(r, "system")) {
            if (i != 0) {
                http_fail_set(fail, 400, "invalid_request_error", "invalid_value", param,
                              "a system message may only come first (messages[%zu] is one)", i);
                goto fail;
            }
            if (!(system = s_content(m, i, &system_owned, fail)))
                goto fail;
            first = 1;
            continue;
        }
        if (strcmp(r, expect)) {
            http_fail_set(fail, 400, "invalid_request_error", "invalid_value", param,
                          "%s is %s but %s was expected: after an optional system message, "
                          "user and assistant messages alternate, starting with user", param, r,
                          expect);
            goto fail;
        }
        bool owned;
        char *content = s_content(m, i, &owned, fail);
        if (!content)
            goto fail;
        if (!strcmp(r, "user")) {
            s_puts(&b, "<s>[INST] ");
            if (i == first && system) {
                s_puts(&b, "<<SYS>>\n");
                s_put_trimmed(&b, system);
                s_puts(&b, "\n<</SYS>>\n\n");
            }
            s_put_trimmed(&b, content);
            s_puts(&b, " [/INST]");
            expect = "assistant";
        } else {
            s_puts(&b, " ");
            s_put_trimmed(&b, content);
            s_puts(&b, " </s>");
            expect = "user";
        }
        if (owned)
            free(content);
    }
    if (strcmp(expect, "assistant")) {
        http_fail_set(fail, 400, "invalid_request_error", "invalid_value", "messages",
                      "the last message must be from the user: the model answers it");
        goto fail;
    }
    if (b.oom) {
        http_fail_set(fail, 500, "server_error", NULL, NULL, "out of memory");
        goto fail;
    }
    if (system_owned)
        free((char *)system);
    return b.p;
fail:
    if (system_owned)
        free((char *)system);
    free(b.p);
    return NULL;
}
