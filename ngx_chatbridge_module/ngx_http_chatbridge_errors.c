
/*
 * Copyright (C) chatbridge authors
 *
 * In a chatbridge location every error is an OpenAI error object, even the
 * ones nginx makes itself (413 from client_max_body_size, 429 or 503 from
 * limit_req and limit_conn, 500 ...): this filter swaps nginx's HTML page
 * for JSON, keeping the status.  Responses the module wrote are left alone.
 * So are, in a location with an upstream key pool, the upstream's answers:
 * there only nginx's own pages (502 when the upstream is down ...) change.
 */


#include "ngx_http_chatbridge_module.h"


typedef struct {
    ngx_uint_t          status;
    const char         *code;
    const char         *message;
} ngx_http_chatbridge_error_page_t;


static ngx_int_t ngx_http_chatbridge_error_header_filter(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_chatbridge_error_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_http_chatbridge_error_page_t  ngx_http_chatbridge_error_pages[] = {
    { 400, "bad_request", "The request could not be read." },
    { 401, "unauthorized", "Authentication is required." },
    { 403, "forbidden", "Access to this resource is forbidden." },
    { 404, "not_found", "Not found." },
    { 405, "method_not_allowed", "This method is not allowed." },
    { 408, "request_timeout", "The request was not received in time." },
    { 413, "request_too_large",
      "The request body is larger than this server accepts." },
    { 414, "uri_too_long", "The request URI is too long." },
    { 429, "rate_limit_exceeded",
      "Too many requests: the rate limit for this key was reached; retry "
      "later." },
    { 500, "internal_error", "The server failed to handle the request." },
    { 502, "bad_gateway", "The bridge could not get an answer." },
    { 503, "service_unavailable",
      "The service is unavailable or over its connection limit; retry "
      "later." },
    { 504, "gateway_timeout", "No answer in time." },
    { 0, "error", "The request failed." }
};


ngx_int_t
ngx_http_chatbridge_errors_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_chatbridge_error_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_chatbridge_error_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_chatbridge_error_header_filter(ngx_http_request_t *r)
{
    u_char                            *json;
    size_t                             len;
    ngx_uint_t                         i;
    ngx_http_chatbridge_ctx_t         *ctx;
    ngx_http_chatbridge_loc_conf_t    *lcf;
    ngx_http_chatbridge_error_page_t  *e;

    if (r != r->main || r->headers_out.status < 400) {
        return ngx_http_next_header_filter(r);
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

    /* in an upstream key location, the upstream's own errors pass */

    if (!lcf->enable && (lcf->upstream_pool == NULL || r->err_status == 0)) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_chatbridge_module);

    if (ctx && ctx->header_sent) {
        return ngx_http_next_header_filter(r);    /* our own response */
    }

    if (ctx == NULL) {
        ctx = ngx_http_chatbridge_get_ctx(r);
        if (ctx == NULL) {
            return NGX_ERROR;
        }
    }

    for (i = 0; ngx_http_chatbridge_error_pages[i].status; i++) {
        if (ngx_http_chatbridge_error_pages[i].status
            == r->headers_out.status)
        {
            break;
        }
    }

    e = &ngx_http_chatbridge_error_pages[i];

    len = cb_error_json_size(e->message, ngx_strlen(e->message),
                             cb_error_type(r->headers_out.status), e->code,
                             NULL);

    json = ngx_pnalloc(r->pool, len);
    if (json == NULL) {
        return NGX_ERROR;
    }

    len = cb_error_json(json, e->message, ngx_strlen(e->message),
                        cb_error_type(r->headers_out.status), e->code, NULL);

    /* the body filter sends this instead of nginx's page */

    ctx->error_page.data = json;
    ctx->error_page.len = len;
    ctx->header_sent = 1;
    ctx->replace = 1;

    if (ctx->outcome == NGX_HTTP_CHATBRIDGE_OUTCOME_NONE) {
        ctx->outcome = NGX_HTTP_CHATBRIDGE_OUTCOME_REJECTED;
    }

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = len;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    ngx_http_clear_accept_ranges(r);
    ngx_http_clear_last_modified(r);
    ngx_http_clear_etag(r);

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_chatbridge_error_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t                  *b;
    ngx_uint_t                  last;
    ngx_chain_t                *cl, out;
    ngx_http_chatbridge_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chatbridge_module);

    if (ctx == NULL || ctx->error_page.data == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    /* swallow nginx's page, send ours once */

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        if (cl->buf->last_buf) {
            last = 1;
        }

        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    if (!ctx->replace) {
        return last ? ngx_http_next_body_filter(r, NULL) : NGX_OK;
    }

    ctx->replace = 0;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = ctx->error_page.data;
    b->last = ctx->error_page.data + ctx->error_page.len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
}
