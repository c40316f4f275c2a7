
/*
 * Copyright (C) chatbridge authors
 *
 * chatbridge_userscript FILE: serves the built userscript with this
 * bridge's browser WebSocket URL and token baked in, so that installing it
 * is one click on the URL.  The two placeholders are replaced:
 *
 *     __CHATBRIDGE_WS_URL__   chatbridge_browser_ws_url, or ws(s)://<Host>
 *                             /chatbridge/ws from the request
 *     __CHATBRIDGE_TOKEN__    chatbridge_browser_token (or _token_file)
 *
 * The answer carries the token: protect the location on a public host.
 */


#include "ngx_http_chatbridge_module.h"


#define NGX_HTTP_CHATBRIDGE_WS_PLACEHOLDER     "__CHATBRIDGE_WS_URL__"
#define NGX_HTTP_CHATBRIDGE_TOKEN_PLACEHOLDER  "__CHATBRIDGE_TOKEN__"


static ngx_int_t ngx_http_chatbridge_userscript_handler(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_chatbridge_userscript_ws_url(ngx_http_request_t *r,
    ngx_str_t *url);
static ngx_uint_t ngx_http_chatbridge_count(ngx_str_t *text, char *what);


char *
ngx_http_chatbridge_userscript(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_chatbridge_loc_conf_t  *lcf = conf;

    ngx_str_t                 *value, file;
    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->userscript.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    file = value[1];

    if (ngx_http_chatbridge_read_conf_file(cf, &file, 4 * 1024 * 1024,
                                           &lcf->userscript)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* the answer's size depends on how often each one appears */

    lcf->userscript_urls = ngx_http_chatbridge_count(&lcf->userscript,
                                       NGX_HTTP_CHATBRIDGE_WS_PLACEHOLDER);
    lcf->userscript_tokens = ngx_http_chatbridge_count(&lcf->userscript,
                                       NGX_HTTP_CHATBRIDGE_TOKEN_PLACEHOLDER);

    if (lcf->userscript_urls == 0 || lcf->userscript_tokens == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" has no " NGX_HTTP_CHATBRIDGE_WS_PLACEHOLDER
                           " or " NGX_HTTP_CHATBRIDGE_TOKEN_PLACEHOLDER
                           ": is it the built userscript?", &value[1]);
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_chatbridge_userscript_handler;

    return NGX_CONF_OK;
}


char *
ngx_http_chatbridge_browser_token_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_chatbridge_loc_conf_t  *lcf = conf;

    u_char     *nl;
    ngx_str_t  *value, file, *t;

    t = &lcf->browser_token;

    if (t->data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    file = value[1];

    if (ngx_http_chatbridge_read_conf_file(cf, &file, 4096, t) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* the first line, as the sidecar's --token-file reads it */

    nl = ngx_strlchr(t->data, t->data + t->len, '\n');
    if (nl) {
        t->len = nl - t->data;
    }

    while (t->len && (t->data[t->len - 1] == '\r'
                      || t->data[t->len - 1] == ' '))
    {
        t->len--;
    }

    if (t->len == 0) {
        return "names an empty file";
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_chatbridge_userscript_handler(ngx_http_request_t *r)
{
    u_char                          *p, *s, *end, *hit;
    size_t                           len, size;
    ngx_int_t                        rc;
    ngx_str_t                        url, token, name;
    const char                      *error;
    ngx_table_elt_t                 *h;
    ngx_http_chatbridge_loc_conf_t  *lcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

    /* it holds the browser token: an admin key, when there are any */

    if (lcf->admin_keys) {
        error = NULL;
        rc = ngx_http_chatbridge_authorize(r, lcf->admin_keys, &name, &error);

        if (rc != NGX_OK) {
            return ngx_http_chatbridge_unauthorized(r,
                       "Basic realm=\"chatbridge userscript\", "
                       "charset=\"UTF-8\"",
                       "invalid_admin_key", error);
        }
    }

    if (ngx_http_chatbridge_userscript_ws_url(r, &url) != NGX_OK) {
        return NGX_HTTP_BAD_REQUEST;
    }

    token = lcf->browser_token;

    len = lcf->userscript.len
          + lcf->userscript_urls * url.len
          + lcf->userscript_tokens * token.len;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* copy, replacing each placeholder wherever it appears */

    size = len;
    s = lcf->userscript.data;
    end = s + lcf->userscript.len;
    len = 0;

    while (s < end) {
        hit = (*s == '_') ? s : NULL;

        if (hit && (size_t) (end - s) >= sizeof(
                                 NGX_HTTP_CHATBRIDGE_WS_PLACEHOLDER) - 1
            && ngx_strncmp(s, NGX_HTTP_CHATBRIDGE_WS_PLACEHOLDER,
                           sizeof(NGX_HTTP_CHATBRIDGE_WS_PLACEHOLDER) - 1)
               == 0)
        {
            if (len + url.len > size) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_memcpy(p + len, url.data, url.len);
            len += url.len;
            s += sizeof(NGX_HTTP_CHATBRIDGE_WS_PLACEHOLDER) - 1;
            continue;
        }

        if (hit && (size_t) (end - s) >= sizeof(
                                 NGX_HTTP_CHATBRIDGE_TOKEN_PLACEHOLDER) - 1
            && ngx_strncmp(s, NGX_HTTP_CHATBRIDGE_TOKEN_PLACEHOLDER,
                           sizeof(NGX_HTTP_CHATBRIDGE_TOKEN_PLACEHOLDER) - 1)
               == 0)
        {
            if (len + token.len > size) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_memcpy(p + len, token.data, token.len);
            len += token.len;
            s += sizeof(NGX_HTTP_CHATBRIDGE_TOKEN_PLACEHOLDER) - 1;
            continue;
        }

        if (len == size) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p[len++] = *s++;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type,
                "text/javascript; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/javascript") - 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_chatbridge_send_body(r, p, len);
}


/*
 * A value that goes into the script's single-quoted strings: printable
 * ASCII without quotes, backslashes, angle brackets or spaces.  NULL if it
 * fits, else what is wrong.
 */

char *
ngx_http_chatbridge_userscript_check(ngx_str_t *value)
{
    u_char  *p;

    for (p = value->data; p < value->data + value->len; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '\'' || *p == '"'
            || *p == '\\' || *p == '<' || *p == '>' || *p == '`')
        {
            return "holds a character that cannot go into the userscript "
                   "(a space, a quote, a backslash, an angle bracket or a "
                   "character outside printable ASCII)";
        }
    }

    return NULL;
}


/* matched as the handler matches them: NUL bytes are text like any other */

static ngx_uint_t
ngx_http_chatbridge_count(ngx_str_t *text, char *what)
{
    u_char      *p, *end;
    size_t       len;
    ngx_uint_t   n;

    p = text->data;
    end = text->data + text->len;
    len = ngx_strlen(what);
    n = 0;

    while (p < end) {
        if ((size_t) (end - p) >= len && ngx_memcmp(p, what, len) == 0) {
            n++;
            p += len;
            continue;
        }

        p++;
    }

    return n;
}


/* ws(s)://<Host>/chatbridge/ws unless configured; a Host that could break
 * out of the script's string is refused */

static ngx_int_t
ngx_http_chatbridge_userscript_ws_url(ngx_http_request_t *r, ngx_str_t *url)
{
    u_char                          *p, c;
    size_t                           i;
    ngx_str_t                        host;
    ngx_http_chatbridge_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

    if (lcf->browser_ws_url.len) {
        *url = lcf->browser_ws_url;
        return NGX_OK;
    }

    host = r->headers_in.host ? r->headers_in.host->value
                              : r->headers_in.server;

    if (host.len == 0) {
        return NGX_ERROR;
    }

    for (i = 0; i < host.len; i++) {
        c = ngx_tolower(host.data[i]);

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.'
              || c == '-' || c == ':' || c == '[' || c == ']'))
        {
            return NGX_ERROR;
        }
    }

    p = ngx_pnalloc(r->pool, host.len + sizeof("wss:///chatbridge/ws"));
    if (p == NULL) {
        return NGX_ERROR;
    }

    url->data = p;

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        p = ngx_cpymem(p, "wss://", 6);
    } else
#endif
    {
        p = ngx_cpymem(p, "ws://", 5);
    }

    p = ngx_cpymem(p, host.data, host.len);
    p = ngx_cpymem(p, "/chatbridge/ws", sizeof("/chatbridge/ws") - 1);

    url->len = p - url->data;

    return NGX_OK;
}
