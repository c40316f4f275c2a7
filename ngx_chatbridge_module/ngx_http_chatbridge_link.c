
/*
 * Copyright (C) chatbridge authors
 *
 * A worker's link to chatbridge-sidecar: a SOCK_SEQPACKET unix socket that
 * carries a hello, the welcome with the segment's memfd, and one-byte
 * doorbells both ways.  Everything else travels through the segment.
 *
 * The socket is also how each side learns that the other died: EOF.  When
 * the sidecar goes, every request in flight fails at once and the segment is
 * dropped; the link reconnects and maps the new sidecar's segment.
 */


#include <sys/mman.h>
#include <sys/un.h>

#include "ngx_http_chatbridge_module.h"


#define NGX_HTTP_CHATBRIDGE_RETRY           500
#define NGX_HTTP_CHATBRIDGE_POLL            250


struct ngx_http_chatbridge_link_s {
    ngx_log_t                      *log;
    ngx_str_t                       path;
    ngx_connection_t               *conn;
    ngx_event_t                     retry;
    ngx_event_t                     poll;
    ngx_uint_t                      state;
    ngx_uint_t                      failures;

    void                           *base;
    size_t                          size;
    uint64_t                        generation;
    uint32_t                        worker;
    uint32_t                        owner;
    uint32_t                        nslots;
    ngx_http_chatbridge_part_t    **parts;      /* by slot */
    u_char                         *rec;        /* one record */

    ngx_queue_t                     active;
    ngx_queue_t                     waiting;
    ngx_msec_t                      attempted;
};


static void ngx_http_chatbridge_link_read_handler(ngx_event_t *rev);
static void ngx_http_chatbridge_link_dummy_handler(ngx_event_t *ev);
static void ngx_http_chatbridge_link_retry_handler(ngx_event_t *ev);
static void ngx_http_chatbridge_link_poll_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_chatbridge_link_welcome(
    ngx_http_chatbridge_link_t *link, cb_ctl_welcome_t *wm, int fd);
static void ngx_http_chatbridge_link_drain(ngx_http_chatbridge_link_t *link);
static void ngx_http_chatbridge_link_wake(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_part_t *part);
static void ngx_http_chatbridge_link_lose(ngx_http_chatbridge_link_t *link,
    const char *why);
static void ngx_http_chatbridge_link_push(ngx_http_chatbridge_link_t *link,
    uint64_t op);
static void ngx_http_chatbridge_link_unmap(ngx_http_chatbridge_link_t *link);


ngx_int_t
ngx_http_chatbridge_link_init(ngx_cycle_t *cycle,
    ngx_http_chatbridge_main_conf_t *mcf)
{
    ngx_http_chatbridge_link_t  *link;

    link = ngx_pcalloc(cycle->pool, sizeof(ngx_http_chatbridge_link_t));
    if (link == NULL) {
        return NGX_ERROR;
    }

    link->log = cycle->log;

    link->path.data = ngx_pnalloc(cycle->pool, mcf->sidecar.len + 1);
    if (link->path.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(link->path.data, mcf->sidecar.data, mcf->sidecar.len);
    link->path.data[mcf->sidecar.len] = '\0';
    link->path.len = mcf->sidecar.len;

    ngx_queue_init(&link->active);
    ngx_queue_init(&link->waiting);

    link->retry.handler = ngx_http_chatbridge_link_retry_handler;
    link->retry.data = link;
    link->retry.log = cycle->log;
    link->retry.cancelable = 1;

    link->poll.handler = ngx_http_chatbridge_link_poll_handler;
    link->poll.data = link;
    link->poll.log = cycle->log;
    link->poll.cancelable = 1;

    mcf->link = link;

    ngx_http_chatbridge_link_connect(link);

    return NGX_OK;
}


void
ngx_http_chatbridge_link_exit(ngx_http_chatbridge_link_t *link)
{
    if (link->retry.timer_set) {
        ngx_del_timer(&link->retry);
    }

    if (link->poll.timer_set) {
        ngx_del_timer(&link->poll);
    }

    if (link->conn) {
        ngx_close_connection(link->conn);
        link->conn = NULL;
    }

    ngx_http_chatbridge_link_unmap(link);
}


ngx_uint_t
ngx_http_chatbridge_link_state(ngx_http_chatbridge_link_t *link)
{
    return link ? link->state : NGX_HTTP_CHATBRIDGE_LINK_DOWN;
}


void
ngx_http_chatbridge_link_connect(ngx_http_chatbridge_link_t *link)
{
    int                  fd;
    ngx_err_t            err;
    ngx_uint_t           level;
    ngx_connection_t    *c;
    cb_ctl_hello_t       hello;
    struct sockaddr_un   sun;

    if (link->state != NGX_HTTP_CHATBRIDGE_LINK_DOWN || ngx_exiting
        || ngx_terminate || ngx_quit)
    {
        return;
    }

    /* a burst of requests makes one attempt, not one each */

    if (link->attempted && ngx_current_msec - link->attempted < 100) {
        return;
    }

    link->attempted = ngx_current_msec;

    fd = socket(AF_UNIX, SOCK_SEQPACKET|SOCK_NONBLOCK|SOCK_CLOEXEC, 0);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ALERT, link->log, ngx_socket_errno,
                      "chatbridge: socket() failed");
        goto retry;
    }

    ngx_memzero(&sun, sizeof(struct sockaddr_un));
    sun.sun_family = AF_UNIX;
    ngx_memcpy(sun.sun_path, link->path.data, link->path.len);

    if (connect(fd, (struct sockaddr *) &sun, sizeof(struct sockaddr_un))
        == -1)
    {
        err = ngx_socket_errno;

        /* say it once, then quietly keep trying */

        level = link->failures++ ? NGX_LOG_INFO : NGX_LOG_WARN;

        ngx_log_error(level, link->log, err,
                      "chatbridge: cannot reach the sidecar at \"%V\"",
                      &link->path);
        close(fd);
        goto retry;
    }

    c = ngx_get_connection(fd, link->log);
    if (c == NULL) {
        close(fd);
        goto retry;
    }

    c->data = link;
    c->read->handler = ngx_http_chatbridge_link_read_handler;
    c->write->handler = ngx_http_chatbridge_link_dummy_handler;
    c->read->log = link->log;
    c->write->log = link->log;

    link->conn = c;
    link->state = NGX_HTTP_CHATBRIDGE_LINK_HELLO;

    hello.type = CB_CTL_HELLO;
    hello.abi_version = CB_SHM_ABI_VERSION;
    hello.pid = (uint32_t) ngx_pid;
    hello.reserved = 0;

    if (send(fd, &hello, sizeof(cb_ctl_hello_t), MSG_DONTWAIT|MSG_NOSIGNAL)
        != (ssize_t) sizeof(cb_ctl_hello_t))
    {
        ngx_http_chatbridge_link_lose(link, "hello not sent");
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_chatbridge_link_lose(link, "read event not added");
        return;
    }

    return;

retry:

    if (!link->retry.timer_set && !ngx_exiting) {
        ngx_add_timer(&link->retry, NGX_HTTP_CHATBRIDGE_RETRY);
    }
}


/* a request that waits for the link to come up */

void
ngx_http_chatbridge_link_wait(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_ctx_t *ctx)
{
    ngx_queue_insert_tail(&link->waiting, &ctx->queue);
}


/* a request with slots in the segment */

void
ngx_http_chatbridge_link_track(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_ctx_t *ctx)
{
    ngx_queue_insert_tail(&link->active, &ctx->queue);
}


/*
 * Publish a part's task in a fresh slot.  NGX_DECLINED: no link; NGX_BUSY:
 * no slot or no room for the request in the segment.
 */

ngx_int_t
ngx_http_chatbridge_link_submit(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_part_t *part, ngx_uint_t kind)
{
    size_t                      lens[2];
    uint32_t                    slot, first;
    const void                 *data[2];
    cb_shm_slot_t              *s;
    cb_task_meta_t              meta;
    cb_shm_header_t            *h;
    ngx_http_chatbridge_ctx_t  *ctx;

    if (link->state != NGX_HTTP_CHATBRIDGE_LINK_READY) {
        return NGX_DECLINED;
    }

    h = cb_shm_header(link->base);
    ctx = part->ctx;

    if (part->task_len + sizeof(cb_task_meta_t)
        > (uint64_t) h->nchunks * h->chunk_size / 2)
    {
        return NGX_BUSY;
    }

    if (cb_slot_claim(link->base, link->owner, &slot) != CB_OK) {
        return NGX_BUSY;
    }

    ngx_memzero(&meta, sizeof(cb_task_meta_t));
    meta.meta_size = sizeof(cb_task_meta_t);
    meta.json_len = (uint32_t) part->task_len;
    meta.kind = (uint8_t) kind;
    meta.model_len = (uint8_t) ngx_min(ctx->model.len, CB_MODEL_LEN);
    ngx_memcpy(meta.model, ctx->model.data, meta.model_len);
    ngx_memcpy(meta.request_id, part->id.data,
               ngx_min(part->id.len, CB_REQUEST_ID_LEN));

    data[0] = &meta;
    lens[0] = sizeof(cb_task_meta_t);
    data[1] = part->task;
    lens[1] = part->task_len;

    if (cb_chunks_write(link->base, link->owner, data, lens, 2, &first)
        != CB_OK)
    {
        cb_slot_release(link->base, slot);
        return NGX_BUSY;
    }

    s = cb_shm_slot(link->base, slot);
    s->req_chunk = first;
    s->req_len = (uint32_t) (lens[0] + lens[1]);
    s->submitted_ns = (uint64_t) ngx_current_msec * 1000000;

    part->slot = slot;
    part->gen = __atomic_load_n(&s->gen, __ATOMIC_RELAXED);
    part->held = 1;
    link->parts[slot] = part;

    (void) cb_slot_transition(s, CB_SLOT_WRITING, CB_SLOT_SUBMITTED);

    ngx_http_chatbridge_link_push(link,
                                  cb_op_make(CB_OP_SUBMIT, slot, part->gen));

    ngx_http_chatbridge_link_counters(link)->requests++;

    return NGX_OK;
}


/* the next record of a part; *data is valid until the next call */

ngx_int_t
ngx_http_chatbridge_link_read(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_part_t *part, cb_rec_header_t *hdr, u_char **data)
{
    int  rc;

    if (!part->held || link->base == NULL) {
        return NGX_DECLINED;
    }

    rc = cb_ring_read(link->base, part->slot, hdr, link->rec,
                      cb_shm_header(link->base)->ring_size);

    if (rc == CB_AGAIN) {
        return NGX_AGAIN;
    }

    if (rc != CB_OK) {
        ngx_log_error(NGX_LOG_ALERT, link->log, 0,
                      "chatbridge: corrupt record in slot %uD", part->slot);
        return NGX_ERROR;
    }

    *data = link->rec;
    ngx_http_chatbridge_link_counters(link)->records++;

    return NGX_OK;
}


/*
 * After reading: if the sidecar found this ring full and is holding records
 * back, tell it there is room now.
 */

void
ngx_http_chatbridge_link_drained(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_part_t *part)
{
    cb_shm_slot_t  *s;

    if (!part->held || link->base == NULL) {
        return;
    }

    s = cb_shm_slot(link->base, part->slot);

    __atomic_thread_fence(__ATOMIC_SEQ_CST);

    if (__atomic_exchange_n(&s->writer_waiting, 0, __ATOMIC_SEQ_CST)) {
        ngx_http_chatbridge_link_push(link,
                                      cb_op_make(CB_OP_CREDIT, part->slot,
                                                 part->gen));
    }
}


/*
 * The part no longer needs its slot: it has the final record, or the client
 * went away.  Whoever's CAS fails frees the slot; see cb_shm.h.
 */

void
ngx_http_chatbridge_link_giveup(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_part_t *part)
{
    uint32_t        state;
    cb_shm_slot_t  *s;

    if (!part->held) {
        return;
    }

    part->held = 0;

    if (link->base == NULL || link->parts[part->slot] != part) {
        return;
    }

    link->parts[part->slot] = NULL;

    s = cb_shm_slot(link->base, part->slot);

    if (cb_slot_transition(s, CB_SLOT_ACTIVE, CB_SLOT_CANCELLED)
        || cb_slot_transition(s, CB_SLOT_SUBMITTED, CB_SLOT_CANCELLED))
    {
        ngx_http_chatbridge_link_push(link,
                                      cb_op_make(CB_OP_CANCEL, part->slot,
                                                 part->gen));
        return;
    }

    state = cb_slot_state(s);

    if (state == CB_SLOT_DONE) {
        cb_slot_release(link->base, part->slot);
        return;
    }

    ngx_log_error(NGX_LOG_ALERT, link->log, 0,
                  "chatbridge: slot %uD in state %s at give-up",
                  part->slot, cb_slot_state_name(state));
}


void *
ngx_http_chatbridge_link_segment(ngx_http_chatbridge_link_t *link)
{
    return link && link->state == NGX_HTTP_CHATBRIDGE_LINK_READY
           ? link->base : NULL;
}


cb_worker_counters_t *
ngx_http_chatbridge_link_counters(ngx_http_chatbridge_link_t *link)
{
    return &cb_shm_worker(link->base, link->worker)->counters;
}


/* a copy of the sidecar's published state: browsers, models, queue */

ngx_int_t
ngx_http_chatbridge_link_state_doc(ngx_http_chatbridge_link_t *link,
    ngx_pool_t *pool, ngx_str_t *doc)
{
    uint32_t          len, version, size;
    cb_shm_header_t  *h;

    if (ngx_http_chatbridge_link_segment(link) == NULL) {
        return NGX_DECLINED;
    }

    h = cb_shm_header(link->base);
    size = h->state_size;

    doc->data = ngx_pnalloc(pool, size);
    if (doc->data == NULL) {
        return NGX_ERROR;
    }

    if (cb_state_read(link->base, (char *) doc->data, size, &len, &version)
        != CB_OK)
    {
        return NGX_DECLINED;
    }

    doc->len = len;

    return len ? NGX_OK : NGX_DECLINED;
}


static void
ngx_http_chatbridge_link_read_handler(ngx_event_t *rev)
{
    int                          fd, rfd;
    ssize_t                      n;
    ngx_err_t                    err;
    ngx_uint_t                   doorbell;
    struct iovec                 iov;
    struct msghdr                msg;
    struct cmsghdr              *cmsg;
    ngx_connection_t            *c;
    ngx_http_chatbridge_link_t  *link;

    union {
        cb_ctl_welcome_t         welcome;
        uint32_t                 type;
        u_char                   raw[64];
    } buf;

    union {
        struct cmsghdr           cm;
        char                     space[CMSG_SPACE(sizeof(int))];
    } cmsgbuf;

    c = rev->data;
    link = c->data;
    fd = c->fd;
    doorbell = 0;

    for ( ;; ) {
        iov.iov_base = &buf;
        iov.iov_len = sizeof(buf);

        ngx_memzero(&msg, sizeof(struct msghdr));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = &cmsgbuf;
        msg.msg_controllen = sizeof(cmsgbuf);

        n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);

        if (n == -1) {
            err = ngx_socket_errno;

            if (err == NGX_EAGAIN) {
                break;
            }

            if (err == NGX_EINTR) {
                continue;
            }

            ngx_http_chatbridge_link_lose(link, "control socket error");
            return;
        }

        if (n == 0) {
            ngx_http_chatbridge_link_lose(link, "the sidecar closed the link");
            return;
        }

        rfd = -1;

        for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg))
        {
            if (cmsg->cmsg_level == SOL_SOCKET
                && cmsg->cmsg_type == SCM_RIGHTS
                && cmsg->cmsg_len == CMSG_LEN(sizeof(int)))
            {
                ngx_memcpy(&rfd, CMSG_DATA(cmsg), sizeof(int));
            }
        }

        if (n == 1) {
            doorbell = 1;

        } else if (n == sizeof(cb_ctl_welcome_t)
                   && buf.type == CB_CTL_WELCOME
                   && link->state == NGX_HTTP_CHATBRIDGE_LINK_HELLO
                   && rfd != -1)
        {
            if (ngx_http_chatbridge_link_welcome(link, &buf.welcome, rfd)
                != NGX_OK)
            {
                ngx_http_chatbridge_link_lose(link, "bad welcome");
                return;
            }

            rfd = -1;   /* mapped and closed */
            doorbell = 1;

        } else if (n >= 4 && buf.type == CB_CTL_REFUSED) {
            ngx_log_error(NGX_LOG_ERR, link->log, 0,
                          "chatbridge: the sidecar refused this worker "
                          "(no free worker entry, or an ABI mismatch)");
            if (rfd != -1) {
                close(rfd);
            }

            ngx_http_chatbridge_link_lose(link, "refused");
            return;

        } else {
            ngx_log_error(NGX_LOG_ALERT, link->log, 0,
                          "chatbridge: unexpected %z byte control message",
                          n);
        }

        if (rfd != -1) {
            close(rfd);
        }
    }

    if (doorbell && link->state == NGX_HTTP_CHATBRIDGE_LINK_READY) {
        ngx_http_chatbridge_link_counters(link)->doorbells_received++;
        ngx_http_chatbridge_link_drain(link);
    }
}


static void
ngx_http_chatbridge_link_dummy_handler(ngx_event_t *ev)
{
}


static void
ngx_http_chatbridge_link_retry_handler(ngx_event_t *ev)
{
    ngx_http_chatbridge_link_connect(ev->data);
}


/* the safety net: a lost doorbell costs a quarter second, never a hang */

static void
ngx_http_chatbridge_link_poll_handler(ngx_event_t *ev)
{
    ngx_http_chatbridge_link_t  *link;

    link = ev->data;

    if (link->state != NGX_HTTP_CHATBRIDGE_LINK_READY) {
        return;
    }

    ngx_http_chatbridge_link_drain(link);

    if (!ngx_exiting || !ngx_queue_empty(&link->active)) {
        ngx_add_timer(&link->poll, NGX_HTTP_CHATBRIDGE_POLL);
    }
}


static ngx_int_t
ngx_http_chatbridge_link_welcome(ngx_http_chatbridge_link_t *link,
    cb_ctl_welcome_t *wm, int fd)
{
    void             *base;
    ngx_uint_t        level;
    ngx_queue_t      *q;
    const char       *err;
    struct stat       st;
    cb_shm_header_t  *h;

    if (wm->abi_version != CB_SHM_ABI_VERSION) {
        ngx_log_error(NGX_LOG_EMERG, link->log, 0,
                      "chatbridge: the sidecar speaks ABI %uD, this module "
                      "ABI %d: rebuild one of them", wm->abi_version,
                      CB_SHM_ABI_VERSION);
        close(fd);
        return NGX_ERROR;
    }

    if (fstat(fd, &st) == -1 || (uint64_t) st.st_size < wm->size
        || wm->size < sizeof(cb_shm_header_t))
    {
        ngx_log_error(NGX_LOG_ALERT, link->log, ngx_errno,
                      "chatbridge: the segment is smaller than announced");
        close(fd);
        return NGX_ERROR;
    }

    base = mmap(NULL, wm->size, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);

    if (base == MAP_FAILED) {
        ngx_log_error(NGX_LOG_ALERT, link->log, ngx_errno,
                      "chatbridge: mmap() of the segment failed");
        return NGX_ERROR;
    }

    if (cb_shm_validate(base, wm->size, wm->generation, &err) != CB_OK) {
        ngx_log_error(NGX_LOG_EMERG, link->log, 0,
                      "chatbridge: unusable segment: %s", err);
        munmap(base, wm->size);
        return NGX_ERROR;
    }

    h = cb_shm_header(base);

    if (wm->worker >= h->max_workers
        || cb_shm_worker(base, wm->worker)->pid != (uint32_t) ngx_pid)
    {
        ngx_log_error(NGX_LOG_ALERT, link->log, 0,
                      "chatbridge: the welcome names a worker entry that "
                      "is not ours");
        munmap(base, wm->size);
        return NGX_ERROR;
    }

    link->parts = ngx_calloc(h->nslots * sizeof(ngx_http_chatbridge_part_t *),
                             link->log);
    link->rec = ngx_alloc(h->ring_size, link->log);

    if (link->parts == NULL || link->rec == NULL) {
        munmap(base, wm->size);
        ngx_free(link->parts);
        ngx_free(link->rec);
        link->parts = NULL;
        link->rec = NULL;
        return NGX_ERROR;
    }

    link->base = base;
    link->size = wm->size;
    link->generation = wm->generation;
    link->worker = wm->worker;
    link->owner = wm->worker + 1;
    link->nslots = h->nslots;
    link->state = NGX_HTTP_CHATBRIDGE_LINK_READY;

    level = link->failures ? NGX_LOG_NOTICE : NGX_LOG_INFO;

    ngx_log_error(level, link->log, 0,
                  "chatbridge: linked to the sidecar (pid %uD, worker "
                  "entry %uD, %uz bytes)", h->sidecar_pid, wm->worker,
                  wm->size);

    link->failures = 0;

    ngx_add_timer(&link->poll, NGX_HTTP_CHATBRIDGE_POLL);

    /* requests that waited for the link go now */

    while (!ngx_queue_empty(&link->waiting)) {
        q = ngx_queue_head(&link->waiting);
        ngx_queue_remove(q);
        ngx_http_chatbridge_link_ready(
            ngx_queue_data(q, ngx_http_chatbridge_ctx_t, queue));
    }

    return NGX_OK;
}


static void
ngx_http_chatbridge_link_drain(ngx_http_chatbridge_link_t *link)
{
    uint32_t                     slot, gen;
    uint64_t                     v;
    ngx_queue_t                 *q, *next;
    cb_shm_worker_t             *w;
    ngx_http_chatbridge_ctx_t   *ctx;
    ngx_http_chatbridge_part_t  *part;

    w = cb_shm_worker(link->base, link->worker);

    cb_queue_notified(&w->to_worker);

    while (cb_queue_pop(link->base, &w->to_worker, &v) == CB_OK) {

        if (link->state != NGX_HTTP_CHATBRIDGE_LINK_READY) {
            return;
        }

        slot = (uint32_t) (v & 0xffffffff);
        gen = (uint32_t) (v >> 32);

        if (slot >= link->nslots) {
            continue;
        }

        part = link->parts[slot];

        if (part && part->gen == gen) {
            ngx_http_chatbridge_link_wake(link, part);
        }
    }

    /* entries that did not fit: look at every request in flight */

    if (__atomic_exchange_n(&w->to_worker.overflow, 0, __ATOMIC_ACQ_REL)) {

        for (q = ngx_queue_head(&link->active);
             q != ngx_queue_sentinel(&link->active);
             q = next)
        {
            next = ngx_queue_next(q);
            ctx = ngx_queue_data(q, ngx_http_chatbridge_ctx_t, queue);

            if (ctx->nparts && ctx->parts[0].held) {
                ngx_http_chatbridge_link_wake(link, &ctx->parts[0]);
            }

            if (link->state != NGX_HTTP_CHATBRIDGE_LINK_READY) {
                return;
            }
        }
    }
}


static void
ngx_http_chatbridge_link_wake(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_part_t *part)
{
    ngx_connection_t  *c;
    cb_shm_slot_t     *s;

    /* clear "queued" before reading, so later records queue it again */

    s = cb_shm_slot(link->base, part->slot);
    __atomic_store_n(&s->ready, 0, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);

    c = part->ctx->request->connection;

    ngx_http_chatbridge_wake(part);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_chatbridge_link_lose(ngx_http_chatbridge_link_t *link,
    const char *why)
{
    ngx_uint_t                   i;
    ngx_queue_t                 *q;
    ngx_connection_t            *c;
    ngx_http_chatbridge_ctx_t   *ctx;

    if (link->state == NGX_HTTP_CHATBRIDGE_LINK_READY) {
        ngx_log_error(NGX_LOG_ERR, link->log, 0,
                      "chatbridge: lost the sidecar (%s); failing %s "
                      "requests in flight", why,
                      ngx_queue_empty(&link->active) ? "no" : "the");
    }

    link->state = NGX_HTTP_CHATBRIDGE_LINK_DOWN;

    if (link->conn) {
        ngx_close_connection(link->conn);
        link->conn = NULL;
    }

    if (link->poll.timer_set) {
        ngx_del_timer(&link->poll);
    }

    /* the segment dies with the sidecar: fail what was in it */

    while (!ngx_queue_empty(&link->active)) {
        q = ngx_queue_head(&link->active);
        ngx_queue_remove(q);
        ngx_queue_init(q);

        ctx = ngx_queue_data(q, ngx_http_chatbridge_ctx_t, queue);

        for (i = 0; i < ctx->nparts; i++) {
            if (ctx->parts[i].held) {
                link->parts[ctx->parts[i].slot] = NULL;
                ctx->parts[i].held = 0;
            }
        }

        c = ctx->request->connection;
        ngx_http_chatbridge_link_lost(ctx);
        ngx_http_run_posted_requests(c);
    }

    ngx_http_chatbridge_link_unmap(link);

    if (!link->retry.timer_set && !ngx_exiting) {
        ngx_add_timer(&link->retry, NGX_HTTP_CHATBRIDGE_RETRY);
    }
}


static void
ngx_http_chatbridge_link_push(ngx_http_chatbridge_link_t *link, uint64_t op)
{
    u_char            bell;
    cb_shm_worker_t  *w;

    w = cb_shm_worker(link->base, link->worker);

    /* a full queue sets its overflow flag: the sidecar then scans slots */

    (void) cb_queue_push(link->base, &w->to_sidecar, op);

    if (!cb_queue_notify(&w->to_sidecar)) {
        return;
    }

    bell = 'D';

    if (send(link->conn->fd, &bell, 1, MSG_DONTWAIT|MSG_NOSIGNAL) == 1) {
        w->counters.doorbells_sent++;
    }

    /* on EAGAIN the sidecar's own poll finds the work */
}


static void
ngx_http_chatbridge_link_unmap(ngx_http_chatbridge_link_t *link)
{
    if (link->base) {
        munmap(link->base, link->size);
        link->base = NULL;
    }

    ngx_free(link->parts);
    ngx_free(link->rec);
    link->parts = NULL;
    link->rec = NULL;

    if (link->state == NGX_HTTP_CHATBRIDGE_LINK_READY) {
        link->state = NGX_HTTP_CHATBRIDGE_LINK_DOWN;
    }
}
