
/*
 * Copyright (C) chatbridge authors
 *
 * Check tests for LMArena Bridge compatibility: its files read as they are
 * shipped (with comments), model ids and types, session pools, round robin
 * with cooldowns, the participantPosition rule, placeholder ids.
 */


#include "cb_check.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cb_arena.h"


static char  dir[256];


static void
put(const char *name, const char *text)
{
    char   path[512];
    FILE  *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}


static void
setup(void)
{
    strcpy(dir, "/tmp/cb_arena_test_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));

    put("config.jsonc",
        "{\n"
        "  \"version\": \"2.5.6\", // do not edit\n"
        "  \"session_id\": \"11111111-aaaa\",\n"
        "  \"message_id\": \"22222222-bbbb\",\n"
        "  /* 模式 */ \"id_updater_last_mode\": \"direct_chat\",\n"
        "  \"id_updater_battle_target\": \"A\",\n"
        "  \"enable_auto_update\": true,\n"
        "  \"bypass_enabled\": true,\n"
        "  \"tavern_mode_enabled\": false,\n"
        "  \"use_default_ids_if_mapping_not_found\": true,\n"
        "  \"stream_response_timeout_seconds\": 120,\n"
        "  \"file_bed_upload_url\": \"http://127.0.0.1:5180/upload\",\n"
        "  \"api_key\": \"\",\n"
        "}\n");

    put("models.json",
        "{\n"
        "  \"gpt-4o\": \"0196aaaa-0000-7000-8000-000000000001\",\n"
        "  \"dall-e\": \"0196aaaa-0000-7000-8000-000000000002:image\",\n"
        "  \"mystery-image\": \"null:image\"\n"
        "}\n");

    put("model_endpoint_map.json",
        "{\n"
        "  \"claude\": [\n"
        "    {\"session_id\": \"s1\", \"message_id\": \"m1\","
        " \"mode\": \"direct_chat\"},\n"
        "    {\"session_id\": \"s2\", \"message_id\": \"m2\","
        " \"mode\": \"battle\", \"battle_target\": \"B\"},\n"
        "    {\"session_id\": \"s3\", \"message_id\": \"m3\"}\n"
        "  ],\n"
        "  \"gemini\": {\"session_id\": \"g1\", \"message_id\": \"gm1\"},\n"
        "  \"placeholder\": {\"session_id\": \"YOUR_SESSION_ID\","
        " \"message_id\": \"YOUR_MESSAGE_ID\"}\n"
        "}\n");
}


static void
teardown(void)
{
    char  cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    (void) !system(cmd);
}


static cb_arena_t *
load(void)
{
    static cb_arena_t  a;
    char               err[512];

    ck_assert_msg(cb_arena_load(&a, dir, err, sizeof(err)) == 0, "%s", err);

    return &a;
}


START_TEST(test_config_read)
{
    cb_arena_t  *a;

    a = load();

    ck_assert_str_eq(a->global.session_id, "11111111-aaaa");
    ck_assert_str_eq(a->global.message_id, "22222222-bbbb");
    ck_assert_int_eq(a->global.mode, CB_ARENA_DIRECT);
    ck_assert_int_eq(a->global.target, 'a');
    ck_assert_int_eq(a->bypass, 1);
    ck_assert_int_eq(a->tavern, 0);
    ck_assert_int_eq(a->use_default, 1);
    ck_assert_int_eq(a->idle_timeout, 120);
    ck_assert_str_eq(a->api_key, "");

    /* keys that change nothing here are named, not silently dropped */
    ck_assert_ptr_nonnull(strstr(a->notes, "enable_auto_update"));
    ck_assert_ptr_nonnull(strstr(a->notes, "file_bed_upload_url"));

    cb_arena_free(a);
}
END_TEST


START_TEST(test_models)
{
    int          image;
    size_t       len;
    cb_arena_t  *a;
    const char  *uuid;

    a = load();

    cb_arena_model(a, "gpt-4o", &uuid, &len, &image);
    ck_assert_int_eq(image, 0);
    ck_assert_uint_eq(len, 36);
    ck_assert(strncmp(uuid, "0196aaaa-0000-7000-8000-000000000001", 36) == 0);

    cb_arena_model(a, "dall-e", &uuid, &len, &image);
    ck_assert_int_eq(image, 1);
    ck_assert(strncmp(uuid, "0196aaaa-0000-7000-8000-000000000002", len)
              == 0);
    ck_assert_uint_eq(len, 36);

    cb_arena_model(a, "mystery-image", &uuid, &len, &image);
    ck_assert_int_eq(image, 1);
    ck_assert_ptr_null(uuid);

    /* unknown: no id, the site keeps the retried message's model */
    cb_arena_model(a, "nope", &uuid, &len, &image);
    ck_assert_ptr_null(uuid);
    ck_assert_int_eq(image, 0);

    cb_arena_free(a);
}
END_TEST


START_TEST(test_pools)
{
    int                 mapped;
    size_t              n;
    cb_arena_t         *a;
    cb_arena_entry_t    pool[8];
    cb_arena_session_t  s;

    a = load();

    n = cb_arena_pool(a, NULL, "claude", pool, 8, &mapped);
    ck_assert_uint_eq(n, 3);
    ck_assert(mapped);
    ck_assert_str_eq(pool[1].session_id, "s2");
    ck_assert_int_eq(pool[1].mode, CB_ARENA_BATTLE);
    ck_assert_int_eq(pool[1].target, 'b');
    ck_assert_int_eq(pool[2].mode, 0);

    /* an entry without mode uses the global mode */
    cb_arena_resolve(a, NULL, &pool[2], &s);
    ck_assert_str_eq(s.session_id, "s3");
    ck_assert_int_eq(s.mode, CB_ARENA_DIRECT);
    ck_assert_int_eq(s.target, 'a');

    cb_arena_resolve(a, NULL, &pool[1], &s);
    ck_assert_int_eq(s.mode, CB_ARENA_BATTLE);
    ck_assert_int_eq(s.target, 'b');

    /* a single object, the legacy form */
    n = cb_arena_pool(a, NULL, "gemini", pool, 8, &mapped);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(pool[0].session_id, "g1");

    /* not mapped: the global ids, as use_default allows */
    n = cb_arena_pool(a, NULL, "gpt-4o", pool, 8, &mapped);
    ck_assert_uint_eq(n, 1);
    ck_assert(!mapped);
    cb_arena_resolve(a, NULL, &pool[0], &s);
    ck_assert_str_eq(s.session_id, "11111111-aaaa");
    ck_assert_str_eq(s.message_id, "22222222-bbbb");

    a->use_default = 0;
    ck_assert_uint_eq(cb_arena_pool(a, NULL, "gpt-4o", pool, 8, &mapped), 0);

    cb_arena_free(a);
}
END_TEST


static int
cool_s2(void *data, size_t i)
{
    cb_arena_entry_t  *pool = data;

    return strcmp(pool[i].session_id, "s2") == 0;
}


static int
cool_all(void *data, size_t i)
{
    (void) data;
    (void) i;
    return 1;
}


START_TEST(test_round_robin_and_cooldown)
{
    int                mapped;
    size_t             n, k;
    int                hits[3] = { 0, 0, 0 };
    cb_arena_t        *a;
    cb_arena_entry_t   pool[8];

    a = load();
    n = cb_arena_pool(a, NULL, "claude", pool, 8, &mapped);

    /* round robin: in turn, not at random */
    for (k = 0; k < 6; k++) {
        ck_assert_int_eq(cb_arena_pick(n, k, NULL, NULL), (int) (k % 3));
    }

    /* a session that failed lately is skipped; the others still turn */
    for (k = 0; k < 6; k++) {
        hits[cb_arena_pick(n, k, cool_s2, pool)]++;
    }

    ck_assert_int_eq(hits[1], 0);
    ck_assert_int_eq(hits[0] + hits[2], 6);
    ck_assert_int_gt(hits[0], 0);
    ck_assert_int_gt(hits[2], 0);

    ck_assert_int_eq(cb_arena_pick(n, 0, cool_all, pool), -1);

    cb_arena_free(a);
}
END_TEST


START_TEST(test_placeholders_refused)
{
    int                 mapped;
    cb_err_t            err;
    cb_arena_t         *a;
    cb_arena_entry_t    pool[8];
    cb_arena_session_t  s;

    a = load();

    cb_arena_pool(a, NULL, "placeholder", pool, 8, &mapped);
    cb_arena_resolve(a, NULL, &pool[0], &s);
    ck_assert_int_ne(cb_arena_check(&s, "placeholder", &err), 0);
    ck_assert_uint_eq(err.status, 400);
    ck_assert_str_eq(err.code, "session_not_configured");
    ck_assert_ptr_nonnull(strstr(err.message, "placeholder"));
    ck_assert_ptr_nonnull(strstr(err.message, "chatbridgectl capture"));

    s.session_id = "x";
    s.message_id = NULL;
    ck_assert_int_ne(cb_arena_check(&s, "m", &err), 0);
    ck_assert_ptr_nonnull(strstr(err.message, "message_id"));

    s.message_id = "y";
    ck_assert_int_eq(cb_arena_check(&s, "m", &err), 0);

    cb_arena_free(a);
}
END_TEST


static const char *
position(json_t *messages, size_t i)
{
    return json_string_value(json_object_get(json_array_get(messages, i),
                                             "position"));
}


START_TEST(test_positions)
{
    json_t              *m;
    cb_arena_session_t   s;

    m = json_loads("[{\"role\":\"system\",\"content\":\"s\"},"
                   "{\"role\":\"user\",\"content\":\"u\"},"
                   "{\"role\":\"assistant\",\"content\":\"a\"}]", 0, NULL);

    s.session_id = "x";
    s.message_id = "y";
    s.mode = CB_ARENA_DIRECT;
    s.target = 'b';

    /* direct_chat: system is b, everything else a, whatever the target */
    cb_arena_positions(m, &s);
    ck_assert_str_eq(position(m, 0), "b");
    ck_assert_str_eq(position(m, 1), "a");
    ck_assert_str_eq(position(m, 2), "a");

    /* battle: every message on the target's side, system included */
    s.mode = CB_ARENA_BATTLE;
    cb_arena_positions(m, &s);
    ck_assert_str_eq(position(m, 0), "b");
    ck_assert_str_eq(position(m, 1), "b");
    ck_assert_str_eq(position(m, 2), "b");

    s.target = 'a';
    cb_arena_positions(m, &s);
    ck_assert_str_eq(position(m, 0), "a");

    json_decref(m);
}
END_TEST


START_TEST(test_task_section)
{
    json_t              *t;
    cb_arena_session_t   s;

    s.session_id = "sid";
    s.message_id = "mid";
    s.mode = CB_ARENA_BATTLE;
    s.target = 'b';

    t = cb_arena_task(&s, "uuid-1:image", 6, 1);
    ck_assert_str_eq(json_string_value(json_object_get(t, "session_id")),
                     "sid");
    ck_assert_str_eq(json_string_value(json_object_get(t, "mode")), "battle");
    ck_assert_str_eq(json_string_value(json_object_get(t, "battle_target")),
                     "b");
    ck_assert_str_eq(json_string_value(json_object_get(t, "model_uuid")),
                     "uuid-1");
    ck_assert_str_eq(json_string_value(json_object_get(t, "model_type")),
                     "image");
    json_decref(t);

    t = cb_arena_task(&s, NULL, 0, 0);
    ck_assert(json_is_null(json_object_get(t, "model_uuid")));
    json_decref(t);
}
END_TEST


START_TEST(test_live_ids_win)
{
    int                 mapped;
    size_t              n;
    json_t             *live;
    cb_arena_t         *a;
    cb_arena_entry_t    pool[8];
    cb_arena_session_t  s;

    a = load();

    live = json_loads("{\"global\":{\"session_id\":\"cap-s\","
                      "\"message_id\":\"cap-m\",\"mode\":\"battle\","
                      "\"battle_target\":\"B\"},"
                      "\"models\":{\"gemini\":[{\"session_id\":\"g2\","
                      "\"message_id\":\"gm2\"},{\"session_id\":\"g1\","
                      "\"message_id\":\"gm1\"}]}}", 0, NULL);

    n = cb_arena_pool(a, live, "gemini", pool, 8, &mapped);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(pool[0].session_id, "g2");

    /* captured global ids, mode and target apply to unmapped models */
    cb_arena_pool(a, live, "gpt-4o", pool, 8, &mapped);
    cb_arena_resolve(a, live, &pool[0], &s);
    ck_assert_str_eq(s.session_id, "cap-s");
    ck_assert_int_eq(s.mode, CB_ARENA_BATTLE);
    ck_assert_int_eq(s.target, 'b');

    /* and a mapped entry without its own mode takes the captured one */
    cb_arena_pool(a, live, "gemini", pool, 8, &mapped);
    cb_arena_resolve(a, live, &pool[0], &s);
    ck_assert_int_eq(s.mode, CB_ARENA_BATTLE);

    json_decref(live);
    cb_arena_free(a);
}
END_TEST


START_TEST(test_errors_name_the_file)
{
    char         err[512];
    cb_arena_t   a;

    put("config.jsonc", "{\"id_updater_last_mode\": \"duel\"}");
    ck_assert_int_ne(cb_arena_load(&a, dir, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "config.jsonc"));
    ck_assert_ptr_nonnull(strstr(err, "id_updater_last_mode"));

    put("config.jsonc",
        "{\n  \"session_id\": \"x\"\n  \"message_id\": \"y\"\n}");
    ck_assert_int_ne(cb_arena_load(&a, dir, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "config.jsonc:3:"));

    put("config.jsonc", "{}");
    put("model_endpoint_map.json",
        "{\"m\": [{\"session_id\": \"s\", \"message_id\": \"m\","
        " \"battle_target\": \"C\"}]}");
    ck_assert_int_ne(cb_arena_load(&a, dir, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "model_endpoint_map.json"));
    ck_assert_ptr_nonnull(strstr(err, "\"m\"[0]"));

    put("model_endpoint_map.json", "{}");
    put("models.json", "{\"a\": 5}");
    ck_assert_int_ne(cb_arena_load(&a, dir, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "models.json"));

    unlink("/nonexistent");
    ck_assert_int_ne(cb_arena_load(&a, "/nonexistent", err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "config.jsonc"));
}
END_TEST


int
main(void)
{
    Suite  *s;
    TCase  *tc;

    s = suite_create("cb_arena");
    tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);

    tcase_add_test(tc, test_config_read);
    tcase_add_test(tc, test_models);
    tcase_add_test(tc, test_pools);
    tcase_add_test(tc, test_round_robin_and_cooldown);
    tcase_add_test(tc, test_placeholders_refused);
    tcase_add_test(tc, test_positions);
    tcase_add_test(tc, test_task_section);
    tcase_add_test(tc, test_live_ids_win);
    tcase_add_test(tc, test_errors_name_the_file);

    suite_add_tcase(s, tc);

    return cb_check_run(s);
}
