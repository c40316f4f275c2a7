
/*
 * Copyright (C) chatbridge authors
 *
 * The shared-memory ABI between nginx workers and chatbridge-sidecar.
 *
 * Plain C11 with GCC atomic builtins, included by the nginx module (C) and
 * by the sidecar (C++17).  The segment is a memfd created by the sidecar and
 * handed to each worker over the control socket with SCM_RIGHTS.  Everything
 * in it is addressed by offsets from the segment base, never by pointers.
 *
 * Locking: none.  Every structure is single-writer per field or claimed by
 * compare-and-swap, so a process that dies at any instruction leaves nothing
 * held; the survivor reclaims what the dead one owned (see docs/SHM.md).
 */

#ifndef _CB_SHM_H_INCLUDED_
#define _CB_SHM_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#ifdef __cplusplus
extern "C" {
#endif


#define CB_SHM_MAGIC            0x3145474449524243ULL   /* "CBRIDGE1" */
#define CB_SHM_ABI_VERSION      1

#define CB_CACHELINE            64
#define CB_ALIGNED              __attribute__((aligned(CB_CACHELINE)))

#define CB_OK                   0
#define CB_AGAIN                -2          /* full or empty: try later */
#define CB_ERROR                -1

#define CB_NONE                 0xffffffffu
#define CB_MAX_WORKERS          255         /* owner ids are 8 bit */
#define CB_REQUEST_ID_LEN       48          /* NUL-padded, charset "id" */
#define CB_MODEL_LEN            127


/*
 * Slot states; the X-macro keeps names, values and docs in one place.
 *
 * Exactly one party releases a slot, and never touches it afterwards:
 *   - the sidecar finishes by writing the final record, queueing the slot
 *     to the worker, then CAS ACTIVE -> DONE; if that CAS finds CANCELLED,
 *     the sidecar releases the slot;
 *   - the worker gives up (client gone, timeout, final record consumed) by
 *     CAS SUBMITTED|ACTIVE -> CANCELLED and queueing CB_OP_CANCEL; if that
 *     CAS finds DONE, the worker releases the slot;
 *   - a dead worker's slots are released by the sidecar (owner sweep), a
 *     dead sidecar's segment is dropped whole by every worker.
 */

#define CB_SLOT_STATES(X)                                                    \
    X(FREE,      0, "unused")                                               \
    X(WRITING,   1, "claimed by a worker, request being written")           \
    X(SUBMITTED, 2, "request published, sidecar not yet taken it")          \
    X(ACTIVE,    3, "sidecar owns the request, response records flow")      \
    X(DONE,      4, "sidecar wrote the final record, worker frees")         \
    X(CANCELLED, 5, "worker gave up, sidecar frees")

#define CB_SLOT_ENUM(name, value, doc)  CB_SLOT_##name = value,
enum { CB_SLOT_STATES(CB_SLOT_ENUM) CB_SLOT_NSTATES };
#undef CB_SLOT_ENUM


/* operations a worker queues to the sidecar */

#define CB_OPS(X)                                                            \
    X(SUBMIT, 1, "a request is ready in the slot")                          \
    X(CANCEL, 2, "the client went away; the state word says CANCELLED")      \
    X(CREDIT, 3, "the worker drained a ring the sidecar found full")

#define CB_OP_ENUM(name, value, doc)  CB_OP_##name = value,
enum { CB_OPS(CB_OP_ENUM) CB_OP_MAX };
#undef CB_OP_ENUM


/* response records the sidecar writes into a slot's ring */

#define CB_RECORDS(X)                                                        \
    X(DELTA,     1, "answer text, UTF-8")                                   \
    X(REASONING, 2, "reasoning text, UTF-8")                                \
    X(IMAGE,     3, "an image URL")                                         \
    X(DONE,      4, "cb_rec_done_t: the answer is complete")                \
    X(ERROR,     5, "cb_rec_error_t + code + message: the request failed")  \
    X(META,      6, "cb_rec_meta_t + browser id: which browser took it")    \
    X(RESULT,    7, "a JSON document answering a control request")

#define CB_REC_ENUM(name, value, doc)  CB_REC_##name = value,
enum { CB_RECORDS(CB_REC_ENUM) CB_REC_MAX };
#undef CB_REC_ENUM

#define CB_REC_MORE             0x01        /* payload continues */

#define CB_REC_HEADER_SIZE      8


/* finish reasons carried in cb_rec_done_t */

#define CB_FINISH_REASONS(X)                                                 \
    X(STOP,           0, "stop")                                            \
    X(LENGTH,         1, "length")                                          \
    X(CONTENT_FILTER, 2, "content_filter")                                  \
    X(TOOL_CALLS,     3, "tool_calls")

#define CB_FINISH_ENUM(name, value, str)  CB_FINISH_##name = value,
enum { CB_FINISH_REASONS(CB_FINISH_ENUM) CB_FINISH_MAX };
#undef CB_FINISH_ENUM


/* request kinds, from the task's "kind" field */

#define CB_KIND_ANY             0
#define CB_KIND_ARENA           1
#define CB_KIND_TAVERN          2
#define CB_KIND_CONTROL         3           /* a command for the sidecar */


typedef struct {
    uint32_t    len;            /* payload bytes */
    uint8_t     type;           /* CB_REC_* */
    uint8_t     flags;          /* CB_REC_MORE */
    uint16_t    reserved;
} cb_rec_header_t;


typedef struct {
    uint32_t    finish_reason;  /* CB_FINISH_* */
    uint32_t    usage_known;    /* 1: the site reported usage */
    uint32_t    prompt_tokens;
    uint32_t    completion_tokens;
    uint32_t    reasoning_tokens;
    uint32_t    total_tokens;
} cb_rec_done_t;


typedef struct {
    uint16_t    status;         /* HTTP status for the client */
    uint8_t     retryable;
    uint8_t     code_len;       /* code bytes follow the struct */
    uint32_t    retry_after;    /* seconds, 0 if none */
    uint32_t    message_len;    /* message bytes follow the code */
} cb_rec_error_t;


typedef struct {
    uint32_t    browser_len;    /* browser id bytes follow */
    uint32_t    attempt;        /* 1 on the first dispatch */
} cb_rec_meta_t;


/*
 * What a worker writes at the start of a request's chunk chain, followed by
 * the task frame JSON that goes to the browser verbatim.
 */

typedef struct {
    uint32_t    meta_size;      /* sizeof(cb_task_meta_t) */
    uint32_t    json_len;       /* task frame bytes that follow */
    uint8_t     kind;           /* CB_KIND_* */
    uint8_t     model_len;
    uint16_t    flags;
    uint32_t    reserved;
    char        request_id[CB_REQUEST_ID_LEN];
    char        model[CB_MODEL_LEN + 1];
} cb_task_meta_t;


/* single-producer single-consumer queue of 64-bit entries */

typedef struct {
    uint32_t    head CB_ALIGNED;    /* written by the consumer */
    uint32_t    tail CB_ALIGNED;    /* written by the producer */
    uint32_t    notified CB_ALIGNED;    /* 1: a doorbell is outstanding */
    uint32_t    overflow;           /* 1: an entry could not be queued */
    uint32_t    mask;               /* capacity - 1, capacity a power of 2 */
    uint32_t    reserved;
    uint64_t    entries_off;        /* from the segment base */
} cb_queue_t;


/* per-worker counters; each worker writes only its own */

typedef struct {
    uint64_t    requests;
    uint64_t    streamed;
    uint64_t    completed;
    uint64_t    failed;
    uint64_t    cancelled;
    uint64_t    records;
    uint64_t    doorbells_sent;
    uint64_t    doorbells_received;
} cb_worker_counters_t;


typedef struct {
    uint32_t    pid CB_ALIGNED;     /* 0: entry free; written by sidecar */
    uint32_t    serial;             /* bumped each time the entry is reused */
    cb_queue_t  to_sidecar;         /* worker produces ops */
    cb_queue_t  to_worker;          /* sidecar produces ready slots */
    cb_worker_counters_t  counters CB_ALIGNED;
} cb_shm_worker_t;


typedef struct {
    uint32_t    owner CB_ALIGNED;   /* 0 free, else worker index + 1 */
    uint32_t    state;              /* CB_SLOT_* */
    uint32_t    gen;                /* bumped on each claim */
    uint32_t    ready;              /* 1: queued to the worker */
    uint32_t    writer_waiting;     /* 1: sidecar found the ring full */
    uint32_t    ring_head;          /* bytes consumed, by the worker */
    uint32_t    ring_tail;          /* bytes produced, by the sidecar */
    uint32_t    req_chunk;          /* first chunk of the request */
    uint32_t    req_len;            /* request bytes in the chain */
    uint32_t    reserved;
    uint64_t    submitted_ns;       /* CLOCK_MONOTONIC at submit */
} cb_shm_slot_t;


/* counters written only by the sidecar */

typedef struct {
    uint64_t    browsers CB_ALIGNED;
    uint64_t    dispatched;
    uint64_t    queued;
    uint64_t    retried;
    uint64_t    rejected;
    uint64_t    ring_full;
    uint64_t    doorbells_sent;
    uint64_t    doorbells_received;
    uint64_t    reclaimed_slots;
    uint64_t    reclaimed_chunks;
    uint64_t    bad_frames;
} cb_sidecar_counters_t;


typedef struct {
    uint64_t    magic;
    uint32_t    abi_version;
    uint32_t    header_size;
    uint64_t    generation;         /* differs for each sidecar run */
    uint64_t    total_size;
    uint32_t    sidecar_pid;
    uint32_t    max_workers;
    uint32_t    nslots;
    uint32_t    ring_size;          /* bytes per slot ring, power of 2 */
    uint32_t    nchunks;
    uint32_t    chunk_size;
    uint32_t    queue_size;         /* entries per worker queue */
    uint32_t    state_size;         /* bytes of the published state */

    uint64_t    workers_off;
    uint64_t    slots_off;
    uint64_t    slot_bitmap_off;
    uint64_t    rings_off;
    uint64_t    chunk_owner_off;
    uint64_t    chunk_next_off;
    uint64_t    chunk_bitmap_off;
    uint64_t    chunks_off;
    uint64_t    queues_off;
    uint64_t    state_off;

    /* the published state document: a seqlock around a JSON text */
    uint64_t    state_seq CB_ALIGNED;   /* odd while being written */
    uint32_t    state_len;
    uint32_t    state_version;      /* bumps when browsers or models change */

    uint32_t    slots_hint CB_ALIGNED;  /* first bitmap word worth a look */
    uint32_t    chunks_hint CB_ALIGNED;

    cb_sidecar_counters_t  counters;
} cb_shm_header_t;


/* sizes the sidecar chooses; see cb_shm_layout() */

typedef struct {
    uint32_t    max_workers;
    uint32_t    nslots;
    uint32_t    ring_size;
    uint32_t    nchunks;
    uint32_t    chunk_size;
    uint32_t    state_size;
} cb_shm_params_t;


/* control socket messages (SOCK_SEQPACKET) */

#define CB_CTL_HELLO            1   /* worker -> sidecar, first message */
#define CB_CTL_WELCOME          2   /* sidecar -> worker, carries the memfd */
#define CB_CTL_DOORBELL         3   /* either way, one byte */
#define CB_CTL_REFUSED          4   /* sidecar -> worker: no room, or ABI */

typedef struct {
    uint32_t    type;               /* CB_CTL_HELLO */
    uint32_t    abi_version;
    uint32_t    pid;
    uint32_t    reserved;
} cb_ctl_hello_t;

typedef struct {
    uint32_t    type;               /* CB_CTL_WELCOME */
    uint32_t    abi_version;
    uint32_t    worker;             /* index into the workers table */
    uint32_t    serial;
    uint64_t    generation;
    uint64_t    size;               /* of the segment */
} cb_ctl_welcome_t;


/* segment layout */

uint64_t cb_shm_layout(cb_shm_header_t *h, const cb_shm_params_t *p);
void cb_shm_init(void *base, const cb_shm_header_t *layout);
int cb_shm_validate(const void *base, uint64_t size, uint64_t generation,
    const char **err);


static inline void *
cb_shm_at(const void *base, uint64_t off)
{
    return (char *) base + off;
}


static inline cb_shm_header_t *
cb_shm_header(void *base)
{
    return (cb_shm_header_t *) base;
}


static inline cb_shm_worker_t *
cb_shm_worker(void *base, uint32_t i)
{
    return (cb_shm_worker_t *) cb_shm_at(base,
                                    cb_shm_header(base)->workers_off)
           + i;
}


static inline cb_shm_slot_t *
cb_shm_slot(void *base, uint32_t i)
{
    return (cb_shm_slot_t *) cb_shm_at(base, cb_shm_header(base)->slots_off)
           + i;
}


static inline uint8_t *
cb_shm_ring(void *base, uint32_t slot)
{
    cb_shm_header_t  *h = cb_shm_header(base);

    return (uint8_t *) cb_shm_at(base, h->rings_off)
           + (uint64_t) slot * h->ring_size;
}


static inline uint8_t *
cb_shm_chunk(void *base, uint32_t chunk)
{
    cb_shm_header_t  *h = cb_shm_header(base);

    return (uint8_t *) cb_shm_at(base, h->chunks_off)
           + (uint64_t) chunk * h->chunk_size;
}


/* queues */

int cb_queue_push(void *base, cb_queue_t *q, uint64_t v);
int cb_queue_pop(void *base, cb_queue_t *q, uint64_t *v);
int cb_queue_notify(cb_queue_t *q);
void cb_queue_notified(cb_queue_t *q);
void cb_queue_reset(cb_queue_t *q);

#define cb_op_make(op, slot, gen)                                            \
    (((uint64_t) (gen) << 32) | ((uint64_t) (slot) << 8) | (uint64_t) (op))
#define cb_op_type(v)           ((uint32_t) ((v) & 0xff))
#define cb_op_slot(v)           ((uint32_t) (((v) >> 8) & 0xffffff))
#define cb_op_gen(v)            ((uint32_t) ((v) >> 32))


/* slots */

int cb_slot_claim(void *base, uint32_t owner, uint32_t *slot);
void cb_slot_release(void *base, uint32_t slot);
int cb_slot_transition(cb_shm_slot_t *s, uint32_t from, uint32_t to);
uint32_t cb_slot_state(const cb_shm_slot_t *s);


/* request chunks */

int cb_chunks_write(void *base, uint32_t owner, const void *parts[],
    const size_t lens[], size_t nparts, uint32_t *first);
size_t cb_chunks_read(void *base, uint32_t first, size_t len, void *dst,
    size_t size);
void cb_chunks_free(void *base, uint32_t first);
uint32_t cb_chunks_reclaim(void *base, uint32_t owner);
uint32_t cb_chunks_in_use(void *base);


/* response rings */

int cb_ring_write(void *base, uint32_t slot, uint8_t type, uint8_t flags,
    const void *data, uint32_t len);
int cb_ring_write2(void *base, uint32_t slot, uint8_t type, uint8_t flags,
    const void *a, uint32_t alen, const void *b, uint32_t blen);
int cb_ring_read(void *base, uint32_t slot, cb_rec_header_t *hdr,
    void *dst, uint32_t size);
uint32_t cb_ring_free_space(void *base, uint32_t slot);
uint32_t cb_ring_max_record(void *base);
int cb_ring_empty(void *base, uint32_t slot);


/* the published state: one writer (the sidecar), many readers */

void cb_state_publish(void *base, const char *json, uint32_t len);
int cb_state_read(void *base, char *dst, uint32_t size, uint32_t *len,
    uint32_t *version);


/* names, for logs and status output */

const char *cb_slot_state_name(uint32_t state);
const char *cb_record_name(uint32_t type);
const char *cb_finish_reason_name(uint32_t reason);


#ifdef __cplusplus
}
#endif

#endif /* _CB_SHM_H_INCLUDED_ */
