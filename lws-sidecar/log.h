// Copyright (C) chatbridge authors
//
// Logging to stderr in nginx's error_log format, so one tail shows both:
//   2026/11/22 01:02:03 [warn] 1234#0: chatbridge-sidecar: message

#ifndef CHATBRIDGE_LOG_H
#define CHATBRIDGE_LOG_H

#include <string>

namespace chatbridge {

enum class Level { error = 0, warn, notice, info, debug };

void set_log_level(Level level);
bool parse_log_level(const std::string &name, Level *level);
bool log_enabled(Level level);

void log(Level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

} // namespace chatbridge

#endif
