
/*
 * Copyright (C) chatbridge authors
 *
 * chatbridge_admin: operator commands, behind their own keys.
 *
 *   POST .../capture  {"model"?, "mode"?, "target"?, "timeout"?}
 *       arms session-id capture in a connected tab; the next click on the
 *       site's Retry is captured; the ids go to model_endpoint_map.json (for
 *       the model) or config.jsonc (the global ids), and apply to the next
 *       request at once, without a reload;
 *   POST .../models
 *       asks every arena tab to send its model list again.
 *
 * A command travels like a chat request: a slot, a task of kind CONTROL,
 * and an answer as a RESULT record (or an ERROR).
 */


#include "ngx_http_chatbridge_module.h"


#define NGX_HTTP_CHATBRIDGE_CAPTURE_MAX     600     /* seconds */


static ngx_int_t ngx_http_chatbridge_admin_handler(ngx_http_request_t *r);
static void ngx_http_chatbridge_admin_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_chatbridge_admin_capture(ngx_http_request_t *r,
    ngx_http_chatbridge_ctx_t *ctx, json_t *body, json_t *task,
    cb_err_t *err);


char *
ngx_http_chatbridge_admin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_chatbridge_admin_handler;

    ngx_http_chatbridge_needs_sidecar(cf);

    return NGX_CONF_OK;
}


char *
ngx_http_chatbridge_admin_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chatbridge_loc_conf_t  *lcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    return ngx_http_chatbridge_key_add(cf, &lcf->admin_keys, &value[1],
                                       &value[2], 16);
}


/*
 * The answer to a finished command: its RESULT document; for a capture,
 * with "applied" saying whether the ids are in force now.
 */

ngx_int_t
ngx_http_chatbridge_admin_result(ngx_http_chatbridge_ctx_t *ctx,
    ngx_str_t *out)
{
    char                        *s;
    json_t                      *res, *model;
    json_error_t                 jerr;
    ngx_http_request_t          *r;
    ngx_http_chatbridge_part_t  *part;

    r = ctx->request;
    part = &ctx->parts[0];

    res = json_loadb((const char *) part->result.data, part->result.len, 0,
                     &jerr);
    if (!json_is_object(res)) {
        json_decref(res);
        return NGX_ERROR;
    }

    if (json_object_get(res, "entry")) {
        model = json_object_get(res, "model");

        json_object_set_new(res, "applied",
            json_boolean(ngx_http_chatbridge_arena_update(r,
                             json_is_string(model) ? json_string_value(model)
                                                   : NULL,
                             json_object_get(res, "entry"))
                         == NGX_OK));
    }

    s = json_dumps(res, JSON_COMPACT);
    json_decref(res);

    if (s == NULL) {
        return NGX_ERROR;
    }

    out->len = ngx_strlen(s);
    out->data = ngx_pnalloc(r->pool, out->len);

    if (out->data) {
        ngx_memcpy(out->data, s, out->len);
    }

    free(s);

    return out->data ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_chatbridge_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_str_t                        name;
    const char                      *error;
    ngx_table_elt_t                 *h;
    ngx_http_chatbridge_ctx_t       *ctx;
    ngx_http_chatbridge_loc_conf_t  *lcf;

    static const char  nokey[] = "Set chatbridge_admin_key to use the admin "
                                 "endpoints.";

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

    ctx = ngx_http_chatbridge_get_ctx(r);
    if (ctx == NULL
        || ngx_http_chatbridge_set_request_id(r, ctx) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* no key, no admin: this endpoint moves sessions around */

    if (lcf->admin_keys == NULL || lcf->admin_keys->nelts == 0) {
        ngx_http_discard_request_body(r);
        return ngx_http_chatbridge_send_error(r, NGX_HTTP_FORBIDDEN,
                                              "admin_disabled", NULL, nokey,
                                              sizeof(nokey) - 1, 0);
    }

    rc = ngx_http_chatbridge_authorize(r, lcf->admin_keys, &name, &error);

    if (rc != NGX_OK) {
        return ngx_http_chatbridge_unauthorized(r, "Bearer", "invalid_api_key",
                                                error);
    }

    ctx->key_name = name;

    if (r->method != NGX_HTTP_POST) {
        ngx_http_discard_request_body(r);

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Allow");
        ngx_str_set(&h->value, "POST");

        return ngx_http_chatbridge_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                              "method_not_allowed", NULL,
                                              "Admin commands are POSTs.",
                                              sizeof("Admin commands are "
                                                     "POSTs.") - 1, 0);
    }

    if (r->headers_in.content_length_n > 65536) {
        ngx_http_discard_request_body(r);
        return ngx_http_chatbridge_send_error(r,
                   NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "request_too_large",
                   NULL, "An admin command is a small JSON object.",
                   sizeof("An admin command is a small JSON object.") - 1, 0);
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_chatbridge_admin_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_chatbridge_admin_body(ngx_http_request_t *r)
{
    char                            *text;
    u_char                          *end;
    json_t                          *body, *task;
    cb_err_t                         err;
    ngx_str_t                        raw, cmd;
    ngx_int_t                        rc;
    json_error_t                     jerr;
    ngx_http_chatbridge_ctx_t       *ctx;
    ngx_http_chatbridge_loc_conf_t  *lcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chatbridge_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

    if (ngx_http_chatbridge_read_body(r, &raw) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    body = raw.len ? json_loadb((const char *) raw.data, raw.len, 0, &jerr)
                   : json_object();

    if (!json_is_object(body)) {
        json_decref(body);
        cb_err_set(&err, 400, "invalid_json", NULL,
                   "The body must be a JSON object.");
        goto reject;
    }

    /* the command is the last part of the URI */

    end = r->uri.data + r->uri.len;
    while (end > r->uri.data && end[-1] == '/') {
        end--;
    }

    cmd.data = end;
    while (cmd.data > r->uri.data && cmd.data[-1] != '/') {
        cmd.data--;
    }

    cmd.len = end - cmd.data;

    task = json_pack("{s:s, s:s%}", "type", "control", "command",
                     cmd.data, cmd.len);
    if (task == NULL) {
        json_decref(body);
        cb_err_set(&err, 404, "unknown_url", NULL, "Unknown admin command.");
        goto reject;
    }

    if (cmd.len == 7 && ngx_strncmp(cmd.data, "capture", 7) == 0) {
        rc = ngx_http_chatbridge_admin_capture(r, ctx, body, task, &err);

    } else if (cmd.len == 6 && ngx_strncmp(cmd.data, "models", 6) == 0) {
        json_object_set_new(task, "command", json_string("send_models"));
        ctx->timeout = 10000;
        rc = NGX_OK;

    } else {
        cb_err_set(&err, 404, "unknown_url", NULL,
                   "Unknown admin command: use capture or models.");
        rc = NGX_DECLINED;
    }

    json_decref(body);

    if (rc != NGX_OK) {
        json_decref(task);
        goto reject;
    }

    ctx->op = NGX_HTTP_CHATBRIDGE_CONTROL;

    if (ngx_http_chatbridge_prepare(r, ctx, "chatbridge-admin",
                                    sizeof("chatbridge-admin") - 1, 1)
        != NGX_OK)
    {
        json_decref(task);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (lcf->arena_dir.len) {
        json_object_set_new(task, "dir",
                            json_stringn((const char *) lcf->arena_dir.data,
                                         lcf->arena_dir.len));
    }

    json_object_set_new(task, "timeout_ms", json_integer(ctx->timeout));

    text = json_dumps(task, JSON_COMPACT);
    json_decref(task);

    if (text == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->parts[0].task = (u_char *) text;
    ctx->parts[0].task_len = ngx_strlen(text);

    /* the sidecar ends the command; our timer only backs it up */
    ctx->timeout += 5000;

    if (ngx_http_chatbridge_start(r, ctx) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }

    return;

reject:

    ngx_http_finalize_request(r,
        ngx_http_chatbridge_send_error(r, err.status, err.code,
                                       err.param[0] ? err.param : NULL,
                                       err.message, ngx_strlen(err.message),
                                       0));
}


static ngx_int_t
ngx_http_chatbridge_admin_capture(ngx_http_request_t *r,
    ngx_http_chatbridge_ctx_t *ctx, json_t *body, json_t *task,
    cb_err_t *err)
{
    json_t       *model, *mode, *target, *timeout, *args;
    const char   *m, *t;

    model = json_object_get(body, "model");
    mode = json_object_get(body, "mode");
    target = json_object_get(body, "target");
    timeout = json_object_get(body, "timeout");

    if (model && !json_is_null(model)
        && (!json_is_string(model) || json_string_length(model) == 0
            || json_string_length(model) > CB_MODEL_LEN))
    {
        cb_err_set(err, 400, "invalid_value", "model",
                   "model must be a model name");
        return NGX_DECLINED;
    }

    m = json_string_value(mode);
    if (mode && (m == NULL || (ngx_strcmp(m, "direct_chat") != 0
                               && ngx_strcmp(m, "battle") != 0)))
    {
        cb_err_set(err, 400, "invalid_value", "mode",
                   "mode must be direct_chat or battle");
        return NGX_DECLINED;
    }

    t = json_string_value(target);
    if (target && (t == NULL || ngx_strlen(t) != 1
                   || (t[0] != 'A' && t[0] != 'B' && t[0] != 'a'
                       && t[0] != 'b')))
    {
        cb_err_set(err, 400, "invalid_value", "target",
                   "target must be A or B");
        return NGX_DECLINED;
    }

    if (timeout && (!json_is_integer(timeout)
                    || json_integer_value(timeout) < 1
                    || json_integer_value(timeout)
                       > NGX_HTTP_CHATBRIDGE_CAPTURE_MAX))
    {
        cb_err_set(err, 400, "invalid_value", "timeout",
                   "timeout must be 1 to %d seconds",
                   NGX_HTTP_CHATBRIDGE_CAPTURE_MAX);
        return NGX_DECLINED;
    }

    ctx->timeout = (timeout ? json_integer_value(timeout) : 120) * 1000;

    args = json_object();
    if (args == NULL) {
        return NGX_ERROR;
    }

    if (json_is_string(model)) {
        json_object_set(args, "model", model);
    }

    json_object_set_new(args, "mode", json_string(m ? m : "direct_chat"));
    json_object_set_new(args, "target",
                        json_string((t && (t[0] | 0x20) == 'b') ? "B" : "A"));

    /* the tab disarms by itself when nobody is waiting any more */
    json_object_set_new(args, "timeout",
                        json_integer((json_int_t) (ctx->timeout / 1000)));

    json_object_set_new(task, "args", args);

    return NGX_OK;
}
