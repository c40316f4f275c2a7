
/*
 * Copyright (C) chatbridge authors
 *
 * A request between its submission and its last byte: it waits for records
 * from the sidecar, turns them into OpenAI SSE events or one JSON document,
 * keeps idle streams alive with comments, enforces the idle and total
 * timeouts, stops reading records while the client is slow, and gives its
 * slot back however it ends.
 */


#include "ngx_http_chatbridge_module.h"


#define NGX_HTTP_CHATBRIDGE_BUF_SIZE        4096
#define NGX_HTTP_CHATBRIDGE_BATCH           65536


static ngx_int_t ngx_http_chatbridge_submit(ngx_http_chatbridge_ctx_t *ctx);
static void ngx_http_chatbridge_process(ngx_http_chatbridge_ctx_t *ctx);
static ngx_int_t ngx_http_chatbridge_record(ngx_http_chatbridge_ctx_t *ctx,
    ngx_http_chatbridge_part_t *part, cb_rec_header_t *hdr, u_char *data);
static ngx_int_t ngx_http_chatbridge_text(ngx_http_chatbridge_ctx_t *ctx,
    ngx_uint_t type, u_char *text, size_t len);
static void ngx_http_chatbridge_complete(ngx_http_chatbridge_ctx_t *ctx);
static void ngx_http_chatbridge_complete_chat(ngx_http_chatbridge_ctx_t *ctx);
static void ngx_http_chatbridge_complete_images(
    ngx_http_chatbridge_ctx_t *ctx);
static void ngx_http_chatbridge_fail(ngx_http_chatbridge_ctx_t *ctx,
    ngx_uint_t status, const char *code, const char *message, size_t len,
    uint32_t retry_after, ngx_uint_t outcome);
static void ngx_http_chatbridge_finalize(ngx_http_chatbridge_ctx_t *ctx,
    ngx_int_t rc);
static ngx_int_t ngx_http_chatbridge_stream_header(
    ngx_http_chatbridge_ctx_t *ctx);
static u_char *ngx_http_chatbridge_reserve(ngx_http_chatbridge_ctx_t *ctx,
    size_t size);
static ngx_int_t ngx_http_chatbridge_append(ngx_http_chatbridge_ctx_t *ctx,
    u_char *data, size_t len);
static ngx_int_t ngx_http_chatbridge_role(ngx_http_chatbridge_ctx_t *ctx);
static ngx_int_t ngx_http_chatbridge_flush(ngx_http_chatbridge_ctx_t *ctx,
    ngx_uint_t last);
static void ngx_http_chatbridge_idle(ngx_http_chatbridge_ctx_t *ctx);
static ngx_int_t ngx_http_chatbridge_collect(ngx_http_chatbridge_ctx_t *ctx,
    ngx_chain_t ***last, u_char *text, size_t len);
static void ngx_http_chatbridge_usage(ngx_http_chatbridge_ctx_t *ctx);
static void ngx_http_chatbridge_arm(ngx_http_chatbridge_ctx_t *ctx);
static void ngx_http_chatbridge_timer_handler(ngx_event_t *ev);
static void ngx_http_chatbridge_read_handler(ngx_http_request_t *r);
static void ngx_http_chatbridge_write_handler(ngx_http_request_t *r);
static void ngx_http_chatbridge_cleanup(void *data);
static void ngx_http_chatbridge_release(ngx_http_chatbridge_ctx_t *ctx);
static ngx_int_t ngx_http_chatbridge_header(ngx_http_request_t *r,
    const char *name, ngx_str_t *value);


ngx_int_t
ngx_http_chatbridge_start(ngx_http_request_t *r,
    ngx_http_chatbridge_ctx_t *ctx)
{
    ngx_pool_cleanup_t               *pcln;
    ngx_http_cleanup_t               *cln;
    ngx_http_chatbridge_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_chatbridge_module);

    pcln = ngx_pool_cleanup_add(r->pool, 0);
    cln = ngx_http_cleanup_add(r, 0);

    if (pcln == NULL || cln == NULL) {
        return NGX_ERROR;
    }

    pcln->handler = ngx_http_chatbridge_cleanup;
    pcln->data = ctx;
    cln->handler = ngx_http_chatbridge_cleanup;
    cln->data = ctx;

    ctx->start = ngx_current_msec;
    ctx->last = ctx->start;
    ctx->last_out = ctx->start;
    ctx->out_last = &ctx->out;
    ctx->content_last = &ctx->content;
    ctx->reasoning_last = &ctx->reasoning;
    ctx->link = mcf->link;

    ngx_queue_init(&ctx->queue);

    ctx->timer.handler = ngx_http_chatbridge_timer_handler;
    ctx->timer.data = ctx;
    ctx->timer.log = r->connection->log;

    r->read_event_handler = ngx_http_chatbridge_read_handler;
    r->write_event_handler = ngx_http_chatbridge_write_handler;

    if (ngx_http_chatbridge_link_state(ctx->link)
        == NGX_HTTP_CHATBRIDGE_LINK_DOWN && ctx->link)
    {
        /* try now rather than at the next retry tick */
        ngx_http_chatbridge_link_connect(ctx->link);
    }

    switch (ngx_http_chatbridge_link_state(ctx->link)) {

    case NGX_HTTP_CHATBRIDGE_LINK_READY:
        return ngx_http_chatbridge_submit(ctx);

    case NGX_HTTP_CHATBRIDGE_LINK_HELLO:

        /* the link is coming up: wait for it, briefly */

        ctx->waiting = 1;
        ngx_http_chatbridge_link_wait(ctx->link, ctx);
        ngx_http_chatbridge_arm(ctx);
        return NGX_OK;

    default:
        ngx_http_chatbridge_fail(ctx, NGX_HTTP_BAD_GATEWAY,
                                 "bridge_unavailable",
                                 "The chatbridge sidecar is not running.",
                                 sizeof("The chatbridge sidecar is not "
                                        "running.") - 1, 0,
                                 NGX_HTTP_CHATBRIDGE_OUTCOME_BRIDGE_DOWN);
        return NGX_OK;
    }
}


/* called by the link when it comes up with requests waiting for it */

void
ngx_http_chatbridge_link_ready(ngx_http_chatbridge_ctx_t *ctx)
{
    ngx_connection_t  *c;

    ngx_queue_init(&ctx->queue);
    ctx->waiting = 0;

    c = ctx->request->connection;

    if (ngx_http_chatbridge_submit(ctx) == NGX_ERROR) {
        ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
    }

    ngx_http_run_posted_requests(c);
}


/* called by the link when the sidecar died with the request in flight */

void
ngx_http_chatbridge_link_lost(ngx_http_chatbridge_ctx_t *ctx)
{
    static const char  msg[] = "The chatbridge sidecar went away while this "
                               "request was in flight.";

    ngx_http_chatbridge_fail(ctx, NGX_HTTP_BAD_GATEWAY, "bridge_unavailable",
                             msg, sizeof(msg) - 1, 0,
                             NGX_HTTP_CHATBRIDGE_OUTCOME_BRIDGE_DOWN);
}


/* called by the link when a part's slot has records */

void
ngx_http_chatbridge_wake(ngx_http_chatbridge_part_t *part)
{
    ngx_http_chatbridge_process(part->ctx);
}


ngx_int_t
ngx_http_chatbridge_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *param, const char *message, size_t len,
    uint32_t retry_after)
{
    u_char     *json;
    size_t      size;
    ngx_str_t   value;
    u_char      num[NGX_INT_T_LEN];

    size = cb_error_json_size(message, len, cb_error_type(status), code,
                              param);

    json = ngx_pnalloc(r->pool, size);
    if (json == NULL) {
        return NGX_ERROR;
    }

    size = cb_error_json(json, message, len, cb_error_type(status), code,
                         param);

    if (retry_after) {
        value.data = num;
        value.len = ngx_sprintf(num, "%uD", retry_after) - num;

        if (ngx_http_chatbridge_header(r, "Retry-After", &value) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_chatbridge_send_json(r, status, json, size);
}


ngx_int_t
ngx_http_chatbridge_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *json, size_t len)
{
    ngx_int_t                   rc;
    ngx_http_chatbridge_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chatbridge_module);

    if (ctx) {
        ctx->header_sent = 1;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ctx && ctx->request_id.len) {
        if (ngx_http_chatbridge_header(r, "X-Request-Id", &ctx->request_id)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_chatbridge_send_body(r, json, len);
}


/* a whole body that is already in memory */

ngx_int_t
ngx_http_chatbridge_send_body(ngx_http_request_t *r, u_char *data, size_t len)
{
    ngx_buf_t    *b;
    ngx_chain_t   out;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = data;
    b->last = data + len;
    b->memory = len ? 1 : 0;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_chatbridge_submit(ngx_http_chatbridge_ctx_t *ctx)
{
    ngx_int_t                        rc;
    ngx_uint_t                       i;
    ngx_http_chatbridge_part_t      *part;
    ngx_http_chatbridge_loc_conf_t  *lcf;

    static const char  busy[] = "The bridge is at capacity; retry shortly.";

    lcf = ngx_http_get_module_loc_conf(ctx->request,
                                       ngx_http_chatbridge_module);

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        rc = ngx_http_chatbridge_link_submit(ctx->link, part,
                 ctx->op == NGX_HTTP_CHATBRIDGE_CONTROL ? CB_KIND_CONTROL
                                                        : lcf->kind);

        if (rc == NGX_DECLINED) {
            ngx_http_chatbridge_link_lost(ctx);
            return NGX_OK;
        }

        if (rc == NGX_BUSY) {
            ngx_http_chatbridge_fail(ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "bridge_overloaded", busy,
                                     sizeof(busy) - 1, 1,
                                     NGX_HTTP_CHATBRIDGE_OUTCOME_ERROR);
            return NGX_OK;
        }

        /* the task is in the segment now */

        free(part->task);
        part->task = NULL;

        if (i == 0) {
            ngx_http_chatbridge_link_track(ctx->link, ctx);
        }
    }

    ngx_http_chatbridge_arm(ctx);

    return NGX_OK;
}


static void
ngx_http_chatbridge_process(ngx_http_chatbridge_ctx_t *ctx)
{
    u_char                      *data;
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    cb_rec_header_t              hdr;
    ngx_http_chatbridge_part_t  *part;

    if (ctx->finalized) {
        return;
    }

    /* the client is slow: leave the records in the ring for now */

    if (ctx->busy) {
        rc = ngx_http_chatbridge_flush(ctx, 0);

        if (rc == NGX_ERROR) {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            return;
        }

        if (rc == NGX_AGAIN) {
            return;
        }
    }

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        while (!part->ended) {

            rc = ngx_http_chatbridge_link_read(ctx->link, part, &hdr, &data);

            if (rc == NGX_AGAIN || rc == NGX_DECLINED) {
                break;
            }

            if (rc == NGX_ERROR) {
                ngx_http_chatbridge_fail(ctx, NGX_HTTP_BAD_GATEWAY,
                                         "bridge_error",
                                         "The bridge sent a corrupt record.",
                                         sizeof("The bridge sent a corrupt "
                                                "record.") - 1, 0,
                                         NGX_HTTP_CHATBRIDGE_OUTCOME_ERROR);
                return;
            }

            ctx->last = ngx_current_msec;

            if (ngx_http_chatbridge_record(ctx, part, &hdr, data) != NGX_OK) {
                ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
                return;
            }

            if (ctx->finalized) {
                return;
            }

            /* a batch is ready: send it, and stop if the client lags */

            if (ctx->out_size >= NGX_HTTP_CHATBRIDGE_BATCH) {
                rc = ngx_http_chatbridge_flush(ctx, 0);

                if (rc == NGX_ERROR) {
                    ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
                    return;
                }

                if (rc == NGX_AGAIN) {
                    ngx_http_chatbridge_link_drained(ctx->link, part);
                    ngx_http_chatbridge_arm(ctx);
                    return;
                }
            }
        }

        ngx_http_chatbridge_link_drained(ctx->link, part);
    }

    if (ctx->nended == ctx->nparts) {
        ngx_http_chatbridge_complete(ctx);
        return;
    }

    if (ctx->out) {
        if (ngx_http_chatbridge_flush(ctx, 0) == NGX_ERROR) {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            return;
        }
    }

    ngx_http_chatbridge_arm(ctx);
}


static ngx_int_t
ngx_http_chatbridge_record(ngx_http_chatbridge_ctx_t *ctx,
    ngx_http_chatbridge_part_t *part, cb_rec_header_t *hdr, u_char *data)
{
    u_char                          *p;
    size_t                           len, size;
    cb_rec_done_t                    done;
    cb_rec_meta_t                    meta;
    cb_rec_error_t                   err;
    ngx_http_request_t              *r;
    ngx_http_chatbridge_loc_conf_t  *lcf;

    r = ctx->request;
    len = hdr->len;

    /* a record in pieces: collect them first (text and URLs only) */

    if ((hdr->flags & CB_REC_MORE) || ctx->more_len) {

        lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

        if (ctx->more_len + len > lcf->max_response_size) {
            goto too_large;
        }

        if (ctx->more_len + len > ctx->more_size) {
            size = ngx_max(2 * ctx->more_size, ctx->more_len + len);

            p = ngx_pnalloc(r->pool, size);
            if (p == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(p, ctx->more, ctx->more_len);

            if (ctx->more && ctx->more_size > NGX_HTTP_CHATBRIDGE_BUF_SIZE) {
                ngx_pfree(r->pool, ctx->more);
            }

            ctx->more = p;
            ctx->more_size = size;
        }

        ngx_memcpy(ctx->more + ctx->more_len, data, len);
        ctx->more_len += len;
        ctx->more_type = hdr->type;

        if (hdr->flags & CB_REC_MORE) {
            return NGX_OK;
        }

        data = ctx->more;
        len = ctx->more_len;
        ctx->more_len = 0;
    }

    switch (hdr->type) {

    case CB_REC_META:
        if (len < sizeof(cb_rec_meta_t)) {
            break;
        }

        ngx_memcpy(&meta, data, sizeof(cb_rec_meta_t));

        if (meta.browser_len > len - sizeof(cb_rec_meta_t)) {
            break;
        }

        ctx->browser.data = ngx_pnalloc(r->pool, meta.browser_len);
        if (ctx->browser.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ctx->browser.data, data + sizeof(cb_rec_meta_t),
                   meta.browser_len);
        ctx->browser.len = meta.browser_len;
        break;

    case CB_REC_DELTA:
    case CB_REC_REASONING:
        return ngx_http_chatbridge_text(ctx, hdr->type, data, len);

    case CB_REC_IMAGE:

        if (ctx->op == NGX_HTTP_CHATBRIDGE_IMAGES) {
            part->image.data = ngx_pnalloc(r->pool, len);
            if (part->image.data == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(part->image.data, data, len);
            part->image.len = len;
            break;
        }

        /* in a chat, an image is markdown content */

        p = ngx_pnalloc(r->pool, len + sizeof("\n![Image]()\n") - 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        size = ngx_sprintf(p, "%s![Image](%*s)\n",
                           ctx->out_ascii + ctx->out_other ? "\n" : "",
                           len, data) - p;

        return ngx_http_chatbridge_text(ctx, CB_REC_DELTA, p, size);

    case CB_REC_RESULT:
        part->result.data = ngx_pnalloc(r->pool, len);
        if (part->result.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(part->result.data, data, len);
        part->result.len = len;
        break;

    case CB_REC_DONE:
        ngx_memzero(&done, sizeof(cb_rec_done_t));
        ngx_memcpy(&done, data, ngx_min(len, sizeof(cb_rec_done_t)));

        ctx->finish_reason = done.finish_reason;

        if (done.usage_known) {
            ctx->usage_known = 1;
            ctx->usage.prompt_tokens = done.prompt_tokens;
            ctx->usage.completion_tokens = done.completion_tokens;
            ctx->usage.reasoning_tokens = done.reasoning_tokens;
            ctx->usage.total_tokens = done.total_tokens;
        }

        part->ended = 1;
        ctx->nended++;
        break;

    case CB_REC_ERROR:
        if (len < sizeof(cb_rec_error_t)) {
            goto corrupt;
        }

        ngx_memcpy(&err, data, sizeof(cb_rec_error_t));

        if ((size_t) err.code_len + err.message_len
            > len - sizeof(cb_rec_error_t))
        {
            goto corrupt;
        }

        part->status = (err.status >= 400 && err.status <= 599)
                       ? err.status : NGX_HTTP_BAD_GATEWAY;
        part->retry_after = err.retry_after;

        /* both NUL-terminated: the code goes out as a C string */

        p = ngx_pnalloc(r->pool, err.code_len + err.message_len + 2);
        if (p == NULL) {
            return NGX_ERROR;
        }

        part->error_code.data = p;
        part->error_code.len = err.code_len;
        p = ngx_cpymem(p, data + sizeof(cb_rec_error_t), err.code_len);
        *p++ = '\0';

        part->error_message.data = p;
        part->error_message.len = err.message_len;
        p = ngx_cpymem(p, data + sizeof(cb_rec_error_t) + err.code_len,
                       err.message_len);
        *p = '\0';

        if (part->error_code.len == 0) {
            ngx_str_set(&part->error_code, "bridge_error");
        }

        ngx_http_chatbridge_arena_failed(r, part);

        part->ended = 1;
        ctx->nended++;
        break;

    default:
        /* newer record types are skipped, not fatal */
        break;
    }

    return NGX_OK;

corrupt:

    ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                  "chatbridge: corrupt %s record", cb_record_name(hdr->type));
    return NGX_ERROR;

too_large:

    ngx_http_chatbridge_fail(ctx, NGX_HTTP_BAD_GATEWAY, "response_too_large",
                             "The answer is larger than "
                             "chatbridge_max_response_size.",
                             sizeof("The answer is larger than "
                                    "chatbridge_max_response_size.") - 1,
                             0, NGX_HTTP_CHATBRIDGE_OUTCOME_ERROR);
    return NGX_OK;
}


/* answer or reasoning text: an SSE event, or collected for the JSON */

static ngx_int_t
ngx_http_chatbridge_text(ngx_http_chatbridge_ctx_t *ctx, ngx_uint_t type,
    u_char *text, size_t len)
{
    u_char                          *p;
    size_t                           i, n;
    const char                      *field;
    ngx_http_chatbridge_loc_conf_t  *lcf;

    if (len == 0) {
        return NGX_OK;
    }

    if (ctx->first == 0) {
        ctx->first = ngx_current_msec;
    }

    /* counted for the token estimate, see cb_estimate_tokens() */

    for (i = 0; i < len; i++) {
        if (text[i] < 0x80) {
            ctx->out_ascii++;

        } else if ((text[i] & 0xc0) != 0x80) {
            ctx->out_other++;
        }
    }

    if (!ctx->stream) {
        lcf = ngx_http_get_module_loc_conf(ctx->request,
                                           ngx_http_chatbridge_module);

        if (ctx->collected + len > lcf->max_response_size) {
            ngx_http_chatbridge_fail(ctx, NGX_HTTP_BAD_GATEWAY,
                                     "response_too_large",
                                     "The answer is larger than "
                                     "chatbridge_max_response_size.",
                                     sizeof("The answer is larger than "
                                            "chatbridge_max_response_size.")
                                     - 1, 0,
                                     NGX_HTTP_CHATBRIDGE_OUTCOME_ERROR);
            return NGX_OK;
        }

        ctx->collected += len;

        return ngx_http_chatbridge_collect(ctx,
                                           type == CB_REC_DELTA
                                           ? &ctx->content_last
                                           : &ctx->reasoning_last,
                                           text, len);
    }

    if (!ctx->header_sent && ngx_http_chatbridge_stream_header(ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_chatbridge_role(ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    field = type == CB_REC_DELTA ? "content" : "reasoning_content";
    n = cb_sse_delta_size(ctx->head_len, field, text, len);

    p = ngx_http_chatbridge_reserve(ctx, n);
    if (p == NULL) {
        return NGX_ERROR;
    }

    n = cb_sse_delta(p, ctx->head, ctx->head_len, field, text, len);

    return ngx_http_chatbridge_append(ctx, p, n);
}


static void
ngx_http_chatbridge_complete(ngx_http_chatbridge_ctx_t *ctx)
{
    ngx_str_t                    json;
    ngx_http_chatbridge_part_t  *part;

    switch (ctx->op) {

    case NGX_HTTP_CHATBRIDGE_IMAGES:
        ngx_http_chatbridge_complete_images(ctx);
        return;

    case NGX_HTTP_CHATBRIDGE_CONTROL:
        part = &ctx->parts[0];

        if (part->status) {
            ngx_http_chatbridge_fail(ctx, part->status,
                                     (const char *) part->error_code.data,
                                     (const char *) part->error_message.data,
                                     part->error_message.len,
                                     part->retry_after,
                                     NGX_HTTP_CHATBRIDGE_OUTCOME_ERROR);
            return;
        }

        ctx->outcome = NGX_HTTP_CHATBRIDGE_OUTCOME_OK;

        if (ngx_http_chatbridge_admin_result(ctx, &json) != NGX_OK) {
            ngx_http_chatbridge_finalize(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ngx_http_chatbridge_finalize(ctx,
            ngx_http_chatbridge_send_json(ctx->request, NGX_HTTP_OK,
                                          json.data, json.len));
        return;

    default:
        ngx_http_chatbridge_complete_chat(ctx);
    }
}


static void
ngx_http_chatbridge_complete_chat(ngx_http_chatbridge_ctx_t *ctx)
{
    u_char                      *p;
    size_t                       size, n;
    ngx_int_t                    rc;
    ngx_buf_t                   *b;
    ngx_chain_t                 *cl, *out, **ll;
    const char                  *reason;
    ngx_http_request_t          *r;
    ngx_http_chatbridge_part_t  *part;

    r = ctx->request;
    part = &ctx->parts[0];

    if (part->status) {
        ngx_http_chatbridge_fail(ctx, part->status,
                                 (const char *) part->error_code.data,
                                 (const char *) part->error_message.data,
                                 part->error_message.len, part->retry_after,
                                 NGX_HTTP_CHATBRIDGE_OUTCOME_ERROR);
        return;
    }

    ngx_http_chatbridge_usage(ctx);
    reason = cb_finish_reason_name(ctx->finish_reason);
    ctx->outcome = NGX_HTTP_CHATBRIDGE_OUTCOME_OK;

    if (ctx->stream) {

        if (!ctx->header_sent
            && ngx_http_chatbridge_stream_header(ctx) != NGX_OK)
        {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            return;
        }

        if (ngx_http_chatbridge_role(ctx) != NGX_OK) {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            return;
        }

        size = CB_SSE_FINISH_SIZE(ctx->head_len) + strlen(reason)
               + CB_SSE_USAGE_SIZE(ctx->head_len) + sizeof(CB_SSE_DONE);

        p = ngx_http_chatbridge_reserve(ctx, size);
        if (p == NULL) {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            return;
        }

        n = cb_sse_finish(p, ctx->head, ctx->head_len, reason);

        if (ctx->include_usage) {
            n += cb_sse_usage(p + n, ctx->head, ctx->head_len, &ctx->usage);
        }

        n = ngx_cpymem(p + n, CB_SSE_DONE, sizeof(CB_SSE_DONE) - 1) - p;

        if (ngx_http_chatbridge_append(ctx, p, n) != NGX_OK) {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            return;
        }

        ngx_http_chatbridge_finalize(ctx, ngx_http_chatbridge_flush(ctx, 1));
        return;
    }

    /* one chat.completion document: head, collected text, tail */

    size = CB_CHUNK_HEAD_SIZE(ctx->request_id.len + 9, ctx->model.len)
           + 256 + CB_USAGE_SIZE + strlen(reason);

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
        return;
    }

    p = b->last;
    p = ngx_cpymem(p, "{\"id\":\"chatcmpl-", sizeof("{\"id\":\"chatcmpl-") - 1);
    p = ngx_cpymem(p, ctx->request_id.data, ctx->request_id.len);
    p = ngx_sprintf(p, "\",\"object\":\"chat.completion\",\"created\":%T,"
                       "\"model\":\"", ctx->created);
    p = (u_char *) cb_json_escape(p, ctx->model.data, ctx->model.len);
    p = ngx_cpymem(p, "\",\"choices\":[{\"index\":0,\"message\":"
                      "{\"role\":\"assistant\",\"refusal\":null,"
                      "\"content\":\"",
                   sizeof("\",\"choices\":[{\"index\":0,\"message\":"
                          "{\"role\":\"assistant\",\"refusal\":null,"
                          "\"content\":\"") - 1);
    b->last = p;

    out = NULL;
    ll = &out;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
        return;
    }

    cl->buf = b;
    *ll = cl;
    ll = &cl->next;

    *ll = ctx->content;
    ll = ctx->content_last;

    /* the tail lives in the same buffer, after the head */

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
        return;
    }

    b->pos = p;
    b->memory = 1;

    if (ctx->reasoning) {
        p = ngx_cpymem(p, "\",\"reasoning_content\":\"",
                       sizeof("\",\"reasoning_content\":\"") - 1);
        b->last = p;

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            return;
        }

        cl->buf = b;
        *ll = cl;
        ll = &cl->next;

        *ll = ctx->reasoning;
        ll = ctx->reasoning_last;

        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            return;
        }

        b->pos = p;
        b->memory = 1;
    }

    p = ngx_sprintf(p, "\"},\"logprobs\":null,\"finish_reason\":\"%s\"}],"
                       "\"usage\":", reason);
    p += cb_usage_json(p, &ctx->usage);
    *p++ = '}';
    b->last = p;
    b->last_buf = 1;
    b->last_in_chain = 1;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
        return;
    }

    cl->buf = b;
    cl->next = NULL;
    *ll = cl;

    size = 0;
    for (cl = out; cl; cl = cl->next) {
        size += cl->buf->last - cl->buf->pos;
    }

    ctx->header_sent = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = size;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    if (ngx_http_chatbridge_header(r, "X-Request-Id", &ctx->request_id)
        != NGX_OK)
    {
        ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
        return;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_chatbridge_finalize(ctx, rc);
        return;
    }

    ngx_http_chatbridge_finalize(ctx, ngx_http_output_filter(r, out));
}


/*
 * POST /v1/images/generations: every part that produced an image is listed;
 * if some failed, the response says how many; if all failed, it is an error.
 */

static void
ngx_http_chatbridge_complete_images(ngx_http_chatbridge_ctx_t *ctx)
{
    u_char                      *json, *p;
    size_t                       size;
    ngx_uint_t                   i, ok, failed;
    ngx_table_elt_t             *h;
    ngx_http_request_t          *r;
    ngx_http_chatbridge_part_t  *part, *first_error;

    r = ctx->request;

    ok = 0;
    failed = 0;
    first_error = NULL;
    size = 128;

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (part->status == 0 && part->image.len == 0) {
            part->status = NGX_HTTP_BAD_GATEWAY;
            ngx_str_set(&part->error_code, "no_image");
            ngx_str_set(&part->error_message,
                        "The browser finished without an image.");
        }

        if (part->status) {
            failed++;

            if (first_error == NULL) {
                first_error = part;
            }

            size += 64 + 6 * part->error_message.len;
            continue;
        }

        ok++;
        size += 32 + 6 * part->image.len;
    }

    if (ok == 0) {
        ngx_http_chatbridge_fail(ctx, first_error->status,
                                 (const char *) first_error->error_code.data,
                                 (const char *) first_error->error_message.data,
                                 first_error->error_message.len,
                                 first_error->retry_after,
                                 NGX_HTTP_CHATBRIDGE_OUTCOME_ERROR);
        return;
    }

    json = ngx_pnalloc(r->pool, size);
    if (json == NULL) {
        ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
        return;
    }

    p = ngx_sprintf(json, "{\"created\":%T,\"data\":[", ctx->created);

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (part->status) {
            continue;
        }

        p = ngx_cpymem(p, "{\"url\":\"", sizeof("{\"url\":\"") - 1);
        p = (u_char *) cb_json_escape(p, part->image.data, part->image.len);
        p = ngx_cpymem(p, "\"},", 3);
    }

    p[-1] = ']';

    if (failed) {
        p = ngx_sprintf(p, ",\"partial_failure\":{\"requested\":%ui,"
                           "\"failed\":%ui,\"errors\":[",
                        ctx->nparts, failed);

        for (i = 0; i < ctx->nparts; i++) {
            part = &ctx->parts[i];

            if (part->status == 0) {
                continue;
            }

            p = ngx_sprintf(p, "{\"status\":%ui,\"message\":\"",
                            part->status);
            p = (u_char *) cb_json_escape(p, part->error_message.data,
                                          part->error_message.len);
            p = ngx_cpymem(p, "\"},", 3);
        }

        p[-1] = ']';
        *p++ = '}';

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            return;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "X-Chatbridge-Failed");
        h->value.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (h->value.data == NULL) {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            return;
        }

        h->value.len = ngx_sprintf(h->value.data, "%ui", failed)
                       - h->value.data;
    }

    *p++ = '}';

    ctx->outcome = NGX_HTTP_CHATBRIDGE_OUTCOME_OK;

    ngx_http_chatbridge_finalize(ctx,
        ngx_http_chatbridge_send_json(r, NGX_HTTP_OK, json, p - json));
}


/*
 * The request failed.  Before the first byte the client gets the status and
 * an OpenAI error object; after it, an error event and [DONE].
 */

static void
ngx_http_chatbridge_fail(ngx_http_chatbridge_ctx_t *ctx, ngx_uint_t status,
    const char *code, const char *message, size_t len, uint32_t retry_after,
    ngx_uint_t outcome)
{
    u_char              *p;
    size_t               size, n;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (ctx->finalized) {
        return;
    }

    ctx->outcome = (status == NGX_HTTP_GATEWAY_TIME_OUT)
                   ? NGX_HTTP_CHATBRIDGE_OUTCOME_TIMEOUT : outcome;

    ngx_http_chatbridge_release(ctx);

    if (!ctx->header_sent) {
        ngx_http_chatbridge_finalize(ctx,
            ngx_http_chatbridge_send_error(r, status, code, NULL, message, len,
                                           retry_after));
        return;
    }

    size = sizeof("data: \n\n") + cb_error_json_size(message, len,
                                                     cb_error_type(status),
                                                     code, NULL)
           + sizeof(CB_SSE_DONE);

    p = ngx_http_chatbridge_reserve(ctx, size);
    if (p == NULL) {
        ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
        return;
    }

    n = ngx_cpymem(p, "data: ", 6) - p;
    n += cb_error_json(p + n, message, len, cb_error_type(status), code, NULL);
    n = ngx_cpymem(p + n, "\n\n" CB_SSE_DONE,
                   2 + sizeof(CB_SSE_DONE) - 1) - p;

    if (ngx_http_chatbridge_append(ctx, p, n) != NGX_OK) {
        ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
        return;
    }

    ngx_http_chatbridge_finalize(ctx, ngx_http_chatbridge_flush(ctx, 1));
}


static void
ngx_http_chatbridge_finalize(ngx_http_chatbridge_ctx_t *ctx, ngx_int_t rc)
{
    cb_worker_counters_t  *wc;

    if (ctx->finalized) {
        return;
    }

    ngx_http_chatbridge_release(ctx);

    ctx->finalized = 1;

    if (ngx_http_chatbridge_link_segment(ctx->link)) {
        wc = ngx_http_chatbridge_link_counters(ctx->link);

        if (ctx->outcome == NGX_HTTP_CHATBRIDGE_OUTCOME_OK) {
            wc->completed++;

        } else {
            wc->failed++;
        }
    }

    if (rc == NGX_AGAIN) {
        /* ngx_http_finalize_request() sends the rest with ngx_http_writer */
        rc = NGX_OK;
    }

    ngx_http_finalize_request(ctx->request, rc);
}


/* stop waiting: timer, queues, slots */

static void
ngx_http_chatbridge_release(ngx_http_chatbridge_ctx_t *ctx)
{
    ngx_uint_t  i;

    if (ctx->timer.timer_set) {
        ngx_del_timer(&ctx->timer);
    }

    if (ngx_queue_next(&ctx->queue) && !ngx_queue_empty(&ctx->queue)) {
        ngx_queue_remove(&ctx->queue);
        ngx_queue_init(&ctx->queue);
    }

    ctx->waiting = 0;

    for (i = 0; i < ctx->nparts; i++) {
        ngx_http_chatbridge_link_giveup(ctx->link, &ctx->parts[i]);

        if (ctx->parts[i].task) {
            free(ctx->parts[i].task);
            ctx->parts[i].task = NULL;
        }
    }
}


static ngx_int_t
ngx_http_chatbridge_stream_header(ngx_http_chatbridge_ctx_t *ctx)
{
    ngx_int_t            rc;
    ngx_str_t            v;
    ngx_http_request_t  *r;

    r = ctx->request;

    ctx->header_sent = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    ngx_str_set(&r->headers_out.content_type,
                "text/event-stream; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/event-stream") - 1;
    r->allow_ranges = 0;

#if (NGX_HTTP_GZIP)
    r->gzip_tested = 1;
    r->gzip_ok = 0;
#endif

    ngx_str_set(&v, "no-cache");
    if (ngx_http_chatbridge_header(r, "Cache-Control", &v) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_str_set(&v, "no");
    if (ngx_http_chatbridge_header(r, "X-Accel-Buffering", &v) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_chatbridge_header(r, "X-Request-Id", &ctx->request_id)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        return NGX_ERROR;
    }

    (void) ngx_tcp_nodelay(r->connection);

    return NGX_OK;
}


/* room for size bytes at the end of the pending output */

static u_char *
ngx_http_chatbridge_reserve(ngx_http_chatbridge_ctx_t *ctx, size_t size)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl, **ll;

    if (ctx->out) {
        for (cl = ctx->out; cl->next; cl = cl->next) { /* void */ }

        b = cl->buf;

        if ((size_t) (b->end - b->last) >= size) {
            return b->last;
        }
    }

    /* a free buffer that fits, or one whose memory went back when idle */

    for (ll = &ctx->free; *ll; ll = &(*ll)->next) {
        b = (*ll)->buf;

        if (b->start == NULL || (size_t) (b->end - b->start) >= size) {
            cl = *ll;
            *ll = cl->next;
            goto found;
        }
    }

    cl = ngx_alloc_chain_link(ctx->request->pool);
    if (cl == NULL) {
        return NULL;
    }

    b = ngx_calloc_buf(ctx->request->pool);
    if (b == NULL) {
        return NULL;
    }

    b->temporary = 1;
    b->tag = (ngx_buf_tag_t) &ngx_http_chatbridge_module;
    cl->buf = b;

found:

    if (b->start == NULL || (size_t) (b->end - b->start) < size) {

        /*
         * NGX_HTTP_CHATBRIDGE_BUF_SIZE is over the request pool's limit,
         * so the memory is a large allocation that ngx_pfree() gives back
         */

        size = ngx_max(size, NGX_HTTP_CHATBRIDGE_BUF_SIZE);

        b->start = ngx_palloc(ctx->request->pool, size);
        if (b->start == NULL) {
            return NULL;
        }

        b->end = b->start + size;
    }

    b->pos = b->start;
    b->last = b->start;
    b->flush = 0;
    b->last_buf = 0;
    cl->next = NULL;

    *ctx->out_last = cl;
    ctx->out_last = &cl->next;

    return b->last;
}


static ngx_int_t
ngx_http_chatbridge_append(ngx_http_chatbridge_ctx_t *ctx, u_char *data,
    size_t len)
{
    ngx_chain_t  *cl;

    for (cl = ctx->out; cl->next; cl = cl->next) { /* void */ }

    if (data != cl->buf->last) {
        return NGX_ERROR;
    }

    cl->buf->last += len;
    ctx->out_size += len;

    return NGX_OK;
}


/* the first chunk of every stream says who speaks */

static ngx_int_t
ngx_http_chatbridge_role(ngx_http_chatbridge_ctx_t *ctx)
{
    u_char  *p;

    if (ctx->role_sent) {
        return NGX_OK;
    }

    ctx->role_sent = 1;

    p = ngx_http_chatbridge_reserve(ctx, CB_SSE_ROLE_SIZE(ctx->head_len));
    if (p == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_chatbridge_append(ctx, p,
                                      cb_sse_role(p, ctx->head,
                                                  ctx->head_len));
}


/*
 * Send the pending output, each write flushed.  NGX_AGAIN: the client has
 * not taken it all; the write handler calls back when it can.
 */

static ngx_int_t
ngx_http_chatbridge_flush(ngx_http_chatbridge_ctx_t *ctx, ngx_uint_t last)
{
    ngx_int_t                  rc;
    ngx_chain_t               *cl;
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_core_loc_conf_t  *clcf;

    r = ctx->request;
    c = r->connection;

    if (ctx->out) {
        for (cl = ctx->out; cl->next; cl = cl->next) { /* void */ }

        cl->buf->flush = 1;

        if (last) {
            cl->buf->last_buf = 1;
            cl->buf->last_in_chain = 1;
        }

        ctx->last_out = ngx_current_msec;
    }

    rc = ngx_http_output_filter(r, ctx->out);

    ngx_chain_update_chains(r->pool, &ctx->free, &ctx->busy, &ctx->out,
                            (ngx_buf_tag_t) &ngx_http_chatbridge_module);

    ctx->out = NULL;
    ctx->out_last = &ctx->out;
    ctx->out_size = 0;

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (last) {
        return rc;
    }

    if (ctx->busy || c->buffered) {
        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

        if (ngx_handle_write_event(c->write, clcf->send_lowat) != NGX_OK) {
            return NGX_ERROR;
        }

        if (!c->write->timer_set) {
            ngx_add_timer(c->write, clcf->send_timeout);
        }

        return NGX_AGAIN;
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    ngx_http_chatbridge_idle(ctx);

    return NGX_OK;
}


/*
 * Everything went out: the buffers' memory goes back until the next record,
 * so that a stream that waits for its browser (most of a stream's life)
 * holds none.
 */

static void
ngx_http_chatbridge_idle(ngx_http_chatbridge_ctx_t *ctx)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    for (cl = ctx->free; cl; cl = cl->next) {
        b = cl->buf;

        if (b->start == NULL) {
            continue;
        }

        if (ngx_pfree(ctx->request->pool, b->start) != NGX_OK) {
            continue;       /* from the pool itself: keep it */
        }

        b->start = NULL;
        b->end = NULL;
        b->pos = NULL;
        b->last = NULL;
    }
}


/* non-streaming: keep the escaped text until the answer is complete */

static ngx_int_t
ngx_http_chatbridge_collect(ngx_http_chatbridge_ctx_t *ctx,
    ngx_chain_t ***last, u_char *text, size_t len)
{
    size_t        n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    n = cb_json_escaped_len(text, len);

    cl = ngx_alloc_chain_link(ctx->request->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    b = ngx_create_temp_buf(ctx->request->pool, n);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = (u_char *) cb_json_escape(b->last, text, len);

    cl->buf = b;
    cl->next = NULL;

    **last = cl;
    *last = &cl->next;

    return NGX_OK;
}


/* usage as the site reported it, or estimated (and marked so) */

static void
ngx_http_chatbridge_usage(ngx_http_chatbridge_ctx_t *ctx)
{
    if (ctx->usage_known) {
        ctx->usage.estimated = 0;

        if (ctx->usage.total_tokens == 0) {
            ctx->usage.total_tokens = ctx->usage.prompt_tokens
                                      + ctx->usage.completion_tokens;
        }

        return;
    }

    ctx->usage.estimated = 1;
    ctx->usage.completion_tokens = (uint32_t) ((ctx->out_ascii + 3) / 4
                                               + ctx->out_other);
    ctx->usage.total_tokens = ctx->usage.prompt_tokens
                              + ctx->usage.completion_tokens;
}


/* one timer for every deadline: link wait, idle, total, keep-alive */

static void
ngx_http_chatbridge_arm(ngx_http_chatbridge_ctx_t *ctx)
{
    ngx_msec_t                        now, next, t;
    ngx_http_chatbridge_loc_conf_t   *lcf;
    ngx_http_chatbridge_main_conf_t  *mcf;

    if (ctx->finalized) {
        return;
    }

    lcf = ngx_http_get_module_loc_conf(ctx->request,
                                       ngx_http_chatbridge_module);

    now = ngx_current_msec;

    next = ctx->start + (ctx->timeout ? ctx->timeout : lcf->total_timeout);

    t = ctx->last + (ctx->timeout ? ctx->timeout : lcf->idle_timeout);
    if ((ngx_msec_int_t) (t - next) < 0) {
        next = t;
    }

    if (ctx->waiting) {
        mcf = ngx_http_get_module_main_conf(ctx->request,
                                            ngx_http_chatbridge_module);
        t = ctx->start + mcf->link_wait;

        if ((ngx_msec_int_t) (t - next) < 0) {
            next = t;
        }
    }

    if (ctx->stream) {
        t = ctx->last_out + lcf->keepalive;

        if ((ngx_msec_int_t) (t - next) < 0) {
            next = t;
        }
    }

    t = (ngx_msec_int_t) (next - now) > 0 ? next - now : 1;

    ngx_add_timer(&ctx->timer, t);
}


static void
ngx_http_chatbridge_timer_handler(ngx_event_t *ev)
{
    u_char                           *p;
    ngx_int_t                         rc;
    ngx_msec_t                        now;
    ngx_connection_t                 *c;
    ngx_http_chatbridge_ctx_t        *ctx;
    ngx_http_chatbridge_loc_conf_t   *lcf;
    ngx_http_chatbridge_main_conf_t  *mcf;

    static const char  down[] = "The chatbridge sidecar is not running.";
    static const char  total[] = "No complete answer within "
                                 "chatbridge_total_timeout.";
    static const char  idle[] = "The browser sent nothing for "
                                "chatbridge_idle_timeout.";

    ctx = ev->data;
    c = ctx->request->connection;
    now = ngx_current_msec;

    lcf = ngx_http_get_module_loc_conf(ctx->request,
                                       ngx_http_chatbridge_module);
    mcf = ngx_http_get_module_main_conf(ctx->request,
                                        ngx_http_chatbridge_module);

    if (ctx->waiting && now - ctx->start >= mcf->link_wait) {
        ngx_http_chatbridge_fail(ctx, NGX_HTTP_BAD_GATEWAY,
                                 "bridge_unavailable", down,
                                 sizeof(down) - 1, 0,
                                 NGX_HTTP_CHATBRIDGE_OUTCOME_BRIDGE_DOWN);
        goto done;
    }

    if (now - ctx->start >= (ctx->timeout ? ctx->timeout
                                          : lcf->total_timeout))
    {
        ngx_http_chatbridge_fail(ctx, NGX_HTTP_GATEWAY_TIME_OUT,
                                 "browser_timeout", total, sizeof(total) - 1,
                                 0, NGX_HTTP_CHATBRIDGE_OUTCOME_TIMEOUT);
        goto done;
    }

    if (now - ctx->last >= (ctx->timeout ? ctx->timeout
                                         : lcf->idle_timeout))
    {
        ngx_http_chatbridge_fail(ctx, NGX_HTTP_GATEWAY_TIME_OUT,
                                 "browser_timeout", idle, sizeof(idle) - 1,
                                 0, NGX_HTTP_CHATBRIDGE_OUTCOME_TIMEOUT);
        goto done;
    }

    /* an idle stream gets a comment so that proxies keep it open */

    if (ctx->stream && now - ctx->last_out >= lcf->keepalive && !ctx->busy) {

        if (!ctx->header_sent
            && ngx_http_chatbridge_stream_header(ctx) != NGX_OK)
        {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            goto done;
        }

        p = ngx_http_chatbridge_reserve(ctx, sizeof(CB_SSE_KEEPALIVE));
        if (p == NULL
            || ngx_http_chatbridge_append(ctx, p,
                   ngx_cpymem(p, CB_SSE_KEEPALIVE,
                              sizeof(CB_SSE_KEEPALIVE) - 1) - p)
               != NGX_OK)
        {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            goto done;
        }

        rc = ngx_http_chatbridge_flush(ctx, 0);

        if (rc == NGX_ERROR) {
            ngx_http_chatbridge_finalize(ctx, NGX_ERROR);
            goto done;
        }

        ctx->last_out = now;
    }

    ngx_http_chatbridge_arm(ctx);

done:

    ngx_http_run_posted_requests(c);
}


/* the client may close the connection while we wait: that cancels */

static void
ngx_http_chatbridge_read_handler(ngx_http_request_t *r)
{
    ngx_http_test_reading(r);
}


static void
ngx_http_chatbridge_write_handler(ngx_http_request_t *r)
{
    ngx_http_chatbridge_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chatbridge_module);

    if (ctx == NULL || ctx->finalized) {
        return;
    }

    if (r->connection->write->timedout) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, NGX_ETIMEDOUT,
                      "chatbridge: client timed out");
        r->connection->timedout = 1;
        ctx->outcome = NGX_HTTP_CHATBRIDGE_OUTCOME_CLIENT_CLOSED;
        ngx_http_chatbridge_finalize(ctx, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    ngx_http_chatbridge_process(ctx);
}


/*
 * The request ends in a way we did not drive (client closed, worker
 * shutdown): give the slots back so the cancel reaches the browser.
 */

static void
ngx_http_chatbridge_cleanup(void *data)
{
    ngx_http_chatbridge_ctx_t  *ctx = data;

    cb_worker_counters_t  *wc;

    if (ctx->finalized) {
        return;
    }

    ctx->finalized = 1;

    if (ctx->outcome == NGX_HTTP_CHATBRIDGE_OUTCOME_NONE) {
        ctx->outcome = ctx->request->connection->error
                       ? NGX_HTTP_CHATBRIDGE_OUTCOME_CLIENT_CLOSED
                       : NGX_HTTP_CHATBRIDGE_OUTCOME_ERROR;
    }

    ngx_http_chatbridge_release(ctx);

    if (ngx_http_chatbridge_link_segment(ctx->link)) {
        wc = ngx_http_chatbridge_link_counters(ctx->link);
        wc->cancelled++;
    }
}


static ngx_int_t
ngx_http_chatbridge_header(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;

    return NGX_OK;
}
