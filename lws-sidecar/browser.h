// Copyright (C) chatbridge authors
//
// One browser connection: who it is (from hello), what it can take, what it
// is working on, and its outgoing frames.  Owned by the WebSocket session;
// the Bridge holds plain pointers between browser_open() and
// browser_closed().

#ifndef CHATBRIDGE_BROWSER_H
#define CHATBRIDGE_BROWSER_H

#include "frames.h"

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

struct lws;

namespace chatbridge {

struct Request;

class Browser {
public:
    enum class State { hello, ready, needs_human, closing };

    Browser(struct lws *wsi, uint64_t now, std::string origin);
    Browser(const Browser &) = delete;
    Browser &operator=(const Browser &) = delete;

    // queue a frame; the session writes it when the socket is writable
    void send(OutFrame frame);

    // one frame per writable callback; -1 asks lws to close
    int on_writable();

    // close with a code and reason after what is queued
    void close(int code, const std::string &reason);

    bool can_serve(uint8_t kind, const std::string &model) const;
    bool announced(const std::string &model) const;
    const char *state_name() const;

    struct lws *wsi;
    State state = State::hello;
    std::string id, kind, name, agent, origin, message;
    uint32_t capacity = 1;
    uint32_t inflight = 0;
    uint64_t served = 0, errors = 0;
    bool any_model = true;
    bool capture = false;
    std::vector<std::pair<std::string, std::string>> models;  // id, owner
    // the announced models as models.json has them: name, "uuid[:image]"
    std::vector<std::pair<std::string, std::string>> model_ids;
    uint64_t connected_at, last_rx, last_ping, last_assign = 0;
    std::unordered_set<Request *> requests;
    std::string rx;

private:
    std::deque<OutFrame> tx_;
    int close_code_ = 0;
    std::string close_reason_;
};

} // namespace chatbridge

#endif
