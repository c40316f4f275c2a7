
/*
 * Copyright (C) chatbridge authors
 *
 * GET /v1/models and GET /v1/models/<id>: the models named in the models
 * file, and those that connected browsers announce.  It answers as soon as
 * nginx is up, with or without a sidecar, and never 404s on an empty list.
 */


#include "ngx_http_chatbridge_module.h"
#include "cb_jsonc.h"


#define NGX_HTTP_CHATBRIDGE_MODELS_FILE_MAX  (4 * 1024 * 1024)


static json_t *ngx_http_chatbridge_models_list(ngx_http_request_t *r);
static ngx_int_t ngx_http_chatbridge_models_add(json_t *data, json_t *seen,
    const char *id, size_t len, const char *owner, time_t created);
static void ngx_http_chatbridge_json_cleanup(void *data);


ngx_int_t
ngx_http_chatbridge_models_handler(ngx_http_request_t *r, ngx_uint_t one)
{
    char        *s;
    u_char      *p, *q, *json;
    size_t       i, len;
    json_t      *list, *data, *model;
    ngx_str_t    id;

    list = ngx_http_chatbridge_models_list(r);
    if (list == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (one) {
        p = ngx_strlcasestrn(r->uri.data, r->uri.data + r->uri.len,
                             (u_char *) "/models/", 8 - 1);

        id.data = p + 8;
        id.len = r->uri.data + r->uri.len - id.data;

        while (id.len && id.data[id.len - 1] == '/') {
            id.len--;
        }

        data = json_object_get(list, "data");
        model = NULL;

        json_array_foreach(data, i, model) {
            s = (char *) json_string_value(json_object_get(model, "id"));

            if (s && ngx_strlen(s) == id.len
                && ngx_strncmp(s, id.data, id.len) == 0)
            {
                break;
            }
        }

        if (i == json_array_size(data)) {
            json_decref(list);

            q = ngx_pnalloc(r->pool, id.len + 64);
            if (q == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            len = ngx_snprintf(q, id.len + 64,
                               "The model '%V' does not exist.", &id) - q;

            return ngx_http_chatbridge_send_error(r, NGX_HTTP_NOT_FOUND,
                                                  "model_not_found", "model",
                                                  (const char *) q, len, 0);
        }

        s = json_dumps(model, JSON_COMPACT);

    } else {
        s = json_dumps(list, JSON_COMPACT);
    }

    json_decref(list);

    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(s);

    json = ngx_pnalloc(r->pool, len);
    if (json == NULL) {
        free(s);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(json, s, len);
    free(s);

    return ngx_http_chatbridge_send_json(r, NGX_HTTP_OK, json, len);
}


/*
 * chatbridge_models_file: LMArena Bridge's models.json ({"name": "uuid"} or
 * {"name": "uuid:image"}), or a list of names, or an OpenAI model list.
 */

char *
ngx_http_chatbridge_models_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_chatbridge_loc_conf_t  *lcf = conf;

    char                err[512];
    size_t              i;
    json_t             *root, *v, *list;
    ngx_str_t          *value, *name, file;
    const char         *key;
    ngx_pool_cleanup_t *cln;

    if (lcf->models != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    file = value[1];

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    root = cb_jsonc_load_file((const char *) file.data,
                              NGX_HTTP_CHATBRIDGE_MODELS_FILE_MAX, err,
                              sizeof(err));
    if (root == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        json_decref(root);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_chatbridge_json_cleanup;
    cln->data = root;

    lcf->models = ngx_array_create(cf->pool, 16, sizeof(ngx_str_t));
    if (lcf->models == NULL) {
        return NGX_CONF_ERROR;
    }

    list = json_is_object(root) && json_is_array(json_object_get(root, "data"))
           ? json_object_get(root, "data") : root;

    if (json_is_object(list)) {
        json_object_foreach(list, key, v) {
            if (!json_is_string(v) && !json_is_null(v)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V: the value of \"%s\" must be a model "
                                   "id string", &file, key);
                return NGX_CONF_ERROR;
            }

            name = ngx_array_push(lcf->models);
            if (name == NULL) {
                return NGX_CONF_ERROR;
            }

            name->data = (u_char *) key;
            name->len = ngx_strlen(key);
        }

        return NGX_CONF_OK;
    }

    json_array_foreach(list, i, v) {
        if (json_is_object(v)) {
            v = json_object_get(v, "id");
        }

        if (!json_is_string(v) || json_string_length(v) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V: entry %uz is not a model name",
                               &file, i);
            return NGX_CONF_ERROR;
        }

        name = ngx_array_push(lcf->models);
        if (name == NULL) {
            return NGX_CONF_ERROR;
        }

        name->data = (u_char *) json_string_value(v);
        name->len = json_string_length(v);
    }

    return NGX_CONF_OK;
}


static json_t *
ngx_http_chatbridge_models_list(ngx_http_request_t *r)
{
    size_t                           i, j;
    time_t                           now;
    json_t                          *list, *data, *seen, *state, *v, *m;
    ngx_str_t                        doc, *names;
    json_error_t                     jerr;
    ngx_http_chatbridge_loc_conf_t  *lcf;
    ngx_http_chatbridge_main_conf_t *mcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_chatbridge_module);

    now = ngx_time();

    data = json_array();
    seen = json_object();
    list = json_pack("{s:s, s:o}", "object", "list", "data", data);

    if (data == NULL || seen == NULL || list == NULL) {
        json_decref(seen);
        json_decref(list);
        return NULL;
    }

    if (lcf->models) {
        names = lcf->models->elts;

        for (i = 0; i < lcf->models->nelts; i++) {
            if (ngx_http_chatbridge_models_add(data, seen,
                                               (const char *) names[i].data,
                                               names[i].len, "chatbridge",
                                               now)
                != NGX_OK)
            {
                goto failed;
            }
        }
    }

    /* what the browsers announced, as the sidecar publishes it */

    if (ngx_http_chatbridge_link_state_doc(mcf->link, r->pool, &doc)
        == NGX_OK)
    {
        state = json_loadb((const char *) doc.data, doc.len, 0, &jerr);

        json_array_foreach(json_object_get(state, "models"), j, m) {
            v = json_object_get(m, "id");

            if (json_is_string(v)
                && ngx_http_chatbridge_models_add(data, seen,
                       json_string_value(v), json_string_length(v),
                       json_string_value(json_object_get(m, "owned_by"))
                       ? json_string_value(json_object_get(m, "owned_by"))
                       : "browser", now)
                   != NGX_OK)
            {
                json_decref(state);
                goto failed;
            }
        }

        json_decref(state);
    }

    json_decref(seen);

    return list;

failed:

    json_decref(seen);
    json_decref(list);

    return NULL;
}


static ngx_int_t
ngx_http_chatbridge_models_add(json_t *data, json_t *seen, const char *id,
    size_t len, const char *owner, time_t created)
{
    char    name[512];
    json_t  *m;

    if (len >= sizeof(name)) {
        return NGX_OK;
    }

    ngx_memcpy(name, id, len);
    name[len] = '\0';

    if (json_object_get(seen, name)) {
        return NGX_OK;
    }

    m = json_pack("{s:s#, s:s, s:I, s:s}", "id", id, len, "object", "model",
                  "created", (json_int_t) created, "owned_by", owner);
    if (m == NULL) {
        /* not UTF-8: skip it rather than fail the list */
        return NGX_OK;
    }

    if (json_array_append_new(data, m) != 0
        || json_object_set_new(seen, name, json_true()) != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_chatbridge_json_cleanup(void *data)
{
    json_decref(data);
}
