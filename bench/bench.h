
/*
 * Copyright (C) chatbridge authors
 *
 * What the benchmark programs share: clocks, sockets, growable buffers,
 * latency samples and their percentiles, and CPU time read from /proc.
 * Plain C, Linux only, no dependencies.
 */

#ifndef _BN_BENCH_H_INCLUDED_
#define _BN_BENCH_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>


#define BN_OK           0
#define BN_ERROR        -1
#define BN_AGAIN        -2


/* CLOCK_MONOTONIC in nanoseconds */
uint64_t bn_now_ns(void);

/* "unix:/path" or "host:port"; a non-blocking connected (or connecting)
 * socket, or -1 */
int bn_connect(const char *addr);

/* a non-blocking listening TCP socket on host:port, or -1 */
int bn_listen(const char *addr, int backlog);

int bn_nonblock(int fd);

/* the process's descriptor limit, raised to the hard limit */
long bn_raise_nofile(void);

void bn_die(const char *fmt, ...) __attribute__((noreturn,
    format(printf, 1, 2)));


/* a growable byte buffer: data in [pos, last) */

typedef struct {
    char       *data;
    size_t      pos;
    size_t      last;
    size_t      size;
} bn_buf_t;

void bn_buf_reserve(bn_buf_t *b, size_t more);
void bn_buf_append(bn_buf_t *b, const void *p, size_t n);
void bn_buf_consume(bn_buf_t *b, size_t n);
void bn_buf_free(bn_buf_t *b);

#define bn_buf_len(b)   ((b)->last - (b)->pos)

/*
 * Everything a non-blocking socket has now, appended to b: BN_AGAIN once
 * it is drained; BN_ERROR at EOF (errno 0), on an error (errno), or when
 * b would hold more than max bytes (errno EMSGSIZE: b holds max bytes, and
 * the socket has more; max 0: no bound).  Holding exactly max is not too
 * much.
 */
int bn_recv_into(int fd, bn_buf_t *b, size_t max);


/* a whole file, NUL-terminated (*len without the NUL); NULL and errno */
char *bn_read_file(const char *path, size_t *len);

/*
 * The number of the first "[[NAME N]]" directive in text (as the bench
 * browser and t/lib/fake-browser.mjs read a prompt), or def
 */
long bn_directive(const char *text, size_t len, const char *name, long def);


/* latency samples in nanoseconds */

typedef struct {
    uint64_t   *v;
    size_t      n;
    size_t      size;
    int         sorted;
} bn_samples_t;

void bn_samples_add(bn_samples_t *s, uint64_t v);
uint64_t bn_samples_pct(bn_samples_t *s, double pct);
double bn_samples_mean(const bn_samples_t *s);


/* a min-heap of timers: (when, data) */

typedef struct {
    uint64_t    when;
    void       *data;
} bn_timer_t;

typedef struct {
    bn_timer_t *v;
    size_t      n;
    size_t      size;
} bn_heap_t;

void bn_heap_push(bn_heap_t *h, uint64_t when, void *data);
bn_timer_t *bn_heap_top(bn_heap_t *h);
void bn_heap_pop(bn_heap_t *h);


/* CPU time (user + system) in microseconds */

uint64_t bn_proc_cpu_us(pid_t pid);          /* /proc/<pid>/sched or stat */
uint64_t bn_pids_cpu_us(const pid_t *pids, size_t n);
uint64_t bn_self_cpu_us(void);               /* getrusage */

/* the whole machine from /proc/stat, in microseconds, summed over every
 * CPU: busy (user, nice, system; not interrupts) and steal */
void bn_machine_cpu_us(uint64_t *busy, uint64_t *steal);

/* "1,2,3" into pids; returns how many */
size_t bn_parse_pids(const char *s, pid_t *pids, size_t max);

/* resident private memory in bytes, from /proc/<pid>/status (RssAnon) */
uint64_t bn_proc_anon_bytes(pid_t pid);

/* bytes a file occupies (st_blocks), e.g. /proc/<pid>/fd/<n> of a memfd */
uint64_t bn_file_bytes(const char *path);


#endif /* _BN_BENCH_H_INCLUDED_ */
