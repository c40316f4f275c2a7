
/*
 * Copyright (C) chatbridge authors
 *
 * Check tests for request normalization: roles, content parts and
 * attachments, empty turns, tavern and bypass modes, parameters, the
 * options refused by name, and every bound.
 */


#include "cb_check.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cb_openai.h"


static cb_chat_opts_t  opts;


static void
reset_opts(void)
{
    memset(&opts, 0, sizeof(opts));
    opts.max_messages = 100;
    opts.max_text = 100000;
    opts.max_attachment = 1000;
    opts.max_attachments = 4;
}


static int
parse(cb_chat_t *chat, const char *body, cb_err_t *err)
{
    return cb_chat_parse(chat, body, strlen(body), &opts, err);
}


/* parse a body that must be accepted */

static void
ok_parse(cb_chat_t *chat, const char *body)
{
    cb_err_t  err;

    ck_assert_msg(parse(chat, body, &err) == 0, "refused: %u %s %s: %s",
                  err.status, err.code, err.param, err.message);
}


/* parse a body that must be refused with status, code and param */

static void
refused(const char *body, unsigned status, const char *code,
    const char *param)
{
    cb_err_t   err;
    cb_chat_t  chat;

    ck_assert_msg(parse(&chat, body, &err) != 0, "accepted: %s", body);
    ck_assert_uint_eq(err.status, status);
    ck_assert_str_eq(err.code, code);
    if (param) {
        ck_assert_str_eq(err.param, param);
    }
    ck_assert_uint_gt(strlen(err.message), 0);
    cb_chat_free(&chat);
}


static const char *
msg_str(cb_chat_t *chat, size_t i, const char *key)
{
    return json_string_value(json_object_get(
        json_array_get(chat->messages, i), key));
}


static json_t *
attachment(cb_chat_t *chat, size_t i, size_t j)
{
    return json_array_get(json_object_get(json_array_get(chat->messages, i),
                                          "attachments"), j);
}


START_TEST(test_roles)
{
    cb_chat_t  chat;

    ok_parse(&chat, "{\"model\":\"m\",\"messages\":["
                    "{\"role\":\"developer\",\"content\":\"d\"},"
                    "{\"role\":\"system\",\"content\":\"s\"},"
                    "{\"role\":\"user\",\"content\":\"u\",\"name\":\"bob\"},"
                    "{\"role\":\"assistant\",\"content\":null}]}");

    ck_assert_uint_eq(json_array_size(chat.messages), 4);
    ck_assert_str_eq(msg_str(&chat, 0, "role"), "system");
    ck_assert_str_eq(msg_str(&chat, 1, "role"), "system");
    ck_assert_str_eq(msg_str(&chat, 2, "name"), "bob");
    ck_assert_str_eq(msg_str(&chat, 3, "role"), "assistant");
    ck_assert_str_eq(msg_str(&chat, 3, "content"), "");
    ck_assert_str_eq(chat.model, "m");
    ck_assert(!chat.stream);
    cb_chat_free(&chat);

    refused("{\"model\":\"m\",\"messages\":"
            "[{\"role\":\"bot\",\"content\":\"x\"}]}",
            400, "invalid_value", "messages[0].role");
    refused("{\"model\":\"m\",\"messages\":"
            "[{\"role\":\"tool\",\"content\":\"x\"}]}",
            400, "unsupported_value", "messages[0].role");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\","
            "\"tool_calls\":[]}]}", 400, "unsupported_value",
            "messages[0].tool_calls");
}
END_TEST


START_TEST(test_empty_user_becomes_space)
{
    cb_chat_t  chat;

    ok_parse(&chat, "{\"model\":\"m\",\"messages\":["
                    "{\"role\":\"user\",\"content\":\"\"},"
                    "{\"role\":\"user\",\"content\":\"  \\n \"},"
                    "{\"role\":\"user\",\"content\":null},"
                    "{\"role\":\"assistant\",\"content\":\"\"}]}");

    ck_assert_str_eq(msg_str(&chat, 0, "content"), " ");
    ck_assert_str_eq(msg_str(&chat, 1, "content"), " ");
    ck_assert_str_eq(msg_str(&chat, 2, "content"), " ");
    ck_assert_str_eq(msg_str(&chat, 3, "content"), "");
    cb_chat_free(&chat);
}
END_TEST


START_TEST(test_parts_text_joined)
{
    cb_chat_t  chat;

    ok_parse(&chat, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                    "\"content\":[{\"type\":\"text\",\"text\":\"one\"},"
                    "{\"type\":\"text\",\"text\":\"two\"}]}]}");
    ck_assert_str_eq(msg_str(&chat, 0, "content"), "one\n\ntwo");
    cb_chat_free(&chat);

    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
            "[{\"type\":\"video\",\"video\":{}}]}]}", 400, "invalid_value",
            "messages[0].content[0]");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
            "[{\"type\":\"text\"}]}]}", 400, "invalid_type",
            "messages[0].content[0]");
    refused("{\"model\":\"m\",\"messages\":"
            "[{\"role\":\"user\",\"content\":5}]}",
            400, "invalid_type", "messages[0].content");
}
END_TEST


START_TEST(test_image_attachments)
{
    json_t     *a;
    cb_chat_t   chat;

    ok_parse(&chat, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
        "\"content\":["
        "{\"type\":\"text\",\"text\":\"what?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":"
          "\"data:image/jpeg;base64,/9j/4AAQ\"}},"
        "{\"type\":\"image_url\",\"name\":\"cat.png\",\"image_url\":{\"url\":"
          "\"data:image/png;base64,iVBORw0KGgo=\"}},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":"
          "\"data:image/webp;base64,UklG\",\"detail\":\"dog.webp\"}},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":"
          "\"https://example.test/a/pic.gif?x=1\",\"detail\":\"high\"}}"
        "]}]}");

    ck_assert_str_eq(msg_str(&chat, 0, "content"), "what?");
    ck_assert_uint_eq(chat.nattachments, 4);

    a = attachment(&chat, 0, 0);
    ck_assert_str_eq(json_string_value(json_object_get(a, "contentType")),
                     "image/jpeg");
    ck_assert_str_eq(json_string_value(json_object_get(a, "name")),
                     "image_1_2.jpg");
    ck_assert_str_eq(json_string_value(json_object_get(a, "url")),
                     "data:image/jpeg;base64,/9j/4AAQ");

    a = attachment(&chat, 0, 1);
    ck_assert_str_eq(json_string_value(json_object_get(a, "name")),
                     "cat.png");

    /* LMArena Bridge took the file name from "detail"; so do we */
    a = attachment(&chat, 0, 2);
    ck_assert_str_eq(json_string_value(json_object_get(a, "name")),
                     "dog.webp");

    a = attachment(&chat, 0, 3);
    ck_assert_str_eq(json_string_value(json_object_get(a, "contentType")),
                     "image/gif");
    ck_assert_str_eq(json_string_value(json_object_get(a, "name")),
                     "pic.gif");
    ck_assert_str_eq(json_string_value(json_object_get(a, "url")),
                     "https://example.test/a/pic.gif?x=1");

    cb_chat_free(&chat);

    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
            "[{\"type\":\"image_url\",\"image_url\":{\"url\":"
            "\"ftp://x/y.png\"}}]}]}", 400, "invalid_value",
            "messages[0].content[0]");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
            "[{\"type\":\"image_url\",\"image_url\":{\"url\":"
            "\"data:image/png;base64,%%%%\"}}]}]}", 400, "invalid_value",
            "messages[0].content[0]");
}
END_TEST


START_TEST(test_audio_and_file_parts)
{
    json_t     *a;
    cb_chat_t   chat;

    ok_parse(&chat, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
        "\"content\":["
        "{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"UklGRg==\","
          "\"format\":\"wav\"}},"
        "{\"type\":\"file\",\"file\":{\"file_data\":"
          "\"data:application/pdf;base64,JVBERi0=\",\"filename\":\"a.pdf\"}},"
        "{\"type\":\"file\",\"file\":{\"file_data\":\"aGVsbG8=\","
          "\"filename\":\"notes.txt\"}}"
        "]}]}");

    a = attachment(&chat, 0, 0);
    ck_assert_str_eq(json_string_value(json_object_get(a, "contentType")),
                     "audio/wav");
    ck_assert_str_eq(json_string_value(json_object_get(a, "url")),
                     "data:audio/wav;base64,UklGRg==");
    ck_assert_str_eq(json_string_value(json_object_get(a, "name")),
                     "audio_1_1.wav");

    a = attachment(&chat, 0, 1);
    ck_assert_str_eq(json_string_value(json_object_get(a, "name")), "a.pdf");
    ck_assert_str_eq(json_string_value(json_object_get(a, "contentType")),
                     "application/pdf");

    /* bare base64: the type comes from the file name */
    a = attachment(&chat, 0, 2);
    ck_assert_str_eq(json_string_value(json_object_get(a, "contentType")),
                     "text/plain");
    ck_assert_str_eq(json_string_value(json_object_get(a, "url")),
                     "data:text/plain;base64,aGVsbG8=");

    /* an empty user text with attachments still becomes " " */
    ck_assert_str_eq(msg_str(&chat, 0, "content"), " ");

    cb_chat_free(&chat);

    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
            "[{\"type\":\"file\",\"file\":{\"file_id\":\"file-1\"}}]}]}",
            400, "unsupported_value", "messages[0].content[0]");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
            "[{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"AA==\","
            "\"format\":\"flac\"}}]}]}", 400, "invalid_value",
            "messages[0].content[0]");
}
END_TEST


START_TEST(test_attachment_bounds)
{
    char  body[4096], data[2000];

    memset(data, 'A', 1400);            /* 1400 base64 = 1050 bytes */
    data[1400] = '\0';

    snprintf(body, sizeof(body),
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
             "[{\"type\":\"image_url\",\"image_url\":{\"url\":"
             "\"data:image/png;base64,%s\"}}]}]}", data);
    refused(body, 413, "attachment_too_large", "messages[0].content[0]");

    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
            "{\"type\":\"image_url\","
            "\"image_url\":{\"url\":\"https://a/1.png\"}},"
            "{\"type\":\"image_url\","
            "\"image_url\":{\"url\":\"https://a/2.png\"}},"
            "{\"type\":\"image_url\","
            "\"image_url\":{\"url\":\"https://a/3.png\"}},"
            "{\"type\":\"image_url\","
            "\"image_url\":{\"url\":\"https://a/4.png\"}},"
            "{\"type\":\"image_url\","
            "\"image_url\":{\"url\":\"https://a/5.png\"}}"
            "]}]}", 400, "too_many_attachments", NULL);
}
END_TEST


START_TEST(test_message_and_text_bounds)
{
    char    *body, *p;
    size_t   i;

    body = malloc(200000);

    p = body + sprintf(body, "{\"model\":\"m\",\"messages\":[");
    for (i = 0; i < 101; i++) {
        p += sprintf(p, "%s{\"role\":\"user\",\"content\":\"x\"}",
                     i ? "," : "");
    }
    sprintf(p, "]}");
    refused(body, 400, "too_many_messages", "messages");

    p = body + sprintf(body, "{\"model\":\"m\",\"messages\":["
                             "{\"role\":\"user\",\"content\":\"");
    memset(p, 'y', 100001);
    sprintf(p + 100001, "\"}]}");
    refused(body, 413, "text_too_large", "messages");

    free(body);
}
END_TEST


START_TEST(test_tavern_mode)
{
    cb_chat_t  chat;

    opts.tavern = 1;

    ok_parse(&chat, "{\"model\":\"m\",\"messages\":["
                    "{\"role\":\"user\",\"content\":\"u1\"},"
                    "{\"role\":\"system\",\"content\":\"s1\"},"
                    "{\"role\":\"assistant\",\"content\":\"a1\"},"
                    "{\"role\":\"developer\",\"content\":\"s2\"},"
                    "{\"role\":\"system\",\"content\":\"  \"},"
                    "{\"role\":\"user\",\"content\":\"u2\"}]}");

    ck_assert_uint_eq(json_array_size(chat.messages), 4);
    ck_assert_str_eq(msg_str(&chat, 0, "role"), "system");
    ck_assert_str_eq(msg_str(&chat, 0, "content"), "s1\n\ns2");
    ck_assert_str_eq(msg_str(&chat, 1, "content"), "u1");
    ck_assert_str_eq(msg_str(&chat, 2, "content"), "a1");
    ck_assert_str_eq(msg_str(&chat, 3, "content"), "u2");
    cb_chat_free(&chat);

    /* no system text at all: no system message */
    ok_parse(&chat, "{\"model\":\"m\",\"messages\":["
                    "{\"role\":\"system\",\"content\":\"\"},"
                    "{\"role\":\"user\",\"content\":\"u\"}]}");
    ck_assert_uint_eq(json_array_size(chat.messages), 1);
    ck_assert_str_eq(msg_str(&chat, 0, "role"), "user");
    cb_chat_free(&chat);
}
END_TEST


START_TEST(test_without_tavern_systems_stay)
{
    cb_chat_t  chat;

    ok_parse(&chat, "{\"model\":\"m\",\"messages\":["
                    "{\"role\":\"user\",\"content\":\"u1\"},"
                    "{\"role\":\"system\",\"content\":\"s1\"}]}");
    ck_assert_str_eq(msg_str(&chat, 1, "role"), "system");
    cb_chat_free(&chat);
}
END_TEST


START_TEST(test_bypass_mode)
{
    cb_chat_t  chat;

    opts.bypass = 1;
    opts.tavern = 1;

    ok_parse(&chat, "{\"model\":\"m\",\"messages\":["
                    "{\"role\":\"system\",\"content\":\"s\"},"
                    "{\"role\":\"user\",\"content\":\"u\"}]}");

    ck_assert_uint_eq(json_array_size(chat.messages), 3);
    ck_assert_str_eq(msg_str(&chat, 2, "role"), "user");
    ck_assert_str_eq(msg_str(&chat, 2, "content"), " ");
    cb_chat_free(&chat);
}
END_TEST


START_TEST(test_params_passed)
{
    json_t     *p;
    cb_chat_t   chat;

    ok_parse(&chat, "{\"model\":\"m\",\"stream\":true,"
                    "\"stream_options\":{\"include_usage\":true},"
                    "\"temperature\":0.5,\"top_p\":0.9,\"max_tokens\":10,"
                    "\"max_completion_tokens\":20,\"stop\":\"END\","
                    "\"seed\":7,\"n\":1,\"tools\":[],\"user\":\"u\","
                    "\"response_format\":{\"type\":\"text\"},"
                    "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");

    ck_assert(chat.stream);
    ck_assert(chat.include_usage);

    p = chat.params;
    ck_assert(json_real_value(json_object_get(p, "temperature")) == 0.5);
    ck_assert(json_real_value(json_object_get(p, "top_p")) == 0.9);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "max_tokens")), 20);
    ck_assert_str_eq(json_string_value(json_array_get(
                     json_object_get(p, "stop"), 0)), "END");
    ck_assert_int_eq(json_integer_value(json_object_get(p, "seed")), 7);
    ck_assert_ptr_null(json_object_get(p, "user"));

    cb_chat_free(&chat);
}
END_TEST


START_TEST(test_params_checked)
{
    refused("{\"model\":\"m\",\"temperature\":3,\"messages\":"
            "[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "invalid_value",
            "temperature");
    refused("{\"model\":\"m\",\"top_p\":\"a\",\"messages\":"
            "[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "invalid_type",
            "top_p");
    refused("{\"model\":\"m\",\"max_tokens\":0,\"messages\":"
            "[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "invalid_value",
            "max_tokens");
    refused("{\"model\":\"m\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"],"
            "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400,
            "invalid_type", "stop");
    refused("{\"model\":\"m\",\"stream\":\"yes\",\"messages\":"
            "[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "invalid_type",
            "stream");
}
END_TEST


START_TEST(test_unsupported_refused_by_name)
{
    const char  *msgs = "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
    char         body[512];

#define REFUSE(extra, code, param)                                           \
    snprintf(body, sizeof(body), "{\"model\":\"m\",%s,%s}", extra, msgs);     \
    refused(body, 400, code, param)

    REFUSE("\"n\":2", "unsupported_value", "n");
    REFUSE("\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]",
           "unsupported_parameter", "tools");
    REFUSE("\"functions\":[{\"name\":\"f\"}]", "unsupported_parameter",
           "functions");
    REFUSE("\"tool_choice\":\"required\"", "unsupported_parameter",
           "tool_choice");
    REFUSE("\"logprobs\":true", "unsupported_parameter", "logprobs");
    REFUSE("\"response_format\":{\"type\":\"json_object\"}",
           "unsupported_value", "response_format");
    REFUSE("\"audio\":{\"voice\":\"x\"}", "unsupported_parameter", "audio");
    REFUSE("\"logit_bias\":{\"1\":2}", "unsupported_parameter", "logit_bias");

#undef REFUSE
}
END_TEST


START_TEST(test_body_shape)
{
    cb_err_t   err;
    cb_chat_t  chat;

    ck_assert_int_ne(cb_chat_parse(&chat, "", 0, &opts, &err), 0);
    ck_assert_str_eq(err.code, "invalid_json");
    cb_chat_free(&chat);

    refused("{\"model\":", 400, "invalid_json", NULL);
    refused("[]", 400, "invalid_json", NULL);
    refused("{\"messages\":[]}", 400, "missing_required_parameter", "model");
    refused("{\"model\":\"\",\"messages\":"
            "[{\"role\":\"user\",\"content\":\"x\"}]}",
            400, "invalid_type", "model");
    refused("{\"model\":\"m\"}", 400, "missing_required_parameter",
            "messages");
    refused("{\"model\":\"m\",\"messages\":[]}", 400, "invalid_type",
            "messages");
    refused("{\"model\":\"m\",\"messages\":[\"hi\"]}", 400, "invalid_type",
            "messages[0]");
}
END_TEST


START_TEST(test_images_request)
{
    cb_err_t    err;
    cb_image_t  img;

    ck_assert_int_eq(cb_image_parse(&img, "{\"prompt\":\"a cat\",\"n\":3}",
                                    24, &err), 0);
    ck_assert_str_eq(img.prompt, "a cat");
    ck_assert_uint_eq(img.n, 3);
    ck_assert_str_eq(img.model, "dall-e-3");
    cb_image_free(&img);

    ck_assert_int_ne(cb_image_parse(&img, "{\"prompt\":\"x\",\"n\":11}", 21,
                                    &err), 0);
    ck_assert_str_eq(err.param, "n");
    cb_image_free(&img);

    ck_assert_int_ne(cb_image_parse(&img, "{\"n\":1}", 7, &err), 0);
    ck_assert_str_eq(err.param, "prompt");
    cb_image_free(&img);
}
END_TEST


START_TEST(test_task_json)
{
    char          *s;
    size_t         len;
    json_t        *t;
    cb_chat_t      chat;
    json_error_t   jerr;

    ok_parse(&chat, "{\"model\":\"gpt\",\"stream\":true,\"temperature\":1,"
                    "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");

    s = cb_task_json("abc.1", "arena", "chat", chat.model, chat.model_len,
                     chat.stream, chat.messages, chat.params, NULL, &len);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(strlen(s), len);

    t = json_loads(s, 0, &jerr);
    ck_assert_str_eq(json_string_value(json_object_get(t, "type")), "task");
    ck_assert_str_eq(json_string_value(json_object_get(t, "request_id")),
                     "abc.1");
    ck_assert_str_eq(json_string_value(json_object_get(t, "kind")), "arena");
    ck_assert_str_eq(json_string_value(json_object_get(t, "op")), "chat");
    ck_assert_str_eq(json_string_value(json_object_get(t, "model")), "gpt");
    ck_assert(json_is_true(json_object_get(t, "stream")));
    ck_assert_uint_eq(json_array_size(json_object_get(t, "messages")), 1);
    ck_assert(json_is_object(json_object_get(t, "params")));

    json_decref(t);
    free(s);
    cb_chat_free(&chat);
}
END_TEST


int
main(void)
{
    Suite  *s;
    TCase  *tc;

    s = suite_create("cb_openai");
    tc = tcase_create("core");
    tcase_add_checked_fixture(tc, reset_opts, NULL);

    tcase_add_test(tc, test_roles);
    tcase_add_test(tc, test_empty_user_becomes_space);
    tcase_add_test(tc, test_parts_text_joined);
    tcase_add_test(tc, test_image_attachments);
    tcase_add_test(tc, test_audio_and_file_parts);
    tcase_add_test(tc, test_attachment_bounds);
    tcase_add_test(tc, test_message_and_text_bounds);
    tcase_add_test(tc, test_tavern_mode);
    tcase_add_test(tc, test_without_tavern_systems_stay);
    tcase_add_test(tc, test_bypass_mode);
    tcase_add_test(tc, test_params_passed);
    tcase_add_test(tc, test_params_checked);
    tcase_add_test(tc, test_unsupported_refused_by_name);
    tcase_add_test(tc, test_body_shape);
    tcase_add_test(tc, test_images_request);
    tcase_add_test(tc, test_task_json);

    suite_add_tcase(s, tc);

    return cb_check_run(s);
}
