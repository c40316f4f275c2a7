// Copyright (C) chatbridge authors
//
// Small RAII helpers over C handles, the clocks and randomness the sidecar
// uses, and a bounded file reader.

#ifndef CHATBRIDGE_UTIL_H
#define CHATBRIDGE_UTIL_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace chatbridge {

// Owns a file descriptor; closes it when destroyed.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(const UniqueFd &) = delete;
    UniqueFd &operator=(const UniqueFd &) = delete;
    UniqueFd(UniqueFd &&o) noexcept : fd_(o.release()) {}
    UniqueFd &operator=(UniqueFd &&o) noexcept;
    ~UniqueFd() { reset(); }

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1);

private:
    int fd_ = -1;
};

// Runs a function when the scope ends: for C APIs with several exits.
template <typename F>
class Defer {
public:
    explicit Defer(F f) : f_(std::move(f)) {}
    Defer(const Defer &) = delete;
    Defer &operator=(const Defer &) = delete;
    ~Defer() { f_(); }

private:
    F f_;
};

template <typename F>
Defer<F> defer(F f) { return Defer<F>(std::move(f)); }

// Milliseconds on CLOCK_MONOTONIC.
uint64_t now_ms();

// Wall clock, seconds since the epoch.
int64_t wall_s();

// n random bytes as 2n hex characters, from getrandom().
std::string random_hex(size_t n);

// A random 64-bit number from getrandom().
uint64_t random_u64();

// Compares without an early exit, so the time says nothing of the content.
bool constant_time_equal(const std::string &a, const std::string &b);

// Where to cut s so that the head is at most max bytes and no UTF-8
// character is split.
size_t utf8_cut(const char *s, size_t len, size_t max);

enum class ReadFile { ok, missing, error };

// Reads a regular file of at most max bytes into *out.  The last path
// component must not be a symbolic link, and a FIFO or a device is refused
// without blocking on it.  missing: there is no such file; error: *err says
// what is wrong.
ReadFile read_regular_file(const std::string &path, size_t max,
                           std::string *out, std::string *err);

// Before binding a unix socket at path: a socket file that nobody listens
// on (connect() is refused) is a leftover, and removed; one that answers
// is another process's, and one we cannot probe (EACCES) may be: errors,
// as is anything there that is not a socket.  type: SOCK_STREAM or
// SOCK_SEQPACKET, as the listener will be.
bool remove_stale_socket(const std::string &path, int type,
                         std::string *err);

} // namespace chatbridge

#endif
