// Copyright (C) chatbridge authors

#include "browser.h"

#include "cb_shm.h"

#include <libwebsockets.h>

namespace chatbridge {

Browser::Browser(struct lws *w, uint64_t now, std::string o)
    : wsi(w), origin(std::move(o)), connected_at(now), last_rx(now),
      last_ping(now)
{
}

void Browser::send(OutFrame frame)
{
    if (!frame || state == State::closing) {
        return;
    }

    // nothing queued ahead and nothing left over from a short write: out
    // now, rather than a turn of the loop later (lws keeps what a short
    // write leaves over, as in on_writable()); after a failed write lws
    // closes the connection at its next turn
    if (tx_.empty() && !lws_partial_buffered(wsi)) {
        size_t len = frame->size() - LWS_PRE;
        auto *p = reinterpret_cast<unsigned char *>(
            const_cast<char *>(frame->data())) + LWS_PRE;

        if (lws_write(wsi, p, len, LWS_WRITE_TEXT) < 0) {
            state = State::closing;
            lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND,
                            LWS_TO_KILL_ASYNC);
        }
        return;
    }

    tx_.push_back(std::move(frame));
    lws_callback_on_writable(wsi);
}

int Browser::on_writable()
{
    // every frame that waits, until the socket is full: lws keeps what a
    // short write left over and sends it first (lws_issue_raw), so a task
    // never waits a turn of the loop behind each frame queued before it
    bool wrote = false;

    while (!tx_.empty()) {
        OutFrame f = std::move(tx_.front());
        tx_.pop_front();

        size_t len = f->size() - LWS_PRE;
        auto *p = reinterpret_cast<unsigned char *>(
            const_cast<char *>(f->data())) + LWS_PRE;

        if (lws_write(wsi, p, len, LWS_WRITE_TEXT) < int(len)) {
            return -1;
        }
        wrote = true;

        if (lws_partial_buffered(wsi)) {
            break;      // the rest when lws has sent what it kept
        }
    }

    if (!tx_.empty() || (close_code_ && wrote)) {
        lws_callback_on_writable(wsi);
        return 0;
    }

    if (close_code_) {
        lws_close_reason(wsi, lws_close_status(close_code_),
                         reinterpret_cast<unsigned char *>(
                             close_reason_.data()),
                         close_reason_.size());
        return -1;
    }
    return 0;
}

void Browser::close(int code, const std::string &reason)
{
    if (close_code_) {
        return;
    }
    close_code_ = code;
    close_reason_ = reason.substr(0, 120);
    state = State::closing;
    lws_callback_on_writable(wsi);
}

bool Browser::announced(const std::string &model) const
{
    for (const auto &m : models) {
        if (m.first == model) {
            return true;
        }
    }
    return false;
}

bool Browser::can_serve(uint8_t k, const std::string &model) const
{
    if (kind != "test") {
        if (k == CB_KIND_ARENA && kind != "arena") {
            return false;
        }
        if (k == CB_KIND_TAVERN && kind != "tavern") {
            return false;
        }
    }
    return any_model || announced(model);
}

const char *Browser::state_name() const
{
    switch (state) {
    case State::hello:
        return "hello";
    case State::ready:
        return "ready";
    case State::needs_human:
        return "needs_human";
    case State::closing:
        return "closing";
    }
    return "?";
}

} // namespace chatbridge
