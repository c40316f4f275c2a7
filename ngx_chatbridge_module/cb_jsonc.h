
/*
 * Copyright (C) chatbridge authors
 *
 * JSONC (JSON with comments) reader and comment-preserving writer for the
 * configuration files of LMArena Bridge: config.jsonc, models.json and
 * model_endpoint_map.json.  Plain C99 plus jansson; no nginx dependency.
 */

#ifndef _CB_JSONC_H_INCLUDED_
#define _CB_JSONC_H_INCLUDED_


#include <stddef.h>

#include <jansson.h>


#ifdef __cplusplus
extern "C" {
#endif


/*
 * Parses JSONC text into a new jansson reference (an object or an array).
 *
 * Accepted besides strict JSON: "//" line comments and block comments
 * wherever whitespace may appear, a trailing comma before "}" or "]", and a
 * UTF-8 byte order mark at the start.  Comment markers inside strings are
 * text.  Repeated keys are allowed, the last one wins.  The text need not be
 * NUL-terminated.
 *
 * On error returns NULL and writes "<name>:<line>:<column>: <message>" to
 * err, e.g. "config.jsonc:12:5: unterminated block comment".  Line and
 * column are 1-based positions in the original text; the column counts UTF-8
 * characters, not bytes, and a byte order mark is not counted.  Errors from
 * jansson point at the last character of the offending token, unterminated
 * strings and comments at their first character.  With name NULL the
 * message starts with the line.
 */
json_t *cb_jsonc_parse(const char *text, size_t len, const char *name,
    char *err, size_t errlen);

/*
 * Reads a regular file of at most max_size bytes and parses it with
 * cb_jsonc_parse(), the path serving as the name in messages.
 */
json_t *cb_jsonc_load_file(const char *path, size_t max_size, char *err,
    size_t errlen);

/*
 * Returns new text in which the value of the top-level member "key" is
 * replaced by the compact JSON encoding of value (keys in insertion order,
 * non-ASCII characters as UTF-8), every other byte of the original being
 * kept: comments, spacing, order.  Only the top-level object is searched;
 * if the key is repeated, the last occurrence (the one that takes effect)
 * is replaced.
 *
 * A missing key is added as the last member, on a new line with the
 * indentation of the previous member (4 spaces if there is none or it does
 * not start its line), after any comment that ends the previous member's
 * line.  A comma is added after the previous value where needed; if the
 * object had a trailing comma, the new member gets one too.  If the last
 * member does not start its line and "}" follows on that line, as in
 * {"a": 1}, the new member is added on that line instead.
 *
 * Returns a malloc()ed NUL-terminated buffer, its length in *outlen, or NULL
 * with err set: the text does not parse (the message has no name, it starts
 * with the line), the top level is not an object, the key is not UTF-8, or
 * out of memory.
 */
char *cb_jsonc_set_member(const char *text, size_t len, const char *key,
    json_t *value, size_t *outlen, char *err, size_t errlen);

/*
 * Replaces the file at path atomically with len bytes of data: writes and
 * fsync()s "<path>.tmp.<pid>" in the same directory, gives it the mode of
 * the existing file (0644 if there is none), rename()s it over path and
 * fsync()s the directory.  Returns 0, or -1 with err set and no temporary
 * file left behind.
 */
int cb_file_write_atomic(const char *path, const char *data, size_t len,
    char *err, size_t errlen);


#ifdef __cplusplus
}
#endif

#endif /* _CB_JSONC_H_INCLUDED_ */
