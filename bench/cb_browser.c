
/*
 * Copyright (C) chatbridge authors
 *
 * cb_browser: the benchmark's scripted browser.  It speaks protocol v1
 * (browser/protocol/protocol-v1.json) over its own small WebSocket client:
 * one thread, epoll, several connections, each saying hello as kind "test"
 * with --concurrency.  A task is answered with N delta frames and a done
 * frame, N and the pacing taken from the last message, as the test
 * browser (t/lib/fake-browser.mjs) reads them:
 *
 *   [[chunks N]]    N deltas of --text (default 1)
 *   [[gap MS]]      between deltas (default 0: one delta per stream per
 *                   turn of the loop, streams served round robin)
 *   [[delay MS]]    before the first delta
 *
 * It keeps at most --window frames in flight on each connection: every
 * --window / 4 frames it sends a ping and it waits for the pongs (the
 * sidecar answers a ping after the frames before it), so what is measured
 * is the bridge, not the depth of socket buffers in front of it; --window 0
 * writes without bound.  It honours pause, resume and cancel, answers ping
 * with pong, and on SIGTERM prints what it did and the CPU it used.
 *
 * With --rtt N it instead measures N WebSocket ping/pong round trips
 * (control frames, answered by the server's WebSocket layer) and prints
 * their percentiles; it fails (exit 1) when the connection closes first.
 *
 * --max-seconds S bounds the run: a browser stops as on SIGTERM, --rtt
 * gives up and fails (default: none; bench/run.sh sets it).
 */


#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <jansson.h>

#include "bench.h"


#define BR_BUCKETS          65536
#define BR_MAX_MESSAGE      (16 * 1024 * 1024)  /* a frame, or a message's
                                                   fragments together */
#define BR_MAX_FRAME        (BR_MAX_MESSAGE + 14)   /* with its header: what
                                                   c->in holds at most */
#define BR_HIGH_WATER       (64 * 1024)
#define BR_ID_LEN           64

enum { BR_CONNECTING, BR_HANDSHAKE, BR_OPEN, BR_CLOSED };


typedef struct br_conn_s    br_conn_t;
typedef struct br_stream_s  br_stream_t;

struct br_stream_s {
    char            id[BR_ID_LEN + 1];
    size_t          id_len;
    br_conn_t      *conn;
    unsigned        left;
    uint64_t        gap_ns;
    uint64_t        due;            /* of the next delta, when paced */
    unsigned        paused:1;
    unsigned        gone:1;         /* done or cancelled */
    unsigned        queued:1;       /* in the run list */
    unsigned        timed:1;        /* in the timer heap */
    unsigned        stalled:1;      /* in its connection's stall list */
    br_stream_t    *next;           /* run or stall list */
    br_stream_t    *hnext;          /* hash chain */
};

struct br_conn_s {
    int             fd;
    int             index;
    int             state;
    bn_buf_t        in;
    bn_buf_t        out;
    bn_buf_t        msg;            /* a fragmented message */
    unsigned        blocked:1;      /* the socket is full */
    unsigned        dirty:1;        /* in the flush list */
    unsigned        ready:1;        /* welcome received */
    uint64_t        sent;           /* frames, for the window */
    uint64_t        acked;          /* frames before the last pong */
    uint64_t        pinged;         /* frames when the last ping went */
    br_conn_t      *next_dirty;
    br_stream_t    *stalled;
};


typedef struct {
    const char     *connect;
    const char     *path;
    const char     *host;
    const char     *token;
    const char     *id;
    const char     *text;
    const char     *ready_file;
    unsigned        nconns;
    unsigned        concurrency;
    unsigned        burst;
    unsigned        rtt;
    unsigned        window;
    uint64_t        max_ns;         /* --max-seconds, 0: no bound */

    int             ep;
    br_conn_t      *conns;
    br_conn_t      *dirty;
    br_stream_t    *run_head;
    br_stream_t    *run_tail;
    br_stream_t   **buckets;
    bn_heap_t       timers;
    char           *text_json;      /* --text, escaped */
    size_t          text_json_len;
    uint32_t        rnd;
    unsigned        nready;

    /* what it did */
    uint64_t        t0;
    uint64_t        tasks;
    uint64_t        deltas;
    uint64_t        dones;
    uint64_t        cancels;
    uint64_t        pauses;
    uint64_t        errors;
    uint64_t        frames_in;
    uint64_t        bytes_out;

    /* --rtt */
    uint64_t        ping_sent;
    unsigned        pings;
    bn_samples_t    rtts;
} br_t;


static volatile sig_atomic_t  br_stop;


static void br_on_signal(int sig);
static void br_options(br_t *br, int argc, char **argv);
static void br_connect(br_t *br, br_conn_t *c);
static void br_readable(br_t *br, br_conn_t *c);
static int br_handshake(br_t *br, br_conn_t *c);
static int br_frames(br_t *br, br_conn_t *c);
static void br_message(br_t *br, br_conn_t *c, const char *p, size_t n);
static void br_task(br_t *br, br_conn_t *c, json_t *f);
static void br_step(br_t *br, br_stream_t *s);
static void br_run(br_t *br, br_stream_t *s);
static void br_release(br_t *br, br_stream_t *s);
static br_stream_t *br_find(br_t *br, const char *id, size_t len);
static void br_unlink(br_t *br, br_stream_t *s);
static void br_send(br_t *br, br_conn_t *c, int opcode, const char **parts,
    const size_t *lens, int n);
static void br_sent(br_t *br, br_conn_t *c);
static void br_pong(br_t *br, br_conn_t *c, json_t *f);
static void br_flush_all(br_t *br);
static void br_flush(br_t *br, br_conn_t *c);
static void br_ping(br_t *br);
static void br_closed(br_t *br, br_conn_t *c, const char *why);
static void br_report(br_t *br);


int
main(int argc, char **argv)
{
    int                  i, n, timeout;
    unsigned             k;
    uint64_t             now;
    br_t                 br;
    br_conn_t           *c;
    br_stream_t         *s, *list;
    bn_timer_t          *t;
    struct epoll_event   evs[512];

    memset(&br, 0, sizeof(br_t));

    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, br_on_signal);
    signal(SIGINT, br_on_signal);

    br_options(&br, argc, argv);
    (void) bn_raise_nofile();

    if (getrandom(&br.rnd, sizeof(br.rnd), 0) != sizeof(br.rnd)
        || br.rnd == 0)
    {
        br.rnd = 0x9e3779b9;
    }

    br.ep = epoll_create1(EPOLL_CLOEXEC);
    br.conns = calloc(br.nconns, sizeof(br_conn_t));
    br.buckets = calloc(BR_BUCKETS, sizeof(br_stream_t *));

    if (br.ep == -1 || br.conns == NULL || br.buckets == NULL) {
        bn_die("cb_browser: setup failed");
    }

    br.t0 = bn_now_ns();

    for (k = 0; k < br.nconns; k++) {
        br.conns[k].index = (int) k;
        br_connect(&br, &br.conns[k]);
    }

    while (!br_stop) {
        now = bn_now_ns();

        if (br.max_ns && now - br.t0 >= br.max_ns) {
            if (br.rtt) {
                bn_die("cb_browser: --rtt: %u of %u round trips in "
                       "--max-seconds %.0f; giving up", br.pings, br.rtt,
                       br.max_ns / 1e9);
            }

            break;
        }

        while ((t = bn_heap_top(&br.timers)) && t->when <= now) {
            s = t->data;
            bn_heap_pop(&br.timers);
            s->timed = 0;

            if (s->gone) {
                br_release(&br, s);
                continue;
            }

            if (!s->paused) {
                br_step(&br, s);    /* a paused one waits for resume */
            }
        }

        br_flush_all(&br);

        timeout = 1000;

        if (br.run_head) {
            timeout = 0;

        } else if ((t = bn_heap_top(&br.timers))
                   && t->when - now < 1000000000)
        {
            timeout = (int) ((t->when - now + 999999) / 1000000);
        }

        n = epoll_wait(br.ep, evs, 512, timeout);

        for (i = 0; i < n; i++) {
            c = &br.conns[evs[i].data.u32];

            if (c->state == BR_CLOSED) {
                continue;
            }

            if (evs[i].events & EPOLLOUT) {
                if (c->state == BR_CONNECTING) {
                    c->state = BR_HANDSHAKE;
                }

                c->blocked = 0;
                br_flush(&br, c);

                if (c->state == BR_CLOSED) {
                    continue;   /* the send failed: it is gone, also for
                                   this event's EPOLLIN or EPOLLERR */
                }

                /* streams that waited for room go on */

                while (!c->blocked && c->stalled
                       && (br.window == 0
                           || c->sent - c->acked < br.window))
                {
                    s = c->stalled;
                    c->stalled = s->next;
                    s->next = NULL;
                    s->stalled = 0;

                    if (s->gone) {
                        br_release(&br, s);
                    } else if (!s->paused) {
                        br_run(&br, s);
                    }
                }
            }

            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR
                                 | EPOLLRDHUP))
            {
                br_readable(&br, c);
            }
        }

        /* one turn: every runnable stream sends its next frames */

        list = br.run_head;
        br.run_head = NULL;
        br.run_tail = NULL;

        while (list) {
            s = list;
            list = s->next;
            s->next = NULL;
            s->queued = 0;

            if (s->gone) {
                br_release(&br, s);
                continue;
            }

            for (k = 0; k < br.burst && !s->gone && !s->paused; k++) {
                br_step(&br, s);

                if (s->gap_ns || s->stalled) {
                    break;
                }
            }

            if (!s->gone && !s->paused && !s->gap_ns && !s->stalled
                && !s->timed)
            {
                br_run(&br, s);
            }

            if (s->gone && !s->timed && !s->stalled) {
                br_release(&br, s);
            }
        }

        br_flush_all(&br);

        if (br.rtt && br.pings >= br.rtt) {
            break;
        }
    }

    br_report(&br);

    return 0;
}


static void
br_on_signal(int sig)
{
    br_stop = 1;
}


static void
br_options(br_t *br, int argc, char **argv)
{
    int     opt;
    size_t  n;
    json_t *j;
    char   *dump;

    static const struct option  longopts[] = {
        { "connect", required_argument, NULL, 'c' },
        { "path", required_argument, NULL, 'p' },
        { "host", required_argument, NULL, 'H' },
        { "token", required_argument, NULL, 't' },
        { "id", required_argument, NULL, 'i' },
        { "text", required_argument, NULL, 'x' },
        { "conns", required_argument, NULL, 'n' },
        { "concurrency", required_argument, NULL, 'C' },
        { "burst", required_argument, NULL, 'b' },
        { "rtt", required_argument, NULL, 'r' },
        { "ready-file", required_argument, NULL, 'R' },
        { "window", required_argument, NULL, 'w' },
        { "max-seconds", required_argument, NULL, 'm' },
        { NULL, 0, NULL, 0 }
    };

    br->path = "/chatbridge/ws";
    br->host = "localhost";
    br->token = "";
    br->id = "bench";
    br->text = "token ";
    br->nconns = 1;
    br->concurrency = 256;
    br->burst = 1;
    br->window = 256;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': br->connect = optarg; break;
        case 'p': br->path = optarg; break;
        case 'H': br->host = optarg; break;
        case 't': br->token = optarg; break;
        case 'i': br->id = optarg; break;
        case 'x': br->text = optarg; break;
        case 'n': br->nconns = (unsigned) atoi(optarg); break;
        case 'C': br->concurrency = (unsigned) atoi(optarg); break;
        case 'b': br->burst = (unsigned) atoi(optarg); break;
        case 'r': br->rtt = (unsigned) atoi(optarg); break;
        case 'R': br->ready_file = optarg; break;
        case 'w': br->window = (unsigned) atoi(optarg); break;
        case 'm': br->max_ns = (uint64_t) (atof(optarg) * 1e9); break;
        default:
            bn_die("usage: cb_browser --connect unix:PATH|HOST:PORT "
                   "--token T [--path P] [--conns N] [--concurrency C]\n"
                   "                  [--text S] [--burst B] [--window N] "
                   "[--rtt N] [--ready-file F]\n"
                   "                  [--max-seconds S]");
        }
    }

    if (br->connect == NULL || br->nconns == 0 || br->burst == 0) {
        bn_die("cb_browser: --connect is required");
    }

    if (br->rtt) {
        br->nconns = 1;
    }

    /* the text goes into every delta, escaped once here */

    j = json_string(br->text);
    dump = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    if (dump == NULL) {
        bn_die("cb_browser: --text is not UTF-8");
    }

    n = strlen(dump);
    br->text_json = dump;
    br->text_json_len = n;
    json_decref(j);
}


static void
br_connect(br_t *br, br_conn_t *c)
{
    int                  n;
    char                 req[1024];
    struct epoll_event   ev;

    c->fd = bn_connect(br->connect);
    if (c->fd == -1) {
        bn_die("cb_browser: cannot connect to %s: %s", br->connect,
               strerror(errno));
    }

    c->state = BR_CONNECTING;

    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: %s\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: Y2hhdGJyaWRnZS1iZW5jaA==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n",
                 br->path, br->host);

    if (n < 0 || (size_t) n >= sizeof(req)) {
        bn_die("cb_browser: --path and --host are too long");
    }

    bn_buf_append(&c->out, req, (size_t) n);

    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u32 = (uint32_t) c->index;

    if (epoll_ctl(br->ep, EPOLL_CTL_ADD, c->fd, &ev) == -1) {
        bn_die("cb_browser: epoll_ctl: %s", strerror(errno));
    }

    c->blocked = 1;     /* until connected */
}


/*
 * What the socket has, read and taken in turns: c->in is read up to one
 * frame of BR_MAX_MESSAGE with its header (BR_MAX_FRAME), the whole frames
 * in it are taken, and the rest is read after them.  A burst of any length
 * of frames within the bound is thus no more than one frame at a time in
 * c->in; only a frame over it, or headers of the handshake over it, are too
 * much.
 */

static void
br_readable(br_t *br, br_conn_t *c)
{
    int  rc;

    while (c->state != BR_CLOSED) {
        rc = bn_recv_into(c->fd, &c->in, BR_MAX_FRAME);

        if (rc == BN_ERROR && errno != EMSGSIZE) {
            br_closed(br, c, errno ? strerror(errno)
                                   : "closed by the server");
            return;
        }

        /* BN_AGAIN: all of it read; BN_ERROR (EMSGSIZE): c->in is full */

        if (c->state != BR_OPEN && br_handshake(br, c) != BN_OK) {
            if (rc != BN_AGAIN) {
                br_closed(br, c, "too much input (the handshake's headers)");
            }

            return;
        }

        if (br_frames(br, c) != BN_OK || rc == BN_AGAIN) {
            return;
        }

        /* what is left is part of a frame, which fits: read on */

        if (bn_buf_len(&c->in) >= BR_MAX_FRAME) {
            br_closed(br, c, "too much input");
            return;
        }
    }
}


/* the connection is gone; --rtt cannot go on without it */

static void
br_closed(br_t *br, br_conn_t *c, const char *why)
{
    if (c->state == BR_CLOSED) {
        return;
    }

    fprintf(stderr, "cb_browser: connection %d: %s\n", c->index, why);

    c->state = BR_CLOSED;
    close(c->fd);
    c->fd = -1;

    if (br->rtt) {
        bn_die("cb_browser: --rtt: the connection closed after %u of %u "
               "round trips", br->pings, br->rtt);
    }
}


static int
br_handshake(br_t *br, br_conn_t *c)
{
    int           n;
    char         *end, id[256], *hello;
    json_t       *j;
    const char   *parts[1];
    size_t        lens[1];

    bn_buf_reserve(&c->in, 1);
    c->in.data[c->in.last] = '\0';

    end = strstr(c->in.data + c->in.pos, "\r\n\r\n");
    if (end == NULL) {
        return BN_AGAIN;
    }

    if (strncmp(c->in.data + c->in.pos, "HTTP/1.1 101", 12) != 0) {
        bn_die("cb_browser: the server refused the WebSocket: %.*s",
               (int) (end - c->in.data - c->in.pos),
               c->in.data + c->in.pos);
    }

    bn_buf_consume(&c->in, end + 4 - (c->in.data + c->in.pos));
    c->state = BR_OPEN;

    /* the token and the id as JSON strings, escaped by jansson */

    n = snprintf(id, sizeof(id), "%s-%d", br->id, c->index);
    if (n < 0 || (size_t) n >= sizeof(id)) {
        bn_die("cb_browser: --id is too long");
    }

    j = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:{s:i}}",
                  "type", "hello", "v", 1, "token", br->token,
                  "kind", "test", "id", id,
                  "agent", "chatbridge-bench-browser/1",
                  "capabilities", "concurrency", (int) br->concurrency);
    hello = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (hello == NULL) {
        bn_die("cb_browser: --token or --id is not UTF-8");
    }

    json_decref(j);

    parts[0] = hello;
    lens[0] = strlen(hello);

    br_send(br, c, 1, parts, lens, 1);
    free(hello);

    return BN_OK;
}


/* whole frames from the server (unmasked) */

static int
br_frames(br_t *br, br_conn_t *c)
{
    int        fin, op;
    size_t     avail, hl;
    uint64_t   len;
    uint8_t   *p;

    for ( ;; ) {
        avail = bn_buf_len(&c->in);
        p = (uint8_t *) c->in.data + c->in.pos;

        if (avail < 2) {
            return BN_OK;
        }

        fin = p[0] & 0x80;
        op = p[0] & 0x0f;
        len = p[1] & 0x7f;
        hl = 2;

        if (len == 126) {
            if (avail < 4) {
                return BN_OK;
            }

            len = ((uint64_t) p[2] << 8) | p[3];
            hl = 4;

        } else if (len == 127) {
            if (avail < 10) {
                return BN_OK;
            }

            len = 0;
            for (hl = 2; hl < 10; hl++) {
                len = (len << 8) | p[hl];
            }
        }

        if (p[1] & 0x80) {
            bn_die("cb_browser: a masked frame from the server");
        }

        /* bounded before hl + len is computed: no wrap-around */

        if (len > BR_MAX_MESSAGE) {
            br_closed(br, c, "a frame over 16 MiB");
            return BN_ERROR;
        }

        if (avail < hl + len) {
            return BN_OK;
        }

        br->frames_in++;

        switch (op) {

        case 0x0:
        case 0x1:
        case 0x2:
            if (!fin || bn_buf_len(&c->msg)) {
                if (bn_buf_len(&c->msg) + len > BR_MAX_MESSAGE) {
                    br_closed(br, c, "a message over 16 MiB");
                    return BN_ERROR;
                }

                bn_buf_append(&c->msg, p + hl, len);

                if (fin) {
                    br_message(br, c, c->msg.data + c->msg.pos,
                               bn_buf_len(&c->msg));
                    c->msg.pos = 0;
                    c->msg.last = 0;
                }

            } else {
                br_message(br, c, (const char *) p + hl, len);
            }

            break;

        case 0x8:
            {
                char  why[32];

                snprintf(why, sizeof(why), "close frame %u",
                         len >= 2 ? (unsigned) (p[hl] << 8 | p[hl + 1]) : 0);
                br_closed(br, c, why);
            }
            return BN_ERROR;

        case 0x9:
            {
                const char  *parts[1];
                size_t       lens[1];

                parts[0] = (const char *) p + hl;
                lens[0] = len;
                br_send(br, c, 0xa, parts, lens, 1);
            }
            break;

        case 0xa:
            if (br->rtt && br->ping_sent) {
                bn_samples_add(&br->rtts, bn_now_ns() - br->ping_sent);
                br->ping_sent = 0;
                br->pings++;

                if (br->pings < br->rtt) {
                    br_ping(br);
                }
            }

            break;
        }

        /* the frame may have been in c->in; consume it after use */

        bn_buf_consume(&c->in, hl + len);
    }
}


static void
br_message(br_t *br, br_conn_t *c, const char *p, size_t n)
{
    json_t       *f;
    const char   *type, *id;
    br_stream_t  *s;
    json_error_t  je;

    f = json_loadb(p, n, 0, &je);
    if (f == NULL) {
        br->errors++;
        return;
    }

    type = json_string_value(json_object_get(f, "type"));
    id = json_string_value(json_object_get(f, "request_id"));

    if (type == NULL) {
        br->errors++;

    } else if (strcmp(type, "task") == 0) {
        br_task(br, c, f);

    } else if (strcmp(type, "cancel") == 0) {
        br->cancels++;
        s = id ? br_find(br, id, strlen(id)) : NULL;
        if (s) {
            br_unlink(br, s);
            s->gone = 1;
            if (!s->queued && !s->timed && !s->stalled) {
                br_release(br, s);
            }
        }

    } else if (strcmp(type, "pause") == 0) {
        br->pauses++;
        s = id ? br_find(br, id, strlen(id)) : NULL;
        if (s) {
            s->paused = 1;
        }

    } else if (strcmp(type, "resume") == 0) {
        s = id ? br_find(br, id, strlen(id)) : NULL;
        if (s && s->paused) {
            s->paused = 0;
            if (!s->timed && !s->stalled) {
                br_run(br, s);
            }
        }

    } else if (strcmp(type, "welcome") == 0) {
        c->ready = 1;

        if (++br->nready == br->nconns) {
            if (br->ready_file) {
                FILE  *rf = fopen(br->ready_file, "w");
                if (rf) {
                    fclose(rf);
                }
            }

            if (br->rtt) {
                br_ping(br);
            }
        }

    } else if (strcmp(type, "pong") == 0) {
        br_pong(br, c, f);

    } else if (strcmp(type, "ping") == 0) {
        const char  *parts[1] = { "{\"type\":\"pong\"}" };
        size_t       lens[1] = { sizeof("{\"type\":\"pong\"}") - 1 };

        br_send(br, c, 1, parts, lens, 1);

    } else if (strcmp(type, "error") == 0) {
        if (br->errors++ < 5) {
            fprintf(stderr, "cb_browser: error frame: %.*s\n", (int) n, p);
        }
    }

    json_decref(f);
}


static void
br_task(br_t *br, br_conn_t *c, json_t *f)
{
    size_t        len;
    uint64_t      h;
    json_t       *msgs, *last;
    const char   *id, *text;
    br_stream_t  *s;

    id = json_string_value(json_object_get(f, "request_id"));
    if (id == NULL || (len = strlen(id)) > BR_ID_LEN) {
        br->errors++;
        return;
    }

    msgs = json_object_get(f, "messages");
    last = json_array_get(msgs, json_array_size(msgs) - 1);
    text = json_string_value(json_object_get(last, "content"));
    if (text == NULL) {
        text = "";
    }

    s = calloc(1, sizeof(br_stream_t));
    if (s == NULL) {
        bn_die("out of memory");
    }

    memcpy(s->id, id, len + 1);
    s->id_len = len;
    s->conn = c;
    len = strlen(text);
    s->left = (unsigned) bn_directive(text, len, "chunks", 1);
    s->gap_ns = (uint64_t) bn_directive(text, len, "gap", 0) * 1000000;

    h = 1469598103934665603ULL;
    for (len = 0; len < s->id_len; len++) {
        h = (h ^ (uint8_t) id[len]) * 1099511628211ULL;
    }

    s->hnext = br->buckets[h % BR_BUCKETS];
    br->buckets[h % BR_BUCKETS] = s;

    br->tasks++;

    h = (uint64_t) bn_directive(text, strlen(text), "delay", 0) * 1000000;
    s->due = bn_now_ns() + h;

    if (h) {
        s->timed = 1;
        bn_heap_push(&br->timers, s->due, s);
        return;
    }

    br_run(br, s);
}


/* the stream's next frame: a delta, or done after the last */

static void
br_step(br_t *br, br_stream_t *s)
{
    br_conn_t   *c;
    const char  *parts[5];
    size_t       lens[5];

    c = s->conn;

    if (c->state != BR_OPEN) {
        s->gone = 1;
        return;
    }

    if (c->blocked || bn_buf_len(&c->out) > BR_HIGH_WATER
        || (br->window && c->sent - c->acked >= br->window))
    {
        /* wait for the socket: go on when it drains */
        if (!s->stalled) {
            s->stalled = 1;
            s->next = c->stalled;
            c->stalled = s;
        }
        return;
    }

    if (s->left) {
        s->left--;

        parts[0] = "{\"type\":\"delta\",\"request_id\":\"";
        lens[0] = sizeof("{\"type\":\"delta\",\"request_id\":\"") - 1;
        parts[1] = s->id;
        lens[1] = s->id_len;
        parts[2] = "\",\"text\":";
        lens[2] = sizeof("\",\"text\":") - 1;
        parts[3] = br->text_json;
        lens[3] = br->text_json_len;
        parts[4] = "}";
        lens[4] = 1;

        br_send(br, c, 1, parts, lens, 5);
        br_sent(br, c);
        br->deltas++;

        if (s->gap_ns && s->left) {
            /* on the stream's own clock: lateness does not add up */
            s->due += s->gap_ns;
            s->timed = 1;
            bn_heap_push(&br->timers, s->due, s);
            return;
        }

        if (s->left) {
            return;
        }

        /* the site's stream ended with that delta: done goes with it */
    }

    parts[0] = "{\"type\":\"done\",\"request_id\":\"";
    lens[0] = sizeof("{\"type\":\"done\",\"request_id\":\"") - 1;
    parts[1] = s->id;
    lens[1] = s->id_len;
    parts[2] = "\",\"finish_reason\":\"stop\"}";
    lens[2] = sizeof("\",\"finish_reason\":\"stop\"}") - 1;

    br_send(br, c, 1, parts, lens, 3);
    br_sent(br, c);
    br->dones++;

    br_unlink(br, s);
    s->gone = 1;
}


static void
br_run(br_t *br, br_stream_t *s)
{
    if (s->queued || s->gone) {
        return;
    }

    s->queued = 1;
    s->next = NULL;

    if (br->run_tail) {
        br->run_tail->next = s;
    } else {
        br->run_head = s;
    }

    br->run_tail = s;
}


static void
br_release(br_t *br, br_stream_t *s)
{
    if (s->queued || s->timed || s->stalled) {
        return;
    }

    free(s);
}


static br_stream_t *
br_find(br_t *br, const char *id, size_t len)
{
    size_t        i;
    uint64_t      h;
    br_stream_t  *s;

    h = 1469598103934665603ULL;
    for (i = 0; i < len; i++) {
        h = (h ^ (uint8_t) id[i]) * 1099511628211ULL;
    }

    for (s = br->buckets[h % BR_BUCKETS]; s; s = s->hnext) {
        if (s->id_len == len && memcmp(s->id, id, len) == 0) {
            return s;
        }
    }

    return NULL;
}


static void
br_unlink(br_t *br, br_stream_t *s)
{
    size_t         i;
    uint64_t       h;
    br_stream_t  **pp;

    h = 1469598103934665603ULL;
    for (i = 0; i < s->id_len; i++) {
        h = (h ^ (uint8_t) s->id[i]) * 1099511628211ULL;
    }

    for (pp = &br->buckets[h % BR_BUCKETS]; *pp; pp = &(*pp)->hnext) {
        if (*pp == s) {
            *pp = s->hnext;
            return;
        }
    }
}


/* one frame from the parts, masked as a client must */

static void
br_send(br_t *br, br_conn_t *c, int opcode, const char **parts,
    const size_t *lens, int n)
{
    int       i;
    size_t    len, k, hl;
    uint8_t  *p, *payload, mask[4];
    uint32_t  x;

    len = 0;
    for (i = 0; i < n; i++) {
        len += lens[i];
    }

    bn_buf_reserve(&c->out, len + 14);
    p = (uint8_t *) c->out.data + c->out.last;

    p[0] = (uint8_t) (0x80 | opcode);

    if (len < 126) {
        p[1] = (uint8_t) (0x80 | len);
        hl = 2;

    } else if (len < 65536) {
        p[1] = 0x80 | 126;
        p[2] = (uint8_t) (len >> 8);
        p[3] = (uint8_t) len;
        hl = 4;

    } else {
        p[1] = 0x80 | 127;
        for (k = 0; k < 8; k++) {
            p[2 + k] = (uint8_t) (len >> (56 - 8 * k));
        }
        hl = 10;
    }

    /* xorshift32: a fresh key per frame */

    x = br->rnd;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    br->rnd = x;

    memcpy(mask, &x, 4);
    memcpy(p + hl, mask, 4);

    payload = p + hl + 4;

    for (i = 0, k = 0; i < n; i++) {
        memcpy(payload + k, parts[i], lens[i]);
        k += lens[i];
    }

    for (k = 0; k < len; k++) {
        payload[k] ^= mask[k & 3];
    }

    c->out.last += hl + 4 + len;
    br->bytes_out += hl + 4 + len;

    if (!c->dirty) {
        c->dirty = 1;
        c->next_dirty = br->dirty;
        br->dirty = c;
    }
}


/* a frame about a task went: ping now and then, for the window */

static void
br_sent(br_t *br, br_conn_t *c)
{
    int          n;
    char         ping[64];
    const char  *parts[1];
    size_t       lens[1];

    c->sent++;

    if (br->window == 0 || c->sent - c->pinged < (br->window + 3) / 4) {
        return;
    }

    c->pinged = c->sent;

    n = snprintf(ping, sizeof(ping), "{\"type\":\"ping\",\"t\":%llu}",
                 (unsigned long long) c->sent);
    parts[0] = ping;
    lens[0] = (size_t) n;

    br_send(br, c, 1, parts, lens, 1);
}


/* the sidecar has read every frame before the ping this pong answers */

static void
br_pong(br_t *br, br_conn_t *c, json_t *f)
{
    uint64_t      t;
    br_stream_t  *s;

    t = (uint64_t) json_number_value(json_object_get(f, "t"));

    if (t <= c->acked || t > c->sent) {
        return;
    }

    c->acked = t;

    while (!c->blocked && c->stalled
           && c->sent - c->acked < br->window)
    {
        s = c->stalled;
        c->stalled = s->next;
        s->next = NULL;
        s->stalled = 0;

        if (s->gone) {
            br_release(br, s);
        } else if (!s->paused) {
            br_run(br, s);
        }
    }
}


static void
br_flush_all(br_t *br)
{
    br_conn_t  *c;

    while (br->dirty) {
        c = br->dirty;
        br->dirty = c->next_dirty;
        c->dirty = 0;
        c->next_dirty = NULL;

        if (!c->blocked && c->state != BR_CLOSED) {
            br_flush(br, c);
        }
    }
}


static void
br_flush(br_t *br, br_conn_t *c)
{
    ssize_t  n;

    while (bn_buf_len(&c->out)) {
        n = send(c->fd, c->out.data + c->out.pos, bn_buf_len(&c->out),
                 MSG_NOSIGNAL);

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }

            if (errno == EAGAIN) {
                c->blocked = 1;
                return;
            }

            br_closed(br, c, strerror(errno));
            return;
        }

        bn_buf_consume(&c->out, n);
    }
}


static void
br_ping(br_t *br)
{
    const char  *parts[1] = { "rtt" };
    size_t       lens[1] = { 3 };

    br->ping_sent = bn_now_ns();
    br_send(br, &br->conns[0], 0x9, parts, lens, 1);
}


static void
br_report(br_t *br)
{
    double    wall;
    uint64_t  cpu;

    wall = (double) (bn_now_ns() - br->t0) / 1e9;
    cpu = bn_self_cpu_us();

    if (br->rtt) {
        printf("rtt_n=%zu rtt_p50_us=%.1f rtt_p99_us=%.1f rtt_mean_us=%.1f\n",
               br->rtts.n, bn_samples_pct(&br->rtts, 50) / 1e3,
               bn_samples_pct(&br->rtts, 99) / 1e3,
               bn_samples_mean(&br->rtts) / 1e3);
        return;
    }

    fprintf(stderr, "cb_browser: conns=%u tasks=%llu deltas=%llu "
            "dones=%llu cancels=%llu pauses=%llu errors=%llu "
            "frames_in=%llu bytes_out=%llu cpu_s=%.3f wall_s=%.1f "
            "cpu_pct=%.1f\n",
            br->nconns, (unsigned long long) br->tasks,
            (unsigned long long) br->deltas,
            (unsigned long long) br->dones,
            (unsigned long long) br->cancels,
            (unsigned long long) br->pauses,
            (unsigned long long) br->errors,
            (unsigned long long) br->frames_in,
            (unsigned long long) br->bytes_out, cpu / 1e6, wall,
            cpu / 1e4 / wall);
}
