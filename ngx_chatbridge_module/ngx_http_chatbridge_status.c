
/*
 * Copyright (C) chatbridge authors
 *
 * chatbridge_status: what the bridge is doing, from the state the sidecar
 * publishes in the shared segment plus each linked worker's counters and
 * the segment's use.  The tail of the URI says in which form:
 *
 *     .../health    200 while a browser has room for one more request,
 *                   503 with Retry-After otherwise (for load balancers)
 *     .../metrics   Prometheus text
 *     anything else JSON, or the HTML status page when a browser asks for
 *                   HTML (Accept: text/html, or ?format=html)
 *
 * With chatbridge_admin_key in force for the location, everything but the
 * health check needs an admin key: as a Bearer token, or as the password of
 * HTTP Basic auth, which browsers prompt for on the HTML page.
 */


#include "ngx_http_chatbridge_module.h"


#define NGX_HTTP_CHATBRIDGE_STATUS_JSON     0
#define NGX_HTTP_CHATBRIDGE_STATUS_HTML     1
#define NGX_HTTP_CHATBRIDGE_STATUS_METRICS  2
#define NGX_HTTP_CHATBRIDGE_STATUS_HEALTH   3


typedef struct {
    ngx_http_request_t  *request;
    u_char              *pos;
    u_char              *end;
    u_char              *start;
    ngx_uint_t           failed;        /* unsigned  failed:1; */
} ngx_http_chatbridge_text_t;


extern ngx_str_t  ngx_http_chatbridge_status_page;


static ngx_uint_t ngx_http_chatbridge_status_form(ngx_http_request_t *r);
static json_t *ngx_http_chatbridge_status_doc(ngx_http_request_t *r);
static json_t *ngx_http_chatbridge_status_segment(void *base);
static json_t *ngx_http_chatbridge_status_workers(void *base);
static ngx_int_t ngx_http_chatbridge_status_json(ngx_http_request_t *r,
    json_t *doc);
static ngx_int_t ngx_http_chatbridge_status_health(ngx_http_request_t *r,
    json_t *doc);
static ngx_int_t ngx_http_chatbridge_status_metrics(ngx_http_request_t *r,
    json_t *doc);
static ngx_int_t ngx_http_chatbridge_status_html(ngx_http_request_t *r);
static ngx_int_t ngx_http_chatbridge_status_send(ngx_http_request_t *r,
    ngx_uint_t status, char *type, u_char *data, size_t len);
static ngx_int_t ngx_http_chatbridge_status_header(ngx_http_request_t *r,
    char *key, char *value);
static void ngx_http_chatbridge_text(ngx_http_chatbridge_text_t *t,
    const char *fmt, ...);
static void ngx_http_chatbridge_label(ngx_http_chatbridge_text_t *t,
    const char *value);
static void ngx_http_chatbridge_metric(ngx_http_chatbridge_text_t *t,
    const char *name, const char *type, const char *help);
static json_int_t ngx_http_chatbridge_int(json_t *obj, const char *path);


static ngx_int_t
ngx_http_chatbridge_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_str_t                        name;
    ngx_uint_t                       form;
    json_t                          *doc;
    const char                      *error;
    ngx_http_chatbridge_loc_conf_t  *lcf;

    form = ngx_http_chatbridge_status_form(r);

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        if (ngx_http_chatbridge_status_header(r, "Allow", "GET, HEAD")
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_discard_request_body(r);

        return ngx_http_chatbridge_send_error(r, NGX_HTTP_NOT_ALLOWED,
                   "method_not_allowed", NULL, "Use GET.",
                   sizeof("Use GET.") - 1, 0);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

    if (form != NGX_HTTP_CHATBRIDGE_STATUS_HEALTH && lcf->admin_keys) {

        error = NULL;
        rc = ngx_http_chatbridge_authorize(r, lcf->admin_keys, &name, &error);

        if (rc != NGX_OK) {
            return ngx_http_chatbridge_unauthorized(r,
                       (form == NGX_HTTP_CHATBRIDGE_STATUS_HTML)
                       ? "Basic realm=\"chatbridge status\", charset=\"UTF-8\""
                       : "Bearer",
                       "invalid_admin_key", error);
        }
    }

    if (form == NGX_HTTP_CHATBRIDGE_STATUS_HTML) {
        return ngx_http_chatbridge_status_html(r);
    }

    doc = ngx_http_chatbridge_status_doc(r);
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    switch (form) {

    case NGX_HTTP_CHATBRIDGE_STATUS_HEALTH:
        rc = ngx_http_chatbridge_status_health(r, doc);
        break;

    case NGX_HTTP_CHATBRIDGE_STATUS_METRICS:
        rc = ngx_http_chatbridge_status_metrics(r, doc);
        break;

    default:
        rc = ngx_http_chatbridge_status_json(r, doc);
    }

    json_decref(doc);

    return rc;
}


static ngx_uint_t
ngx_http_chatbridge_status_form(ngx_http_request_t *r)
{
    ngx_str_t         uri, format;
    ngx_table_elt_t  *h;

    uri = r->uri;

    while (uri.len > 1 && uri.data[uri.len - 1] == '/') {
        uri.len--;
    }

#define ngx_http_chatbridge_tail(s)                                          \
    (uri.len >= sizeof(s) - 1                                                \
     && ngx_strncmp(uri.data + uri.len - (sizeof(s) - 1), s, sizeof(s) - 1)  \
        == 0)

    if (ngx_http_chatbridge_tail("/health")) {
        return NGX_HTTP_CHATBRIDGE_STATUS_HEALTH;
    }

    if (ngx_http_chatbridge_tail("/metrics")) {
        return NGX_HTTP_CHATBRIDGE_STATUS_METRICS;
    }

#undef ngx_http_chatbridge_tail

    if (ngx_http_arg(r, (u_char *) "format", 6, &format) == NGX_OK) {
        if (format.len == 4 && ngx_strncmp(format.data, "html", 4) == 0) {
            return NGX_HTTP_CHATBRIDGE_STATUS_HTML;
        }

        return NGX_HTTP_CHATBRIDGE_STATUS_JSON;
    }

    /* a browser's address bar asks for text/html */

    h = ngx_http_chatbridge_find_header(&r->headers_in.headers, "Accept");

    if (h && ngx_strlcasestrn(h->value.data, h->value.data + h->value.len,
                              (u_char *) "text/html", 9 - 1)
             != NULL)
    {
        return NGX_HTTP_CHATBRIDGE_STATUS_HTML;
    }

    return NGX_HTTP_CHATBRIDGE_STATUS_JSON;
}


/* the sidecar's published state, with this worker's view added */

static json_t *
ngx_http_chatbridge_status_doc(ngx_http_request_t *r)
{
    void                             *base;
    json_t                           *doc;
    ngx_str_t                         text;
    json_error_t                      jerr;
    ngx_http_chatbridge_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_chatbridge_module);
    base = ngx_http_chatbridge_link_segment(mcf->link);

    doc = NULL;

    if (base
        && ngx_http_chatbridge_link_state_doc(mcf->link, r->pool, &text)
           == NGX_OK)
    {
        doc = json_loadb((const char *) text.data, text.len, 0, &jerr);
    }

    if (!json_is_object(doc)) {
        json_decref(doc);
        doc = json_object();
        if (doc == NULL) {
            return NULL;
        }
    }

    json_object_set_new(doc, "link", json_string(base ? "ready" : "down"));
    json_object_set_new(doc, "worker_pid", json_integer(ngx_pid));

    if (base) {
        json_object_set_new(doc, "shm",
                            ngx_http_chatbridge_status_segment(base));
        json_object_set_new(doc, "workers",
                            ngx_http_chatbridge_status_workers(base));
    }

    return doc;
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


static ngx_int_t
ngx_http_chatbridge_status_json(ngx_http_request_t *r, json_t *doc)
{
    char    *s;
    u_char  *p;
    size_t   len;

    s = json_dumps(doc, JSON_COMPACT);
    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(s);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        free(s);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, s, len);
    free(s);

    return ngx_http_chatbridge_status_send(r, NGX_HTTP_OK, "application/json",
                                           p, len);
}


/*
 * Room for one more request: a ready browser with fewer requests in flight
 * than its capacity, and a worker linked to the sidecar.
 */

static ngx_int_t
ngx_http_chatbridge_status_health(ngx_http_request_t *r, json_t *doc)
{
    u_char      *p;
    size_t       i;
    json_t      *b, *list;
    json_int_t   free, ready, room;
    ngx_uint_t   ok, status;
    const char  *state;

    list = json_object_get(doc, "browsers");
    free = 0;
    ready = 0;

    json_array_foreach(list, i, b) {
        state = json_string_value(json_object_get(b, "state"));

        if (state == NULL || ngx_strcmp(state, "ready") != 0) {
            continue;
        }

        ready++;
        room = ngx_http_chatbridge_int(b, "capacity")
               - ngx_http_chatbridge_int(b, "inflight");

        if (room > 0) {
            free += room;
        }
    }

    ok = (json_object_get(doc, "shm") != NULL && free > 0);
    status = ok ? NGX_HTTP_OK : NGX_HTTP_SERVICE_UNAVAILABLE;

    p = ngx_pnalloc(r->pool, 256);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    i = ngx_snprintf(p, 256,
                     "{\"status\":\"%s\",\"link\":\"%s\",\"browsers\":%uz,"
                     "\"ready\":%L,\"free\":%L,\"queue\":%L}",
                     ok ? "ok" : "unavailable",
                     json_object_get(doc, "shm") ? "ready" : "down",
                     json_array_size(list), (int64_t) ready, (int64_t) free,
                     (int64_t) ngx_http_chatbridge_int(doc, "queue.length"))
        - p;

    if (!ok
        && ngx_http_chatbridge_status_header(r, "Retry-After", "5") != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chatbridge_status_send(r, status, "application/json", p,
                                           i);
}


static ngx_int_t
ngx_http_chatbridge_status_metrics(ngx_http_request_t *r, json_t *doc)
{
    size_t                       i, k;
    json_t                      *list, *b, *w, *counts, *n;
    const char                  *key, *state;
    ngx_http_chatbridge_text_t   t;

    static const char  *totals[][2] = {
        { "dispatched", "Requests handed to a browser." },
        { "queued", "Requests that waited for a free browser." },
        { "retried", "Requests given to another browser after a failure." },
        { "rejected", "Requests refused by the sidecar (no browser, full "
                      "queue ...)." },
        { "ring_full", "Times a request's answer ring was full (the client "
                       "read slowly)." },
        { "bad_frames", "Frames from browsers that failed validation." },
        { "reclaimed_slots", "Request slots reclaimed after a process "
                             "died." },
        { "reclaimed_chunks", "Chunks reclaimed after a process died." }
    };

    static const char  *per[][4] = {
        { "chatbridge_browser_inflight", "gauge", "inflight",
          "Requests a browser is answering." },
        { "chatbridge_browser_capacity", "gauge", "capacity",
          "Requests a browser takes at once." },
        { "chatbridge_browser_served_total", "counter", "served",
          "Requests a browser answered." },
        { "chatbridge_browser_errors_total", "counter", "errors",
          "Requests a browser failed." }
    };

    static const char  *workers[][2] = {
        { "requests", "Requests this nginx worker sent to the bridge." },
        { "completed", "Requests that ended with an answer." },
        { "failed", "Requests that ended with an error." },
        { "cancelled", "Requests the client gave up." }
    };

    t.request = r;
    t.start = ngx_pnalloc(r->pool, 8192);
    t.pos = t.start;
    t.end = t.start ? t.start + 8192 : NULL;
    t.failed = (t.start == NULL);

    ngx_http_chatbridge_metric(&t, "chatbridge_up", "gauge",
                               "1 when this nginx worker is linked to the "
                               "sidecar.");
    ngx_http_chatbridge_text(&t, "chatbridge_up %d\n",
                             json_object_get(doc, "shm") ? 1 : 0);

    ngx_http_chatbridge_metric(&t, "chatbridge_sidecar_uptime_seconds",
                               "gauge", "Seconds since the sidecar started.");
    ngx_http_chatbridge_text(&t, "chatbridge_sidecar_uptime_seconds %L\n",
                             (int64_t) ngx_http_chatbridge_int(doc,
                                               "sidecar.uptime_ms") / 1000);

    /* browsers: counted by kind and state, then one series each */

    list = json_object_get(doc, "browsers");
    counts = json_object();

    json_array_foreach(list, i, b) {
        key = json_string_value(json_object_get(b, "kind"));
        state = json_string_value(json_object_get(b, "state"));

        if (counts && key && state) {
            n = json_object_get(counts, key);
            if (n == NULL) {
                n = json_object();
                json_object_set_new(counts, key, n);
            }

            json_object_set_new(n, state,
                json_integer(json_integer_value(json_object_get(n, state))
                             + 1));
        }
    }

    ngx_http_chatbridge_metric(&t, "chatbridge_browsers", "gauge",
                               "Connected browsers by kind and state.");

    json_object_foreach(counts, key, n) {
        json_object_foreach(n, state, w) {
            ngx_http_chatbridge_text(&t, "chatbridge_browsers{kind=\"");
            ngx_http_chatbridge_label(&t, key);
            ngx_http_chatbridge_text(&t, "\",state=\"");
            ngx_http_chatbridge_label(&t, state);
            ngx_http_chatbridge_text(&t, "\"} %L\n",
                                     (int64_t) json_integer_value(w));
        }
    }

    json_decref(counts);

    for (k = 0; k < sizeof(per) / sizeof(per[0]); k++) {
        ngx_http_chatbridge_metric(&t, per[k][0], per[k][1], per[k][3]);

        json_array_foreach(list, i, b) {
            ngx_http_chatbridge_text(&t, "%s{id=\"", per[k][0]);
            ngx_http_chatbridge_label(&t,
                json_string_value(json_object_get(b, "id")));
            ngx_http_chatbridge_text(&t, "\",kind=\"");
            ngx_http_chatbridge_label(&t,
                json_string_value(json_object_get(b, "kind")));
            ngx_http_chatbridge_text(&t, "\"} %L\n",
                (int64_t) ngx_http_chatbridge_int(b, per[k][2]));
        }
    }

    ngx_http_chatbridge_metric(&t, "chatbridge_requests_active", "gauge",
                               "Requests the sidecar is handling.");
    ngx_http_chatbridge_text(&t, "chatbridge_requests_active %L\n",
        (int64_t) ngx_http_chatbridge_int(doc, "requests.active"));

    ngx_http_chatbridge_metric(&t, "chatbridge_queue_length", "gauge",
                               "Requests waiting for a free browser.");
    ngx_http_chatbridge_text(&t, "chatbridge_queue_length %L\n",
        (int64_t) ngx_http_chatbridge_int(doc, "queue.length"));

    ngx_http_chatbridge_metric(&t, "chatbridge_queue_max", "gauge",
                               "The most requests that may wait.");
    ngx_http_chatbridge_text(&t, "chatbridge_queue_max %L\n",
        (int64_t) ngx_http_chatbridge_int(doc, "queue.max"));

    ngx_http_chatbridge_metric(&t, "chatbridge_queue_oldest_seconds", "gauge",
                               "How long the oldest waiting request has "
                               "waited.");
    ngx_http_chatbridge_text(&t, "chatbridge_queue_oldest_seconds %.3f\n",
        (double) ngx_http_chatbridge_int(doc, "queue.oldest_ms") / 1000);

    for (k = 0; k < sizeof(totals) / sizeof(totals[0]); k++) {
        ngx_http_chatbridge_text(&t, "# HELP chatbridge_%s_total %s\n"
                                 "# TYPE chatbridge_%s_total counter\n"
                                 "chatbridge_%s_total %L\n",
                                 totals[k][0], totals[k][1], totals[k][0],
                                 totals[k][0],
                                 (int64_t) json_integer_value(
                                     json_object_get(json_object_get(doc,
                                                         "totals"),
                                                     totals[k][0])));
    }

    ngx_http_chatbridge_metric(&t, "chatbridge_shm_bytes", "gauge",
                               "Size of the shared segment.");
    ngx_http_chatbridge_text(&t, "chatbridge_shm_bytes %L\n",
        (int64_t) ngx_http_chatbridge_int(doc, "shm.size"));

    ngx_http_chatbridge_metric(&t, "chatbridge_shm_slots", "gauge",
                               "Request slots of the shared segment.");
    ngx_http_chatbridge_text(&t, "chatbridge_shm_slots{use=\"in_use\"} %L\n"
                             "chatbridge_shm_slots{use=\"total\"} %L\n",
        (int64_t) ngx_http_chatbridge_int(doc, "shm.slots.in_use"),
        (int64_t) ngx_http_chatbridge_int(doc, "shm.slots.total"));

    ngx_http_chatbridge_metric(&t, "chatbridge_shm_chunks", "gauge",
                               "Chunks (large records) of the shared "
                               "segment.");
    ngx_http_chatbridge_text(&t, "chatbridge_shm_chunks{use=\"in_use\"} %L\n"
                             "chatbridge_shm_chunks{use=\"total\"} %L\n",
        (int64_t) ngx_http_chatbridge_int(doc, "shm.chunks.in_use"),
        (int64_t) ngx_http_chatbridge_int(doc, "shm.chunks.total"));

    list = json_object_get(doc, "workers");

    for (k = 0; k < sizeof(workers) / sizeof(workers[0]); k++) {
        ngx_http_chatbridge_text(&t, "# HELP chatbridge_worker_%s_total %s\n"
                                 "# TYPE chatbridge_worker_%s_total "
                                 "counter\n", workers[k][0], workers[k][1],
                                 workers[k][0]);

        json_array_foreach(list, i, w) {
            ngx_http_chatbridge_text(&t,
                "chatbridge_worker_%s_total{pid=\"%L\"} %L\n", workers[k][0],
                (int64_t) ngx_http_chatbridge_int(w, "pid"),
                (int64_t) ngx_http_chatbridge_int(w, workers[k][0]));
        }
    }

    if (t.failed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chatbridge_status_send(r, NGX_HTTP_OK,
                                           "text/plain; version=0.0.4; "
                                           "charset=utf-8",
                                           t.start, t.pos - t.start);
}


static ngx_int_t
ngx_http_chatbridge_status_html(ngx_http_request_t *r)
{
    if (ngx_http_chatbridge_status_header(r, "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'; "
            "frame-ancestors 'none'")
        != NGX_OK
        || ngx_http_chatbridge_status_header(r, "X-Content-Type-Options",
                                             "nosniff") != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chatbridge_status_send(r, NGX_HTTP_OK,
                                           "text/html; charset=utf-8",
                                           ngx_http_chatbridge_status_page.data,
                                           ngx_http_chatbridge_status_page.len);
}


static ngx_int_t
ngx_http_chatbridge_status_send(ngx_http_request_t *r, ngx_uint_t status,
    char *type, u_char *data, size_t len)
{
    ngx_int_t  rc;

    if (ngx_http_chatbridge_status_header(r, "Cache-Control", "no-store")
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_chatbridge_send_body(r, data, len);
}


static ngx_int_t
ngx_http_chatbridge_status_header(ngx_http_request_t *r, char *key,
    char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = (u_char *) value;
    h->value.len = ngx_strlen(value);

    return NGX_OK;
}


/* printf into a buffer that doubles when it fills */

static void
ngx_http_chatbridge_text(ngx_http_chatbridge_text_t *t, const char *fmt, ...)
{
    u_char   *p, *start;
    size_t    size;
    va_list   args;

    for ( ;; ) {
        if (t->failed) {
            return;
        }

        va_start(args, fmt);
        p = ngx_vslprintf(t->pos, t->end, fmt, args);
        va_end(args);

        if (p < t->end) {
            t->pos = p;
            return;
        }

        /* it may not have fit: grow and print again */

        size = 2 * (t->end - t->start);

        start = ngx_pnalloc(t->request->pool, size);
        if (start == NULL) {
            t->failed = 1;
            return;
        }

        p = ngx_cpymem(start, t->start, t->pos - t->start);
        t->start = start;
        t->pos = p;
        t->end = start + size;
    }
}


/* a label value: backslash, double quote and newline escaped */

static void
ngx_http_chatbridge_label(ngx_http_chatbridge_text_t *t, const char *value)
{
    const char  *p;

    for (p = value ? value : ""; *p; p++) {
        switch (*p) {

        case '\\':
            ngx_http_chatbridge_text(t, "\\\\");
            break;

        case '"':
            ngx_http_chatbridge_text(t, "\\\"");
            break;

        case '\n':
            ngx_http_chatbridge_text(t, "\\n");
            break;

        default:
            ngx_http_chatbridge_text(t, "%c", *p);
        }
    }
}


static void
ngx_http_chatbridge_metric(ngx_http_chatbridge_text_t *t, const char *name,
    const char *type, const char *help)
{
    ngx_http_chatbridge_text(t, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                             name, type);
}


/* the integer at a dotted path of objects; 0 when there is none */

static json_int_t
ngx_http_chatbridge_int(json_t *obj, const char *path)
{
    char         key[32];
    size_t       n;
    const char  *dot;

    while ((dot = ngx_strchr(path, '.')) != NULL) {
        n = ngx_min((size_t) (dot - path), sizeof(key) - 1);
        ngx_memcpy(key, path, n);
        key[n] = '\0';

        obj = json_object_get(obj, key);
        path = dot + 1;
    }

    return json_integer_value(json_object_get(obj, path));
}


char *
ngx_http_chatbridge_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_chatbridge_status_handler;

    ngx_http_chatbridge_needs_sidecar(cf);

    return NGX_CONF_OK;
}
