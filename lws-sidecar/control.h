// Copyright (C) chatbridge authors
//
// The control socket: nginx workers connect here (SOCK_SEQPACKET), say
// hello, and get the segment's memfd in the welcome.  After that the socket
// only carries one-byte doorbells, and its EOF is how a worker's death is
// noticed: its slots and chunks are reclaimed at once.

#ifndef CHATBRIDGE_CONTROL_H
#define CHATBRIDGE_CONTROL_H

#include "options.h"
#include "segment.h"
#include "util.h"

#include <string>
#include <sys/types.h>
#include <vector>

struct lws;

namespace chatbridge {

class Bridge;
class Server;

// what the loop calls when an adopted descriptor is readable or closed
class RawHandler {
public:
    virtual ~RawHandler() = default;
    virtual int on_readable() = 0;          // -1: close it
    virtual void on_closed() = 0;           // lws closed the fd
};

class Control;

class WorkerConn : public RawHandler {
public:
    WorkerConn(Control *control, int fd, pid_t peer);
    int on_readable() override;
    void on_closed() override;

    int fd;
    pid_t peer;
    int index = -1;
    struct lws *wsi = nullptr;

private:
    Control *control_;
};

class Control : public RawHandler {
public:
    Control(const Options &opts, Segment &segment);
    ~Control() override;

    bool listen(std::string *err);
    void attach(Server *server, Bridge *bridge);

    // ring worker index's doorbell
    void doorbell(uint32_t index);

    // every linked worker's queue, for the loop's safety net
    void poll_all();

    int on_readable() override;             // the listening socket
    void on_closed() override;

    // from WorkerConn
    int hello(WorkerConn *w, const cb_ctl_hello_t &msg);
    void doorbell_in(WorkerConn *w);
    void gone(WorkerConn *w);

private:
    const Options &opts_;
    Segment &seg_;
    Server *server_ = nullptr;
    Bridge *bridge_ = nullptr;
    int listen_fd_ = -1;                    // owned by lws once adopted
    bool bound_ = false;                    // the socket file is ours
    std::vector<WorkerConn *> workers_;     // by index
};

} // namespace chatbridge

#endif
