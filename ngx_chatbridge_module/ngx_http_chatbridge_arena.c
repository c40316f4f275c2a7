
/*
 * Copyright (C) chatbridge authors
 *
 * chatbridge_arena DIR: LMArena Bridge's config.jsonc, models.json and
 * model_endpoint_map.json, copied in as they are.  Each request gets its
 * session here: from the model's pool, round robin across all workers,
 * skipping sessions that recently answered 401 or 429, or the global ids.
 *
 * The round-robin counters, the cooldowns and the captures are in the
 * "chatbridge" shared zone (ngx_http_chatbridge_zone.c).  A capture is a
 * record {"gen", "model" and "pool", or "global"}; "gen" is the generation
 * of the newest configuration when it was made.  A worker uses the records
 * made at or after its own configuration was read: older ones are in the
 * files it read.  So a reload neither loses a capture for the workers that
 * are finishing, nor lets an old capture override an edit to the files.
 */


#include "ngx_http_chatbridge_module.h"


typedef struct {
    ngx_http_chatbridge_zone_t      *zone;
    cb_arena_entry_t                *pool;
    const char                      *model;
    ngx_msec_t                       wait;  /* the soonest back, if all rest */
} ngx_http_chatbridge_cool_ctx_t;


static void ngx_http_chatbridge_arena_cleanup(void *data);
static uint32_t ngx_http_chatbridge_arena_key(const char *model,
    const char *session);
static int ngx_http_chatbridge_arena_cooling(void *data, size_t i);


char *
ngx_http_chatbridge_arena(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chatbridge_loc_conf_t  *lcf = conf;

    char                 err[1024];
    ngx_str_t           *value, dir;
    cb_arena_t          *a;
    ngx_pool_cleanup_t  *cln;

    if (lcf->arena != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    dir = value[1];

    if (ngx_conf_full_name(cf->cycle, &dir, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    a = ngx_pcalloc(cf->pool, sizeof(cb_arena_t));
    cln = ngx_pool_cleanup_add(cf->pool, 0);

    if (a == NULL || cln == NULL) {
        return NGX_CONF_ERROR;
    }

    if (cb_arena_load(a, (const char *) dir.data, err, sizeof(err)) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", err);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_chatbridge_arena_cleanup;
    cln->data = a;

    if (a->notes[0]) {
        ngx_conf_log_error(NGX_LOG_INFO, cf, 0,
                           "chatbridge: %V/config.jsonc keys that change "
                           "nothing here: %s", &dir, a->notes);
    }

    lcf->arena = a;
    lcf->arena_dir = dir;

    /* one zone for all locations: counters, cooldowns, live ids */

    if (ngx_http_chatbridge_zone_add(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * In the block that names the directory, what the files say fills in what
 * that block's directives leave unset: tavern and bypass modes, the idle
 * timeout (stream_response_timeout_seconds), and the api_key, which becomes
 * a key named "config.jsonc".  Blocks inside inherit the result.
 */

char *
ngx_http_chatbridge_arena_merge(ngx_conf_t *cf,
    ngx_http_chatbridge_loc_conf_t *prev, ngx_http_chatbridge_loc_conf_t *conf)
{
    ngx_str_t    name, key;
    cb_arena_t  *a;

    a = (conf->arena != NGX_CONF_UNSET_PTR) ? conf->arena : NULL;

    ngx_conf_merge_ptr_value(conf->arena, prev->arena, NULL);
    ngx_conf_merge_str_value(conf->arena_dir, prev->arena_dir, "");
    ngx_conf_merge_msec_value(conf->arena_cooldown, prev->arena_cooldown,
                              60000);

    if (a == NULL) {
        return NGX_CONF_OK;     /* not named here: inherited as merged */
    }

    if (conf->tavern == NGX_CONF_UNSET && a->tavern >= 0) {
        conf->tavern = a->tavern;
    }

    if (conf->bypass == NGX_CONF_UNSET && a->bypass >= 0) {
        conf->bypass = a->bypass;
    }

    if (conf->idle_timeout == NGX_CONF_UNSET_MSEC && a->idle_timeout > 0) {
        conf->idle_timeout = (ngx_msec_t) a->idle_timeout * 1000;
    }

    if (a->api_key && a->api_key[0] && conf->keys == NGX_CONF_UNSET_PTR) {
        ngx_str_set(&name, "config.jsonc");
        key.data = (u_char *) a->api_key;
        key.len = ngx_strlen(a->api_key);

        if (key.len < 8) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "chatbridge: the api_key in %V/config.jsonc "
                               "is shorter than 8 characters",
                               &conf->arena_dir);
        }

        if (ngx_http_chatbridge_key_add(cf, &conf->keys, &name, &key, 1)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/*
 * The session for one part of a request: picks it, checks its ids, sets the
 * participantPosition of every message, and returns the task's "arena"
 * object.  NGX_DECLINED with err filled: the client gets err's status.
 */

ngx_int_t
ngx_http_chatbridge_arena_session(ngx_http_request_t *r,
    ngx_http_chatbridge_part_t *part, json_t *messages, ngx_uint_t bypass,
    int *image, json_t **arena, cb_err_t *err)
{
    int                               i, mapped;
    char                              model[CB_MODEL_LEN + 1];
    size_t                            n, uuid_len;
    json_t                           *live;
    uint64_t                          counter;
    const char                       *uuid;
    cb_arena_entry_t                  pool[CB_ARENA_POOL_MAX];
    cb_arena_session_t                s;
    ngx_http_chatbridge_ctx_t        *ctx;
    ngx_http_chatbridge_zone_t       *z;
    ngx_http_chatbridge_cool_ctx_t    cc;
    ngx_http_chatbridge_loc_conf_t   *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);
    ctx = part->ctx;

    n = ngx_min(ctx->model.len, CB_MODEL_LEN);
    ngx_memcpy(model, ctx->model.data, n);
    model[n] = '\0';

    live = ngx_http_chatbridge_arena_live(r);

    cb_arena_model(lcf->arena, model, &uuid, &uuid_len, image);

    /* bypass mode's trailing user turn: image models do without it */

    if (bypass && !*image) {
        cb_chat_bypass(messages);
    }

    n = cb_arena_pool(lcf->arena, live, model, pool, CB_ARENA_POOL_MAX,
                      &mapped);

    if (n == 0) {
        cb_err_set(err, 400, "model_not_mapped", "model",
                   "The model \"%.100s\" has no session in "
                   "model_endpoint_map.json, and "
                   "use_default_ids_if_mapping_not_found is false.", model);
        return NGX_DECLINED;
    }

    z = ngx_http_chatbridge_zone(r);

    counter = z ? ngx_http_chatbridge_zone_next(z, "arena", (u_char *) model,
                                                ngx_strlen(model))
                : 0;

    cc.zone = z;
    cc.pool = pool;
    cc.model = model;
    cc.wait = lcf->arena_cooldown;

    i = cb_arena_pick(n, counter,
                      z ? ngx_http_chatbridge_arena_cooling : NULL, &cc);

    if (i < 0) {

        /* every session failed lately: say when the first one is back */

        cb_err_set(err, 503, "sessions_cooling_down", "model",
                   "Every LMArena session for \"%.100s\" failed with 401 or "
                   "429 in the last %lu s; retry in %lu s, or capture "
                   "another session.", model,
                   (unsigned long) (lcf->arena_cooldown / 1000),
                   (unsigned long) ((cc.wait + 999) / 1000));
        err->retry_after = (unsigned) ((cc.wait + 999) / 1000);
        return NGX_DECLINED;
    }

    cb_arena_resolve(lcf->arena, live, &pool[i], &s);

    if (cb_arena_check(&s, model, err) != 0) {
        return NGX_DECLINED;
    }

    cb_arena_positions(messages, &s);

    part->cool_key = ngx_http_chatbridge_arena_key(model, s.session_id);

    *arena = cb_arena_task(&s, uuid, uuid_len, *image);

    return *arena ? NGX_OK : NGX_ERROR;
}


/* the site said 401 or 429 for this part's session: skip it for a while */

void
ngx_http_chatbridge_arena_failed(ngx_http_request_t *r,
    ngx_http_chatbridge_part_t *part)
{
    ngx_msec_t                        ms;
    ngx_http_chatbridge_zone_t       *z;
    ngx_http_chatbridge_loc_conf_t   *lcf;

    if (part->cool_key == 0
        || (part->status != NGX_HTTP_UNAUTHORIZED
            && part->status != NGX_HTTP_TOO_MANY_REQUESTS))
    {
        return;
    }

    z = ngx_http_chatbridge_zone(r);
    if (z == NULL) {
        return;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

    ms = ngx_max(lcf->arena_cooldown, (ngx_msec_t) part->retry_after * 1000);

    ngx_http_chatbridge_zone_cool(z, part->cool_key, ms);

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "chatbridge: an LMArena session of \"%V\" answered %ui; "
                  "it rests for %M ms", &part->ctx->model, part->status, ms);
}


/*
 * What captures changed for this worker: {"global": {...}, "models":
 * {"<model>": [pool]}}, from the records of its generation or later.
 */

json_t *
ngx_http_chatbridge_arena_live(ngx_http_request_t *r)
{
    size_t                            i;
    json_t                           *live, *records, *rec, *models;
    json_error_t                      jerr;
    ngx_slab_pool_t                  *shpool;
    ngx_atomic_uint_t                 version;
    ngx_http_chatbridge_sh_t         *sh;
    ngx_http_chatbridge_zone_t       *z;
    ngx_http_chatbridge_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_chatbridge_module);
    z = ngx_http_chatbridge_zone(r);

    if (z == NULL) {
        return NULL;
    }

    sh = z->sh;
    shpool = z->shpool;
    version = sh->version;

    if (version == mcf->arena_version) {
        return mcf->arena_live;
    }

    ngx_shmtx_lock(&shpool->mutex);

    version = sh->version;
    records = sh->records ? json_loadb((const char *) sh->records,
                                       sh->records_len, 0, &jerr)
                          : NULL;

    ngx_shmtx_unlock(&shpool->mutex);

    live = json_object();
    models = json_object();

    if (live && models) {
        json_object_set(live, "models", models);

        json_array_foreach(records, i, rec) {
            if ((ngx_atomic_uint_t) json_integer_value(
                    json_object_get(rec, "gen")) < z->generation)
            {
                continue;       /* already in the files this worker read */
            }

            if (json_object_get(rec, "global")) {
                json_object_set(live, "global",
                                json_object_get(rec, "global"));

            } else {
                json_object_set(models, json_string_value(
                                    json_object_get(rec, "model")),
                                json_object_get(rec, "pool"));
            }
        }
    }

    json_decref(models);
    json_decref(records);

    json_decref(mcf->arena_live);
    mcf->arena_live = live;
    mcf->arena_version = version;

    return live;
}


/*
 * A capture: entry {session_id, message_id, mode, battle_target} for a
 * model or, model NULL, as the global ids.  A model mapped to one session
 * gets it replaced; a pool (a list) gets it added first, in place of the
 * same session.  Every worker sees it from its next request.
 */

ngx_int_t
ngx_http_chatbridge_arena_update(ngx_http_request_t *r, const char *model,
    json_t *entry)
{
    char                             *text;
    size_t                            i, len;
    json_t                           *live, *records, *rec, *pool, *item;
    json_t                           *old;
    u_char                           *p;
    json_error_t                      jerr;
    const char                       *sid, *other, *key;
    ngx_slab_pool_t                  *shpool;
    ngx_http_chatbridge_sh_t         *sh;
    ngx_http_chatbridge_zone_t       *z;
    ngx_http_chatbridge_loc_conf_t   *lcf;

    z = ngx_http_chatbridge_zone(r);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

    if (z == NULL || lcf->arena == NULL) {
        return NGX_DECLINED;
    }

    sh = z->sh;
    shpool = z->shpool;

    if (model == NULL) {
        rec = json_pack("{s:O}", "global", entry);

    } else {

        /* the pool so far: as captured, else as the file has it */

        live = ngx_http_chatbridge_arena_live(r);
        old = json_object_get(json_object_get(live, "models"), model);

        if (old == NULL) {
            old = json_object_get(lcf->arena->map, model);
        }

        pool = json_array();
        json_array_append(pool, entry);
        sid = json_string_value(json_object_get(entry, "session_id"));

        json_incref(old);

        json_array_foreach(old, i, item) {
            other = json_string_value(json_object_get(item, "session_id"));

            if (!(sid && other && ngx_strcmp(sid, other) == 0)
                && json_array_size(pool) < CB_ARENA_POOL_MAX)
            {
                json_array_append(pool, item);
            }
        }

        json_decref(old);

        rec = json_pack("{s:s, s:o}", "model", model, "pool", pool);
    }

    if (rec == NULL) {
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&shpool->mutex);

    records = sh->records ? json_loadb((const char *) sh->records,
                                       sh->records_len, 0, &jerr)
                          : json_array();
    if (records == NULL) {
        records = json_array();
    }

    /* one record per model and one global: the new one replaces it */

    key = model ? "model" : "global";

    json_array_foreach(records, i, item) {
        if (model ? (json_string_value(json_object_get(item, "model"))
                     && ngx_strcmp(json_string_value(json_object_get(item,
                                                              "model")),
                                   model) == 0)
                  : json_object_get(item, key) != NULL)
        {
            json_array_remove(records, i);
            break;
        }
    }

    json_object_set_new(rec, "gen", json_integer(sh->generation));
    json_array_append_new(records, rec);

    text = json_dumps(records, JSON_COMPACT);
    json_decref(records);

    p = NULL;

    if (text) {
        len = ngx_strlen(text);
        p = ngx_slab_alloc_locked(shpool, len);

        if (p) {
            ngx_memcpy(p, text, len);

            if (sh->records) {
                ngx_slab_free_locked(shpool, sh->records);
            }

            sh->records = p;
            sh->records_len = len;
            sh->version++;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    free(text);

    return p ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_chatbridge_arena_cleanup(void *data)
{
    cb_arena_free(data);
}


/* a session is named by its model and session id */

static uint32_t
ngx_http_chatbridge_arena_key(const char *model, const char *session)
{
    return ngx_http_chatbridge_zone_key("arena", (u_char *) model,
                                        ngx_strlen(model), (u_char *) session,
                                        ngx_strlen(session));
}


static int
ngx_http_chatbridge_arena_cooling(void *data, size_t i)
{
    ngx_http_chatbridge_cool_ctx_t  *cc = data;

    ngx_msec_t   left;
    const char  *sid;

    sid = cc->pool[i].session_id;
    if (sid == NULL) {
        return 0;
    }

    left = ngx_http_chatbridge_zone_cooling(cc->zone,
               ngx_http_chatbridge_arena_key(cc->model, sid));

    if (left && left < cc->wait) {
        cc->wait = left;
    }

    return left != 0;
}
