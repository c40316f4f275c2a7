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
    tx_bytes += frame->size();
    tx_.push_back(std::move(frame));
    lws_callback_on_writable(wsi);
}

int Browser::on_writable()
{
    if (!tx_.empty()) {
        OutFrame f = std::move(tx_.front());
        tx_.pop_front();
        tx_bytes -= f->size();

        size_t len = f->size() - LWS_PRE;
        auto *p = reinterpret_cast<unsigned char *>(
            const_cast<char *>(f->data())) + LWS_PRE;

        if (lws_write(wsi, p, len, LWS_WRITE_TEXT) < int(len)) {
            return -1;
        }
        if (!tx_.empty() || close_code_) {
            lws_callback_on_writable(wsi);
        }
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
