// Copyright (C) chatbridge authors

#include "log.h"

#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <unistd.h>

namespace chatbridge {

static Level g_level = Level::notice;

static const char *const level_names[] = {
    "error", "warn", "notice", "info", "debug"
};

void set_log_level(Level level)
{
    g_level = level;
}

bool parse_log_level(const std::string &name, Level *level)
{
    for (int i = 0; i <= int(Level::debug); i++) {
        if (name == level_names[i]) {
            *level = Level(i);
            return true;
        }
    }
    return false;
}

bool log_enabled(Level level)
{
    return level <= g_level;
}

void log(Level level, const char *fmt, ...)
{
    if (!log_enabled(level)) {
        return;
    }

    char when[32];
    time_t t = time(nullptr);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y/%m/%d %H:%M:%S", &tm);

    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    fprintf(stderr, "%s [%s] %d#0: chatbridge-sidecar: %s\n", when,
            level_names[int(level)], int(getpid()), msg);
}

} // namespace chatbridge
