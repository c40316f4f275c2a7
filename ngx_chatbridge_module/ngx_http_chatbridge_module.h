
/*
 * Copyright (C) chatbridge authors
 */

#ifndef _NGX_HTTP_CHATBRIDGE_MODULE_H_INCLUDED_
#define _NGX_HTTP_CHATBRIDGE_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "cb_shm.h"
#include "cb_json.h"
#include "cb_openai.h"
#include "cb_arena.h"


#define NGX_HTTP_CHATBRIDGE_MAX_PARTS       10

/* what a request asks for, from the tail of its URI */
#define NGX_HTTP_CHATBRIDGE_CHAT            1
#define NGX_HTTP_CHATBRIDGE_MODELS          2
#define NGX_HTTP_CHATBRIDGE_MODEL           3
#define NGX_HTTP_CHATBRIDGE_IMAGES          4
#define NGX_HTTP_CHATBRIDGE_CONTROL         5   /* an operator command */

/* link states */
#define NGX_HTTP_CHATBRIDGE_LINK_DOWN       0
#define NGX_HTTP_CHATBRIDGE_LINK_HELLO      1   /* connected, no welcome */
#define NGX_HTTP_CHATBRIDGE_LINK_READY      2

/* how a request ended, for $chatbridge_outcome */
#define NGX_HTTP_CHATBRIDGE_OUTCOMES(X)                                      \
    X(NONE,          "")                                                    \
    X(OK,            "ok")                                                  \
    X(ERROR,         "error")                                               \
    X(REJECTED,      "rejected")                                            \
    X(TIMEOUT,       "timeout")                                             \
    X(CLIENT_CLOSED, "client_closed")                                       \
    X(BRIDGE_DOWN,   "bridge_down")

#define NGX_HTTP_CHATBRIDGE_OUTCOME_ENUM(name, str)                          \
    NGX_HTTP_CHATBRIDGE_OUTCOME_##name,
enum { NGX_HTTP_CHATBRIDGE_OUTCOMES(NGX_HTTP_CHATBRIDGE_OUTCOME_ENUM) };
#undef NGX_HTTP_CHATBRIDGE_OUTCOME_ENUM


typedef struct ngx_http_chatbridge_link_s  ngx_http_chatbridge_link_t;
typedef struct ngx_http_chatbridge_ctx_s   ngx_http_chatbridge_ctx_t;


typedef struct {
    ngx_str_t                       name;
    u_char                          digest[20];     /* SHA-1 of the key */
} ngx_http_chatbridge_key_t;


/* the "chatbridge" shared zone: ngx_http_chatbridge_zone.c */

#define NGX_HTTP_CHATBRIDGE_RR              1024
#define NGX_HTTP_CHATBRIDGE_COOL            4096

typedef struct {
    ngx_atomic_t                    rr[NGX_HTTP_CHATBRIDGE_RR];
    ngx_atomic_t                    version;    /* of the records */
    ngx_atomic_t                    generation; /* of the newest conf */
    uint32_t                        cool_key[NGX_HTTP_CHATBRIDGE_COOL];
    ngx_msec_t                      cool_until[NGX_HTTP_CHATBRIDGE_COOL];
    u_char                         *records;    /* arena captures, JSON */
    size_t                          records_len;
} ngx_http_chatbridge_sh_t;


/* the zone as one configuration sees it */

typedef struct {
    ngx_http_chatbridge_sh_t       *sh;
    ngx_slab_pool_t                *shpool;
    ngx_atomic_uint_t               generation;
} ngx_http_chatbridge_zone_t;


/* upstream key pools: ngx_http_chatbridge_keys.c */

typedef struct {
    ngx_str_t                       name;       /* a label, safe to log */
    ngx_str_t                       key;
    uint32_t                        cool_key;
} ngx_http_chatbridge_upstream_key_t;


typedef struct {
    ngx_str_t                       name;
    ngx_str_t                       file;
    ngx_array_t                     keys;
    ngx_msec_t                      cooldown;
} ngx_http_chatbridge_key_pool_t;


typedef struct {
    ngx_str_t                       sidecar;
    ngx_msec_t                      link_wait;
    ngx_int_t                       request_id_index;
    ngx_http_chatbridge_link_t     *link;
    ngx_shm_zone_t                 *zone;
    ngx_array_t                     key_pools;
    ngx_flag_t                      linked;     /* a location needs the
                                                   sidecar */
    json_t                         *arena_live;     /* this worker's copy */
    ngx_atomic_uint_t               arena_version;
} ngx_http_chatbridge_main_conf_t;


typedef struct {
    ngx_flag_t                      enable;
    ngx_uint_t                      kind;
    size_t                          max_body_size;
    size_t                          max_response_size;
    ngx_uint_t                      max_messages;
    size_t                          max_text;
    size_t                          max_attachment;
    ngx_uint_t                      max_attachments;
    ngx_msec_t                      idle_timeout;
    ngx_msec_t                      total_timeout;
    ngx_msec_t                      keepalive;
    ngx_flag_t                      tavern;
    ngx_flag_t                      bypass;
    ngx_flag_t                      cors;
    ngx_array_t                    *keys;       /* ngx_http_chatbridge_key_t */
    ngx_array_t                    *models;     /* ngx_str_t */
    cb_arena_t                     *arena;
    ngx_str_t                       arena_dir;
    ngx_msec_t                      arena_cooldown;
    ngx_array_t                    *admin_keys; /* ngx_http_chatbridge_key_t */
    ngx_str_t                       userscript; /* the file, read at start */
    ngx_uint_t                      userscript_urls;    /* placeholders */
    ngx_uint_t                      userscript_tokens;
    ngx_str_t                       browser_token;
    ngx_str_t                       browser_ws_url;
    ngx_str_t                       upstream_pool_name;
    ngx_http_chatbridge_key_pool_t *upstream_pool;
} ngx_http_chatbridge_loc_conf_t;


/* one slot's worth of work: a chat has one part, an image request n */

typedef struct {
    ngx_http_chatbridge_ctx_t      *ctx;
    ngx_str_t                       id;         /* request_id of its task */
    u_char                         *task;       /* frame JSON until sent */
    size_t                          task_len;
    uint32_t                        slot;
    uint32_t                        gen;

    ngx_str_t                       image;
    ngx_str_t                       result;     /* of a command */
    uint32_t                        cool_key;   /* its arena session */
    ngx_uint_t                      status;     /* error status, 0 if none */
    ngx_str_t                       error_code;
    ngx_str_t                       error_message;
    uint32_t                        retry_after;

    unsigned                        held:1;     /* the slot is ours */
    unsigned                        ended:1;    /* final record consumed */
} ngx_http_chatbridge_part_t;


struct ngx_http_chatbridge_ctx_s {
    ngx_http_request_t             *request;
    ngx_http_chatbridge_link_t     *link;
    ngx_queue_t                     queue;      /* link active or waiting */

    ngx_uint_t                      op;
    ngx_uint_t                      nparts;
    ngx_uint_t                      nended;
    ngx_http_chatbridge_part_t     *parts;

    ngx_str_t                       request_id;
    ngx_str_t                       model;
    u_char                         *head;       /* fixed part of chunks */
    size_t                          head_len;
    time_t                          created;

    ngx_event_t                     timer;
    ngx_msec_t                      timeout;    /* a command's own */
    ngx_msec_t                      start;
    ngx_msec_t                      first;      /* first answer record */
    ngx_msec_t                      last;       /* last record or output */
    ngx_msec_t                      last_out;   /* last byte to the client */

    /* streaming output */
    ngx_chain_t                    *out;
    ngx_chain_t                   **out_last;
    ngx_chain_t                    *free;
    ngx_chain_t                    *busy;
    size_t                          out_size;   /* bytes in out */

    /* non-streaming: escaped text collected for the final JSON */
    ngx_chain_t                    *content;
    ngx_chain_t                   **content_last;
    ngx_chain_t                    *reasoning;
    ngx_chain_t                   **reasoning_last;
    size_t                          collected;

    /* a record that arrived in pieces (CB_REC_MORE) */
    u_char                         *more;
    size_t                          more_len;
    size_t                          more_size;
    ngx_uint_t                      more_type;

    cb_usage_t                      usage;
    size_t                          out_ascii;  /* for the token estimate */
    size_t                          out_other;
    ngx_uint_t                      finish_reason;
    ngx_uint_t                      outcome;
    ngx_str_t                       browser;
    ngx_str_t                       key_name;
    const char                     *key_error;  /* why the key was refused */
    ngx_int_t                       key_rc;     /* the key check's answer */
    json_t                         *command;    /* an admin request's body */
    ngx_str_t                       error_page; /* replaces nginx's page */

    unsigned                        stream:1;
    unsigned                        include_usage:1;
    unsigned                        header_sent:1;
    unsigned                        role_sent:1;
    unsigned                        waiting:1;  /* for the link */
    unsigned                        finalized:1;
    unsigned                        usage_known:1;
    unsigned                        replace:1;  /* error_page pending */
    unsigned                        key_checked:1;
};


extern ngx_module_t  ngx_http_chatbridge_module;


/* ngx_http_chatbridge_link.c: this worker's link to the sidecar */

ngx_int_t ngx_http_chatbridge_link_init(ngx_cycle_t *cycle,
    ngx_http_chatbridge_main_conf_t *mcf);
void ngx_http_chatbridge_link_exit(ngx_http_chatbridge_link_t *link);
ngx_uint_t ngx_http_chatbridge_link_state(ngx_http_chatbridge_link_t *link);
void ngx_http_chatbridge_link_connect(ngx_http_chatbridge_link_t *link);
void ngx_http_chatbridge_link_wait(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_ctx_t *ctx);
void ngx_http_chatbridge_link_track(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_ctx_t *ctx);
ngx_int_t ngx_http_chatbridge_link_submit(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_part_t *part, ngx_uint_t kind);
ngx_int_t ngx_http_chatbridge_link_read(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_part_t *part, cb_rec_header_t *hdr, u_char **data);
void ngx_http_chatbridge_link_giveup(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_part_t *part);
void ngx_http_chatbridge_link_drained(ngx_http_chatbridge_link_t *link,
    ngx_http_chatbridge_part_t *part);
void *ngx_http_chatbridge_link_segment(ngx_http_chatbridge_link_t *link);
cb_worker_counters_t *ngx_http_chatbridge_link_counters(
    ngx_http_chatbridge_link_t *link);
ngx_int_t ngx_http_chatbridge_link_state_doc(ngx_http_chatbridge_link_t *link,
    ngx_pool_t *pool, ngx_str_t *doc);


/* ngx_http_chatbridge_chat.c: chat completions and images */

ngx_int_t ngx_http_chatbridge_chat_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_chatbridge_images_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_chatbridge_read_body(ngx_http_request_t *r,
    ngx_str_t *body);
ngx_int_t ngx_http_chatbridge_prepare(ngx_http_request_t *r,
    ngx_http_chatbridge_ctx_t *ctx, const char *model, size_t model_len,
    ngx_uint_t nparts);


/* ngx_http_chatbridge_stream.c: waiting, records, responses */

ngx_int_t ngx_http_chatbridge_start(ngx_http_request_t *r,
    ngx_http_chatbridge_ctx_t *ctx);
void ngx_http_chatbridge_wake(ngx_http_chatbridge_part_t *part);
void ngx_http_chatbridge_link_ready(ngx_http_chatbridge_ctx_t *ctx);
void ngx_http_chatbridge_link_lost(ngx_http_chatbridge_ctx_t *ctx);
ngx_int_t ngx_http_chatbridge_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *param,
    const char *message, size_t len, uint32_t retry_after);
ngx_int_t ngx_http_chatbridge_send_json(ngx_http_request_t *r,
    ngx_uint_t status, u_char *json, size_t len);
ngx_int_t ngx_http_chatbridge_send_body(ngx_http_request_t *r, u_char *data,
    size_t len);


/* ngx_http_chatbridge_module.c */

ngx_http_chatbridge_ctx_t *ngx_http_chatbridge_get_ctx(ngx_http_request_t *r);
ngx_int_t ngx_http_chatbridge_set_request_id(ngx_http_request_t *r,
    ngx_http_chatbridge_ctx_t *ctx);
void ngx_http_chatbridge_needs_sidecar(ngx_conf_t *cf);
ngx_int_t ngx_http_chatbridge_read_conf_file(ngx_conf_t *cf,
    ngx_str_t *name, size_t max, ngx_str_t *out);


/* ngx_http_chatbridge_models.c */

ngx_int_t ngx_http_chatbridge_models_handler(ngx_http_request_t *r,
    ngx_uint_t one);
char *ngx_http_chatbridge_models_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


/* ngx_http_chatbridge_auth.c */

ngx_int_t ngx_http_chatbridge_authorize(ngx_http_request_t *r,
    ngx_array_t *keys, ngx_str_t *name, const char **error);
ngx_int_t ngx_http_chatbridge_check_key(ngx_http_request_t *r,
    ngx_http_chatbridge_ctx_t *ctx, ngx_array_t *keys, const char **error);
ngx_int_t ngx_http_chatbridge_unauthorized(ngx_http_request_t *r,
    char *challenge, const char *code, const char *error);
ngx_table_elt_t *ngx_http_chatbridge_find_header(ngx_list_t *headers,
    const char *name);
char *ngx_http_chatbridge_api_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_chatbridge_api_keys_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


/* ngx_http_chatbridge_arena.c: LMArena Bridge sessions */

char *ngx_http_chatbridge_arena(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_chatbridge_arena_merge(ngx_conf_t *cf,
    ngx_http_chatbridge_loc_conf_t *prev,
    ngx_http_chatbridge_loc_conf_t *conf);
ngx_int_t ngx_http_chatbridge_arena_session(ngx_http_request_t *r,
    ngx_http_chatbridge_part_t *part, json_t *messages, ngx_uint_t bypass,
    int *image, json_t **arena, cb_err_t *err);
void ngx_http_chatbridge_arena_failed(ngx_http_request_t *r,
    ngx_http_chatbridge_part_t *part);
json_t *ngx_http_chatbridge_arena_live(ngx_http_request_t *r);
ngx_int_t ngx_http_chatbridge_arena_update(ngx_http_request_t *r,
    const char *model, json_t *entry);


/* ngx_http_chatbridge_auth.c, for keys from other files */

char *ngx_http_chatbridge_key_add(ngx_conf_t *cf, ngx_array_t **keys,
    ngx_str_t *name, ngx_str_t *key, size_t min);


/* ngx_http_chatbridge_admin.c: operator commands, the userscript */

char *ngx_http_chatbridge_admin(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_chatbridge_admin_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_chatbridge_admin_result(ngx_http_chatbridge_ctx_t *ctx,
    ngx_str_t *out);
char *ngx_http_chatbridge_userscript(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_chatbridge_browser_token_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_chatbridge_userscript_check(ngx_str_t *value);


/* ngx_http_chatbridge_zone.c */

ngx_int_t ngx_http_chatbridge_zone_add(ngx_conf_t *cf);
ngx_http_chatbridge_zone_t *ngx_http_chatbridge_zone(ngx_http_request_t *r);
ngx_atomic_uint_t ngx_http_chatbridge_zone_next(ngx_http_chatbridge_zone_t *z,
    const char *kind, u_char *name, size_t len);
uint32_t ngx_http_chatbridge_zone_key(const char *kind, u_char *a,
    size_t alen, u_char *b, size_t blen);
ngx_msec_t ngx_http_chatbridge_zone_cooling(ngx_http_chatbridge_zone_t *z,
    uint32_t key);
void ngx_http_chatbridge_zone_cool(ngx_http_chatbridge_zone_t *z,
    uint32_t key, ngx_msec_t ms);


/* ngx_http_chatbridge_keys.c: upstream key pools */

char *ngx_http_chatbridge_key_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_chatbridge_upstream_key_pool(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_chatbridge_keys_merge(ngx_conf_t *cf,
    ngx_http_chatbridge_loc_conf_t *prev,
    ngx_http_chatbridge_loc_conf_t *conf);
ngx_int_t ngx_http_chatbridge_keys_init(ngx_conf_t *cf);
ngx_http_chatbridge_upstream_key_t *ngx_http_chatbridge_keys_current(
    ngx_http_request_t *r);


/* ngx_http_chatbridge_variables.c */

ngx_int_t ngx_http_chatbridge_add_variables(ngx_conf_t *cf);


#endif /* _NGX_HTTP_CHATBRIDGE_MODULE_H_INCLUDED_ */
