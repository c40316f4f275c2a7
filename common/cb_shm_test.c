
/*
 * Copyright (C) chatbridge authors
 *
 * Check tests for the shared-memory structures, single-process and across
 * real processes sharing a MAP_SHARED mapping.
 */


#include "cb_check.h"
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cb_shm.h"


/*
 * A start line in shared memory: the racers of a test wait at it until all
 * of them are there, so that they really run at the same time rather than
 * one after the other as fork() tends to make them.
 */

typedef struct {
    uint32_t  ready;
    uint32_t  go;
} start_line_t;


static start_line_t *
start_line(void)
{
    start_line_t  *st;

    st = mmap(NULL, sizeof(start_line_t), PROT_READ|PROT_WRITE,
              MAP_SHARED|MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(st, MAP_FAILED);
    st->ready = 0;
    st->go = 0;

    return st;
}


/* nobody waits at the line for ever: a racer whose partner died gives up */

#define START_LINE_SECONDS  10


static void
start_wait(start_line_t *st)
{
    time_t  deadline;

    deadline = time(NULL) + START_LINE_SECONDS;
    __atomic_fetch_add(&st->ready, 1, __ATOMIC_SEQ_CST);

    while (!__atomic_load_n(&st->go, __ATOMIC_ACQUIRE)) {
        if (time(NULL) > deadline) {
            _exit(2);
        }
        sched_yield();
    }
}


static void
start_release(start_line_t *st, uint32_t n)
{
    time_t  deadline;

    deadline = time(NULL) + START_LINE_SECONDS;

    while (__atomic_load_n(&st->ready, __ATOMIC_ACQUIRE) < n) {
        ck_assert_msg(time(NULL) <= deadline,
                      "only %u of %u racers reached the start line",
                      __atomic_load_n(&st->ready, __ATOMIC_ACQUIRE), n);
        sched_yield();
    }

    __atomic_store_n(&st->go, 1, __ATOMIC_RELEASE);
}


/* a child's failure is the test's: it must have exited 0 */

static void
reap_ok(pid_t pid)
{
    int  w;

    ck_assert_int_eq(waitpid(pid, &w, 0), pid);
    ck_assert_msg(WIFEXITED(w) && WEXITSTATUS(w) == 0,
                  "child %d: status 0x%x", (int) pid, w);
}


static void *
make_segment(uint32_t nslots, uint32_t ring, uint32_t nchunks,
    uint32_t chunk, size_t *size)
{
    void             *base;
    cb_shm_params_t   p;
    cb_shm_header_t   h;

    p.max_workers = 4;
    p.nslots = nslots;
    p.ring_size = ring;
    p.nchunks = nchunks;
    p.chunk_size = chunk;
    p.state_size = 4096;

    *size = cb_shm_layout(&h, &p);
    ck_assert_uint_gt(*size, 0);

    h.generation = 42;

    base = mmap(NULL, *size, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS,
                -1, 0);
    ck_assert_ptr_ne(base, MAP_FAILED);

    cb_shm_init(base, &h);

    return base;
}


START_TEST(test_layout_and_validate)
{
    size_t           size;
    void            *base;
    const char      *err;
    cb_shm_header_t *h;

    base = make_segment(100, 256, 10, 64, &size);
    h = cb_shm_header(base);

    ck_assert_int_eq(cb_shm_validate(base, size, 42, &err), CB_OK);
    ck_assert_uint_ge(h->queue_size, h->nslots);
    ck_assert_uint_le(h->chunks_off + h->nchunks * h->chunk_size, size);

    ck_assert_int_eq(cb_shm_validate(base, size, 43, &err), CB_ERROR);
    ck_assert_int_eq(cb_shm_validate(base, size - 4096, 42, &err), CB_ERROR);

    h->abi_version++;
    ck_assert_int_eq(cb_shm_validate(base, size, 42, &err), CB_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "ABI"));
    h->abi_version--;

    h->magic = 0;
    ck_assert_int_eq(cb_shm_validate(base, size, 42, &err), CB_ERROR);

    munmap(base, size);
}
END_TEST


START_TEST(test_layout_rejects_bad_params)
{
    cb_shm_params_t  p = { 4, 100, 300, 10, 64, 4096 };
    cb_shm_header_t  h;

    ck_assert_uint_eq(cb_shm_layout(&h, &p), 0);        /* ring not pow2 */
    p.ring_size = 256;
    p.max_workers = 0;
    ck_assert_uint_eq(cb_shm_layout(&h, &p), 0);
    p.max_workers = 300;
    ck_assert_uint_eq(cb_shm_layout(&h, &p), 0);
    p.max_workers = 4;
    p.chunk_size = 65;
    ck_assert_uint_eq(cb_shm_layout(&h, &p), 0);
}
END_TEST


START_TEST(test_queue_fifo_full_and_notify)
{
    size_t            size;
    void             *base;
    uint64_t          v, i;
    cb_queue_t       *q;

    base = make_segment(8, 256, 4, 64, &size);
    q = &cb_shm_worker(base, 0)->to_sidecar;

    /* the first producer after a drain rings, the others do not */
    ck_assert_int_eq(cb_queue_notify(q), 1);
    ck_assert_int_eq(cb_queue_notify(q), 0);
    cb_queue_notified(q);
    ck_assert_int_eq(cb_queue_notify(q), 1);

    ck_assert_int_eq(cb_queue_pop(base, q, &v), CB_AGAIN);

    for (i = 0; i <= q->mask; i++) {
        ck_assert_int_eq(cb_queue_push(base, q, i * 7), CB_OK);
    }

    /* full is an explicit state: refused, and flagged for a scan */
    ck_assert_uint_eq(q->overflow, 0);
    ck_assert_int_eq(cb_queue_push(base, q, 999), CB_AGAIN);
    ck_assert_uint_eq(q->overflow, 1);

    for (i = 0; i <= q->mask; i++) {
        ck_assert_int_eq(cb_queue_pop(base, q, &v), CB_OK);
        ck_assert_uint_eq(v, i * 7);
    }

    ck_assert_int_eq(cb_queue_pop(base, q, &v), CB_AGAIN);

    munmap(base, size);
}
END_TEST


/* a producer process and a consumer process, with doorbells as a pipe */

START_TEST(test_queue_across_processes)
{
    int          bell[2];
    char         c;
    pid_t        pid;
    size_t       size;
    void        *base;
    uint64_t     v, expect, rings;
    cb_queue_t  *q;
    const uint64_t  n = 200000;

    base = make_segment(64, 256, 4, 64, &size);
    q = &cb_shm_worker(base, 1)->to_worker;
    ck_assert_int_eq(pipe(bell), 0);

    pid = fork();
    ck_assert_int_ne(pid, -1);

    if (pid == 0) {
        for (v = 0; v < n; /* void */) {
            if (cb_queue_push(base, q, v) != CB_OK) {
                q->overflow = 0;
                continue;       /* full: wait for the consumer */
            }
            v++;
            if (cb_queue_notify(q)) {
                (void) !write(bell[1], "D", 1);
            }
        }
        _exit(0);
    }

    expect = 0;
    rings = 0;

    while (expect < n) {
        ck_assert_int_eq(read(bell[0], &c, 1), 1);
        rings++;
        cb_queue_notified(q);

        while (cb_queue_pop(base, q, &v) == CB_OK) {
            ck_assert_uint_eq(v, expect);
            expect++;
        }
    }

    reap_ok(pid);

    /* a doorbell only on empty-to-non-empty: far fewer than entries */
    ck_assert_uint_lt(rings, n);

    munmap(base, size);
}
END_TEST


START_TEST(test_slot_claim_release)
{
    size_t          size;
    void           *base;
    uint32_t        i, s, gen;
    cb_shm_slot_t  *slot;

    base = make_segment(100, 256, 4, 64, &size);

    for (i = 0; i < 100; i++) {
        ck_assert_int_eq(cb_slot_claim(base, 1, &s), CB_OK);
        slot = cb_shm_slot(base, s);
        ck_assert_uint_eq(slot->owner, 1);
        ck_assert_uint_eq(cb_slot_state(slot), CB_SLOT_WRITING);
    }

    ck_assert_int_eq(cb_slot_claim(base, 1, &s), CB_AGAIN);

    slot = cb_shm_slot(base, 37);
    gen = slot->gen;
    cb_slot_release(base, 37);
    ck_assert_uint_eq(slot->owner, 0);
    ck_assert_uint_eq(cb_slot_state(slot), CB_SLOT_FREE);

    ck_assert_int_eq(cb_slot_claim(base, 2, &s), CB_OK);
    ck_assert_uint_eq(s, 37);
    ck_assert_uint_eq(slot->gen, gen + 1);
    ck_assert_uint_eq(slot->owner, 2);

    munmap(base, size);
}
END_TEST


/* several processes claim at once: every slot is claimed exactly once */

START_TEST(test_slot_claims_race)
{
    int            k;
    pid_t          pids[4];
    size_t         size;
    void          *base;
    uint32_t       s, i, *seen;
    start_line_t  *st;
    const uint32_t  nslots = 4096;

    base = make_segment(nslots, 256, 4, 64, &size);
    seen = mmap(NULL, nslots * 4, PROT_READ|PROT_WRITE,
                MAP_SHARED|MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(seen, MAP_FAILED);
    st = start_line();

    for (k = 0; k < 4; k++) {
        pids[k] = fork();
        ck_assert_int_ne(pids[k], -1);
        if (pids[k] == 0) {
            start_wait(st);
            while (cb_slot_claim(base, k + 1, &s) == CB_OK) {
                __atomic_fetch_add(&seen[s], 1, __ATOMIC_SEQ_CST);
            }
            _exit(0);
        }
    }

    start_release(st, 4);

    for (k = 0; k < 4; k++) {
        reap_ok(pids[k]);
    }

    for (i = 0; i < nslots; i++) {
        ck_assert_uint_eq(seen[i], 1);
        ck_assert_uint_ge(cb_shm_slot(base, i)->owner, 1);
    }

    munmap(st, sizeof(start_line_t));
    munmap(seen, nslots * 4);
    munmap(base, size);
}
END_TEST


/* exactly one of "worker cancels" and "sidecar finishes" wins */

START_TEST(test_cancel_cas_race)
{
    int             i, won;
    pid_t           pid;
    size_t          size;
    void           *base;
    int            *wins;
    start_line_t   *st;
    cb_shm_slot_t  *s;

    base = make_segment(1, 256, 4, 64, &size);
    s = cb_shm_slot(base, 0);
    wins = mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS,
                -1, 0);
    ck_assert_ptr_ne(wins, MAP_FAILED);
    st = start_line();

    for (i = 0; i < 2000; i++) {
        wins[0] = wins[1] = 0;
        __atomic_store_n(&s->state, CB_SLOT_ACTIVE, __ATOMIC_SEQ_CST);

        st->ready = 0;
        st->go = 0;

        pid = fork();
        ck_assert_int_ne(pid, -1);
        if (pid == 0) {
            start_wait(st);
            wins[1] = cb_slot_transition(s, CB_SLOT_ACTIVE, CB_SLOT_DONE);
            _exit(0);
        }

        start_release(st, 1);
        wins[0] = cb_slot_transition(s, CB_SLOT_ACTIVE, CB_SLOT_CANCELLED);
        reap_ok(pid);

        won = wins[0] + wins[1];
        ck_assert_int_eq(won, 1);
        ck_assert_uint_eq(cb_slot_state(s), wins[0] ? CB_SLOT_CANCELLED
                                                    : CB_SLOT_DONE);
    }

    munmap(st, sizeof(start_line_t));
    munmap(wins, 4096);
    munmap(base, size);
}
END_TEST


START_TEST(test_chunks_write_read_free)
{
    char         in[1000], out[1000];
    size_t       size, i, lens[3];
    void        *base;
    uint32_t     first, again;
    const void  *parts[3];

    base = make_segment(4, 256, 16, 64, &size);

    for (i = 0; i < sizeof(in); i++) {
        in[i] = (char) (i * 31 + 7);
    }

    parts[0] = in;
    lens[0] = 10;
    parts[1] = in + 10;
    lens[1] = 500;
    parts[2] = in + 510;
    lens[2] = 490;

    ck_assert_int_eq(cb_chunks_write(base, 3, parts, lens, 3, &first), CB_OK);
    ck_assert_uint_eq(cb_chunks_in_use(base), 16);     /* 1000 / 64, up */

    memset(out, 0, sizeof(out));
    ck_assert_uint_eq(cb_chunks_read(base, first, 1000, out, sizeof(out)),
                      1000);
    ck_assert_int_eq(memcmp(in, out, 1000), 0);

    /* the arena is full now: a write fails and leaves nothing behind */
    lens[0] = 1;
    ck_assert_int_eq(cb_chunks_write(base, 3, parts, lens, 1, &again),
                     CB_AGAIN);
    ck_assert_uint_eq(cb_chunks_in_use(base), 16);

    cb_chunks_free(base, first);
    ck_assert_uint_eq(cb_chunks_in_use(base), 0);

    /* a write that cannot finish frees what it took */
    lens[0] = 1000;
    lens[1] = 200;
    ck_assert_int_eq(cb_chunks_write(base, 3, parts, lens, 2, &again),
                     CB_AGAIN);
    ck_assert_uint_eq(cb_chunks_in_use(base), 0);

    munmap(base, size);
}
END_TEST


/* a worker that dies holding slots and chunks: all found by owner */

START_TEST(test_reclaim_after_death)
{
    int          w;
    pid_t        pid;
    size_t       size, len;
    void        *base;
    uint32_t     i, s, first, mine;
    const void  *part;
    char         data[300];

    base = make_segment(50, 256, 40, 64, &size);
    memset(data, 'x', sizeof(data));

    pid = fork();
    if (pid == 0) {
        part = data;
        len = sizeof(data);
        for (i = 0; i < 7; i++) {
            if (cb_slot_claim(base, 9, &s) != CB_OK
                || cb_chunks_write(base, 9, &part, &len, 1, &first) != CB_OK)
            {
                _exit(1);
            }
        }
        _exit(0);       /* dies without giving anything back */
    }

    waitpid(pid, &w, 0);
    ck_assert(WIFEXITED(w) && WEXITSTATUS(w) == 0);
    ck_assert_uint_eq(cb_chunks_in_use(base), 35);

    mine = 0;
    for (i = 0; i < 50; i++) {
        if (cb_shm_slot(base, i)->owner == 9) {
            cb_slot_release(base, i);
            mine++;
        }
    }

    ck_assert_uint_eq(mine, 7);
    ck_assert_uint_eq(cb_chunks_reclaim(base, 9), 35);
    ck_assert_uint_eq(cb_chunks_in_use(base), 0);

    /* and everything can be claimed again */
    for (i = 0; i < 50; i++) {
        ck_assert_int_eq(cb_slot_claim(base, 1, &s), CB_OK);
    }

    munmap(base, size);
}
END_TEST


START_TEST(test_ring_full_and_order)
{
    char              buf[512];
    size_t            size;
    void             *base;
    uint32_t          n, i;
    cb_rec_header_t   hdr;

    base = make_segment(1, 256, 4, 64, &size);

    ck_assert_uint_eq(cb_ring_max_record(base), 120);
    ck_assert_int_eq(cb_ring_write(base, 0, CB_REC_DELTA, 0, buf, 121),
                     CB_ERROR);

    /* 8-byte header + 24-byte payload = 32: eight fit in 256 */
    for (n = 0; n < 100; n++) {
        memset(buf, 'a' + n, 24);
        if (cb_ring_write(base, 0, CB_REC_DELTA, 0, buf, 24) != CB_OK) {
            break;
        }
    }

    ck_assert_uint_eq(n, 8);
    ck_assert_uint_eq(cb_ring_free_space(base, 0), 0);

    for (i = 0; i < n; i++) {
        ck_assert_int_eq(cb_ring_read(base, 0, &hdr, buf, sizeof(buf)),
                         CB_OK);
        ck_assert_uint_eq(hdr.len, 24);
        ck_assert_uint_eq(hdr.type, CB_REC_DELTA);
        ck_assert_int_eq(buf[0], 'a' + i);
    }

    ck_assert_int_eq(cb_ring_read(base, 0, &hdr, buf, sizeof(buf)), CB_AGAIN);
    ck_assert(cb_ring_empty(base, 0));

    munmap(base, size);
}
END_TEST


/* random record sizes through many wrap-arounds, against a model */

START_TEST(test_ring_wraps_like_a_model)
{
    char              in[200], out[200];
    size_t            size;
    void             *base;
    uint32_t          i, len, written, read, lens[64];
    uint32_t          head, tail;
    cb_rec_header_t   hdr;

    base = make_segment(1, 256, 4, 64, &size);
    srand(7);

    written = read = head = tail = 0;

    for (i = 0; i < 20000; i++) {
        if (rand() % 2) {
            len = rand() % 121;
            memset(in, (char) written, len);
            if (cb_ring_write2(base, 0, CB_REC_DELTA, (uint8_t) (len & 1),
                               in, len / 2, in + len / 2, len - len / 2)
                == CB_OK)
            {
                lens[tail++ % 64] = len;
                written++;
            }
            continue;
        }

        if (cb_ring_read(base, 0, &hdr, out, sizeof(out)) == CB_OK) {
            len = lens[head++ % 64];
            ck_assert_uint_eq(hdr.len, len);
            ck_assert_uint_eq(hdr.flags, len & 1);
            if (len) {
                ck_assert_int_eq(out[0], (char) read);
                ck_assert_int_eq(out[len - 1], (char) read);
            }
            read++;

        } else {
            ck_assert_uint_eq(read, written);
        }
    }

    ck_assert_uint_gt(read, 1000);

    munmap(base, size);
}
END_TEST


/* the sidecar writes records in one process, a worker reads in another */

START_TEST(test_ring_across_processes)
{
    char             buf[128];
    pid_t            pid;
    size_t           size;
    void            *base;
    uint32_t         i, got;
    cb_rec_header_t  hdr;
    const uint32_t   n = 100000;

    base = make_segment(1, 1024, 4, 64, &size);

    pid = fork();
    ck_assert_int_ne(pid, -1);
    if (pid == 0) {
        for (i = 0; i < n; /* void */) {
            if (cb_ring_write(base, 0, CB_REC_DELTA, 0, &i, sizeof(i))
                == CB_OK)
            {
                i++;
            }
        }
        _exit(0);
    }

    for (got = 0; got < n; /* void */) {
        if (cb_ring_read(base, 0, &hdr, buf, sizeof(buf)) != CB_OK) {
            continue;
        }
        ck_assert_uint_eq(hdr.len, sizeof(uint32_t));
        memcpy(&i, buf, sizeof(i));
        ck_assert_uint_eq(i, got);
        got++;
    }

    reap_ok(pid);
    munmap(base, size);
}
END_TEST


/* a reader never sees a half-written state document */

START_TEST(test_state_seqlock)
{
    int            w = 0;
    char           doc[2048], got[4096];
    pid_t          pid, done;
    size_t         size;
    void          *base;
    uint32_t       len, version, i, k, reads, last;
    start_line_t  *st;

    base = make_segment(1, 256, 4, 64, &size);
    st = start_line();

    pid = fork();
    ck_assert_int_ne(pid, -1);
    if (pid == 0) {
        start_wait(st);
        for (i = 0; i < 20000; i++) {
            memset(doc, 'A' + i % 26, sizeof(doc));
            cb_state_publish(base, doc, 1000 + i % 1000);
        }
        _exit(0);
    }

    reads = 0;
    last = 0;
    start_release(st, 1);

    while ((done = waitpid(pid, &w, WNOHANG)) == 0) {
        if (cb_state_read(base, got, sizeof(got), &len, &version) != CB_OK
            || len == 0)
        {
            continue;
        }

        for (k = 1; k < len; k++) {
            ck_assert_int_eq(got[k], got[0]);   /* one publish, whole */
        }

        ck_assert_uint_ge(version, last);
        last = version;
        reads++;
    }

    ck_assert_int_eq(done, pid);
    ck_assert_msg(WIFEXITED(w) && WEXITSTATUS(w) == 0, "writer: 0x%x", w);
    ck_assert_uint_gt(reads, 0);

    ck_assert_int_eq(cb_state_read(base, got, sizeof(got), &len, &version),
                     CB_OK);
    ck_assert_uint_eq(version, 20000);

    munmap(st, sizeof(start_line_t));
    munmap(base, size);
}
END_TEST


START_TEST(test_names)
{
    ck_assert_str_eq(cb_slot_state_name(CB_SLOT_CANCELLED), "CANCELLED");
    ck_assert_str_eq(cb_record_name(CB_REC_REASONING), "REASONING");
    ck_assert_str_eq(cb_finish_reason_name(CB_FINISH_CONTENT_FILTER),
                     "content_filter");
    ck_assert_str_eq(cb_finish_reason_name(99), "stop");
}
END_TEST


int
main(void)
{
    Suite  *s;
    TCase  *tc;

    s = suite_create("cb_shm");
    tc = tcase_create("core");
    tcase_set_timeout(tc, 60);

    tcase_add_test(tc, test_layout_and_validate);
    tcase_add_test(tc, test_layout_rejects_bad_params);
    tcase_add_test(tc, test_queue_fifo_full_and_notify);
    tcase_add_test(tc, test_queue_across_processes);
    tcase_add_test(tc, test_slot_claim_release);
    tcase_add_test(tc, test_slot_claims_race);
    tcase_add_test(tc, test_cancel_cas_race);
    tcase_add_test(tc, test_chunks_write_read_free);
    tcase_add_test(tc, test_reclaim_after_death);
    tcase_add_test(tc, test_ring_full_and_order);
    tcase_add_test(tc, test_ring_wraps_like_a_model);
    tcase_add_test(tc, test_ring_across_processes);
    tcase_add_test(tc, test_state_seqlock);
    tcase_add_test(tc, test_names);

    suite_add_tcase(s, tc);

    return cb_check_run(s);
}
