// Copyright (C) chatbridge authors
//
// The event loop: one libwebsockets context, single-threaded.  It serves the
// browser WebSocket endpoint, watches the control socket and every worker
// link (adopted as raw descriptors), and runs the 100 ms housekeeping tick.
// Nothing else in the sidecar calls lws from anywhere but this loop.

#ifndef CHATBRIDGE_SERVER_H
#define CHATBRIDGE_SERVER_H

#include "options.h"

#include <libwebsockets.h>

#include <string>

namespace chatbridge {

class Bridge;
class Control;
class RawHandler;

class Server {
public:
    Server(const Options &opts, Bridge &bridge, Control &control);
    ~Server();
    Server(const Server &) = delete;
    Server &operator=(const Server &) = delete;

    bool start(std::string *err);

    // watch fd on the loop; NULL (and fd closed) on failure
    struct lws *adopt(int fd, RawHandler *handler);

    // until SIGINT or SIGTERM
    void run();

private:
    static int ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
                           void *user, void *in, size_t len);
    static int raw_callback(struct lws *wsi,
                            enum lws_callback_reasons reason, void *user,
                            void *in, size_t len);
    static void on_tick(lws_sorted_usec_list_t *sul);

    bool origin_allowed(const std::string &origin) const;

    struct Tick {
        lws_sorted_usec_list_t sul;     // first: the callback casts back
        Server *server;
    };

    const Options &opts_;
    Bridge &bridge_;
    Control &control_;
    struct lws_context *ctx_ = nullptr;
    struct lws_vhost *raw_ = nullptr;
    bool bound_ = false;            // the unix socket file is ours
    Tick tick_;
};

} // namespace chatbridge

#endif
