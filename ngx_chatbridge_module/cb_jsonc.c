
/*
 * Copyright (C) chatbridge authors
 *
 * JSONC reader and comment-preserving writer.
 *
 * The reader copies the text into a buffer of the same length in which
 * every comment byte but '\n', every trailing comma and a byte order mark
 * are blanked, and hands that to jansson: byte offsets are preserved, so
 * jansson's error position maps straight back to the original text.
 *
 * The writer validates the text with the reader, then walks the top-level
 * object of the original text, skipping comments, and splices the new value
 * in; nothing else is rewritten.
 */

#define _POSIX_C_SOURCE  200809L

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cb_jsonc.h"


#define CB_JSONC_NONE  SIZE_MAX
#define CB_JSONC_DUMP  (JSON_COMPACT | JSON_ENCODE_ANY)


typedef struct {
    size_t       off;
    size_t       del;
    const char  *data;
    size_t       len;
} cb_jsonc_edit_t;


static void cb_jsonc_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static size_t cb_jsonc_bom(const char *text, size_t len);
static size_t cb_jsonc_string_end(const char *text, size_t len, size_t i);
static size_t cb_jsonc_comment_end(const char *text, size_t len, size_t i);
static const char *cb_jsonc_strip(const char *text, size_t len, char *buf,
    size_t *bad);
static void cb_jsonc_where(const char *text, size_t off, unsigned long *line,
    unsigned long *col);
static size_t cb_jsonc_skip(const char *text, size_t len, size_t i);
static size_t cb_jsonc_skip_value(const char *text, size_t len, size_t i);
static size_t cb_jsonc_line_end(const char *text, size_t len, size_t i);
static int cb_jsonc_key_is(const char *text, size_t len, const char *key);
static char *cb_jsonc_apply(const char *text, size_t len,
    const cb_jsonc_edit_t *edits, size_t n, size_t *outlen);
static int cb_file_sync_dir(const char *path, char *err, size_t errlen);


json_t *
cb_jsonc_parse(const char *text, size_t len, const char *name, char *err,
    size_t errlen)
{
    char           *buf;
    size_t          bom, bad;
    json_t         *json;
    const char     *msg;
    unsigned long   line, col;
    json_error_t    error;

    bom = cb_jsonc_bom(text, len);
    text += bom;
    len -= bom;

    buf = malloc(len + 1);
    if (buf == NULL) {
        cb_jsonc_error(err, errlen, "%s%sout of memory", name ? name : "",
                       name ? ": " : "");
        return NULL;
    }

    msg = cb_jsonc_strip(text, len, buf, &bad);

    if (msg == NULL) {
        json = json_loadb(buf, len, 0, &error);
        if (json != NULL) {
            free(buf);
            return json;
        }

        msg = error.text;
        bad = error.position > 0 ? (size_t) error.position - 1 : 0;
    }

    free(buf);

    cb_jsonc_where(text, bad, &line, &col);

    if (name == NULL) {
        cb_jsonc_error(err, errlen, "%lu:%lu: %s", line, col, msg);

    } else {
        cb_jsonc_error(err, errlen, "%s:%lu:%lu: %s", name, line, col, msg);
    }

    return NULL;
}


json_t *
cb_jsonc_load_file(const char *path, size_t max_size, char *err,
    size_t errlen)
{
    int           fd;
    char         *buf;
    size_t        size, got;
    json_t       *json;
    ssize_t       n;
    struct stat   st;

    /* non-blocking: a FIFO in its place is refused below, not waited on */

    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd == -1) {
        cb_jsonc_error(err, errlen, "%s: open() failed: %s", path,
                       strerror(errno));
        return NULL;
    }

    buf = NULL;

    if (fstat(fd, &st) == -1) {
        cb_jsonc_error(err, errlen, "%s: fstat() failed: %s", path,
                       strerror(errno));
        goto failed;
    }

    if (!S_ISREG(st.st_mode)) {
        cb_jsonc_error(err, errlen, "%s: not a regular file", path);
        goto failed;
    }

    if ((uintmax_t) st.st_size > max_size) {
        cb_jsonc_error(err, errlen,
                       "%s: file is too large (%jd bytes, the limit is %zu)",
                       path, (intmax_t) st.st_size, max_size);
        goto failed;
    }

    size = (size_t) st.st_size;

    buf = malloc(size + 1);
    if (buf == NULL) {
        cb_jsonc_error(err, errlen, "%s: out of memory", path);
        goto failed;
    }

    got = 0;

    while (got < size) {
        n = read(fd, buf + got, size - got);

        if (n > 0) {
            got += n;
            continue;
        }

        if (n == 0) {
            break;
        }

        if (errno != EINTR) {
            cb_jsonc_error(err, errlen, "%s: read() failed: %s", path,
                           strerror(errno));
            goto failed;
        }
    }

    close(fd);

    json = cb_jsonc_parse(buf, got, path, err, errlen);

    free(buf);

    return json;

failed:

    close(fd);
    free(buf);

    return NULL;
}


char *
cb_jsonc_set_member(const char *text, size_t len, const char *key,
    json_t *value, size_t *outlen, char *err, size_t errlen)
{
    int               rc, first, nl, comma_before, at_eol;
    char             *enc, *kenc, *out;
    size_t            i, n, k, v, vend, comma, body, at, ind, indlen;
    size_t            found, found_end;
    json_t           *json;
    const char       *eol, *indent, *lf;
    cb_jsonc_edit_t   e[8];
    char              perr[256];

    json = cb_jsonc_parse(text, len, NULL, err, errlen);
    if (json == NULL) {
        return NULL;
    }

    rc = json_is_object(json);
    json_decref(json);

    if (!rc) {
        cb_jsonc_error(err, errlen, "the top level is not an object");
        return NULL;
    }

    json = json_string(key);
    if (json == NULL) {
        cb_jsonc_error(err, errlen, "the key is not valid UTF-8");
        return NULL;
    }

    kenc = json_dumps(json, CB_JSONC_DUMP);
    json_decref(json);

    enc = json_dumps(value, CB_JSONC_DUMP);
    out = NULL;

    if (kenc == NULL || enc == NULL) {
        cb_jsonc_error(err, errlen, "cannot encode the value");
        goto done;
    }

    /* walk the members of the top-level object */

    body = cb_jsonc_skip(text, len, cb_jsonc_bom(text, len)) + 1;
    k = CB_JSONC_NONE;
    vend = 0;
    comma = CB_JSONC_NONE;
    found = CB_JSONC_NONE;
    found_end = 0;

    for (i = cb_jsonc_skip(text, len, body);
         i < len && text[i] != '}';
         i = cb_jsonc_skip(text, len, i))
    {
        k = i;
        i = cb_jsonc_skip_value(text, len, k);

        rc = cb_jsonc_key_is(text + k, i - k, key);
        if (rc == -1) {
            cb_jsonc_error(err, errlen, "out of memory");
            goto done;
        }

        v = cb_jsonc_skip(text, len, cb_jsonc_skip(text, len, i) + 1);
        vend = cb_jsonc_skip_value(text, len, v);

        if (rc) {
            found = v;
            found_end = vend;
        }

        i = cb_jsonc_skip(text, len, vend);
        comma = CB_JSONC_NONE;

        if (i < len && text[i] == ',') {
            comma = i++;
        }
    }

    n = 0;

    if (found != CB_JSONC_NONE) {
        e[n++] = (cb_jsonc_edit_t) { found, found_end - found,
                                     enc, strlen(enc) };
        goto apply;
    }

    /*
     * Add the key after the last member (or the opening brace), past the
     * comments on the rest of its line.
     */

    lf = memchr(text, '\n', len);
    eol = (lf != NULL && lf > text && lf[-1] == '\r') ? "\r\n" : "\n";

    i = cb_jsonc_line_end(text, len, (k == CB_JSONC_NONE) ? body : vend);
    at_eol = i < len && (text[i] == '\n' || text[i] == '\r');

    first = 0;
    ind = k;

    if (k != CB_JSONC_NONE) {
        while (ind > 0 && (text[ind - 1] == ' ' || text[ind - 1] == '\t')) {
            ind--;
        }

        first = (ind == 0 || text[ind - 1] == '\n');
    }

    if (first) {
        indent = text + ind;
        indlen = k - ind;

    } else {
        indent = "    ";
        indlen = 4;
    }

    nl = at_eol || first || k == CB_JSONC_NONE;
    comma_before = (comma != CB_JSONC_NONE && comma < i);

    if (k != CB_JSONC_NONE && !comma_before) {
        e[n++] = (cb_jsonc_edit_t) { vend, 0, ",", 1 };
    }

    at = nl ? i : (comma_before ? comma + 1 : vend);

    if (nl) {
        e[n++] = (cb_jsonc_edit_t) { at, 0, eol, strlen(eol) };
        e[n++] = (cb_jsonc_edit_t) { at, 0, indent, indlen };

    } else {
        e[n++] = (cb_jsonc_edit_t) { at, 0, " ", 1 };
    }

    e[n++] = (cb_jsonc_edit_t) { at, 0, kenc, strlen(kenc) };
    e[n++] = (cb_jsonc_edit_t) { at, 0, ": ", 2 };
    e[n++] = (cb_jsonc_edit_t) { at, 0, enc, strlen(enc) };

    if (comma_before) {
        e[n++] = (cb_jsonc_edit_t) { at, 0, ",", 1 };
    }

    if (nl && !at_eol) {
        e[n++] = (cb_jsonc_edit_t) { at, 0, eol, strlen(eol) };
    }

apply:

    out = cb_jsonc_apply(text, len, e, n, outlen);
    if (out == NULL) {
        cb_jsonc_error(err, errlen, "out of memory");
        goto done;
    }

    /* never hand out text that would not load again */

    json = cb_jsonc_parse(out, *outlen, NULL, perr, sizeof(perr));
    if (json == NULL) {
        cb_jsonc_error(err, errlen, "internal error: edited text: %s", perr);
        free(out);
        out = NULL;
        goto done;
    }

    json_decref(json);

done:

    free(kenc);
    free(enc);

    return out;
}


int
cb_file_write_atomic(const char *path, const char *data, size_t len,
    char *err, size_t errlen)
{
    int           fd, saved;
    char         *tmp;
    mode_t        mode;
    size_t        done;
    ssize_t       n;
    const char   *op;
    struct stat   st;

    tmp = malloc(strlen(path) + sizeof(".tmp.") + 3 * sizeof(long));
    if (tmp == NULL) {
        cb_jsonc_error(err, errlen, "%s: out of memory", path);
        return -1;
    }

    sprintf(tmp, "%s.tmp.%ld", path, (long) getpid());

    mode = (stat(path, &st) == 0) ? (st.st_mode & 07777) : 0644;

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
              0600);
    if (fd == -1) {
        cb_jsonc_error(err, errlen, "open() \"%s\" failed: %s", tmp,
                       strerror(errno));
        free(tmp);
        return -1;
    }

    if (fchmod(fd, mode) == -1) {
        op = "fchmod()";
        goto failed;
    }

    for (done = 0; done < len; done += n) {
        n = write(fd, data + done, len - done);

        if (n == -1) {
            if (errno != EINTR) {
                op = "write()";
                goto failed;
            }

            n = 0;
        }
    }

    if (fsync(fd) == -1) {
        op = "fsync()";
        goto failed;
    }

    saved = close(fd);
    fd = -1;

    if (saved == -1) {
        op = "close()";
        goto failed;
    }

    if (rename(tmp, path) == -1) {
        op = "rename()";
        goto failed;
    }

    free(tmp);

    return cb_file_sync_dir(path, err, errlen);

failed:

    saved = errno;

    if (fd != -1) {
        close(fd);
    }

    unlink(tmp);

    cb_jsonc_error(err, errlen, "%s \"%s\" failed: %s", op, tmp,
                   strerror(saved));
    free(tmp);

    return -1;
}


static void
cb_jsonc_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(err, errlen, fmt, args);
    va_end(args);
}


static size_t
cb_jsonc_bom(const char *text, size_t len)
{
    return (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) ? 3 : 0;
}


/*
 * i is at '"'; returns the offset past the closing quote, or 0 if the
 * string is not closed before the end of the line.
 */

static size_t
cb_jsonc_string_end(const char *text, size_t len, size_t i)
{
    for (i++; i < len && text[i] != '\n'; i++) {

        if (text[i] == '"') {
            return i + 1;
        }

        if (text[i] == '\\' && i + 1 < len && text[i + 1] != '\n') {
            i++;
        }
    }

    return 0;
}


/*
 * i is at the '/' that opens a comment; returns the offset of the '\n' (or
 * the end) that closes a line comment, the offset past a block comment, or 0
 * if a block comment is not closed.
 */

static size_t
cb_jsonc_comment_end(const char *text, size_t len, size_t i)
{
    if (text[i + 1] == '/') {
        while (i < len && text[i] != '\n') {
            i++;
        }

        return i;
    }

    for (i += 2; i + 1 < len; i++) {
        if (text[i] == '*' && text[i + 1] == '/') {
            return i + 2;
        }
    }

    return 0;
}


/*
 * Copies text to buf blanking comments (but their '\n') and trailing commas
 * after a value; returns NULL, or an error message with its offset in *bad.
 */

static const char *
cb_jsonc_strip(const char *text, size_t len, char *buf, size_t *bad)
{
    char    c, prev;
    size_t  i, j, end, comma;

    prev = '\0';
    comma = CB_JSONC_NONE;

    for (i = 0; i < len; i = end) {
        c = text[i];

        if (c == '"') {
            end = cb_jsonc_string_end(text, len, i);
            if (end == 0) {
                *bad = i;
                return "unterminated string";
            }

            memcpy(buf + i, text + i, end - i);

        } else if (c == '/' && i + 1 < len
                   && (text[i + 1] == '/' || text[i + 1] == '*'))
        {
            end = cb_jsonc_comment_end(text, len, i);
            if (end == 0) {
                *bad = i;
                return "unterminated block comment";
            }

            for (j = i; j < end; j++) {
                buf[j] = (text[j] == '\n') ? '\n' : ' ';
            }

            continue;

        } else {
            end = i + 1;
            buf[i] = c;

            if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
                continue;
            }
        }

        /* a token starts at i */

        if (comma != CB_JSONC_NONE && (c == '}' || c == ']')) {
            buf[comma] = ' ';
        }

        /* a comma after a value, strchr() also finds prev == '\0' */

        comma = (c == ',' && strchr(",:[{", prev) == NULL) ? i
                                                           : CB_JSONC_NONE;
        prev = c;
    }

    return NULL;
}


/* the 1-based line and column (in UTF-8 characters) of the byte at off */

static void
cb_jsonc_where(const char *text, size_t off, unsigned long *line,
    unsigned long *col)
{
    size_t  i;

    *line = 1;
    *col = 1;

    for (i = 0; i < off; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;

        } else if ((text[i] & 0xc0) != 0x80) {
            (*col)++;
        }
    }
}


/* the functions below walk text that cb_jsonc_parse() has accepted */

static size_t
cb_jsonc_skip(const char *text, size_t len, size_t i)
{
    while (i < len) {
        switch (text[i]) {

        case ' ':
        case '\t':
        case '\r':
        case '\n':
            i++;
            break;

        case '/':
            i = cb_jsonc_comment_end(text, len, i);
            break;

        default:
            return i;
        }
    }

    return i;
}


static size_t
cb_jsonc_skip_value(const char *text, size_t len, size_t i)
{
    size_t  depth;

    if (text[i] == '"') {
        return cb_jsonc_string_end(text, len, i);
    }

    if (text[i] != '{' && text[i] != '[') {
        while (i < len && strchr(" \t\r\n,]}/", text[i]) == NULL) {
            i++;
        }

        return i;
    }

    depth = 0;

    do {
        switch (text[i]) {

        case '"':
            i = cb_jsonc_string_end(text, len, i);
            continue;

        case '/':
            i = cb_jsonc_comment_end(text, len, i);
            continue;

        case '{':
        case '[':
            depth++;
            break;

        case '}':
        case ']':
            depth--;
            break;
        }

        i++;

    } while (depth > 0 && i < len);

    return i;
}


/*
 * Skips blanks, commas and comments up to the end of the line; returns the
 * offset of the line's '\n' (or of its "\r\n"), or of the first other byte.
 */

static size_t
cb_jsonc_line_end(const char *text, size_t len, size_t i)
{
    while (i < len) {
        switch (text[i]) {

        case '\n':
            return i;

        case '\r':
            if (i + 1 < len && text[i + 1] == '\n') {
                return i;
            }

            i++;
            break;

        case ' ':
        case '\t':
        case ',':
            i++;
            break;

        case '/':
            if (text[i + 1] == '/') {
                i = cb_jsonc_comment_end(text, len, i);
                return (text[i - 1] == '\r') ? i - 1 : i;
            }

            i = cb_jsonc_comment_end(text, len, i);
            break;

        default:
            return i;
        }
    }

    return i;
}


/* returns 1 if the JSON string text decodes to key, 0 if not, -1 on error */

static int
cb_jsonc_key_is(const char *text, size_t len, const char *key)
{
    int      rc;
    json_t  *str;

    str = json_loadb(text, len, JSON_DECODE_ANY, NULL);
    if (str == NULL) {
        return -1;
    }

    rc = (json_string_length(str) == strlen(key)
          && memcmp(json_string_value(str), key, strlen(key)) == 0);

    json_decref(str);

    return rc;
}


/* edits are sorted by offset and do not overlap */

static char *
cb_jsonc_apply(const char *text, size_t len, const cb_jsonc_edit_t *edits,
    size_t n, size_t *outlen)
{
    char    *out, *p;
    size_t   i, size, pos;

    size = len;

    for (i = 0; i < n; i++) {
        size += edits[i].len - edits[i].del;
    }

    out = malloc(size + 1);
    if (out == NULL) {
        return NULL;
    }

    p = out;
    pos = 0;

    for (i = 0; i < n; i++) {
        memcpy(p, text + pos, edits[i].off - pos);
        p += edits[i].off - pos;

        memcpy(p, edits[i].data, edits[i].len);
        p += edits[i].len;

        pos = edits[i].off + edits[i].del;
    }

    memcpy(p, text + pos, len - pos);
    p += len - pos;
    *p = '\0';

    *outlen = size;

    return out;
}


static int
cb_file_sync_dir(const char *path, char *err, size_t errlen)
{
    int          fd, rc;
    char        *dir;
    size_t       n;
    const char  *slash;

    slash = strrchr(path, '/');

    if (slash == NULL) {
        path = ".";
        n = 1;

    } else {
        n = (slash == path) ? 1 : (size_t) (slash - path);
    }

    dir = malloc(n + 1);
    if (dir == NULL) {
        cb_jsonc_error(err, errlen, "%s: out of memory", path);
        return -1;
    }

    memcpy(dir, path, n);
    dir[n] = '\0';

    rc = -1;

    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd == -1) {
        cb_jsonc_error(err, errlen, "open() \"%s\" failed: %s", dir,
                       strerror(errno));

    } else if (fsync(fd) == -1) {
        cb_jsonc_error(err, errlen, "fsync() \"%s\" failed: %s", dir,
                       strerror(errno));

    } else {
        rc = 0;
    }

    if (fd != -1) {
        close(fd);
    }

    free(dir);

    return rc;
}
