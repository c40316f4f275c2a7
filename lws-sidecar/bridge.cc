// Copyright (C) chatbridge authors

#include "bridge.h"

#include "control.h"
#include "log.h"
#include "util.h"

#include "cb_arena.h"
#include "cb_jsonc.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

namespace chatbridge {

namespace {

// backpressure: pause the browser past HIGH, resume under LOW, fail past HARD
constexpr size_t kPendingHigh = 64 * 1024;
constexpr size_t kPendingLow = 16 * 1024;
constexpr size_t kPendingHard = 4 * 1024 * 1024;

constexpr uint64_t kPublishEvery = 1000;

uint32_t finish_reason(std::string_view s)
{
    if (s == "length" || s == "max_tokens") {
        return CB_FINISH_LENGTH;
    }
    if (s == "content_filter" || s == "content-filter") {
        return CB_FINISH_CONTENT_FILTER;
    }
    if (s == "tool_calls" || s == "tool-calls") {
        return CB_FINISH_TOOL_CALLS;
    }
    return CB_FINISH_STOP;
}

std::string str(json_t *f, const char *key)
{
    json_t *v = json_object_get(f, key);
    return json_is_string(v) ? std::string(json_string_value(v),
                                           json_string_length(v))
                             : std::string();
}

// a session or model id as the arena files hold it: no ':', which
// models.json uses to mark a type ("<uuid>:image")
bool good_id(const std::string &s)
{
    if (s.empty() || s.size() > 64) {
        return false;
    }
    for (unsigned char c : s) {
        if (!(isalnum(c) || c == '-' || c == '_')) {
            return false;
        }
    }
    return true;
}

} // namespace

Bridge::Bridge(const Options &opts, Segment &segment, const Schema &schema)
    : opts_(opts), seg_(segment), schema_(schema), base_(segment.base()),
      by_slot_(segment.header()->nslots, nullptr), started_(wall_s())
{
}

Bridge::~Bridge() = default;

// --- the nginx side

void Bridge::drain_worker(uint32_t index)
{
    cb_shm_worker_t *w = cb_shm_worker(base_, index);
    uint64_t v;

    cb_queue_notified(&w->to_sidecar);

    while (cb_queue_pop(base_, &w->to_sidecar, &v) == CB_OK) {
        uint32_t slot = cb_op_slot(v), gen = cb_op_gen(v);

        if (slot >= by_slot_.size()) {
            continue;
        }

        switch (cb_op_type(v)) {
        case CB_OP_SUBMIT:
            submit(index, slot, gen);
            break;
        case CB_OP_CANCEL:
            cancel(slot, gen);
            break;
        case CB_OP_CREDIT:
            credit(slot, gen);
            break;
        default:
            log(Level::warn, "worker %u queued unknown op %u", index,
                cb_op_type(v));
        }
    }

    if (__atomic_exchange_n(&w->to_sidecar.overflow, 0, __ATOMIC_ACQ_REL)) {
        log(Level::info, "worker %u's queue overflowed; scanning its slots",
            index);
        scan_worker(index);
    }
}

// the queue overflowed: find the work by looking at every slot it owns
void Bridge::scan_worker(uint32_t index)
{
    for (uint32_t i = 0; i < by_slot_.size(); i++) {
        cb_shm_slot_t *s = cb_shm_slot(base_, i);

        if (__atomic_load_n(&s->owner, __ATOMIC_ACQUIRE) != index + 1) {
            continue;
        }

        uint32_t gen = __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE);

        switch (cb_slot_state(s)) {
        case CB_SLOT_SUBMITTED:
            submit(index, i, gen);
            break;
        case CB_SLOT_CANCELLED:
            cancel(i, gen);
            break;
        case CB_SLOT_ACTIVE:
            credit(i, gen);
            break;
        }
    }
}

void Bridge::submit(uint32_t worker, uint32_t slot, uint32_t gen)
{
    cb_shm_slot_t *s = cb_shm_slot(base_, slot);

    if (__atomic_load_n(&s->owner, __ATOMIC_ACQUIRE) != worker + 1
        || __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE) != gen
        || by_slot_[slot] != nullptr) {
        return;     // stale or already taken
    }

    if (!cb_slot_transition(s, CB_SLOT_SUBMITTED, CB_SLOT_ACTIVE)) {
        if (cb_slot_state(s) == CB_SLOT_CANCELLED) {
            // cancelled before we saw it: the slot is ours to free
            cb_chunks_free(base_, s->req_chunk);
            s->req_chunk = CB_NONE;
            cb_slot_release(base_, slot);
        }
        return;
    }

    // copy the request out of the chunks and give them back at once

    std::string raw(s->req_len, '\0');
    size_t got = cb_chunks_read(base_, s->req_chunk, s->req_len, raw.data(),
                                raw.size());
    cb_chunks_free(base_, s->req_chunk);
    s->req_chunk = CB_NONE;

    auto r = std::make_unique<Request>();
    r->slot = slot;
    r->gen = gen;
    r->worker = worker;
    r->created = now_ms();

    cb_task_meta_t meta;

    if (got != raw.size() || got < sizeof(meta)) {
        by_slot_[slot] = r.get();
        Request *p = r.get();
        by_id_.emplace("#slot" + std::to_string(slot), std::move(r));
        p->id = "#slot" + std::to_string(slot);
        fail(p, 500, "bridge_error", "the request in shared memory is short",
             false, 0);
        return;
    }

    memcpy(&meta, raw.data(), sizeof(meta));

    size_t idlen = strnlen(meta.request_id, CB_REQUEST_ID_LEN);
    bool ok = meta.meta_size == sizeof(meta)
              && uint64_t(meta.json_len) + sizeof(meta) == got
              && meta.model_len <= CB_MODEL_LEN && idlen > 0
              && idlen < CB_REQUEST_ID_LEN;

    r->id.assign(meta.request_id, ok ? idlen : 0);
    if (!ok || by_id_.count(r->id)) {
        r->id = "#slot" + std::to_string(slot);
        ok = false;
    }

    r->model.assign(meta.model, ok ? meta.model_len : 0);
    r->kind = meta.kind;
    if (ok && meta.kind != CB_KIND_CONTROL) {
        r->task = make_frame(raw.substr(sizeof(meta)));
    }

    Request *p = r.get();
    by_slot_[slot] = p;
    by_id_.emplace(p->id, std::move(r));

    if (!ok) {
        fail(p, 500, "bridge_error", "malformed request in shared memory",
             false, 0);
        return;
    }

    if (meta.kind == CB_KIND_CONTROL) {
        control(p, raw.substr(sizeof(meta)));
        return;
    }

    log(Level::debug, "request %s (%s) from worker %u in slot %u",
        p->id.c_str(), p->model.c_str(), worker, slot);

    dispatch(p);
}

void Bridge::cancel(uint32_t slot, uint32_t gen)
{
    cb_shm_slot_t *s = cb_shm_slot(base_, slot);
    Request *r = by_slot_[slot];

    if (__atomic_load_n(&s->gen, __ATOMIC_ACQUIRE) != gen
        || cb_slot_state(s) != CB_SLOT_CANCELLED) {
        return;
    }

    if (r == nullptr) {
        // never taken, or already finished on our side
        if (s->req_chunk != CB_NONE) {
            cb_chunks_free(base_, s->req_chunk);
            s->req_chunk = CB_NONE;
        }
        cb_slot_release(base_, slot);
        return;
    }

    if (r->browser != nullptr) {
        r->browser->send(cancel_frame(r->id, "client_closed"));
        log(Level::info, "request %s cancelled by its client; told browser "
            "%s", r->id.c_str(), r->browser->id.c_str());
    }

    cb_slot_release(base_, slot);
    destroy(r);
    pump();
}

void Bridge::credit(uint32_t slot, uint32_t gen)
{
    Request *r = by_slot_[slot];

    if (r != nullptr && r->gen == gen) {
        flush(r);
    }
}

void Bridge::worker_gone(uint32_t index)
{
    uint32_t slots = 0;

    for (uint32_t i = 0; i < by_slot_.size(); i++) {
        cb_shm_slot_t *s = cb_shm_slot(base_, i);

        if (__atomic_load_n(&s->owner, __ATOMIC_ACQUIRE) != index + 1) {
            continue;
        }

        if (Request *r = by_slot_[i]) {
            if (r->browser != nullptr) {
                r->browser->send(cancel_frame(r->id, "worker_exited"));
            }
            destroy(r);
        }

        if (s->req_chunk != CB_NONE) {
            cb_chunks_free(base_, s->req_chunk);
            s->req_chunk = CB_NONE;
        }

        cb_slot_release(base_, i);
        slots++;
    }

    uint32_t chunks = cb_chunks_reclaim(base_, index + 1);

    cb_shm_header_t *h = seg_.header();
    h->counters.reclaimed_slots += slots;
    h->counters.reclaimed_chunks += chunks;

    if (slots || chunks) {
        log(Level::notice, "worker entry %u gone: reclaimed %u slots and %u "
            "chunks", index, slots, chunks);
    }

    pump();
}

// --- dispatch

// The browser for a request, never the one that refused it: null if none
// has room now.  *eligible: a ready browser could serve it (it may wait in
// the queue); *human: one could, once a person attends to its tab.
Browser *Bridge::pick(const Request *r, bool *eligible, bool *human) const
{
    Browser *best = nullptr;

    for (Browser *b : browsers_) {
        if (b->state == Browser::State::hello
            || b->state == Browser::State::closing
            || !b->can_serve(r->kind, r->model)
            || (r->refused && b->id == r->refused->browser)) {
            continue;
        }
        if (b->state == Browser::State::needs_human) {
            *human = true;
            continue;
        }

        *eligible = true;

        uint32_t cap = std::min(b->capacity, opts_.per_browser);
        if (b->inflight >= cap) {
            continue;
        }

        if (best == nullptr) {
            best = b;
            continue;
        }

        // least busy first, then the one that named the model, then the
        // one that waited longest
        uint64_t lb = uint64_t(b->inflight) * std::min(best->capacity,
                                                       opts_.per_browser);
        uint64_t lbest = uint64_t(best->inflight) * cap;
        if (lb != lbest) {
            if (lb < lbest) {
                best = b;
            }
            continue;
        }
        bool na = b->announced(r->model), nb = best->announced(r->model);
        if (na != nb) {
            if (na) {
                best = b;
            }
            continue;
        }
        if (b->last_assign < best->last_assign) {
            best = b;
        }
    }

    return best;
}

void Bridge::dispatch(Request *r)
{
    bool eligible = false, human = false;
    Browser *b = pick(r, &eligible, &human);

    place(r, b, eligible, human);
}

// pick()'s answer carried out: the browser, the queue, or the client's error
void Bridge::place(Request *r, Browser *b, bool eligible, bool human)
{
    if (b != nullptr) {
        assign(r, b);
        return;
    }

    if (!eligible) {
        unavailable(r, human);
        return;
    }

    if (queue_.size() >= opts_.queue) {
        seg_.header()->counters.rejected++;
        fail(r, 503, "queue_full",
             "Every browser is busy and the wait queue is full; retry "
             "shortly.",
             true, opts_.retry_after);
        return;
    }

    r->queued = true;
    r->queued_at = now_ms();
    queue_.push_back(r);
    seg_.header()->counters.queued++;
    dirty_ = true;
}

void Bridge::unavailable(Request *r, bool human)
{
    seg_.header()->counters.rejected++;

    if (r->refused) {
        // no other tab took it: the client hears why the tab said no
        const Refusal &no = *r->refused;
        fail(r, no.status, no.code, no.message, no.retryable, no.retry_after);
        return;
    }

    if (human) {
        fail(r, 503, "needs_human",
             "The browser tab needs a person: a verification page (such as "
             "a Cloudflare check) is open in it. Solve it or reload the tab, "
             "then retry.",
             true, 30);
        return;
    }

    fail(r, 503, "no_browser",
         "No browser that can serve this request is connected. Open the "
         "chat site (or SillyTavern) with the chatbridge script in a "
         "browser, then retry.",
         true, opts_.retry_after);
}

void Bridge::assign(Request *r, Browser *b)
{
    if (r->control) {
        // a command has its tab from control() and takes no place in it
        log(Level::error, "command %s cannot go to a browser as a task",
            r->id.c_str());
        fail(r, 500, "bridge_error", "a command cannot be dispatched as a "
             "task", false, 0);
        return;
    }

    r->browser = b;
    r->attempts++;
    b->requests.insert(r);
    b->inflight++;
    b->last_assign = now_ms();
    seg_.header()->counters.dispatched++;
    if (r->attempts > 1) {
        seg_.header()->counters.retried++;
    }
    dirty_ = true;

    cb_rec_meta_t meta;
    meta.browser_len = uint32_t(b->id.size());
    meta.attempt = r->attempts;
    emit(r, CB_REC_META, 0, &meta, sizeof(meta), b->id.data(), b->id.size());

    b->send(r->task);
}

void Bridge::detach(Request *r)
{
    if (r->browser != nullptr) {
        r->browser->requests.erase(r);
        if (!r->control) {
            r->browser->inflight--;     // commands take no place
        }
        r->browser = nullptr;
        dirty_ = true;
    }
}

// give waiting requests to browsers that have room
void Bridge::pump()
{
    for (auto it = queue_.begin(); it != queue_.end();) {
        Request *r = *it;
        bool eligible = false, human = false;
        Browser *b = pick(r, &eligible, &human);

        if (b != nullptr) {
            it = queue_.erase(it);
            r->queued = false;
            assign(r, b);
            continue;
        }

        if (!eligible) {
            it = queue_.erase(it);
            r->queued = false;
            unavailable(r, human);
            continue;
        }

        ++it;
    }
}

// --- records

void Bridge::notify(Request *r)
{
    cb_shm_slot_t *s = cb_shm_slot(base_, r->slot);

    if (__atomic_exchange_n(&s->ready, 1, __ATOMIC_SEQ_CST)) {
        return;     // already queued to the worker
    }

    cb_shm_worker_t *w = cb_shm_worker(base_, r->worker);

    (void) cb_queue_push(base_, &w->to_worker,
                         (uint64_t(r->gen) << 32) | r->slot);

    if (cb_queue_notify(&w->to_worker) && control_ != nullptr) {
        control_->doorbell(r->worker);
    }
}

void Bridge::emit(Request *r, uint8_t type, uint8_t flags, const void *a,
                  size_t alen, const void *b, size_t blen)
{
    if (r->pending.empty()) {
        int rc = cb_ring_write2(base_, r->slot, type, flags, a,
                                uint32_t(alen), b, uint32_t(blen));
        if (rc == CB_AGAIN) {
            // ask for a credit, then look once more: the worker may have
            // read between the two
            cb_shm_slot_t *s = cb_shm_slot(base_, r->slot);
            __atomic_store_n(&s->writer_waiting, 1, __ATOMIC_SEQ_CST);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            rc = cb_ring_write2(base_, r->slot, type, flags, a,
                                uint32_t(alen), b, uint32_t(blen));
            if (rc == CB_AGAIN) {
                seg_.header()->counters.ring_full++;
            }
        }
        if (rc == CB_OK) {
            // which browser took it is only for the log: it waits in the
            // ring for the next record, which wakes the worker (the final
            // one always does), and spares the worker a wake-up per request
            if (type != CB_REC_META) {
                notify(r);
            }
            return;
        }
        if (rc != CB_AGAIN) {
            log(Level::error, "record of %zu bytes does not fit "
                "the ring", alen + blen);
            return;
        }
    }

    Pending p;
    p.type = type;
    p.flags = flags;
    p.data.assign(static_cast<const char *>(a), alen);
    if (blen) {
        p.data.append(static_cast<const char *>(b), blen);
    }
    r->pending_bytes += p.data.size();
    r->pending.push_back(std::move(p));

    if (r->pending_bytes > kPendingHigh && !r->paused
        && r->browser != nullptr) {
        r->paused = true;
        r->browser->send(flow_frame("pause", r->id));
    }

    if (r->pending_bytes > kPendingHard && !r->finishing) {
        // the browser did not pause: drop what waits, end with an error
        log(Level::warn, "request %s: the client is %zu bytes behind; "
            "failing it", r->id.c_str(), r->pending_bytes);
        r->pending.clear();
        r->pending_bytes = 0;
        if (r->browser != nullptr) {
            r->browser->send(cancel_frame(r->id, "client_too_slow"));
        }
        fail(r, 502, "client_too_slow",
             "The client read the answer too slowly and fell too far "
             "behind.",
             false, 0);
    }
}

// answer text, cut into records at character boundaries
void Bridge::emit_text(Request *r, uint8_t type, const char *s, size_t len)
{
    size_t max = cb_ring_max_record(base_);

    while (len) {
        size_t n = utf8_cut(s, len, max);
        emit(r, type, 0, s, n);
        s += n;
        len -= n;
    }
}

// a value that must arrive whole: pieces flagged "more"
void Bridge::emit_long(Request *r, uint8_t type, const char *s, size_t len)
{
    size_t max = cb_ring_max_record(base_);

    while (len > max) {
        emit(r, type, CB_REC_MORE, s, max);
        s += max;
        len -= max;
    }
    emit(r, type, 0, s, len);
}

// the worker made room: move what waits into the ring
void Bridge::flush(Request *r)
{
    while (!r->pending.empty()) {
        Pending &p = r->pending.front();
        int rc = cb_ring_write(base_, r->slot, p.type, p.flags, p.data.data(),
                               uint32_t(p.data.size()));
        if (rc == CB_AGAIN) {
            cb_shm_slot_t *s = cb_shm_slot(base_, r->slot);
            __atomic_store_n(&s->writer_waiting, 1, __ATOMIC_SEQ_CST);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            rc = cb_ring_write(base_, r->slot, p.type, p.flags,
                               p.data.data(), uint32_t(p.data.size()));
            if (rc == CB_AGAIN) {
                break;
            }
        }
        r->pending_bytes -= p.data.size();
        r->pending.pop_front();
        notify(r);
    }

    if (r->paused && r->pending_bytes < kPendingLow
        && r->browser != nullptr) {
        r->paused = false;
        r->browser->send(flow_frame("resume", r->id));
    }

    if (r->pending.empty() && r->finishing) {
        complete(r);
    }
}

void Bridge::finish_ok(Request *r, uint32_t reason, json_t *usage)
{
    cb_rec_done_t d;
    memset(&d, 0, sizeof(d));
    d.finish_reason = reason;

    if (json_is_object(usage)) {
        d.usage_known = 1;
        d.prompt_tokens = uint32_t(json_integer_value(
            json_object_get(usage, "prompt_tokens")));
        d.completion_tokens = uint32_t(json_integer_value(
            json_object_get(usage, "completion_tokens")));
        d.reasoning_tokens = uint32_t(json_integer_value(
            json_object_get(usage, "reasoning_tokens")));
        d.total_tokens = uint32_t(json_integer_value(
            json_object_get(usage, "total_tokens")));
    }

    if (r->browser != nullptr) {
        r->browser->served++;
    }
    detach(r);

    emit(r, CB_REC_DONE, 0, &d, sizeof(d));
    r->finishing = true;
    if (r->pending.empty()) {
        complete(r);
    }
}

void Bridge::fail(Request *r, unsigned status, const std::string &code,
                  const std::string &message, bool retryable,
                  uint32_t retry_after)
{
    if (r->finishing) {
        return;
    }

    if (r->queued) {
        queue_.erase(std::find(queue_.begin(), queue_.end(), r));
        r->queued = false;
    }
    detach(r);

    size_t max = cb_ring_max_record(base_) - sizeof(cb_rec_error_t);
    std::string c = code.substr(0, 64);
    std::string m = message.substr(0, utf8_cut(message.data(),
                                               message.size(),
                                               max - c.size()));

    cb_rec_error_t e;
    memset(&e, 0, sizeof(e));
    e.status = uint16_t(status);
    e.retryable = retryable ? 1 : 0;
    e.code_len = uint8_t(c.size());
    e.retry_after = retry_after;
    e.message_len = uint32_t(m.size());

    std::string payload = c + m;
    emit(r, CB_REC_ERROR, 0, &e, sizeof(e), payload.data(), payload.size());

    log(Level::info, "request %s failed: %u %s: %s", r->id.c_str(), status,
        c.c_str(), m.c_str());

    r->finishing = true;
    if (r->pending.empty()) {
        complete(r);
    }
}

// the final record is in the ring: hand the slot over (see cb_shm.h)
void Bridge::complete(Request *r)
{
    cb_shm_slot_t *s = cb_shm_slot(base_, r->slot);

    if (!cb_slot_transition(s, CB_SLOT_ACTIVE, CB_SLOT_DONE)
        && cb_slot_state(s) == CB_SLOT_CANCELLED) {
        cb_slot_release(base_, r->slot);
    }

    destroy(r);
}

void Bridge::destroy(Request *r)
{
    if (r->queued) {
        queue_.erase(std::find(queue_.begin(), queue_.end(), r));
    }
    detach(r);
    if (by_slot_[r->slot] == r) {
        by_slot_[r->slot] = nullptr;
    }
    by_id_.erase(r->id);   // frees r
}

// --- the browser side

bool Bridge::accepting_browsers() const
{
    return browsers_.size() < opts_.max_browsers;
}

void Bridge::browser_open(Browser *b)
{
    browsers_.push_back(b);
    log(Level::info, "browser connection from %s",
        b->origin.empty() ? "(no origin)" : b->origin.c_str());
}

void Bridge::browser_message(Browser *b, const char *data, size_t len)
{
    // answers in their plain shape skip the JSON tree (frames.h)
    FastFrame ff;
    if (b->state != Browser::State::hello
        && schema_.read_fast(data, len, &ff, &scratch_)) {
        on_fast(b, ff);
        return;
    }

    json_error_t je;
    std::unique_ptr<json_t, void (*)(json_t *)> f(
        json_loadb(data, len, 0, &je), json_decref);

    if (!f) {
        Verdict v;
        v.ok = false;
        v.error = "not_object";
        v.message = std::string("not JSON: ") + je.text;
        bad_frame(b, nullptr, v);
        return;
    }

    Verdict v = schema_.validate(f.get(), Direction::browser);
    const char *type = json_string_value(json_object_get(f.get(), "type"));

    if (b->state == Browser::State::hello) {
        if (!v.ok || strcmp(type, "hello") != 0) {
            b->send(error_frame("bad_frame", v.ok ? "the first frame must "
                                "be hello" : v.message, ""));
            b->close(4400, "hello expected");
            return;
        }
        on_hello(b, f.get());
        return;
    }

    if (!v.ok) {
        bad_frame(b, f.get(), v);
        return;
    }

    if (strcmp(type, "ping") == 0) {
        b->send(pong_frame(json_object_get(f.get(), "t")));

    } else if (strcmp(type, "pong") == 0 || strcmp(type, "hello") == 0) {
        // liveness only; a second hello changes nothing

    } else if (strcmp(type, "models") == 0) {
        b->models.clear();
        b->model_ids.clear();
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(f.get(), "models"), i, m) {
            std::string owner = str(m, "organization");
            std::string uuid = str(m, "uuid");
            bool image = str(m, "type") == "image";
            b->models.emplace_back(str(m, "id"),
                                   owner.empty() ? b->kind : owner);
            if (!uuid.empty() && !good_id(uuid)) {
                log(Level::warn, "browser %s: the uuid of model %s is not "
                    "an id (letters, digits, '-', '_'); models.json does "
                    "not get it", b->id.c_str(), str(m, "id").c_str());
                continue;
            }
            if (!uuid.empty() || image) {
                b->model_ids.emplace_back(
                    str(m, "id"), (uuid.empty() ? std::string("null") : uuid)
                                      + (image ? ":image" : ""));
            }
        }
        dirty_ = true;
        log(Level::info, "browser %s announced %zu models", b->id.c_str(),
            b->models.size());
        if (opts_.update_models && b->kind == "arena") {
            update_models_file(b);
        }

    } else if (strcmp(type, "state") == 0) {
        std::string st = str(f.get(), "state");
        b->message = str(f.get(), "message");
        b->state = st == "needs_human" ? Browser::State::needs_human
                                       : Browser::State::ready;
        dirty_ = true;
        log(Level::notice, "browser %s is %s%s%s", b->id.c_str(),
            b->state_name(), b->message.empty() ? "" : ": ",
            b->message.c_str());
        if (b->state == Browser::State::ready) {
            pump();
        }

    } else if (strcmp(type, "result") == 0) {
        on_result(b, f.get());

    } else {
        on_answer(b, type, f.get());
    }
}

void Bridge::on_hello(Browser *b, json_t *f)
{
    if (!constant_time_equal(str(f, "token"), opts_.token)) {
        log(Level::warn, "browser from %s sent a wrong token",
            b->origin.empty() ? "(no origin)" : b->origin.c_str());
        b->send(error_frame("unauthorized", "wrong token", ""));
        b->close(4401, "bad token");
        return;
    }

    // a unique id: the one asked for if free
    std::string want = str(f, "id");
    if (want.empty()) {
        want = "b" + std::to_string(next_browser_++);
    }
    std::string id = want;
    for (unsigned n = 2;; n++) {
        bool taken = false;
        for (Browser *o : browsers_) {
            taken |= o != b && o->id == id;
        }
        if (!taken) {
            break;
        }
        id = want + "-" + std::to_string(n);
    }

    json_t *caps = json_object_get(f, "capabilities");
    json_t *conc = json_object_get(caps, "concurrency");

    b->id = id;
    b->kind = str(f, "kind");
    b->name = str(f, "name");
    b->agent = str(f, "agent");
    b->capacity = conc ? uint32_t(json_number_value(conc)) : 1;
    b->any_model = !json_is_false(json_object_get(caps, "any_model"));
    b->capture = json_is_true(json_object_get(caps, "capture"));

    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(caps, "models"), i, m) {
        b->models.emplace_back(json_string_value(m), b->kind);
    }

    b->state = Browser::State::ready;
    seg_.header()->counters.browsers = browsers_.size();
    dirty_ = true;

    b->send(welcome_frame(b->id, opts_.heartbeat, opts_.max_frame));

    log(Level::notice, "browser %s (%s%s%s) ready, takes %u at once",
        b->id.c_str(), b->kind.c_str(), b->agent.empty() ? "" : ", ",
        b->agent.c_str(), std::min(b->capacity, opts_.per_browser));

    pump();
}

// the request a browser's frame is about, if it is that browser's
Request *Bridge::answering(Browser *b, std::string_view id, const char *type)
{
    key_.assign(id.data(), id.size());
    auto it = by_id_.find(key_);

    if (it == by_id_.end()) {
        // cancelled or finished: frames still in flight are expected
        log(Level::debug, "browser %s: %s for unknown request %s",
            b->id.c_str(), type, key_.c_str());
        return nullptr;
    }

    Request *r = it->second.get();

    if (r->browser != b) {
        b->send(error_frame("bad_frame", "that request is not yours", key_));
        return nullptr;
    }

    if (r->control) {
        // a command is answered with a result frame, never as a task
        seg_.header()->counters.bad_frames++;
        log(Level::info, "browser %s sent a bad frame: %s for command %s",
            b->id.c_str(), type, key_.c_str());
        b->send(error_frame("bad_frame", std::string("a command takes a "
                            "result frame, not ") + type, key_));
        return nullptr;
    }

    return r;
}

void Bridge::answer_text(Request *r, uint8_t type, const char *s, size_t len)
{
    if (len == 0) {
        return;
    }
    r->answered = true;
    r->task.reset();
    emit_text(r, type, s, len);
}

void Bridge::answer_done(Request *r, std::string_view reason, json_t *usage)
{
    finish_ok(r, finish_reason(reason), usage);
    pump();
}

void Bridge::on_fast(Browser *b, const FastFrame &f)
{
    static const char *const names[] = { "delta", "reasoning", "done" };

    Request *r = answering(b, f.request_id, names[int(f.kind)]);
    if (r == nullptr) {
        return;
    }

    switch (f.kind) {
    case FastFrame::Kind::delta:
        answer_text(r, CB_REC_DELTA, f.text.data(), f.text.size());
        break;
    case FastFrame::Kind::reasoning:
        answer_text(r, CB_REC_REASONING, f.text.data(), f.text.size());
        break;
    case FastFrame::Kind::done:
        answer_done(r, f.finish_reason, nullptr);
        break;
    }
}

void Bridge::on_answer(Browser *b, const char *type, json_t *f)
{
    json_t *jid = json_object_get(f, "request_id");
    std::string_view id(json_string_value(jid) ? json_string_value(jid) : "",
                        json_string_length(jid));

    Request *r = answering(b, id, type);
    if (r == nullptr) {
        return;
    }

    if (strcmp(type, "delta") == 0 || strcmp(type, "reasoning") == 0) {
        json_t *t = json_object_get(f, "text");
        answer_text(r, type[0] == 'd' ? CB_REC_DELTA : CB_REC_REASONING,
                    json_string_value(t), json_string_length(t));

    } else if (strcmp(type, "image") == 0) {
        json_t *u = json_object_get(f, "url");
        r->answered = true;
        r->task.reset();
        emit_long(r, CB_REC_IMAGE, json_string_value(u),
                  json_string_length(u));

    } else if (strcmp(type, "done") == 0) {
        json_t *fr = json_object_get(f, "finish_reason");
        answer_done(r, std::string_view(json_string_value(fr)
                                            ? json_string_value(fr) : "",
                                        json_string_length(fr)),
                    json_object_get(f, "usage"));

    } else if (strcmp(type, "error") == 0) {
        std::string code = str(f, "code");
        ErrorCode def = schema_.error_code(code);
        json_t *st = json_object_get(f, "status");
        json_t *rt = json_object_get(f, "retryable");
        unsigned status = st ? unsigned(json_integer_value(st)) : def.status;
        bool retryable = rt ? json_is_true(rt) : def.retryable;
        uint32_t after = uint32_t(json_number_value(
            json_object_get(f, "retry_after")));

        if (code == "needs_human") {
            b->state = Browser::State::needs_human;
            b->message = str(f, "message");
            dirty_ = true;
        }

        // a tab that cannot take it now: another tab may (never the same
        // one again; with no other tab, the client hears why)
        if (!r->answered && (code == "needs_human" || code == "busy")
            && r->attempts <= opts_.retries) {
            bool eligible = false, human = false;
            r->refused = std::make_unique<Refusal>(Refusal{
                b->id, status, code, str(f, "message"), retryable, after });
            detach(r);
            Browser *o = pick(r, &eligible, &human);
            if (eligible) {
                place(r, o, eligible, human);
                return;
            }
        }

        b->errors++;
        fail(r, status, code, str(f, "message"), retryable, after);
        pump();
    }
}

void Bridge::bad_frame(Browser *b, json_t *f, const Verdict &v)
{
    seg_.header()->counters.bad_frames++;

    std::string id = str(f, "request_id");
    log(Level::info, "browser %s sent a bad frame: %s (%s)", b->id.c_str(),
        v.message.c_str(), v.error.c_str());

    b->send(error_frame("bad_frame", v.message, id));

    // a request this browser holds cannot be trusted to finish: end it
    auto it = by_id_.find(id);
    if (it != by_id_.end() && it->second->browser == b) {
        Request *r = it->second.get();
        b->send(cancel_frame(r->id, "bad_frame"));
        b->errors++;
        fail(r, 502, "bad_frame",
             "The browser sent an invalid frame for this request: "
                 + v.message,
             false, 0);
        pump();
    }
}

void Bridge::browser_closed(Browser *b)
{
    browsers_.erase(std::remove(browsers_.begin(), browsers_.end(), b),
                    browsers_.end());
    seg_.header()->counters.browsers = browsers_.size();
    dirty_ = true;

    if (b->id.empty()) {
        return;     // never said hello
    }

    log(Level::notice, "browser %s disconnected with %zu requests in "
        "flight", b->id.c_str(), b->requests.size());

    // requests it had not started answering go elsewhere, once
    std::vector<Request *> held(b->requests.begin(), b->requests.end());
    std::vector<Request *> again;

    for (Request *r : held) {
        detach(r);
        if (r->control) {
            fail(r, 502, "browser_disconnected",
                 "The tab closed before the command finished.", true, 0);
            continue;
        }
        if (!r->answered && r->attempts <= opts_.retries) {
            again.push_back(r);
        } else {
            fail(r, 502, "browser_disconnected",
                 "The browser disconnected before the answer was complete.",
                 true, 0);
        }
    }

    for (Request *r : again) {
        dispatch(r);
    }
    pump();
}

// --- operator commands

// A command from /chatbridge/admin: {"command", "args", "dir", "timeout_ms"}
void Bridge::control(Request *r, const std::string &json)
{
    json_error_t je;
    std::unique_ptr<json_t, void (*)(json_t *)> t(
        json_loadb(json.data(), json.size(), 0, &je), json_decref);

    r->control = true;
    r->command = str(t.get(), "command");

    if (r->command == "send_models") {
        unsigned asked = 0;
        for (Browser *b : browsers_) {
            if (b->state != Browser::State::hello
                && b->state != Browser::State::closing && b->kind == "arena")
            {
                b->send(command_frame(r->id + "." + std::to_string(asked),
                                      "send_models", nullptr));
                asked++;
            }
        }
        std::string res = "{\"ok\":true,\"asked\":" + std::to_string(asked)
                          + "}";
        emit_long(r, CB_REC_RESULT, res.data(), res.size());
        finish_ok(r, CB_FINISH_STOP, nullptr);
        return;
    }

    if (r->command != "capture") {
        fail(r, 400, "bad_request", "unknown command", false, 0);
        return;
    }

    // the tab that captures: one whose script can, an arena one first
    Browser *best = nullptr;
    for (Browser *b : browsers_) {
        if (b->state != Browser::State::ready || !b->capture) {
            continue;
        }
        if (best == nullptr || (b->kind == "arena" && best->kind != "arena")) {
            best = b;
        }
    }

    if (best == nullptr) {
        fail(r, 503, "no_capture_browser",
             "No connected tab can capture session ids: open the chat site "
             "with the chatbridge userscript, then retry.",
             true, opts_.retry_after);
        return;
    }

    json_t *args = json_object_get(t.get(), "args");
    r->args.reset(json_incref(t.get()));

    json_int_t ms = json_integer_value(json_object_get(t.get(),
                                                       "timeout_ms"));
    r->deadline = now_ms() + uint64_t(ms > 0 ? ms : 120000);

    r->browser = best;
    best->requests.insert(r);

    cb_rec_meta_t meta;
    meta.browser_len = uint32_t(best->id.size());
    meta.attempt = 1;
    emit(r, CB_REC_META, 0, &meta, sizeof(meta), best->id.data(),
         best->id.size());

    best->send(command_frame(r->id, "capture",
                             json_is_object(args) ? args : nullptr));

    log(Level::notice, "capture armed in browser %s for %s", best->id.c_str(),
        json_string_value(json_object_get(args, "model"))
            ? json_string_value(json_object_get(args, "model"))
            : "the global ids");
}

void Bridge::on_result(Browser *b, json_t *f)
{
    std::string id = str(f, "command_id");
    auto it = by_id_.find(id);

    if (it == by_id_.end() || !it->second->control
        || it->second->browser != b) {
        // send_models answers, or a command that timed out
        log(Level::info, "browser %s: result for command %s", b->id.c_str(),
            id.c_str());
        return;
    }

    Request *r = it->second.get();

    if (!json_is_true(json_object_get(f, "ok"))) {
        std::string msg = str(f, "message");
        fail(r, 502, "capture_failed",
             msg.empty() ? "the tab could not capture the ids" : msg, true,
             0);
        return;
    }

    json_t *data = json_object_get(f, "data");
    std::unique_ptr<json_t, void (*)(json_t *)> out(json_object(),
                                                     json_decref);
    std::string err;

    if (!write_capture(r, data, out.get(), &err)) {
        fail(r, 502, "capture_failed", err, false, 0);
        return;
    }

    char *text = json_dumps(out.get(), JSON_COMPACT);
    if (text != nullptr) {
        emit_long(r, CB_REC_RESULT, text, strlen(text));
        free(text);
    }

    log(Level::notice, "captured session %s in browser %s",
        str(data, "session_id").c_str(), b->id.c_str());

    finish_ok(r, CB_FINISH_STOP, nullptr);
}

namespace {

// dir, resolved, if it is --state-dir or inside it
bool inside(const std::string &dir, const std::string &root,
            std::string *real)
{
    char a[PATH_MAX], b[PATH_MAX];
    if (root.empty() || realpath(dir.c_str(), a) == nullptr
        || realpath(root.c_str(), b) == nullptr) {
        return false;
    }
    std::string d(a), r(b);
    if (d != r && d.rfind(r == "/" ? r : r + "/", 0) != 0) {
        return false;
    }
    *real = d;
    return true;
}

// set keys of a JSONC text one by one, keeping its comments; the values
// are released in any case
bool set_members(std::string *text, const std::string &name,
                 const std::vector<std::pair<const char *, json_t *>> &kv,
                 std::string *err)
{
    bool ok = true;
    char e[512];
    for (const auto &p : kv) {
        size_t len;
        char *out = nullptr;
        if (ok) {
            out = cb_jsonc_set_member(text->data(), text->size(), p.first,
                                      p.second, &len, e, sizeof(e));
            if (out == nullptr) {
                *err = name + ": " + e;
                ok = false;
            }
        }
        json_decref(p.second);
        if (out != nullptr) {
            text->assign(out, len);
            free(out);
        }
    }
    return ok;
}

// what is about to be written passes the checks nginx makes when it loads
// the file, so that a reload cannot fail on it
bool arena_file_ok(const std::string &text, const std::string &file,
                   int (*check)(json_t *, const char *, char *, size_t),
                   std::string *err)
{
    if (text.size() > CB_ARENA_FILE_MAX) {
        *err = file + ": would grow past "
               + std::to_string(CB_ARENA_FILE_MAX) + " bytes";
        return false;
    }

    char e[512];
    std::unique_ptr<json_t, void (*)(json_t *)> doc(
        cb_jsonc_parse(text.data(), text.size(), file.c_str(), e,
                       sizeof(e)), json_decref);
    if (!doc || check(doc.get(), file.c_str(), e, sizeof(e)) != 0) {
        *err = e;
        return false;
    }
    return true;
}

} // namespace

// The captured ids go where LMArena Bridge kept them: the model's mapping
// in model_endpoint_map.json (one session is replaced; a pool gets it first,
// in place of the same session, and drops its oldest past
// CB_ARENA_POOL_MAX), or the global ids in config.jsonc; both written
// atomically, comments kept, and only if nginx would load the result.
bool Bridge::write_capture(Request *r, json_t *data, json_t *out,
                           std::string *err)
{
    std::string sid = str(data, "session_id"), mid = str(data, "message_id");

    if (!good_id(sid) || !good_id(mid)) {
        *err = "the tab sent ids that are not session ids";
        return false;
    }

    json_t *args = json_object_get(r->args.get(), "args");
    std::string model = str(args, "model");
    std::string mode = str(args, "mode");
    std::string target = str(args, "target");
    if (mode != "battle") {
        mode = "direct_chat";
    }
    target = (target == "B" || target == "b") ? "B" : "A";

    json_t *entry = json_pack("{s:s, s:s, s:s, s:s}", "session_id",
                              sid.c_str(), "message_id", mid.c_str(), "mode",
                              mode.c_str(), "battle_target", target.c_str());
    json_object_set_new(out, "ok", json_true());
    json_object_set_new(out, "model", model.empty() ? json_null()
                                                    : json_string(
                                                          model.c_str()));
    json_object_set_new(out, "entry", entry);
    json_object_set_new(out, "browser", json_string(r->browser->id.c_str()));

    std::string dir;

    if (!inside(str(r->args.get(), "dir"), opts_.state_dir, &dir)) {
        json_object_set_new(out, "written", json_false());
        json_object_set_new(out, "note", json_string(
            opts_.state_dir.empty()
                ? "the sidecar has no --state-dir: the ids apply until nginx "
                  "reloads, and are not saved"
                : "the arena directory is outside --state-dir: the ids apply "
                  "until nginx reloads, and are not saved"));
        return true;
    }

    std::string file, text;
    std::vector<std::pair<const char *, json_t *>> kv;
    int (*check)(json_t *, const char *, char *, size_t);

    if (model.empty()) {
        file = dir + "/config.jsonc";
        switch (read_regular_file(file, CB_ARENA_FILE_MAX, &text, err)) {
        case ReadFile::ok:
            break;
        case ReadFile::missing:
            *err = file + " cannot be read";
            return false;
        case ReadFile::error:
            return false;
        }
        kv = { { "session_id", json_string(sid.c_str()) },
               { "message_id", json_string(mid.c_str()) },
               { "id_updater_last_mode", json_string(mode.c_str()) },
               { "id_updater_battle_target", json_string(target.c_str()) } };
        check = cb_arena_check_config;

    } else {
        file = dir + "/model_endpoint_map.json";
        if (read_regular_file(file, CB_ARENA_FILE_MAX, &text, err)
            == ReadFile::error) {
            return false;
        }
        if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
            text = "{\n}\n";
        }

        char e[512];
        std::unique_ptr<json_t, void (*)(json_t *)> map(
            cb_jsonc_parse(text.data(), text.size(), file.c_str(), e,
                           sizeof(e)), json_decref);
        if (!map) {
            *err = e;
            return false;
        }

        json_t *old = json_object_get(map.get(), model.c_str());
        json_t *value;

        if (json_is_array(old)) {
            value = json_array();
            json_array_append(value, entry);

            size_t i;
            json_t *item;
            json_array_foreach(old, i, item) {
                if (json_array_size(value) == CB_ARENA_POOL_MAX) {
                    break;      // the oldest go
                }
                if (str(item, "session_id") != sid) {
                    json_array_append(value, item);
                }
            }
        } else {
            value = json_incref(entry);
        }

        kv = { { model.c_str(), value } };
        check = cb_arena_check_map;
    }

    if (!set_members(&text, file, kv, err)
        || !arena_file_ok(text, file, check, err)) {
        return false;
    }

    char e[512];
    if (cb_file_write_atomic(file.c_str(), text.data(), text.size(), e,
                             sizeof(e)) != 0) {
        *err = e;
        return false;
    }

    json_object_set_new(out, "written", json_string(file.c_str()));
    return true;
}

// --update-models: models.json follows the list the page shows
void Bridge::update_models_file(Browser *b)
{
    char dir[PATH_MAX];
    if (b->model_ids.empty() || opts_.state_dir.empty()
        || realpath(opts_.state_dir.c_str(), dir) == nullptr) {
        return;     // an empty list is a page that has not loaded yet
    }

    std::string file = std::string(dir) + "/models.json", text, err;
    ReadFile rf = read_regular_file(file, CB_ARENA_FILE_MAX, &text, &err);
    if (rf == ReadFile::error) {
        log(Level::error, "not updating %s", err.c_str());
        return;
    }

    char e[512];
    std::unique_ptr<json_t, void (*)(json_t *)> old(
        rf == ReadFile::ok ? cb_jsonc_parse(text.data(), text.size(),
                                            file.c_str(), e, sizeof(e))
                           : json_object(),
        json_decref);
    if (!old) {
        log(Level::error, "not updating %s: %s", file.c_str(), e);
        return;
    }

    std::unique_ptr<json_t, void (*)(json_t *)> now(json_object(),
                                                     json_decref);
    std::vector<std::string> added, removed, changed;
    for (const auto &kv : b->model_ids) {
        const std::string &name = kv.first;
        std::string value = kv.second;
        json_object_set_new(now.get(), name.c_str(),
                            json_string(value.c_str()));
        const char *was = json_string_value(json_object_get(old.get(),
                                                            name.c_str()));
        if (was == nullptr) {
            added.push_back(name);
        } else if (value != was) {
            changed.push_back(name);
        }
    }

    const char *key;
    json_t *v;
    json_object_foreach(old.get(), key, v) {
        if (json_object_get(now.get(), key) == nullptr) {
            removed.push_back(key);
        }
    }

    if (added.empty() && removed.empty() && changed.empty()) {
        return;
    }

    char *out = json_dumps(now.get(), JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    if (out == nullptr) {
        return;
    }
    std::string body = std::string(out) + "\n";
    free(out);

    if (!arena_file_ok(body, file, cb_arena_check_models, &err)) {
        log(Level::error, "not updating %s", err.c_str());
        return;
    }

    if (cb_file_write_atomic(file.c_str(), body.data(), body.size(), e,
                             sizeof(e)) != 0) {
        log(Level::error, "%s", e);
        return;
    }

    auto join = [](const std::vector<std::string> &v) {
        std::string s;
        for (const auto &x : v) {
            s += (s.empty() ? "" : ", ") + x;
        }
        return s.empty() ? std::string("none") : s;
    };

    log(Level::notice, "models.json updated from browser %s: added %s; "
        "removed %s; changed %s", b->id.c_str(), join(added).c_str(),
        join(removed).c_str(), join(changed).c_str());
}

// --- housekeeping

void Bridge::tick()
{
    uint64_t now = now_ms();

    for (Browser *b : browsers_) {
        if (b->state == Browser::State::closing) {
            continue;
        }
        if (b->state == Browser::State::hello) {
            if (now - b->connected_at > opts_.hello_timeout) {
                b->close(4400, "no hello");
            }
            continue;
        }
        if (now - b->last_rx > opts_.dead_after) {
            log(Level::warn, "browser %s silent for %llu ms: dropping it",
                b->id.c_str(), (unsigned long long) (now - b->last_rx));
            b->close(4408, "dead peer");
            continue;
        }
        if (now - b->last_ping >= opts_.heartbeat) {
            b->last_ping = now;
            b->send(ping_frame(double(wall_s()) * 1000));
        }
    }

    // commands that waited too long for the person at the tab
    std::vector<Request *> late;
    for (auto &kv : by_id_) {
        Request *r = kv.second.get();
        if (r->control && r->deadline && now > r->deadline && !r->finishing)
        {
            late.push_back(r);
        }
    }
    for (Request *r : late) {
        if (r->browser != nullptr) {
            r->browser->send(cancel_frame(r->id, "timeout"));
        }
        fail(r, 504, "capture_timeout",
             "No Retry click was captured in time. Click Retry on the "
             "model's reply in the chat tab while its title shows the "
             "target mark, then try again.",
             true, 0);
    }

    while (!queue_.empty()
           && now - queue_.front()->queued_at > opts_.queue_timeout) {
        Request *r = queue_.front();
        fail(r, 503, "no_browser_free",
             "No browser became free in time; retry shortly.", true,
             opts_.retry_after);
    }

    if (dirty_ || now - published_ >= kPublishEvery) {
        publish();
        published_ = now;
        dirty_ = false;
    }
}

void Bridge::publish()
{
    json_t *doc = json_object();
    json_t *browsers = json_array();
    json_t *models = json_array();
    json_t *seen = json_object();
    uint64_t now = now_ms();

    for (Browser *b : browsers_) {
        if (b->state == Browser::State::hello) {
            continue;
        }
        json_array_append_new(browsers, json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I}",
            "id", b->id.c_str(), "kind", b->kind.c_str(),
            "name", b->name.c_str(), "agent", b->agent.c_str(),
            "state", b->state_name(), "message", b->message.c_str(),
            "inflight", json_int_t(b->inflight),
            "capacity", json_int_t(std::min(b->capacity, opts_.per_browser)),
            "served", json_int_t(b->served), "errors", json_int_t(b->errors),
            "connected_ms", json_int_t(now - b->connected_at),
            "models", json_int_t(b->models.size())));

        for (const auto &m : b->models) {
            if (json_object_get(seen, m.first.c_str()) == nullptr) {
                json_object_set_new(seen, m.first.c_str(), json_true());
                json_array_append_new(models, json_pack(
                    "{s:s, s:s}", "id", m.first.c_str(), "owned_by",
                    m.second.c_str()));
            }
        }
    }
    json_decref(seen);

    cb_sidecar_counters_t &c = seg_.header()->counters;

    json_object_set_new(doc, "sidecar", json_pack(
        "{s:i, s:I, s:I}", "pid", int(getpid()), "started",
        json_int_t(started_), "uptime_ms",
        json_int_t(wall_s() - started_) * 1000));
    json_object_set_new(doc, "browsers", browsers);
    json_object_set_new(doc, "models", models);
    json_object_set_new(doc, "queue", json_pack(
        "{s:I, s:I, s:I}", "length", json_int_t(queue_.size()), "max",
        json_int_t(opts_.queue), "oldest_ms",
        json_int_t(queue_.empty() ? 0 : now - queue_.front()->queued_at)));
    json_object_set_new(doc, "requests", json_pack(
        "{s:I}", "active", json_int_t(by_id_.size())));
    json_object_set_new(doc, "totals", json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
        "dispatched", json_int_t(c.dispatched),
        "queued", json_int_t(c.queued), "retried", json_int_t(c.retried),
        "rejected", json_int_t(c.rejected),
        "ring_full", json_int_t(c.ring_full),
        "bad_frames", json_int_t(c.bad_frames),
        "reclaimed_slots", json_int_t(c.reclaimed_slots),
        "reclaimed_chunks", json_int_t(c.reclaimed_chunks)));

    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);

    if (text == nullptr) {
        return;
    }

    size_t len = strlen(text);
    if (len > seg_.header()->state_size) {
        log(Level::warn, "the published state (%zu bytes) exceeds "
            "--state-size", len);
    } else {
        cb_state_publish(base_, text, uint32_t(len));
    }
    free(text);
}

} // namespace chatbridge
