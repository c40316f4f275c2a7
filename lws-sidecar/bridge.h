// Copyright (C) chatbridge authors
//
// The hub of the sidecar: requests that nginx workers publish in the shared
// segment are dispatched to browsers; what browsers answer is written back
// into each request's ring as typed records.  Single-threaded: everything
// here runs on the lws service loop.

#ifndef CHATBRIDGE_BRIDGE_H
#define CHATBRIDGE_BRIDGE_H

#include "browser.h"
#include "frames.h"
#include "options.h"
#include "segment.h"

#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace chatbridge {

class Control;

// a pending record waiting for ring space
struct Pending {
    uint8_t type;
    uint8_t flags;
    std::string data;
};

// What a tab that answered busy or needs_human said: the request is not
// offered to it again, and the client hears this if no other tab takes it.
struct Refusal {
    std::string browser;
    unsigned status;
    std::string code;
    std::string message;
    bool retryable;
    uint32_t retry_after;
};

struct Request {
    uint32_t slot = 0;
    uint32_t gen = 0;
    uint32_t worker = 0;
    uint8_t kind = 0;
    std::string id;
    std::string model;
    OutFrame task;                  // kept until the first answer
    Browser *browser = nullptr;
    uint64_t created = 0;
    uint64_t queued_at = 0;
    uint32_t attempts = 0;
    bool queued = false;
    bool control = false;           // an operator command, not a task
    uint64_t deadline = 0;          // for commands
    std::string command;
    std::unique_ptr<json_t, void (*)(json_t *)> args{nullptr, json_decref};
    bool answered = false;          // content went to the client
    bool finishing = false;         // final record written or pending
    bool paused = false;            // pause sent to the browser
    std::unique_ptr<Refusal> refused;   // a tab answered busy (rare)
    std::list<Pending> pending;     // rare: allocates nothing while empty
    size_t pending_bytes = 0;
};

class Bridge {
public:
    Bridge(const Options &opts, Segment &segment, const Schema &schema);
    ~Bridge();
    Bridge(const Bridge &) = delete;
    Bridge &operator=(const Bridge &) = delete;

    void set_control(Control *control) { control_ = control; }

    // nginx side
    void drain_worker(uint32_t index);
    void worker_gone(uint32_t index);

    // browser side
    bool accepting_browsers() const;
    void browser_open(Browser *b);
    void browser_message(Browser *b, const char *data, size_t len);
    void browser_closed(Browser *b);

    // every 100 ms on the loop
    void tick();

    size_t requests() const { return by_id_.size(); }

private:
    using RequestPtr = std::unique_ptr<Request>;

    // worker operations
    void submit(uint32_t worker, uint32_t slot, uint32_t gen);
    void cancel(uint32_t slot, uint32_t gen);
    void credit(uint32_t slot, uint32_t gen);
    void scan_worker(uint32_t worker);

    // dispatch
    void dispatch(Request *r);
    Browser *pick(const Request *r, bool *eligible, bool *human) const;
    void place(Request *r, Browser *b, bool eligible, bool human);
    void assign(Request *r, Browser *b);
    void detach(Request *r);
    void pump();
    void unavailable(Request *r, bool human);

    // records
    void emit(Request *r, uint8_t type, uint8_t flags, const void *a,
              size_t alen, const void *b = nullptr, size_t blen = 0);
    void emit_text(Request *r, uint8_t type, const char *s, size_t len);
    void emit_long(Request *r, uint8_t type, const char *s, size_t len);
    void flush(Request *r);
    void notify(Request *r);
    void finish_ok(Request *r, uint32_t reason, json_t *usage);
    void fail(Request *r, unsigned status, const std::string &code,
              const std::string &message, bool retryable,
              uint32_t retry_after);
    void complete(Request *r);
    void destroy(Request *r);

    // operator commands
    void control(Request *r, const std::string &json);
    void on_result(Browser *b, json_t *f);
    bool write_capture(Request *r, json_t *data, json_t *out,
                       std::string *err);
    void update_models_file(Browser *b);

    // browser frames
    void on_hello(Browser *b, json_t *f);
    void on_answer(Browser *b, const char *type, json_t *f);
    void on_fast(Browser *b, const FastFrame &f);
    Request *answering(Browser *b, std::string_view id, const char *type);
    void answer_text(Request *r, uint8_t type, const char *s, size_t len);
    void answer_done(Request *r, std::string_view reason, json_t *usage);
    void bad_frame(Browser *b, json_t *f, const Verdict &v);

    void publish();

    const Options &opts_;
    Segment &seg_;
    const Schema &schema_;
    Control *control_ = nullptr;
    void *base_;

    std::unordered_map<std::string, RequestPtr> by_id_;
    std::string key_;               // for lookups, without an allocation
    std::string scratch_;           // unescaped text of a fast frame
    std::vector<Request *> by_slot_;
    std::deque<Request *> queue_;
    std::vector<Browser *> browsers_;
    uint64_t next_browser_ = 1;
    bool dirty_ = true;
    uint64_t published_ = 0;
    int64_t started_;
};

} // namespace chatbridge

#endif
