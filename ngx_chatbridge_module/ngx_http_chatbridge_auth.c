
/*
 * Copyright (C) chatbridge authors
 *
 * API keys: named keys from directives or a file.  A presented key is
 * compared against every configured key, digest to digest, without an early
 * exit, so the time taken says nothing about any key.  Keys never reach a
 * log; the matching key's name is $chatbridge_key_name.
 */


#include <ngx_sha1.h>

#include "ngx_http_chatbridge_module.h"


#define NGX_HTTP_CHATBRIDGE_KEY_MIN         8
#define NGX_HTTP_CHATBRIDGE_ADMIN_KEY_MIN   16
#define NGX_HTTP_CHATBRIDGE_KEYS_FILE_MAX   (1024 * 1024)


static void ngx_http_chatbridge_digest(u_char *digest, u_char *data,
    size_t len);


ngx_int_t
ngx_http_chatbridge_authorize(ngx_http_request_t *r, ngx_array_t *keys_a,
    ngx_str_t *name, const char **error)
{
    u_char                      diff, digest[20], *colon;
    ngx_str_t                   token, decoded;
    ngx_uint_t                  i, j, found;
    ngx_table_elt_t            *h;
    ngx_http_chatbridge_key_t  *keys;

    ngx_str_null(name);

    if (keys_a == NULL || keys_a->nelts == 0) {
        return NGX_OK;
    }

    ngx_str_null(&token);

    if (r->headers_in.authorization) {
        token = r->headers_in.authorization->value;

        if (token.len > 7 && ngx_strncasecmp(token.data, (u_char *) "Bearer ",
                                             7) == 0)
        {
            token.data += 7;
            token.len -= 7;

        } else if (token.len > 6
                   && ngx_strncasecmp(token.data, (u_char *) "Basic ", 6)
                      == 0)
        {
            /* a browser's login prompt: the key is the password */

            token.data += 6;
            token.len -= 6;

            decoded.len = ngx_base64_decoded_length(token.len);
            decoded.data = ngx_pnalloc(r->pool, decoded.len);

            if (decoded.data == NULL
                || ngx_decode_base64(&decoded, &token) != NGX_OK)
            {
                ngx_str_null(&token);

            } else {
                colon = ngx_strlchr(decoded.data,
                                    decoded.data + decoded.len, ':');

                token.data = colon ? colon + 1 : decoded.data;
                token.len = decoded.data + decoded.len - token.data;
            }

        } else {
            ngx_str_null(&token);
        }
    }

    if (token.len == 0) {

        /* some clients send the key the Anthropic or Azure way */

        h = ngx_http_chatbridge_find_header(&r->headers_in.headers,
                                            "x-api-key");
        if (h == NULL) {
            h = ngx_http_chatbridge_find_header(&r->headers_in.headers,
                                                "api-key");
        }

        if (h) {
            token = h->value;
        }
    }

    while (token.len && token.data[token.len - 1] == ' ') {
        token.len--;
    }

    if (token.len == 0) {
        *error = "You didn't provide an API key. Send it as "
                 "\"Authorization: Bearer <key>\".";
        return NGX_HTTP_UNAUTHORIZED;
    }

    ngx_http_chatbridge_digest(digest, token.data, token.len);

    keys = keys_a->elts;
    found = keys_a->nelts;

    for (i = 0; i < keys_a->nelts; i++) {
        diff = 0;

        for (j = 0; j < 20; j++) {
            diff |= digest[j] ^ keys[i].digest[j];
        }

        /* no branch on the secret: pick the match arithmetically */
        found = (diff == 0) ? i : found;
    }

    if (found == keys_a->nelts) {
        *error = "Incorrect API key provided.";
        return NGX_HTTP_UNAUTHORIZED;
    }

    *name = keys[found].name;

    return NGX_OK;
}


/*
 * The location's client keys, checked once per request: limit_req and
 * limit_conn (through $chatbridge_key_name, at preaccess) and the handler
 * share the answer rather than decode and hash the key each time.
 */

ngx_int_t
ngx_http_chatbridge_check_key(ngx_http_request_t *r,
    ngx_http_chatbridge_ctx_t *ctx, ngx_array_t *keys, const char **error)
{
    if (!ctx->key_checked) {
        ctx->key_rc = ngx_http_chatbridge_authorize(r, keys, &ctx->key_name,
                                                    &ctx->key_error);
        ctx->key_checked = 1;
    }

    *error = ctx->key_error;

    return ctx->key_rc;
}


/*
 * A refused key: 401 with a challenge ("Bearer", or a Basic one that makes
 * a browser prompt) and the OpenAI error; the body is discarded.
 */

ngx_int_t
ngx_http_chatbridge_unauthorized(ngx_http_request_t *r, char *challenge,
    const char *code, const char *error)
{
    ngx_table_elt_t  *h;

    ngx_http_discard_request_body(r);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "WWW-Authenticate");
    h->value.data = (u_char *) challenge;
    h->value.len = ngx_strlen(challenge);

    return ngx_http_chatbridge_send_error(r, NGX_HTTP_UNAUTHORIZED, code,
                                          NULL, error, ngx_strlen(error), 0);
}


/* the first header of a list with this name (any case); NULL if none */

ngx_table_elt_t *
ngx_http_chatbridge_find_header(ngx_list_t *headers, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash != 0 && h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


char *
ngx_http_chatbridge_api_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chatbridge_loc_conf_t  *lcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    return ngx_http_chatbridge_key_add(cf, &lcf->keys, &value[1], &value[2],
                                       NGX_HTTP_CHATBRIDGE_KEY_MIN);
}


/*
 * One key per line: "<name> <key>", or just "<key>" (named key1, key2 ...).
 * Blank lines and lines starting with # are skipped.  The client keys
 * (chatbridge_api_keys_file) or the admin keys (chatbridge_admin_keys_file),
 * as cmd->offset says.
 */

char *
ngx_http_chatbridge_api_keys_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    u_char        *p, *end, *eol, *s;
    size_t         min;
    ngx_str_t     *value, file, text, name, key;
    ngx_uint_t     line, nkeys;
    ngx_array_t  **keys;

    keys = (ngx_array_t **) ((char *) conf + cmd->offset);
    min = (cmd->offset == offsetof(ngx_http_chatbridge_loc_conf_t,
                                   admin_keys))
          ? NGX_HTTP_CHATBRIDGE_ADMIN_KEY_MIN : NGX_HTTP_CHATBRIDGE_KEY_MIN;

    value = cf->args->elts;
    file = value[1];

    if (ngx_http_chatbridge_read_conf_file(cf, &file,
                                           NGX_HTTP_CHATBRIDGE_KEYS_FILE_MAX,
                                           &text)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    end = text.data + text.len;
    nkeys = 0;

    for (p = text.data, line = 1; p < end; p = eol + 1, line++) {
        eol = ngx_strlchr(p, end, '\n');
        if (eol == NULL) {
            eol = end;
        }

        while (p < eol && (*p == ' ' || *p == '\t')) {
            p++;
        }

        s = eol;
        while (s > p && (s[-1] == ' ' || s[-1] == '\t' || s[-1] == '\r')) {
            s--;
        }

        if (p == s || *p == '#') {
            continue;
        }

        name.data = p;
        while (p < s && *p != ' ' && *p != '\t') {
            p++;
        }

        name.len = p - name.data;

        while (p < s && (*p == ' ' || *p == '\t')) {
            p++;
        }

        if (p == s) {
            key = name;
            name.data = ngx_pnalloc(cf->pool, NGX_INT_T_LEN + 3);
            if (name.data == NULL) {
                return NGX_CONF_ERROR;
            }

            name.len = ngx_sprintf(name.data, "key%ui", ++nkeys) - name.data;

        } else {
            key.data = p;
            key.len = s - p;

            if (ngx_strlchr(key.data, s, ' ') || ngx_strlchr(key.data, s, '\t'))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%s:%ui: expected \"<name> <key>\"",
                                   file.data, line);
                return NGX_CONF_ERROR;
            }
        }

        if (ngx_http_chatbridge_key_add(cf, keys, &name, &key, min)
            != NGX_CONF_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "in %s:%ui",
                               file.data, line);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


char *
ngx_http_chatbridge_key_add(ngx_conf_t *cf, ngx_array_t **keys,
    ngx_str_t *name, ngx_str_t *key, size_t min)
{
    ngx_uint_t                  i;
    ngx_http_chatbridge_key_t  *k;

    if (key->len < min || key->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the API key named \"%V\" is shorter than %uz "
                           "characters", name, min ? min : 1);
        return NGX_CONF_ERROR;
    }

    if (*keys == NGX_CONF_UNSET_PTR || *keys == NULL) {
        *keys = ngx_array_create(cf->pool, 4,
                                 sizeof(ngx_http_chatbridge_key_t));
        if (*keys == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    k = (*keys)->elts;

    for (i = 0; i < (*keys)->nelts; i++) {
        if (k[i].name.len == name->len
            && ngx_strncmp(k[i].name.data, name->data, name->len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate API key name \"%V\"", name);
            return NGX_CONF_ERROR;
        }
    }

    k = ngx_array_push(*keys);
    if (k == NULL) {
        return NGX_CONF_ERROR;
    }

    k->name = *name;
    ngx_http_chatbridge_digest(k->digest, key->data, key->len);

    return NGX_CONF_OK;
}


static void
ngx_http_chatbridge_digest(u_char *digest, u_char *data, size_t len)
{
    ngx_sha1_t  sha1;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, data, len);
    ngx_sha1_final(digest, &sha1);
}
