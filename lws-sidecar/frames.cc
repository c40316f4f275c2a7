// Copyright (C) chatbridge authors

#include "frames.h"

#include <libwebsockets.h>

#include <cmath>
#include <cstring>

#include "protocol_spec.inc"

namespace chatbridge {

namespace {

bool id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':'
           || c == '-';
}

bool fail(Verdict *out, const char *error, const std::string &path,
          const std::string &message)
{
    out->ok = false;
    out->error = error;
    out->path = path;
    out->message = path.empty() ? message : path + ": " + message;
    return false;
}

} // namespace

bool Schema::parse_field(json_t *def, Field *f, std::string *err)
{
    if (!json_is_object(def)) {
        *err = "a field definition is not an object";
        return false;
    }

    const char *type = json_string_value(json_object_get(def, "type"));
    if (type == nullptr) {
        *err = "a field definition has no type";
        return false;
    }

    f->type = type;
    static const char *const known[] = {
        "string", "integer", "number", "boolean", "object", "array"
    };
    bool ok = false;
    for (const char *k : known) {
        ok |= f->type == k;
    }
    if (!ok) {
        *err = "unknown field type \"" + f->type + "\"";
        return false;
    }

    f->required = json_is_true(json_object_get(def, "required"));

    json_t *v;
    if ((v = json_object_get(def, "min")) != nullptr) {
        f->has_min = true;
        f->min = json_number_value(v);
    }
    if ((v = json_object_get(def, "max")) != nullptr) {
        f->has_max = true;
        f->max = json_number_value(v);
    }
    if ((v = json_object_get(def, "min_len")) != nullptr) {
        f->min_len = size_t(json_integer_value(v));
    }
    if ((v = json_object_get(def, "max_len")) != nullptr) {
        f->max_len = size_t(json_integer_value(v));
    }
    if ((v = json_object_get(def, "max_items")) != nullptr) {
        f->max_items = size_t(json_integer_value(v));
    }
    if ((v = json_object_get(def, "charset")) != nullptr) {
        if (!json_is_string(v) || strcmp(json_string_value(v), "id") != 0) {
            *err = "unknown charset";
            return false;
        }
        f->id_charset = true;
    }
    if ((v = json_object_get(def, "enum")) != nullptr) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (json_is_string(e)) {
                f->enumeration.emplace_back(json_string_value(e));
            }
        }
    }
    if ((v = json_object_get(def, "fields")) != nullptr
        && !parse_fields(v, &f->fields, err)) {
        return false;
    }
    if ((v = json_object_get(def, "items")) != nullptr) {
        f->items = std::make_shared<Field>();
        if (!parse_field(v, f->items.get(), err)) {
            return false;
        }
    }
    return true;
}

bool Schema::parse_fields(json_t *obj, FieldList *out, std::string *err)
{
    const char *name;
    json_t *def;

    json_object_foreach(obj, name, def) {
        auto f = std::make_shared<Field>();
        if (!parse_field(def, f.get(), err)) {
            *err = std::string(name) + ": " + *err;
            return false;
        }
        out->emplace_back(name, f);
    }
    return true;
}

bool Schema::load(const char *text, std::string *err)
{
    json_error_t je;
    std::unique_ptr<json_t, void (*)(json_t *)> root(
        json_loads(text, 0, &je), json_decref);

    if (!root) {
        *err = std::string("the protocol spec is not JSON: ") + je.text;
        return false;
    }

    if (json_integer_value(json_object_get(root.get(), "version")) != 1) {
        *err = "the protocol spec is not version 1";
        return false;
    }

    const char *name;
    json_t *def;

    json_object_foreach(json_object_get(root.get(), "frames"), name, def) {
        FrameDef fd;
        const char *from = json_string_value(json_object_get(def, "from"));
        fd.from = from ? from : "";
        if (!parse_fields(json_object_get(def, "fields"), &fd.fields, err)) {
            *err = std::string(name) + "." + *err;
            return false;
        }
        frames_[name] = std::move(fd);
    }

    json_object_foreach(json_object_get(root.get(), "error_codes"), name,
                        def) {
        ErrorCode c;
        c.status = unsigned(json_integer_value(json_object_get(def,
                                                               "status")));
        c.retryable = json_is_true(json_object_get(def, "retryable"));
        codes_[name] = c;
    }

    if (frames_.empty() || codes_.empty()) {
        *err = "the protocol spec defines no frames or no error codes";
        return false;
    }

    examples_.reset(json_incref(json_object_get(root.get(), "examples")));
    return true;
}

ErrorCode Schema::error_code(const std::string &code) const
{
    auto it = codes_.find(code);
    if (it != codes_.end()) {
        return it->second;
    }
    // unknown codes are the site's failure, as the spec says
    return codes_.at("site_error");
}

bool Schema::check(const Field &f, json_t *v, const std::string &path,
                   Verdict *out)
{
    bool type_ok;

    if (f.type == "string") {
        type_ok = json_is_string(v);
    } else if (f.type == "integer") {
        type_ok = json_is_integer(v)
                  || (json_is_real(v) && std::isfinite(json_real_value(v))
                      && std::floor(json_real_value(v))
                             == json_real_value(v));
    } else if (f.type == "number") {
        type_ok = json_is_number(v);
    } else if (f.type == "boolean") {
        type_ok = json_is_boolean(v);
    } else if (f.type == "object") {
        type_ok = json_is_object(v);
    } else {
        type_ok = json_is_array(v);
    }

    if (!type_ok) {
        return fail(out, "wrong_type", path,
                    f.type == "integer" ? std::string("must be an integer")
                                        : "must be of type " + f.type);
    }

    if (json_is_string(v)) {
        size_t len = json_string_length(v);
        const char *s = json_string_value(v);

        if (len < f.min_len) {
            return fail(out, "too_short", path,
                        "must be at least " + std::to_string(f.min_len)
                            + " bytes");
        }
        if (len > f.max_len) {
            return fail(out, "too_long", path,
                        "must be at most " + std::to_string(f.max_len)
                            + " bytes");
        }
        if (f.id_charset) {
            for (size_t i = 0; i < len; i++) {
                if (!id_char(static_cast<unsigned char>(s[i]))) {
                    return fail(out, "bad_charset", path,
                                "may only hold A-Z a-z 0-9 _ . : -");
                }
            }
        }
        if (!f.enumeration.empty()) {
            for (const auto &e : f.enumeration) {
                if (e.size() == len && memcmp(e.data(), s, len) == 0) {
                    return true;
                }
            }
            std::string list;
            for (const auto &e : f.enumeration) {
                list += (list.empty() ? "" : ", ") + e;
            }
            return fail(out, "not_in_enum", path, "must be one of " + list);
        }
        return true;
    }

    if (json_is_number(v)) {
        double d = json_number_value(v);
        if ((f.has_min && d < f.min) || (f.has_max && d > f.max)) {
            return fail(out, "out_of_range", path, "is out of range");
        }
        return true;
    }

    if (json_is_array(v)) {
        if (json_array_size(v) > f.max_items) {
            return fail(out, "too_many_items", path,
                        "has more than " + std::to_string(f.max_items)
                            + " items");
        }
        if (f.items) {
            size_t i;
            json_t *item;
            json_array_foreach(v, i, item) {
                if (!check(*f.items, item,
                           path + "[" + std::to_string(i) + "]", out)) {
                    return false;
                }
            }
        }
        return true;
    }

    if (json_is_object(v)) {
        return check_fields(f.fields, v, path + ".", out);
    }

    return true;
}

bool Schema::check_fields(const FieldList &fields, json_t *obj,
                          const std::string &prefix, Verdict *out)
{
    for (const auto &[name, f] : fields) {
        json_t *v = json_object_get(obj, name.c_str());
        std::string path = prefix + name;

        if (v == nullptr) {
            if (f->required) {
                return fail(out, "missing_field", path, "is required");
            }
            continue;
        }
        if (!check(*f, v, path, out)) {
            return false;
        }
    }
    return true;
}

Verdict Schema::validate(json_t *frame, Direction dir) const
{
    Verdict out;

    if (!json_is_object(frame)) {
        fail(&out, "not_object", "", "a frame must be a JSON object");
        return out;
    }

    json_t *type = json_object_get(frame, "type");
    if (type == nullptr) {
        fail(&out, "missing_field", "type", "is required");
        return out;
    }
    if (!json_is_string(type)) {
        fail(&out, "wrong_type", "type", "must be a string");
        return out;
    }

    auto it = frames_.find(json_string_value(type));
    const char *want = dir == Direction::browser ? "browser" : "sidecar";

    if (it == frames_.end()
        || (it->second.from != "both" && it->second.from != want)) {
        fail(&out, "unknown_type", "type",
             std::string("\"") + json_string_value(type)
                 + "\" is not a frame a " + want + " sends");
        return out;
    }

    check_fields(it->second.fields, frame, "", &out);
    return out;
}

size_t frame_pre()
{
    return LWS_PRE;
}

OutFrame make_frame(const std::string &json)
{
    auto s = std::make_shared<std::string>();
    s->reserve(LWS_PRE + json.size());
    s->assign(LWS_PRE, '\0');
    s->append(json);
    return s;
}

OutFrame make_frame(json_t *frame)
{
    char *text = json_dumps(frame, JSON_COMPACT);
    json_decref(frame);
    if (text == nullptr) {
        return nullptr;
    }
    OutFrame out = make_frame(std::string(text));
    free(text);
    return out;
}

OutFrame welcome_frame(const std::string &browser_id, unsigned heartbeat_ms,
                       unsigned max_frame)
{
    return make_frame(json_pack("{s:s, s:i, s:s, s:i, s:i}", "type",
                                "welcome", "v", 1, "browser_id",
                                browser_id.c_str(), "heartbeat_ms",
                                int(heartbeat_ms), "max_frame",
                                int(max_frame)));
}

OutFrame ping_frame(double t)
{
    return make_frame(json_pack("{s:s, s:f}", "type", "ping", "t", t));
}

OutFrame pong_frame(json_t *t)
{
    json_t *f = json_pack("{s:s}", "type", "pong");
    if (t != nullptr && json_is_number(t)) {
        json_object_set(f, "t", t);
    }
    return make_frame(f);
}

OutFrame cancel_frame(const std::string &request_id, const char *reason)
{
    return make_frame(json_pack("{s:s, s:s, s:s}", "type", "cancel",
                                "request_id", request_id.c_str(), "reason",
                                reason));
}

OutFrame flow_frame(const char *type, const std::string &request_id)
{
    return make_frame(json_pack("{s:s, s:s}", "type", type, "request_id",
                                request_id.c_str()));
}

OutFrame error_frame(const char *code, const std::string &message,
                     const std::string &request_id)
{
    json_t *f = json_pack("{s:s, s:s, s:s%}", "type", "error", "code", code,
                          "message", message.data(), message.size());
    if (f == nullptr) {
        f = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code,
                      "message", "(not UTF-8)");
    }
    if (!request_id.empty()) {
        json_object_set_new(f, "request_id",
                            json_stringn(request_id.data(),
                                         request_id.size()));
    }
    return make_frame(f);
}

OutFrame command_frame(const std::string &command_id,
                       const std::string &command, json_t *args)
{
    json_t *f = json_pack("{s:s, s:s, s:s}", "type", "command", "command_id",
                          command_id.c_str(), "command", command.c_str());
    if (args != nullptr) {
        json_object_set(f, "args", args);
    }
    return make_frame(f);
}

} // namespace chatbridge
