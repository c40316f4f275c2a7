// Copyright (C) chatbridge authors
//
// The browser protocol: the validator for frames, driven by the spec file
// browser/protocol/protocol-v1.json (embedded at build time, and the same
// file the JavaScript side loads), and builders for the frames the sidecar
// sends.

#ifndef CHATBRIDGE_FRAMES_H
#define CHATBRIDGE_FRAMES_H

#include <jansson.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace chatbridge {

// the embedded spec text
extern const char *const protocol_spec;

enum class Direction { browser, sidecar };

struct Verdict {
    bool ok = true;
    std::string error;      // not_object, missing_field, wrong_type ...
    std::string path;       // field path, e.g. capabilities.concurrency
    std::string message;    // for humans
};

struct ErrorCode {
    unsigned status;
    bool retryable;
};

// The frames a browser sends most -- delta, reasoning, done -- read
// without building a JSON tree.  The views point into the frame, or into
// the scratch string for text with escapes.
struct FastFrame {
    enum class Kind { delta, reasoning, done };
    Kind kind = Kind::delta;
    std::string_view request_id;
    std::string_view text;              // delta, reasoning
    std::string_view finish_reason;     // done; empty if absent
};

class Schema {
public:
    Schema() = default;
    Schema(const Schema &) = delete;            // fast_ points into frames_
    Schema &operator=(const Schema &) = delete;

    // Loads a spec document; false with err if it is not usable.
    bool load(const char *text, std::string *err);

    Verdict validate(json_t *frame, Direction dir) const;

    // The fast path for delta, reasoning and done frames with only string
    // members and nothing to correct: true with *out filled, or false, and
    // then the frame goes to json_loadb() and validate() as any other.  It
    // never accepts a frame validate() would refuse.
    bool read_fast(const char *p, size_t n, FastFrame *out,
                   std::string *scratch) const;

    // default status and retryability of a browser error code
    ErrorCode error_code(const std::string &code) const;

    const std::map<std::string, ErrorCode> &error_codes() const
    {
        return codes_;
    }

    json_t *examples() const { return examples_.get(); }

private:
    struct Field;
    using FieldList = std::vector<std::pair<std::string,
                                            std::shared_ptr<Field>>>;

    struct Field {
        std::string type;
        bool is_string = false;         // type == "string", for the fast path
        bool required = false;
        bool has_min = false, has_max = false;
        double min = 0, max = 0;
        size_t min_len = 0, max_len = SIZE_MAX, max_items = SIZE_MAX;
        bool id_charset = false;
        std::vector<std::string> enumeration;
        FieldList fields;                   // object
        std::shared_ptr<Field> items;       // array
    };

    struct FrameDef {
        std::string from;
        FieldList fields;
    };

    // the rule validate() and the fast path share: who sends a frame
    static bool sent_by(const FrameDef &def, Direction dir);

    static bool parse_field(json_t *def, Field *f, std::string *err);
    static bool parse_fields(json_t *obj, FieldList *out, std::string *err);
    static bool check(const Field &f, json_t *v, const std::string &path,
                      Verdict *out);
    static bool check_fields(const FieldList &fields, json_t *obj,
                             const std::string &prefix, Verdict *out);

    struct FastDef {
        const FrameDef *def = nullptr;          // null: no fast path
        const Field *request_id = nullptr;
        const Field *text = nullptr;            // delta, reasoning
        const Field *finish_reason = nullptr;   // done
    };

    static bool fast_string(const Field *f, std::string_view raw,
                            bool escaped, size_t len);

    std::map<std::string, FrameDef> frames_;
    FastDef fast_[3];                   // by FastFrame::Kind
    std::map<std::string, ErrorCode> codes_;
    std::unique_ptr<json_t, void (*)(json_t *)> examples_{nullptr,
                                                          json_decref};
};

// Frames are kept with LWS_PRE bytes of headroom for lws_write().
using OutFrame = std::shared_ptr<const std::string>;

OutFrame make_frame(json_t *frame);        // steals the reference
OutFrame make_frame(const std::string &json);
size_t frame_pre();

OutFrame welcome_frame(const std::string &browser_id, unsigned heartbeat_ms,
                       unsigned max_frame);
OutFrame ping_frame(double t);
OutFrame pong_frame(json_t *t);
OutFrame cancel_frame(const std::string &request_id, const char *reason);
OutFrame flow_frame(const char *type, const std::string &request_id);
OutFrame error_frame(const char *code, const std::string &message,
                     const std::string &request_id);
OutFrame command_frame(const std::string &command_id,
                       const std::string &command, json_t *args);

} // namespace chatbridge

#endif
