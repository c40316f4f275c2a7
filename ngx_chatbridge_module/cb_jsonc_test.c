
/*
 * Copyright (C) chatbridge authors
 *
 * Unit tests of cb_jsonc.c.  Every text is handed over in a malloc()ed copy
 * without a terminating NUL, so that valgrind catches any read past its end.
 */

#define _POSIX_C_SOURCE  200809L

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cb_check.h"

#include "cb_jsonc.h"


static char *dup_exact(const char *s, size_t len);
static json_t *parse(const char *s);
static void parse_error(const char *s, const char *expect);
static char *set_member(const char *s, const char *key, json_t *value);
static void set_member_expect(const char *s, const char *key, json_t *value,
    const char *expect);
static char *read_all(const char *path);
static void write_all(const char *path, const char *data);
static Suite *cb_jsonc_suite(void);


static char  err[512];


/* a config.jsonc as LMArena Bridge ships it, with the user's edits */

static const char  sample[] =
    "\xef\xbb\xbf"
    "// LMArena Bridge 配置文件\n"
    "{\n"
    "    // 版本号，用于程序更新检查，请不要手动修改。\n"
    "    \"version\": \"2.5.4\",\n"
    "\n"
    "    // 会话 ID，由 id_updater.py 自动更新 /* 不是块注释 */\n"
    "    \"session_id\": \"YOUR_SESSION_ID\",\n"
    "    \"message_id\": \"YOUR_MESSAGE_ID\",\n"
    "\n"
    "    /*\n"
    "     * ID 更新模式：\"direct_chat\" 或 \"battle\"，\n"
    "     * battle 模式下的目标：\"A\" 或 \"B\"\n"
    "     */\n"
    "    \"id_updater_last_mode\": \"direct_chat\",\n"
    "    \"id_updater_battle_target\": \"A\",\n"
    "\n"
    "    \"enable_auto_update\": true,   // 自动更新\n"
    "    \"bypass_enabled\": true,\n"
    "    \"tavern_mode_enabled\": false,\n"
    "    \"use_default_ids_if_mapping_not_found\": true,\n"
    "\n"
    "    // 流式响应超时（秒）\n"
    "    \"stream_response_timeout_seconds\": 360,\n"
    "    \"enable_idle_restart\": false,\n"
    "    \"idle_restart_timeout_seconds\": -1,\n"
    "    \"api_key\": \"\",\n"
    "\n"
    "    // 文件床\n"
    "    \"file_bed_enabled\": false,\n"
    "    \"file_bed_api_key\": \"your_secret_api_key\",\n"
    "    \"escaped_url\": \"http:\\/\\/127.0.0.1:5180/upload\",\n"
    "    \"file_bed_upload_url\": \"http://127.0.0.1:5180/upload\""
    " // 上传地址\n"
    "}\n"
    "// 结束";


START_TEST(test_markers_in_strings)
{
    json_t  *json;

    json = parse("{\"url\": \"http://127.0.0.1:5180/upload\","
                 " \"x\": \"/* not a comment */\", \"y\": \"a*/b//\"}");
    ck_assert_ptr_nonnull(json);

    ck_assert_str_eq(json_string_value(json_object_get(json, "url")),
                     "http://127.0.0.1:5180/upload");
    ck_assert_str_eq(json_string_value(json_object_get(json, "x")),
                     "/* not a comment */");
    ck_assert_str_eq(json_string_value(json_object_get(json, "y")),
                     "a*/b//");

    json_decref(json);
}
END_TEST


START_TEST(test_comments_everywhere)
{
    json_t  *json, *arr;

    json = parse("// head\n/* block */ {  // after brace\n"
                 "  \"a\" /* before colon */ : /* after colon */ 1 // after\n"
                 "  , \"b\"://x\n[ /* in */ 2 /* , */ , 3 ]/**/,\n"
                 "  \"c\": \"//\" /* a\n multi-line\n comment */\n"
                 "} /* tail */ // end without newline");
    ck_assert_ptr_nonnull(json);

    ck_assert_int_eq(json_integer_value(json_object_get(json, "a")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json, "c")), "//");

    arr = json_object_get(json, "b");
    ck_assert_int_eq(json_array_size(arr), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(arr, 0)), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(arr, 1)), 3);

    json_decref(json);

    json = parse("[1]//");
    ck_assert_ptr_nonnull(json);
    json_decref(json);

    json = parse("[1]/**/");
    ck_assert_ptr_nonnull(json);
    json_decref(json);
}
END_TEST


START_TEST(test_trailing_commas)
{
    json_t  *json;

    json = parse("[1,2,]");
    ck_assert_ptr_nonnull(json);
    ck_assert_int_eq(json_array_size(json), 2);
    json_decref(json);

    json = parse("{\"a\":1,}");
    ck_assert_ptr_nonnull(json);
    ck_assert_int_eq(json_object_size(json), 1);
    json_decref(json);

    json = parse("{\"a\": [\"x\", {\"b\": 2,},], // c\n /* d */ }");
    ck_assert_ptr_nonnull(json);
    ck_assert_int_eq(json_array_size(json_object_get(json, "a")), 2);
    json_decref(json);

    json = parse("[1, /* c */\n// d\n]");
    ck_assert_ptr_nonnull(json);
    ck_assert_int_eq(json_array_size(json), 1);
    json_decref(json);

    /* a comma must follow a value */

    parse_error("[,]", "t.jsonc:1:2: ");
    parse_error("{,}", "t.jsonc:1:2: ");
    parse_error("[1,,]", "t.jsonc:1:4: ");
    parse_error("[1,,2]", "t.jsonc:1:4: ");
    parse_error("{\"a\":,}", "t.jsonc:1:6: unexpected token near ','");
}
END_TEST


START_TEST(test_escapes)
{
    json_t  *json;

    json = parse("{\"a\": \"he said \\\"// hi\\\" \\\\\", \"b\": 1}");
    ck_assert_ptr_nonnull(json);
    ck_assert_str_eq(json_string_value(json_object_get(json, "a")),
                     "he said \"// hi\" \\");
    ck_assert_int_eq(json_integer_value(json_object_get(json, "b")), 1);
    json_decref(json);

    json = parse("{\"a\": \"\\\\\", /* \" */ \"b\": \"\\\\\\\"/*\"}");
    ck_assert_ptr_nonnull(json);
    ck_assert_str_eq(json_string_value(json_object_get(json, "a")), "\\");
    ck_assert_str_eq(json_string_value(json_object_get(json, "b")),
                     "\\\"/*");
    json_decref(json);
}
END_TEST


START_TEST(test_errors)
{
    parse_error("{\n  \"a\": 1, /* open\n  \"b\": 2\n}",
                "t.jsonc:2:11: unterminated block comment");
    parse_error("{\n  \"a\": 1\n  \"b\": 2\n}",
                "t.jsonc:3:5: '}' expected near '\"b\"'");
    parse_error("{\"a\": [1, 2}", "t.jsonc:1:12: ']' expected near '}'");
    parse_error("{\"a\": \"abc}", "t.jsonc:1:7: unterminated string");
    parse_error("{\n \"a\": \"abc\n\"}", "t.jsonc:2:7: unterminated string");
    parse_error("{\"a\": \"abc\\", "t.jsonc:1:7: unterminated string");
    parse_error("hello world",
                "t.jsonc:1:5: '[' or '{' expected near 'hello'");
    parse_error("\"string\"", "t.jsonc:1:");
    parse_error("{} {}", "t.jsonc:1:4: end of file expected");
    parse_error("{\"a\": 1 / 2}", "t.jsonc:1:");

    /* columns count characters; a byte order mark is not counted */

    parse_error("/* 中文 */ {\"a\" 1}",
                "t.jsonc:1:15: ':' expected near '1'");
    parse_error("\xef\xbb\xbf{\"a\" 1}", "t.jsonc:1:6: ");
    parse_error("{\n\"é\" 1}", "t.jsonc:2:5: ");

    /* empty inputs */

    parse_error("", "t.jsonc:1:1: ");
    parse_error("\xef\xbb\xbf", "t.jsonc:1:1: ");
    parse_error("// only a comment\n", "t.jsonc:");

    ck_assert_ptr_null(cb_jsonc_parse("x", 1, NULL, err, sizeof(err)));
    ck_assert_msg(strncmp(err, "1:1: ", 5) == 0, "%s", err);

    /* a too small buffer is truncated, not overrun */

    ck_assert_ptr_null(cb_jsonc_parse("x", 1, "t.jsonc", err, 5));
    ck_assert_str_eq(err, "t.js");
    ck_assert_ptr_null(cb_jsonc_parse("x", 1, "t.jsonc", NULL, 0));
}
END_TEST


START_TEST(test_sample)
{
    json_t  *json;

    json = parse(sample);
    ck_assert_msg(json != NULL, "%s", err);

    ck_assert_int_eq(json_object_size(json), 17);
    ck_assert_str_eq(json_string_value(json_object_get(json, "session_id")),
                     "YOUR_SESSION_ID");
    ck_assert_str_eq(json_string_value(json_object_get(json, "version")),
                     "2.5.4");
    ck_assert(json_is_true(json_object_get(json, "enable_auto_update")));
    ck_assert(json_is_false(json_object_get(json, "tavern_mode_enabled")));
    ck_assert_int_eq(json_integer_value(
                         json_object_get(json,
                                         "stream_response_timeout_seconds")),
                     360);
    ck_assert_int_eq(json_integer_value(
                         json_object_get(json,
                                         "idle_restart_timeout_seconds")),
                     -1);
    ck_assert_str_eq(json_string_value(json_object_get(json,
                                                       "file_bed_upload_url")),
                     "http://127.0.0.1:5180/upload");
    ck_assert_str_eq(json_string_value(json_object_get(json, "escaped_url")),
                     "http://127.0.0.1:5180/upload");
    ck_assert_str_eq(json_string_value(json_object_get(json, "api_key")), "");

    json_decref(json);
}
END_TEST


START_TEST(test_deep)
{
    char    *s;
    size_t   n, len;
    json_t  *json;

    n = 10000;

    s = malloc(2 * n + 1);
    ck_assert_ptr_nonnull(s);

    memset(s, '[', n);
    memset(s + n, ']', n);
    s[2 * n] = '\0';

    json = cb_jsonc_parse(s, 2 * n, "deep.json", err, sizeof(err));
    ck_assert_ptr_null(json);
    ck_assert_msg(strncmp(err, "deep.json:1:", 12) == 0, "%s", err);

    json = cb_jsonc_parse(s, n, "deep.json", err, sizeof(err));
    ck_assert_ptr_null(json);

    memset(s, '{', 1);
    ck_assert_ptr_null(cb_jsonc_set_member(s, 2 * n, "k", json_true(), &len,
                                           err, sizeof(err)));
    free(s);
}
END_TEST


START_TEST(test_set_sample)
{
    char        *out, *expect, *at;
    size_t       n;
    json_t      *json, *value;
    const char  *old;

    value = json_string("2f5e1a9c-0000-4000-8000-好");
    out = set_member(sample, "session_id", value);

    old = "\"YOUR_SESSION_ID\"";
    at = strstr(sample, old);
    n = at - sample;

    expect = malloc(sizeof(sample) + 64);
    ck_assert_ptr_nonnull(expect);
    memcpy(expect, sample, n);
    strcpy(expect + n, "\"2f5e1a9c-0000-4000-8000-好\"");
    strcat(expect, at + strlen(old));

    ck_assert_str_eq(out, expect);

    json = parse(out);
    ck_assert_ptr_nonnull(json);
    ck_assert(json_equal(json_object_get(json, "session_id"), value));
    ck_assert_int_eq(json_object_size(json), 17);

    free(expect);
    free(out);
    json_decref(json);
    json_decref(value);

    /* a new member goes after the trailing comment of the last one */

    value = json_integer(5102);
    out = set_member(sample, "server_port", value);
    json_decref(value);

    at = strstr(out, "    \"file_bed_upload_url\"");
    ck_assert_ptr_nonnull(at);
    ck_assert_str_eq(at, "    \"file_bed_upload_url\":"
                         " \"http://127.0.0.1:5180/upload\", // 上传地址\n"
                         "    \"server_port\": 5102\n"
                         "}\n"
                         "// 结束");
    ck_assert_int_eq(memcmp(out, sample, at - out), 0);
    free(out);
}
END_TEST


START_TEST(test_set_replace)
{
    json_t  *value;

    value = json_string("high");
    set_member_expect("{\"port\": 5102, \"x\": 1}", "port", value,
                      "{\"port\": \"high\", \"x\": 1}");
    set_member_expect("{\"port\": 5102 /* c */, \"x\": 1}", "port", value,
                      "{\"port\": \"high\" /* c */, \"x\": 1}");
    json_decref(value);

    value = json_pack("{s:[i,s],s:n,s:s}", "z", 1, "中", "a", "b", "//");
    set_member_expect("{\n  \"m\": {\"old\": [1, 2]}, // c\n}", "m", value,
                      "{\n  \"m\": {\"z\":[1,\"中\"],\"a\":null,\"b\":\"//\"},"
                      " // c\n}");
    json_decref(value);

    /* nested keys of the same name stay, also when the key is absent */

    set_member_expect("{\"o\": {\"k\": 1, \"l\": [{\"k\": 2}]}, \"k\": 3}", "k",
                      json_true(),
                      "{\"o\": {\"k\": 1, \"l\": [{\"k\": 2}]}, \"k\": true}");
    set_member_expect("{\n  \"o\": {\"k\": 1}\n}", "k", json_true(),
                      "{\n  \"o\": {\"k\": 1},\n  \"k\": true\n}");

    /* brackets and quotes in comments and strings of a skipped value */

    set_member_expect("{\"o\": {\"s\": \"}\\\"\", /* } \" */ \"t\": [1, // ]\n"
                      " 2]}, \"k\": 1}", "k", json_false(),
                      "{\"o\": {\"s\": \"}\\\"\", /* } \" */ \"t\": [1, // ]\n"
                      " 2]}, \"k\": false}");

    /* escaped keys match; of repeated keys the last one (in effect) */

    set_member_expect("{\"sess\\u0069on_id\": 1}", "session_id", json_null(),
                      "{\"sess\\u0069on_id\": null}");
    set_member_expect("{\"a\": 1, \"a\": 2}", "a", json_null(),
                      "{\"a\": 1, \"a\": null}");
}
END_TEST


START_TEST(test_set_add)
{
    json_t  *value;

    value = json_string("v");

    set_member_expect("{\n    \"a\": 1,\n}", "k", value,
                      "{\n    \"a\": 1,\n    \"k\": \"v\",\n}");
    set_member_expect("{\n  \"a\": 1 // last\n}", "k", value,
                      "{\n  \"a\": 1, // last\n  \"k\": \"v\"\n}");
    set_member_expect("{\n  \"a\": 1, // last\n}", "k", value,
                      "{\n  \"a\": 1, // last\n  \"k\": \"v\",\n}");
    set_member_expect("{\n\t\"a\": 1 /* x\n y */ // z\n}\n", "k", value,
                      "{\n\t\"a\": 1, /* x\n y */ // z\n\t\"k\": \"v\"\n}\n");
    set_member_expect("{\n  \"a\": [1,\n 2]}", "k", value,
                      "{\n  \"a\": [1,\n 2],\n  \"k\": \"v\"\n}");
    set_member_expect("{\n  \"a\": 1\n  ,\n}", "k", value,
                      "{\n  \"a\": 1,\n  \"k\": \"v\"\n  ,\n}");
    set_member_expect("{\r\n  \"a\": 1 // c\r\n}\r\n", "k", value,
                      "{\r\n  \"a\": 1, // c\r\n  \"k\": \"v\"\r\n}\r\n");

    /* one-line objects */

    set_member_expect("{\"a\": 1}", "k", value, "{\"a\": 1, \"k\": \"v\"}");
    set_member_expect("{\"a\": 1 , }", "k", value,
                      "{\"a\": 1 , \"k\": \"v\", }");
    set_member_expect("{\"a\": 1 // c\n}", "k", value,
                      "{\"a\": 1, // c\n    \"k\": \"v\"\n}");

    /* empty objects */

    set_member_expect("{}", "k", value, "{\n    \"k\": \"v\"\n}");
    set_member_expect("// c\n{ // d\n}", "k", value,
                      "// c\n{ // d\n    \"k\": \"v\"\n}");

    /* the key is encoded */

    set_member_expect("{}", "a\"b/中", value,
                      "{\n    \"a\\\"b/中\": \"v\"\n}");

    json_decref(value);
}
END_TEST


START_TEST(test_set_errors)
{
    size_t  n;

    ck_assert_ptr_null(cb_jsonc_set_member("[1, 2]", 6, "k", json_true(), &n,
                                           err, sizeof(err)));
    ck_assert_str_eq(err, "the top level is not an object");

    ck_assert_ptr_null(cb_jsonc_set_member("{\n\"a\" 1}", 8, "k", json_true(),
                                           &n, err, sizeof(err)));
    ck_assert_str_eq(err, "2:5: ':' expected near '1'");

    ck_assert_ptr_null(cb_jsonc_set_member("{}", 2, "\xff", json_true(), &n,
                                           err, sizeof(err)));
    ck_assert_str_eq(err, "the key is not valid UTF-8");

    ck_assert_ptr_null(cb_jsonc_set_member("{}", 2, "k", NULL, &n,
                                           err, sizeof(err)));
    ck_assert_str_eq(err, "cannot encode the value");
}
END_TEST


START_TEST(test_files)
{
    DIR            *d;
    char            dir[] = "/tmp/cb_jsonc_test.XXXXXX";
    char            path[256], missing[256], sub[256], *s;
    json_t         *json;
    struct stat     st;
    struct dirent  *de;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/config.jsonc", dir);
    snprintf(missing, sizeof(missing), "%s/nope/config.jsonc", dir);
    snprintf(sub, sizeof(sub), "%s/sub", dir);

    /* a new file gets 0644 whatever the umask */

    ck_assert_int_eq(cb_file_write_atomic(path, sample, sizeof(sample) - 1,
                                          err, sizeof(err)), 0);
    s = read_all(path);
    ck_assert_str_eq(s, sample);
    free(s);

    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 07777, 0644);

    json = cb_jsonc_load_file(path, 4096, err, sizeof(err));
    ck_assert_msg(json != NULL, "%s", err);
    ck_assert_str_eq(json_string_value(json_object_get(json, "session_id")),
                     "YOUR_SESSION_ID");
    json_decref(json);

    /* an existing file keeps its mode */

    ck_assert_int_eq(chmod(path, 0600), 0);
    ck_assert_int_eq(cb_file_write_atomic(path, "{}", 2, err, sizeof(err)),
                     0);
    s = read_all(path);
    ck_assert_str_eq(s, "{}");
    free(s);

    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 07777, 0600);

    ck_assert_int_eq(cb_file_write_atomic(path, "", 0, err, sizeof(err)), 0);

    /* rename() over a directory fails after the temporary file is written */

    ck_assert_int_eq(mkdir(sub, 0700), 0);
    ck_assert_int_eq(cb_file_write_atomic(sub, "{}", 2, err, sizeof(err)),
                     -1);
    ck_assert_msg(strncmp(err, "rename() ", 9) == 0, "%s", err);
    ck_assert_int_eq(rmdir(sub), 0);

    /* no temporary file is left behind */

    d = opendir(dir);
    ck_assert_ptr_nonnull(d);

    while ((de = readdir(d)) != NULL) {
        ck_assert_msg(de->d_name[0] == '.'
                      || strcmp(de->d_name, "config.jsonc") == 0,
                      "left behind: %s", de->d_name);
    }

    closedir(d);

    /* an empty file, a too large one, missing ones */

    json = cb_jsonc_load_file(path, 4096, err, sizeof(err));
    ck_assert_ptr_null(json);
    ck_assert_msg(strncmp(err, path, strlen(path)) == 0, "%s", err);
    ck_assert_msg(strncmp(err + strlen(path), ":1:1: ", 6) == 0, "%s", err);

    write_all(path, "[1, 2, 3]");
    ck_assert_ptr_null(cb_jsonc_load_file(path, 8, err, sizeof(err)));
    ck_assert_msg(strstr(err, "too large (9 bytes, the limit is 8)") != NULL,
                  "%s", err);

    json = cb_jsonc_load_file(path, 9, err, sizeof(err));
    ck_assert_ptr_nonnull(json);
    json_decref(json);

    ck_assert_ptr_null(cb_jsonc_load_file(missing, 4096, err, sizeof(err)));
    ck_assert_msg(strstr(err, missing) != NULL
                  && strstr(err, "No such file or directory") != NULL,
                  "%s", err);

    ck_assert_ptr_null(cb_jsonc_load_file(dir, 4096, err, sizeof(err)));
    ck_assert_msg(strstr(err, "not a regular file") != NULL, "%s", err);

    ck_assert_int_eq(cb_file_write_atomic(missing, "{}", 2, err, sizeof(err)),
                     -1);
    ck_assert_msg(strstr(err, "/nope/config.jsonc.tmp.") != NULL
                  && strstr(err, "No such file or directory") != NULL,
                  "%s", err);

    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST


static char *
dup_exact(const char *s, size_t len)
{
    char  *p;

    p = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(p);
    memcpy(p, s, len);

    return p;
}


static json_t *
parse(const char *s)
{
    char    *p;
    json_t  *json;

    p = dup_exact(s, strlen(s));
    json = cb_jsonc_parse(p, strlen(s), "t.jsonc", err, sizeof(err));
    free(p);

    return json;
}


static void
parse_error(const char *s, const char *expect)
{
    json_t  *json;

    json = parse(s);
    ck_assert_msg(json == NULL, "parsed: %s", s);
    ck_assert_msg(strncmp(err, expect, strlen(expect)) == 0,
                  "error \"%s\", expected \"%s...\"", err, expect);
}


static char *
set_member(const char *s, const char *key, json_t *value)
{
    char    *p, *out;
    size_t   n;
    json_t  *json;

    p = dup_exact(s, strlen(s));
    out = cb_jsonc_set_member(p, strlen(s), key, value, &n, err, sizeof(err));
    free(p);

    ck_assert_msg(out != NULL, "%s", err);
    ck_assert_uint_eq(n, strlen(out));

    json = parse(out);
    ck_assert_msg(json != NULL, "%s: %s", err, out);
    ck_assert_msg(json_equal(json_object_get(json, key), value),
                  "%s: wrong value", out);
    json_decref(json);

    return out;
}


static void
set_member_expect(const char *s, const char *key, json_t *value,
    const char *expect)
{
    char  *out;

    out = set_member(s, key, value);
    ck_assert_str_eq(out, expect);
    free(out);
}


static char *
read_all(const char *path)
{
    FILE    *f;
    char    *s;
    size_t   n;

    f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);

    s = malloc(65536);
    ck_assert_ptr_nonnull(s);

    n = fread(s, 1, 65535, f);
    s[n] = '\0';
    fclose(f);

    return s;
}


static void
write_all(const char *path, const char *data)
{
    FILE  *f;

    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, strlen(data), f), strlen(data));
    ck_assert_int_eq(fclose(f), 0);
}


static Suite *
cb_jsonc_suite(void)
{
    TCase  *tc;
    Suite  *s;

    s = suite_create("cb_jsonc");

    tc = tcase_create("parse");
    tcase_add_test(tc, test_markers_in_strings);
    tcase_add_test(tc, test_comments_everywhere);
    tcase_add_test(tc, test_trailing_commas);
    tcase_add_test(tc, test_escapes);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_sample);
    tcase_add_test(tc, test_deep);
    suite_add_tcase(s, tc);

    tc = tcase_create("set_member");
    tcase_add_test(tc, test_set_sample);
    tcase_add_test(tc, test_set_replace);
    tcase_add_test(tc, test_set_add);
    tcase_add_test(tc, test_set_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("files");
    tcase_add_test(tc, test_files);
    suite_add_tcase(s, tc);

    return s;
}


int
main(void)
{
    return cb_check_run(cb_jsonc_suite());
}
