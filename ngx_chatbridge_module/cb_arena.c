
/*
 * Copyright (C) chatbridge authors
 *
 * LMArena Bridge's three files, what they mean, and how a request gets its
 * session.  "live" is what session-id captures changed since the files
 * were read: {"global": {session_id, message_id, mode, battle_target},
 * "models": {"<model>": [entries]}}; it wins over the files.
 */


#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cb_arena.h"
#include "cb_jsonc.h"


static int cb_arena_read(const char *dir, const char *name, int required,
    json_t **out, char *err, size_t errlen);
static int cb_arena_config(cb_arena_t *a, const char *file, char *err,
    size_t errlen);
static int cb_arena_entry(json_t *v, cb_arena_entry_t *e);
static int cb_arena_parse_mode(json_t *v, int *mode);
static int cb_arena_parse_target(json_t *v, char *target);
static void cb_arena_note(cb_arena_t *a, const char *fmt, ...);
static int cb_arena_fail(char *err, size_t errlen, const char *fmt, ...);


/* keys of LMArena Bridge's config.jsonc that have no meaning here */

static const char  *cb_arena_unused[] = {
    "version", "enable_auto_update", "enable_idle_restart",
    "idle_restart_timeout_seconds", "file_bed_enabled",
    "file_bed_upload_url", "file_bed_api_key", NULL
};


int
cb_arena_load(cb_arena_t *a, const char *dir, char *err, size_t errlen)
{
    char  file[4096];

    memset(a, 0, sizeof(cb_arena_t));
    a->tavern = -1;
    a->bypass = -1;
    a->idle_timeout = -1;
    a->use_default = 1;
    a->global.mode = CB_ARENA_DIRECT;
    a->global.target = 'a';

    if (cb_arena_read(dir, "config.jsonc", 1, &a->config, err, errlen) != 0
        || cb_arena_read(dir, "models.json", 0, &a->models, err, errlen) != 0
        || cb_arena_read(dir, "model_endpoint_map.json", 0, &a->map, err,
                         errlen) != 0)
    {
        cb_arena_free(a);
        return -1;
    }

    snprintf(file, sizeof(file), "%s/config.jsonc", dir);
    if (cb_arena_config(a, file, err, errlen) != 0) {
        cb_arena_free(a);
        return -1;
    }

    snprintf(file, sizeof(file), "%s/models.json", dir);
    if (a->models && cb_arena_check_models(a->models, file, err, errlen) != 0)
    {
        cb_arena_free(a);
        return -1;
    }

    snprintf(file, sizeof(file), "%s/model_endpoint_map.json", dir);
    if (a->map && cb_arena_check_map(a->map, file, err, errlen) != 0) {
        cb_arena_free(a);
        return -1;
    }

    return 0;
}


void
cb_arena_free(cb_arena_t *a)
{
    json_decref(a->config);
    json_decref(a->models);
    json_decref(a->map);

    a->config = NULL;
    a->models = NULL;
    a->map = NULL;
}


/*
 * models.json: "name": "uuid", "name": "uuid:image", "name": "null:image".
 * An unknown model has no uuid: the site then keeps the model of the message
 * being retried, as LMArena Bridge did.
 */

void
cb_arena_model(const cb_arena_t *a, const char *model, const char **uuid,
    size_t *uuid_len, int *image)
{
    size_t       len;
    const char  *v, *colon;

    *uuid = NULL;
    *uuid_len = 0;
    *image = 0;

    v = json_string_value(json_object_get(a->models, model));
    if (v == NULL) {
        return;
    }

    colon = strchr(v, ':');
    len = colon ? (size_t) (colon - v) : strlen(v);

    if (colon) {
        *image = strcmp(colon + 1, "image") == 0;
    }

    if (len == 0 || (len == 4 && strncmp(v, "null", 4) == 0)) {
        return;
    }

    *uuid = v;
    *uuid_len = len;
}


/*
 * The sessions that can serve a model: its entries in the live map or in
 * model_endpoint_map.json (one object or a list), else the global ids when
 * use_default_ids_if_mapping_not_found allows.  Returns how many; *mapped
 * says whether they came from a map.
 */

size_t
cb_arena_pool(const cb_arena_t *a, json_t *live, const char *model,
    cb_arena_entry_t *out, size_t max, int *mapped)
{
    size_t   i, n;
    json_t  *v, *item;

    *mapped = 1;

    v = json_object_get(json_object_get(live, "models"), model);
    if (v == NULL) {
        v = json_object_get(a->map, model);
    }

    n = 0;

    if (json_is_object(v)) {
        if (cb_arena_entry(v, &out[0]) == 0 && out[0].session_id) {
            n = 1;
        }

    } else if (json_is_array(v)) {
        json_array_foreach(v, i, item) {
            if (n < max && cb_arena_entry(item, &out[n]) == 0
                && out[n].session_id)
            {
                n++;
            }
        }
    }

    if (n) {
        return n;
    }

    *mapped = 0;

    if (!a->use_default) {
        return 0;
    }

    /* the global ids; mode and target come from cb_arena_resolve() */
    memset(&out[0], 0, sizeof(cb_arena_entry_t));

    return 1;
}


/*
 * Round robin from the shared counter, skipping entries that failed
 * recently; -1 if every entry is cooling down.
 */

int
cb_arena_pick(size_t n, uint64_t counter, int (*cooling)(void *data,
    size_t i), void *data)
{
    size_t  k, i;

    for (k = 0; k < n; k++) {
        i = (counter + k) % n;

        if (cooling == NULL || !cooling(data, i)) {
            return (int) i;
        }
    }

    return -1;
}


/* an entry with the global defaults filled in */

void
cb_arena_resolve(const cb_arena_t *a, json_t *live, const cb_arena_entry_t *e,
    cb_arena_session_t *s)
{
    json_t            *g;
    cb_arena_entry_t   global;

    global = a->global;

    g = json_object_get(live, "global");
    if (json_is_object(g)) {
        (void) cb_arena_entry(g, &global);

        if (global.mode == 0) {
            global.mode = a->global.mode;
        }

        if (global.target == 0) {
            global.target = a->global.target;
        }

        if (global.session_id == NULL) {
            global.session_id = a->global.session_id;
            global.message_id = a->global.message_id;
        }
    }

    if (e->session_id) {
        s->session_id = e->session_id;
        s->message_id = e->message_id;

    } else {
        s->session_id = global.session_id;
        s->message_id = global.message_id;
    }

    s->mode = e->mode ? e->mode : global.mode;
    s->target = e->target ? e->target : global.target;
}


/* ids that are missing or still the placeholders of the shipped file */

int
cb_arena_check(const cb_arena_session_t *s, const char *model, cb_err_t *err)
{
    const char  *bad;

    bad = NULL;

    if (s->session_id == NULL || s->session_id[0] == '\0') {
        bad = "has no session_id";

    } else if (s->message_id == NULL || s->message_id[0] == '\0') {
        bad = "has no message_id";

    } else if (strstr(s->session_id, "YOUR_")
               || strstr(s->message_id, "YOUR_"))
    {
        bad = "still has a placeholder id (YOUR_...)";
    }

    if (bad == NULL) {
        return 0;
    }

    cb_err_set(err, 400, "session_not_configured", "model",
               "The LMArena session for model \"%.100s\" %s. Capture one "
               "with \"chatbridgectl capture\" (or set session_id and "
               "message_id in config.jsonc or model_endpoint_map.json).",
               model, bad);
    return -1;
}


/*
 * participantPosition: in direct_chat, system messages are "b" and the
 * others "a"; in battle, every message is the target side.
 */

void
cb_arena_positions(json_t *messages, const cb_arena_session_t *s)
{
    char         side[2];
    size_t       i;
    json_t      *m;
    const char  *role;

    side[1] = '\0';

    json_array_foreach(messages, i, m) {
        role = json_string_value(json_object_get(m, "role"));

        if (s->mode == CB_ARENA_BATTLE) {
            side[0] = s->target;

        } else {
            side[0] = (role && strcmp(role, "system") == 0) ? 'b' : 'a';
        }

        json_object_set_new(m, "position", json_string(side));
    }
}


json_t *
cb_arena_task(const cb_arena_session_t *s, const char *uuid, size_t uuid_len,
    int image)
{
    char  target[2];

    target[0] = s->target;
    target[1] = '\0';

    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s}",
                     "session_id", s->session_id,
                     "message_id", s->message_id,
                     "mode", cb_arena_mode_name(s->mode),
                     "battle_target", target,
                     "model_uuid", uuid ? json_stringn(uuid, uuid_len)
                                        : json_null(),
                     "model_type", image ? "image" : "chat");
}


const char *
cb_arena_mode_name(int mode)
{
    return mode == CB_ARENA_BATTLE ? "battle" : "direct_chat";
}


static int
cb_arena_read(const char *dir, const char *name, int required, json_t **out,
    char *err, size_t errlen)
{
    char         file[4096];
    struct stat  st;

    *out = NULL;

    snprintf(file, sizeof(file), "%s/%s", dir, name);

    /* an optional file may be absent; anything else is read, or refused */

    if (stat(file, &st) == -1 && errno == ENOENT) {
        if (required) {
            return cb_arena_fail(err, errlen, "%s: cannot be read", file);
        }

        return 0;
    }

    *out = cb_jsonc_load_file(file, CB_ARENA_FILE_MAX, err, errlen);

    return *out ? 0 : -1;
}


static int
cb_arena_config(cb_arena_t *a, const char *file, char *err, size_t errlen)
{
    size_t       i;
    json_t      *c, *v;
    const char  *key;

    c = a->config;

    if (!json_is_object(c)) {
        return cb_arena_fail(err, errlen, "%s: must be a JSON object", file);
    }

    json_object_foreach(c, key, v) {

        if (strcmp(key, "session_id") == 0 || strcmp(key, "message_id") == 0
            || strcmp(key, "api_key") == 0)
        {
            if (!json_is_string(v) && !json_is_null(v)) {
                return cb_arena_fail(err, errlen, "%s: \"%s\" must be a "
                                     "string", file, key);
            }

        } else if (strcmp(key, "id_updater_last_mode") == 0) {
            if (cb_arena_parse_mode(v, &a->global.mode) != 0) {
                return cb_arena_fail(err, errlen, "%s: \"%s\" must be "
                                     "\"direct_chat\" or \"battle\"", file,
                                     key);
            }

        } else if (strcmp(key, "id_updater_battle_target") == 0) {
            if (cb_arena_parse_target(v, &a->global.target) != 0) {
                return cb_arena_fail(err, errlen, "%s: \"%s\" must be \"A\" "
                                     "or \"B\"", file, key);
            }

        } else if (strcmp(key, "use_default_ids_if_mapping_not_found") == 0
                   || strcmp(key, "tavern_mode_enabled") == 0
                   || strcmp(key, "bypass_enabled") == 0)
        {
            if (!json_is_boolean(v)) {
                return cb_arena_fail(err, errlen, "%s: \"%s\" must be true "
                                     "or false", file, key);
            }

        } else if (strcmp(key, "stream_response_timeout_seconds") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 1
                || json_integer_value(v) > 86400)
            {
                return cb_arena_fail(err, errlen, "%s: \"%s\" must be a "
                                     "number of seconds", file, key);
            }

            a->idle_timeout = (int) json_integer_value(v);

        } else {
            for (i = 0; cb_arena_unused[i]; i++) {
                if (strcmp(key, cb_arena_unused[i]) == 0) {
                    break;
                }
            }

            cb_arena_note(a, cb_arena_unused[i] ? "%s (not needed)"
                                                : "%s (unknown)", key);
        }
    }

    a->global.session_id = json_string_value(json_object_get(c,
                                                             "session_id"));
    a->global.message_id = json_string_value(json_object_get(c,
                                                             "message_id"));
    a->api_key = json_string_value(json_object_get(c, "api_key"));

    v = json_object_get(c, "use_default_ids_if_mapping_not_found");
    if (v) {
        a->use_default = json_is_true(v);
    }

    v = json_object_get(c, "tavern_mode_enabled");
    if (v) {
        a->tavern = json_is_true(v);
    }

    v = json_object_get(c, "bypass_enabled");
    if (v) {
        a->bypass = json_is_true(v);
    }

    return 0;
}


int
cb_arena_check_config(json_t *config, const char *file, char *err,
    size_t errlen)
{
    cb_arena_t  a;

    memset(&a, 0, sizeof(cb_arena_t));
    a.config = config;

    return cb_arena_config(&a, file, err, errlen);
}


int
cb_arena_check_models(json_t *models, const char *file, char *err,
    size_t errlen)
{
    json_t      *v;
    const char  *key, *s, *colon;

    if (!json_is_object(models)) {
        return cb_arena_fail(err, errlen, "%s: must be an object of model "
                             "name to id", file);
    }

    json_object_foreach(models, key, v) {
        s = json_string_value(v);

        if (s == NULL) {
            return cb_arena_fail(err, errlen, "%s: \"%s\" must be a string "
                                 "(\"<uuid>\" or \"<uuid>:image\")", file,
                                 key);
        }

        colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':')) {
            return cb_arena_fail(err, errlen, "%s: \"%s\": \"%s\" has more "
                                 "than one type", file, key, s);
        }
    }

    return 0;
}


int
cb_arena_check_map(json_t *map, const char *file, char *err, size_t errlen)
{
    size_t             i;
    json_t            *v, *item;
    const char        *key;
    cb_arena_entry_t   e;

    if (!json_is_object(map)) {
        return cb_arena_fail(err, errlen, "%s: must be an object keyed by "
                             "model name", file);
    }

    json_object_foreach(map, key, v) {

        if (json_is_object(v)) {
            if (cb_arena_entry(v, &e) != 0) {
                return cb_arena_fail(err, errlen, "%s: \"%s\": needs "
                                     "session_id and message_id strings; "
                                     "mode direct_chat or battle; "
                                     "battle_target A or B", file, key);
            }

            continue;
        }

        if (!json_is_array(v)) {
            return cb_arena_fail(err, errlen, "%s: \"%s\" must be a session "
                                 "object or a list of them", file, key);
        }

        if (json_array_size(v) > CB_ARENA_POOL_MAX) {
            return cb_arena_fail(err, errlen, "%s: \"%s\" has more than %d "
                                 "sessions", file, key, CB_ARENA_POOL_MAX);
        }

        json_array_foreach(v, i, item) {
            if (!json_is_object(item) || cb_arena_entry(item, &e) != 0) {
                return cb_arena_fail(err, errlen, "%s: \"%s\"[%zu]: needs "
                                     "session_id and message_id strings; "
                                     "mode direct_chat or battle; "
                                     "battle_target A or B", file, key, i);
            }
        }
    }

    return 0;
}


static int
cb_arena_entry(json_t *v, cb_arena_entry_t *e)
{
    json_t  *sid, *mid;

    memset(e, 0, sizeof(cb_arena_entry_t));

    sid = json_object_get(v, "session_id");
    mid = json_object_get(v, "message_id");

    if ((sid && !json_is_string(sid)) || (mid && !json_is_string(mid))) {
        return -1;
    }

    e->session_id = json_string_value(sid);
    e->message_id = json_string_value(mid);

    if (cb_arena_parse_mode(json_object_get(v, "mode"), &e->mode) != 0
        || cb_arena_parse_target(json_object_get(v, "battle_target"),
                                 &e->target) != 0)
    {
        return -1;
    }

    return 0;
}


static int
cb_arena_parse_mode(json_t *v, int *mode)
{
    const char  *s;

    if (v == NULL || json_is_null(v)) {
        return 0;
    }

    s = json_string_value(v);

    if (s && strcmp(s, "direct_chat") == 0) {
        *mode = CB_ARENA_DIRECT;
        return 0;
    }

    if (s && strcmp(s, "battle") == 0) {
        *mode = CB_ARENA_BATTLE;
        return 0;
    }

    return -1;
}


static int
cb_arena_parse_target(json_t *v, char *target)
{
    const char  *s;

    if (v == NULL || json_is_null(v)) {
        return 0;
    }

    s = json_string_value(v);

    if (s == NULL || strlen(s) != 1
        || (strcasecmp(s, "a") != 0 && strcasecmp(s, "b") != 0))
    {
        return -1;
    }

    *target = (char) (s[0] | 0x20);     /* lower case */

    return 0;
}


static void
cb_arena_note(cb_arena_t *a, const char *fmt, ...)
{
    size_t   n;
    va_list  args;

    n = strlen(a->notes);

    if (n && n + 2 < sizeof(a->notes)) {
        strcpy(a->notes + n, ", ");
        n += 2;
    }

    va_start(args, fmt);
    vsnprintf(a->notes + n, sizeof(a->notes) - n, fmt, args);
    va_end(args);
}


static int
cb_arena_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    vsnprintf(err, errlen, fmt, args);
    va_end(args);

    return -1;
}
