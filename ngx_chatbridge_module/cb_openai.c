
/*
 * Copyright (C) chatbridge authors
 */


#ifndef _GNU_SOURCE
#define _GNU_SOURCE                 /* memmem() */
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cb_json.h"
#include "cb_openai.h"


#define CB_MODEL_MAX        256
#define CB_NAME_MAX         256


typedef struct {
    char           *data;
    size_t          len;
    size_t          size;
} cb_text_t;


typedef struct {
    const cb_chat_opts_t  *opts;
    cb_err_t              *err;
    size_t                 text_bytes;
    uint32_t               nattachments;
    uint32_t               tokens;
} cb_norm_t;


static json_t *cb_parse_body(const char *body, size_t len, cb_err_t *err);
static int cb_parse_messages(cb_chat_t *chat, json_t *list, cb_norm_t *nm);
static json_t *cb_parse_message(json_t *m, size_t i, cb_norm_t *nm);
static int cb_parse_part(json_t *part, size_t i, size_t j, cb_text_t *text,
    json_t *attachments, cb_norm_t *nm);
static json_t *cb_attachment(const char *url, size_t url_len,
    const char *name, const char *kind, const char *fallback_type,
    size_t i, size_t j, cb_norm_t *nm);
static json_t *cb_data_attachment(const char *url, size_t url_len,
    const char *b64, size_t b64_len, const char *mime, const char *name,
    const char *kind, size_t i, size_t j, cb_norm_t *nm);
static int cb_parse_params(cb_chat_t *chat, cb_err_t *err);
static int cb_reject_unsupported(json_t *root, cb_err_t *err);
static int cb_number_in(json_t *root, const char *key, double min, double max,
    json_t *params, cb_err_t *err);
static void cb_apply_tavern(cb_chat_t *chat);
static int cb_text_add(cb_text_t *t, const char *s, size_t len);
static const char *cb_mime_ext(const char *mime);
static const char *cb_ext_mime(const char *path, size_t len);
static int cb_is_blank(const char *s, size_t len);


int
cb_chat_parse(cb_chat_t *chat, const char *body, size_t len,
    const cb_chat_opts_t *opts, cb_err_t *err)
{
    json_t     *model, *list;
    cb_norm_t   nm;

    memset(chat, 0, sizeof(cb_chat_t));

    chat->root = cb_parse_body(body, len, err);
    if (chat->root == NULL) {
        return -1;
    }

    model = json_object_get(chat->root, "model");

    if (model == NULL || json_is_null(model)) {
        cb_err_set(err, 400, "missing_required_parameter", "model",
                   "you must provide a model parameter");
        return -1;
    }

    if (!json_is_string(model) || json_string_length(model) == 0
        || json_string_length(model) > CB_MODEL_MAX)
    {
        cb_err_set(err, 400, "invalid_type", "model",
                   "model must be a non-empty string of at most %d bytes",
                   CB_MODEL_MAX);
        return -1;
    }

    chat->model = json_string_value(model);
    chat->model_len = json_string_length(model);

    if (cb_reject_unsupported(chat->root, err) != 0) {
        return -1;
    }

    if (cb_parse_params(chat, err) != 0) {
        return -1;
    }

    list = json_object_get(chat->root, "messages");

    if (list == NULL) {
        cb_err_set(err, 400, "missing_required_parameter", "messages",
                   "you must provide a messages parameter");
        return -1;
    }

    if (!json_is_array(list) || json_array_size(list) == 0) {
        cb_err_set(err, 400, "invalid_type", "messages",
                   "messages must be a non-empty array");
        return -1;
    }

    if (json_array_size(list) > opts->max_messages) {
        cb_err_set(err, 400, "too_many_messages", "messages",
                   "%zu messages is more than the %zu allowed",
                   json_array_size(list), opts->max_messages);
        return -1;
    }

    nm.opts = opts;
    nm.err = err;
    nm.text_bytes = 0;
    nm.nattachments = 0;
    nm.tokens = 0;

    if (cb_parse_messages(chat, list, &nm) != 0) {
        return -1;
    }

    if (opts->tavern) {
        cb_apply_tavern(chat);
    }

    if (opts->bypass) {
        cb_chat_bypass(chat->messages);
    }

    chat->prompt_tokens = nm.tokens;
    chat->nattachments = nm.nattachments;

    return 0;
}


/* bypass mode: a user message of a single space goes last */

void
cb_chat_bypass(json_t *messages)
{
    json_array_append_new(messages,
                          json_pack("{s:s, s:s}", "role", "user",
                                    "content", " "));
}


void
cb_chat_free(cb_chat_t *chat)
{
    json_decref(chat->messages);
    json_decref(chat->params);
    json_decref(chat->root);

    memset(chat, 0, sizeof(cb_chat_t));
}


int
cb_image_parse(cb_image_t *img, const char *body, size_t len, cb_err_t *err)
{
    json_t  *v;

    memset(img, 0, sizeof(cb_image_t));

    img->root = cb_parse_body(body, len, err);
    if (img->root == NULL) {
        return -1;
    }

    v = json_object_get(img->root, "prompt");

    if (v == NULL || !json_is_string(v) || json_string_length(v) == 0) {
        cb_err_set(err, 400, v ? "invalid_type" : "missing_required_parameter",
                   "prompt", "prompt must be a non-empty string");
        return -1;
    }

    img->prompt = json_string_value(v);

    v = json_object_get(img->root, "model");

    if (v == NULL || json_is_null(v)) {
        img->model = "dall-e-3";

    } else if (!json_is_string(v) || json_string_length(v) == 0
               || json_string_length(v) > CB_MODEL_MAX)
    {
        cb_err_set(err, 400, "invalid_type", "model",
                   "model must be a non-empty string");
        return -1;

    } else {
        img->model = json_string_value(v);
    }

    img->model_len = strlen(img->model);

    v = json_object_get(img->root, "n");
    img->n = 1;

    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1
            || json_integer_value(v) > 10)
        {
            cb_err_set(err, 400, "invalid_value", "n",
                       "n must be an integer from 1 to 10");
            return -1;
        }

        img->n = (unsigned) json_integer_value(v);
    }

    v = json_object_get(img->root, "response_format");

    if (v && !json_is_null(v)) {
        if (!json_is_string(v)
            || (strcmp(json_string_value(v), "url") != 0
                && strcmp(json_string_value(v), "b64_json") != 0))
        {
            cb_err_set(err, 400, "invalid_value", "response_format",
                       "response_format must be \"url\" or \"b64_json\"");
            return -1;
        }

        img->b64 = strcmp(json_string_value(v), "b64_json") == 0;
    }

    return 0;
}


void
cb_image_free(cb_image_t *img)
{
    json_decref(img->root);

    memset(img, 0, sizeof(cb_image_t));
}


char *
cb_task_json(const char *request_id, const char *kind, const char *op,
    const char *model, size_t model_len, int stream, json_t *messages,
    json_t *params, json_t *arena, size_t *len)
{
    char    *s;
    json_t  *task;

    task = json_pack("{s:s, s:s, s:s, s:s, s:s#, s:b, s:O, s:O}",
                     "type", "task", "request_id", request_id, "kind", kind,
                     "op", op, "model", model, model_len, "stream", stream,
                     "messages", messages,
                     "params", params ? params : json_object());
    if (task == NULL) {
        return NULL;
    }

    if (params == NULL) {
        /* json_pack's "O" took a reference to the fresh object */
        json_decref(json_object_get(task, "params"));
    }

    if (arena) {
        json_object_set(task, "arena", arena);
    }

    s = json_dumps(task, JSON_COMPACT);
    json_decref(task);

    if (s) {
        *len = strlen(s);
    }

    return s;
}


void
cb_err_set(cb_err_t *err, unsigned status, const char *code,
    const char *param, const char *fmt, ...)
{
    va_list  args;

    err->status = status;
    err->code = code;
    err->retry_after = 0;

    if (param) {
        snprintf(err->param, sizeof(err->param), "%s", param);

    } else {
        err->param[0] = '\0';
    }

    va_start(args, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, args);
    va_end(args);
}


static json_t *
cb_parse_body(const char *body, size_t len, cb_err_t *err)
{
    json_t        *root;
    json_error_t   jerr;

    if (len == 0) {
        cb_err_set(err, 400, "invalid_json", NULL,
                   "the request body is empty; send a JSON object");
        return NULL;
    }

    root = json_loadb(body, len, 0, &jerr);

    if (root == NULL) {
        cb_err_set(err, 400, "invalid_json", NULL,
                   "the request body is not valid JSON: %s "
                   "(line %d, column %d)", jerr.text, jerr.line,
                   jerr.column);
        return NULL;
    }

    if (!json_is_object(root)) {
        json_decref(root);
        cb_err_set(err, 400, "invalid_json", NULL,
                   "the request body must be a JSON object");
        return NULL;
    }

    return root;
}


static int
cb_parse_messages(cb_chat_t *chat, json_t *list, cb_norm_t *nm)
{
    size_t   i;
    json_t  *m, *out;

    chat->messages = json_array();
    if (chat->messages == NULL) {
        cb_err_set(nm->err, 500, "internal_error", NULL, "out of memory");
        return -1;
    }

    json_array_foreach(list, i, m) {
        out = cb_parse_message(m, i, nm);
        if (out == NULL) {
            return -1;
        }

        json_array_append_new(chat->messages, out);
    }

    return 0;
}


static json_t *
cb_parse_message(json_t *m, size_t i, cb_norm_t *nm)
{
    char         param[64];
    size_t       j;
    json_t      *role, *content, *name, *part, *out, *atts;
    cb_text_t    text;
    const char  *r;

    snprintf(param, sizeof(param), "messages[%zu]", i);

    if (!json_is_object(m)) {
        cb_err_set(nm->err, 400, "invalid_type", param,
                   "%s must be an object", param);
        return NULL;
    }

    snprintf(param, sizeof(param), "messages[%zu].role", i);

    role = json_object_get(m, "role");
    if (!json_is_string(role)) {
        cb_err_set(nm->err, 400, "invalid_value", param,
                   "%s must be one of system, developer, user, assistant",
                   param);
        return NULL;
    }

    r = json_string_value(role);

    if (strcmp(r, "developer") == 0) {
        r = "system";

    } else if (strcmp(r, "tool") == 0 || strcmp(r, "function") == 0) {
        cb_err_set(nm->err, 400, "unsupported_value", param,
                   "%s is \"%s\": tool and function calling are not "
                   "supported by browser sessions", param, r);
        return NULL;

    } else if (strcmp(r, "system") != 0 && strcmp(r, "user") != 0
               && strcmp(r, "assistant") != 0)
    {
        cb_err_set(nm->err, 400, "invalid_value", param,
                   "%s must be one of system, developer, user, assistant",
                   param);
        return NULL;
    }

    if (json_object_get(m, "tool_calls") || json_object_get(m, "function_call"))
    {
        snprintf(param, sizeof(param), "messages[%zu].tool_calls", i);
        cb_err_set(nm->err, 400, "unsupported_value", param,
                   "%s: tool calls are not supported by browser sessions",
                   param);
        return NULL;
    }

    memset(&text, 0, sizeof(cb_text_t));

    atts = json_array();
    out = json_object();

    if (atts == NULL || out == NULL) {
        goto nomem;
    }

    content = json_object_get(m, "content");

    if (content == NULL || json_is_null(content)) {
        /* an assistant turn may have no content; a user turn becomes " " */

    } else if (json_is_string(content)) {
        if (cb_text_add(&text, json_string_value(content),
                        json_string_length(content)) != 0)
        {
            goto nomem;
        }

    } else if (json_is_array(content)) {
        json_array_foreach(content, j, part) {
            if (cb_parse_part(part, i, j, &text, atts, nm) != 0) {
                goto failed;
            }
        }

    } else {
        snprintf(param, sizeof(param), "messages[%zu].content", i);
        cb_err_set(nm->err, 400, "invalid_type", param,
                   "%s must be a string or an array of content parts",
                   param);
        goto failed;
    }

    nm->text_bytes += text.len;

    if (nm->text_bytes > nm->opts->max_text) {
        cb_err_set(nm->err, 413, "text_too_large", "messages",
                   "the messages hold more than %zu bytes of text",
                   nm->opts->max_text);
        goto failed;
    }

    /* the site refuses an empty user turn; send a single space instead */

    if (strcmp(r, "user") == 0 && cb_is_blank(text.data, text.len)) {
        text.len = 0;
        if (cb_text_add(&text, " ", 1) != 0) {
            goto nomem;
        }
    }

    nm->tokens += 4 + cb_estimate_tokens((const cb_u8 *) text.data,
                                         text.len);

    if (json_object_set_new(out, "role", json_string(r)) != 0
        || json_object_set_new(out, "content",
                               json_stringn(text.data ? text.data : "",
                                            text.len)) != 0)
    {
        goto nomem;
    }

    name = json_object_get(m, "name");

    if (json_is_string(name) && json_string_length(name) > 0
        && json_string_length(name) <= CB_NAME_MAX)
    {
        json_object_set(out, "name", name);
    }

    if (json_array_size(atts)) {
        json_object_set(out, "attachments", atts);
    }

    json_decref(atts);
    free(text.data);

    return out;

nomem:

    cb_err_set(nm->err, 500, "internal_error", NULL, "out of memory");

failed:

    json_decref(atts);
    json_decref(out);
    free(text.data);

    return NULL;
}


static int
cb_parse_part(json_t *part, size_t i, size_t j, cb_text_t *text,
    json_t *attachments, cb_norm_t *nm)
{
    char         param[96], url[64];
    json_t      *type, *v, *obj, *att, *name;
    const char  *t, *s, *fmt, *mime, *fname;

    snprintf(param, sizeof(param), "messages[%zu].content[%zu]", i, j);

    type = json_object_get(part, "type");

    if (!json_is_object(part) || !json_is_string(type)) {
        cb_err_set(nm->err, 400, "invalid_type", param,
                   "%s must be an object with a type", param);
        return -1;
    }

    t = json_string_value(type);
    name = json_object_get(part, "name");
    fname = json_is_string(name) ? json_string_value(name) : NULL;

    if (strcmp(t, "text") == 0 || strcmp(t, "input_text") == 0
        || strcmp(t, "refusal") == 0)
    {
        v = json_object_get(part, strcmp(t, "refusal") ? "text" : "refusal");

        if (!json_is_string(v)) {
            cb_err_set(nm->err, 400, "invalid_type", param,
                       "%s.text must be a string", param);
            return -1;
        }

        if ((text->len && cb_text_add(text, "\n\n", 2) != 0)
            || cb_text_add(text, json_string_value(v),
                           json_string_length(v)) != 0)
        {
            cb_err_set(nm->err, 500, "internal_error", NULL, "out of memory");
            return -1;
        }

        return 0;
    }

    if (strcmp(t, "image_url") == 0) {
        obj = json_object_get(part, "image_url");
        v = json_is_object(obj) ? json_object_get(obj, "url") : obj;

        if (!json_is_string(v)) {
            cb_err_set(nm->err, 400, "invalid_type", param,
                       "%s.image_url.url must be a string", param);
            return -1;
        }

        /* LMArena Bridge took a file name from "detail"; so do we */

        if (fname == NULL && json_is_object(obj)) {
            s = json_string_value(json_object_get(obj, "detail"));

            if (s && strcmp(s, "auto") && strcmp(s, "low")
                && strcmp(s, "high"))
            {
                fname = s;
            }
        }

        att = cb_attachment(json_string_value(v), json_string_length(v),
                            fname, "image", "image/png", i, j, nm);

    } else if (strcmp(t, "input_audio") == 0) {
        obj = json_object_get(part, "input_audio");
        v = json_object_get(obj, "data");
        fmt = json_string_value(json_object_get(obj, "format"));

        if (!json_is_string(v) || fmt == NULL) {
            cb_err_set(nm->err, 400, "invalid_type", param,
                       "%s.input_audio needs data (base64) and format",
                       param);
            return -1;
        }

        mime = strcmp(fmt, "mp3") == 0 ? "audio/mpeg"
             : strcmp(fmt, "wav") == 0 ? "audio/wav" : NULL;

        if (mime == NULL) {
            cb_err_set(nm->err, 400, "invalid_value", param,
                       "%s.input_audio.format must be wav or mp3", param);
            return -1;
        }

        att = cb_data_attachment(NULL, 0, json_string_value(v),
                                 json_string_length(v), mime, fname, "audio",
                                 i, j, nm);

    } else if (strcmp(t, "file") == 0) {
        obj = json_object_get(part, "file");

        if (json_object_get(obj, "file_id")) {
            cb_err_set(nm->err, 400, "unsupported_value", param,
                       "%s.file.file_id: uploaded files are not supported; "
                       "send the file inline as file_data", param);
            return -1;
        }

        v = json_object_get(obj, "file_data");

        if (!json_is_string(v)) {
            cb_err_set(nm->err, 400, "invalid_type", param,
                       "%s.file.file_data must be a string", param);
            return -1;
        }

        if (fname == NULL) {
            fname = json_string_value(json_object_get(obj, "filename"));
        }

        s = json_string_value(v);

        if (strncmp(s, "data:", 5) == 0) {
            att = cb_attachment(s, json_string_length(v), fname, "file",
                                "application/octet-stream", i, j, nm);

        } else {
            /* bare base64: the type comes from the file name */
            mime = fname ? cb_ext_mime(fname, strlen(fname)) : NULL;
            att = cb_data_attachment(NULL, 0, s, json_string_length(v),
                                     mime ? mime : "application/octet-stream",
                                     fname, "file", i, j, nm);
        }

    } else {
        snprintf(url, sizeof(url), "%.40s", t);
        cb_err_set(nm->err, 400, "invalid_value", param,
                   "%s.type \"%s\" is not supported; use text, image_url, "
                   "input_audio or file", param, url);
        return -1;
    }

    if (att == NULL) {
        return -1;
    }

    json_array_append_new(attachments, att);

    return 0;
}


/* an attachment from a data: URL or an http(s) URL */

static json_t *
cb_attachment(const char *url, size_t url_len, const char *name,
    const char *kind, const char *fallback_type, size_t i, size_t j,
    cb_norm_t *nm)
{
    char         param[96], mime[128], gen[96];
    size_t       k, mlen;
    const char  *comma, *p, *slash, *type;
    json_t      *att;

    snprintf(param, sizeof(param), "messages[%zu].content[%zu]", i, j);

    if (url_len > 5 && strncmp(url, "data:", 5) == 0) {
        comma = memchr(url, ',', url_len);

        if (comma == NULL) {
            cb_err_set(nm->err, 400, "invalid_value", param,
                       "%s: a data URL needs a comma before its data", param);
            return NULL;
        }

        p = url + 5;
        mlen = strcspn(p, ";,");
        if (mlen >= sizeof(mime)) {
            mlen = sizeof(mime) - 1;
        }

        memcpy(mime, p, mlen);
        mime[mlen] = '\0';

        if (mlen == 0) {
            strcpy(mime, "text/plain");
        }

        if (memmem(url, comma - url, ";base64", 7) == NULL) {
            /* percent-encoded data: its size is about its length */
            return cb_data_attachment(url, url_len, NULL, url_len, mime, name,
                                      kind, i, j, nm);
        }

        return cb_data_attachment(url, url_len, comma + 1,
                                  url_len - (comma + 1 - url), mime, name,
                                  kind, i, j, nm);
    }

    if (!(url_len > 7 && strncmp(url, "http://", 7) == 0)
        && !(url_len > 8 && strncmp(url, "https://", 8) == 0))
    {
        cb_err_set(nm->err, 400, "invalid_value", param,
                   "%s: the URL must be a data: URL or an http(s) URL", param);
        return NULL;
    }

    if (++nm->nattachments > nm->opts->max_attachments) {
        cb_err_set(nm->err, 400, "too_many_attachments", param,
                   "more than %zu attachments", nm->opts->max_attachments);
        return NULL;
    }

    /* the type and the name come from the last path segment */

    k = strcspn(url, "?#");
    slash = url;

    for (p = strchr(url, ':') + 3; p < url + k; p++) {
        if (*p == '/') {
            slash = p + 1;
        }
    }

    type = cb_ext_mime(slash, url + k - slash);

    if (name == NULL) {
        if (type && url + k - slash < 80) {
            snprintf(gen, sizeof(gen), "%.*s", (int) (url + k - slash), slash);

        } else {
            snprintf(gen, sizeof(gen), "%s_%zu_%zu.%s", kind, i + 1, j + 1,
                     cb_mime_ext(type ? type : fallback_type));
        }

        name = gen;
    }

    att = json_pack("{s:s, s:s, s:s#}", "name", name,
                    "contentType", type ? type : fallback_type,
                    "url", url, url_len);
    if (att == NULL) {
        cb_err_set(nm->err, 400, "invalid_value", param,
                   "%s: the attachment name or URL is not valid UTF-8",
                   param);
    }

    return att;
}


/*
 * An inline attachment.  "url" is the data: URL when the client sent one;
 * otherwise one is built from the base64 data and the type.
 */

static json_t *
cb_data_attachment(const char *url, size_t url_len, const char *b64,
    size_t b64_len, const char *mime, const char *name, const char *kind,
    size_t i, size_t j, cb_norm_t *nm)
{
    char         param[96], gen[96];
    char        *built;
    size_t       k, size, pad;
    json_t      *att;
    const char  *base;

    snprintf(param, sizeof(param), "messages[%zu].content[%zu]", i, j);

    if (++nm->nattachments > nm->opts->max_attachments) {
        cb_err_set(nm->err, 400, "too_many_attachments", param,
                   "more than %zu attachments", nm->opts->max_attachments);
        return NULL;
    }

    size = b64_len;

    if (b64 && url_len != b64_len) {

        /* base64: check the alphabet, size the decoded data */

        pad = 0;

        for (k = 0; k < b64_len; k++) {
            char  c = b64[k];

            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
                || (c >= '0' && c <= '9') || c == '+' || c == '/'
                || c == '-' || c == '_')
            {
                if (pad) {
                    break;
                }

                continue;
            }

            if (c == '=' && pad < 2) {
                pad++;
                continue;
            }

            break;
        }

        if (k != b64_len || b64_len == 0) {
            cb_err_set(nm->err, 400, "invalid_value", param,
                       "%s: the attachment data is not valid base64", param);
            return NULL;
        }

        size = b64_len / 4 * 3 + (b64_len % 4 ? b64_len % 4 - 1 : 0) - pad;
    }

    if (size > nm->opts->max_attachment) {
        cb_err_set(nm->err, 413, "attachment_too_large", param,
                   "%s: the attachment is %zu bytes, more than the %zu "
                   "allowed", param, size, nm->opts->max_attachment);
        return NULL;
    }

    base = strchr(mime, '/');
    if (base == NULL || strlen(mime) > 100 || strchr(mime, '"')) {
        cb_err_set(nm->err, 400, "invalid_value", param,
                   "%s: \"%.100s\" is not a media type", param, mime);
        return NULL;
    }

    if (name == NULL) {
        snprintf(gen, sizeof(gen), "%s_%zu_%zu.%s",
                 strncmp(mime, "image/", 6) == 0 ? "image"
                 : strncmp(mime, "audio/", 6) == 0 ? "audio" : kind,
                 i + 1, j + 1, cb_mime_ext(mime));
        name = gen;
    }

    built = NULL;

    if (url == NULL) {
        url_len = 5 + strlen(mime) + 8 + b64_len;

        built = malloc(url_len + 1);
        if (built == NULL) {
            cb_err_set(nm->err, 500, "internal_error", NULL, "out of memory");
            return NULL;
        }

        snprintf(built, url_len + 1, "data:%s;base64,%.*s", mime,
                 (int) b64_len, b64);
        url = built;
    }

    att = json_pack("{s:s, s:s, s:s#}", "name", name, "contentType", mime,
                    "url", url, url_len);

    free(built);

    if (att == NULL) {
        cb_err_set(nm->err, 400, "invalid_value", param,
                   "%s: the attachment is not valid UTF-8", param);
    }

    return att;
}


static int
cb_parse_params(cb_chat_t *chat, cb_err_t *err)
{
    size_t   i;
    json_t  *root, *v, *opts, *item;

    root = chat->root;

    chat->params = json_object();
    if (chat->params == NULL) {
        cb_err_set(err, 500, "internal_error", NULL, "out of memory");
        return -1;
    }

    v = json_object_get(root, "stream");

    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            cb_err_set(err, 400, "invalid_type", "stream",
                       "stream must be a boolean");
            return -1;
        }

        chat->stream = json_is_true(v);
    }

    opts = json_object_get(root, "stream_options");

    if (opts && !json_is_null(opts)) {
        if (!json_is_object(opts)) {
            cb_err_set(err, 400, "invalid_type", "stream_options",
                       "stream_options must be an object");
            return -1;
        }

        v = json_object_get(opts, "include_usage");

        if (v && !json_is_boolean(v)) {
            cb_err_set(err, 400, "invalid_type",
                       "stream_options.include_usage",
                       "stream_options.include_usage must be a boolean");
            return -1;
        }

        chat->include_usage = json_is_true(v);
    }

    if (cb_number_in(root, "temperature", 0, 2, chat->params, err) != 0
        || cb_number_in(root, "top_p", 0, 1, chat->params, err) != 0
        || cb_number_in(root, "presence_penalty", -2, 2, chat->params, err)
           != 0
        || cb_number_in(root, "frequency_penalty", -2, 2, chat->params, err)
           != 0)
    {
        return -1;
    }

    /* max_completion_tokens is the newer name; it wins when both are set */

    v = json_object_get(root, "max_completion_tokens");
    if (v == NULL || json_is_null(v)) {
        v = json_object_get(root, "max_tokens");
    }

    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            cb_err_set(err, 400, "invalid_value",
                       json_object_get(root, "max_completion_tokens")
                       ? "max_completion_tokens" : "max_tokens",
                       "the token limit must be a positive integer");
            return -1;
        }

        json_object_set(chat->params, "max_tokens", v);
    }

    v = json_object_get(root, "stop");

    if (v && !json_is_null(v)) {
        if (json_is_string(v)) {
            json_object_set_new(chat->params, "stop", json_pack("[O]", v));

        } else if (json_is_array(v) && json_array_size(v) <= 4) {
            json_array_foreach(v, i, item) {
                if (!json_is_string(item)) {
                    break;
                }
            }

            if (i != json_array_size(v)) {
                cb_err_set(err, 400, "invalid_type", "stop",
                           "stop must be a string or up to 4 strings");
                return -1;
            }

            json_object_set(chat->params, "stop", v);

        } else {
            cb_err_set(err, 400, "invalid_type", "stop",
                       "stop must be a string or up to 4 strings");
            return -1;
        }
    }

    v = json_object_get(root, "seed");

    if (v && !json_is_null(v)) {
        if (!json_is_integer(v)) {
            cb_err_set(err, 400, "invalid_type", "seed",
                       "seed must be an integer");
            return -1;
        }

        json_object_set(chat->params, "seed", v);
    }

    v = json_object_get(root, "reasoning_effort");

    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) > 16) {
            cb_err_set(err, 400, "invalid_type", "reasoning_effort",
                       "reasoning_effort must be a short string");
            return -1;
        }

        json_object_set(chat->params, "reasoning_effort", v);
    }

    return 0;
}


/*
 * Options a browser session cannot honour are refused by name rather than
 * ignored, so that a client never believes it got what it asked for.
 */

static int
cb_reject_unsupported(json_t *root, cb_err_t *err)
{
    json_t      *v;
    const char  *s;

    v = json_object_get(root, "n");

    if (v && !json_is_null(v)
        && (!json_is_integer(v) || json_integer_value(v) != 1))
    {
        cb_err_set(err, 400, "unsupported_value", "n",
                   "n must be 1: a browser session gives one answer per "
                   "request");
        return -1;
    }

    v = json_object_get(root, "tools");

    if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
    {
        cb_err_set(err, 400, "unsupported_parameter", "tools",
                   "tools are not supported: browser sessions have no "
                   "function calling");
        return -1;
    }

    v = json_object_get(root, "functions");

    if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
    {
        cb_err_set(err, 400, "unsupported_parameter", "functions",
                   "functions are not supported: browser sessions have no "
                   "function calling");
        return -1;
    }

    v = json_object_get(root, "tool_choice");
    s = json_string_value(v);

    if (v && !json_is_null(v)
        && !(s && (strcmp(s, "none") == 0 || strcmp(s, "auto") == 0)))
    {
        cb_err_set(err, 400, "unsupported_parameter", "tool_choice",
                   "tool_choice is not supported: browser sessions have no "
                   "function calling");
        return -1;
    }

    v = json_object_get(root, "logprobs");

    if (json_is_true(v)) {
        cb_err_set(err, 400, "unsupported_parameter", "logprobs",
                   "logprobs are not available from browser sessions");
        return -1;
    }

    v = json_object_get(root, "response_format");
    s = json_string_value(json_object_get(v, "type"));

    if (v && !json_is_null(v) && !(s && strcmp(s, "text") == 0)) {
        cb_err_set(err, 400, "unsupported_value", "response_format",
                   "only response_format {\"type\": \"text\"} is supported: "
                   "browser sessions cannot enforce JSON output");
        return -1;
    }

    v = json_object_get(root, "audio");

    if (v && !json_is_null(v)) {
        cb_err_set(err, 400, "unsupported_parameter", "audio",
                   "audio output is not supported");
        return -1;
    }

    v = json_object_get(root, "logit_bias");

    if (v && !json_is_null(v)
        && !(json_is_object(v) && json_object_size(v) == 0))
    {
        cb_err_set(err, 400, "unsupported_parameter", "logit_bias",
                   "logit_bias is not supported by browser sessions");
        return -1;
    }

    return 0;
}


static int
cb_number_in(json_t *root, const char *key, double min, double max,
    json_t *params, cb_err_t *err)
{
    double   d;
    json_t  *v;

    v = json_object_get(root, key);

    if (v == NULL || json_is_null(v)) {
        return 0;
    }

    if (!json_is_number(v)) {
        cb_err_set(err, 400, "invalid_type", key, "%s must be a number", key);
        return -1;
    }

    d = json_number_value(v);

    if (d < min || d > max) {
        cb_err_set(err, 400, "invalid_value", key,
                   "%s must be between %g and %g", key, min, max);
        return -1;
    }

    json_object_set(params, key, v);

    return 0;
}


/*
 * Tavern mode: every system message, in order, merged into one system
 * message at the front (joined by a blank line); none if the text is empty.
 */

static void
cb_apply_tavern(cb_chat_t *chat)
{
    size_t      i;
    json_t     *out, *m;
    cb_text_t   merged;
    const char *role, *content;

    memset(&merged, 0, sizeof(cb_text_t));

    out = json_array();
    if (out == NULL) {
        return;
    }

    json_array_foreach(chat->messages, i, m) {
        role = json_string_value(json_object_get(m, "role"));

        if (strcmp(role, "system") != 0) {
            continue;
        }

        content = json_string_value(json_object_get(m, "content"));

        if (cb_is_blank(content, strlen(content))) {
            continue;
        }

        if ((merged.len && cb_text_add(&merged, "\n\n", 2) != 0)
            || cb_text_add(&merged, content, strlen(content)) != 0)
        {
            free(merged.data);
            json_decref(out);
            return;
        }
    }

    if (merged.len) {
        json_array_append_new(out,
                              json_pack("{s:s, s:s#}", "role", "system",
                                        "content", merged.data, merged.len));
    }

    json_array_foreach(chat->messages, i, m) {
        role = json_string_value(json_object_get(m, "role"));

        if (strcmp(role, "system") != 0) {
            json_array_append(out, m);
        }
    }

    free(merged.data);

    json_decref(chat->messages);
    chat->messages = out;
}


static int
cb_text_add(cb_text_t *t, const char *s, size_t len)
{
    char    *p;
    size_t   size;

    if (t->len + len + 1 > t->size) {
        size = (t->len + len + 1) * 2;

        p = realloc(t->data, size);
        if (p == NULL) {
            return -1;
        }

        t->data = p;
        t->size = size;
    }

    memcpy(t->data + t->len, s, len);
    t->len += len;
    t->data[t->len] = '\0';

    return 0;
}


static const struct {
    const char  *mime;
    const char  *ext;
} cb_types[] = {
    { "image/png", "png" },
    { "image/jpeg", "jpg" },
    { "image/jpeg", "jpeg" },
    { "image/gif", "gif" },
    { "image/webp", "webp" },
    { "image/svg+xml", "svg" },
    { "image/bmp", "bmp" },
    { "audio/mpeg", "mp3" },
    { "audio/wav", "wav" },
    { "audio/ogg", "ogg" },
    { "audio/webm", "weba" },
    { "audio/flac", "flac" },
    { "video/mp4", "mp4" },
    { "video/webm", "webm" },
    { "application/pdf", "pdf" },
    { "application/json", "json" },
    { "text/plain", "txt" },
    { "text/markdown", "md" },
    { "text/csv", "csv" },
    { "text/html", "html" }
};


static const char *
cb_mime_ext(const char *mime)
{
    size_t  i;

    for (i = 0; i < sizeof(cb_types) / sizeof(cb_types[0]); i++) {
        if (strcmp(cb_types[i].mime, mime) == 0) {
            return cb_types[i].ext;
        }
    }

    return "bin";
}


static const char *
cb_ext_mime(const char *path, size_t len)
{
    size_t       i, elen;
    const char  *dot;

    dot = NULL;

    for (i = 0; i < len; i++) {
        if (path[i] == '.') {
            dot = path + i + 1;
        }
    }

    if (dot == NULL) {
        return NULL;
    }

    elen = path + len - dot;

    for (i = 0; i < sizeof(cb_types) / sizeof(cb_types[0]); i++) {
        if (strlen(cb_types[i].ext) == elen
            && strncasecmp(cb_types[i].ext, dot, elen) == 0)
        {
            return cb_types[i].mime;
        }
    }

    return NULL;
}


static int
cb_is_blank(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
            return 0;
        }
    }

    return 1;
}
