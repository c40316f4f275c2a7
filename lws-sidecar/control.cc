// Copyright (C) chatbridge authors

#include "control.h"

#include "bridge.h"
#include "log.h"
#include "server.h"

#include <cerrno>
#include <cstring>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace chatbridge {

WorkerConn::WorkerConn(Control *control, int f, pid_t p)
    : fd(f), peer(p), control_(control)
{
}

int WorkerConn::on_readable()
{
    for (;;) {
        union {
            cb_ctl_hello_t hello;
            unsigned char raw[64];
        } buf;

        ssize_t n = recv(fd, &buf, sizeof(buf), MSG_DONTWAIT);

        if (n == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (n == 0) {
            return -1;      // the worker exited
        }
        if (n == 1) {
            control_->doorbell_in(this);
            continue;
        }
        if (n == sizeof(cb_ctl_hello_t) && buf.hello.type == CB_CTL_HELLO
            && index < 0) {
            if (control_->hello(this, buf.hello) != 0) {
                return -1;
            }
            continue;
        }
        log(Level::warn, "unexpected %zd byte message from worker pid %d",
            n, int(peer));
        return -1;
    }
}

void WorkerConn::on_closed()
{
    control_->gone(this);
    delete this;
}

Control::Control(const Options &opts, Segment &segment)
    : opts_(opts), seg_(segment),
      workers_(segment.header()->max_workers, nullptr)
{
}

Control::~Control()
{
    if (bound_) {
        unlink(opts_.control.c_str());
    }
}

bool Control::listen(std::string *err)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;

    if (opts_.control.size() >= sizeof(sun.sun_path)) {
        *err = "the control socket path is too long";
        return false;
    }
    memcpy(sun.sun_path, opts_.control.data(), opts_.control.size());

    UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK
                                    | SOCK_CLOEXEC, 0));
    if (!fd) {
        *err = std::string("socket(): ") + strerror(errno);
        return false;
    }

    // a live sidecar answers; a stale socket file is removed
    if (!remove_stale_socket(opts_.control, SOCK_SEQPACKET, err)) {
        return false;
    }

    mode_t old = umask(0177);
    int rc = bind(fd.get(), reinterpret_cast<sockaddr *>(&sun), sizeof(sun));
    umask(old);

    if (rc == -1) {
        *err = "bind(" + opts_.control + "): " + strerror(errno);
        return false;
    }
    bound_ = true;

    // who may connect is who may open the socket file: mode and group
    if (!opts_.control_group.empty()) {
        struct group *g = getgrnam(opts_.control_group.c_str());
        if (g == nullptr) {
            *err = "unknown group \"" + opts_.control_group + "\"";
            return false;
        }
        if (chown(opts_.control.c_str(), uid_t(-1), g->gr_gid) == -1) {
            *err = "chown(" + opts_.control + "): " + strerror(errno);
            return false;
        }
    }
    if (chmod(opts_.control.c_str(), opts_.control_mode) == -1) {
        *err = "chmod(" + opts_.control + "): " + strerror(errno);
        return false;
    }

    if (::listen(fd.get(), 128) == -1) {
        *err = std::string("listen(): ") + strerror(errno);
        return false;
    }

    listen_fd_ = fd.release();
    return true;
}

void Control::attach(Server *server, Bridge *bridge)
{
    server_ = server;
    bridge_ = bridge;
    server_->adopt(listen_fd_, this);
}

int Control::on_readable()
{
    for (;;) {
        int fd = accept4(listen_fd_, nullptr, nullptr,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                log(Level::error, "accept() on the control socket: %s",
                    strerror(errno));
            }
            return 0;
        }

        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) {
            close(fd);
            continue;
        }

        auto *w = new WorkerConn(this, fd, cred.pid);
        w->wsi = server_->adopt(fd, w);
        if (w->wsi == nullptr) {
            delete w;   // adopt() closed the fd
        }
    }
}

void Control::on_closed()
{
    listen_fd_ = -1;
}

int Control::hello(WorkerConn *w, const cb_ctl_hello_t &msg)
{
    cb_ctl_welcome_t welcome;
    memset(&welcome, 0, sizeof(welcome));

    uint32_t refused = CB_CTL_REFUSED;

    if (msg.abi_version != CB_SHM_ABI_VERSION) {
        log(Level::error, "worker pid %d speaks ABI %u, this sidecar %d: "
            "rebuild one of them", int(w->peer), msg.abi_version,
            CB_SHM_ABI_VERSION);
        send(w->fd, &refused, sizeof(refused), MSG_DONTWAIT | MSG_NOSIGNAL);
        return -1;
    }

    if (pid_t(msg.pid) != w->peer) {
        log(Level::error, "hello names pid %u but the peer is pid %d",
            msg.pid, int(w->peer));
        return -1;
    }

    uint32_t i = 0;
    while (i < workers_.size() && workers_[i] != nullptr) {
        i++;
    }
    if (i == workers_.size()) {
        log(Level::error, "no free worker entry for pid %d (--max-workers "
            "%zu): refused", int(w->peer), workers_.size());
        send(w->fd, &refused, sizeof(refused), MSG_DONTWAIT | MSG_NOSIGNAL);
        return -1;
    }

    cb_shm_worker_t *e = cb_shm_worker(seg_.base(), i);
    cb_queue_reset(&e->to_sidecar);
    cb_queue_reset(&e->to_worker);
    memset(&e->counters, 0, sizeof(e->counters));
    e->serial++;
    __atomic_store_n(&e->pid, uint32_t(w->peer), __ATOMIC_RELEASE);

    welcome.type = CB_CTL_WELCOME;
    welcome.abi_version = CB_SHM_ABI_VERSION;
    welcome.worker = i;
    welcome.serial = e->serial;
    welcome.generation = seg_.generation();
    welcome.size = seg_.size();

    struct iovec iov;
    iov.iov_base = &welcome;
    iov.iov_len = sizeof(welcome);

    union {
        struct cmsghdr cm;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof(ctl));

    struct msghdr msg_out;
    memset(&msg_out, 0, sizeof(msg_out));
    msg_out.msg_iov = &iov;
    msg_out.msg_iovlen = 1;
    msg_out.msg_control = &ctl;
    msg_out.msg_controllen = sizeof(ctl);

    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg_out);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    int segfd = seg_.fd();
    memcpy(CMSG_DATA(cmsg), &segfd, sizeof(int));

    if (sendmsg(w->fd, &msg_out, MSG_DONTWAIT | MSG_NOSIGNAL)
        != ssize_t(sizeof(welcome))) {
        log(Level::error, "welcome to worker pid %d failed: %s",
            int(w->peer), strerror(errno));
        __atomic_store_n(&e->pid, 0, __ATOMIC_RELEASE);
        return -1;
    }

    w->index = int(i);
    workers_[i] = w;

    log(Level::info, "worker pid %d linked as entry %u", int(w->peer), i);

    // anything it queued before the welcome was impossible; drain anyway
    bridge_->drain_worker(i);
    return 0;
}

void Control::doorbell_in(WorkerConn *w)
{
    if (w->index < 0) {
        return;
    }
    cb_shm_worker(seg_.base(), uint32_t(w->index))->counters
        .doorbells_received++;
    seg_.header()->counters.doorbells_received++;
    bridge_->drain_worker(uint32_t(w->index));
}

void Control::doorbell(uint32_t index)
{
    WorkerConn *w = index < workers_.size() ? workers_[index] : nullptr;
    if (w == nullptr) {
        return;
    }
    char bell = 'D';
    if (send(w->fd, &bell, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) {
        seg_.header()->counters.doorbells_sent++;
    }
    // EAGAIN: the worker's own poll finds the records
}

void Control::poll_all()
{
    for (size_t i = 0; i < workers_.size(); i++) {
        if (workers_[i] == nullptr) {
            continue;
        }
        cb_shm_worker_t *e = cb_shm_worker(seg_.base(), uint32_t(i));
        if (__atomic_load_n(&e->to_sidecar.tail, __ATOMIC_ACQUIRE)
                != __atomic_load_n(&e->to_sidecar.head, __ATOMIC_ACQUIRE)
            || __atomic_load_n(&e->to_sidecar.overflow, __ATOMIC_ACQUIRE)) {
            bridge_->drain_worker(uint32_t(i));
        }
    }
}

void Control::gone(WorkerConn *w)
{
    if (w->index < 0) {
        return;
    }
    uint32_t i = uint32_t(w->index);
    log(Level::info, "worker pid %d (entry %u) unlinked", int(w->peer), i);

    workers_[i] = nullptr;
    bridge_->worker_gone(i);

    cb_shm_worker_t *e = cb_shm_worker(seg_.base(), i);
    cb_queue_reset(&e->to_sidecar);
    cb_queue_reset(&e->to_worker);
    __atomic_store_n(&e->pid, 0, __ATOMIC_RELEASE);
}

} // namespace chatbridge
