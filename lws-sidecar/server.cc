// Copyright (C) chatbridge authors

#include "server.h"

#include "bridge.h"
#include "browser.h"
#include "control.h"
#include "log.h"
#include "util.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace chatbridge {

namespace {

volatile sig_atomic_t g_stop = 0;

void on_signal(int)
{
    g_stop = 1;
}

const struct lws_protocols ws_protocols[] = {
    { "chatbridge", nullptr, sizeof(Browser *), 65536, 0, nullptr, 0 },
    { nullptr, nullptr, 0, 0, 0, nullptr, 0 }
};

const struct lws_protocols raw_protocols[] = {
    { "cb-raw", nullptr, 0, 0, 0, nullptr, 0 },
    { nullptr, nullptr, 0, 0, 0, nullptr, 0 }
};

// lws wants non-const tables; ours get their callbacks filled in once
struct lws_protocols ws_table[2];
struct lws_protocols raw_table[2];

// "https://*.lmarena.ai" matches "https://lmarena.ai" too? No: '*' stands
// for one or more host labels, so list the bare host as well.
bool origin_match(const std::string &pattern, const std::string &origin)
{
    size_t star = pattern.find('*');
    if (star == std::string::npos) {
        return pattern == origin;
    }
    std::string head = pattern.substr(0, star);
    std::string tail = pattern.substr(star + 1);
    if (origin.size() <= head.size() + tail.size()
        || origin.compare(0, head.size(), head) != 0
        || origin.compare(origin.size() - tail.size(), tail.size(), tail)
               != 0) {
        return false;
    }
    std::string mid = origin.substr(head.size(),
                                    origin.size() - head.size()
                                        - tail.size());
    return mid.find('/') == std::string::npos
           && mid.find(':') == std::string::npos;
}

} // namespace

Server::Server(const Options &opts, Bridge &bridge, Control &control)
    : opts_(opts), bridge_(bridge), control_(control)
{
    memset(&tick_, 0, sizeof(tick_));
    tick_.server = this;
}

Server::~Server()
{
    if (ctx_ != nullptr) {
        lws_context_destroy(ctx_);
    }
    if (bound_) {
        unlink(opts_.listen.c_str() + 5);
    }
}

bool Server::start(std::string *err)
{
    memcpy(ws_table, ws_protocols, sizeof(ws_table));
    memcpy(raw_table, raw_protocols, sizeof(raw_table));
    ws_table[0].callback = ws_callback;
    raw_table[0].callback = raw_callback;

    // lws logs through us, only what matters
    lws_set_log_level(LLL_ERR | LLL_WARN, [](int level, const char *line) {
        std::string s(line);
        while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) {
            s.pop_back();
        }
        log(level == LLL_ERR ? Level::error : Level::warn, "lws: %s",
            s.c_str());
    });

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.user = this;
    info.uid = -1;
    info.gid = -1;

    ctx_ = lws_create_context(&info);
    if (ctx_ == nullptr) {
        *err = "lws_create_context() failed";
        return false;
    }

    // the browsers' endpoint
    struct lws_context_creation_info vi;
    memset(&vi, 0, sizeof(vi));
    vi.vhost_name = "chatbridge";
    vi.protocols = ws_table;
    vi.user = this;

    std::string iface;
    bool unix_sock = opts_.listen.rfind("unix:", 0) == 0;
    if (unix_sock) {
        iface = opts_.listen.substr(5);
        vi.options |= LWS_SERVER_OPTION_UNIX_SOCK;
        vi.iface = iface.c_str();
        if (!remove_stale_socket(iface, SOCK_STREAM, err)) {
            return false;
        }
    } else {
        size_t colon = opts_.listen.rfind(':');
        if (colon == std::string::npos) {
            *err = "--listen must be ADDR:PORT or unix:PATH";
            return false;
        }
        iface = opts_.listen.substr(0, colon);
        vi.port = atoi(opts_.listen.c_str() + colon + 1);
        if (vi.port <= 0 || vi.port > 65535) {
            *err = "--listen has no valid port";
            return false;
        }
        vi.iface = iface.c_str();
    }

    if (lws_create_vhost(ctx_, &vi) == nullptr) {
        *err = "cannot listen on " + opts_.listen
               + " (in use, or not an address of this host)";
        return false;
    }
    bound_ = unix_sock;     // the socket file is ours to remove

    if (unix_sock) {
        // nginx proxies browsers to it: same access rule as the control
        // socket
        if (!opts_.control_group.empty()) {
            struct group *g = getgrnam(opts_.control_group.c_str());
            if (g == nullptr
                || chown(iface.c_str(), uid_t(-1), g->gr_gid) == -1) {
                *err = "cannot give " + iface + " to group "
                       + opts_.control_group;
                return false;
            }
        }
        chmod(iface.c_str(), opts_.control_mode);
    }

    // no listener: only descriptors we adopt
    struct lws_context_creation_info ri;
    memset(&ri, 0, sizeof(ri));
    ri.vhost_name = "raw";
    ri.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    ri.protocols = raw_table;
    ri.user = this;

    raw_ = lws_create_vhost(ctx_, &ri);
    if (raw_ == nullptr) {
        *err = "lws_create_vhost(raw) failed";
        return false;
    }

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    lws_sul_schedule(ctx_, 0, &tick_.sul, on_tick, 100 * LWS_US_PER_MS);
    return true;
}

struct lws *Server::adopt(int fd, RawHandler *handler)
{
    lws_adopt_desc_t d;
    memset(&d, 0, sizeof(d));
    d.vh = raw_;
    d.type = LWS_ADOPT_RAW_FILE_DESC;
    d.fd.filefd = fd;
    d.vh_prot_name = "cb-raw";
    d.opaque = handler;

    struct lws *wsi = lws_adopt_descriptor_vhost_via_info(&d);
    if (wsi == nullptr) {
        log(Level::error, "cannot watch descriptor %d", fd);
    }
    return wsi;
}

void Server::run()
{
    while (!g_stop) {
        if (lws_service(ctx_, 0) < 0) {
            break;
        }
    }
    log(Level::notice, "stopping");
}

void Server::on_tick(lws_sorted_usec_list_t *sul)
{
    Server *s = reinterpret_cast<Tick *>(sul)->server;

    s->control_.poll_all();
    s->bridge_.tick();

    lws_sul_schedule(s->ctx_, 0, &s->tick_.sul, on_tick,
                     100 * LWS_US_PER_MS);
}

bool Server::origin_allowed(const std::string &origin) const
{
    if (opts_.origins.empty() || origin.empty()) {
        return true;    // non-browser clients send no Origin
    }
    for (const auto &p : opts_.origins) {
        if (p == "*" || origin_match(p, origin)) {
            return true;
        }
    }
    return false;
}

int Server::ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
                        void *user, void *in, size_t len)
{
    auto *server = static_cast<Server *>(
        lws_context_user(lws_get_context(wsi)));
    auto **slot = static_cast<Browser **>(user);
    Browser *b = slot ? *slot : nullptr;

    switch (reason) {

    case LWS_CALLBACK_HTTP:
        // this port only speaks WebSocket
        if (lws_return_http_status(wsi, 426, "chatbridge: WebSocket only")) {
            return -1;
        }
        return lws_http_transaction_completed(wsi) ? -1 : 0;

    case LWS_CALLBACK_ESTABLISHED: {
        std::string origin;
        int n = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
        if (n > 0 && n < 1024) {
            origin.resize(size_t(n) + 1);
            lws_hdr_copy(wsi, origin.data(), n + 1, WSI_TOKEN_ORIGIN);
            origin.resize(size_t(n));
        }

        b = new Browser(wsi, now_ms(), origin);
        *slot = b;
        server->bridge_.browser_open(b);

        if (!server->origin_allowed(origin)) {
            log(Level::warn, "origin %s is not allowed", origin.c_str());
            b->close(4403, "origin not allowed");
        } else if (!server->bridge_.accepting_browsers()) {
            b->close(4429, "too many browsers");
        }
        return 0;
    }

    case LWS_CALLBACK_RECEIVE:
        if (b == nullptr) {
            return -1;
        }
        b->last_rx = now_ms();
        if (b->state == Browser::State::closing) {
            return 0;
        }
        if (lws_frame_is_binary(wsi)) {
            b->send(error_frame("bad_frame", "binary frames are not part of "
                                "the protocol", ""));
            b->close(1003, "text frames only");
            return 0;
        }
        if (b->rx.size() + len > server->opts_.max_frame) {
            b->send(error_frame("too_large", "frame larger than max_frame",
                                ""));
            b->close(1009, "frame too large");
            b->rx.clear();
            return 0;
        }
        if (lws_is_final_fragment(wsi)
            && lws_remaining_packet_payload(wsi) == 0 && b->rx.empty()) {
            // a whole message in one piece: no copy
            server->bridge_.browser_message(b, static_cast<const char *>(in),
                                            len);
            return 0;
        }

        b->rx.append(static_cast<const char *>(in), len);

        if (lws_is_final_fragment(wsi)
            && lws_remaining_packet_payload(wsi) == 0) {
            server->bridge_.browser_message(b, b->rx.data(), b->rx.size());
            b->rx.clear();
            if (b->rx.capacity() > 1024 * 1024) {
                b->rx.shrink_to_fit();
            }
        }
        return 0;

    case LWS_CALLBACK_RECEIVE_PONG:
        if (b != nullptr) {
            b->last_rx = now_ms();
        }
        return 0;

    case LWS_CALLBACK_SERVER_WRITEABLE:
        return b ? b->on_writable() : 0;

    case LWS_CALLBACK_CLOSED:
        if (b != nullptr) {
            server->bridge_.browser_closed(b);
            delete b;
            *slot = nullptr;
        }
        return 0;

    default:
        return 0;
    }
}

int Server::raw_callback(struct lws *wsi, enum lws_callback_reasons reason,
                         void *, void *, size_t)
{
    auto *h = static_cast<RawHandler *>(lws_get_opaque_user_data(wsi));

    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        return h ? h->on_readable() : 0;

    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (h != nullptr) {
            lws_set_opaque_user_data(wsi, nullptr);
            h->on_closed();
        }
        return 0;

    default:
        return 0;
    }
}

} // namespace chatbridge
