
/*
 * Copyright (C) chatbridge authors
 *
 * POST /v1/chat/completions and POST /v1/images/generations: read the body,
 * normalize it (cb_openai.c), build the browser tasks, and start waiting.
 */


#include "ngx_http_chatbridge_module.h"


static void ngx_http_chatbridge_chat_body(ngx_http_request_t *r);
static void ngx_http_chatbridge_images_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_chatbridge_check_length(ngx_http_request_t *r);
static void ngx_http_chatbridge_reject(ngx_http_request_t *r, cb_err_t *err);
static const char *ngx_http_chatbridge_kind_name(ngx_uint_t kind);


ngx_int_t
ngx_http_chatbridge_chat_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_chatbridge_check_length(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_chatbridge_chat_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


ngx_int_t
ngx_http_chatbridge_images_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_chatbridge_check_length(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_chatbridge_images_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_chatbridge_chat_body(ngx_http_request_t *r)
{
    int                              image;
    char                            *task;
    size_t                           len;
    json_t                          *arena;
    cb_err_t                         err;
    ngx_str_t                        body;
    cb_chat_t                        chat;
    ngx_int_t                        rc;
    cb_chat_opts_t                   opts;
    ngx_http_chatbridge_ctx_t       *ctx;
    ngx_http_chatbridge_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_chatbridge_module);

    if (ngx_http_chatbridge_read_body(r, &body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (body.len > lcf->max_body_size) {
        cb_err_set(&err, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                   "request_too_large", NULL,
                   "The request body is larger than %zu bytes.",
                   lcf->max_body_size);
        ngx_http_chatbridge_reject(r, &err);
        return;
    }

    ngx_memzero(&opts, sizeof(cb_chat_opts_t));
    opts.max_messages = lcf->max_messages;
    opts.max_text = lcf->max_text;
    opts.max_attachment = lcf->max_attachment;
    opts.max_attachments = lcf->max_attachments;
    opts.tavern = lcf->tavern ? 1 : 0;

    /* with LMArena sessions, bypass waits: image models do without it */
    opts.bypass = (lcf->bypass && lcf->arena == NULL) ? 1 : 0;

    if (cb_chat_parse(&chat, (const char *) body.data, body.len, &opts, &err)
        != 0)
    {
        cb_chat_free(&chat);
        ngx_http_chatbridge_reject(r, &err);
        return;
    }

    ctx->op = NGX_HTTP_CHATBRIDGE_CHAT;
    ctx->stream = chat.stream;
    ctx->include_usage = chat.include_usage;
    ctx->usage.prompt_tokens = chat.prompt_tokens;

    if (ngx_http_chatbridge_prepare(r, ctx, chat.model, chat.model_len, 1)
        != NGX_OK)
    {
        cb_chat_free(&chat);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    arena = NULL;

    if (lcf->arena) {
        rc = ngx_http_chatbridge_arena_session(r, &ctx->parts[0],
                                               chat.messages, lcf->bypass,
                                               &image, &arena, &err);
        if (rc != NGX_OK) {
            cb_chat_free(&chat);

            if (rc == NGX_DECLINED) {
                ngx_http_chatbridge_reject(r, &err);
                return;
            }

            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    task = cb_task_json((const char *) ctx->parts[0].id.data,
                        ngx_http_chatbridge_kind_name(lcf->kind), "chat",
                        chat.model, chat.model_len, chat.stream,
                        chat.messages, chat.params, arena, &len);

    json_decref(arena);
    cb_chat_free(&chat);

    if (task == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->parts[0].task = (u_char *) task;
    ctx->parts[0].task_len = len;

    if (ngx_http_chatbridge_start(r, ctx) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
}


static void
ngx_http_chatbridge_images_body(ngx_http_request_t *r)
{
    int                              image;
    char                            *task;
    size_t                           len;
    json_t                          *messages, *params, *arena;
    cb_err_t                         err;
    ngx_int_t                        rc;
    ngx_str_t                        body;
    ngx_uint_t                       i;
    cb_image_t                       img;
    ngx_http_chatbridge_ctx_t       *ctx;
    ngx_http_chatbridge_part_t      *part;
    ngx_http_chatbridge_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_chatbridge_module);

    if (ngx_http_chatbridge_read_body(r, &body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (cb_image_parse(&img, (const char *) body.data, body.len, &err) != 0) {
        cb_image_free(&img);
        ngx_http_chatbridge_reject(r, &err);
        return;
    }

    ctx->op = NGX_HTTP_CHATBRIDGE_IMAGES;

    if (ngx_http_chatbridge_prepare(r, ctx, img.model, img.model_len, img.n)
        != NGX_OK)
    {
        cb_image_free(&img);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    params = json_pack("{s:i, s:b}", "n", 1,
                       "b64_json", img.b64 ? 1 : 0);

    /* n tasks, each with its own session from the model's pool */

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];
        arena = NULL;

        messages = json_pack("[{s:s, s:s}]", "role", "user",
                             "content", img.prompt);
        if (messages == NULL) {
            break;
        }

        if (lcf->arena) {
            rc = ngx_http_chatbridge_arena_session(r, part, messages, 0,
                                                   &image, &arena, &err);
            if (rc != NGX_OK) {
                json_decref(messages);
                json_decref(params);
                cb_image_free(&img);

                for (i = 0; i < ctx->nparts; i++) {
                    free(ctx->parts[i].task);
                    ctx->parts[i].task = NULL;
                }

                if (rc == NGX_DECLINED) {
                    ngx_http_chatbridge_reject(r, &err);
                    return;
                }

                ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
                return;
            }
        }

        task = cb_task_json((const char *) part->id.data,
                            ngx_http_chatbridge_kind_name(lcf->kind), "image",
                            img.model, img.model_len, 0, messages, params,
                            arena, &len);

        json_decref(messages);
        json_decref(arena);

        if (task == NULL) {
            break;
        }

        part->task = (u_char *) task;
        part->task_len = len;
    }

    json_decref(params);
    cb_image_free(&img);

    if (i != ctx->nparts || ngx_http_chatbridge_start(r, ctx) != NGX_OK) {
        for (i = 0; i < ctx->nparts; i++) {
            free(ctx->parts[i].task);
            ctx->parts[i].task = NULL;
        }

        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
}


/* a declared length over the limit is refused before reading a byte */

static ngx_int_t
ngx_http_chatbridge_check_length(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_str_t                        msg;
    u_char                           buf[128];
    ngx_http_chatbridge_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

    if (r->headers_in.content_length_n <= (off_t) lcf->max_body_size) {
        return NGX_OK;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    msg.data = buf;
    msg.len = ngx_snprintf(buf, sizeof(buf),
                           "The request body is larger than %uz bytes.",
                           lcf->max_body_size) - buf;

    return ngx_http_chatbridge_send_error(r,
                                          NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                          "request_too_large", NULL,
                                          (const char *) msg.data, msg.len, 0);
}


/* the whole body in one piece; bodies over 1m come back from a temp file */

ngx_int_t
ngx_http_chatbridge_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    off_t         size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = (u_char *) "";

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        body->data = cl->buf->pos;
        body->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    size = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    p = ngx_pnalloc(r->pool, size + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);

            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }

            p += n;
            continue;
        }

        p = ngx_cpymem(p, b->pos, b->last - b->pos);
    }

    body->len = p - body->data;

    return NGX_OK;
}


/* the parts, the request id and the fixed head of every chunk */

ngx_int_t
ngx_http_chatbridge_prepare(ngx_http_request_t *r,
    ngx_http_chatbridge_ctx_t *ctx, const char *model, size_t model_len,
    ngx_uint_t nparts)
{
    u_char      *id;
    ngx_str_t   *rid;
    ngx_uint_t   i;

    rid = &ctx->request_id;     /* the handler took $request_id */

    ctx->model.data = ngx_pnalloc(r->pool, model_len);
    if (ctx->model.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->model.data, model, model_len);
    ctx->model.len = model_len;

    ctx->created = ngx_time();

    ctx->head = ngx_pnalloc(r->pool,
                            CB_CHUNK_HEAD_SIZE(rid->len + 9, model_len));
    if (ctx->head == NULL) {
        return NGX_ERROR;
    }

    id = ngx_pnalloc(r->pool, rid->len + 9);
    if (id == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(id, "chatcmpl-", 9), rid->data, rid->len);

    ctx->head_len = cb_chunk_head(ctx->head, id, rid->len + 9,
                                  (const cb_u8 *) model, model_len,
                                  (uint64_t) ctx->created,
                                  "chat.completion.chunk");

    ctx->parts = ngx_pcalloc(r->pool,
                             nparts * sizeof(ngx_http_chatbridge_part_t));
    if (ctx->parts == NULL) {
        return NGX_ERROR;
    }

    ctx->nparts = nparts;

    for (i = 0; i < nparts; i++) {
        ctx->parts[i].ctx = ctx;

        /* part ids: the request id, with ".<n>" for several parts */

        id = ngx_pnalloc(r->pool, CB_REQUEST_ID_LEN);
        if (id == NULL) {
            return NGX_ERROR;
        }

        if (nparts == 1) {
            ngx_memcpy(id, rid->data, rid->len);
            id[rid->len] = '\0';

        } else {
            *ngx_snprintf(id, CB_REQUEST_ID_LEN - 1, "%V.%ui", rid, i) = '\0';
        }

        ctx->parts[i].id.data = id;
        ctx->parts[i].id.len = ngx_strlen(id);
    }

    return NGX_OK;
}


static void
ngx_http_chatbridge_reject(ngx_http_request_t *r, cb_err_t *err)
{
    ngx_http_chatbridge_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chatbridge_module);
    ctx->outcome = NGX_HTTP_CHATBRIDGE_OUTCOME_REJECTED;

    ngx_http_finalize_request(r,
        ngx_http_chatbridge_send_error(r, err->status, err->code,
                                       err->param[0] ? err->param : NULL,
                                       err->message,
                                       ngx_strlen(err->message),
                                       err->retry_after));
}


static const char *
ngx_http_chatbridge_kind_name(ngx_uint_t kind)
{
    switch (kind) {
    case CB_KIND_ARENA:
        return "arena";
    case CB_KIND_TAVERN:
        return "tavern";
    default:
        return "any";
    }
}
