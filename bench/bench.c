
/*
 * Copyright (C) chatbridge authors
 */


#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "bench.h"


static uint64_t bn_proc_sched_us(pid_t pid);
static uint64_t bn_proc_stat_us(pid_t pid);
static int bn_cmp_u64(const void *a, const void *b);
static int bn_inet_addr(const char *addr, struct sockaddr_in *sin);


uint64_t
bn_now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
}


void
bn_die(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);

    exit(1);
}


int
bn_nonblock(int fd)
{
    int  flags;

    flags = fcntl(fd, F_GETFL);
    if (flags == -1) {
        return BN_ERROR;
    }

    return fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1 ? BN_ERROR : BN_OK;
}


int
bn_connect(const char *addr)
{
    int                 fd, one;
    struct sockaddr_in  sin;
    struct sockaddr_un  sun;

    if (strncmp(addr, "unix:", 5) == 0) {
        if (strlen(addr + 5) >= sizeof(sun.sun_path)) {
            errno = ENAMETOOLONG;
            return -1;
        }

        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        strcpy(sun.sun_path, addr + 5);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd == -1) {
            return -1;
        }

        if (connect(fd, (struct sockaddr *) &sun, sizeof(sun)) == -1
            && errno != EINPROGRESS && errno != EAGAIN)
        {
            close(fd);
            return -1;
        }

        return fd;
    }

    if (bn_inet_addr(addr, &sin) != BN_OK) {
        errno = EINVAL;
        return -1;
    }

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        return -1;
    }

    one = 1;
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    if (connect(fd, (struct sockaddr *) &sin, sizeof(sin)) == -1
        && errno != EINPROGRESS)
    {
        close(fd);
        return -1;
    }

    return fd;
}


int
bn_listen(const char *addr, int backlog)
{
    int                 fd, one;
    struct sockaddr_in  sin;

    if (bn_inet_addr(addr, &sin) != BN_OK) {
        errno = EINVAL;
        return -1;
    }

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        return -1;
    }

    one = 1;
    (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));

    if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) == -1
        || listen(fd, backlog) == -1)
    {
        close(fd);
        return -1;
    }

    return fd;
}


long
bn_raise_nofile(void)
{
    struct rlimit  rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
        return -1;
    }

    rl.rlim_cur = rl.rlim_max;
    (void) setrlimit(RLIMIT_NOFILE, &rl);

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
        return -1;
    }

    return (long) rl.rlim_cur;
}


void
bn_buf_reserve(bn_buf_t *b, size_t more)
{
    size_t  size;

    if (b->pos && b->pos == b->last) {
        b->pos = 0;
        b->last = 0;
    }

    if (b->last + more <= b->size) {
        return;
    }

    /* slide down first: cheaper than growing */

    if (b->pos && b->last - b->pos + more <= b->size) {
        memmove(b->data, b->data + b->pos, b->last - b->pos);
        b->last -= b->pos;
        b->pos = 0;
        return;
    }

    size = b->size ? b->size : 4096;

    while (size < b->last - b->pos + more) {
        size *= 2;
    }

    if (b->pos) {
        memmove(b->data, b->data + b->pos, b->last - b->pos);
        b->last -= b->pos;
        b->pos = 0;
    }

    b->data = realloc(b->data, size);
    if (b->data == NULL) {
        bn_die("out of memory");
    }

    b->size = size;
}


void
bn_buf_append(bn_buf_t *b, const void *p, size_t n)
{
    bn_buf_reserve(b, n);
    memcpy(b->data + b->last, p, n);
    b->last += n;
}


void
bn_buf_consume(bn_buf_t *b, size_t n)
{
    b->pos += n;

    if (b->pos == b->last) {
        b->pos = 0;
        b->last = 0;
    }
}


void
bn_buf_free(bn_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(bn_buf_t));
}


int
bn_recv_into(int fd, bn_buf_t *b, size_t max)
{
    char     byte;
    size_t   room;
    ssize_t  n;

    for ( ;; ) {

        /* full: too much only if there is more to read */

        if (max && bn_buf_len(b) >= max) {
            n = recv(fd, &byte, 1, MSG_PEEK);

            if (n > 0) {
                errno = EMSGSIZE;
                return BN_ERROR;
            }

            if (n == 0) {
                errno = 0;
                return BN_ERROR;
            }

            if (errno == EINTR) {
                continue;
            }

            return errno == EAGAIN || errno == EWOULDBLOCK ? BN_AGAIN
                                                           : BN_ERROR;
        }

        bn_buf_reserve(b, 65536);
        room = b->size - b->last;

        if (max && room > max - bn_buf_len(b)) {
            room = max - bn_buf_len(b);
        }

        n = recv(fd, b->data + b->last, room, 0);

        if (n > 0) {
            b->last += n;
            continue;
        }

        if (n == 0) {
            errno = 0;
            return BN_ERROR;
        }

        if (errno == EINTR) {
            continue;
        }

        return errno == EAGAIN || errno == EWOULDBLOCK ? BN_AGAIN : BN_ERROR;
    }
}


char *
bn_read_file(const char *path, size_t *len)
{
    int           fd, err;
    char         *p;
    size_t        got;
    ssize_t       n;
    struct stat   st;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        return NULL;
    }

    if (fstat(fd, &st) == -1) {
        err = errno;
        close(fd);
        errno = err;
        return NULL;
    }

    p = malloc((size_t) st.st_size + 1);
    if (p == NULL) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }

    got = 0;

    while (got < (size_t) st.st_size) {
        n = read(fd, p + got, (size_t) st.st_size - got);

        if (n == -1 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            err = n == 0 ? EIO : errno;     /* 0: the file shrank */
            free(p);
            close(fd);
            errno = err;
            return NULL;
        }

        got += (size_t) n;
    }

    close(fd);

    p[got] = '\0';
    *len = got;

    return p;
}


long
bn_directive(const char *text, size_t len, const char *name, long def)
{
    int          n;
    char         key[64];
    const char  *p;

    n = snprintf(key, sizeof(key), "[[%s ", name);
    if (n < 0 || (size_t) n >= sizeof(key)) {
        return def;
    }

    p = memmem(text, len, key, (size_t) n);
    if (p == NULL) {
        return def;
    }

    /* strtol stops at the "]]"; the text need not be NUL-terminated */

    p += n;
    len -= (size_t) (p - text);

    for (n = 0; (size_t) n < len && n < 20 && p[n] >= '0' && p[n] <= '9';
         n++)
    {
        /* the digits */
    }

    if (n == 0) {
        return def;
    }

    memcpy(key, p, n);
    key[n] = '\0';

    return strtol(key, NULL, 10);
}


void
bn_samples_add(bn_samples_t *s, uint64_t v)
{
    if (s->n == s->size) {
        s->size = s->size ? 2 * s->size : 4096;
        s->v = realloc(s->v, s->size * sizeof(uint64_t));
        if (s->v == NULL) {
            bn_die("out of memory");
        }
    }

    s->v[s->n++] = v;
    s->sorted = 0;
}


/* nearest rank: the smallest value with at least pct% at or below it */

uint64_t
bn_samples_pct(bn_samples_t *s, double pct)
{
    size_t  i;

    if (s->n == 0) {
        return 0;
    }

    if (!s->sorted) {
        qsort(s->v, s->n, sizeof(uint64_t), bn_cmp_u64);
        s->sorted = 1;
    }

    i = (size_t) (pct / 100.0 * (double) s->n + 0.999999);
    if (i > 0) {
        i--;
    }

    if (i >= s->n) {
        i = s->n - 1;
    }

    return s->v[i];
}


double
bn_samples_mean(const bn_samples_t *s)
{
    size_t  i;
    double  sum;

    if (s->n == 0) {
        return 0;
    }

    sum = 0;

    for (i = 0; i < s->n; i++) {
        sum += (double) s->v[i];
    }

    return sum / (double) s->n;
}


void
bn_heap_push(bn_heap_t *h, uint64_t when, void *data)
{
    size_t      i, parent;
    bn_timer_t  t;

    if (h->n == h->size) {
        h->size = h->size ? 2 * h->size : 1024;
        h->v = realloc(h->v, h->size * sizeof(bn_timer_t));
        if (h->v == NULL) {
            bn_die("out of memory");
        }
    }

    t.when = when;
    t.data = data;

    for (i = h->n++; i > 0; i = parent) {
        parent = (i - 1) / 2;

        if (h->v[parent].when <= when) {
            break;
        }

        h->v[i] = h->v[parent];
    }

    h->v[i] = t;
}


bn_timer_t *
bn_heap_top(bn_heap_t *h)
{
    return h->n ? &h->v[0] : NULL;
}


void
bn_heap_pop(bn_heap_t *h)
{
    size_t      i, child;
    bn_timer_t  last;

    if (h->n == 0) {
        return;
    }

    last = h->v[--h->n];

    for (i = 0; (child = 2 * i + 1) < h->n; i = child) {
        if (child + 1 < h->n && h->v[child + 1].when < h->v[child].when) {
            child++;
        }

        if (last.when <= h->v[child].when) {
            break;
        }

        h->v[i] = h->v[child];
    }

    h->v[i] = last;
}


/*
 * CPU time of a process: se.sum_exec_runtime from /proc/<pid>/sched (the
 * scheduler's own nanosecond count) where the kernel has it, otherwise
 * utime + stime from /proc/<pid>/stat (clock ticks, 10 ms).
 */

uint64_t
bn_proc_cpu_us(pid_t pid)
{
    uint64_t  us;

    us = bn_proc_sched_us(pid);
    if (us != (uint64_t) -1) {
        return us;
    }

    return bn_proc_stat_us(pid);
}


static uint64_t
bn_proc_sched_us(pid_t pid)
{
    FILE    *f;
    char     line[256], path[64];
    double   ms;

    snprintf(path, sizeof(path), "/proc/%d/sched", (int) pid);

    f = fopen(path, "re");
    if (f == NULL) {
        return (uint64_t) -1;
    }

    ms = -1;

    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "se.sum_exec_runtime", 19) == 0) {
            ms = atof(strchr(line, ':') ? strchr(line, ':') + 1 : "-1");
            break;
        }
    }

    fclose(f);

    return ms < 0 ? (uint64_t) -1 : (uint64_t) (ms * 1000);
}


static uint64_t
bn_proc_stat_us(pid_t pid)
{
    int                 fd, field;
    char               *p, buf[1024], path[64];
    ssize_t             n;
    unsigned long long  utime, stime;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        return 0;
    }

    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);

    if (n <= 0) {
        return 0;
    }

    buf[n] = '\0';

    /* the command may hold spaces and parentheses: start after the last ')' */

    p = strrchr(buf, ')');
    if (p == NULL) {
        return 0;
    }

    /* fields 3.. follow; utime is field 14, stime 15 */

    field = 2;
    utime = 0;
    stime = 0;

    for (p++; *p && field < 15; p++) {
        if (*p != ' ') {
            continue;
        }

        field++;

        if (field == 14) {
            utime = strtoull(p + 1, NULL, 10);

        } else if (field == 15) {
            stime = strtoull(p + 1, NULL, 10);
        }
    }

    return (uint64_t) (utime + stime) * 1000000 / sysconf(_SC_CLK_TCK);
}


uint64_t
bn_pids_cpu_us(const pid_t *pids, size_t n)
{
    size_t    i;
    uint64_t  sum;

    sum = 0;

    for (i = 0; i < n; i++) {
        sum += bn_proc_cpu_us(pids[i]);
    }

    return sum;
}


uint64_t
bn_self_cpu_us(void)
{
    struct rusage  ru;

    if (getrusage(RUSAGE_SELF, &ru) == -1) {
        return 0;
    }

    return (uint64_t) ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec
           + (uint64_t) ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
}


void
bn_machine_cpu_us(uint64_t *busy, uint64_t *steal)
{
    FILE                *f;
    long                 hz;
    unsigned long long   v[10];

    *busy = 0;
    *steal = 0;

    f = fopen("/proc/stat", "re");
    if (f == NULL) {
        return;
    }

    memset(v, 0, sizeof(v));

    /* cpu  user nice system idle iowait irq softirq steal guest guest_nice */

    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu",
               &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7])
        == 8)
    {
        /*
         * interrupts and softirqs are left out: at high rates most of them
         * are the kernel delivering the bench's own loopback traffic,
         * often on an idle CPU, in no process's account
         */

        hz = sysconf(_SC_CLK_TCK);
        *busy = (v[0] + v[1] + v[2]) * 1000000 / hz;
        *steal = v[7] * 1000000 / hz;
    }

    fclose(f);
}


size_t
bn_parse_pids(const char *s, pid_t *pids, size_t max)
{
    char    *end;
    long     v;
    size_t   n;

    n = 0;

    while (s && *s && n < max) {
        v = strtol(s, &end, 10);

        if (end == s) {
            break;
        }

        if (v > 0) {
            pids[n++] = (pid_t) v;
        }

        s = (*end == ',') ? end + 1 : end;
    }

    return n;
}


uint64_t
bn_proc_anon_bytes(pid_t pid)
{
    FILE                *f;
    char                 line[256], path[64];
    unsigned long long   kb;

    snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);

    f = fopen(path, "re");
    if (f == NULL) {
        return 0;
    }

    kb = 0;

    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "RssAnon: %llu kB", &kb) == 1) {
            break;
        }
    }

    fclose(f);

    return (uint64_t) kb * 1024;
}


uint64_t
bn_file_bytes(const char *path)
{
    struct stat  st;

    if (path == NULL || stat(path, &st) == -1) {
        return 0;
    }

    return (uint64_t) st.st_blocks * 512;
}


static int
bn_cmp_u64(const void *a, const void *b)
{
    uint64_t  x, y;

    x = *(const uint64_t *) a;
    y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}


static int
bn_inet_addr(const char *addr, struct sockaddr_in *sin)
{
    char        host[64];
    const char  *colon;
    long         port;

    colon = strrchr(addr, ':');
    if (colon == NULL || (size_t) (colon - addr) >= sizeof(host)) {
        return BN_ERROR;
    }

    memcpy(host, addr, colon - addr);
    host[colon - addr] = '\0';

    port = strtol(colon + 1, NULL, 10);
    if (port <= 0 || port > 65535) {
        return BN_ERROR;
    }

    memset(sin, 0, sizeof(struct sockaddr_in));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t) port);

    if (inet_pton(AF_INET, host[0] ? host : "127.0.0.1", &sin->sin_addr)
        != 1)
    {
        return BN_ERROR;
    }

    return BN_OK;
}
