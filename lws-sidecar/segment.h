// Copyright (C) chatbridge authors
//
// The shared segment: a memfd sized and laid out by cb_shm_layout(),
// mapped here and handed to each nginx worker over the control socket.  A
// new sidecar run makes a new segment (a new generation); workers drop the
// old one when they lose the link.

#ifndef CHATBRIDGE_SEGMENT_H
#define CHATBRIDGE_SEGMENT_H

#include "cb_shm.h"
#include "util.h"

#include <string>

namespace chatbridge {

class Segment {
public:
    Segment() = default;
    Segment(const Segment &) = delete;
    Segment &operator=(const Segment &) = delete;
    ~Segment();

    bool create(const cb_shm_params_t &params, std::string *err);

    void *base() const { return base_; }
    int fd() const { return fd_.get(); }
    size_t size() const { return size_; }
    uint64_t generation() const { return generation_; }
    cb_shm_header_t *header() const { return cb_shm_header(base_); }

private:
    UniqueFd fd_;
    void *base_ = nullptr;
    size_t size_ = 0;
    uint64_t generation_ = 0;
};

} // namespace chatbridge

#endif
