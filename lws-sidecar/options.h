// Copyright (C) chatbridge authors
//
// The sidecar's settings.  One table declares every option once; the command
// line (--name value), the JSON config file (--config, same names) and
// --help all read it.

#ifndef CHATBRIDGE_OPTIONS_H
#define CHATBRIDGE_OPTIONS_H

#include <cstdint>
#include <string>
#include <vector>

namespace chatbridge {

struct Options {
    std::string control = "/run/chatbridge/sidecar.sock";
    uint32_t control_mode = 0660;
    std::string control_group;
    std::string listen = "127.0.0.1:5103";
    std::string token;
    std::string token_file;
    std::vector<std::string> origins;
    uint32_t max_browsers = 256;
    uint32_t per_browser = 16;
    uint32_t queue = 1024;
    uint32_t queue_timeout = 30000;
    uint32_t heartbeat = 15000;
    uint32_t dead_after = 45000;
    uint32_t hello_timeout = 5000;
    uint32_t max_frame = 16 * 1024 * 1024;
    uint32_t retries = 1;
    uint32_t retry_after = 5;
    uint32_t max_workers = 32;
    uint32_t slots = 16384;
    uint32_t ring_size = 4096;
    uint32_t chunks = 4096;
    uint32_t chunk_size = 16384;
    uint32_t state_size = 1024 * 1024;
    std::string state_dir;
    uint32_t update_models = 0;
    std::string log_level = "notice";
};

enum class Parse { ok, exit_ok, error };

// Parses argv (and a --config file if named there); on error fills err.
Parse parse_options(int argc, char **argv, Options *o, std::string *err);

// The --help text, generated from the option table.
std::string options_help();

} // namespace chatbridge

#endif
