
/*
 * Copyright (C) chatbridge authors
 *
 * OpenAI-shaped JSON and SSE encoding.  Plain C, no nginx types, so that the
 * Check unit tests link it directly.  Every writer has a size function that
 * gives an exact upper bound, so callers allocate once and never overflow.
 */

#ifndef _CB_JSON_H_INCLUDED_
#define _CB_JSON_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


typedef unsigned char  cb_u8;


/* strings */

size_t cb_json_escaped_len(const cb_u8 *s, size_t len);
cb_u8 *cb_json_escape(cb_u8 *dst, const cb_u8 *s, size_t len);
size_t cb_utf8_valid_prefix(const cb_u8 *s, size_t len);
size_t cb_utf8_cut(const cb_u8 *s, size_t len, size_t max);
uint32_t cb_estimate_tokens(const cb_u8 *s, size_t len);


/*
 * The fixed part of every chunk of one response:
 *   {"id":"chatcmpl-<rid>","object":"chat.completion.chunk","created":<t>,
 *    "model":"<model>"
 * built once per request by cb_chunk_head().
 */

#define CB_CHUNK_HEAD_SIZE(id_len, model_len)                                \
    (128 + 6 * (id_len) + 6 * (model_len))

size_t cb_chunk_head(cb_u8 *dst, const cb_u8 *id, size_t id_len,
    const cb_u8 *model, size_t model_len, uint64_t created,
    const char *object);


/* usage, as OpenAI reports it, plus how it was counted */

typedef struct {
    uint32_t    prompt_tokens;
    uint32_t    completion_tokens;
    uint32_t    reasoning_tokens;
    uint32_t    total_tokens;
    unsigned    estimated:1;
} cb_usage_t;

#define CB_USAGE_SIZE           192

size_t cb_usage_json(cb_u8 *dst, const cb_usage_t *u);


/* SSE events; "head" is the cb_chunk_head() output */

#define CB_DELTA_OVERHEAD       160

size_t cb_sse_delta_size(size_t head_len, const char *field,
    const cb_u8 *text, size_t len);
size_t cb_sse_delta(cb_u8 *dst, const cb_u8 *head, size_t head_len,
    const char *field, const cb_u8 *text, size_t len);
size_t cb_sse_role(cb_u8 *dst, const cb_u8 *head, size_t head_len);
size_t cb_sse_finish(cb_u8 *dst, const cb_u8 *head, size_t head_len,
    const char *reason);
size_t cb_sse_usage(cb_u8 *dst, const cb_u8 *head, size_t head_len,
    const cb_usage_t *u);

#define CB_SSE_ROLE_SIZE(head_len)      ((head_len) + CB_DELTA_OVERHEAD)
#define CB_SSE_FINISH_SIZE(head_len)    ((head_len) + CB_DELTA_OVERHEAD + 32)
#define CB_SSE_USAGE_SIZE(head_len)     ((head_len) + 64 + CB_USAGE_SIZE)

#define CB_SSE_DONE             "data: [DONE]\n\n"
#define CB_SSE_KEEPALIVE        ": keep-alive\n\n"


/* OpenAI error objects: {"error":{"message","type","param","code"}} */

size_t cb_error_json_size(const char *message, size_t message_len,
    const char *type, const char *code, const char *param);
size_t cb_error_json(cb_u8 *dst, const char *message, size_t message_len,
    const char *type, const char *code, const char *param);
const char *cb_error_type(unsigned status);


#endif /* _CB_JSON_H_INCLUDED_ */
