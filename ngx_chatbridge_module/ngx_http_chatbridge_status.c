
/*
 * Copyright (C) chatbridge authors
 *
 * GET /chatbridge/status (chatbridge_status): the browsers, the queue and
 * the totals as the sidecar publishes them, each linked worker's counters,
 * and how much of the shared segment is in use.
 */


#include "ngx_http_chatbridge_module.h"


static json_t *ngx_http_chatbridge_status_segment(void *base);
static json_t *ngx_http_chatbridge_status_workers(void *base);


static ngx_int_t
ngx_http_chatbridge_status_handler(ngx_http_request_t *r)
{
    char                             *s;
    u_char                           *json;
    size_t                            len;
    void                             *base;
    json_t                           *doc, *state;
    ngx_int_t                         rc;
    ngx_str_t                         text;
    json_error_t                      jerr;
    ngx_http_chatbridge_main_conf_t  *mcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_chatbridge_module);
    base = ngx_http_chatbridge_link_segment(mcf->link);

    state = NULL;

    if (ngx_http_chatbridge_link_state_doc(mcf->link, r->pool, &text)
        == NGX_OK)
    {
        state = json_loadb((const char *) text.data, text.len, 0, &jerr);
    }

    if (!json_is_object(state)) {
        json_decref(state);
        state = json_object();
    }

    doc = state;

    json_object_set_new(doc, "link",
                        json_string(base ? "ready" : "down"));
    json_object_set_new(doc, "worker_pid", json_integer(ngx_pid));

    if (base) {
        json_object_set_new(doc, "shm",
                            ngx_http_chatbridge_status_segment(base));
        json_object_set_new(doc, "workers",
                            ngx_http_chatbridge_status_workers(base));
    }

    s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);

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


static json_t *
ngx_http_chatbridge_status_segment(void *base)
{
    uint32_t          i, slots, chunks;
    cb_shm_header_t  *h;

    h = cb_shm_header(base);

    slots = 0;

    for (i = 0; i < h->nslots; i++) {
        slots += __atomic_load_n(&cb_shm_slot(base, i)->owner,
                                 __ATOMIC_RELAXED) != 0;
    }

    chunks = cb_chunks_in_use(base);

    return json_pack("{s:I, s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I}}",
                     "size", (json_int_t) h->total_size,
                     "slots", "total", (json_int_t) h->nslots,
                     "in_use", (json_int_t) slots,
                     "ring_size", (json_int_t) h->ring_size,
                     "chunks", "total", (json_int_t) h->nchunks,
                     "in_use", (json_int_t) chunks,
                     "chunk_size", (json_int_t) h->chunk_size);
}


static json_t *
ngx_http_chatbridge_status_workers(void *base)
{
    uint32_t               i;
    json_t                *list;
    cb_shm_worker_t       *w;
    cb_shm_header_t       *h;
    cb_worker_counters_t  *c;

    h = cb_shm_header(base);
    list = json_array();

    for (i = 0; i < h->max_workers; i++) {
        w = cb_shm_worker(base, i);

        if (__atomic_load_n(&w->pid, __ATOMIC_ACQUIRE) == 0) {
            continue;
        }

        c = &w->counters;

        json_array_append_new(list,
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}",
                      "pid", (json_int_t) w->pid,
                      "requests", (json_int_t) c->requests,
                      "completed", (json_int_t) c->completed,
                      "failed", (json_int_t) c->failed,
                      "cancelled", (json_int_t) c->cancelled,
                      "records", (json_int_t) c->records));
    }

    return list;
}


char *
ngx_http_chatbridge_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_chatbridge_status_handler;

    return NGX_CONF_OK;
}
