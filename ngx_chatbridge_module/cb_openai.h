
/*
 * Copyright (C) chatbridge authors
 *
 * The OpenAI request surface: parse, validate and normalize a chat
 * completions or images request into the task a browser works on.  Plain C
 * on jansson, no nginx types, unit-tested with Check.
 */

#ifndef _CB_OPENAI_H_INCLUDED_
#define _CB_OPENAI_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <jansson.h>


/* a rejected request: status, OpenAI error code, offending field, text */

typedef struct {
    unsigned        status;
    unsigned        retry_after;        /* seconds, 0: none */
    const char     *code;
    char            param[64];
    char            message[384];
} cb_err_t;


typedef struct {
    size_t          max_messages;
    size_t          max_text;           /* bytes of text, all messages */
    size_t          max_attachment;     /* decoded bytes of one attachment */
    size_t          max_attachments;    /* attachments per request */
    unsigned        tavern:1;           /* merge system messages in front */
    unsigned        bypass:1;           /* append a blank user message */
} cb_chat_opts_t;


typedef struct {
    json_t         *root;               /* the parsed body */
    json_t         *messages;           /* normalized, owned */
    json_t         *params;             /* sampling parameters, owned */
    const char     *model;              /* in root */
    size_t          model_len;
    uint32_t        prompt_tokens;      /* estimate, see cb_estimate_tokens */
    uint32_t        nattachments;
    unsigned        stream:1;
    unsigned        include_usage:1;
} cb_chat_t;


typedef struct {
    json_t         *root;
    const char     *prompt;
    const char     *model;
    size_t          model_len;
    unsigned        n;
    unsigned        b64:1;              /* response_format b64_json */
} cb_image_t;


int cb_chat_parse(cb_chat_t *chat, const char *body, size_t len,
    const cb_chat_opts_t *opts, cb_err_t *err);
void cb_chat_free(cb_chat_t *chat);
void cb_chat_bypass(json_t *messages);

int cb_image_parse(cb_image_t *img, const char *body, size_t len,
    cb_err_t *err);
void cb_image_free(cb_image_t *img);

/*
 * The task frame (protocol v1 "task") as compact JSON; malloc'd, the caller
 * frees.  "arena" may be NULL; it is borrowed, not stolen.
 */
char *cb_task_json(const char *request_id, const char *kind, const char *op,
    const char *model, size_t model_len, int stream, json_t *messages,
    json_t *params, json_t *arena, size_t *len);

void cb_err_set(cb_err_t *err, unsigned status, const char *code,
    const char *param, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;


#endif /* _CB_OPENAI_H_INCLUDED_ */
