
/*
 * Copyright (C) chatbridge authors
 *
 * Lock-free operations on the chatbridge shared segment.  Compiled into both
 * the nginx module and the sidecar; depends on nothing but libc.
 */


#include <string.h>

#include "cb_shm.h"


#define cb_load(p)          __atomic_load_n(p, __ATOMIC_ACQUIRE)
#define cb_load_relaxed(p)  __atomic_load_n(p, __ATOMIC_RELAXED)
#define cb_store(p, v)      __atomic_store_n(p, v, __ATOMIC_RELEASE)
#define cb_fence()          __atomic_thread_fence(__ATOMIC_SEQ_CST)

#define cb_align(n, a)                                                       \
    (((n) + ((uint64_t) (a) - 1)) & ~((uint64_t) (a) - 1))
#define cb_round8(n)        (((n) + 7u) & ~7u)


static uint64_t *cb_bitmap(void *base, uint64_t off);
static int cb_bitmap_claim(uint64_t *bm, uint32_t nbits, uint32_t *hint,
    uint32_t *owner0, size_t stride, uint32_t owner, uint32_t *index);
static void cb_bitmap_release(uint64_t *bm, uint32_t *hint, uint32_t *owner,
    uint32_t index);
static void cb_ring_copy_in(uint8_t *ring, uint32_t size, uint32_t pos,
    const void *data, uint32_t len);
static void cb_ring_copy_out(const uint8_t *ring, uint32_t size, uint32_t pos,
    void *dst, uint32_t len);
static int cb_is_pow2(uint64_t n);


#define CB_SLOT_NAME(name, value, doc)  #name,
static const char  *cb_slot_state_names[] = { CB_SLOT_STATES(CB_SLOT_NAME) };
#undef CB_SLOT_NAME

#define CB_REC_NAME(name, value, doc)  [value] = #name,
static const char  *cb_record_names[CB_REC_MAX] = { CB_RECORDS(CB_REC_NAME) };
#undef CB_REC_NAME

#define CB_FINISH_NAME(name, value, str)  str,
static const char  *cb_finish_names[] = { CB_FINISH_REASONS(CB_FINISH_NAME) };
#undef CB_FINISH_NAME


uint64_t
cb_shm_layout(cb_shm_header_t *h, const cb_shm_params_t *p)
{
    uint32_t  qsize;
    uint64_t  off;

    memset(h, 0, sizeof(cb_shm_header_t));

    if (p->max_workers == 0 || p->max_workers > CB_MAX_WORKERS
        || p->nslots == 0 || p->nslots > 0xffffff
        || !cb_is_pow2(p->ring_size) || p->ring_size < 256
        || p->nchunks == 0 || p->chunk_size < 64 || p->chunk_size % 8
        || p->state_size < 1024)
    {
        return 0;
    }

    qsize = 1;
    while (qsize < p->nslots) {
        qsize <<= 1;
    }

    h->magic = CB_SHM_MAGIC;
    h->abi_version = CB_SHM_ABI_VERSION;
    h->header_size = sizeof(cb_shm_header_t);
    h->max_workers = p->max_workers;
    h->nslots = p->nslots;
    h->ring_size = p->ring_size;
    h->nchunks = p->nchunks;
    h->chunk_size = p->chunk_size;
    h->queue_size = qsize;
    h->state_size = p->state_size;

    off = cb_align(sizeof(cb_shm_header_t), CB_CACHELINE);

    h->workers_off = off;
    off += cb_align((uint64_t) p->max_workers * sizeof(cb_shm_worker_t),
                    CB_CACHELINE);

    h->slots_off = off;
    off += cb_align((uint64_t) p->nslots * sizeof(cb_shm_slot_t),
                    CB_CACHELINE);

    h->slot_bitmap_off = off;
    off += cb_align(((uint64_t) p->nslots + 63) / 64 * 8, CB_CACHELINE);

    h->chunk_owner_off = off;
    off += cb_align((uint64_t) p->nchunks * 4, CB_CACHELINE);

    h->chunk_next_off = off;
    off += cb_align((uint64_t) p->nchunks * 4, CB_CACHELINE);

    h->chunk_bitmap_off = off;
    off += cb_align(((uint64_t) p->nchunks + 63) / 64 * 8, CB_CACHELINE);

    h->queues_off = off;
    off += (uint64_t) p->max_workers * 2 * qsize * 8;

    h->state_off = cb_align(off, 4096);
    off = h->state_off + cb_align(p->state_size, 4096);

    h->rings_off = off;
    off += (uint64_t) p->nslots * p->ring_size;

    h->chunks_off = cb_align(off, 4096);
    off = h->chunks_off + (uint64_t) p->nchunks * p->chunk_size;

    h->total_size = cb_align(off, 4096);

    return h->total_size;
}


void
cb_shm_init(void *base, const cb_shm_header_t *layout)
{
    uint32_t          i, bits;
    uint64_t         *bm;
    cb_shm_header_t  *h;
    cb_shm_worker_t  *w;

    h = cb_shm_header(base);

    /* the memfd is zero-filled; copy the layout but not the magic yet */

    memcpy(h, layout, sizeof(cb_shm_header_t));
    h->magic = 0;

    for (i = 0; i < h->nslots; i++) {
        cb_shm_slot(base, i)->req_chunk = CB_NONE;
    }

    /* bits past the last slot or chunk are permanently "in use" */

    bm = cb_bitmap(base, h->slot_bitmap_off);
    bits = h->nslots % 64;
    if (bits) {
        bm[h->nslots / 64] = ~((1ULL << bits) - 1);
    }

    bm = cb_bitmap(base, h->chunk_bitmap_off);
    bits = h->nchunks % 64;
    if (bits) {
        bm[h->nchunks / 64] = ~((1ULL << bits) - 1);
    }

    for (i = 0; i < h->nchunks; i++) {
        ((uint32_t *) cb_shm_at(base, h->chunk_next_off))[i] = CB_NONE;
    }

    for (i = 0; i < h->max_workers; i++) {
        w = cb_shm_worker(base, i);
        w->to_sidecar.mask = h->queue_size - 1;
        w->to_sidecar.entries_off = h->queues_off
                                    + (uint64_t) (2 * i) * h->queue_size * 8;
        w->to_worker.mask = h->queue_size - 1;
        w->to_worker.entries_off = h->queues_off
                                   + (uint64_t) (2 * i + 1) * h->queue_size * 8;
    }

    /* publish: a worker that sees the magic sees everything above */

    __atomic_store_n(&h->magic, CB_SHM_MAGIC, __ATOMIC_RELEASE);
}


int
cb_shm_validate(const void *base, uint64_t size, uint64_t generation,
    const char **err)
{
    uint64_t                end;
    const cb_shm_header_t  *h;

    h = (const cb_shm_header_t *) base;

    if (size < sizeof(cb_shm_header_t)) {
        *err = "segment smaller than its header";
        return CB_ERROR;
    }

    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != CB_SHM_MAGIC) {
        *err = "bad magic";
        return CB_ERROR;
    }

    if (h->abi_version != CB_SHM_ABI_VERSION
        || h->header_size != sizeof(cb_shm_header_t))
    {
        *err = "ABI version mismatch between nginx module and sidecar";
        return CB_ERROR;
    }

    if (h->generation != generation) {
        *err = "generation differs from the one announced";
        return CB_ERROR;
    }

    if (h->total_size > size || h->max_workers == 0
        || h->max_workers > CB_MAX_WORKERS
        || !cb_is_pow2(h->ring_size) || !cb_is_pow2(h->queue_size)
        || h->queue_size < h->nslots || h->chunk_size % 8)
    {
        *err = "inconsistent sizes";
        return CB_ERROR;
    }

    end = h->chunks_off + (uint64_t) h->nchunks * h->chunk_size;

    if (end > size
        || h->rings_off + (uint64_t) h->nslots * h->ring_size > size
        || h->state_off + h->state_size > size
        || h->queues_off + (uint64_t) h->max_workers * 2 * h->queue_size * 8
           > size
        || h->workers_off + h->max_workers * sizeof(cb_shm_worker_t) > size
        || h->slots_off + (uint64_t) h->nslots * sizeof(cb_shm_slot_t) > size)
    {
        *err = "a region lies outside the segment";
        return CB_ERROR;
    }

    return CB_OK;
}


/* queues: one producer, one consumer, bounded, entries never overwritten */

int
cb_queue_push(void *base, cb_queue_t *q, uint64_t v)
{
    uint32_t   head, tail;
    uint64_t  *e;

    tail = cb_load_relaxed(&q->tail);
    head = cb_load(&q->head);

    if (tail - head > q->mask) {
        cb_store(&q->overflow, 1);
        return CB_AGAIN;
    }

    e = (uint64_t *) cb_shm_at(base, q->entries_off);
    e[tail & q->mask] = v;

    cb_store(&q->tail, tail + 1);

    return CB_OK;
}


int
cb_queue_pop(void *base, cb_queue_t *q, uint64_t *v)
{
    uint32_t   head, tail;
    uint64_t  *e;

    head = cb_load_relaxed(&q->head);
    tail = cb_load(&q->tail);

    if (head == tail) {
        return CB_AGAIN;
    }

    e = (uint64_t *) cb_shm_at(base, q->entries_off);
    *v = e[head & q->mask];

    cb_store(&q->head, head + 1);

    return CB_OK;
}


/*
 * Producer side, after a push: returns 1 when the caller must ring the
 * doorbell.  Only the first producer after the consumer's last drain rings.
 */

int
cb_queue_notify(cb_queue_t *q)
{
    cb_fence();

    return __atomic_exchange_n(&q->notified, 1, __ATOMIC_SEQ_CST) == 0;
}


/*
 * Consumer side, before draining: clears the flag, so that anything pushed
 * after the drain rings again.  The fences pair with cb_queue_notify().
 */

void
cb_queue_notified(cb_queue_t *q)
{
    __atomic_store_n(&q->notified, 0, __ATOMIC_SEQ_CST);
    cb_fence();
}


void
cb_queue_reset(cb_queue_t *q)
{
    cb_store(&q->head, 0);
    cb_store(&q->tail, 0);
    cb_store(&q->notified, 0);
    cb_store(&q->overflow, 0);
}


/* slots */

int
cb_slot_claim(void *base, uint32_t owner, uint32_t *slot)
{
    cb_shm_slot_t    *s;
    cb_shm_header_t  *h;

    h = cb_shm_header(base);

    if (cb_bitmap_claim(cb_bitmap(base, h->slot_bitmap_off), h->nslots,
                        &h->slots_hint, &cb_shm_slot(base, 0)->owner,
                        sizeof(cb_shm_slot_t), owner, slot)
        != CB_OK)
    {
        return CB_AGAIN;
    }

    s = cb_shm_slot(base, *slot);

    /* nobody else looks at a slot in the WRITING state */

    __atomic_store_n(&s->gen, s->gen + 1, __ATOMIC_RELAXED);
    s->ready = 0;
    s->writer_waiting = 0;
    s->ring_head = 0;
    s->ring_tail = 0;
    s->req_chunk = CB_NONE;
    s->req_len = 0;
    s->submitted_ns = 0;

    cb_store(&s->state, CB_SLOT_WRITING);

    return CB_OK;
}


void
cb_slot_release(void *base, uint32_t slot)
{
    cb_shm_slot_t    *s;
    cb_shm_header_t  *h;

    h = cb_shm_header(base);
    s = cb_shm_slot(base, slot);

    cb_store(&s->state, CB_SLOT_FREE);

    cb_bitmap_release(cb_bitmap(base, h->slot_bitmap_off), &h->slots_hint,
                      &s->owner, slot);
}


int
cb_slot_transition(cb_shm_slot_t *s, uint32_t from, uint32_t to)
{
    return __atomic_compare_exchange_n(&s->state, &from, to, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}


uint32_t
cb_slot_state(const cb_shm_slot_t *s)
{
    return __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
}


/* request chunks: a chain claimed one chunk at a time */

int
cb_chunks_write(void *base, uint32_t owner, const void *parts[],
    const size_t lens[], size_t nparts, uint32_t *first)
{
    size_t            i, off, n, room;
    uint8_t          *dst;
    uint32_t          chunk, prev, *next, *owners;
    cb_shm_header_t  *h;

    h = cb_shm_header(base);
    next = (uint32_t *) cb_shm_at(base, h->chunk_next_off);
    owners = (uint32_t *) cb_shm_at(base, h->chunk_owner_off);

    *first = CB_NONE;
    prev = CB_NONE;
    dst = NULL;
    room = 0;

    for (i = 0; i < nparts; i++) {
        off = 0;

        while (off < lens[i]) {

            if (room == 0) {
                if (cb_bitmap_claim(cb_bitmap(base, h->chunk_bitmap_off),
                                    h->nchunks, &h->chunks_hint, owners,
                                    sizeof(uint32_t), owner, &chunk)
                    != CB_OK)
                {
                    cb_chunks_free(base, *first);
                    *first = CB_NONE;
                    return CB_AGAIN;
                }

                next[chunk] = CB_NONE;

                if (prev == CB_NONE) {
                    *first = chunk;

                } else {
                    next[prev] = chunk;
                }

                prev = chunk;
                dst = cb_shm_chunk(base, chunk);
                room = h->chunk_size;
            }

            n = lens[i] - off;
            if (n > room) {
                n = room;
            }

            memcpy(dst, (const uint8_t *) parts[i] + off, n);

            dst += n;
            room -= n;
            off += n;
        }
    }

    return CB_OK;
}


size_t
cb_chunks_read(void *base, uint32_t first, size_t len, void *dst, size_t size)
{
    size_t            n, done;
    uint32_t          chunk, *next;
    cb_shm_header_t  *h;

    h = cb_shm_header(base);
    next = (uint32_t *) cb_shm_at(base, h->chunk_next_off);

    if (len > size) {
        len = size;
    }

    done = 0;
    chunk = first;

    while (done < len && chunk < h->nchunks) {
        n = len - done;
        if (n > h->chunk_size) {
            n = h->chunk_size;
        }

        memcpy((uint8_t *) dst + done, cb_shm_chunk(base, chunk), n);
        done += n;

        chunk = next[chunk];
    }

    return done;
}


void
cb_chunks_free(void *base, uint32_t first)
{
    uint32_t          chunk, after, *next, *owners;
    cb_shm_header_t  *h;

    h = cb_shm_header(base);
    next = (uint32_t *) cb_shm_at(base, h->chunk_next_off);
    owners = (uint32_t *) cb_shm_at(base, h->chunk_owner_off);

    for (chunk = first; chunk < h->nchunks; chunk = after) {
        after = next[chunk];
        next[chunk] = CB_NONE;
        cb_bitmap_release(cb_bitmap(base, h->chunk_bitmap_off),
                          &h->chunks_hint, &owners[chunk], chunk);
    }
}


/* after a worker died: free every chunk it had claimed */

uint32_t
cb_chunks_reclaim(void *base, uint32_t owner)
{
    uint32_t          i, n, *next, *owners;
    cb_shm_header_t  *h;

    h = cb_shm_header(base);
    next = (uint32_t *) cb_shm_at(base, h->chunk_next_off);
    owners = (uint32_t *) cb_shm_at(base, h->chunk_owner_off);

    n = 0;

    for (i = 0; i < h->nchunks; i++) {
        if (cb_load(&owners[i]) == owner) {
            next[i] = CB_NONE;
            cb_bitmap_release(cb_bitmap(base, h->chunk_bitmap_off),
                              &h->chunks_hint, &owners[i], i);
            n++;
        }
    }

    return n;
}


uint32_t
cb_chunks_in_use(void *base)
{
    uint32_t          i, n, *owners;
    cb_shm_header_t  *h;

    h = cb_shm_header(base);
    owners = (uint32_t *) cb_shm_at(base, h->chunk_owner_off);

    n = 0;

    for (i = 0; i < h->nchunks; i++) {
        n += cb_load_relaxed(&owners[i]) != 0;
    }

    return n;
}


/* response rings: the sidecar writes records, the owning worker reads */

int
cb_ring_write(void *base, uint32_t slot, uint8_t type, uint8_t flags,
    const void *data, uint32_t len)
{
    return cb_ring_write2(base, slot, type, flags, data, len, NULL, 0);
}


int
cb_ring_write2(void *base, uint32_t slot, uint8_t type, uint8_t flags,
    const void *a, uint32_t alen, const void *b, uint32_t blen)
{
    uint8_t          *ring;
    uint32_t          size, head, tail, need;
    cb_shm_slot_t    *s;
    cb_rec_header_t   hdr;

    size = cb_shm_header(base)->ring_size;

    if ((uint64_t) alen + blen > cb_ring_max_record(base)) {
        return CB_ERROR;
    }

    s = cb_shm_slot(base, slot);
    ring = cb_shm_ring(base, slot);

    need = CB_REC_HEADER_SIZE + cb_round8(alen + blen);

    tail = cb_load_relaxed(&s->ring_tail);
    head = cb_load(&s->ring_head);

    if (size - (tail - head) < need) {
        return CB_AGAIN;
    }

    hdr.len = alen + blen;
    hdr.type = type;
    hdr.flags = flags;
    hdr.reserved = 0;

    /* records start 8-aligned, so a header never wraps */

    memcpy(ring + (tail & (size - 1)), &hdr, CB_REC_HEADER_SIZE);

    if (alen) {
        cb_ring_copy_in(ring, size, tail + CB_REC_HEADER_SIZE, a, alen);
    }

    if (blen) {
        cb_ring_copy_in(ring, size, tail + CB_REC_HEADER_SIZE + alen, b, blen);
    }

    cb_store(&s->ring_tail, tail + need);

    return CB_OK;
}


int
cb_ring_read(void *base, uint32_t slot, cb_rec_header_t *hdr, void *dst,
    uint32_t size)
{
    uint8_t        *ring;
    uint32_t        rsize, head, tail;
    cb_shm_slot_t  *s;

    rsize = cb_shm_header(base)->ring_size;
    s = cb_shm_slot(base, slot);
    ring = cb_shm_ring(base, slot);

    head = cb_load_relaxed(&s->ring_head);
    tail = cb_load(&s->ring_tail);

    if (head == tail) {
        return CB_AGAIN;
    }

    memcpy(hdr, ring + (head & (rsize - 1)), CB_REC_HEADER_SIZE);

    if (hdr->len > size || hdr->len > rsize - CB_REC_HEADER_SIZE
        || tail - head < CB_REC_HEADER_SIZE + cb_round8(hdr->len))
    {
        return CB_ERROR;
    }

    cb_ring_copy_out(ring, rsize, head + CB_REC_HEADER_SIZE, dst, hdr->len);

    cb_store(&s->ring_head, head + CB_REC_HEADER_SIZE + cb_round8(hdr->len));

    return CB_OK;
}


uint32_t
cb_ring_free_space(void *base, uint32_t slot)
{
    cb_shm_slot_t  *s;

    s = cb_shm_slot(base, slot);

    return cb_shm_header(base)->ring_size
           - (cb_load(&s->ring_tail) - cb_load(&s->ring_head));
}


uint32_t
cb_ring_max_record(void *base)
{
    /* half the ring, so that a full record never waits for an empty ring */
    return cb_shm_header(base)->ring_size / 2 - CB_REC_HEADER_SIZE;
}


int
cb_ring_empty(void *base, uint32_t slot)
{
    cb_shm_slot_t  *s;

    s = cb_shm_slot(base, slot);

    return cb_load(&s->ring_tail) == cb_load(&s->ring_head);
}


/* published state: a seqlock, so a reader never blocks the writer */

void
cb_state_publish(void *base, const char *json, uint32_t len)
{
    uint64_t          seq;
    cb_shm_header_t  *h;

    h = cb_shm_header(base);

    if (len > h->state_size) {
        len = 0;
    }

    seq = cb_load_relaxed(&h->state_seq);

    __atomic_store_n(&h->state_seq, seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);

    memcpy(cb_shm_at(base, h->state_off), json, len);
    __atomic_store_n(&h->state_len, len, __ATOMIC_RELAXED);
    __atomic_store_n(&h->state_version, (uint32_t) (seq / 2 + 1),
                     __ATOMIC_RELAXED);

    cb_store(&h->state_seq, seq + 2);
}


int
cb_state_read(void *base, char *dst, uint32_t size, uint32_t *len,
    uint32_t *version)
{
    int               tries;
    uint32_t          n;
    uint64_t          s1, s2;
    cb_shm_header_t  *h;

    h = cb_shm_header(base);

    for (tries = 0; tries < 1000; tries++) {
        s1 = cb_load(&h->state_seq);

        if (s1 & 1) {
            continue;
        }

        n = __atomic_load_n(&h->state_len, __ATOMIC_RELAXED);
        if (n > size || n > h->state_size) {
            return CB_ERROR;
        }

        memcpy(dst, cb_shm_at(base, h->state_off), n);
        *version = __atomic_load_n(&h->state_version, __ATOMIC_RELAXED);

        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        s2 = cb_load_relaxed(&h->state_seq);

        if (s1 == s2) {
            *len = n;
            return CB_OK;
        }
    }

    return CB_AGAIN;
}


const char *
cb_slot_state_name(uint32_t state)
{
    return state < CB_SLOT_NSTATES ? cb_slot_state_names[state] : "?";
}


const char *
cb_record_name(uint32_t type)
{
    return (type < CB_REC_MAX && cb_record_names[type]) ? cb_record_names[type]
                                                        : "?";
}


const char *
cb_finish_reason_name(uint32_t reason)
{
    return reason < CB_FINISH_MAX ? cb_finish_names[reason] : "stop";
}


static uint64_t *
cb_bitmap(void *base, uint64_t off)
{
    return (uint64_t *) cb_shm_at(base, off);
}


/*
 * Claim a free entry: the bitmap only says where to look; the claim itself
 * is the CAS of the owner word from 0, so an entry always has a known owner
 * and a dead owner's entries can be found and freed.  Order: owner, then
 * bit; release is the reverse.
 */

static int
cb_bitmap_claim(uint64_t *bm, uint32_t nbits, uint32_t *hint,
    uint32_t *owner0, size_t stride, uint32_t owner, uint32_t *index)
{
    int        b;
    uint32_t   n, w, nwords, start, expected, i, *o;
    uint64_t   bits;

    nwords = (nbits + 63) / 64;
    start = cb_load_relaxed(hint);
    if (start >= nwords) {
        start = 0;
    }

    for (n = 0; n < nwords; n++) {
        w = start + n;
        if (w >= nwords) {
            w -= nwords;
        }

        bits = cb_load(&bm[w]);

        while (bits != ~0ULL) {
            b = __builtin_ctzll(~bits);
            i = w * 64 + (uint32_t) b;
            bits |= 1ULL << b;

            o = (uint32_t *) ((uint8_t *) owner0 + stride * i);
            expected = 0;

            if (__atomic_compare_exchange_n(o, &expected, owner, 0,
                                            __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED))
            {
                __atomic_fetch_or(&bm[w], 1ULL << b, __ATOMIC_ACQ_REL);

                if (w != start) {
                    __atomic_store_n(hint, w, __ATOMIC_RELAXED);
                }

                *index = i;
                return CB_OK;
            }
        }
    }

    return CB_AGAIN;
}


static void
cb_bitmap_release(uint64_t *bm, uint32_t *hint, uint32_t *owner,
    uint32_t index)
{
    uint32_t  w;

    w = index / 64;

    __atomic_fetch_and(&bm[w], ~(1ULL << (index % 64)), __ATOMIC_ACQ_REL);
    cb_store(owner, 0);

    if (w < cb_load_relaxed(hint)) {
        __atomic_store_n(hint, w, __ATOMIC_RELAXED);
    }
}


static void
cb_ring_copy_in(uint8_t *ring, uint32_t size, uint32_t pos, const void *data,
    uint32_t len)
{
    uint32_t  off, first;

    off = pos & (size - 1);
    first = size - off;

    if (first >= len) {
        memcpy(ring + off, data, len);
        return;
    }

    memcpy(ring + off, data, first);
    memcpy(ring, (const uint8_t *) data + first, len - first);
}


static void
cb_ring_copy_out(const uint8_t *ring, uint32_t size, uint32_t pos, void *dst,
    uint32_t len)
{
    uint32_t  off, first;

    off = pos & (size - 1);
    first = size - off;

    if (first >= len) {
        memcpy(dst, ring + off, len);
        return;
    }

    memcpy(dst, ring + off, first);
    memcpy((uint8_t *) dst + first, ring, len - first);
}


static int
cb_is_pow2(uint64_t n)
{
    return n && (n & (n - 1)) == 0;
}
