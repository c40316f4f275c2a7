// Copyright (C) chatbridge authors

#include "segment.h"

#include <cerrno>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

namespace chatbridge {

Segment::~Segment()
{
    if (base_ != nullptr) {
        munmap(base_, size_);
    }
}

bool Segment::create(const cb_shm_params_t &params, std::string *err)
{
    cb_shm_header_t layout;
    uint64_t size = cb_shm_layout(&layout, &params);
    if (size == 0) {
        *err = "the shared-memory sizes are inconsistent";
        return false;
    }

    UniqueFd fd(memfd_create("chatbridge", MFD_CLOEXEC));
    if (!fd) {
        *err = std::string("memfd_create() failed: ") + strerror(errno);
        return false;
    }

    if (ftruncate(fd.get(), off_t(size)) == -1) {
        *err = std::string("ftruncate() failed: ") + strerror(errno);
        return false;
    }

    void *base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED,
                      fd.get(), 0);
    if (base == MAP_FAILED) {
        *err = std::string("mmap() failed: ") + strerror(errno);
        return false;
    }

    // a generation that no earlier run used: workers check it
    do {
        generation_ = random_u64();
    } while (generation_ == 0);

    layout.generation = generation_;
    layout.sidecar_pid = uint32_t(getpid());

    cb_shm_init(base, &layout);

    fd_ = std::move(fd);
    base_ = base;
    size_ = size;
    return true;
}

} // namespace chatbridge
