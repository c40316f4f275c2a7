
/*
 * Copyright (C) chatbridge authors
 *
 * Check tests for the OpenAI JSON and SSE encoders: every output is parsed
 * back with jansson, and the size functions are checked to bound it.
 */


#include "cb_check.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cb_json.h"


static char *
escape(const char *s, size_t len)
{
    char    *out;
    size_t   n;
    cb_u8   *end;

    n = cb_json_escaped_len((const cb_u8 *) s, len);
    out = malloc(n + 1);
    end = cb_json_escape((cb_u8 *) out, (const cb_u8 *) s, len);

    ck_assert_uint_eq((size_t) ((char *) end - out), n);
    out[n] = '\0';

    return out;
}


/* wrap an escaped string in quotes and parse it with jansson */

static char *
roundtrip(const char *s, size_t len)
{
    char          *esc, *doc, *out;
    json_t        *v;
    json_error_t   err;

    esc = escape(s, len);
    doc = malloc(strlen(esc) + 3);
    sprintf(doc, "\"%s\"", esc);

    v = json_loads(doc, JSON_DECODE_ANY, &err);
    ck_assert_msg(v != NULL, "not JSON: %s (%s)", doc, err.text);

    out = strdup(json_string_value(v));

    json_decref(v);
    free(doc);
    free(esc);

    return out;
}


START_TEST(test_escape_specials)
{
    char  *e;

    e = escape("a\"b\\c\n\r\t\b\f", 10);
    ck_assert_str_eq(e, "a\\\"b\\\\c\\n\\r\\t\\b\\f");
    free(e);

    e = escape("\x01\x1f\x7f", 3);
    ck_assert_str_eq(e, "\\u0001\\u001f\x7f");
    free(e);

    e = escape("</script>", 9);
    ck_assert_str_eq(e, "</script>");
    free(e);
}
END_TEST


START_TEST(test_escape_utf8)
{
    char        *r;
    const char  *s = "héllo 世界 🎉 \xe2\x80\xa8";

    r = roundtrip(s, strlen(s));
    ck_assert_str_eq(r, s);        /* valid UTF-8 passes untouched */
    free(r);
}
END_TEST


START_TEST(test_escape_invalid_utf8)
{
    char        *r;
    const char   bad[] = "a\xff" "b\xc3" "c\xe4\xb8" "d\xed\xa0\x80";

    /* every bad byte becomes U+FFFD, so the JSON is still valid */
    r = roundtrip(bad, sizeof(bad) - 1);
    ck_assert_str_eq(r, "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xef\xbf\xbd"
                        "\xef\xbf\xbd" "d\xef\xbf\xbd\xef\xbf\xbd"
                        "\xef\xbf\xbd");
    free(r);
}
END_TEST


START_TEST(test_utf8_cut_and_prefix)
{
    size_t       n, i;
    const char  *s = "ab世界🎉";      /* 2 + 3 + 3 + 4 bytes */

    ck_assert_uint_eq(cb_utf8_cut((const cb_u8 *) s, 12, 100), 12);
    ck_assert_uint_eq(cb_utf8_cut((const cb_u8 *) s, 12, 4), 2);
    ck_assert_uint_eq(cb_utf8_cut((const cb_u8 *) s, 12, 5), 5);
    ck_assert_uint_eq(cb_utf8_cut((const cb_u8 *) s, 12, 10), 8);

    for (i = 4; i < 12; i++) {
        n = cb_utf8_cut((const cb_u8 *) s, 12, i);
        ck_assert_uint_le(n, i);
        ck_assert_uint_eq(cb_utf8_valid_prefix((const cb_u8 *) s, n), n);
    }

    ck_assert_uint_eq(cb_utf8_valid_prefix((const cb_u8 *) "ab\xe4\xb8", 4),
                      2);
}
END_TEST


START_TEST(test_estimate_tokens)
{
    ck_assert_uint_eq(cb_estimate_tokens((const cb_u8 *) "", 0), 0);
    ck_assert_uint_eq(cb_estimate_tokens((const cb_u8 *) "abcd", 4), 1);
    ck_assert_uint_eq(cb_estimate_tokens((const cb_u8 *) "abcde", 5), 2);
    /* one token per CJK character */
    ck_assert_uint_eq(cb_estimate_tokens((const cb_u8 *) "世界世界", 12), 4);
}
END_TEST


START_TEST(test_sse_delta_parses)
{
    char          *p, buf[2048];
    size_t         n, head_len;
    json_t        *j;
    cb_u8          head[512];
    json_error_t   err;
    const char    *text = "line \"one\"\nline 二";

    head_len = cb_chunk_head(head, (const cb_u8 *) "chatcmpl-abc", 12,
                             (const cb_u8 *) "gpt \"x\"", 7, 1700000000,
                             "chat.completion.chunk");
    ck_assert_uint_le(head_len, CB_CHUNK_HEAD_SIZE(12, 7));

    n = cb_sse_delta((cb_u8 *) buf, head, head_len, "content",
                     (const cb_u8 *) text, strlen(text));
    ck_assert_uint_le(n, cb_sse_delta_size(head_len, "content",
                                           (const cb_u8 *) text,
                                           strlen(text)));
    buf[n] = '\0';

    ck_assert(strncmp(buf, "data: ", 6) == 0);
    ck_assert(strcmp(buf + n - 2, "\n\n") == 0);
    buf[n - 2] = '\0';

    j = json_loads(buf + 6, 0, &err);
    ck_assert_msg(j != NULL, "%s", err.text);
    ck_assert_str_eq(json_string_value(json_object_get(j, "id")),
                     "chatcmpl-abc");
    ck_assert_str_eq(json_string_value(json_object_get(j, "object")),
                     "chat.completion.chunk");
    ck_assert_str_eq(json_string_value(json_object_get(j, "model")),
                     "gpt \"x\"");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "created")),
                     1700000000);

    p = (char *) json_string_value(json_object_get(json_object_get(
            json_array_get(json_object_get(j, "choices"), 0), "delta"),
            "content"));
    ck_assert_str_eq(p, text);
    ck_assert(json_is_null(json_object_get(
        json_array_get(json_object_get(j, "choices"), 0), "finish_reason")));

    json_decref(j);
}
END_TEST


START_TEST(test_sse_role_finish_usage)
{
    char          buf[1024];
    size_t        n, head_len;
    json_t       *j, *c;
    cb_u8         head[256];
    cb_usage_t    u;
    json_error_t  err;

    head_len = cb_chunk_head(head, (const cb_u8 *) "id", 2,
                             (const cb_u8 *) "m", 1, 1,
                             "chat.completion.chunk");

    n = cb_sse_role((cb_u8 *) buf, head, head_len);
    ck_assert_uint_le(n, CB_SSE_ROLE_SIZE(head_len));
    buf[n - 2] = '\0';
    j = json_loads(buf + 6, 0, &err);
    c = json_array_get(json_object_get(j, "choices"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(
        json_object_get(c, "delta"), "role")), "assistant");
    json_decref(j);

    n = cb_sse_finish((cb_u8 *) buf, head, head_len, "content_filter");
    ck_assert_uint_le(n, CB_SSE_FINISH_SIZE(head_len) + 14);
    buf[n - 2] = '\0';
    j = json_loads(buf + 6, 0, &err);
    c = json_array_get(json_object_get(j, "choices"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(c, "finish_reason")),
                     "content_filter");
    ck_assert_uint_eq(json_object_size(json_object_get(c, "delta")), 0);
    json_decref(j);

    memset(&u, 0, sizeof(u));
    u.prompt_tokens = 4000000000u;
    u.completion_tokens = 4000000000u;
    u.total_tokens = 4000000000u;
    u.reasoning_tokens = 4000000000u;
    u.estimated = 1;

    n = cb_sse_usage((cb_u8 *) buf, head, head_len, &u);
    ck_assert_uint_le(n, CB_SSE_USAGE_SIZE(head_len));
    buf[n - 2] = '\0';
    j = json_loads(buf + 6, 0, &err);
    ck_assert_msg(j != NULL, "%s", err.text);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "choices")), 0);
    c = json_object_get(j, "usage");
    ck_assert_int_eq(json_integer_value(json_object_get(c, "prompt_tokens")),
                     4000000000LL);
    ck_assert(json_is_true(json_object_get(c, "estimated")));
    json_decref(j);
}
END_TEST


START_TEST(test_error_json)
{
    char          buf[512];
    size_t        n;
    json_t       *j, *e;
    json_error_t  err;
    const char   *msg = "bad \"thing\"\n";

    n = cb_error_json((cb_u8 *) buf, msg, strlen(msg), "invalid_request_error",
                      "invalid_value", "messages[0].role");
    ck_assert_uint_le(n, cb_error_json_size(msg, strlen(msg),
                                            "invalid_request_error",
                                            "invalid_value",
                                            "messages[0].role"));
    buf[n] = '\0';

    j = json_loads(buf, 0, &err);
    ck_assert_msg(j != NULL, "%s", err.text);
    e = json_object_get(j, "error");
    ck_assert_str_eq(json_string_value(json_object_get(e, "message")), msg);
    ck_assert_str_eq(json_string_value(json_object_get(e, "type")),
                     "invalid_request_error");
    ck_assert_str_eq(json_string_value(json_object_get(e, "code")),
                     "invalid_value");
    ck_assert_str_eq(json_string_value(json_object_get(e, "param")),
                     "messages[0].role");
    json_decref(j);

    n = cb_error_json((cb_u8 *) buf, "x", 1, "server_error", NULL, NULL);
    buf[n] = '\0';
    j = json_loads(buf, 0, &err);
    ck_assert(json_is_null(json_object_get(json_object_get(j, "error"),
                                           "code")));
    json_decref(j);
}
END_TEST


START_TEST(test_error_types)
{
    ck_assert_str_eq(cb_error_type(400), "invalid_request_error");
    ck_assert_str_eq(cb_error_type(401), "invalid_request_error");
    ck_assert_str_eq(cb_error_type(403), "permission_error");
    ck_assert_str_eq(cb_error_type(404), "invalid_request_error");
    ck_assert_str_eq(cb_error_type(413), "invalid_request_error");
    ck_assert_str_eq(cb_error_type(429), "rate_limit_error");
    ck_assert_str_eq(cb_error_type(502), "server_error");
    ck_assert_str_eq(cb_error_type(504), "server_error");
}
END_TEST


/* the size functions bound the output for arbitrary bytes */

START_TEST(test_sizes_bound_random_input)
{
    int       i, k;
    char      text[300], *buf;
    size_t    n, max, head_len, len;
    cb_u8     head[4096];
    cb_u8     model[200];

    srand(3);

    for (i = 0; i < 2000; i++) {
        len = rand() % sizeof(text);
        for (k = 0; k < (int) len; k++) {
            text[k] = (char) (rand() % 256);
        }
        for (k = 0; k < (int) sizeof(model); k++) {
            model[k] = (cb_u8) (rand() % 256);
        }

        head_len = cb_chunk_head(head, (const cb_u8 *) text, len % 40, model,
                                 sizeof(model), 123, "chat.completion.chunk");
        ck_assert_uint_le(head_len, CB_CHUNK_HEAD_SIZE(len % 40,
                                                       sizeof(model)));

        max = cb_sse_delta_size(head_len, "reasoning_content",
                                (const cb_u8 *) text, len);
        buf = malloc(max);
        n = cb_sse_delta((cb_u8 *) buf, head, head_len, "reasoning_content",
                         (const cb_u8 *) text, len);
        ck_assert_uint_le(n, max);
        free(buf);
    }
}
END_TEST


int
main(void)
{
    Suite  *s;
    TCase  *tc;

    s = suite_create("cb_json");
    tc = tcase_create("core");

    tcase_add_test(tc, test_escape_specials);
    tcase_add_test(tc, test_escape_utf8);
    tcase_add_test(tc, test_escape_invalid_utf8);
    tcase_add_test(tc, test_utf8_cut_and_prefix);
    tcase_add_test(tc, test_estimate_tokens);
    tcase_add_test(tc, test_sse_delta_parses);
    tcase_add_test(tc, test_sse_role_finish_usage);
    tcase_add_test(tc, test_error_json);
    tcase_add_test(tc, test_error_types);
    tcase_add_test(tc, test_sizes_bound_random_input);

    suite_add_tcase(s, tc);

    return cb_check_run(s);
}
