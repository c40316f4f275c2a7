// Copyright (C) chatbridge authors
//
// chatbridge-sidecar: owns the browsers' WebSocket connections and hands
// their work to nginx workers through shared memory.  See docs/SHM.md and
// docs/PROTOCOL.md.

#include "bridge.h"
#include "control.h"
#include "frames.h"
#include "log.h"
#include "options.h"
#include "segment.h"
#include "server.h"

#include <cstdio>

using namespace chatbridge;

int main(int argc, char **argv)
{
    Options opts;
    std::string err;

    switch (parse_options(argc, argv, &opts, &err)) {
    case Parse::exit_ok:
        return 0;
    case Parse::error:
        fprintf(stderr, "chatbridge-sidecar: %s\n", err.c_str());
        return 2;
    case Parse::ok:
        break;
    }

    Level level;
    if (!parse_log_level(opts.log_level, &level)) {
        fprintf(stderr, "chatbridge-sidecar: unknown log level \"%s\"\n",
                opts.log_level.c_str());
        return 2;
    }
    set_log_level(level);

    Schema schema;
    if (!schema.load(protocol_spec, &err)) {
        log(Level::error, "%s", err.c_str());
        return 1;
    }

    cb_shm_params_t params;
    params.max_workers = opts.max_workers;
    params.nslots = opts.slots;
    params.ring_size = opts.ring_size;
    params.nchunks = opts.chunks;
    params.chunk_size = opts.chunk_size;
    params.state_size = opts.state_size;

    Segment segment;
    if (!segment.create(params, &err)) {
        log(Level::error, "%s", err.c_str());
        return 1;
    }

    Control control(opts, segment);
    if (!control.listen(&err)) {
        log(Level::error, "%s", err.c_str());
        return 1;
    }

    Bridge bridge(opts, segment, schema);
    bridge.set_control(&control);

    Server server(opts, bridge, control);
    if (!server.start(&err)) {
        log(Level::error, "%s", err.c_str());
        return 1;
    }
    control.attach(&server, &bridge);

    log(Level::notice, "ready: workers on %s, browsers on %s, %zu bytes of "
        "shared memory for %u requests", opts.control.c_str(),
        opts.listen.c_str(), segment.size(), opts.slots);

    server.run();
    return 0;
}
