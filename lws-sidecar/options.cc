// Copyright (C) chatbridge authors

#include "options.h"

#include <jansson.h>

#include "cb_jsonc.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace chatbridge {

namespace {

enum class Kind { string, octal, number, list };

struct OptionDef {
    const char *name;
    Kind kind;
    std::string Options::*str;
    uint32_t Options::*num;
    std::vector<std::string> Options::*list;
    uint32_t min;
    uint32_t max;
    const char *doc;
};

#define CB_STR(field, doc) \
    { #field, Kind::string, &Options::field, nullptr, nullptr, 0, 0, doc }
#define CB_NUM(field, min, max, doc) \
    { #field, Kind::number, nullptr, &Options::field, nullptr, min, max, doc }
#define CB_OCT(field, min, max, doc) \
    { #field, Kind::octal, nullptr, &Options::field, nullptr, min, max, doc }
#define CB_LIST(field, doc) \
    { #field, Kind::list, nullptr, nullptr, &Options::field, 0, 0, doc }

const OptionDef option_table[] = {
    CB_STR(control,
           "unix socket the nginx workers connect to"),
    CB_OCT(control_mode, 0, 0777,
           "permissions of the control socket"),
    CB_STR(control_group,
           "group of the control socket (the nginx workers' group)"),
    CB_STR(listen,
           "browser WebSocket listener: ADDR:PORT or unix:PATH"),
    CB_STR(token,
           "the token browsers must send in hello"),
    CB_STR(token_file,
           "read the token from this file (first line)"),
    CB_LIST(origins,
           "allowed Origin of browser connections; '*' matches a host "
           "part (https://*.lmarena.ai); repeatable; none: any origin"),
    CB_NUM(max_browsers, 1, 100000,
           "browser connections accepted at once"),
    CB_NUM(per_browser, 1, 4096,
           "requests one browser works on at once, at most (a browser may "
           "announce fewer)"),
    CB_NUM(queue, 0, 1000000,
           "requests that wait for a free browser, at most"),
    CB_NUM(queue_timeout, 1, 3600000,
           "ms a request waits for a free browser before 503"),
    CB_NUM(heartbeat, 1000, 600000,
           "ms between pings to each browser"),
    CB_NUM(dead_after, 2000, 3600000,
           "ms of silence after which a browser is dropped"),
    CB_NUM(hello_timeout, 100, 600000,
           "ms a new connection has to say hello"),
    CB_NUM(max_frame, 65536, 1u << 30,
           "largest frame a browser may send, in bytes"),
    CB_NUM(retries, 0, 10,
           "times a request moves to another browser when its browser "
           "drops before answering"),
    CB_NUM(retry_after, 1, 3600,
           "Retry-After seconds when no browser can take a request"),
    CB_NUM(max_workers, 1, 255,
           "nginx worker processes that can link at once (both "
           "generations during a reload)"),
    CB_NUM(slots, 16, 1u << 24,
           "requests in flight across all workers, at most"),
    CB_NUM(ring_size, 256, 1u << 24,
           "bytes of answer buffered per request in shared memory (power "
           "of 2)"),
    CB_NUM(chunks, 16, 1u << 24,
           "request chunks in shared memory"),
    CB_NUM(chunk_size, 1024, 1u << 24,
           "bytes per request chunk (multiple of 8)"),
    CB_NUM(state_size, 4096, 1u << 28,
           "bytes reserved for the published state (browsers, models)"),
    CB_STR(state_dir,
           "directory of the LMArena Bridge files (config.jsonc, "
           "models.json, model_endpoint_map.json) that captures and model "
           "lists may update; none: they update nothing on disk"),
    CB_NUM(update_models, 0, 1,
           "1: rewrite models.json in --state-dir from the model list a "
           "tab announces, logging what was added, removed or changed"),
    CB_STR(log_level,
           "error, warn, notice, info or debug"),
};

#undef CB_STR
#undef CB_NUM
#undef CB_OCT
#undef CB_LIST

bool set_value(Options *o, const OptionDef &d, const std::string &v,
               std::string *err)
{
    switch (d.kind) {
    case Kind::string:
        o->*d.str = v;
        return true;

    case Kind::list:
        (o->*d.list).push_back(v);
        return true;

    case Kind::octal:
    case Kind::number: {
        char *end = nullptr;
        errno = 0;
        unsigned long n = strtoul(v.c_str(), &end, d.kind == Kind::octal ? 8
                                                                         : 10);
        if (v.empty() || *end || errno || n < d.min || n > d.max) {
            std::ostringstream m;
            m << "--" << d.name << ": \"" << v << "\" is not "
              << (d.kind == Kind::octal ? "an octal mode" : "a number")
              << " in [" << d.min << ", " << d.max << "]";
            *err = m.str();
            return false;
        }
        o->*d.num = uint32_t(n);
        return true;
    }
    }
    return false;
}

const OptionDef *find(const std::string &name)
{
    for (const auto &d : option_table) {
        if (name == d.name) {
            return &d;
        }
    }
    return nullptr;
}

bool load_config(const std::string &path, Options *o, std::string *err)
{
    // JSON with comments and trailing commas, like LMArena Bridge's files
    char msg[512];
    json_t *root = cb_jsonc_load_file(path.c_str(), 1 << 20, msg,
                                      sizeof(msg));
    if (root == nullptr) {
        *err = msg;
        return false;
    }

    bool ok = json_is_object(root);
    if (!ok) {
        *err = path + ": the config must be a JSON object";
    }

    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (!ok) {
            break;
        }
        const OptionDef *d = find(key);
        if (d == nullptr) {
            *err = path + ": unknown key \"" + key + "\"";
            ok = false;
            break;
        }

        if (d->kind == Kind::list) {
            size_t i;
            json_t *item;
            if (!json_is_array(value)) {
                *err = path + ": \"" + key + "\" must be a list of strings";
                ok = false;
                break;
            }
            json_array_foreach(value, i, item) {
                if (!json_is_string(item)) {
                    *err = path + ": \"" + key + "\" must hold strings";
                    ok = false;
                    break;
                }
                set_value(o, *d, json_string_value(item), err);
            }
            continue;
        }

        std::string v;
        if (json_is_string(value)) {
            v = json_string_value(value);
        } else if (json_is_integer(value) && d->kind != Kind::string) {
            v = std::to_string(json_integer_value(value));
            if (d->kind == Kind::octal) {
                std::ostringstream m;
                m << std::oct << json_integer_value(value);
                v = m.str();
            }
        } else {
            *err = path + ": \"" + key + "\" has the wrong type";
            ok = false;
            break;
        }
        if (!set_value(o, *d, v, err)) {
            *err = path + ": " + *err;
            ok = false;
        }
    }

    json_decref(root);
    return ok;
}

bool read_token_file(Options *o, std::string *err)
{
    std::ifstream in(o->token_file);
    if (!in) {
        *err = "cannot read the token file \"" + o->token_file + "\"";
        return false;
    }
    std::getline(in, o->token);
    while (!o->token.empty()
           && (o->token.back() == '\r' || o->token.back() == ' ')) {
        o->token.pop_back();
    }
    return true;
}

} // namespace

Parse parse_options(int argc, char **argv, Options *o, std::string *err)
{
    // a config file first, so that the command line overrides it
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 == argc) {
                *err = "--config needs a file";
                return Parse::error;
            }
            if (!load_config(argv[i + 1], o, err)) {
                return Parse::error;
            }
        }
    }

    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];

        if (arg == "--help" || arg == "-h") {
            fputs(options_help().c_str(), stdout);
            return Parse::exit_ok;
        }
        if (arg == "--config") {
            i++;
            continue;
        }
        if (arg.rfind("--", 0) != 0) {
            *err = "unexpected argument \"" + arg + "\"; see --help";
            return Parse::error;
        }

        std::string name = arg.substr(2), value;
        size_t eq = name.find('=');
        if (eq != std::string::npos) {
            value = name.substr(eq + 1);
            name.resize(eq);
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            *err = arg + " needs a value";
            return Parse::error;
        }

        for (char &c : name) {
            if (c == '-') {
                c = '_';
            }
        }
        if (name == "origin") {
            name = "origins";
        }

        const OptionDef *d = find(name);
        if (d == nullptr) {
            *err = "unknown option " + arg + "; see --help";
            return Parse::error;
        }
        if (!set_value(o, *d, value, err)) {
            return Parse::error;
        }
    }

    if (!o->token_file.empty() && !read_token_file(o, err)) {
        return Parse::error;
    }
    if (o->token.empty()) {
        *err = "no browser token: set --token or --token-file (browsers "
               "must present it in hello)";
        return Parse::error;
    }
    if (o->ring_size & (o->ring_size - 1)) {
        *err = "--ring-size must be a power of 2";
        return Parse::error;
    }
    if (o->chunk_size % 8) {
        *err = "--chunk-size must be a multiple of 8";
        return Parse::error;
    }
    if (o->dead_after <= o->heartbeat) {
        *err = "--dead-after must be longer than --heartbeat";
        return Parse::error;
    }
    return Parse::ok;
}

std::string options_help()
{
    std::ostringstream out;
    out << "usage: chatbridge-sidecar [--config FILE] [--OPTION VALUE ...]\n"
           "\n"
           "Owns the browser WebSocket connections of chatbridge and hands "
           "their work to\nthe nginx workers through shared memory. "
           "Options (also the keys of the JSON\nconfig file):\n\n";
    Options defaults;
    for (const auto &d : option_table) {
        std::string flag = d.name;
        for (char &c : flag) {
            if (c == '_') {
                c = '-';
            }
        }
        out << "  --" << flag;
        switch (d.kind) {
        case Kind::string:
            if (!(defaults.*d.str).empty()) {
                out << " (" << defaults.*d.str << ")";
            }
            break;
        case Kind::octal:
            out << " (0" << std::oct << defaults.*d.num << std::dec << ")";
            break;
        case Kind::number:
            out << " (" << defaults.*d.num << ")";
            break;
        case Kind::list:
            break;
        }
        out << "\n      " << d.doc << "\n";
    }
    return out.str();
}

} // namespace chatbridge
