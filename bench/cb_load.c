
/*
 * Copyright (C) chatbridge authors
 *
 * cb_load: the benchmark's load generator.  One thread, epoll, non-blocking
 * sockets, HTTP/1.1 keep-alive; it parses Content-Length and chunked
 * bodies, and in SSE bodies finds each answer chunk ({"content":" ...) as
 * it arrives, so it can time the first token.
 *
 *   --mode json    closed loop: each connection sends the request again as
 *                  soon as the answer is complete; req/s and latency
 *   --mode sse     the same with streamed answers: time to first token,
 *                  chunks/s, total time
 *   --mode hold    one streamed request per connection, all held at once:
 *                  how many finish later than --hold-ms + --late-ms, and
 *                  memory per stream of the server processes
 *
 * It reads the servers' CPU time from /proc at the start and the end of the
 * measured window, and prints one line of key=value pairs.
 */


#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "bench.h"


#define LG_MAX_PIDS         64
#define LG_READ_SIZE        (256 * 1024)
#define LG_MAX_CONNECTING   512
#define LG_PATTERN          "{\"content\":\""
#define LG_PATTERN_LEN      (sizeof(LG_PATTERN) - 1)
#define LG_MAX_HEAD         (64 * 1024)     /* an answer's headers */
#define LG_BACKOFF_NS       (10 * 1000000)  /* after failures in a row: */
#define LG_BACKOFF_MAX_NS   (50 * 1000000)  /* 10, 20, 40, 50, 50 ... ms */

enum { LG_JSON, LG_SSE, LG_HOLD };

enum {
    LG_C_FREE = 0,
    LG_C_CONNECTING,
    LG_C_SENDING,
    LG_C_HEAD,
    LG_C_BODY,
    LG_C_CHUNK_SIZE,
    LG_C_CHUNK_DATA,
    LG_C_CHUNK_CRLF,
    LG_C_TRAILER,
    LG_C_DONE
};


typedef struct {
    int             fd;
    int             state;
    int             status;
    int             chunked;
    int             close;
    int             match;          /* bytes of LG_PATTERN matched */
    size_t          sent;
    int64_t         left;           /* of the body or of the chunk */
    uint64_t        t_start;
    uint64_t        t_first;
    uint32_t        chunks;
    uint32_t        requests;
    uint32_t        fails;          /* in a row, without an answer */
    uint64_t        retry;          /* when to open it again, or 0 */
    bn_buf_t        head;           /* headers, or a chunk-size line */
} lg_conn_t;


typedef struct {
    int             mode;
    const char     *connect;
    const char     *path;
    const char     *host;
    const char     *body_file;
    unsigned        conns;
    double          duration;
    double          warmup;
    uint64_t        hold_ns;
    uint64_t        late_ns;
    unsigned        ramp;
    unsigned        expect_chunks;
    double          timeout;
    pid_t           cpu_pids[LG_MAX_PIDS];
    size_t          ncpu_pids;
    pid_t           browser_pid;
    pid_t           mem_pids[LG_MAX_PIDS];      /* nginx, say */
    size_t          nmem_pids;
    pid_t           mem_pids2[LG_MAX_PIDS];     /* the sidecar */
    size_t          nmem_pids2;
    const char     *mem_file;                   /* the segment */

    char           *req;
    size_t          req_len;

    int             ep;
    lg_conn_t      *c;
    char           *rbuf;

    /* the run */
    uint64_t        t0;
    uint64_t        win_start;
    uint64_t        win_end;
    int             in_window;
    int             stopping;
    unsigned        opened;
    unsigned        connecting;
    unsigned        active;
    unsigned        waiting;        /* connections to open again later */

    /* results */
    uint64_t        requests;
    uint64_t        errors;
    uint64_t        short_answers;
    uint64_t        chunks;
    uint64_t        bytes;
    bn_samples_t    latency;
    bn_samples_t    ttft;
    uint64_t        cpu_start;
    uint64_t        cpu_end;
    uint64_t        browser_start;
    uint64_t        browser_end;
    uint64_t        self_start;
    uint64_t        self_end;
    uint64_t        t_cpu_start;
    uint64_t        t_cpu_end;
    uint64_t        busy_start;     /* the whole machine */
    uint64_t        busy_end;
    uint64_t        steal_start;
    uint64_t        steal_end;

    /* hold */
    uint64_t        held_done;
    uint64_t        held_late;
    uint64_t        held_failed;
    uint64_t        mem_before;
    uint64_t        mem_peak;
    uint64_t        mem_all_held;
    uint64_t        part_before[3];
    uint64_t        part_peak[3];       /* at the peak of the total */
    uint64_t        first_all;      /* when every stream had its 1st chunk */
    unsigned        with_first;
} lg_t;


static void lg_usage(void);
static void lg_options(lg_t *lg, int argc, char **argv);
static void lg_load_body(lg_t *lg);
static void lg_run(lg_t *lg);
static void lg_open(lg_t *lg, unsigned i);
static void lg_reopen(lg_t *lg, lg_conn_t *c);
static int lg_retry(lg_t *lg, uint64_t now);
static void lg_event(lg_t *lg, lg_conn_t *c, uint32_t events);
static void lg_send(lg_t *lg, lg_conn_t *c);
static void lg_read(lg_t *lg, lg_conn_t *c);
static int lg_input(lg_t *lg, lg_conn_t *c, char *p, size_t n);
static int lg_headers(lg_t *lg, lg_conn_t *c);
static void lg_scan(lg_t *lg, lg_conn_t *c, const char *p, size_t n);
static void lg_done(lg_t *lg, lg_conn_t *c);
static void lg_fail(lg_t *lg, lg_conn_t *c);
static void lg_close(lg_t *lg, lg_conn_t *c);
static void lg_window(lg_t *lg, uint64_t now);
static uint64_t lg_memory(lg_t *lg, uint64_t *part);
static void lg_report(lg_t *lg);


int
main(int argc, char **argv)
{
    lg_t  lg;

    memset(&lg, 0, sizeof(lg_t));

    signal(SIGPIPE, SIG_IGN);

    lg_options(&lg, argc, argv);
    lg_load_body(&lg);

    if (bn_raise_nofile() < (long) lg.conns + 16) {
        bn_die("cb_load: the descriptor limit is below %u connections; "
               "raise ulimit -n", lg.conns);
    }

    lg_run(&lg);
    lg_report(&lg);

    return 0;
}


static void
lg_usage(void)
{
    fprintf(stderr,
        "usage: cb_load --connect HOST:PORT --path PATH [--body-file F]\n"
        "               [--mode json|sse|hold] [--conns N]\n"
        "               [--duration S] [--warmup S] [--timeout S]\n"
        "               [--hold-ms MS] [--late-ms MS] [--ramp CONNS/S]\n"
        "               [--expect-chunks N] [--cpu-pids P,P..]\n"
        "               [--browser-pid P] [--mem-pids P,P..]\n"
        "               [--mem-pids2 P,P..] [--mem-file PATH]\n");
    exit(2);
}


static void
lg_options(lg_t *lg, int argc, char **argv)
{
    int  opt;

    static const struct option  longopts[] = {
        { "connect", required_argument, NULL, 'c' },
        { "path", required_argument, NULL, 'p' },
        { "host", required_argument, NULL, 'H' },
        { "body-file", required_argument, NULL, 'b' },
        { "mode", required_argument, NULL, 'm' },
        { "conns", required_argument, NULL, 'n' },
        { "duration", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'w' },
        { "timeout", required_argument, NULL, 't' },
        { "hold-ms", required_argument, NULL, 'h' },
        { "late-ms", required_argument, NULL, 'l' },
        { "ramp", required_argument, NULL, 'r' },
        { "expect-chunks", required_argument, NULL, 'e' },
        { "cpu-pids", required_argument, NULL, 'C' },
        { "browser-pid", required_argument, NULL, 'B' },
        { "mem-pids", required_argument, NULL, 'M' },
        { "mem-pids2", required_argument, NULL, 'N' },
        { "mem-file", required_argument, NULL, 'F' },
        { NULL, 0, NULL, 0 }
    };

    lg->mode = LG_JSON;
    lg->path = "/";
    lg->host = "localhost";
    lg->conns = 1;
    lg->duration = 2;
    lg->warmup = 0.5;
    lg->timeout = 60;
    lg->hold_ns = 10000ULL * 1000000;
    lg->late_ns = 1000ULL * 1000000;
    lg->ramp = 20000;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': lg->connect = optarg; break;
        case 'p': lg->path = optarg; break;
        case 'H': lg->host = optarg; break;
        case 'b': lg->body_file = optarg; break;
        case 'm':
            if (strcmp(optarg, "json") == 0) {
                lg->mode = LG_JSON;
            } else if (strcmp(optarg, "sse") == 0) {
                lg->mode = LG_SSE;
            } else if (strcmp(optarg, "hold") == 0) {
                lg->mode = LG_HOLD;
            } else {
                lg_usage();
            }
            break;
        case 'n': lg->conns = (unsigned) atoi(optarg); break;
        case 'd': lg->duration = atof(optarg); break;
        case 'w': lg->warmup = atof(optarg); break;
        case 't': lg->timeout = atof(optarg); break;
        case 'h': lg->hold_ns = (uint64_t) atoll(optarg) * 1000000; break;
        case 'l': lg->late_ns = (uint64_t) atoll(optarg) * 1000000; break;
        case 'r': lg->ramp = (unsigned) atoi(optarg); break;
        case 'e': lg->expect_chunks = (unsigned) atoi(optarg); break;
        case 'C':
            lg->ncpu_pids = bn_parse_pids(optarg, lg->cpu_pids, LG_MAX_PIDS);
            break;
        case 'B': lg->browser_pid = (pid_t) atoi(optarg); break;
        case 'M':
            lg->nmem_pids = bn_parse_pids(optarg, lg->mem_pids, LG_MAX_PIDS);
            break;
        case 'N':
            lg->nmem_pids2 = bn_parse_pids(optarg, lg->mem_pids2,
                                           LG_MAX_PIDS);
            break;
        case 'F': lg->mem_file = optarg; break;
        default: lg_usage();
        }
    }

    if (lg->connect == NULL || lg->conns == 0 || lg->duration <= 0) {
        lg_usage();
    }
}


static void
lg_load_body(lg_t *lg)
{
    int      n;
    char    *body, head[1024];
    size_t   size, hl;

    body = NULL;
    size = 0;

    if (lg->body_file) {
        body = bn_read_file(lg->body_file, &size);
        if (body == NULL) {
            bn_die("cb_load: cannot read %s: %s", lg->body_file,
                   strerror(errno));
        }
    }

    if (body) {
        n = snprintf(head, sizeof(head),
                     "POST %s HTTP/1.1\r\nHost: %s\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     lg->path, lg->host, size);
    } else {
        n = snprintf(head, sizeof(head),
                     "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n",
                     lg->path, lg->host);
    }

    if (n < 0 || (size_t) n >= sizeof(head)) {
        bn_die("cb_load: --path and --host are too long");
    }

    hl = (size_t) n;

    lg->req = malloc(hl + size);
    if (lg->req == NULL) {
        bn_die("out of memory");
    }

    memcpy(lg->req, head, hl);
    if (body) {
        memcpy(lg->req + hl, body, size);
    }

    lg->req_len = hl + size;
    free(body);
}


static void
lg_run(lg_t *lg)
{
    int                  i, n, timeout;
    unsigned             next, allowed;
    uint64_t             now, deadline, next_mem, mem, part[3];
    struct epoll_event  *ev;

    lg->ep = epoll_create1(EPOLL_CLOEXEC);
    lg->c = calloc(lg->conns, sizeof(lg_conn_t));
    lg->rbuf = malloc(LG_READ_SIZE);
    ev = calloc(1024, sizeof(struct epoll_event));

    if (lg->ep == -1 || lg->c == NULL || lg->rbuf == NULL || ev == NULL) {
        bn_die("cb_load: setup failed");
    }

    lg->t0 = bn_now_ns();
    deadline = lg->t0 + (uint64_t) (lg->timeout * 1e9);

    if (lg->mode == LG_HOLD) {
        lg->mem_before = lg_memory(lg, lg->part_before);
        lg->mem_peak = lg->mem_before;
        memcpy(lg->part_peak, lg->part_before, sizeof(lg->part_peak));
        lg->win_start = lg->t0;
        lg->win_end = deadline;
        lg_window(lg, lg->t0);

    } else {
        lg->win_start = lg->t0 + (uint64_t) (lg->warmup * 1e9);
        lg->win_end = lg->win_start + (uint64_t) (lg->duration * 1e9);
    }

    next = 0;
    next_mem = lg->t0;

    for ( ;; ) {
        now = bn_now_ns();

        /* open connections: all at once, or at --ramp per second in hold */

        if (next < lg->conns && !lg->stopping) {
            allowed = lg->conns;

            if (lg->mode == LG_HOLD && lg->ramp) {
                allowed = (unsigned) ((double) (now - lg->t0) / 1e9
                                      * lg->ramp) + 1;
            }

            while (next < lg->conns && next < allowed
                   && lg->connecting < LG_MAX_CONNECTING)
            {
                lg_open(lg, next++);
            }
        }

        if (lg->mode != LG_HOLD) {
            lg_window(lg, now);

        } else if (now >= next_mem) {
            mem = lg_memory(lg, part);
            if (mem > lg->mem_peak) {
                lg->mem_peak = mem;
                memcpy(lg->part_peak, part, sizeof(part));
            }

            next_mem = now + 250000000;
        }

        if (lg->stopping && lg->active == 0) {
            break;
        }

        if (lg->mode == LG_HOLD && next == lg->conns && lg->active == 0) {
            break;
        }

        if (now >= deadline) {
            break;
        }

        timeout = 50;

        if (!lg->in_window && lg->win_start > now && lg->mode != LG_HOLD) {
            timeout = (int) ((lg->win_start - now) / 1000000);
        } else if (lg->in_window && lg->win_end > now
                   && lg->mode != LG_HOLD)
        {
            timeout = (int) ((lg->win_end - now) / 1000000);
        }

        if (timeout > 50) {
            timeout = 50;
        }

        /* connections that failed in a row open again after a pause */

        if (lg->waiting && !lg->stopping) {
            i = lg_retry(lg, now);
            if (i < timeout) {
                timeout = i;
            }
        }

        if (next < lg->conns && lg->mode == LG_HOLD) {
            timeout = 1;
        }

        n = epoll_wait(lg->ep, ev, 1024, timeout);

        for (i = 0; i < n; i++) {
            lg_event(lg, &lg->c[ev[i].data.u32], ev[i].events);
        }
    }

    now = bn_now_ns();

    if (lg->mode == LG_HOLD) {
        lg->cpu_end = bn_pids_cpu_us(lg->cpu_pids, lg->ncpu_pids);
        lg->self_end = bn_self_cpu_us();
        lg->browser_end = lg->browser_pid
                          ? bn_proc_cpu_us(lg->browser_pid) : 0;
        bn_machine_cpu_us(&lg->busy_end, &lg->steal_end);
        lg->t_cpu_end = now;
    }

    if (lg->in_window) {
        lg_window(lg, (uint64_t) -1);
    }

    /* what did not finish in time has failed */

    for (next = 0; next < lg->conns; next++) {
        if (lg->c[next].state != LG_C_FREE) {
            if (lg->mode == LG_HOLD && lg->c[next].requests == 0) {
                lg->held_failed++;
            }

            lg_close(lg, &lg->c[next]);
        }
    }
}


/* the measured window: CPU readings at both ends */

static void
lg_window(lg_t *lg, uint64_t now)
{
    if (!lg->in_window && !lg->stopping && now >= lg->win_start) {
        lg->in_window = 1;
        lg->t_cpu_start = bn_now_ns();
        lg->cpu_start = bn_pids_cpu_us(lg->cpu_pids, lg->ncpu_pids);
        lg->self_start = bn_self_cpu_us();
        lg->browser_start = lg->browser_pid
                            ? bn_proc_cpu_us(lg->browser_pid) : 0;
        bn_machine_cpu_us(&lg->busy_start, &lg->steal_start);
        return;
    }

    if (lg->in_window && now >= lg->win_end && lg->mode != LG_HOLD) {
        lg->in_window = 0;
        lg->stopping = 1;
        lg->t_cpu_end = bn_now_ns();
        lg->cpu_end = bn_pids_cpu_us(lg->cpu_pids, lg->ncpu_pids);
        lg->self_end = bn_self_cpu_us();
        lg->browser_end = lg->browser_pid
                          ? bn_proc_cpu_us(lg->browser_pid) : 0;
        bn_machine_cpu_us(&lg->busy_end, &lg->steal_end);
    }
}


static void
lg_open(lg_t *lg, unsigned i)
{
    lg_conn_t           *c;
    struct epoll_event   ev;

    c = &lg->c[i];

    c->fd = bn_connect(lg->connect);
    if (c->fd == -1) {
        lg->errors++;
        if (lg->mode == LG_HOLD) {
            lg->held_failed++;
        } else if (!lg->stopping) {
            lg_reopen(lg, c);       /* later: its place is kept */
        }
        return;
    }

    c->state = LG_C_CONNECTING;
    c->sent = 0;
    c->t_start = bn_now_ns();

    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u32 = i;

    if (epoll_ctl(lg->ep, EPOLL_CTL_ADD, c->fd, &ev) == -1) {
        bn_die("cb_load: epoll_ctl: %s", strerror(errno));
    }

    lg->opened++;
    lg->connecting++;
    lg->active++;
}


/*
 * A connection of the closed loop failed: it is opened again (--conns
 * connections, as after "Connection: close"), at once the first time, and
 * after LG_BACKOFF_NS, doubling up to LG_BACKOFF_MAX_NS, when it fails
 * again without an answer in between: a server that refuses connections
 * does not make the load generator spin
 */

static void
lg_reopen(lg_t *lg, lg_conn_t *c)
{
    uint64_t  delay;

    if (c->fails++ == 0) {
        lg_open(lg, (unsigned) (c - lg->c));
        return;
    }

    delay = (uint64_t) LG_BACKOFF_NS << (c->fails - 2 < 3 ? c->fails - 2 : 3);
    if (delay > LG_BACKOFF_MAX_NS) {
        delay = LG_BACKOFF_MAX_NS;
    }

    if (c->retry == 0) {
        lg->waiting++;
    }

    c->retry = bn_now_ns() + delay;
}


/* opens the connections whose pause is over; ms until the next one's */

static int
lg_retry(lg_t *lg, uint64_t now)
{
    unsigned   i;
    uint64_t   next;
    lg_conn_t *c;

    next = (uint64_t) -1;

    for (i = 0; i < lg->conns && lg->waiting; i++) {
        c = &lg->c[i];

        if (c->retry == 0) {
            continue;
        }

        if (c->retry <= now) {
            c->retry = 0;
            lg->waiting--;
            lg_open(lg, i);
            continue;
        }

        if (c->retry < next) {
            next = c->retry;
        }
    }

    if (next == (uint64_t) -1) {
        return 50;
    }

    return (int) ((next - now + 999999) / 1000000);
}


static void
lg_event(lg_t *lg, lg_conn_t *c, uint32_t events)
{
    int        err;
    socklen_t  len;

    if (c->state == LG_C_FREE) {
        return;
    }

    if (c->state == LG_C_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            return;
        }

        err = 0;
        len = sizeof(err);
        (void) getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);

        lg->connecting--;
        c->state = LG_C_SENDING;
        c->t_start = bn_now_ns();

        if (err) {
            lg_fail(lg, c);
            return;
        }
    }

    if (c->state == LG_C_SENDING) {
        lg_send(lg, c);
    }

    if (c->state >= LG_C_HEAD && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP
                                            | EPOLLERR)))
    {
        lg_read(lg, c);
    }
}


static void
lg_send(lg_t *lg, lg_conn_t *c)
{
    ssize_t  n;

    while (c->sent < lg->req_len) {
        n = send(c->fd, lg->req + c->sent, lg->req_len - c->sent,
                 MSG_NOSIGNAL);

        if (n == -1) {
            if (errno == EAGAIN) {
                return;
            }

            if (errno == EINTR) {
                continue;
            }

            lg_fail(lg, c);
            return;
        }

        c->sent += n;
    }

    c->state = LG_C_HEAD;
    c->status = 0;
    c->chunked = 0;
    c->close = 0;
    c->match = 0;
    c->chunks = 0;
    c->t_first = 0;
    c->head.pos = 0;
    c->head.last = 0;
}


static void
lg_read(lg_t *lg, lg_conn_t *c)
{
    ssize_t  n;

    for ( ;; ) {
        n = recv(c->fd, lg->rbuf, LG_READ_SIZE, 0);

        if (n > 0) {
            lg->bytes += n;

            if (lg_input(lg, c, lg->rbuf, (size_t) n) != BN_OK) {
                return;
            }

            if (c->state == LG_C_FREE) {
                return;
            }

            continue;
        }

        if (n == -1 && errno == EAGAIN) {
            return;
        }

        if (n == -1 && errno == EINTR) {
            continue;
        }

        /* EOF or error in the middle of an answer */

        lg_fail(lg, c);
        return;
    }
}


/* feed n bytes of the answer; BN_ERROR when the connection was dropped */

static int
lg_input(lg_t *lg, lg_conn_t *c, char *p, size_t n)
{
    char    *nl, *end;
    size_t   take;
    int64_t  size;

    while (n > 0) {

        switch (c->state) {

        case LG_C_HEAD:
            bn_buf_append(&c->head, p, n);
            bn_buf_reserve(&c->head, 1);
            c->head.data[c->head.last] = '\0';

            end = strstr(c->head.data, "\r\n\r\n");
            if (end == NULL) {
                if (bn_buf_len(&c->head) > LG_MAX_HEAD) {
                    lg_fail(lg, c);         /* headers without an end */
                    return BN_ERROR;
                }

                return BN_OK;
            }

            take = (end + 4 - c->head.data);
            take = take - (c->head.last - n);    /* of this input */
            p += take;
            n -= take;

            if (lg_headers(lg, c) != BN_OK) {
                lg_fail(lg, c);
                return BN_ERROR;
            }

            c->head.pos = 0;
            c->head.last = 0;

            if (c->state == LG_C_BODY && c->left == 0) {
                lg_done(lg, c);
                if (c->state == LG_C_FREE) {
                    return BN_OK;
                }
            }

            break;

        case LG_C_BODY:
            take = (size_t) c->left < n ? (size_t) c->left : n;
            lg_scan(lg, c, p, take);
            p += take;
            n -= take;
            c->left -= take;

            if (c->left == 0) {
                lg_done(lg, c);
                if (c->state == LG_C_FREE || c->state == LG_C_SENDING) {
                    return BN_OK;
                }
            }

            break;

        case LG_C_CHUNK_SIZE:
        case LG_C_CHUNK_CRLF:
        case LG_C_TRAILER:
            nl = memchr(p, '\n', n);
            take = nl ? (size_t) (nl - p) + 1 : n;

            if (c->head.last - c->head.pos + take > 256) {
                lg_fail(lg, c);
                return BN_ERROR;
            }

            bn_buf_append(&c->head, p, take);
            p += take;
            n -= take;

            if (nl == NULL) {
                break;
            }

            if (c->state == LG_C_CHUNK_CRLF) {
                c->state = LG_C_CHUNK_SIZE;

            } else if (c->state == LG_C_TRAILER) {
                if (c->head.last - c->head.pos <= 2) {
                    c->head.pos = 0;
                    c->head.last = 0;
                    lg_done(lg, c);
                    if (c->state == LG_C_FREE || c->state == LG_C_SENDING) {
                        return BN_OK;
                    }
                }

            } else {
                size = strtoll(c->head.data + c->head.pos, NULL, 16);

                if (size < 0) {
                    lg_fail(lg, c);
                    return BN_ERROR;
                }

                c->left = size;
                c->state = size ? LG_C_CHUNK_DATA : LG_C_TRAILER;
            }

            c->head.pos = 0;
            c->head.last = 0;
            break;

        case LG_C_CHUNK_DATA:
            take = (size_t) c->left < n ? (size_t) c->left : n;
            lg_scan(lg, c, p, take);
            p += take;
            n -= take;
            c->left -= take;

            if (c->left == 0) {
                c->state = LG_C_CHUNK_CRLF;
            }

            break;

        default:
            /* bytes after the answer, before the next request */
            lg_fail(lg, c);
            return BN_ERROR;
        }
    }

    return BN_OK;
}


static int
lg_headers(lg_t *lg, lg_conn_t *c)
{
    char  *h, *line, *next, *v;

    h = c->head.data;

    if (strncmp(h, "HTTP/1.", 7) != 0) {
        return BN_ERROR;
    }

    c->status = atoi(h + 9);
    c->left = -1;

    for (line = strstr(h, "\r\n"); line; line = next) {
        line += 2;
        next = strstr(line, "\r\n");

        if (next == line) {
            break;
        }

        if (strncasecmp(line, "Content-Length:", 15) == 0) {
            c->left = strtoll(line + 15, NULL, 10);

        } else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0) {
            /* "chunked" in this header's value, not in a later header */
            for (v = line + 18; v + 7 <= next; v++) {
                if (strncasecmp(v, "chunked", 7) == 0) {
                    c->chunked = 1;
                    break;
                }
            }

        } else if (strncasecmp(line, "Connection:", 11) == 0) {
            c->close = strncasecmp(line + 11, " close", 6) == 0;
        }
    }

    if (c->chunked) {
        c->state = LG_C_CHUNK_SIZE;
        return BN_OK;
    }

    if (c->left < 0) {
        return BN_ERROR;    /* read-until-close is not used here */
    }

    c->state = LG_C_BODY;

    return BN_OK;
}


/* SSE answers: count the answer chunks, time the first */

static void
lg_scan(lg_t *lg, lg_conn_t *c, const char *p, size_t n)
{
    const char  *end, *q;
    uint64_t     now;

    if (lg->mode == LG_JSON) {
        return;
    }

    end = p + n;

    while (p < end) {

        if (c->match == 0) {
            q = memchr(p, '{', end - p);
            if (q == NULL) {
                return;
            }

            p = q + 1;
            c->match = 1;
            continue;
        }

        if (*p == LG_PATTERN[c->match]) {
            c->match++;
            p++;

            if ((size_t) c->match == LG_PATTERN_LEN) {
                c->match = 0;
                c->chunks++;

                now = bn_now_ns();

                if (c->t_first == 0) {
                    c->t_first = now;

                    if (lg->mode == LG_HOLD && ++lg->with_first
                                               == lg->conns)
                    {
                        lg->first_all = now;
                        lg->mem_all_held = lg_memory(lg, NULL);
                    }
                }

                if (lg->in_window) {
                    lg->chunks++;
                }
            }

            continue;
        }

        c->match = (*p == '{') ? 1 : 0;
        p++;
    }
}


static void
lg_done(lg_t *lg, lg_conn_t *c)
{
    uint64_t  now, took;
    int       ok;

    now = bn_now_ns();
    took = now - c->t_start;

    c->fails = 0;       /* an answer: the connection works */
    ok = (c->status == 200);

    if (ok && lg->mode != LG_JSON && lg->expect_chunks
        && c->chunks != lg->expect_chunks)
    {
        lg->short_answers++;
        ok = 0;
    }

    c->requests++;

    if (lg->mode == LG_HOLD) {
        if (!ok) {
            lg->held_failed++;

        } else {
            lg->held_done++;
            bn_samples_add(&lg->latency, took);

            if (c->t_first) {
                bn_samples_add(&lg->ttft, c->t_first - c->t_start);
            }

            if (took > lg->hold_ns + lg->late_ns) {
                lg->held_late++;
            }
        }

        lg_close(lg, c);
        return;
    }

    if (lg->in_window && c->t_start >= lg->win_start) {
        if (ok) {
            lg->requests++;
            bn_samples_add(&lg->latency, took);

            if (lg->mode == LG_SSE && c->t_first) {
                bn_samples_add(&lg->ttft, c->t_first - c->t_start);
            }

        } else {
            lg->errors++;
        }
    }

    if (lg->stopping) {
        lg_close(lg, c);
        return;
    }

    if (c->close) {
        /* the server ends keep-alive: a new connection goes on */
        lg_close(lg, c);
        lg_open(lg, (unsigned) (c - lg->c));
        return;
    }

    /* keep-alive: the next request at once */

    c->state = LG_C_SENDING;
    c->sent = 0;
    c->t_start = now;

    lg_send(lg, c);
}


static void
lg_fail(lg_t *lg, lg_conn_t *c)
{
    if (lg->in_window || lg->mode == LG_HOLD) {
        lg->errors++;
    }

    if (lg->mode == LG_HOLD) {
        lg->held_failed++;
        c->requests++;
        lg_close(lg, c);
        return;
    }

    lg_close(lg, c);

    /*
     * the closed loop keeps --conns connections: a new one takes the
     * failed one's place (as after "Connection: close"), or the rest of
     * the window would run at a lower concurrency than it reports
     */

    if (!lg->stopping) {
        lg_reopen(lg, c);
    }
}


static void
lg_close(lg_t *lg, lg_conn_t *c)
{
    if (c->state == LG_C_FREE) {
        return;
    }

    if (c->state == LG_C_CONNECTING) {
        lg->connecting--;
    }

    close(c->fd);
    c->fd = -1;
    c->state = LG_C_FREE;
    bn_buf_free(&c->head);

    lg->active--;
}


static uint64_t
lg_memory(lg_t *lg, uint64_t *part)
{
    size_t    i;
    uint64_t  p[3];

    p[0] = 0;
    p[1] = 0;
    p[2] = bn_file_bytes(lg->mem_file);

    for (i = 0; i < lg->nmem_pids; i++) {
        p[0] += bn_proc_anon_bytes(lg->mem_pids[i]);
    }

    for (i = 0; i < lg->nmem_pids2; i++) {
        p[1] += bn_proc_anon_bytes(lg->mem_pids2[i]);
    }

    if (part) {
        memcpy(part, p, sizeof(p));
    }

    return p[0] + p[1] + p[2];
}


static void
lg_report(lg_t *lg)
{
    double  win, cpu, per, other;

    static const char  *modes[] = { "json", "sse", "hold" };

    win = (double) (lg->t_cpu_end - lg->t_cpu_start) / 1e9;
    if (win <= 0) {
        win = 1e-9;
    }

    cpu = (double) (lg->cpu_end - lg->cpu_start);

    printf("mode=%s conns=%u window_s=%.3f requests=%llu errors=%llu "
           "short=%llu",
           modes[lg->mode], lg->conns, win,
           (unsigned long long) lg->requests,
           (unsigned long long) lg->errors,
           (unsigned long long) lg->short_answers);

    if (lg->mode != LG_HOLD) {
        printf(" rps=%.1f p50_us=%.1f p99_us=%.1f mean_us=%.1f",
               lg->requests / win,
               bn_samples_pct(&lg->latency, 50) / 1e3,
               bn_samples_pct(&lg->latency, 99) / 1e3,
               bn_samples_mean(&lg->latency) / 1e3);
    }

    if (lg->mode == LG_SSE) {
        printf(" ttft_p50_us=%.1f ttft_p99_us=%.1f chunks=%llu "
               "chunks_per_s=%.1f total_p50_ms=%.3f total_p99_ms=%.3f",
               bn_samples_pct(&lg->ttft, 50) / 1e3,
               bn_samples_pct(&lg->ttft, 99) / 1e3,
               (unsigned long long) lg->chunks, lg->chunks / win,
               bn_samples_pct(&lg->latency, 50) / 1e6,
               bn_samples_pct(&lg->latency, 99) / 1e6);
    }

    if (lg->mode == LG_HOLD) {
        per = lg->held_done ? (double) (lg->mem_peak - lg->mem_before)
                              / lg->conns
                            : 0;

        printf(" streams=%u done=%llu late=%llu failed=%llu "
               "all_held=%d ttft_p99_ms=%.1f total_p50_ms=%.1f "
               "total_p99_ms=%.1f total_max_ms=%.1f "
               "mem_before_kb=%llu mem_peak_kb=%llu mem_held_kb=%llu "
               "mem_per_stream_b=%.0f mem_a_b=%.0f mem_b_b=%.0f "
               "mem_shm_b=%.0f",
               lg->conns, (unsigned long long) lg->held_done,
               (unsigned long long) lg->held_late,
               (unsigned long long) lg->held_failed,
               lg->first_all != 0,
               bn_samples_pct(&lg->ttft, 99) / 1e6,
               bn_samples_pct(&lg->latency, 50) / 1e6,
               bn_samples_pct(&lg->latency, 99) / 1e6,
               bn_samples_pct(&lg->latency, 100) / 1e6,
               (unsigned long long) lg->mem_before / 1024,
               (unsigned long long) lg->mem_peak / 1024,
               (unsigned long long) lg->mem_all_held / 1024, per,
               ((double) lg->part_peak[0] - lg->part_before[0]) / lg->conns,
               ((double) lg->part_peak[1] - lg->part_before[1]) / lg->conns,
               ((double) lg->part_peak[2] - lg->part_before[2])
               / lg->conns);
    }

    printf(" server_cpu_ms=%.1f server_cpu_pct=%.1f",
           cpu / 1e3, cpu / 1e4 / win);

    if (lg->mode == LG_JSON) {
        printf(" cpu_per_req_us=%.2f",
               lg->requests ? cpu / lg->requests : 0);

    } else if (lg->mode == LG_SSE) {
        printf(" cpu_per_req_us=%.2f cpu_per_chunk_us=%.3f",
               lg->requests ? cpu / lg->requests : 0,
               lg->chunks ? cpu / lg->chunks : 0);
    }

    /*
     * what else ran on the machine in the window (other processes, the
     * kernel's own threads), and what the hypervisor took: a run with much
     * of either is not a clean measurement
     */

    other = (double) (lg->busy_end - lg->busy_start)
            - (double) (lg->cpu_end - lg->cpu_start)
            - (double) (lg->browser_end - lg->browser_start)
            - (double) (lg->self_end - lg->self_start);

    printf(" browser_cpu_pct=%.1f loadgen_cpu_pct=%.1f other_cpu_pct=%.1f "
           "steal_pct=%.1f\n",
           (double) (lg->browser_end - lg->browser_start) / 1e4 / win,
           (double) (lg->self_end - lg->self_start) / 1e4 / win,
           other > 0 ? other / 1e4 / win : 0,
           (double) (lg->steal_end - lg->steal_start) / 1e4 / win);
}
