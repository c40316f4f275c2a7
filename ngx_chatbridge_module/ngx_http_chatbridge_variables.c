
/*
 * Copyright (C) chatbridge authors
 *
 * Variables for log_format, limit_req and friends.  All of them are empty
 * outside chatbridge locations.
 */


#include "ngx_http_chatbridge_module.h"


#define NGX_HTTP_CHATBRIDGE_VAR_KEY_NAME        0
#define NGX_HTTP_CHATBRIDGE_VAR_MODEL           1
#define NGX_HTTP_CHATBRIDGE_VAR_REQUEST_ID      2
#define NGX_HTTP_CHATBRIDGE_VAR_BROWSER         3
#define NGX_HTTP_CHATBRIDGE_VAR_TTFT            4
#define NGX_HTTP_CHATBRIDGE_VAR_PROMPT          5
#define NGX_HTTP_CHATBRIDGE_VAR_COMPLETION      6
#define NGX_HTTP_CHATBRIDGE_VAR_FINISH          7
#define NGX_HTTP_CHATBRIDGE_VAR_OUTCOME         8
#define NGX_HTTP_CHATBRIDGE_VAR_USAGE_SOURCE    9
#define NGX_HTTP_CHATBRIDGE_VAR_UPSTREAM_KEY    10
#define NGX_HTTP_CHATBRIDGE_VAR_UPSTREAM_NAME   11


static ngx_int_t ngx_http_chatbridge_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_variable_t  ngx_http_chatbridge_vars[] = {

    { ngx_string("chatbridge_key_name"), NULL, ngx_http_chatbridge_variable,
      NGX_HTTP_CHATBRIDGE_VAR_KEY_NAME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chatbridge_model"), NULL, ngx_http_chatbridge_variable,
      NGX_HTTP_CHATBRIDGE_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chatbridge_request_id"), NULL, ngx_http_chatbridge_variable,
      NGX_HTTP_CHATBRIDGE_VAR_REQUEST_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chatbridge_browser"), NULL, ngx_http_chatbridge_variable,
      NGX_HTTP_CHATBRIDGE_VAR_BROWSER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chatbridge_ttft"), NULL, ngx_http_chatbridge_variable,
      NGX_HTTP_CHATBRIDGE_VAR_TTFT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chatbridge_prompt_tokens"), NULL,
      ngx_http_chatbridge_variable, NGX_HTTP_CHATBRIDGE_VAR_PROMPT,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chatbridge_completion_tokens"), NULL,
      ngx_http_chatbridge_variable, NGX_HTTP_CHATBRIDGE_VAR_COMPLETION,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chatbridge_finish_reason"), NULL,
      ngx_http_chatbridge_variable, NGX_HTTP_CHATBRIDGE_VAR_FINISH,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chatbridge_outcome"), NULL, ngx_http_chatbridge_variable,
      NGX_HTTP_CHATBRIDGE_VAR_OUTCOME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chatbridge_usage_source"), NULL,
      ngx_http_chatbridge_variable, NGX_HTTP_CHATBRIDGE_VAR_USAGE_SOURCE,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chatbridge_upstream_key"), NULL,
      ngx_http_chatbridge_variable, NGX_HTTP_CHATBRIDGE_VAR_UPSTREAM_KEY,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chatbridge_upstream_key_name"), NULL,
      ngx_http_chatbridge_variable, NGX_HTTP_CHATBRIDGE_VAR_UPSTREAM_NAME,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


#define NGX_HTTP_CHATBRIDGE_OUTCOME_STR(name, str)  ngx_string(str),
static ngx_str_t  ngx_http_chatbridge_outcomes[] = {
    NGX_HTTP_CHATBRIDGE_OUTCOMES(NGX_HTTP_CHATBRIDGE_OUTCOME_STR)
};
#undef NGX_HTTP_CHATBRIDGE_OUTCOME_STR


ngx_int_t
ngx_http_chatbridge_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_chatbridge_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_chatbridge_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                     *p;
    ngx_str_t                            s;
    const char                          *error;
    ngx_http_chatbridge_ctx_t           *ctx;
    ngx_http_chatbridge_loc_conf_t      *lcf;
    ngx_http_chatbridge_upstream_key_t  *key;

    if (data == NGX_HTTP_CHATBRIDGE_VAR_UPSTREAM_KEY
        || data == NGX_HTTP_CHATBRIDGE_VAR_UPSTREAM_NAME)
    {
        key = ngx_http_chatbridge_keys_current(r);

        if (key == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }

        s = (data == NGX_HTTP_CHATBRIDGE_VAR_UPSTREAM_KEY) ? key->key
                                                           : key->name;
        goto done;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_chatbridge_module);

    /*
     * limit_req and limit_conn ask before the content handler has checked
     * the key: check it here too (a wrong or missing key has no name)
     */

    if (data == NGX_HTTP_CHATBRIDGE_VAR_KEY_NAME
        && (ctx == NULL || (!ctx->key_checked && ctx->key_name.len == 0)))
    {
        lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

        ngx_str_null(&s);

        if (lcf->keys && lcf->keys->nelts) {
            ctx = ngx_http_chatbridge_get_ctx(r);

            if (ctx
                && ngx_http_chatbridge_check_key(r, ctx, lcf->keys, &error)
                   == NGX_OK)
            {
                s = ctx->key_name;
            }
        }

        goto done;
    }

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_str_null(&s);

    switch (data) {

    case NGX_HTTP_CHATBRIDGE_VAR_KEY_NAME:
        s = ctx->key_name;
        break;

    case NGX_HTTP_CHATBRIDGE_VAR_MODEL:
        s = ctx->model;
        break;

    case NGX_HTTP_CHATBRIDGE_VAR_REQUEST_ID:
        s = ctx->request_id;
        break;

    case NGX_HTTP_CHATBRIDGE_VAR_BROWSER:
        s = ctx->browser;
        break;

    case NGX_HTTP_CHATBRIDGE_VAR_FINISH:
        if (ctx->outcome == NGX_HTTP_CHATBRIDGE_OUTCOME_OK
            && ctx->op == NGX_HTTP_CHATBRIDGE_CHAT)
        {
            s.data = (u_char *) cb_finish_reason_name(ctx->finish_reason);
            s.len = ngx_strlen(s.data);
        }
        break;

    case NGX_HTTP_CHATBRIDGE_VAR_OUTCOME:
        s = ngx_http_chatbridge_outcomes[ctx->outcome];
        break;

    case NGX_HTTP_CHATBRIDGE_VAR_USAGE_SOURCE:
        if (ctx->outcome == NGX_HTTP_CHATBRIDGE_OUTCOME_OK) {
            if (ctx->usage.estimated) {
                ngx_str_set(&s, "estimated");

            } else {
                ngx_str_set(&s, "site");
            }
        }
        break;

    default:

        /* numbers */

        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        s.data = p;

        if (data == NGX_HTTP_CHATBRIDGE_VAR_TTFT) {
            if (ctx->first == 0) {
                ngx_str_null(&s);
                break;
            }

            s.len = ngx_sprintf(p, "%M", ctx->first - ctx->start) - p;

        } else if (data == NGX_HTTP_CHATBRIDGE_VAR_PROMPT) {
            s.len = ngx_sprintf(p, "%uD", ctx->usage.prompt_tokens) - p;

        } else {
            s.len = ngx_sprintf(p, "%uD", ctx->usage.completion_tokens) - p;
        }
    }

done:

    if (s.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = s.data;
    v->len = s.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}
