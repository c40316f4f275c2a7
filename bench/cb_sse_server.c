
/*
 * Copyright (C) chatbridge authors
 *
 * cb_sse_server: the streaming baseline.  The most direct server that can
 * answer the benchmark's requests with the same bytes as chatbridge: one
 * thread, epoll, HTTP/1.1 keep-alive, and for a streamed request one write
 * per SSE event, streams served round robin (or paced by [[gap MS]] in the
 * request, as the bench browser is).
 *
 *   cb_sse_server --listen 127.0.0.1:PORT --json FILE --sse FILE
 *
 * --json is the body of a non-streamed answer; --sse is a streamed answer
 * captured from chatbridge: its first event (role), second (a content
 * chunk), next to last (finish) and last ([DONE]) are the templates of
 * every answer, with [[chunks N]] content chunks.
 */


#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "bench.h"


#define SS_MAX_REQUEST      (1024 * 1024)
#define SS_ACCEPT_PAUSE_NS  (100 * 1000000)  /* out of descriptors */


typedef struct ss_conn_s  ss_conn_t;

struct ss_conn_s {
    int             fd;
    bn_buf_t        in;
    bn_buf_t        out;            /* what the socket did not take */
    unsigned        stream:1;       /* an SSE answer is in progress */
    unsigned        queued:1;       /* in the run list */
    unsigned        closing:1;
    unsigned        blocked:1;      /* waits for the socket to drain */
    unsigned        left;           /* content chunks still to send */
    uint64_t        gap_ns;
    uint64_t        due;            /* of the next chunk, when paced */
    ss_conn_t      *next;           /* run list */
};


typedef struct {
    const char     *data;
    size_t          len;
} ss_str_t;


typedef struct {
    int             ep;
    int             lfd;
    ss_str_t        json;
    ss_str_t        role;
    ss_str_t        content;
    ss_str_t        finish;
    ss_str_t        done;
    char           *json_head;
    size_t          json_head_len;
    ss_conn_t      *run_head;
    ss_conn_t      *run_tail;
    bn_heap_t       timers;
    uint64_t        accept_resume;  /* accepting paused until then, or 0 */
} ss_t;


static volatile sig_atomic_t  ss_stop;

static const char  ss_sse_head[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/event-stream; charset=utf-8\r\n"
    "Transfer-Encoding: chunked\r\n"
    "Connection: keep-alive\r\n"
    "Cache-Control: no-cache\r\n"
    "X-Accel-Buffering: no\r\n\r\n";


static void ss_on_signal(int sig);
static char *ss_read_file(const char *path, size_t *len);
static void ss_templates(ss_t *ss, char *sse, size_t len);
static void ss_accept(ss_t *ss);
static void ss_accepting(ss_t *ss, int on);
static void ss_read(ss_t *ss, ss_conn_t *c);
static int ss_content_length(const char *p, size_t hl, size_t *cl);
static void ss_request(ss_t *ss, ss_conn_t *c, const char *body,
    size_t len);
static void ss_step(ss_t *ss, ss_conn_t *c);
static void ss_write(ss_t *ss, ss_conn_t *c, const struct iovec *iov,
    int n);
static void ss_flush(ss_t *ss, ss_conn_t *c);
static void ss_run(ss_t *ss, ss_conn_t *c);
static void ss_close(ss_t *ss, ss_conn_t *c);


int
main(int argc, char **argv)
{
    int                  i, n, timeout, hl;
    char                *sse;
    size_t               len;
    uint64_t             now;
    ss_t                 ss;
    ss_conn_t           *c, *list;
    bn_timer_t          *t;
    const char          *listen, *json, *ssef;
    struct epoll_event   ev, evs[512];

    listen = NULL;
    json = NULL;
    ssef = NULL;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0) {
            listen = argv[i + 1];
        } else if (strcmp(argv[i], "--json") == 0) {
            json = argv[i + 1];
        } else if (strcmp(argv[i], "--sse") == 0) {
            ssef = argv[i + 1];
        }
    }

    if (listen == NULL || json == NULL || ssef == NULL) {
        bn_die("usage: cb_sse_server --listen HOST:PORT --json FILE "
               "--sse FILE");
    }

    memset(&ss, 0, sizeof(ss_t));

    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, ss_on_signal);
    signal(SIGINT, ss_on_signal);
    (void) bn_raise_nofile();

    ss.json.data = ss_read_file(json, &ss.json.len);
    sse = ss_read_file(ssef, &len);
    ss_templates(&ss, sse, len);

    ss.json_head = malloc(256);
    if (ss.json_head == NULL) {
        bn_die("out of memory");
    }

    hl = snprintf(ss.json_head, 256,
                  "HTTP/1.1 200 OK\r\n"
                  "Content-Type: application/json\r\n"
                  "Content-Length: %zu\r\n"
                  "Connection: keep-alive\r\n\r\n",
                  ss.json.len);
    if (hl < 0 || hl >= 256) {
        bn_die("cb_sse_server: the JSON answer's header does not fit");
    }

    ss.json_head_len = (size_t) hl;

    ss.lfd = bn_listen(listen, 16384);
    if (ss.lfd == -1) {
        bn_die("cb_sse_server: cannot listen on %s: %s", listen,
               strerror(errno));
    }

    ss.ep = epoll_create1(EPOLL_CLOEXEC);

    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(ss.ep, EPOLL_CTL_ADD, ss.lfd, &ev);

    while (!ss_stop) {
        now = bn_now_ns();

        if (ss.accept_resume && now >= ss.accept_resume) {
            ss_accepting(&ss, 1);
        }

        /* paced streams whose time has come */

        while ((t = bn_heap_top(&ss.timers)) && t->when <= now) {
            c = t->data;
            bn_heap_pop(&ss.timers);
            ss_step(&ss, c);
        }

        timeout = 100;

        if (ss.run_head) {
            timeout = 0;

        } else if ((t = bn_heap_top(&ss.timers))
                   && t->when - now < 100000000)
        {
            timeout = (int) ((t->when - now + 999999) / 1000000);
        }

        n = epoll_wait(ss.ep, evs, 512, timeout);

        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;

            if (c == NULL) {
                ss_accept(&ss);
                continue;
            }

            if (evs[i].events & EPOLLOUT) {
                ss_flush(&ss, c);
            }

            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ss_read(&ss, c);
            }
        }

        /* one event per stream per turn, round robin */

        list = ss.run_head;
        ss.run_head = NULL;
        ss.run_tail = NULL;

        while (list) {
            c = list;
            list = c->next;
            c->next = NULL;
            c->queued = 0;
            ss_step(&ss, c);
        }
    }

    return 0;
}


static void
ss_on_signal(int sig)
{
    ss_stop = 1;
}


static char *
ss_read_file(const char *path, size_t *len)
{
    char  *p;

    p = bn_read_file(path, len);
    if (p == NULL) {
        bn_die("cb_sse_server: cannot read %s: %s", path, strerror(errno));
    }

    return p;
}


static void
ss_templates(ss_t *ss, char *sse, size_t len)
{
    char      *p, *end, *e;
    size_t     n;
    ss_str_t   ev[4096];

    n = 0;
    p = sse;
    end = sse + len;

    while (p < end && n < 4096) {
        e = strstr(p, "\n\n");
        if (e == NULL) {
            break;
        }

        ev[n].data = p;
        ev[n].len = e + 2 - p;
        n++;
        p = e + 2;
    }

    if (n < 4) {
        bn_die("cb_sse_server: the SSE file has fewer than 4 events");
    }

    ss->role = ev[0];
    ss->content = ev[1];
    ss->finish = ev[n - 2];
    ss->done = ev[n - 1];
}


static void
ss_accept(ss_t *ss)
{
    int                  fd, one;
    ss_conn_t           *c;
    struct epoll_event   ev;

    for ( ;; ) {
        fd = accept4(ss->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }

            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS
                || errno == ENOMEM)
            {
                /*
                 * the listener stays readable while the connection waits
                 * in the backlog: stop watching it for a while, or every
                 * turn of the loop would find it again and fail again
                 */
                ss_accepting(ss, 0);
            }

            return;
        }

        c = calloc(1, sizeof(ss_conn_t));
        if (c == NULL) {
            bn_die("out of memory");
        }

        c->fd = fd;

        one = 1;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.ptr = c;
        epoll_ctl(ss->ep, EPOLL_CTL_ADD, fd, &ev);
    }
}


static void
ss_accepting(ss_t *ss, int on)
{
    struct epoll_event  ev;

    ev.events = on ? EPOLLIN : 0;
    ev.data.ptr = NULL;

    if (epoll_ctl(ss->ep, EPOLL_CTL_MOD, ss->lfd, &ev) == -1) {
        bn_die("cb_sse_server: epoll_ctl: %s", strerror(errno));
    }

    ss->accept_resume = on ? 0 : bn_now_ns() + SS_ACCEPT_PAUSE_NS;

    if (!on) {
        fprintf(stderr, "cb_sse_server: accept: %s; pausing\n",
                strerror(errno));
    }
}


static void
ss_read(ss_t *ss, ss_conn_t *c)
{
    char     *h, *end;
    size_t    hl, cl;

    if (bn_recv_into(c->fd, &c->in, SS_MAX_REQUEST) != BN_AGAIN) {
        ss_close(ss, c);
        return;
    }

    /* whole requests only; one at a time (no pipelining here) */

    while (!c->stream && bn_buf_len(&c->in)) {
        bn_buf_reserve(&c->in, 1);
        c->in.data[c->in.last] = '\0';

        h = c->in.data + c->in.pos;
        end = strstr(h, "\r\n\r\n");
        if (end == NULL) {
            return;
        }

        hl = end + 4 - h;
        cl = 0;

        h = strcasestr(h, "\r\nContent-Length:");
        if (h && h < end && ss_content_length(h + 17, hl, &cl) != BN_OK) {
            fprintf(stderr, "cb_sse_server: a request with a bad or too "
                    "large Content-Length; closing its connection\n");
            ss_close(ss, c);
            return;
        }

        if (bn_buf_len(&c->in) < hl + cl) {
            return;
        }

        ss_request(ss, c, c->in.data + c->in.pos + hl, cl);
        bn_buf_consume(&c->in, hl + cl);

        if (c->closing) {
            ss_close(ss, c);
            return;
        }
    }

    /* an idle connection keeps no buffer */

    if (bn_buf_len(&c->in) == 0) {
        bn_buf_free(&c->in);
    }
}


/*
 * The value of a Content-Length header (p: after its colon) into *cl: digits
 * only, and at most what a request of SS_MAX_REQUEST with headers of hl
 * bytes has room for, so that hl + *cl neither wraps around nor asks for
 * more than bn_recv_into will ever hold
 */

static int
ss_content_length(const char *p, size_t hl, size_t *cl)
{
    size_t  v;

    while (*p == ' ' || *p == '\t') {
        p++;
    }

    if (*p < '0' || *p > '9') {
        return BN_ERROR;
    }

    for (v = 0; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (size_t) (*p - '0');

        if (v > SS_MAX_REQUEST) {
            return BN_ERROR;
        }
    }

    while (*p == ' ' || *p == '\t') {
        p++;
    }

    if (*p != '\r' || hl > SS_MAX_REQUEST || v > SS_MAX_REQUEST - hl) {
        return BN_ERROR;
    }

    *cl = v;

    return BN_OK;
}


static void
ss_request(ss_t *ss, ss_conn_t *c, const char *body, size_t len)
{
    char          hex[16];
    struct iovec  iov[6];

    if (memmem(body, len, "\"stream\":true", 13) == NULL) {
        iov[0].iov_base = ss->json_head;
        iov[0].iov_len = ss->json_head_len;
        iov[1].iov_base = (void *) ss->json.data;
        iov[1].iov_len = ss->json.len;
        ss_write(ss, c, iov, 2);
        return;
    }

    c->stream = 1;
    c->left = (unsigned) bn_directive(body, len, "chunks", 200);
    c->gap_ns = (uint64_t) bn_directive(body, len, "gap", 0) * 1000000;
    c->due = bn_now_ns();

    /* the header and the role event go at once, as chatbridge sends them */

    iov[0].iov_base = (void *) ss_sse_head;
    iov[0].iov_len = sizeof(ss_sse_head) - 1;
    iov[1].iov_base = hex;
    iov[1].iov_len = snprintf(hex, sizeof(hex), "%zx\r\n", ss->role.len);
    iov[2].iov_base = (void *) ss->role.data;
    iov[2].iov_len = ss->role.len;
    iov[3].iov_base = "\r\n";
    iov[3].iov_len = 2;

    ss_write(ss, c, iov, 4);

    ss_step(ss, c);
}


/* the next event of a stream: a content chunk, or the end */

static void
ss_step(ss_t *ss, ss_conn_t *c)
{
    int           n;
    char          hex[16];
    struct iovec  iov[6];

    if (c->fd == -1 || !c->stream) {
        return;
    }

    /* the client is slow: go on when the socket has taken the rest */

    if (bn_buf_len(&c->out)) {
        c->blocked = 1;
        return;
    }

    if (c->left) {
        c->left--;

        iov[0].iov_base = hex;
        iov[0].iov_len = snprintf(hex, sizeof(hex), "%zx\r\n",
                                  ss->content.len);
        iov[1].iov_base = (void *) ss->content.data;
        iov[1].iov_len = ss->content.len;
        iov[2].iov_base = "\r\n";
        iov[2].iov_len = 2;
        n = 3;

        ss_write(ss, c, iov, n);

        if (c->gap_ns && c->left) {
            c->due += c->gap_ns;
            bn_heap_push(&ss->timers, c->due, c);
        } else {
            ss_run(ss, c);
        }

        return;
    }

    iov[0].iov_base = hex;
    iov[0].iov_len = snprintf(hex, sizeof(hex), "%zx\r\n",
                              ss->finish.len + ss->done.len);
    iov[1].iov_base = (void *) ss->finish.data;
    iov[1].iov_len = ss->finish.len;
    iov[2].iov_base = (void *) ss->done.data;
    iov[2].iov_len = ss->done.len;
    iov[3].iov_base = "\r\n0\r\n\r\n";
    iov[3].iov_len = 7;

    c->stream = 0;
    ss_write(ss, c, iov, 4);

    /* a request may be waiting behind this answer */

    if (c->fd != -1 && bn_buf_len(&c->in)) {
        ss_read(ss, c);
    }
}


static void
ss_write(ss_t *ss, ss_conn_t *c, const struct iovec *iov, int n)
{
    int      i;
    size_t   total, off;
    ssize_t  sent;

    total = 0;
    for (i = 0; i < n; i++) {
        total += iov[i].iov_len;
    }

    sent = 0;

    if (bn_buf_len(&c->out) == 0) {
        sent = writev(c->fd, iov, n);

        if (sent == -1) {
            if (errno != EAGAIN) {
                c->closing = 1;
                return;
            }
            sent = 0;
        }
    }

    if ((size_t) sent == total) {
        return;
    }

    /* keep what the socket did not take */

    off = 0;

    for (i = 0; i < n; i++) {
        if ((size_t) sent < off + iov[i].iov_len) {
            if ((size_t) sent > off) {
                bn_buf_append(&c->out, (char *) iov[i].iov_base
                                       + (sent - off),
                              iov[i].iov_len - (sent - off));
            } else {
                bn_buf_append(&c->out, iov[i].iov_base, iov[i].iov_len);
            }
        }

        off += iov[i].iov_len;
    }
}


static void
ss_flush(ss_t *ss, ss_conn_t *c)
{
    ssize_t  n;

    while (bn_buf_len(&c->out)) {
        n = send(c->fd, c->out.data + c->out.pos, bn_buf_len(&c->out),
                 MSG_NOSIGNAL);

        if (n == -1) {
            if (errno != EAGAIN) {
                c->closing = 1;
            }
            return;
        }

        bn_buf_consume(&c->out, n);
    }

    if (c->blocked) {
        c->blocked = 0;
        ss_run(ss, c);
    }
}


/* the stream goes on next turn, unless the socket is full */

static void
ss_run(ss_t *ss, ss_conn_t *c)
{
    if (c->queued) {
        return;
    }

    c->queued = 1;
    c->next = NULL;

    if (ss->run_tail) {
        ss->run_tail->next = c;
    } else {
        ss->run_head = c;
    }

    ss->run_tail = c;
}


static void
ss_close(ss_t *ss, ss_conn_t *c)
{
    if (c->fd == -1) {
        return;
    }

    close(c->fd);
    c->fd = -1;
    c->stream = 0;
    bn_buf_free(&c->in);
    bn_buf_free(&c->out);

    /*
     * The run list or a timer may still point at it: it stays allocated
     * (a hundred bytes per connection, for the life of a bench run).
     */
}

