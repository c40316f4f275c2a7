
/*
 * Copyright (C) chatbridge authors
 */


#include <string.h>
#include <stdio.h>

#include "cb_json.h"


static size_t cb_utf8_seq(const cb_u8 *s, size_t len);
static cb_u8 *cb_cpy(cb_u8 *dst, const char *s);
static cb_u8 *cb_quoted(cb_u8 *dst, const char *s);


/* which ASCII bytes need escaping: 0 no, 1 short form, 2 \u00XX */

static const cb_u8  cb_escape_class[128] = {
    2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 1, 1, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
};


/*
 * Escaped length of a string: invalid UTF-8 becomes U+FFFD (3 bytes), so the
 * output is always valid JSON in valid UTF-8.
 */

size_t
cb_json_escaped_len(const cb_u8 *s, size_t len)
{
    size_t  n, i, k;

    n = 0;
    i = 0;

    while (i < len) {

        if (s[i] < 0x80) {
            switch (cb_escape_class[s[i]]) {
            case 0:
                n += 1;
                break;
            case 1:
                n += 2;
                break;
            default:
                n += 6;
            }

            i++;
            continue;
        }

        k = cb_utf8_seq(s + i, len - i);

        if (k == 0) {
            n += 3;
            i++;

        } else {
            n += k;
            i += k;
        }
    }

    return n;
}


cb_u8 *
cb_json_escape(cb_u8 *dst, const cb_u8 *s, size_t len)
{
    size_t                 i, k;
    static const cb_u8     hex[] = "0123456789abcdef";

    i = 0;

    while (i < len) {

        if (s[i] < 0x80) {
            switch (cb_escape_class[s[i]]) {

            case 0:
                *dst++ = s[i];
                break;

            case 1:
                *dst++ = '\\';

                switch (s[i]) {
                case '\b': *dst++ = 'b'; break;
                case '\t': *dst++ = 't'; break;
                case '\n': *dst++ = 'n'; break;
                case '\f': *dst++ = 'f'; break;
                case '\r': *dst++ = 'r'; break;
                default:   *dst++ = s[i];
                }

                break;

            default:
                *dst++ = '\\';
                *dst++ = 'u';
                *dst++ = '0';
                *dst++ = '0';
                *dst++ = hex[s[i] >> 4];
                *dst++ = hex[s[i] & 0xf];
            }

            i++;
            continue;
        }

        k = cb_utf8_seq(s + i, len - i);

        if (k == 0) {
            *dst++ = 0xef;
            *dst++ = 0xbf;
            *dst++ = 0xbd;
            i++;
            continue;
        }

        memcpy(dst, s + i, k);
        dst += k;
        i += k;
    }

    return dst;
}


/* length of the longest prefix made of whole, valid UTF-8 characters */

size_t
cb_utf8_valid_prefix(const cb_u8 *s, size_t len)
{
    size_t  i, k;

    i = 0;

    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }

        k = cb_utf8_seq(s + i, len - i);
        if (k == 0) {
            break;
        }

        i += k;
    }

    return i;
}


/*
 * Where to cut s so that the first part is at most max bytes and does not
 * split a character: the returned length is > 0 whenever len > 0 and max >= 4.
 */

size_t
cb_utf8_cut(const cb_u8 *s, size_t len, size_t max)
{
    size_t  n;

    if (len <= max) {
        return len;
    }

    n = max;

    /* back up over continuation bytes, at most 3 */

    while (n > 0 && n > max - 3 && (s[n] & 0xc0) == 0x80) {
        n--;
    }

    return n ? n : max;
}


/*
 * A token estimate for when the site reports no usage: about four bytes of
 * ASCII text per token, and one token per other character (CJK and most
 * non-Latin scripts tokenize at about a character per token).  Rounded up.
 */

uint32_t
cb_estimate_tokens(const cb_u8 *s, size_t len)
{
    size_t  i, ascii, other, k;

    ascii = 0;
    other = 0;
    i = 0;

    while (i < len) {
        if (s[i] < 0x80) {
            ascii++;
            i++;
            continue;
        }

        k = cb_utf8_seq(s + i, len - i);
        i += k ? k : 1;
        other++;
    }

    return (uint32_t) ((ascii + 3) / 4 + other);
}


size_t
cb_chunk_head(cb_u8 *dst, const cb_u8 *id, size_t id_len,
    const cb_u8 *model, size_t model_len, uint64_t created,
    const char *object)
{
    cb_u8  *p;
    char    num[24];

    p = dst;
    p = cb_cpy(p, "{\"id\":\"");
    p = cb_json_escape(p, id, id_len);
    p = cb_cpy(p, "\",\"object\":\"");
    p = cb_cpy(p, object);
    p = cb_cpy(p, "\",\"created\":");
    snprintf(num, sizeof(num), "%llu", (unsigned long long) created);
    p = cb_cpy(p, num);
    p = cb_cpy(p, ",\"model\":\"");
    p = cb_json_escape(p, model, model_len);
    *p++ = '"';

    return p - dst;
}


size_t
cb_usage_json(cb_u8 *dst, const cb_usage_t *u)
{
    int  n;

    n = snprintf((char *) dst, CB_USAGE_SIZE,
                 "{\"prompt_tokens\":%u,\"completion_tokens\":%u,"
                 "\"total_tokens\":%u,"
                 "\"completion_tokens_details\":{\"reasoning_tokens\":%u},"
                 "\"estimated\":%s}",
                 u->prompt_tokens, u->completion_tokens, u->total_tokens,
                 u->reasoning_tokens, u->estimated ? "true" : "false");

    return n > 0 && n < CB_USAGE_SIZE ? (size_t) n : 0;
}


size_t
cb_sse_delta_size(size_t head_len, const char *field, const cb_u8 *text,
    size_t len)
{
    return head_len + CB_DELTA_OVERHEAD + strlen(field)
           + cb_json_escaped_len(text, len);
}


size_t
cb_sse_delta(cb_u8 *dst, const cb_u8 *head, size_t head_len,
    const char *field, const cb_u8 *text, size_t len)
{
    cb_u8  *p;

    p = cb_cpy(dst, "data: ");
    memcpy(p, head, head_len);
    p += head_len;
    p = cb_cpy(p, ",\"choices\":[{\"index\":0,\"delta\":{");
    p = cb_quoted(p, field);
    p = cb_cpy(p, ":\"");
    p = cb_json_escape(p, text, len);
    p = cb_cpy(p, "\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");

    return p - dst;
}


size_t
cb_sse_role(cb_u8 *dst, const cb_u8 *head, size_t head_len)
{
    cb_u8  *p;

    p = cb_cpy(dst, "data: ");
    memcpy(p, head, head_len);
    p += head_len;
    p = cb_cpy(p, ",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                  "\"assistant\",\"content\":\"\",\"refusal\":null},"
                  "\"logprobs\":null,\"finish_reason\":null}]}\n\n");

    return p - dst;
}


size_t
cb_sse_finish(cb_u8 *dst, const cb_u8 *head, size_t head_len,
    const char *reason)
{
    cb_u8  *p;

    p = cb_cpy(dst, "data: ");
    memcpy(p, head, head_len);
    p += head_len;
    p = cb_cpy(p, ",\"choices\":[{\"index\":0,\"delta\":{},"
                  "\"logprobs\":null,\"finish_reason\":");
    p = cb_quoted(p, reason);
    p = cb_cpy(p, "}]}\n\n");

    return p - dst;
}


size_t
cb_sse_usage(cb_u8 *dst, const cb_u8 *head, size_t head_len,
    const cb_usage_t *u)
{
    cb_u8  *p;

    p = cb_cpy(dst, "data: ");
    memcpy(p, head, head_len);
    p += head_len;
    p = cb_cpy(p, ",\"choices\":[],\"usage\":");
    p += cb_usage_json(p, u);
    p = cb_cpy(p, "}\n\n");

    return p - dst;
}


size_t
cb_error_json_size(const char *message, size_t message_len, const char *type,
    const char *code, const char *param)
{
    return 64 + cb_json_escaped_len((const cb_u8 *) message, message_len)
           + strlen(type) + (code ? strlen(code) : 4)
           + (param ? strlen(param) : 4);
}


size_t
cb_error_json(cb_u8 *dst, const char *message, size_t message_len,
    const char *type, const char *code, const char *param)
{
    cb_u8  *p;

    p = cb_cpy(dst, "{\"error\":{\"message\":\"");
    p = cb_json_escape(p, (const cb_u8 *) message, message_len);
    p = cb_cpy(p, "\",\"type\":");
    p = cb_quoted(p, type);
    p = cb_cpy(p, ",\"param\":");
    p = param ? cb_quoted(p, param) : cb_cpy(p, "null");
    p = cb_cpy(p, ",\"code\":");
    p = code ? cb_quoted(p, code) : cb_cpy(p, "null");
    p = cb_cpy(p, "}}");

    return p - dst;
}


/* OpenAI's error "type" for an HTTP status */

const char *
cb_error_type(unsigned status)
{
    switch (status) {
    case 400:
    case 404:
    case 405:
    case 413:
    case 415:
    case 422:
        return "invalid_request_error";
    case 401:
        return "invalid_request_error";     /* as OpenAI says it */
    case 403:
        return "permission_error";
    case 429:
        return "rate_limit_error";
    default:
        return status < 500 ? "invalid_request_error" : "server_error";
    }
}


/* length of the valid UTF-8 sequence at s, or 0 if it is not valid */

static size_t
cb_utf8_seq(const cb_u8 *s, size_t len)
{
    cb_u8  c;

    c = s[0];

    if (c >= 0xc2 && c <= 0xdf) {
        return (len >= 2 && (s[1] & 0xc0) == 0x80) ? 2 : 0;
    }

    if (c >= 0xe0 && c <= 0xef) {
        if (len < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80) {
            return 0;
        }

        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f)) {
            return 0;       /* overlong, or a surrogate */
        }

        return 3;
    }

    if (c >= 0xf0 && c <= 0xf4) {
        if (len < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80
            || (s[3] & 0xc0) != 0x80)
        {
            return 0;
        }

        if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f)) {
            return 0;
        }

        return 4;
    }

    return 0;
}


static cb_u8 *
cb_cpy(cb_u8 *dst, const char *s)
{
    size_t  n;

    n = strlen(s);
    memcpy(dst, s, n);

    return dst + n;
}


static cb_u8 *
cb_quoted(cb_u8 *dst, const char *s)
{
    *dst++ = '"';
    dst = cb_json_escape(dst, (const cb_u8 *) s, strlen(s));
    *dst++ = '"';

    return dst;
}
