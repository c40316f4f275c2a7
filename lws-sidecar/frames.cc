// Copyright (C) chatbridge authors

#include "frames.h"

#include <libwebsockets.h>

#include <cmath>
#include <cstring>

#include "protocol_spec.inc"

namespace chatbridge {

namespace {

// byte tables, built at compile time: the id charset, and the bytes a JSON
// string scan must look at (quote, backslash, control, non-ASCII)
struct ByteTable {
    bool is[256];
};

constexpr ByteTable make_id_table()
{
    ByteTable t{};
    for (int c = 0; c < 256; c++) {
        t.is[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                  || (c >= '0' && c <= '9') || c == '_' || c == '.'
                  || c == ':' || c == '-';
    }
    return t;
}

constexpr ByteTable make_special_table()
{
    ByteTable t{};
    for (int c = 0; c < 256; c++) {
        t.is[c] = c < 0x20 || c >= 0x80 || c == '"' || c == '\\';
    }
    return t;
}

constexpr ByteTable kIdChar = make_id_table();
constexpr ByteTable kSpecial = make_special_table();

bool id_char(unsigned char c)
{
    return kIdChar.is[c];
}

bool json_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool hex4(const unsigned char *p, const unsigned char *e, uint32_t *v)
{
    if (e - p < 4) {
        return false;
    }
    *v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        uint32_t d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        } else {
            return false;
        }
        *v = (*v << 4) | d;
    }
    return true;
}

// bytes of the valid UTF-8 character at p, or 0 (as strict as jansson:
// no overlong forms, no surrogates, nothing past U+10FFFF)
size_t utf8_char(const unsigned char *p, const unsigned char *e)
{
    unsigned char c = p[0];
    size_t n = size_t(e - p);

    if (c >= 0xc2 && c <= 0xdf) {
        return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    }
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
            || (c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f)) {
            return 0;
        }
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
            || (p[3] & 0xc0) != 0x80 || (c == 0xf0 && p[1] < 0x90)
            || (c == 0xf4 && p[1] > 0x8f)) {
            return 0;
        }
        return 4;
    }
    return 0;
}

// A JSON string from after its opening quote: true with *end at the closing
// quote, whether it has escapes and its length once unescaped; false if it
// is not valid, or holds what jansson refuses by default (\u0000, a lone
// surrogate).
bool scan_string(const unsigned char *p, const unsigned char *e,
                 const unsigned char **end, bool *escaped, size_t *len)
{
    size_t n = 0;
    bool esc = false;

    while (p < e) {
        const unsigned char *q = p;
        while (q < e && !kSpecial.is[*q]) {
            q++;
        }
        n += size_t(q - p);
        p = q;
        if (p == e) {
            break;
        }

        unsigned char c = *p;

        if (c == '"') {
            *end = p;
            *escaped = esc;
            *len = n;
            return true;
        }
        if (c < 0x20) {
            return false;
        }
        if (c >= 0x80) {
            size_t k = utf8_char(p, e);
            if (k == 0) {
                return false;
            }
            p += k;
            n += k;
            continue;
        }

        // an escape
        esc = true;
        if (++p == e) {
            return false;
        }
        switch (*p) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n':
        case 'r': case 't':
            p++;
            n++;
            continue;
        case 'u':
            break;
        default:
            return false;
        }

        uint32_t cp, lo;
        if (!hex4(p + 1, e, &cp) || cp == 0
            || (cp >= 0xdc00 && cp <= 0xdfff)) {
            return false;
        }
        p += 5;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (e - p < 6 || p[0] != '\\' || p[1] != 'u'
                || !hex4(p + 2, e, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                return false;
            }
            p += 6;
            n += 4;
            continue;
        }
        n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3;
    }
    return false;
}

// the string scan_string() accepted, unescaped
void unescape(std::string_view raw, std::string *out)
{
    out->clear();
    out->reserve(raw.size());

    const auto *p = reinterpret_cast<const unsigned char *>(raw.data());
    const auto *e = p + raw.size();

    while (p < e) {
        if (*p != '\\') {
            out->push_back(char(*p++));
            continue;
        }
        p++;
        switch (*p++) {
        case 'b': out->push_back('\b'); continue;
        case 'f': out->push_back('\f'); continue;
        case 'n': out->push_back('\n'); continue;
        case 'r': out->push_back('\r'); continue;
        case 't': out->push_back('\t'); continue;
        case 'u': break;
        default: out->push_back(char(p[-1])); continue;
        }

        uint32_t cp, lo;
        hex4(p, e, &cp);
        p += 4;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            hex4(p + 2, e, &lo);
            p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }

        if (cp < 0x80) {
            out->push_back(char(cp));
        } else if (cp < 0x800) {
            out->push_back(char(0xc0 | (cp >> 6)));
            out->push_back(char(0x80 | (cp & 0x3f)));
        } else if (cp < 0x10000) {
            out->push_back(char(0xe0 | (cp >> 12)));
            out->push_back(char(0x80 | ((cp >> 6) & 0x3f)));
            out->push_back(char(0x80 | (cp & 0x3f)));
        } else {
            out->push_back(char(0xf0 | (cp >> 18)));
            out->push_back(char(0x80 | ((cp >> 12) & 0x3f)));
            out->push_back(char(0x80 | ((cp >> 6) & 0x3f)));
            out->push_back(char(0x80 | (cp & 0x3f)));
        }
    }
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

    f->is_string = f->type == "string";
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

    // the fast path reads what it knows of these frames, as strings; a
    // frame whose spec requires anything else gets no fast path
    static const char *const fast_names[] = { "delta", "reasoning", "done" };

    for (size_t k = 0; k < 3; k++) {
        auto it = frames_.find(fast_names[k]);
        FastDef d;
        bool usable = it != frames_.end()
                      && sent_by(it->second, Direction::browser);

        for (size_t i = 0; usable && i < it->second.fields.size(); i++) {
            const std::string &name = it->second.fields[i].first;
            const Field *f = it->second.fields[i].second.get();

            if (name == "request_id") {
                d.request_id = f;
            } else if (name == "text" && k < 2) {
                d.text = f;
            } else if (name == "finish_reason" && k == 2) {
                d.finish_reason = f;
            } else if (f->required) {
                usable = false;
            }
        }

        if (usable && d.request_id != nullptr) {
            d.def = &it->second;
            fast_[k] = d;
        }
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

    if (it == frames_.end() || !sent_by(it->second, dir)) {
        fail(&out, "unknown_type", "type",
             std::string("\"") + json_string_value(type)
                 + "\" is not a frame a " + want + " sends");
        return out;
    }

    check_fields(it->second.fields, frame, "", &out);
    return out;
}

bool Schema::sent_by(const FrameDef &def, Direction dir)
{
    return def.from == "both"
           || def.from == (dir == Direction::browser ? "browser" : "sidecar");
}

bool Schema::fast_string(const Field *f, std::string_view raw, bool escaped,
                         size_t len)
{
    if (!f->is_string || len < f->min_len || len > f->max_len) {
        return false;
    }
    if ((f->id_charset || !f->enumeration.empty()) && escaped) {
        return false;       // the full path decides
    }
    if (f->id_charset) {
        for (char c : raw) {
            if (!id_char(static_cast<unsigned char>(c))) {
                return false;
            }
        }
    }
    if (!f->enumeration.empty()) {
        for (const auto &e : f->enumeration) {
            if (e == raw) {
                return true;
            }
        }
        return false;
    }
    return true;
}

bool Schema::read_fast(const char *data, size_t n, FastFrame *out,
                       std::string *scratch) const
{
    struct Member {
        std::string_view key;
        std::string_view raw;
        bool escaped;
        size_t len;
    };

    constexpr size_t kMax = 8;
    Member m[kMax];
    size_t nm = 0;
    const Member *type = nullptr;
    size_t k = 0;

    const auto *p = reinterpret_cast<const unsigned char *>(data);
    const auto *e = p + n;
    const unsigned char *end;
    bool esc;
    size_t len;

    // an object of string members, nothing after it

    while (p < e && json_space(*p)) {
        p++;
    }
    if (p == e || *p++ != '{') {
        return false;
    }

    for (;;) {
        while (p < e && json_space(*p)) {
            p++;
        }
        if (p == e || *p != '"' || nm == kMax) {
            return false;
        }
        if (!scan_string(p + 1, e, &end, &esc, &len) || esc) {
            return false;
        }
        std::string_view key(reinterpret_cast<const char *>(p + 1),
                             size_t(end - p - 1));
        p = end + 1;

        while (p < e && json_space(*p)) {
            p++;
        }
        if (p == e || *p++ != ':') {
            return false;
        }
        while (p < e && json_space(*p)) {
            p++;
        }
        if (p == e || *p != '"') {
            return false;
        }
        if (!scan_string(p + 1, e, &end, &esc, &len)) {
            return false;
        }
        for (size_t i = 0; i < nm; i++) {
            if (m[i].key == key) {
                return false;   // a repeated member: the full path
            }
        }
        m[nm++] = { key,
                    std::string_view(reinterpret_cast<const char *>(p + 1),
                                     size_t(end - p - 1)),
                    esc, len };
        p = end + 1;

        // which frame: any other than these goes the full way at once
        if (key == "type") {
            const Member &t = m[nm - 1];
            if (t.escaped) {
                return false;
            }
            if (t.raw == "delta") {
                k = 0;
                out->kind = FastFrame::Kind::delta;
            } else if (t.raw == "reasoning") {
                k = 1;
                out->kind = FastFrame::Kind::reasoning;
            } else if (t.raw == "done") {
                k = 2;
                out->kind = FastFrame::Kind::done;
            } else {
                return false;
            }
            if (fast_[k].def == nullptr) {
                return false;
            }
            type = &t;
        }

        while (p < e && json_space(*p)) {
            p++;
        }
        if (p == e) {
            return false;
        }
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p++ != '}') {
            return false;
        }
        break;
    }

    while (p < e && json_space(*p)) {
        p++;
    }
    if (p != e) {
        return false;
    }

    // its members as the spec has them

    if (type == nullptr) {
        return false;
    }

    const FastDef &d = fast_[k];
    const Member *id = nullptr, *text = nullptr, *reason = nullptr;

    for (size_t i = 0; i < nm; i++) {
        const Member &x = m[i];

        if (&x == type) {
            continue;
        }
        if (x.key == "request_id") {
            id = &x;
            continue;
        }
        if (d.text != nullptr && x.key == "text") {
            text = &x;
            continue;
        }
        if (d.finish_reason != nullptr && x.key == "finish_reason") {
            reason = &x;
            continue;
        }
        // a field of the spec this path does not read goes the full way;
        // others are ignored, as validate() ignores them
        for (const auto &f : d.def->fields) {
            if (x.key == f.first) {
                return false;
            }
        }
    }

    if (id == nullptr || id->escaped
        || !fast_string(d.request_id, id->raw, false, id->len)) {
        return false;
    }
    if (d.text != nullptr
        && (text == nullptr ? d.text->required
                            : !fast_string(d.text, text->raw, text->escaped,
                                           text->len))) {
        return false;
    }
    if (reason != nullptr
        && (reason->escaped
            || !fast_string(d.finish_reason, reason->raw, false,
                            reason->len))) {
        return false;
    }
    if (reason == nullptr && d.finish_reason != nullptr
        && d.finish_reason->required) {
        return false;
    }

    out->request_id = id->raw;
    out->finish_reason = reason ? reason->raw : std::string_view();
    out->text = std::string_view();

    if (text != nullptr) {
        if (text->escaped) {
            unescape(text->raw, scratch);
            out->text = *scratch;
        } else {
            out->text = text->raw;
        }
    }

    return true;
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
