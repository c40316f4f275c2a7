// Copyright (C) chatbridge authors

#include "util.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

namespace chatbridge {

UniqueFd &UniqueFd::operator=(UniqueFd &&o) noexcept
{
    if (this != &o) {
        reset(o.release());
    }
    return *this;
}

void UniqueFd::reset(int fd)
{
    if (fd_ >= 0) {
        ::close(fd_);
    }
    fd_ = fd;
}

uint64_t now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

int64_t wall_s()
{
    return int64_t(::time(nullptr));
}

static void random_fill(void *p, size_t n)
{
    auto *b = static_cast<unsigned char *>(p);
    while (n) {
        ssize_t got = getrandom(b, n, 0);
        if (got <= 0) {
            continue;
        }
        b += got;
        n -= size_t(got);
    }
}

std::string random_hex(size_t n)
{
    static const char hex[] = "0123456789abcdef";
    std::string raw(n, '\0'), out;
    random_fill(raw.data(), n);
    out.reserve(2 * n);
    for (unsigned char c : raw) {
        out += hex[c >> 4];
        out += hex[c & 15];
    }
    return out;
}

uint64_t random_u64()
{
    uint64_t v;
    random_fill(&v, sizeof(v));
    return v;
}

bool constant_time_equal(const std::string &a, const std::string &b)
{
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    size_t n = a.size() > b.size() ? a.size() : b.size();
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < a.size() ? a[i] : 0;
        unsigned char y = i < b.size() ? b[i] : 0;
        diff |= x ^ y;
    }
    return diff == 0;
}

size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max) {
        return len;
    }
    size_t n = max;
    while (n > 0 && n + 3 > max && (static_cast<unsigned char>(s[n]) & 0xc0)
                                       == 0x80) {
        n--;
    }
    return n ? n : max;
}

ReadFile read_regular_file(const std::string &path, size_t max,
                           std::string *out, std::string *err)
{
    out->clear();

    UniqueFd fd(open(path.c_str(),
                     O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) {
            return ReadFile::missing;
        }
        *err = path + ": " + (errno == ELOOP ? "is a symbolic link"
                                             : strerror(errno));
        return ReadFile::error;
    }

    struct stat st;
    if (fstat(fd.get(), &st) == -1) {
        *err = path + ": fstat(): " + strerror(errno);
        return ReadFile::error;
    }
    if (!S_ISREG(st.st_mode)) {
        *err = path + ": not a regular file";
        return ReadFile::error;
    }

    // the size is a hint: the file may grow while it is read
    out->resize(std::min(size_t(st.st_size), max) + 1);
    size_t got = 0;

    for (;;) {
        if (got == out->size()) {
            if (got > max) {
                break;
            }
            out->resize(std::min(2 * got, max + 1));
        }
        ssize_t n = read(fd.get(), out->data() + got, out->size() - got);
        if (n == 0) {
            break;
        }
        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            *err = path + ": read(): " + strerror(errno);
            out->clear();
            return ReadFile::error;
        }
        got += size_t(n);
    }

    if (got > max) {
        *err = path + ": larger than " + std::to_string(max) + " bytes";
        out->clear();
        return ReadFile::error;
    }

    out->resize(got);
    return ReadFile::ok;
}

bool remove_stale_socket(const std::string &path, int type,
                         std::string *err)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;

    if (path.size() >= sizeof(sun.sun_path)) {
        *err = path + ": the socket path is too long";
        return false;
    }
    memcpy(sun.sun_path, path.data(), path.size());

    struct stat st;
    if (lstat(path.c_str(), &st) == -1) {
        return true;
    }
    if (!S_ISSOCK(st.st_mode)) {
        *err = path + " exists and is not a socket";
        return false;
    }

    UniqueFd probe(socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
    if (!probe) {
        *err = std::string("socket(): ") + strerror(errno);
        return false;
    }
    if (connect(probe.get(), reinterpret_cast<sockaddr *>(&sun),
                sizeof(sun)) == 0) {
        *err = "another process is listening on " + path;
        return false;
    }
    if (errno != ECONNREFUSED) {
        *err = path + ": " + strerror(errno);
        return false;
    }

    if (unlink(path.c_str()) == -1 && errno != ENOENT) {
        *err = "unlink(" + path + "): " + strerror(errno);
        return false;
    }
    return true;
}

} // namespace chatbridge
