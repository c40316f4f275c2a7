// Copyright (C) chatbridge authors
//
// Check tests for the frame validator: every example in the protocol spec
// (the same examples the JavaScript tests load) validates as the spec says,
// and every frame the sidecar builds is valid by the spec.

#include "frames.h"

#include "cb_check.h"
#include <libwebsockets.h>

#include <cstring>
#include <string>

using namespace chatbridge;

static Schema schema;

static void load_schema()
{
    std::string err;
    ck_assert_msg(schema.load(protocol_spec, &err), "%s", err.c_str());
}

static json_t *parse_out(const OutFrame &f)
{
    json_error_t je;
    json_t *j = json_loadb(f->data() + LWS_PRE, f->size() - LWS_PRE, 0, &je);
    ck_assert_msg(j != nullptr, "not JSON: %s", je.text);
    return j;
}

START_TEST(test_spec_examples)
{
    size_t i, n = 0;
    json_t *ex;

    json_array_foreach(schema.examples(), i, ex) {
        const char *name = json_string_value(json_object_get(ex, "name"));
        json_t *frame = json_object_get(ex, "frame");
        bool valid = json_is_true(json_object_get(ex, "valid"));

        // a frame is checked in the direction its type is sent; the spec's
        // examples cover both
        Verdict vb = schema.validate(frame, Direction::browser);
        Verdict vs = schema.validate(frame, Direction::sidecar);
        bool ok = vb.ok || vs.ok;

        ck_assert_msg(ok == valid, "example \"%s\": %s", name,
                      valid ? (vb.message + " / " + vs.message).c_str()
                            : "accepted");
        if (!valid) {
            const char *want = json_string_value(json_object_get(ex,
                                                                 "error"));
            bool match = vb.error == want || vs.error == want;
            ck_assert_msg(match, "example \"%s\": wanted %s, got %s / %s",
                          name, want, vb.error.c_str(), vs.error.c_str());
        }
        n++;
    }

    ck_assert_uint_ge(n, 30);
}
END_TEST

START_TEST(test_direction_matters)
{
    json_t *task = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:[]}",
                             "type", "task", "request_id", "r", "kind", "any",
                             "op", "chat", "model", "m", "stream", 0,
                             "messages");
    ck_assert(schema.validate(task, Direction::sidecar).ok);

    // a browser cannot send a task
    Verdict v = schema.validate(task, Direction::browser);
    ck_assert(!v.ok);
    ck_assert_str_eq(v.error.c_str(), "unknown_type");
    json_decref(task);
}
END_TEST

START_TEST(test_paths_and_bytes)
{
    // max_len counts bytes: 23 three-byte characters are 69 bytes
    std::string id;
    for (int i = 0; i < 23; i++) {
        id += "\xe4\xb8\x96";
    }
    json_t *f = json_pack("{s:s, s:s, s:s}", "type", "delta", "request_id",
                          "abc", "text", id.c_str());
    ck_assert(schema.validate(f, Direction::browser).ok);
    json_object_set_new(f, "request_id", json_string(id.c_str()));
    Verdict v = schema.validate(f, Direction::browser);
    ck_assert_str_eq(v.error.c_str(), "too_long");
    ck_assert_str_eq(v.path.c_str(), "request_id");
    json_decref(f);

    f = json_loads("{\"type\":\"models\",\"models\":[{\"id\":\"a\"},"
                   "{\"id\":\"b\",\"type\":\"audio\"}]}", 0, nullptr);
    v = schema.validate(f, Direction::browser);
    ck_assert_str_eq(v.error.c_str(), "not_in_enum");
    ck_assert_str_eq(v.path.c_str(), "models[1].type");
    json_decref(f);

    f = json_loads("{\"type\":\"hello\",\"v\":1,\"token\":\"t\","
                   "\"kind\":\"arena\",\"capabilities\":{\"concurrency\":0}}",
                   0, nullptr);
    v = schema.validate(f, Direction::browser);
    ck_assert_str_eq(v.error.c_str(), "out_of_range");
    ck_assert_str_eq(v.path.c_str(), "capabilities.concurrency");
    json_decref(f);
}
END_TEST

START_TEST(test_error_codes)
{
    ck_assert_uint_eq(schema.error_code("rate_limited").status, 429);
    ck_assert(schema.error_code("rate_limited").retryable);
    ck_assert_uint_eq(schema.error_code("needs_human").status, 503);
    ck_assert_uint_eq(schema.error_code("unauthorized").status, 401);
    // an unknown code is the site's failure
    ck_assert_uint_eq(schema.error_code("made_up").status, 502);
}
END_TEST

START_TEST(test_built_frames_are_valid)
{
    json_t *args = json_pack("{s:s}", "model", "m");
    OutFrame frames[] = {
        welcome_frame("b1", 15000, 16777216),
        ping_frame(1.5),
        cancel_frame("r1", "client_closed"),
        flow_frame("pause", "r1"),
        flow_frame("resume", "r1"),
        error_frame("bad_frame", "text: is required", "r1"),
        error_frame("unauthorized", "wrong token", ""),
        command_frame("c1", "capture", args),
    };
    json_decref(args);

    for (const auto &f : frames) {
        ck_assert(f != nullptr);
        ck_assert_uint_ge(f->size(), LWS_PRE);
        json_t *j = parse_out(f);
        Verdict v = schema.validate(j, Direction::sidecar);
        ck_assert_msg(v.ok, "%s: %s",
                      json_string_value(json_object_get(j, "type")),
                      v.message.c_str());
        json_decref(j);
    }

    json_t *t = json_real(12.0);
    OutFrame pong = pong_frame(t);
    json_decref(t);
    json_t *j = parse_out(pong);
    ck_assert(json_number_value(json_object_get(j, "t")) == 12.0);
    json_decref(j);
}
END_TEST

START_TEST(test_not_an_object)
{
    json_t *a = json_loads("[1]", 0, nullptr);
    Verdict v = schema.validate(a, Direction::browser);
    ck_assert_str_eq(v.error.c_str(), "not_object");
    json_decref(a);

    json_t *o = json_loads("{\"type\":7}", 0, nullptr);
    v = schema.validate(o, Direction::browser);
    ck_assert_str_eq(v.error.c_str(), "wrong_type");
    json_decref(o);
}
END_TEST

// The fast path (Schema::read_fast) may only accept what the full path
// accepts, with the same values; returns whether it accepted.
static bool fast_agrees(const std::string &text)
{
    FastFrame ff;
    std::string scratch;
    bool fast = schema.read_fast(text.data(), text.size(), &ff, &scratch);

    if (!fast) {
        return false;
    }

    json_error_t je;
    json_t *j = json_loadb(text.data(), text.size(), 0, &je);
    ck_assert_msg(j != nullptr, "fast path took what jansson refuses: %s",
                  text.c_str());
    Verdict v = schema.validate(j, Direction::browser);
    ck_assert_msg(v.ok, "fast path took an invalid frame (%s): %s",
                  v.message.c_str(), text.c_str());

    static const char *const names[] = { "delta", "reasoning", "done" };
    ck_assert_str_eq(json_string_value(json_object_get(j, "type")),
                     names[int(ff.kind)]);

    json_t *id = json_object_get(j, "request_id");
    ck_assert(std::string(json_string_value(id), json_string_length(id))
              == std::string(ff.request_id));

    json_t *t = json_object_get(j, "text");
    ck_assert(std::string(t ? json_string_value(t) : "",
                          t ? json_string_length(t) : 0)
              == std::string(ff.text));

    json_t *fr = json_object_get(j, "finish_reason");
    ck_assert(std::string(fr ? json_string_value(fr) : "",
                          fr ? json_string_length(fr) : 0)
              == std::string(ff.finish_reason));

    json_decref(j);
    return true;
}

START_TEST(test_fast_path)
{
    // the common shapes take the fast path
    const char *const fast[] = {
        "{\"type\":\"delta\",\"request_id\":\"abc\",\"text\":\"Hello\"}",
        " { \"type\" : \"reasoning\" , \"request_id\" : \"r.1:x-y_z\" ,"
        " \"text\" : \"hm\" } \n",
        "{\"request_id\":\"r1\",\"text\":\"a\\\"b\\\\c\\n\\/\\u00e9"
        "\\ud83d\\ude00\",\"type\":\"delta\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"x\","
        "\"extra\":\"ignored\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"\xe4\xb8\x96"
        "\xf0\x9f\x98\x80\"}",
        "{\"type\":\"done\",\"request_id\":\"r\"}",
        "{\"type\":\"done\",\"request_id\":\"r\",\"finish_reason\":\"stop\"}",
    };
    for (const char *f : fast) {
        ck_assert_msg(fast_agrees(f), "not on the fast path: %s", f);
    }

    // everything else is left to the full parser and validator
    const char *const slow[] = {
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"a\","
        "\"text\":\"b\"}",
        "{\"type\":\"done\",\"request_id\":\"r\",\"usage\":"
        "{\"prompt_tokens\":1}}",
        "{\"type\":\"done\",\"request_id\":\"r\",\"usage\":\"x\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":5}",
        "{\"type\":\"delta\",\"request_id\":\"r 1\",\"text\":\"x\"}",
        "{\"type\":\"delta\",\"request_id\":\"\\u0072\",\"text\":\"x\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"\\ud800\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"\\udc00x\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"\\u0000\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"\\x\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"\xc0\xaf\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"\xed\xa0\x80\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"\xf4\x90\x80"
        "\x80\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"a\tb\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"x\"} x",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"x\",}",
        "{\"type\":\"d\\u0065lta\",\"request_id\":\"r\",\"text\":\"x\"}",
        "{\"t\\u0079pe\":\"delta\",\"request_id\":\"r\",\"text\":\"x\"}",
        "{\"type\":\"ping\",\"t\":1}",
        "{\"type\":\"image\",\"request_id\":\"r\",\"url\":\"u\"}",
        "{\"type\":\"delta\",\"text\":\"x\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\"}",
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"x\"",
        "[\"type\",\"delta\"]",
        "",
    };
    for (const char *f : slow) {
        ck_assert_msg(!fast_agrees(f), "on the fast path: %s", f);
    }

    // lengths are the spec's, in bytes once unescaped
    std::string id(65, 'a');
    ck_assert(!fast_agrees("{\"type\":\"delta\",\"request_id\":\"" + id
                           + "\",\"text\":\"x\"}"));
    id.resize(64);
    ck_assert(fast_agrees("{\"type\":\"delta\",\"request_id\":\"" + id
                          + "\",\"text\":\"x\"}"));
}
END_TEST

START_TEST(test_fast_path_mutations)
{
    // thousands of damaged frames: the fast path never takes one the full
    // path refuses, and reads the same values from those it takes
    const std::string base =
        "{\"type\":\"delta\",\"request_id\":\"r-1\",\"text\":\"a\\\"\\u00e9"
        "\\ud83d\\ude00 \xe4\xb8\x96\"}";
    const char bytes[] = "\"\\{}:, u0dDa\x80\xbf\xc3\xe4\xed\xf0\xff\t\n";
    uint32_t x = 2463534242u;
    unsigned taken = 0;

    for (int i = 0; i < 20000; i++) {
        std::string f = base;
        int edits = 1 + int(i % 3);

        for (int k = 0; k < edits; k++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            size_t at = x % f.size();
            char c = bytes[(x >> 16) % (sizeof(bytes) - 1)];

            switch ((x >> 8) % 3) {
            case 0:
                f[at] = c;
                break;
            case 1:
                f.insert(f.begin() + long(at), c);
                break;
            default:
                f.erase(at, 1);
            }
        }

        taken += fast_agrees(f);
    }

    ck_assert_uint_gt(taken, 100);
}
END_TEST

START_TEST(test_fast_path_follows_from)
{
    // a spec in which no browser sends delta: the fast path refuses it, as
    // validate() does (the same rule for "from")
    json_error_t je;
    json_t *spec = json_loads(protocol_spec, 0, &je);
    ck_assert(spec != nullptr);
    json_t *delta = json_object_get(json_object_get(spec, "frames"),
                                    "delta");
    json_object_set_new(delta, "from", json_string("nobody"));
    char *text = json_dumps(spec, 0);
    json_decref(spec);

    Schema other;
    std::string err;
    ck_assert_msg(other.load(text, &err), "%s", err.c_str());
    free(text);

    const std::string f =
        "{\"type\":\"delta\",\"request_id\":\"r\",\"text\":\"x\"}";
    json_t *j = json_loads(f.c_str(), 0, &je);
    Verdict v = other.validate(j, Direction::browser);
    json_decref(j);
    ck_assert(!v.ok);
    ck_assert_str_eq(v.error.c_str(), "unknown_type");

    FastFrame ff;
    std::string scratch;
    ck_assert(!other.read_fast(f.data(), f.size(), &ff, &scratch));

    // and the shipped spec takes it
    ck_assert(schema.read_fast(f.data(), f.size(), &ff, &scratch));
}
END_TEST

int main()
{
    Suite *s = suite_create("frames");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, load_schema, nullptr);

    tcase_add_test(tc, test_spec_examples);
    tcase_add_test(tc, test_direction_matters);
    tcase_add_test(tc, test_paths_and_bytes);
    tcase_add_test(tc, test_error_codes);
    tcase_add_test(tc, test_built_frames_are_valid);
    tcase_add_test(tc, test_not_an_object);
    tcase_add_test(tc, test_fast_path);
    tcase_add_test(tc, test_fast_path_mutations);
    tcase_add_test(tc, test_fast_path_follows_from);
    suite_add_tcase(s, tc);

    return cb_check_run(s);
}
