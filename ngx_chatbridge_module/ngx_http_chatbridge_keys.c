
/*
 * Copyright (C) chatbridge authors
 *
 * Upstream key pools: nginx in front of a real LLM API, holding several of
 * the user's keys and spending them in turn.
 *
 *     http {
 *         chatbridge_key_pool  openai  /etc/chatbridge/openai.keys
 *                              cooldown=60s;
 *
 *         location /upstream/v1/ {
 *             chatbridge_upstream_key_pool  openai;
 *             proxy_set_header  Authorization
 *                               "Bearer $chatbridge_upstream_key";
 *             proxy_pass        https://api.openai.com/v1/;
 *         }
 *     }
 *
 * Each request of such a location gets the pool's next key, round robin
 * across all workers, skipping keys that rest.  A key rests when the
 * upstream answers it with 401, 403 or 429: for the pool's cooldown, or for
 * the upstream's Retry-After if that is longer.  When every key rests the
 * client gets 429 with the time the first one is back.
 *
 * The keys live in their own file (not in nginx.conf, so "nginx -T" does
 * not print them), read by the master process; they never appear in a log
 * line of this module: their labels do.
 */


#include "ngx_http_chatbridge_module.h"


#define NGX_HTTP_CHATBRIDGE_KEYS_FILE_MAX   (1024 * 1024)
#define NGX_HTTP_CHATBRIDGE_KEYS_MAX        4096
#define NGX_HTTP_CHATBRIDGE_KEY_LEN         4096
#define NGX_HTTP_CHATBRIDGE_LABEL_LEN       64

/* the longest rest a Retry-After can ask for */
#define NGX_HTTP_CHATBRIDGE_RETRY_MAX       86400


typedef struct {
    ngx_http_chatbridge_key_pool_t      *pool;
    ngx_http_chatbridge_upstream_key_t  *key;
    unsigned                             judged:1;
} ngx_http_chatbridge_keys_ctx_t;


static ngx_int_t ngx_http_chatbridge_keys_parse(ngx_conf_t *cf,
    ngx_http_chatbridge_key_pool_t *pool, ngx_str_t *text);
static ngx_http_chatbridge_keys_ctx_t *ngx_http_chatbridge_keys_ctx(
    ngx_http_request_t *r, ngx_uint_t create);
static void ngx_http_chatbridge_keys_cleanup(void *data);
static ngx_int_t ngx_http_chatbridge_keys_pick(ngx_http_request_t *r);
static ngx_int_t ngx_http_chatbridge_keys_log(ngx_http_request_t *r);
static void ngx_http_chatbridge_keys_judge(ngx_http_request_t *r,
    ngx_http_chatbridge_keys_ctx_t *kctx);
static ngx_msec_t ngx_http_chatbridge_keys_retry_after(ngx_http_request_t *r);
static ngx_uint_t ngx_http_chatbridge_label_char(u_char c);


/* chatbridge_key_pool NAME FILE [cooldown=TIME] */

char *
ngx_http_chatbridge_key_pool(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chatbridge_main_conf_t  *mcf = conf;

    ngx_str_t                       *value, text, s;
    ngx_uint_t                       i;
    ngx_http_chatbridge_key_pool_t  *pool;

    value = cf->args->elts;

    pool = mcf->key_pools.elts;

    for (i = 0; i < mcf->key_pools.nelts; i++) {
        if (pool[i].name.len == value[1].len
            && ngx_strncmp(pool[i].name.data, value[1].data, value[1].len)
               == 0)
        {
            return "names a pool that is already defined";
        }
    }

    for (i = 0; i < value[1].len; i++) {
        if (!ngx_http_chatbridge_label_char(value[1].data[i])) {
            return "takes a pool name of letters, digits, \".\", \"_\", "
                   "\":\", \"@\" and \"-\"";
        }
    }

    pool = ngx_array_push(&mcf->key_pools);
    if (pool == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(pool, sizeof(ngx_http_chatbridge_key_pool_t));

    pool->name = value[1];
    pool->file = value[2];
    pool->cooldown = 60000;

    for (i = 3; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "cooldown=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            pool->cooldown = ngx_parse_time(&s, 0);
            if (pool->cooldown == (ngx_msec_t) NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid cooldown \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_chatbridge_read_conf_file(cf, &pool->file,
                                           NGX_HTTP_CHATBRIDGE_KEYS_FILE_MAX,
                                           &text)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&pool->keys, cf->pool, 4,
                       sizeof(ngx_http_chatbridge_upstream_key_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_chatbridge_keys_parse(cf, pool, &text) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_chatbridge_zone_add(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * One key per line: "KEY" or "LABEL KEY"; blank lines and lines starting
 * with "#" are skipped.  A key is printable ASCII without spaces, so it can
 * go into a header as it is.  Unlabelled keys are called NAME#N, N counting
 * the pool's keys from 1.
 */

static ngx_int_t
ngx_http_chatbridge_keys_parse(ngx_conf_t *cf,
    ngx_http_chatbridge_key_pool_t *pool, ngx_str_t *text)
{
    u_char                              *p, *end, *eol, *a, *b, *c;
    ngx_str_t                            word[3];
    ngx_uint_t                           n, i, j, line;
    ngx_http_chatbridge_upstream_key_t  *k, *keys;

    p = text->data;
    end = text->data + text->len;

    for (line = 1; p < end; line++, p = eol + 1) {

        eol = ngx_strlchr(p, end, '\n');
        if (eol == NULL) {
            eol = end;
        }

        /* up to three words; a third one is an error */

        n = 0;
        a = p;

        while (n < 3) {
            while (a < eol && (*a == ' ' || *a == '\t' || *a == '\r')) {
                a++;
            }

            if (a == eol) {
                break;
            }

            b = a;

            while (b < eol && *b != ' ' && *b != '\t' && *b != '\r') {
                b++;
            }

            word[n].data = a;
            word[n].len = b - a;
            n++;
            a = b;
        }

        if (n == 0 || word[0].data[0] == '#') {
            continue;
        }

        if (n == 3) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V:%ui: a line is \"KEY\" or \"LABEL KEY\"",
                               &pool->file, line);
            return NGX_ERROR;
        }

        if (pool->keys.nelts == NGX_HTTP_CHATBRIDGE_KEYS_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V: more than %d keys", &pool->file,
                               NGX_HTTP_CHATBRIDGE_KEYS_MAX);
            return NGX_ERROR;
        }

        k = ngx_array_push(&pool->keys);
        if (k == NULL) {
            return NGX_ERROR;
        }

        k->key = word[n - 1];

        if (k->key.len > NGX_HTTP_CHATBRIDGE_KEY_LEN) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V:%ui: a key is longer than %d characters",
                               &pool->file, line, NGX_HTTP_CHATBRIDGE_KEY_LEN);
            return NGX_ERROR;
        }

        for (c = k->key.data; c < k->key.data + k->key.len; c++) {
            if (*c < 0x21 || *c > 0x7e) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V:%ui: a key holds a character that "
                                   "cannot go into a header", &pool->file,
                                   line);
                return NGX_ERROR;
            }
        }

        if (n == 2) {
            k->name = word[0];

            if (k->name.len > NGX_HTTP_CHATBRIDGE_LABEL_LEN) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V:%ui: a label is longer than %d "
                                   "characters", &pool->file, line,
                                   NGX_HTTP_CHATBRIDGE_LABEL_LEN);
                return NGX_ERROR;
            }

            for (c = k->name.data; c < k->name.data + k->name.len; c++) {
                if (!ngx_http_chatbridge_label_char(*c)) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "%V:%ui: a label is made of letters, "
                                       "digits, \".\", \"_\", \":\", \"@\" "
                                       "and \"-\"", &pool->file, line);
                    return NGX_ERROR;
                }
            }

        } else {
            k->name.data = ngx_pnalloc(cf->pool, pool->name.len + 1
                                                 + NGX_INT_T_LEN);
            if (k->name.data == NULL) {
                return NGX_ERROR;
            }

            k->name.len = ngx_sprintf(k->name.data, "%V#%ui", &pool->name,
                                      pool->keys.nelts)
                          - k->name.data;
        }

        k->cool_key = ngx_http_chatbridge_zone_key("key", pool->name.data,
                                                   pool->name.len,
                                                   k->key.data, k->key.len);
    }

    if (pool->keys.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V holds no key", &pool->file);
        return NGX_ERROR;
    }

    /* the same key twice would get twice the share; the same label, doubt */

    keys = pool->keys.elts;

    for (i = 0; i < pool->keys.nelts; i++) {
        for (j = i + 1; j < pool->keys.nelts; j++) {

            if (keys[i].key.len == keys[j].key.len
                && ngx_strncmp(keys[i].key.data, keys[j].key.data,
                               keys[i].key.len) == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V: the keys \"%V\" and \"%V\" are the "
                                   "same", &pool->file, &keys[i].name,
                                   &keys[j].name);
                return NGX_ERROR;
            }

            if (keys[i].name.len == keys[j].name.len
                && ngx_strncmp(keys[i].name.data, keys[j].name.data,
                               keys[i].name.len) == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V: the label \"%V\" is used twice",
                                   &pool->file, &keys[i].name);
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/* chatbridge_upstream_key_pool NAME: resolved when the location merges */

char *
ngx_http_chatbridge_upstream_key_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_chatbridge_loc_conf_t  *lcf = conf;

    ngx_str_t  *value;

    if (lcf->upstream_pool_name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    lcf->upstream_pool_name = value[1];

    return NGX_CONF_OK;
}


char *
ngx_http_chatbridge_keys_merge(ngx_conf_t *cf,
    ngx_http_chatbridge_loc_conf_t *prev, ngx_http_chatbridge_loc_conf_t *conf)
{
    ngx_uint_t                        i;
    ngx_http_chatbridge_key_pool_t   *pool;
    ngx_http_chatbridge_main_conf_t  *mcf;

    ngx_conf_merge_str_value(conf->upstream_pool_name,
                             prev->upstream_pool_name, "");

    if (conf->upstream_pool_name.len == 0) {
        conf->upstream_pool = NULL;
        return NGX_CONF_OK;
    }

    if (conf->enable == 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"chatbridge_upstream_key_pool\" is for a "
                           "location that proxies to an LLM API, not for "
                           "a \"chatbridge\" location");
        return NGX_CONF_ERROR;
    }

    /* the whole http block is read: every pool is known */

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_chatbridge_module);
    pool = mcf->key_pools.elts;

    for (i = 0; i < mcf->key_pools.nelts; i++) {
        if (pool[i].name.len == conf->upstream_pool_name.len
            && ngx_strncmp(pool[i].name.data, conf->upstream_pool_name.data,
                           pool[i].name.len) == 0)
        {
            conf->upstream_pool = &pool[i];
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "no \"chatbridge_key_pool %V\" in the http block",
                       &conf->upstream_pool_name);

    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_http_chatbridge_keys_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /* after access: a request that is refused spends no key */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_chatbridge_keys_pick;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_chatbridge_keys_log;

    return NGX_OK;
}


/*
 * The key a request uses is kept in a pool cleanup, not in the module's
 * context, so that it survives an internal redirect: after
 * "error_page 429 = @next_key" the retry knows which key was refused (the
 * trick of nginx's realip module).
 */

static ngx_http_chatbridge_keys_ctx_t *
ngx_http_chatbridge_keys_ctx(ngx_http_request_t *r, ngx_uint_t create)
{
    ngx_pool_cleanup_t              *cln;
    ngx_http_chatbridge_keys_ctx_t  *kctx;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_chatbridge_keys_cleanup) {
            return cln->data;
        }
    }

    if (!create) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_chatbridge_keys_ctx_t));
    if (cln == NULL) {
        return NULL;
    }

    kctx = cln->data;
    ngx_memzero(kctx, sizeof(ngx_http_chatbridge_keys_ctx_t));
    cln->handler = ngx_http_chatbridge_keys_cleanup;

    return kctx;
}


static void
ngx_http_chatbridge_keys_cleanup(void *data)
{
    /* nothing to free: the cleanup only marks the context */
}


/* the upstream key of this request, for the variables; NULL if none */

ngx_http_chatbridge_upstream_key_t *
ngx_http_chatbridge_keys_current(ngx_http_request_t *r)
{
    ngx_http_chatbridge_keys_ctx_t  *kctx;

    kctx = ngx_http_chatbridge_keys_ctx(r->main, 0);

    return kctx ? kctx->key : NULL;
}


static ngx_int_t
ngx_http_chatbridge_keys_pick(ngx_http_request_t *r)
{
    ngx_int_t                            rc;
    ngx_msec_t                           left, wait = 0;
    ngx_uint_t                           i, n, start;
    const char                          *error;
    ngx_http_chatbridge_ctx_t           *ctx;
    ngx_http_chatbridge_zone_t          *z;
    ngx_http_chatbridge_keys_ctx_t      *kctx;
    ngx_http_chatbridge_key_pool_t      *pool;
    ngx_http_chatbridge_loc_conf_t      *lcf;
    ngx_http_chatbridge_upstream_key_t  *keys;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);
    pool = lcf->upstream_pool;

    if (pool == NULL || r != r->main) {
        return NGX_DECLINED;
    }

    /* a retry: the key before was refused, most likely */

    kctx = ngx_http_chatbridge_keys_ctx(r, 0);

    if (kctx && kctx->key && !kctx->judged) {
        ngx_http_chatbridge_keys_judge(r, kctx);
    }

    ctx = ngx_http_chatbridge_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* for the logs only: this location answers without it too */
    (void) ngx_http_chatbridge_set_request_id(r, ctx);

    /* the clients' keys of the location guard the upstream keys too */

    if (ngx_http_chatbridge_check_key(r, ctx, lcf->keys, &error) != NGX_OK) {
        ctx->outcome = NGX_HTTP_CHATBRIDGE_OUTCOME_REJECTED;
        rc = ngx_http_chatbridge_unauthorized(r, "Bearer", "invalid_api_key",
                                              error);
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    kctx = ngx_http_chatbridge_keys_ctx(r, 1);
    z = ngx_http_chatbridge_zone(r);

    if (kctx == NULL || z == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    keys = pool->keys.elts;
    n = pool->keys.nelts;

    start = ngx_http_chatbridge_zone_next(z, "key", pool->name.data,
                                          pool->name.len);
    wait = pool->cooldown;

    for (i = 0; i < n; i++) {
        left = ngx_http_chatbridge_zone_cooling(z,
                                                keys[(start + i) % n].cool_key);
        if (left == 0) {
            kctx->pool = pool;
            kctx->key = &keys[(start + i) % n];
            kctx->judged = 0;

            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "chatbridge: upstream key \"%V\" of pool \"%V\"",
                           &kctx->key->name, &pool->name);

            return NGX_DECLINED;
        }

        wait = ngx_min(wait, left);
    }

    /* every key rests */

    ctx->outcome = NGX_HTTP_CHATBRIDGE_OUTCOME_REJECTED;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "chatbridge: every key of the pool \"%V\" rests; the first "
                  "is back in %M ms", &pool->name, wait);

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_chatbridge_send_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
             "upstream_keys_resting", NULL,
             "Every upstream API key of this endpoint was refused (401, 403 "
             "or 429) lately and rests; retry after the time in Retry-After.",
             sizeof("Every upstream API key of this endpoint was refused "
                    "(401, 403 or 429) lately and rests; retry after the time "
                    "in Retry-After.") - 1,
             (uint32_t) ((wait + 999) / 1000));

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_chatbridge_keys_log(ngx_http_request_t *r)
{
    ngx_http_chatbridge_keys_ctx_t  *kctx;

    kctx = ngx_http_chatbridge_keys_ctx(r, 0);

    if (kctx && kctx->key && !kctx->judged) {
        ngx_http_chatbridge_keys_judge(r, kctx);
    }

    return NGX_OK;
}


/* what the upstream said to the key: 401, 403 and 429 make it rest */

static void
ngx_http_chatbridge_keys_judge(ngx_http_request_t *r,
    ngx_http_chatbridge_keys_ctx_t *kctx)
{
    ngx_msec_t                   ms;
    ngx_uint_t                   status;
    ngx_http_chatbridge_zone_t  *z;

    kctx->judged = 1;

    if (r->upstream == NULL) {
        return;
    }

    status = r->upstream->headers_in.status_n;

    if (status != NGX_HTTP_UNAUTHORIZED && status != NGX_HTTP_FORBIDDEN
        && status != NGX_HTTP_TOO_MANY_REQUESTS)
    {
        return;
    }

    z = ngx_http_chatbridge_zone(r);
    if (z == NULL) {
        return;
    }

    ms = ngx_max(kctx->pool->cooldown,
                 ngx_http_chatbridge_keys_retry_after(r));

    ngx_http_chatbridge_zone_cool(z, kctx->key->cool_key, ms);

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "chatbridge: the upstream answered %ui to the key \"%V\" "
                  "of the pool \"%V\"; it rests for %M ms", status,
                  &kctx->key->name, &kctx->pool->name, ms);
}


/* the upstream's Retry-After, in seconds or as a date, in ms; 0 if none */

static ngx_msec_t
ngx_http_chatbridge_keys_retry_after(ngx_http_request_t *r)
{
    time_t            t;
    ngx_int_t         n;
    ngx_table_elt_t  *h;

    h = ngx_http_chatbridge_find_header(&r->upstream->headers_in.headers,
                                        "Retry-After");
    if (h == NULL) {
        return 0;
    }

    n = ngx_atoi(h->value.data, h->value.len);

    if (n == NGX_ERROR) {
        t = ngx_parse_http_time(h->value.data, h->value.len);
        if (t == NGX_ERROR) {
            return 0;
        }

        n = (t > ngx_time()) ? t - ngx_time() : 0;
    }

    n = ngx_min(n, NGX_HTTP_CHATBRIDGE_RETRY_MAX);

    return (ngx_msec_t) n * 1000;
}


static ngx_uint_t
ngx_http_chatbridge_label_char(u_char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':'
           || c == '@' || c == '-';
}
